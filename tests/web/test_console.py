"""The master web console in a real headless Chromium, against a real master process and
a real node process on a real ZooKeeper. Every tab is photographed into
test-artifacts/screenshots/."""
from __future__ import annotations

import uuid

import httpx
import pytest

from tests.integration.harness import Master, Node, wait_until

from .conftest import SCREENSHOTS, screenshot

# One worker runs this module under pytest-xdist: its master, node and browser are made once.
pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("web-console")]

TOKEN = "web-console-token-0123456789abcdef"


@pytest.fixture(scope="module")
def cluster(zk_server, tmp_path_factory):
    """One master and one physical node ``p1`` under a root of this module's own."""
    tmp = tmp_path_factory.mktemp("web-cluster")
    root = f"/test-web-{uuid.uuid4().hex[:10]}"
    m = Master(tmp, zk_server.connect_string, root)
    n = Node(tmp, zk_server.connect_string, root, "p1")
    try:
        wait_until(lambda: m.logical("p1").get("state") in ("IDLE", "HELLO"), 30,
                   "node p1 registered")
        yield m
    finally:
        n.stop()
        m.stop()


def expect():
    from playwright.sync_api import expect as pw_expect
    return pw_expect


def row(page, name):
    return page.locator(f'#logical-rows .r[data-name="{name}"]')


def test_configure_through_the_form_reaches_active_with_live_rates(page, cluster):
    ex = expect()
    page.goto(cluster.url + "/#configure")
    page.fill("#cfg-node", "p1")
    # 10 events of 100 kB per batch, 20 ms each: about 50 events/s, steadily
    page.fill("#cfg-source", "asciisynth(0, 100000)")
    page.fill("#cfg-sink", "{delay(20)=>[null,{batch(5)=>null}]}")
    ex(page.locator("#cfg-sink-check .ok")).to_contain_text("valid")
    ex(page.locator("#cfg-sink-check .canon")).to_contain_text(
        "{ delay(20) => [ null, { batch(5) => null } ] }")
    page.click("#cfg-submit")
    ex(page.locator("#cfg-result")).to_contain_text("configured p1 (version 0)")
    ex(page.locator("#cfg-watch")).to_contain_text("ACTIVE", timeout=20_000)
    ex(page.locator("#cfg-watch")).to_contain_text("running version 0")
    screenshot(page, "configure")

    page.click("#tabs a[data-tab=nodes]")
    r = row(page, "p1")
    ex(r.locator(".st")).to_have_text("ACTIVE")
    # rates come from two successive counter readings (nodes write them every 2 s)
    rate_in, rate_out = r.locator("[role=cell]").nth(6), r.locator("[role=cell]").nth(7)

    def rates() -> float | None:
        """The rate in, once both rates show a reading (one read of each cell: the row is
        drawn again between two reads)."""
        got_in, got_out = rate_in.inner_text(), rate_out.inner_text()
        if got_in in ("–", "0", "") or got_out in ("–", "0", ""):
            return None
        return float(got_in.rstrip("k"))
    # a reading, not a speed: about 50/s on an idle box, a few per second on a loaded one
    assert 0 < wait_until(rates, 20, "live rates shown") < 1000
    wait_until(lambda: (r.locator("svg.spark polyline").first.get_attribute("points") or "")
               .count(",") >= 2, 20, "a sparkline with two samples")
    r.click()
    detail = page.locator("#node-detail")
    ex(detail).to_contain_text("events in")
    ex(detail).to_contain_text("asciisynth(0, 100000)")
    ex(detail.locator(".comp-tree")).to_contain_text("delay")
    ex(page.locator("#physical-table")).to_contain_text("p1")
    screenshot(page, "nodes")
    page.click("#tabs a[data-tab=specs]")
    ex(page.locator("#specs-table")).to_contain_text(  # as entered
        "asciisynth(0, 100000) | {delay(20)=>[null,{batch(5)=>null}]}")
    screenshot(page, "specs")

    # the node's own status page, linked from the physical node's row
    port = cluster.get("/api/status").json()["physical"][0]["http_port"]
    link = page.locator("#physical-table a")
    ex(link).to_have_text(f":{port}")
    page.goto(f"http://127.0.0.1:{port}/")
    ex(page.locator("#ln-p1")).to_contain_text("asciisynth(0, 100000)")
    ex(page.locator("#ln-p1 table.components")).to_contain_text("batch")
    screenshot(page, "node-status-page")


