"""Masters and nodes as real processes on a real ZooKeeper."""
from __future__ import annotations

import concurrent.futures as cf
import time

import pytest

from .harness import Master, Node, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path, zk_server, zk_root):
    procs = []

    def master(name="m1", **kw):
        m = Master(tmp_path, zk_server.connect_string, zk_root, name=name, **kw)
        procs.append(m)
        return m

    def node(name="p1"):
        n = Node(tmp_path, zk_server.connect_string, zk_root, name)
        procs.append(n)
        return n
    yield master, node
    for p in procs:
        p.stop()


def active_version(m, name):
    row = m.logical(name)
    return row.get("state") == "ACTIVE" and row.get("version")


def test_config_through_each_of_two_masters(cluster, tmp_path):
    master, node = cluster
    m1, m2 = master("m1"), master("m2")
    node("p1")
    wait_until(lambda: m1.logical("p1"), what="node registered")
    out1 = tmp_path / "out1.log"
    r = m1.command("config", "p1", 'asciisynth(0, 20)', f'{{ delay(5) => text("{out1}") }}')
    assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED", r.text
    wait_until(lambda: active_version(m2, "p1") is not False and out1.exists(),
               what="flow from m1 running, seen through m2")
    r = m2.command("config", "p1", 'asciisynth(0, 20)', "null")
    assert r.json()["state"] == "SUCCEEDED", r.text
    wait_until(lambda: m1.logical("p1").get("sink") == "null"
               and m1.logical("p1").get("state") == "ACTIVE", what="m2's config applied")


def test_kill_one_master_other_carries_on(cluster):
    master, node = cluster
    m1, m2 = master("m1"), master("m2")
    node("p1")
    m1.kill()
    r = m2.command("config", "p1", "asciisynth(0)", "null")
    assert r.json()["state"] == "SUCCEEDED"
    wait_until(lambda: m2.logical("p1").get("state") == "ACTIVE", what="node active via m2")


def test_node_restart_picks_up_specs(cluster):
    master, node = cluster
    m = master()
    n = node("p1")
    m.command("config", "p1", "asciisynth(0)", "{ delay(10) => null }")
    wait_until(lambda: m.logical("p1").get("state") == "ACTIVE")
    n.stop()
    wait_until(lambda: m.logical("p1").get("state") in ("LOST", "IDLE"), what="node gone")
    node("p1")
    wait_until(lambda: m.logical("p1").get("state") == "ACTIVE"
               and "delay" in m.logical("p1").get("sink", ""), what="specs picked up")


def test_node_death_shows_lost_within_session_timeout(cluster):
    master, node = cluster
    m = master()
    n = node("p1")
    m.command("config", "p1", "asciisynth(0)", "null")
    wait_until(lambda: m.logical("p1").get("state") == "ACTIVE")
    n.kill()
    wait_until(lambda: m.logical("p1").get("state") == "LOST", timeout=25,
               what="LOST after SIGKILL")


def test_concurrent_updates_from_two_masters_lose_nothing(cluster):
    master, _ = cluster
    m1, m2 = master("m1"), master("m2")
    names = [f"l{i}" for i in range(40)]

    def work(i_name):
        i, name = i_name
        m = (m1, m2)[i % 2]
        a = m.command("map", "shared-phys", name)
        b = m.command("config", name, "null", f'value("n", "{name}") null')
        return a.json()["state"], b.json()["state"]

    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(work, enumerate(names)))
    assert all(r == ("SUCCEEDED", "SUCCEEDED") for r in results), results
    mapping = m1.get("/api/mappings").json()
    mapped = mapping.get("shared-phys") if isinstance(mapping, dict) else None
    assert sorted(mapped) == sorted(names)
    configs = m2.get("/api/configs").json()
    got = configs if isinstance(configs, dict) else {c["name"]: c for c in configs}
    for name in names:
        assert name in got


def test_writes_need_token_when_set(cluster, tmp_path):
    master, _ = cluster
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    m = master("m1", token_file=token_file)
    r = m.command("noop")
    assert r.status_code == 401
    r = m.command("noop", headers={"Authorization": "Bearer wrong-token-xxxxxxxxxx"})
    assert r.status_code == 401
    r = m.command("noop", headers={"Authorization": "Bearer s3cret-token-0123456789"})
    assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED"
    assert m.get("/api/status").status_code == 200  # reads stay open


def test_zookeeper_restart_under_running_master_and_node(tmp_path):
    """ZooKeeper (a separate server process) goes away for longer than the session
    timeout, then comes back: the node's flow keeps moving events meanwhile, master and
    node reconnect, and a config made through the master afterwards reaches the node."""
    from tests.conftest import free_port
    from flume_og.zk.server import ManagedZooKeeper
    port = free_port()
    zk = ManagedZooKeeper(tmp_path / "zk", port=port).start()
    procs = []
    try:
        m = Master(tmp_path, zk.connect_string, "/flume")
        procs.append(m)
        n = Node(tmp_path, zk.connect_string, "/flume", "p1")
        procs.append(n)
        wait_until(lambda: m.logical("p1"), what="node registered")
        r = m.command("config", "p1", "asciisynth(0, 20)", "null")
        assert r.json()["state"] == "SUCCEEDED", r.text
        wait_until(lambda: m.logical("p1").get("state") == "ACTIVE", what="flow running")

        zk.stop()
        before = n.counters("p1")["events_in"]
        wait_until(lambda: n.counters("p1").get("events_in", 0) > before + 50, 30,
                   what="the flow moving events while ZooKeeper is away")
        time.sleep(12)               # away for longer than the 10 s session timeout
        zk = ManagedZooKeeper(tmp_path / "zk", port=port).start()
        wait_until(lambda: m.get("/api/health").status_code == 200 and m.logical("p1")
                   .get("state") == "ACTIVE", 60, what="node registered again")
        r = m.command("config", "p1", "asciisynth(0, 30)", "null")
        assert r.json()["state"] == "SUCCEEDED", r.text
        wait_until(lambda: m.logical("p1").get("source") == "asciisynth(0, 30)"
                   and m.logical("p1").get("state") == "ACTIVE", 60,
                   what="a config made after the restart applied")
        assert all(p.p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.stop()
        zk.stop()


def test_any_failure_to_configure_shows_error_with_its_reason_at_the_master(
        cluster, zk_client, zk_root):
    """A config the node cannot run for a reason no check names (written straight to
    ZooKeeper, past every master's validation): the master's status shows the node in
    ERROR with that reason, not a node stuck in its last state with no error."""
    master, node = cluster
    m = master()
    node("p1")
    wait_until(lambda: m.logical("p1").get("state") not in (None, "UNMAPPED"),
               what="node registered")
    zk_client.create(f"{zk_root}/logical/p1", b'{"source": 5, "sink": "null"}',
                     makepath=True)
    row = wait_until(lambda: (r := m.logical("p1")).get("state") == "ERROR" and r,
                     what="ERROR at the master")
    assert row["last_error"].startswith("spec version 0 could not be configured: TypeError")
    r = m.command("config", "p1", "asciisynth(0)", "null")
    assert r.json()["state"] == "SUCCEEDED", r.text
    wait_until(lambda: m.logical("p1").get("state") == "ACTIVE", what="the next spec runs")
    assert m.logical("p1").get("last_error") is None
