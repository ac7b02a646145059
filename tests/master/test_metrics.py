"""The master's /metrics: nodes and commands by state, the ZooKeeper session, cluster
totals that never go down, behind the read token like the API."""
from __future__ import annotations

import subprocess

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from flume_og.master.api import create_app
from flume_og.master.metrics import ClusterTotals
from flume_og.master.service import MasterService
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service(store, tmp_path):
    svc = MasterService(store, tmp_path / "master-data", name="metrics-master")
    yield svc
    svc.close()


def samples(client, **kw) -> dict:
    r = client.get("/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def test_nodes_commands_session_and_cluster_totals(service, store):
    with TestClient(create_app(service)) as client:
        assert client.put("/api/configs/web1", json={"source": "asciisynth(1)",
                                                     "sink": "null"}).status_code == 200
        assert client.post("/api/commands", json={"command": "config", "args": [
            "web1", "nosuchsource(", "null"]}).status_code in (200, 400)
        # a physical node reporting web1 ACTIVE with its counters
        assert client.post("/api/mappings", json={"physical": "p1",
                                                  "logical": "web1"}).status_code == 200
        store.put_status("p1", {"logical": {"web1": {
            "state": "ACTIVE", "counters": {"events_in": 40, "bytes_in": 400,
                                            "events_out": 40, "bytes_out": 400,
                                            "errors": 1}}}, "updated": 1})

        def seen():
            s = samples(client)
            return s if s[("flume_cluster_events_in_total", ())] == 40 else None
        s = wait_until(seen, 10, "the node's counters in the cluster totals")
        assert s[("flume_master_zookeeper_session_state", (("state", "CONNECTED"),))] == 1
        assert s[("flume_master_zookeeper_session_state", (("state", "LOST"),))] == 0
        # p1 is mapped but not alive: web1 is LOST to the master
        assert s[("flume_master_logical_nodes", (("state", "LOST"),))] == 1
        assert s[("flume_master_logical_nodes", (("state", "ACTIVE"),))] == 0
        assert s[("flume_master_physical_nodes", (("alive", "false"),))] == 1
        assert s[("flume_master_commands", (("state", "SUCCEEDED"),))] >= 2
        assert s[("flume_master_commands", (("state", "FAILED"),))] == 1
        assert s[("flume_cluster_errors_total", ())] == 1
        assert any(k[0] == "flume_build_info" for k in s)
        assert s[("process_open_fds", ())] > 0


def test_cluster_totals_carry_what_a_restarted_or_vanished_node_counted():
    t = ClusterTotals()
    row = {"physical": "p1", "name": "a", "events_in": 100}
    other = {"physical": "p2", "name": "b", "events_in": 5}
    assert t.update([row, other])["events_in"] == 105
    assert t.update([{**row, "events_in": 7}, other])["events_in"] == 112   # p1 restarted
    assert t.update([{**row, "events_in": 9}])["events_in"] == 114          # p2 went away
    assert t.update([{**row, "events_in": 9}, other])["events_in"] == 114


def test_metrics_need_the_read_token_when_the_master_has_one(service):
    with TestClient(create_app(service, read_token="r" * 24)) as client:
        assert client.get("/metrics").status_code == 401
        assert samples(client, headers={"Authorization": "Bearer " + "r" * 24})


def test_promtool_accepts_the_masters_exposition(service):
    with TestClient(create_app(service)) as client:
        client.put("/api/configs/web1", json={"source": "asciisynth(1)", "sink": "null"})
        text = client.get("/metrics").text
    out = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out


def test_zookeeper_away_leaves_out_what_it_cannot_read_and_keeps_the_rest():
    from flume_og.master.metrics import MasterCollector
    from flume_og.zk.client import ZkError

    class Away:
        disconnections = 3

        def session_state(self):
            return "SUSPENDED"

        def command_ids(self):
            raise ZkError("ZooKeeper is away")

    class Service:
        store = Away()

        def status(self):
            raise ZkError("ZooKeeper is away")

    fams = {f.name: f for f in MasterCollector(Service(), {"refused_host": 2}).collect()}
    assert set(fams) == {"flume_master_zookeeper_session_state", "flume_master_refused",
                         "flume_master_zookeeper_disconnections"}
    assert fams["flume_master_zookeeper_disconnections"].samples[0].value == 3
    state = {s.labels["state"]: s.value for s in fams[
        "flume_master_zookeeper_session_state"].samples}
    assert state == {"CONNECTED": 0, "SUSPENDED": 1, "LOST": 0}
    assert [(s.labels, s.value) for s in fams["flume_master_refused"].samples] == [
        ({"reason": "host"}, 2)]
