"""The master's history (master/history.py): rings of counters sampled per logical node,
recent errors, a flow end to end, and the REST API serving them (and the chain preview),
over a real MasterService on a real ZooKeeper."""
from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from flume_og.master.api import create_app
from flume_og.master.history import FIELDS, History, bytes_per_node, component_of
from flume_og.master.service import MasterService
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def row(name, t, ein=0, eout=0, state="ACTIVE", err=None, **counters):
    return {"name": name, "state": state, "last_seen": t, "last_error": err,
            "events_in": ein, "events_out": eout, "bytes_in": ein * 10, "bytes_out": eout * 10,
            "errors": 0, "counters": {"events_in": ein, "events_out": eout, **counters}}


def test_rates_from_report_times_not_sampling_times():
    h = History(samples=10)
    h.sample({"logical": [row("a", 1_000_000, ein=0)]}, now_ms=1_000_500)
    h.sample({"logical": [row("a", 1_002_000, ein=100, eout=50, wal_bytes=7,
                              spool_bytes=3, acks_pending=2)]}, now_ms=1_003_000)
    h.sample({"logical": [row("a", 1_002_000, ein=100, eout=50)]}, now_ms=1_004_000)  # same
    s = h.series(["a", "nosuch"])
    assert list(s["nodes"]) == ["a"] and s["fields"] == list(FIELDS)
    assert s["t"] == [1_000_500, 1_003_000, 1_004_000]
    a = s["nodes"]["a"]
    assert a["events_in"] == [None, 50.0, 50.0]        # 100 events over 2 s of reports
    assert a["events_out"] == [None, 25.0, 25.0] and a["bytes_in"][1] == 500.0
    assert a["backlog_bytes"][1] == 10.0 and a["acks_pending"][1] == 2.0
    latest = h.latest()
    assert latest["t"] == 1_004_000 and latest["nodes"]["a"]["events_in"] == 50.0


def test_a_counter_going_down_or_a_stale_report_gives_no_rate():
    h = History(samples=10)
    h.sample({"logical": [row("a", 10_000, ein=500)]}, now_ms=10_000)
    h.sample({"logical": [row("a", 12_000, ein=20)]}, now_ms=12_000)     # restarted
    h.sample({"logical": [row("a", 14_000, ein=60)]}, now_ms=14_000)
    h.sample({"logical": [row("a", 14_000, ein=60)]}, now_ms=40_000)     # dead since
    assert h.series(["a"])["nodes"]["a"]["events_in"] == [None, None, 20.0, None]


def test_ring_is_bounded_and_forgets_nodes_gone():
    h = History(samples=4)
    for i in range(10):
        h.sample({"logical": [row("a", 1000 * i, ein=10 * i), row("b", 1000 * i)]},
                 now_ms=1000 * i)
    s = h.series(["a"])
    assert s["t"] == [6000, 7000, 8000, 9000] and s["nodes"]["a"]["events_in"] == [10.0] * 4
    h.sample({"logical": [row("a", 10_000, ein=100)]}, now_ms=10_000)
    assert set(h.latest()["nodes"]) == {"a"}
    assert len(h.nodes["a"].values) == 4 * len(FIELDS)
    assert bytes_per_node() == 720 * 8 * 4 == 23_040   # what the docs state


def test_rates_do_not_depend_on_the_node_clock():
    """Staleness is measured on the master's clock (how long a node's report has not
    changed), not by comparing the node's clock with the master's."""
    hour = 3_600_000
    h = History(samples=10)
    # a node whose clock is an hour late, reporting every 2 s, alive
    for i, now in enumerate((100_000, 102_000, 104_000, 106_000)):
        h.sample({"logical": [row("behind", now - hour, ein=10 * i),
                              row("other", now, ein=0)]},
                 now_ms=now)
    s = h.series(["behind"])["nodes"]["behind"]
    assert s["events_in"][1:] == [5.0, 5.0, 5.0]       # the old check said: stale, no rate
    h2 = History(samples=10)
    h2.sample({"logical": [row("ahead", 100_000 + hour, ein=0)]}, now_ms=100_000)
    h2.sample({"logical": [row("ahead", 102_000 + hour, ein=20)]}, now_ms=102_000)
    h2.sample({"logical": [row("ahead", 102_000 + hour, ein=20)]}, now_ms=110_000)
    h2.sample({"logical": [row("ahead", 102_000 + hour, ein=20)]}, now_ms=130_000)  # dead
    # a node whose clock is an hour early dies after its second report: the old check
    # kept its last rate for as long as its clock was ahead
    assert h2.series(["ahead"])["nodes"]["ahead"]["events_in"] == [None, 10.0, 10.0, None]


