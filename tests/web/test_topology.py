"""The console as the cluster's map, in a real headless Chromium against a running cluster:
a master (history sampled every second), 2 collectors and 5 agents on real node
processes and a real ZooKeeper. One cluster is shared by every test of this module; the
failover test kills a collector, so the tests after it see a cluster with one collector.
Every view is photographed into test-artifacts/screenshots/."""
from __future__ import annotations

import time
import uuid

import httpx
import pytest

from flume_og.zk.client import connect
from tests.conftest import free_port
from tests.integration.harness import Master, Node, wait_until

from .conftest import screenshot

# a group of its own: its cluster and browser on one worker, beside the other web module
pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("web-topology")]

AGENTS = [f"a{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def cluster(zk_server, tmp_path_factory):
    """Master, collectors c1 (on physical pc1) and c2 (on pc2), agents a1..a5 (on pa),
    all ACTIVE and sending. Yields (master, {physical: Node})."""
    tmp = tmp_path_factory.mktemp("topology")
    root = f"/test-topo-{uuid.uuid4().hex[:10]}"
    # both collectors run on this host: give each a free port of its own before the
    # master allocates them (it starts every physical node's ports at 35853)
    zk = connect(zk_server.connect_string)
    for physical, logical in (("pc1", "c1"), ("pc2", "c2")):
        zk.create(f"{root}/ports/{physical}/{free_port()}", logical.encode(), makepath=True)
    zk.stop()
    zk.close()
    m = Master(tmp, zk_server.connect_string, root, extra=("--history-interval", "1"))
    nodes = {}
    try:
        for p in ("pc1", "pc2", "pa"):
            nodes[p] = Node(tmp, zk_server.connect_string, root, p)
        wait_until(lambda: sum(x["alive"] for x in m.get("/api/status").json()["physical"]) == 3,
                   30, "three physical nodes")
        for c in ("c1", "c2"):
            assert m.command("config", c, "autoCollectorSource", "null").json()["state"] == "SUCCEEDED"
        for a in AGENTS:
            r = m.command("config", a, "asciisynth(0, 20000)", "{ delay(50) => autoBEChain }")
            assert r.json()["state"] == "SUCCEEDED"
        for p, logical in (("pc1", "c1"), ("pc2", "c2")):
            assert m.command("map", p, logical).json()["state"] == "SUCCEEDED"
        for a in AGENTS:
            assert m.command("map", "pa", a).json()["state"] == "SUCCEEDED"
        wait_until(lambda: all(m.logical(n).get("state") == "ACTIVE" for n in ["c1", "c2", *AGENTS])
                   and all((m.logical(a).get("events_out") or 0) > 0 for a in AGENTS),
                   60, "every node ACTIVE, every agent sending")
        yield m, nodes
    finally:
        for n in nodes.values():
            n.stop()
        m.stop()


def test_the_module_runs_on_one_worker(request):
    """Its tests share one cluster and follow each other (the failover test kills c1):
    under --dist loadgroup the whole module must go to one worker, which xdist marks in
    the node id (a pytest that keeps xdist from doing so spread it over three clusters)."""
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@web-topology"), request.node.nodeid


def expect():
    from playwright.sync_api import expect as pw_expect
    return pw_expect


def reached(page) -> dict[str, str]:
    """{agent: collector} of the thick "reached" edges shown."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        '#topo-graph .tedge.reached')].map(e => [e.dataset.from, e.dataset.to]))""")


def test_the_flows_tab_shows_each_chain_joined_by_arrows(page, cluster):
    """Each agent's collector chain on the Flows tab, primary first, joined by the same
    arrow as the preview's (it showed a '?' between the collectors)."""
    m, _ = cluster
    page.goto(m.url + "/#flows")
    chain = page.locator('.flow [data-agent="a1"] .chain')
    expect()(chain).to_contain_text("c1")
    expect()(chain).to_contain_text("c2")
    text = chain.inner_text()
    assert "?" not in text and text.count("\u203a") == 1, text