def test_validation_error_shows_the_spec_with_its_position(page, cluster):
    ex = expect()
    page.goto(cluster.url + "/#configure")
    page.fill("#cfg-node", "broken")
    page.fill("#cfg-source", 'tail("/var/log/x.log"')
    page.fill("#cfg-sink", "{ batch(10) =>\n  nosuch(1) }")
    src = page.locator("#cfg-source-check .spec-error")
    ex(src).to_have_attribute("data-line", "1")
    ex(src).to_have_attribute("data-column", "22")
    sink = page.locator("#cfg-sink-check .spec-error")
    ex(sink.locator(".msg")).to_have_text("line 2, column 3: unknown sink 'nosuch'")
    ex(sink.locator(".err-line mark")).to_have_text("n")  # the character at the column
    ex(sink.locator(".caret")).to_have_text("  ^")
    ex(page.locator("#cfg-sink")).to_have_class("invalid")
    screenshot(page, "configure-error")
    page.click("#cfg-submit")  # the master refuses it too, with the same positions
    ex(page.locator("#cfg-result")).to_contain_text("the spec has errors")
    assert cluster.get("/api/configs/broken").status_code == 404
    page.fill("#cfg-sink", "{ batch(10) =>\n  null }")
    ex(page.locator("#cfg-sink-check .ok")).to_be_visible()
    ex(page.locator("#cfg-sink-check .spec-error")).to_have_count(0)


def test_assign_a_node_to_a_flow_and_see_its_chain(page, cluster):
    ex = expect()
    for args in (("c1", "web", "autoCollectorSource", "null"),
                 ("a1", "asciisynth(1)", "autoBEChain")):
        assert cluster.command("config", *args).json()["state"] == "SUCCEEDED"
    assert cluster.command("map", "p1", "c1").json()["state"] == "SUCCEEDED"
    page.goto(cluster.url + "/#flows")
    ex(page.locator('.flow[data-flow="default-flow"] [data-agent="a1"]')).to_be_visible()
    page.fill("#assign-node", "a1")
    page.fill("#assign-flow", "web")
    page.click("#assign-submit")
    ex(page.locator("#assign-result")).to_contain_text("configured a1")
    agent = page.locator('.flow[data-flow="web"] [data-agent="a1"]')
    ex(agent.locator(".chain")).to_contain_text("c1")  # the collector chain it was given
    assert cluster.get("/api/configs/a1").json()["flow"] == "web"
    screenshot(page, "flows")


def test_map_then_unmap_a_node(page, cluster):
    ex = expect()
    page.goto(cluster.url + "/#mappings")
    page.fill("#map-logical", "extra")
    page.fill("#map-physical", "p1")
    page.click("#map-submit")
    ex(page.locator("#map-result")).to_contain_text("mapped extra")
    chip = page.locator('#mappings-table tr[data-physical="p1"] .chip[data-logical="extra"]')
    ex(chip).to_be_visible()
    assert "extra" in cluster.get("/api/mappings").json()["p1"]
    screenshot(page, "mappings")
    chip.locator("button").click()
    ex(chip).to_have_count(0)
    ex(page.locator("#map-result")).to_contain_text("extra")
    assert "extra" not in cluster.get("/api/mappings").json()["p1"]


def test_command_history_with_states_and_messages(page, cluster):
    ex = expect()
    page.goto(cluster.url + "/#commands")
    # the names offered are the master's command table (GET /api/command-table)
    names = [c["name"] for c in httpx.get(cluster.url + "/api/command-table").json()]
    ex(page.locator("#dl-commands option")).to_have_count(len(names))
    assert page.locator("#dl-commands option").evaluate_all(
        "os => os.map(o => o.value)") == names
    page.fill("#cmd-name", "noop")
    page.fill("#cmd-args", "5")
    page.click("#cmd-submit")
    ex(page.locator("#cmd-result")).to_have_text("SUCCEEDED: noop (5 ms)")
    page.fill("#cmd-name", "unconfig")
    page.fill("#cmd-args", "no-such-node")
    page.click("#cmd-submit")
    ex(page.locator("#cmd-result")).to_contain_text("FAILED")
    table = page.locator("#commands-table")
    ex(table.locator("tbody tr").first).to_contain_text("unconfig no-such-node")
    ex(table.locator("tbody tr").first.locator(".st")).to_have_text("FAILED")
    ex(table).to_contain_text("noop (5 ms)")
    screenshot(page, "commands")


