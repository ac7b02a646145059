"""Agents and collectors as real processes over loopback, with crashes.

A counter file is tailed by the agent and sent to a collector writing raw files; the
output files are read back and every counter is checked: E2E exactly once through
collector and agent SIGKILLs and collector failover; DFO nothing missing; BE missing
counters equal the dropped count.
"""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

from .harness import Master, Node, auth_files, remove_protected, wait_until

pytestmark = pytest.mark.timeout(240)

N = 20_000


def write_counters(path: Path, n: int = N, pace: float = 0.004, done=None) -> None:
    """Appends n counter lines in chunks of 200 (about 1 s per 50,000 lines at pace)."""
    with open(path, "ab", buffering=0) as f:
        for start in range(0, n, 200):
            f.write(b"".join(b"counter %07d\n" % i for i in range(start, min(n, start + 200))))
            time.sleep(pace)
    if done is not None:
        done.set()


def output_lines(out: Path) -> list[bytes]:
    lines = []
    if out.exists():
        for f in sorted(out.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                lines.extend(f.read_bytes().splitlines())
    return lines


class Cluster:
    """A master and nodes; with ``acl`` under ZooKeeper ACLs (master and node
    credentials, harness.auth_files)."""

    def __init__(self, tmp: Path, zk: str, root: str, acl: bool = False):
        self.tmp, self.zk, self.root = tmp, zk, root
        self.procs = []
        self.auth = auth_files(tmp) if acl else (None, None)
        self.master = Master(tmp, zk, root, auth_file=self.auth[0])
        self.procs.append(self.master)

    def node(self, name: str) -> Node:
        n = Node(self.tmp, self.zk, self.root, name, auth_file=self.auth[1])
        self.procs.append(n)
        return n

    def config(self, name: str, source: str, sink: str) -> None:
        r = self.master.command("config", name, source, sink)
        assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED", r.text

    def active(self, name: str, timeout: float = 30) -> None:
        wait_until(lambda: self.master.logical(name).get("state") == "ACTIVE", timeout,
                   f"{name} ACTIVE")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        if self.auth[0] is not None:
            remove_protected(self.zk, self.root)


@pytest.fixture
def cluster(tmp_path, zk_server, zk_root):
    c = Cluster(tmp_path, zk_server.connect_string, zk_root)
    yield c
    c.stop()


@pytest.fixture
def acl_cluster(tmp_path, zk_server, zk_root):
    c = Cluster(tmp_path, zk_server.connect_string, zk_root, acl=True)
    yield c
    c.stop()


def collector_spec(port: int, out: Path) -> tuple[str, str]:
    return f"collectorSource({port})", f'collectorSink("file://{out}", "data-", 1000)'


def start_collector(cluster: Cluster, name: str, port: int, out: Path) -> Node:
    node = cluster.node(name)
    cluster.config(name, *collector_spec(port, out))
    cluster.active(name)
    return node


def start_agent(cluster: Cluster, src: Path, sink: str) -> Node:
    """Node ``agent`` tailing ``src`` into ``sink``, once ACTIVE."""
    node = cluster.node("agent")
    cluster.config("agent", f'tail("{src}")', sink)
    cluster.active("agent")
    return node


def tail_to_one_collector(cluster: Cluster, tmp_path: Path,
                          agent_sink: str) -> tuple[Path, Node, Node, threading.Event]:
    """A collector writing ``tmp_path/out`` and an agent tailing ``tmp_path/app.log`` with
    ``agent_sink("127.0.0.1", port)``, then counters written at about 10,000 lines/s:
    (out, collector, agent, set when the writer is done)."""
    src, out, port = tmp_path / "app.log", tmp_path / "out", free_port()
    src.touch()
    collector = start_collector(cluster, "collector", port, out)
    agent = start_agent(cluster, src, f'{agent_sink}("127.0.0.1", {port})')
    return out, collector, agent, run_writer(src, pace=0.02)


def run_writer(src: Path, **kw) -> threading.Event:
    done = threading.Event()
    threading.Thread(target=write_counters, args=(src,), kwargs={"done": done, **kw},
                     daemon=True).start()
    return done


def expect_exactly_once(out: Path, agent: Node, timeout: float = 120) -> None:
    expected = [b"counter %07d" % i for i in range(N)]
    wait_until(lambda: len(output_lines(out)) >= N, timeout,
               f"all {N} counters in the output")
    # once the agent's write-ahead log holds no group, nothing can be sent again: a
    # duplicate could not come later
    wait_until(lambda: agent.counters("agent").get("wal_groups") == 0, timeout,
               "every group acknowledged")
    lines = output_lines(out)
    assert len(lines) == len(set(lines)), f"{len(lines) - len(set(lines))} duplicates"
    assert sorted(lines) == expected


@pytest.mark.parametrize("victim, seed, down", [("collector", 3, 0.5), ("agent", 5, 0.0)])
def test_e2e_node_sigkilled_and_restarted_three_times(cluster, tmp_path, victim, seed, down):
    out, collector, agent, done = tail_to_one_collector(cluster, tmp_path, "agentE2ESink")
    node = collector if victim == "collector" else agent
    rnd = random.Random(seed)
    for _ in range(3):
        time.sleep(rnd.uniform(0.5, 1.5))   # the chaos schedule: a kill at a random moment
        node.kill()
        time.sleep(down)                    # how long the victim stays dead
        node = cluster.node(victim)
    assert done.wait(120)
    expect_exactly_once(out, node if victim == "agent" else agent)


def test_e2e_failover_to_second_collector(cluster, tmp_path):
    src, out = tmp_path / "app.log", tmp_path / "out"
    p1, p2 = free_port(), free_port()
    src.touch()
    c1 = start_collector(cluster, "c1", p1, out)
    start_collector(cluster, "c2", p2, out)
    agent = start_agent(cluster, src, f'agentE2EChain("127.0.0.1:{p1}", "127.0.0.1:{p2}")')
    done = run_writer(src, pace=0.02)
    wait_until(lambda: c1.counters("c1").get("events_in", 0) > 0, 60, "c1 receiving")
    c1.kill()  # c2 takes over; c1's unacknowledged groups are sent again
    assert done.wait(120)
    expect_exactly_once(out, agent)


def test_e2e_exactly_once_under_zookeeper_acls(acl_cluster, tmp_path):
    """The commit log (claims, groups, watermark, file records) works with the node
    credential: agent and collector nodes may do everything E2E needs."""
    out, _, agent, done = tail_to_one_collector(acl_cluster, tmp_path, "agentE2ESink")
    assert done.wait(120)
    expect_exactly_once(out, agent)


def collector_outage(cluster: Cluster, collector: Node, seconds: float) -> None:
    """Once events reach the collector, it is SIGKILLed and started again ``seconds``
    later."""
    wait_until(lambda: collector.counters("collector").get("events_in", 0) > 0, 60,
               "the collector receiving")
    collector.kill()
    time.sleep(seconds)                     # how long the collector stays dead
    cluster.node("collector")


def test_dfo_collector_down_then_back_nothing_missing(cluster, tmp_path):
    out, collector, _, done = tail_to_one_collector(cluster, tmp_path, "agentDFOSink")
    collector_outage(cluster, collector, 2.0)  # the agent spools to disk meanwhile
    assert done.wait(120)
    wait_until(lambda: set(output_lines(out)) >= {b"counter %07d" % i for i in range(N)},
               120, "every counter delivered")


def test_be_missing_counters_are_dropped_or_unknown(cluster, tmp_path):
    out, collector, _, done = tail_to_one_collector(cluster, tmp_path, "agentBESink")
    collector_outage(cluster, collector, 1.5)
    assert done.wait(120)

    def counters() -> dict:
        row = cluster.master.logical("agent")
        return (row or {}).get("counters") or {}

    def sent_all():
        c = counters()
        return (c.get("events_out", 0) + c.get("dropped", 0) + c.get("unknown", 0) == N
                and c)

    c = wait_until(sent_all, 120, "every line sent, dropped or of unknown outcome")
    d, u = c["dropped"], c["unknown"]
    # every acknowledged line is in the files; the files roll every second: wait until
    # they hold what they will hold
    seen = []

    def final():
        got = len(set(output_lines(out)))
        seen.append(got)
        return got >= c["events_out"] and len(seen) > 30 and seen[-30] == got and (got,)

    (got,) = wait_until(final, 120, "the output files to stop growing", interval=0.1)
    assert d + u > 0, "the collector was down: something must have been dropped"
    assert d <= N - got <= d + u          # lost = dropped; unknown = delivered or lost