def test_topology_shows_a_collector_failover_within_10_s(page, cluster):
    m, nodes = cluster
    ex = expect()
    page.goto(m.url + "/#topology")
    ex(page.locator("#topo-flow")).to_have_value("default-flow")
    for name in ["c1", "c2", *AGENTS]:
        ex(page.locator(f'#topo-graph .tnode[data-name="{name}"]')).to_be_visible()
    # every agent's chain (primary and failover, in order) from the translations
    chains = m.get("/api/flows").json()["default-flow"]["chains"]
    for a in AGENTS:
        for rank, c in enumerate(chains[a], 1):
            ex(page.locator(f'#topo-graph .tedge.chain[data-from="{a}"][data-to="{c}"]')) \
                .to_have_attribute("data-rank", str(rank))
    # and the collector each reached, from its counters, with rates on the edges
    wait_until(lambda: set(reached(page)) == set(AGENTS), 20, "every agent's reached edge")
    before = reached(page)
    assert before == {a: chains[a][0] for a in AGENTS}      # the primaries, all alive
    on_c1 = [a for a in AGENTS if before[a] == "c1"]
    assert on_c1, f"no agent's primary is c1: {before}"
    ex(page.locator('#topo-graph .tedge.reached[data-from="a1"] .el')).to_contain_text("ev/s")
    ex(page.locator('#topo-graph .tnode[data-name="a1"]')).to_contain_text("ev/s in")
    assert page.locator("#topo-graph .tnode.dead").count() == 0
    screenshot(page, "topology")

    nodes["pc1"].kill()
    killed = time.monotonic()
    # c1 is shown dead as soon as the agents find it down and none reaches it (its own
    # reports going silent takes 6 s more)
    wait_until(lambda: all(v == "c2" for v in reached(page).values())
               and set(reached(page)) == set(AGENTS)
               and page.locator('#topo-graph .tnode.dead[data-name="c1"]'
                                '[data-state="unreachable"]').count() == 1,
               10, "every agent on c2 and c1 shown unreachable, within 10 s of the kill")
    took = time.monotonic() - killed
    print(f"failover shown {took:.1f} s after the kill")
    assert page.locator("#topo-graph .tnode.dead").count() == 1     # c1 only
    screenshot(page, "topology-failover")

    # a click on a node opens its detail, with the master's history and recent errors
    page.locator('#topo-graph .tnode[data-name="c2"]').click()
    ex(page.locator("#tabs a.active")).to_have_attribute("data-tab", "nodes")
    ex(page.locator("#node-detail h3")).to_contain_text("c2")
    ex(page.locator("#node-history")).to_be_visible()
    ex(page.locator("#node-chart-events svg.chart path.line").first).to_be_visible()


def test_a_browser_whose_clock_is_off_does_not_see_live_nodes_dead(browser, cluster):
    """Silence is judged against the master's clock (its Date header), not the browser's:
    a laptop 20 s ahead used to show every node dead ("no report for 20 s")."""
    m, _ = cluster
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script("""(() => { const real = Date.now;
        Date.now = () => real() + 20000; })();""")
    page = context.new_page()
    try:
        page.goto(m.url + "/#topology")
        ex = expect()
        for name in ("c2", "a2"):
            box = page.locator(f'#topo-graph .tnode[data-name="{name}"]')
            ex(box).to_contain_text("ev/s in")
            assert "dead" not in (box.get_attribute("class") or "")
            assert "no report" not in (box.text_content() or "")
    finally:
        context.close()


def test_history_charts_axes_hover_and_the_flow_end_to_end(page, cluster):
    m, _ = cluster
    ex = expect()
    # the history is the master's: full at page load, the same for every browser
    h = m.get("/api/history", params={"node": "a2"}).json()
    assert len(h["t"]) >= 5 and h["interval"] == 1.0
    assert any(v for v in h["nodes"]["a2"]["events_in"] if v), (str(h["nodes"]["a2"]), m.logical("a2").get("counters"), m.logical("a2").get("last_seen"), time.time())
    page.goto(m.url + "/#nodes")
    page.locator('#logical-rows .r[data-name="a2"]').click()
    chart = page.locator("#node-chart-events")
    ex(chart.locator("svg.chart")).to_be_visible()
    assert int(chart.locator(".chart-box").get_attribute("data-points")) >= 5   # at once
    ex(chart.locator("text.tick.y").first).to_contain_text("ev/s")              # units
    assert chart.locator("text.tick.x").count() >= 1                            # time axis
    ex(page.locator("#node-chart-bytes text.tick.y").last).to_contain_text("B/s")
    area = chart.locator("rect.hover-area")
    box = area.bounding_box()
    area.hover(position={"x": box["width"] * 0.9, "y": box["height"] / 2})
    tip = chart.locator(".tip")
    ex(tip).to_be_visible()
    ex(tip).to_contain_text("in")
    ex(tip).to_contain_text("ev/s")
    screenshot(page, "node-history")

    page.goto(m.url + "/#topology")
    e2e = page.locator("#topo-e2e")
    ex(e2e.locator("svg.chart")).to_be_visible()
    ex(e2e).to_contain_text("in at agents")
    ex(e2e).to_contain_text("committed at collectors")
    ex(e2e).to_contain_text("gap")
    f = m.get("/api/history/flow/default-flow").json()
    assert any(v for v in f["in"] if v) and any(v for v in f["committed"] if v)
    screenshot(page, "flow-end-to-end")