def test_token_dialog_when_the_master_has_a_token(page, zk_server, tmp_path):
    ex = expect()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    m = Master(tmp_path, zk_server.connect_string, f"/test-web-{uuid.uuid4().hex[:10]}",
               token_file=token_file, name="locked")
    try:
        page.goto(m.url + "/#mappings")
        page.fill("#map-logical", "n1")
        page.fill("#map-physical", "p9")
        page.click("#map-submit")
        dialog = page.locator("#token-dialog")
        ex(dialog).to_be_visible()
        ex(page.locator("#token-why")).to_contain_text("needs an access token")
        screenshot(page, "token-dialog")
        page.fill("#token-input", "wrong-token")
        page.click("#token-ok")
        ex(page.locator("#token-why")).to_contain_text("refused this token")
        page.fill("#token-input", TOKEN)
        page.click("#token-ok")
        ex(dialog).to_be_hidden()
        ex(page.locator("#map-result")).to_contain_text("mapped n1 to p9")
        assert page.evaluate("sessionStorage.getItem('flume.token')") == TOKEN
        assert m.get("/api/mappings").json() == {"p9": ["n1"]}
        ex(page.locator("#token-button")).to_have_text("Token ✓")
    finally:
        m.stop()


def test_thousand_logical_nodes_all_render(page, zk_server, tmp_path):
    """Every one of 1,000 rows is in the table (render time: bench/console_render.py)."""
    ex = expect()
    m = Master(tmp_path, zk_server.connect_string, f"/test-web-{uuid.uuid4().hex[:10]}",
               name="big")
    try:
        spec = "".join(f'agent{i:04d} : tail("/var/log/app{i}.log") | '
                       f'{{ batch(100) => text("/srv/out/{i}.log") }} ;\n' for i in range(1000))
        r = httpx.post(m.url + "/api/commands", json={"command": "multiconfig", "args": [spec]},
                       timeout=120)
        assert r.json()["state"] == "SUCCEEDED", r.text
        page.goto(m.url + "/")
        ex(page.locator("#logical-rows .r[data-name]")).to_have_count(1000)
        info = page.evaluate("window.__flume")
        assert info["firstRenderRows"] == 1000 and info["firstRenderMs"] > 0
        ex(page.locator("#logical-count")).to_have_text("(1000)")
        ex(row(page, "agent0999").locator(".st")).to_have_text("UNMAPPED")
        page.fill("#node-filter", "agent09")
        ex(page.locator("#logical-rows .r[data-name]")).to_have_count(100)
        page.fill("#node-filter", "")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "nodes-1000.png"))  # the first screen
    finally:
        m.stop()


def test_read_token_dialog_and_hidden_passwords(page, zk_server, tmp_path):
    """A master with a read token: the console asks for it before showing anything, then
    shows specs with their URL passwords hidden."""
    from tests.master.test_http_limits import LimitedMaster
    ex = expect()
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "read").write_text("web-read-token-0123456789")
    m = LimitedMaster(tmp_path, zk_server.connect_string, "--token-file",
                      str(tmp_path / "token"), "--read-token-file", str(tmp_path / "read"),
                      name="read-locked")
    try:
        r = httpx.put(m.url + "/api/configs/s3agent", timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"},
                      json={"source": "null", "sink": 'dfs("ftp://AKIA:SeCrEt@bucket/x")'})
        assert r.status_code == 200, r.text
        page.goto(m.url + "/#specs")
        ex(page.locator("#token-dialog")).to_be_visible()
        ex(page.locator("#token-why")).to_contain_text("to show its nodes")
        page.fill("#token-input", "web-read-token-0123456789")
        page.click("#token-ok")
        ex(page.locator("#token-dialog")).to_be_hidden()
        ex(page.locator("#specs-table")).to_contain_text('dfs("ftp://AKIA:***@bucket/x")')
        assert "SeCrEt" not in page.content()
        screenshot(page, "read-token")
    finally:
        m.stop()