def test_history_keeps_a_bounded_number_of_nodes_configured_first():
    """A physical node can report any number of made-up logical nodes (rows of the
    listing nobody configured): the rings stay within max_nodes, configured nodes first."""
    h = History(samples=4, max_nodes=10)
    configured = [dict(row(f"c{i}", 1000), config_version=1) for i in range(5)]
    junk = [dict(row(f"junk{i}", 1000), config_version=None) for i in range(10_000)]
    h.sample({"logical": junk + configured}, now_ms=1000)
    assert len(h.nodes) == 10
    assert {f"c{i}" for i in range(5)} <= set(h.nodes)
    assert h.latest()["untracked"] == 10_005 - 10
    h.sample({"logical": configured}, now_ms=2000)          # the junk went away
    assert set(h.nodes) == {f"c{i}" for i in range(5)} and h.latest()["untracked"] == 0


def test_names_no_node_can_have_are_not_kept_and_states_are_cut():
    """A report's junk: a 'name' of a megabyte (or not a string) is left out (counted in
    untracked), and a state of a megabyte is kept cut, not whole in each recent error."""
    from flume_og.master.validation import MAX_NAME
    h = History(samples=4)
    huge = "n" * 1_000_000
    rows = [row(huge, 1000), row("n" * (MAX_NAME + 1), 1000), dict(row("x", 1000), name=7),
            row("ok", 1000, state="S" * 1_000_000, err="boom")]
    h.sample({"logical": rows}, now_ms=1000)
    assert set(h.nodes) == {"ok"} and h.latest()["untracked"] == 3
    err = h.errors()["ok"][0]
    assert err["state"] == "S" * 40 and h.nodes["ok"].state == err["state"]
    h.sample({"logical": [row("n" * MAX_NAME, 2000)]}, now_ms=2000)   # the longest name
    assert set(h.nodes) == {"n" * MAX_NAME}


def test_answers_are_built_outside_the_lock_sampling_takes(monkeypatch):
    """Series and flow answers of many nodes take about a second to build; an open
    endpoint asked for them repeatedly held the lock that sampling needs all along."""
    h = History(samples=4)
    h.sample({"logical": [row("a", 1000, ein=1), row("b", 1000)]}, now_ms=1000)
    held = []
    num = History._num

    def watching(v):
        held.append(h._lock.locked())
        return num(v)
    monkeypatch.setattr(History, "_num", staticmethod(watching))
    h.series(["a", "b", "a"])
    assert held and not any(held)
    assert list(h.series(["a", "b", "a"])["nodes"]) == ["a", "b"]
    locked_in_flow = []
    isnan = math.isnan
    monkeypatch.setattr(math, "isnan", lambda v: locked_in_flow.append(h._lock.locked()) or isnan(v))
    h.flow(["a"], ["b"])
    assert locked_in_flow and not any(locked_in_flow)


def test_recent_errors_with_time_and_component():
    h = History(samples=10)
    h.sample({"logical": [row("c", 1000, err="collectorSource: cannot bind 1.2.3.4:5")]},
             now_ms=1000)
    h.sample({"logical": [row("c", 2000, err="collectorSource: cannot bind 1.2.3.4:5")]},
             now_ms=2000)                                   # the same error: kept once
    h.sample({"logical": [row("c", 3000, state="LOST")]}, now_ms=3000)
    errs = h.errors()["c"]
    assert [e["t"] for e in errs] == [3000, 1000]          # newest first
    assert errs[1]["component"] == "collectorSource" and "cannot bind" in errs[1]["message"]
    assert errs[0]["state"] == "LOST"
    for i in range(30):
        h.sample({"logical": [row("c", 4000 + i, err=f"rpcSink: error {i}")]}, now_ms=4000 + i)
    assert len(h.errors()["c"]) == 20 and h.errors()["c"][0]["message"] == "rpcSink: error 29"
    assert component_of("no colon here") == "" and component_of("a b: c") == ""


def test_flow_end_to_end_in_committed_gap():
    h = History(samples=10)
    h.sample({"logical": [row("a1", 0), row("a2", 0), row("c", 0)]}, now_ms=0)
    h.sample({"logical": [row("a1", 1000, ein=30), row("a2", 1000, ein=10),
                          row("c", 1000, ein=25, eout=25)]}, now_ms=1000)
    f = h.flow(["a1", "a2"], ["c"])
    assert f["in"] == [None, 40.0] and f["committed"] == [None, 25.0] and f["gap"] == [None, 15.0]


@pytest.fixture
def service(store, tmp_path):
    svc = MasterService(store, tmp_path / "m", name="hist", history_interval=None)
    yield svc
    svc.close()