def test_recent_errors_of_a_dead_collector(page, cluster):
    m, _ = cluster
    ex = expect()
    # c1's physical node was killed by the failover test: LOST once its session expires
    wait_until(lambda: m.logical("c1").get("state") == "LOST", 30, "c1 LOST")
    wait_until(lambda: "c1" in m.get("/api/errors").json(), 10, "c1's error recorded")
    # the LOST among c1's recent errors (an ERROR may come with it: its flow failing as
    # its process died)
    wait_until(lambda: any(e["state"] == "LOST" and e["t"] > 0
                           for e in m.get("/api/errors").json()["c1"]), 10, "c1's LOST recorded")
    page.goto(m.url + "/#nodes")
    page.locator('#logical-rows .r[data-name="c1"]').click()
    ex(page.locator("#node-errors table.errors tbody")).to_contain_text("LOST")
    screenshot(page, "node-errors")


def test_move_nodes_to_a_flow_with_a_preview_of_the_chains(page, cluster):
    m, _ = cluster
    ex = expect()
    for x in ("x1", "x2", "x3"):
        r = m.command("config", x, "staging", "asciisynth(1)", "autoBEChain")
        assert r.json()["state"] == "SUCCEEDED"
    page.goto(m.url + "/#flows")
    page.fill("#bulk-filter", "staging")
    ex(page.locator("#bulk-list label.pick")).to_have_count(3)
    page.click("#bulk-all")
    page.locator('#bulk-list input[data-node="x3"]').uncheck()
    ex(page.locator("#bulk-count")).to_have_text("2 selected")
    page.fill("#bulk-flow", "default-flow")
    ex(page.locator("#bulk-submit")).to_be_disabled()          # preview first
    page.click("#bulk-preview")
    out = page.locator("#bulk-preview-out")
    # what the master would compute (c2 alone once the failover test killed c1; the order
    # of the tests is not fixed)
    expected = m.post("/api/flows/default-flow/preview",
                      {"nodes": ["x1", "x2"]}).json()["chains"]["x1"]
    assert expected and set(expected) <= {"c1", "c2"}
    ex(out.locator('tr[data-agent="x1"] .chain')).to_have_text(" › ".join(expected))
    ex(out.locator('tr[data-agent="x2"]')).to_have_class("changed")
    assert m.get("/api/configs/x1").json()["flow"] == "staging"  # nothing stored yet
    screenshot(page, "flows-move-preview")
    page.click("#bulk-submit")
    ex(page.locator("#bulk-result")).to_contain_text("SUCCEEDED: moved 2 nodes to default-flow")
    assert m.get("/api/configs/x1").json()["flow"] == "default-flow"
    assert m.get("/api/configs/x3").json()["flow"] == "staging"
    last = m.get("/api/commands", params={"limit": 1}).json()[0]
    assert last["command"] == "multiconfig" and "x1" in last["args"][0]
    page.goto(m.url + "/#commands")
    ex(page.locator("#commands-table tbody tr").first).to_contain_text("multiconfig")
    screenshot(page, "flows-moved")


@pytest.mark.parametrize("tab", ["nodes", "topology", "specs", "configure", "flows",
                                 "mappings", "commands"])