def report(store, physical, t, **logical):
    store.put_status(physical, {"updated": t, "host": "h1", "logical": {
        name: {"state": "ACTIVE", "version": 0, "last_error": err,
               "counters": {"events_in": ein, "events_out": eout, "errors": 0}}
        for name, (ein, eout, err) in logical.items()}})


def test_history_api_over_a_real_service(service, store):
    import time
    client = TestClient(create_app(service))
    store.register_physical("p1", {"host": "h1"})
    for name, src, sink in (("coll", "autoCollectorSource", "null"),
                            ("ag", "asciisynth(1)", "autoBEChain")):
        assert client.put(f"/api/configs/{name}", json={"source": src, "sink": sink}).status_code == 200
    for name in ("coll", "ag"):
        client.post("/api/mappings", json={"physical": "p1", "logical": name})
    now = int(time.time() * 1000)
    report(store, "p1", now - 2000, coll=(0, 0, None), ag=(0, 0, None))
    wait_until(lambda: service.status()["logical"][0]["last_seen"] == now - 2000, 10, "report")
    service.sample_history()
    report(store, "p1", now, coll=(80, 80, None), ag=(100, 90, "agentBEChain: collector down"))
    wait_until(lambda: service.status()["logical"][0]["last_seen"] == now, 10, "report")
    service.sample_history()
    s = client.get("/api/history", params={"node": ["ag", "coll"]}).json()
    assert s["nodes"]["ag"]["events_in"] == [None, 50.0]
    assert s["nodes"]["coll"]["events_out"] == [None, 40.0]
    assert s["nodes"]["ag"]["recent_errors"][0]["component"] == "agentBEChain"
    latest = client.get("/api/history").json()
    assert latest["nodes"]["ag"]["events_out"] == 45.0
    f = client.get("/api/history/flow/default-flow").json()
    assert f["in"] == [None, 50.0] and f["committed"] == [None, 40.0] and f["gap"] == [None, 10.0]
    assert client.get("/api/history/flow/nosuch").status_code == 404
    errs = client.get("/api/errors").json()
    assert list(errs) == ["ag"] and errs["ag"][0]["message"] == "agentBEChain: collector down"
    # two clients see the same numbers: the history is the master's
    assert TestClient(create_app(service)).get("/api/history", params={"node": "ag"}).json() \
        == client.get("/api/history", params={"node": "ag"}).json()


def test_preview_of_chains_stores_nothing(service, store):
    client = TestClient(create_app(service))
    for p in ("p1", "p2"):
        store.register_physical(p, {"host": p})
    for name, flow, src, sink in (("c1", "web", "autoCollectorSource", "null"),
                                  ("c2", "db", "autoCollectorSource", "null"),
                                  ("a1", "db", "asciisynth(1)", "autoBEChain"),
                                  ("a2", "db", "asciisynth(1)", "autoBEChain")):
        r = client.put(f"/api/configs/{name}", json={"source": src, "sink": sink, "flow": flow})
        assert r.status_code == 200
    client.post("/api/mappings", json={"physical": "p1", "logical": "c1"})
    client.post("/api/mappings", json={"physical": "p2", "logical": "c2"})
    wait_until(lambda: service.flows().get("web", {}).get("pool") == ["c1"], 10, "pool")
    r = client.post("/api/flows/web/preview", json={"nodes": ["a1", "nosuch"]})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["chains"] == {"a1": ["c1"]} and p["pool"] == ["c1"] and p["unknown"] == ["nosuch"]
    assert p["changed"] == {"a1": {"before": ["c2"], "after": ["c1"]}}
    assert client.get("/api/configs/a1").json()["flow"] == "db"      # nothing stored
    # moving the collector away leaves the agents of its flow without one
    p = client.post("/api/flows/web/preview", json={"nodes": ["c2"]}).json()
    assert p["changed"]["a1"] == {"before": ["c2"], "after": []}
    assert client.post("/api/flows/web/preview", json={"nodes": "a1"}).status_code == 422


def test_preview_and_history_need_no_write_token(service, store):
    locked = TestClient(create_app(service, token="a-test-token-0123456789"))
    assert locked.post("/api/flows/web/preview", json={"nodes": []}).status_code == 200
    assert locked.get("/api/history").status_code == 200
    assert locked.get("/api/errors").status_code == 200
    assert locked.post("/api/flows/web/other", json={}).status_code == 401
    assert locked.post("/api/flows//preview", json={"nodes": []}).status_code == 401
    reading = TestClient(create_app(service, token="a-test-token-0123456789",
                                    read_token="a-read-token-0123456789"))
    assert reading.get("/api/history").status_code == 401
    assert reading.post("/api/flows/web/preview", json={"nodes": []}).status_code == 401
    assert reading.post("/api/flows/web/preview", json={"nodes": []}, headers={
        "Authorization": "Bearer a-read-token-0123456789"}).status_code == 200