def test_narrow_window_every_view(browser, cluster, tab):
    """At 420 px the header keeps every tab on its own dark band, reachable; every view is
    photographed."""
    m, _ = cluster
    context = browser.new_context(viewport={"width": 420, "height": 800})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(m.url + f"/#{tab}")
        expect()(page.locator(f"#tab-{tab}")).to_be_visible()
        # every light item of the header, scrolled to, lies on the header's dark band
        # (they used to overflow it: white on the white page)
        for item in [*page.locator("#tabs a").all(), page.locator("#conn"),
                     page.locator("#token-button")]:
            item.scroll_into_view_if_needed()
            header = page.locator("header.top").bounding_box()
            b = item.bounding_box()
            inside = (header["x"] - 0.5 <= b["x"] and b["x"] + b["width"] <= header["x"] + header["width"] + 0.5
                      and header["y"] - 0.5 <= b["y"] and b["y"] + b["height"] <= header["y"] + header["height"] + 0.5)
            assert inside, f"{item.inner_text()!r} lies outside the header band: {b} vs {header}"
        # the page does not scroll sideways as a whole
        assert page.evaluate("document.documentElement.scrollWidth") <= 420 + 1
        screenshot(page, f"narrow-{tab}")
    finally:
        context.close()
    assert not errors, errors


def test_a_flow_of_many_agents_is_grouped(page, cluster):
    m, _ = cluster
    ex = expect()
    spec = "// flow: many\n" + "".join(
        f"g{i:03d} : asciisynth(1) | autoBEChain ;\n" for i in range(150))
    assert m.command("multiconfig", spec).json()["state"] == "SUCCEEDED"
    page.goto(m.url + "/#topology")
    page.select_option("#topo-flow", "many")
    group = page.locator("#topo-graph .tnode.group")
    ex(group).to_have_count(1)               # no host, no collector: one group of them all
    ex(group).to_contain_text("150 agents")
    assert page.locator("#topo-graph .tnode").count() == 1
    ex(page.locator("#topo-info")).to_contain_text("grouped")
    screenshot(page, "topology-grouped")


def test_a_flow_of_neither_agents_nor_collectors_says_so(page, cluster):
    """A flow whose nodes are all "others" (no auto chain, no collector source) used to
    draw an svg of negative width."""
    m, _ = cluster
    assert m.command("config", "o1", "lonely", "asciisynth(1)", "null").json()["state"] == "SUCCEEDED"
    messages = []
    page.on("console", lambda msg: messages.append(msg.text) if msg.type == "error" else None)
    page.goto(m.url + "/#topology")
    page.select_option("#topo-flow", "lonely")
    expect()(page.locator("#topo-graph")).to_contain_text("no agent nor collector")
    assert page.locator("#topo-graph svg").count() == 0
    assert not [t for t in messages if "negative" in t], messages
    # the flow goes again: the Flows tab of the tests after this one keeps its layout
    assert m.command("unconfig", "o1").json()["state"] == "SUCCEEDED"


def test_drag_a_node_onto_another_flow_previews_then_moves_it(page, cluster):
    m, _ = cluster
    ex = expect()
    assert m.command("config", "y1", "solo", "asciisynth(1)", "autoBEChain").json()["state"] == "SUCCEEDED"
    page.goto(m.url + "/#flows")
    chip = page.locator('.flow[data-flow="solo"] .chip[data-node="y1"]')
    ex(chip).to_be_visible()
    chip.drag_to(page.locator('.flow[data-flow="default-flow"] h3'))
    ex(page.locator("#bulk-flow")).to_have_value("default-flow")
    expected = " › ".join(m.post("/api/flows/default-flow/preview", {"nodes": ["y1"]}).json()["chains"]["y1"])
    ex(page.locator('#bulk-preview-out tr[data-agent="y1"] .chain')).to_have_text(expected)
    assert m.get("/api/configs/y1").json()["flow"] == "solo"      # only previewed
    screenshot(page, "flows-drag-preview")
    page.click("#bulk-submit")
    ex(page.locator("#bulk-result")).to_contain_text("SUCCEEDED: moved 1 node to default-flow")
    assert m.get("/api/configs/y1").json()["flow"] == "default-flow"
    ex(page.locator('.flow[data-flow="default-flow"] [data-agent="y1"] .chain')).to_contain_text("c2")
