"""End-to-end mode with real ZooKeeper and real RPC over loopback: agent -> collector,
every event exactly once in the output files, through collector crashes, failover, agent
restarts and duplicate sends (docs/e2e.md)."""
from __future__ import annotations

import collections
import gc
import os
import shutil
import socket
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from flume_og.node.builder import build_source
from flume_og.node.checkpoint import CheckpointStore
from flume_og.node.codec import encode_events
from flume_og.node.commit_port import CommitLogPort
from flume_og.node.component import NodeContext, NodeShared
from flume_og.node.errors import SinkError, SpecError
from flume_og.node.event import events_from_lines
from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.rpc import RpcClient, Status
from flume_og.node.sinks.agent_e2e import GroupChain
from flume_og.node.sources import memory
from flume_og.node.spec import parse_sink, parse_source
from flume_og.zk.client import connect
from flume_og.zk.store import ConfigStore
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def output_lines(out: Path) -> collections.Counter:
    """Every line of every *visible* file under ``out``."""
    c: collections.Counter = collections.Counter()
    if not out.exists():
        return c
    for root, _, names in os.walk(out):
        for n in names:
            if n.startswith("."):
                continue
            with open(os.path.join(root, n), "rb") as f:
                c.update(f.read().splitlines())
    return c


def hidden_files(out: Path) -> list[str]:
    return [n for _, _, names in os.walk(out) for n in names if n.startswith(".")]


def bodies(prefix: str, start: int, n: int) -> list[bytes]:
    return [f"{prefix}-{i:07d}".encode() for i in range(start, start + n)]


def sink_metrics(ln: LogicalNode) -> dict:
    """Counters of every component of a logical node's sink tree, summed by name."""
    total: dict = collections.Counter()

    def walk(r):
        for k, v in r.get("metrics", {}).items():
            if isinstance(v, (int, float)):
                total[k] += v
        for c in r.get("children", []):
            walk(c)
    comps = ln.status()["components"]
    if comps:
        walk(comps["sink"])
    return total


def wal_metrics(ln: LogicalNode) -> dict:
    comps = ln.status()["components"]
    rep = comps["sink"]
    while rep["name"] != "ackedWriteAhead":
        rep = rep["children"][0]
    return rep["metrics"]


class Cluster:
    """Collectors and agents as in-process logical nodes sharing one ZooKeeper root, each
    collector with its own ZooKeeper session (so it can 'crash')."""

    def __init__(self, zk_server, root: str, tmp: Path, agent_store: ConfigStore):
        self.zk_server = zk_server
        self.root = root
        self.tmp = tmp
        self.agent_store = agent_store
        self.out = tmp / "out"
        self.nodes: list[LogicalNode] = []
        self.clients = []
        self.storage = None     # the collectors' storage settings (object-store tests)

    def collector_store(self) -> tuple:
        client = connect(self.zk_server.connect_string)
        self.clients.append(client)
        return client, ConfigStore(client, self.root)

    def collector(self, name: str, port: int = 0, roll_ms: int = 300, store=None,
                  physical: str = "cphys", sink: str | None = None,
                  source_args: str = "") -> LogicalNode:
        """A collectorSource node with its own ZooKeeper session; its sink is ``sink``, by
        default a collectorSink writing ``<out>/<name>-...`` every ``roll_ms``."""
        if store is None:
            _, store = self.collector_store()
        ln = LogicalNode(name, self.tmp / "collectors", physical_name=physical,
                         shared=NodeShared(commit_log=CommitLogPort(store.commits),
                                           storage=self.storage))
        ln.configure(parse_source(f"collectorSource({port}, bind=\"127.0.0.1\""
                                  f"{source_args})"),
                     parse_sink(sink or f'collectorSink("{self.out}", "{name}-", {roll_ms})'))
        assert ln.state is State.ACTIVE, ln.last_error
        self.nodes.append(ln)
        return ln

    def agent(self, name: str, channel: str, sink: str, physical: str = "aphys",
              store: ConfigStore | None = None) -> LogicalNode:
        ln = LogicalNode(name, self.tmp / "agents", physical_name=physical,
                         shared=NodeShared(
                             commit_log=CommitLogPort((store or self.agent_store).commits)))
        ln.configure(parse_source(f'memory("{channel}")'), parse_sink(sink))
        assert ln.state is State.ACTIVE, ln.last_error
        self.nodes.append(ln)
        return ln

    def close(self):
        for ln in self.nodes:
            try:
                ln.stop(10)
            except Exception:
                pass
        for c in self.clients:
            try:
                c.stop()
                c.close()
            except Exception:
                pass


@pytest.fixture
def cluster(zk_server, zk_root, store, tmp_path):
    c = Cluster(zk_server, zk_root, tmp_path, store)
    yield c
    c.close()


@pytest.fixture
def channel(request):
    name = f"e2e-{request.node.name}"
    memory.reset(name)
    yield name
    memory.reset(name)


def port_of(ln: LogicalNode) -> int:
    return ln._flow.source.port


def assert_exactly_once(out: Path, expected: list[bytes]) -> None:
    got = output_lines(out)
    missing = [b for b in expected if got[b] == 0]
    dups = {b: n for b, n in got.items() if n > 1}
    extra = set(got) - set(expected)
    assert not missing, f"{len(missing)} events missing, first {missing[:3]}"
    assert not dups, f"{len(dups)} events duplicated, e.g. {list(dups.items())[:3]}"
    assert not extra, f"unexpected lines {list(extra)[:3]}"


def all_acked(agent: LogicalNode, n_events: int) -> bool:
    m = wal_metrics(agent)
    return m.get("events_acked", 0) >= n_events and m.get("wal_groups", 1) == 0


# ---------------------------------------------------------------------- the basic path

def test_agent_to_collector_exactly_once(cluster, channel, store):
    col = cluster.collector("col1", roll_ms=200)
    agent = cluster.agent("agent1", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    expected = []
    for wave in range(5):
        batch = bodies("basic", wave * 4000, 4000)
        expected += batch
        memory.push(channel, batch)
        time.sleep(0.05)
    wait_until(lambda: all_acked(agent, len(expected)), what="every group acknowledged")
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= len(expected))
    assert_exactly_once(cluster.out, expected)
    assert not hidden_files(cluster.out)
    # the agent raised its watermark past everything and forgot the group znodes below it
    m = wal_metrics(agent)
    wait_until(lambda: store.commits.get_watermark("agent1") == m["groups_written"] + 1,
               what="watermark")
    wait_until(lambda: store.commits.list_groups("agent1") == [], what="group znodes deleted")
    # acknowledged segments are deleted by the sender thread: wait for it, with a deadline
    wait_until(lambda: wal_metrics(agent)["wal_bytes"] == 0, what="WAL emptied")
    assert m["fsyncs"] >= 1
    # no group was committed apart from the file holding it, however loaded the machine
    assert sink_metrics(col).get("late_commits", 0) == 0
    wal_dir = cluster.tmp / "agents" / "agent1" / "e2e" / "agent1"
    wait_until(lambda: not [p for p in os.listdir(wal_dir) if p.endswith(".wal")],
               what="WAL segment files deleted")
def test_hostile_attribute_paths_stay_under_the_base_and_are_acknowledged(cluster, channel):
    """E2E groups whose events name unsafe paths: committed with the error bucket file in
    the same ZooKeeper transaction, acknowledged, exactly once, nothing outside the base."""
    base = cluster.out / "base"
    col = cluster.collector("col1", roll_ms=200,
                            sink=f'collectorSink("{base}/%{{svc}}/", "%{{svc}}-", 200)')
    for svc, name in (("../x", "up"), ("", "empty"), ("ok", "fine")):
        agent = cluster.agent(f"agent-{name}", f"{channel}-{name}",
                              f'{{ value("svc", "{svc}") => agentE2ESink("127.0.0.1", '
                              f'{port_of(col)}) }}')
        memory.push(f"{channel}-{name}", bodies(name, 0, 50))
        wait_until(lambda: all_acked(agent, 50), what=f"the {name} groups acknowledged")
    expected = bodies("up", 0, 50) + bodies("empty", 0, 50) + bodies("fine", 0, 50)
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= len(expected))
    assert_exactly_once(base, expected)
    assert_exactly_once(cluster.out, expected)          # nothing above the base either
    assert sorted(os.listdir(base)) == ["%2E.%2Fx", "_rejected", "ok"]
    assert sorted(output_lines(base / "_rejected")) == bodies("empty", 0, 50)
    assert sink_metrics(col)["refused_path"] == 50




def test_a_stalled_driver_never_separates_a_group_from_its_file(cluster, channel, store,
                                                                monkeypatch):
    """The collector's driver stalls for 3 s between appending a group and passing its
    checkpoint (rollMs is 200): the trigger thread waits, so the group is committed in the
    same transaction as the file holding it, never on its own afterwards."""
    from flume_og.node.sources.rpc import RpcSource
    original = RpcSource.checkpoint
    stalled = threading.Event()

    def slow_checkpoint(self):
        tags = original(self)
        if any(k.startswith("e2e:") for k in tags) and not stalled.is_set():
            stalled.set()
            time.sleep(3)
        return tags
    monkeypatch.setattr(RpcSource, "checkpoint", slow_checkpoint)
    col = cluster.collector("slowcol", roll_ms=200)
    agent = cluster.agent("agent-stall", channel,
                          f'agentE2ESink("127.0.0.1", {port_of(col)})')
    expected = bodies("stall", 0, 50)
    memory.push(channel, expected)
    wait_until(stalled.is_set, what="the stall")
    wait_until(lambda: all_acked(agent, len(expected)), what="every group acknowledged")
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= len(expected))
    assert_exactly_once(cluster.out, expected)
    # counted once the rename is done, which the agent does not wait for
    wait_until(lambda: sink_metrics(col).get("groups_committed", 0) >= 1,
               what="the commit counted")
    assert sink_metrics(col).get("late_commits", 0) == 0


def test_e2e_sink_needs_zookeeper(tmp_path):
    ln = LogicalNode("lonely", tmp_path)
    ln.configure(parse_source('memory("lonely")'), parse_sink('agentE2ESink("127.0.0.1")'))
    assert ln.state is State.ERROR
    assert "end-to-end mode needs a node managed through ZooKeeper" in ln.last_error
    ln.configure(parse_source('memory("lonely")'),
                 parse_sink('agentE2EChain("127.0.0.1:1", "127.0.0.1:2")'))
    assert ln.state is State.ERROR and "ZooKeeper" in ln.last_error


def test_a_group_no_collector_takes_is_not_kept_alive_by_the_error(tmp_path):
    """The SinkError saying that no collector took a group holds no reference cycle through
    the frame that has the group's payload: the node runs the cyclic GC seldom
    (node/cli.py), so while a collector was down each retry of the sender left one payload
    behind until the next full collection (an idle agent grew by 120 kB/s, one with a
    10-million-event backlog by tens of MB)."""
    ctx = NodeContext("agent", tmp_path, CheckpointStore(tmp_path / "cp.json"))
    chain = GroupChain([("127.0.0.1", free_port())], timeout=2.0)
    chain.open(ctx)
    payload = bytes(100_000)
    gc.disable()
    try:
        base = sys.getrefcount(payload)
        for attempt in range(3):    # a refused connection, then while it backs off
            try:
                chain.send_group("agent", 1, 0, payload, 1)
            except SinkError as exc:
                assert exc.retry_in > 0 and "no collector can be reached" in str(exc)
            else:
                pytest.fail("a collector that does not listen took the group")
            assert sys.getrefcount(payload) == base, f"attempt {attempt}"
    finally:
        gc.enable()
        chain.close()


# ---------------------------------------------------------------------- collector crash

def test_collector_crash_mid_stream_then_new_collector(cluster, channel, store):
    client_a, store_a = cluster.collector_store()
    # A rolls slowly: what it took is still in hidden files when it "crashes"
    col_a = cluster.collector("colA", roll_ms=60_000, store=store_a)
    col_b_port = free_port()
    agent = cluster.agent(
        "agent2", channel,
        f'agentE2EChain("127.0.0.1:{port_of(col_a)}", "127.0.0.1:{col_b_port}")')
    first = bodies("crash", 0, 6000)
    memory.push(channel, first)
    wait_until(lambda: sink_metrics(col_a).get("events_in", 0) >= len(first),
               what="collector A took the first wave")
    assert hidden_files(cluster.out) and not output_lines(cluster.out)
    # crash: the session goes (and its claims with it), then the server and flow stop
    # without being able to commit
    client_a.stop()
    col_a.stop(10)
    assert not output_lines(cluster.out)
    col_b = cluster.collector("colB", port=col_b_port, roll_ms=200)
    second = bodies("crash", 6000, 6000)
    memory.push(channel, second)
    wait_until(lambda: all_acked(agent, len(first) + len(second)), what="all acked")
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= 12000)
    assert_exactly_once(cluster.out, first + second)
    assert wal_metrics(agent).get("groups_requeued", 0) >= 1
    # the crashed collector comes back under its own name: its orphans are removed
    _, store_a2 = cluster.collector_store()
    col_a2 = cluster.collector("colA", roll_ms=200, store=store_a2)
    assert sink_metrics(col_a2).get("orphans_removed", 0) >= 1
    assert not hidden_files(cluster.out)
    assert_exactly_once(cluster.out, first + second)
    assert sink_metrics(col_b).get("late_commits", 0) == 0


def chain_report(ln: LogicalNode) -> dict:
    """The report of an E2E agent's collector chain (the "collectors" component)."""
    rep = ln.status()["components"]["sink"]
    while rep["name"] != "collectors":
        rep = rep["children"][0]
    return rep


def test_the_chain_reports_its_target_and_the_collectors_found_down(cluster, channel):
    """What the master's console draws: the collector reached and those found down."""
    col_a = cluster.collector("colA", roll_ms=200)
    a = f"127.0.0.1:{port_of(col_a)}"
    b = f"127.0.0.1:{free_port()}"           # nothing listens there
    agent = cluster.agent("agentR", channel, f'agentE2EChain("{a}", "{b}")')
    memory.push(channel, bodies("rep", 0, 10))
    wait_until(lambda: all_acked(agent, 10), what="acknowledged")
    rep = chain_report(agent)
    assert rep["target"] == a and rep["down"] == []
    col_a.stop(10)
    memory.push(channel, bodies("rep", 10, 10))
    wait_until(lambda: chain_report(agent)["down"] == sorted([a, b]),
               what="both collectors found down")
    assert chain_report(agent)["target"] is None


def test_crash_between_commit_and_rename_is_rolled_forward(cluster, channel, store,
                                                            monkeypatch):
    """The transaction is recorded, then the collector dies before renaming: the group is
    acknowledged, and the restarted collector makes the file final."""
    import flume_og.node.e2e as e2e
    client_a, store_a = cluster.collector_store()
    col = cluster.collector("colR", roll_ms=60_000, store=store_a)
    agent = cluster.agent("agentR", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    evs = bodies("rf", 0, 3000)
    memory.push(channel, evs)
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= len(evs))

    def crash(*a, **kw):
        raise KeyboardInterrupt("simulated crash after the transaction")
    monkeypatch.setattr(e2e.Committer, "_finish_renames", crash)
    with pytest.raises(KeyboardInterrupt):
        col._flow.sink.roll_now()
    monkeypatch.undo()
    client_a.stop()                         # the process is gone
    assert not output_lines(cluster.out) and hidden_files(cluster.out)
    wait_until(lambda: all_acked(agent, len(evs)), what="acknowledged before the rename")
    assert store.commits.file_records("cphys-colR")
    _, store_a2 = cluster.collector_store()
    col2 = cluster.collector("colR", roll_ms=200, store=store_a2)
    assert sink_metrics(col2).get("rolled_forward", 0) >= 1
    assert_exactly_once(cluster.out, evs)
    assert not hidden_files(cluster.out)
    assert store.commits.file_records("cphys-colR") == {}


# ---------------------------------------------------------------------- RETRY

class Proxy:
    """A TCP forwarder in front of a collector. ``cut()``: the network between agent and
    collector fails (connections still open, then dropped at once: the collector may be
    alive); ``vanish()``: nothing listens on the port any more (the process is gone)."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.cut_off = False
        self.lock = threading.Lock()     # a connection is forwarded, or cut: never both
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                if self.cut_off:
                    c.close()
                    u.close()
                    continue
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            self.cut_off = True
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def vanish(self):
        self.cut()
        self.sock.close()


def first_wave_through_a_proxy(cluster, channel, names: str, roll_a: int, n: int,
                               store_a=None):
    """Collectors A (behind a :class:`Proxy`, rolling every ``roll_a`` ms) and B, an agent
    chaining them, and a first wave of ``n`` events that A took; ``names`` is
    "colA colB agent prefix"."""
    a, b, agent_name, prefix = names.split()
    col_a = cluster.collector(a, roll_ms=roll_a, store=store_a)
    col_b = cluster.collector(b, roll_ms=200)
    proxy = Proxy(port_of(col_a))
    agent = cluster.agent(
        agent_name, channel,
        f'agentE2EChain("127.0.0.1:{proxy.port}", "127.0.0.1:{port_of(col_b)}")')
    first = bodies(prefix, 0, n)
    memory.push(channel, first)
    wait_until(lambda: sink_metrics(col_a).get("events_in", 0) >= len(first),
               what="A took the first wave")
    # and its OK reached the agent (which learns A's collector id from it): cutting the
    # proxy before would leave the agent without a way to tell that A holds the claims
    wait_until(lambda: wal_metrics(agent).get("events_sent", 0) >= len(first),
               what="the agent heard A's answers")
    return col_a, proxy, agent, first


def test_resend_to_second_collector_while_first_holds_claims(cluster, channel, store):
    col_a, proxy, agent, first = first_wave_through_a_proxy(
        cluster, channel, "colP colQ agent3 retry", 3000, 5000)
    proxy.cut()                # A is alive and holds the claims; the agent cannot reach it
    second = bodies("retry", 5000, 5000)
    memory.push(channel, second)
    wait_until(lambda: wal_metrics(agent).get("retries", 0) >= 1,
               what="B answered RETRY for a group A holds")
    wait_until(lambda: all_acked(agent, 10000), what="all acked")
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= 10000)
    assert_exactly_once(cluster.out, first + second)
    a_lines = sum(v for k, v in output_lines(cluster.out).items() if k in set(first))
    assert a_lines == len(first)
    assert sink_metrics(col_a).get("groups_committed", 0) >= 1   # A committed its own


@pytest.mark.parametrize("more_events", [True, False], ids=["busy", "idle"])
def test_claims_of_a_vanished_collector_are_taken_back_at_once(cluster, channel, store,
                                                                more_events):
    """A's port stops answering (connection refused: its process is gone) while its
    ZooKeeper session lingers: the agent deletes A's claims itself and B gets the groups
    at once, without waiting for the session to expire -- found by the next send, or by
    the watchdog when no more events come. Exactly once even though A is in fact alive
    here and later tries to commit the same groups."""
    client_a, store_a = cluster.collector_store()
    col_a, proxy, agent, first = first_wave_through_a_proxy(
        cluster, channel, "colV colW agent-v vanish", 60_000, 3000, store_a)
    proxy.vanish()
    second = bodies("vanish", 3000, 3000) if more_events else []
    memory.push(channel, second)
    wait_until(lambda: all_acked(agent, len(first) + len(second)), 40, what="all acked")
    assert client_a.connected                       # A's session never went away
    assert wal_metrics(agent).get("claims_reclaimed", 0) >= 1
    if not more_events:
        assert wal_metrics(agent).get("collectors_lost", 0) >= 1
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= len(first + second))
    assert_exactly_once(cluster.out, first + second)
    col_a.stop(10)                 # A's own commit of those groups is refused now
    assert sink_metrics(col_a).get("groups_committed", 0) == 0
    assert_exactly_once(cluster.out, first + second)


def test_groups_a_collector_lost_are_sent_again_without_new_events(cluster, channel,
                                                                   store):
    """The only collector takes a wave, then loses its ZooKeeper session (its claims go,
    so its commit is refused and the file discarded) while the agent has nothing more to
    send: the agent's watchdog sees the groups neither claimed nor committed and sends
    them again, long before retransmitMs (here 10 minutes)."""
    client_a, store_a = cluster.collector_store()
    col_a = cluster.collector("colL", roll_ms=1500, store=store_a)
    agent = cluster.agent("agent-l", channel,
                          f'agentE2ESink("127.0.0.1", {port_of(col_a)}, '
                          f'retransmitMs=600000)')
    first = bodies("lost", 0, 2000)
    memory.push(channel, first)
    wait_until(lambda: sink_metrics(col_a).get("events_in", 0) >= len(first),
               what="A took the wave")
    expire_session(cluster.zk_server, client_a)      # A's claims vanish with the session
    # the groups wait for the watchdog (5 s): their age shows in the agent's report
    wait_until(lambda: wal_metrics(agent).get("oldest_unacked_seconds", 0) >= 1, 20,
               what="the oldest group's wait shown")
    wait_until(lambda: all_acked(agent, len(first)), 40, what="all acked")
    assert wal_metrics(agent)["oldest_unacked_seconds"] == 0
    assert wal_metrics(agent).get("collectors_lost", 0) >= 1
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= len(first))
    assert_exactly_once(cluster.out, first)


def test_a_stopping_collector_keeps_its_port_until_its_last_commit(cluster, monkeypatch):
    """Agents read a refused connection as "that collector is gone" and take back its
    claims, so a collector that stops normally must not refuse connections while its sink
    is still making its last commit."""
    from flume_og.node.sinks.collector_sink import CollectorSink
    original = CollectorSink.close
    closing = threading.Event()

    def slow_close(self):
        closing.set()
        time.sleep(1.0)                       # a last commit that takes a while
        original(self)
    monkeypatch.setattr(CollectorSink, "close", slow_close)
    col = cluster.collector("colK", roll_ms=60_000)
    port = port_of(col)
    stopper = threading.Thread(target=col.stop, args=(10,))
    stopper.start()
    wait_until(closing.is_set, what="the sink closing")
    socket.create_connection(("127.0.0.1", port), timeout=2).close()   # still accepted
    stopper.join(10)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


# ---------------------------------------------------------------------- agent restart

def test_agent_restart_resumes_from_its_wal(cluster, channel, store, tmp_path):
    port = free_port()
    sink = f'agentE2ESink("127.0.0.1", {port})'
    agent = cluster.agent("agent4", channel, sink)
    first = bodies("restart", 0, 7000)
    memory.push(channel, first)
    wait_until(lambda: wal_metrics(agent).get("wal_events", 0) == len(first),
               what="first wave in the WAL")
    agent.stop(10)                               # nobody listens: all of it stays there
    wal_dir = cluster.tmp / "agents" / "agent4" / "e2e" / "agent4"
    backup = tmp_path / "wal-backup"
    shutil.copytree(wal_dir, backup, ignore=shutil.ignore_patterns("lock"))
    cluster.collector("col4", port=port, roll_ms=200)
    agent.configure(parse_source(f'memory("{channel}")'), parse_sink(sink))
    second = bodies("restart", 7000, 3000)
    memory.push(channel, second)
    wait_until(lambda: all_acked(agent, len(second) + len(first)), what="all acked")
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= 10000)
    assert_exactly_once(cluster.out, first + second)
    agent.stop(10)
    sent = wal_metrics(agent).get("groups_sent", 0)   # counters outlive the flow
    # a crash after the acknowledgements but before the WAL forgot the groups: the old
    # WAL comes back; ZooKeeper's watermark says they are committed: nothing is resent
    shutil.rmtree(wal_dir)
    shutil.copytree(backup, wal_dir)
    agent.configure(parse_source(f'memory("{channel}")'), parse_sink(sink))
    wait_until(lambda: wal_metrics(agent).get("wal_groups", 1) == 0, what="old WAL dropped")
    assert wal_metrics(agent).get("groups_sent", 0) == sent
    assert_exactly_once(cluster.out, first + second)


def test_lost_wal_directory_never_reuses_committed_seqs(cluster, channel, store):
    col = cluster.collector("col5", roll_ms=200)
    sink = f'agentE2ESink("127.0.0.1", {port_of(col)})'
    agent = cluster.agent("agent5", channel, sink)
    first = bodies("lost", 0, 2000)
    memory.push(channel, first)
    wait_until(lambda: all_acked(agent, len(first)))
    agent.stop(10)
    shutil.rmtree(cluster.tmp / "agents" / "agent5" / "e2e")      # the disk was replaced
    agent.configure(parse_source(f'memory("{channel}")'), parse_sink(sink))
    second = bodies("lost", 2000, 2000)
    memory.push(channel, second)
    wait_until(lambda: all_acked(agent, len(second)))
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= 4000)
    assert_exactly_once(cluster.out, first + second)


# ---------------------------------------------------------------------- duplicates

def test_group_over_the_collectors_bounds_is_refused(cluster, store):
    """A compression bomb sent as an E2E group (checksum right) is answered FAILED once
    inflating passes maxMessageBytes, and counted; nothing is claimed."""
    col = cluster.collector("colbomb", roll_ms=60_000)
    client = RpcClient("127.0.0.1", port_of(col), timeout=10)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush()
    status, msg = client.append_group("bombagent", 1, zlib.crc32(bomb), bomb, 1)
    assert status == Status.FAILED and "batch too large" in msg
    status, msg = client.append_group("bombagent", 2, 0, b"", 10**6)
    assert status == Status.FAILED and "1000000 events" in msg
    metrics = col.status()["components"]["source"]["metrics"]
    assert metrics["refused_decompressed"] == 1 and metrics["refused_events"] == 1
    client.close()
    assert store.commits.list_groups("bombagent") == []


def test_duplicate_append_group_is_not_written_twice(cluster, store):
    col = cluster.collector("col6", roll_ms=60_000)
    client = RpcClient("127.0.0.1", port_of(col), timeout=10)
    payload = encode_events(events_from_lines([b"dup-1", b"dup-2", b"dup-3"]))
    crc = zlib.crc32(payload)
    assert client.append_group("dupagent", 1, crc, payload, 3) == (Status.OK,
                                                                   "taken by cphys-col6")
    # sent again while the collector holds it in an open file: accepted, not written again
    assert client.append_group("dupagent", 1, crc, payload, 3) == (Status.OK,
                                                                   "taken by cphys-col6")
    # a corrupt payload is refused
    status, msg = client.append_group("dupagent", 2, crc ^ 1, payload, 3)
    assert status == Status.FAILED and "checksum" in msg
    col._flow.sink.roll_now()
    wait_until(lambda: store.commits.list_groups("dupagent") == [1], what="group committed")
    # sent again after the commit: acknowledged as committed, no second copy
    assert client.append_group("dupagent", 1, crc, payload, 3) == (Status.OK, "committed")
    # and below the watermark too (the agent may have deleted the group znode)
    store.commits.raise_watermark("dupagent", 2)
    store.commits.delete_groups("dupagent", [1])
    assert client.append_group("dupagent", 1, crc, payload, 3) == (Status.OK, "committed")
    col._flow.sink.roll_now()
    client.close()
    assert output_lines(cluster.out) == collections.Counter({b"dup-1": 1, b"dup-2": 1,
                                                             b"dup-3": 1})


def test_group_claimed_by_another_collector_gets_retry(cluster, store):
    col_a = cluster.collector("col7a", roll_ms=60_000)
    col_b = cluster.collector("col7b", roll_ms=60_000)
    payload = encode_events(events_from_lines([b"claimed"]))
    crc = zlib.crc32(payload)
    a = RpcClient("127.0.0.1", port_of(col_a), timeout=10)
    b = RpcClient("127.0.0.1", port_of(col_b), timeout=10)
    assert a.append_group("ag7", 5, crc, payload, 1)[0] == Status.OK
    status, msg = b.append_group("ag7", 5, crc, payload, 1)
    assert status == Status.RETRY and "another collector" in msg
    assert store.commits.claim_exists("ag7", 5)
    col_a._flow.sink.roll_now()
    wait_until(lambda: store.commits.list_groups("ag7") == [5])
    assert not store.commits.claim_exists("ag7", 5)
    assert b.append_group("ag7", 5, crc, payload, 1) == (Status.OK, "committed")
    a.close()
    b.close()
    assert output_lines(cluster.out) == collections.Counter({b"claimed": 1})


# ---------------------------------------------------------------------- collectorSink alone

def test_a_new_source_on_the_collector_node_starts_from_a_clean_state(cluster, store,
                                                                      channel):
    """What a collectorSource told the sink (an rpc source; this batch has no group) must
    not outlive it: the next flow of the same logical node reads from another source."""
    from flume_og.node.e2e import collector_state
    col = cluster.collector("colX", roll_ms=200)
    rpc = RpcClient("127.0.0.1", port_of(col), timeout=10)
    assert rpc.append_packed(events_from_lines([b"plain-x"]))[0] == Status.OK
    rpc.close()
    st = collector_state(col._flow.ctx)
    assert st.rpc_source is True and st.batch_has_groups is False
    plain = sink_metrics(col).get("plain_events", 0)   # counters outlive the flow
    assert plain == 1
    col.configure(parse_source(f'memory("{channel}")'),
                  parse_sink(f'collectorSink("{cluster.out}", "colX-", 200)'))
    assert col.state is State.ACTIVE, col.last_error
    assert st.rpc_source is False and st.batch_has_groups is None
    memory.push(channel, [b"from-memory"])
    wait_until(lambda: output_lines(cluster.out)[b"from-memory"] == 1)
    assert sink_metrics(col).get("plain_events", 0) == plain


def test_collector_sink_without_zookeeper_is_a_plain_roll(tmp_path, channel):
    out = tmp_path / "plain"
    ln = LogicalNode("plain", tmp_path / "data")
    ln.configure(parse_source(f'memory("{channel}")'),
                 parse_sink(f'collectorSink("{out}/%Y", "ev-", 200, json, '
                            f'compression="gzip", utc=true)'))
    assert ln.state is State.ACTIVE, ln.last_error
    from flume_og.node.event import Event
    memory.push(channel, [Event(b"old", 0, 0), Event(b"new", 1_700_000_000_000, 0)])
    wait_until(lambda: len([p for p in out.rglob("ev-*.gz")]) == 2, what="two buckets")
    ln.stop(10)
    import gzip
    import json
    years = {p.parent.name: [json.loads(l)["body"] for l in gzip.open(p).read().splitlines()]
             for p in out.rglob("ev-*.gz")}
    assert years == {"1970": ["old"], "2023": ["new"]}
    assert not hidden_files(out)


def test_generic_collector_decorator_acknowledges_groups(cluster, channel, store):
    col = cluster.collector("colG", sink=f'collector(200) {{ escapedCustomDfs('
                                         f'"{cluster.out}", "gen-%{{rolltag}}") }}')
    agent = cluster.agent("agentG", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    evs = bodies("generic", 0, 5000)
    memory.push(channel, evs)
    wait_until(lambda: all_acked(agent, len(evs)), what="acknowledged by collector()")
    assert_exactly_once(cluster.out, evs)
    assert sink_metrics(col).get("groups_committed", 0) >= 1
    # the agent raises its watermark past the acknowledged groups (after acknowledging)
    wait_until(lambda: store.commits.list_groups("agentG") == []
               or store.commits.get_watermark("agentG") > 1, what="the watermark raised")


@pytest.mark.parametrize("sink", ["null", 'FANOUT'])
def test_collector_source_without_an_e2e_sink_refuses_groups(cluster, store, sink):
    """No collectorSink, or one under a fan-out (which would never see the group keys):
    groups are refused at once instead of being taken and never acknowledged; other
    batches still flow."""
    col = cluster.collector("colN", sink=sink.replace(
        "FANOUT", f'[ collectorSink("{cluster.out}", "f-", 100), null ]'))
    client = RpcClient("127.0.0.1", port_of(col), timeout=10)
    payload = encode_events(events_from_lines([b"nowhere"]))
    status, msg = client.append_group("agN", 1, zlib.crc32(payload), payload, 1)
    assert client.append_packed(events_from_lines([b"plain"]))[0] == Status.OK
    client.close()
    assert status == Status.FAILED and "collectorSink" in msg
    assert not store.commits.claim_exists("agN", 1)


def expire_session(zk_server, client) -> None:
    """Expire ``client``'s ZooKeeper session the way a long pause would: another
    connection takes the session over and closes it. kazoo then starts a new session."""
    from kazoo.client import KazooClient
    old = client.client_id[0]
    sid, pwd = client.client_id
    thief = KazooClient(hosts=zk_server.connect_string, client_id=(sid, pwd))
    thief.start(timeout=10)
    thief.stop()
    thief.close()
    wait_until(lambda: client.connected and client.client_id and client.client_id[0] != old,
               what="a new ZooKeeper session")


def test_collector_session_expiry_discards_its_files_and_agents_resend(cluster, channel,
                                                                       store, zk_server):
    client_a, store_a = cluster.collector_store()
    col = cluster.collector("colX", roll_ms=60_000, store=store_a)
    agent = cluster.agent("agentX", channel,
                          f'agentE2ESink("127.0.0.1", {port_of(col)}, retransmitMs=1000)')
    evs = bodies("expiry", 0, 4000)
    memory.push(channel, evs)
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= len(evs))
    expire_session(cluster.zk_server, client_a)        # the claims are gone
    col._flow.sink.roll_now()                          # the commit is refused
    m = sink_metrics(col)
    assert m.get("files_discarded", 0) >= 1 and m.get("groups_rejected", 0) >= 1
    assert not output_lines(cluster.out) and not hidden_files(cluster.out)
    # the agent resends after retransmitMs; the collector writes them again and commits
    wait_until(lambda: wal_metrics(agent).get("groups_resent", 0) >= 1, what="resent")
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= 2 * len(evs))
    col._flow.sink.roll_now()
    wait_until(lambda: all_acked(agent, len(evs)), what="acknowledged")
    assert_exactly_once(cluster.out, evs)


def test_store_commit_needs_the_claims(cluster, store):
    ca, sa = cluster.collector_store()
    assert sa.commits.claim_group("agS", 1, "colA") == "claimed"
    assert sa.commits.claim_group("agS", 1, "colA") == "ours"
    _, sb = cluster.collector_store()
    assert sb.commits.claim_group("agS", 1, "colB") == "held"
    ca.stop()                                         # A's session ends: its claim goes
    _, sa2 = cluster.collector_store()
    ok, why = sa2.commits.commit_groups("colA", "f1", {"files": []}, [("agS", 1)])
    assert not ok and "claim" in why
    assert store.commits.list_groups("agS") == [] and store.commits.file_records("colA") == {}
    assert sb.commits.claim_group("agS", 1, "colB") == "claimed"
    assert sb.commits.commit_groups("colB", "f2", {"files": []}, [("agS", 1)]) == (True, "")
    assert store.commits.list_groups("agS") == [1]
    assert list(store.commits.file_records("colB")) == ["f2"]
    assert sa2.commits.claim_group("agS", 1, "colA") == "committed"
    assert not store.commits.claim_exists("agS", 1)


def test_a_restarted_collector_takes_over_its_previous_runs_claims(cluster, store):
    """The previous run of collector "colA" died while its session lingers: the new run
    (same collector id, new session) replaces that run's claims at once; another
    collector still gets "held"."""
    _, old_run = cluster.collector_store()
    assert old_run.commits.claim_group("agT", 1, "colA") == "claimed"
    _, new_run = cluster.collector_store()
    assert new_run.commits.claim_group("agT", 1, "colA") == "claimed"
    assert new_run.commits.claim_group("agT", 1, "colA") == "ours"
    _, other = cluster.collector_store()
    assert other.commits.claim_group("agT", 1, "colB") == "held"
    # should the old run still be alive after all, only one of the two commits succeeds
    outcomes = [old_run.commits.commit_groups("colA", "f-old", {"files": []}, [("agT", 1)])[0],
                new_run.commits.commit_groups("colA", "f-new", {"files": []}, [("agT", 1)])[0]]
    assert outcomes.count(True) == 1
    assert store.commits.list_groups("agT") == [1]


# ---------------------------------------------------------------------- salvage

def crash_while_committing(col: LogicalNode, monkeypatch) -> None:
    """The collector 'dies' at its next roll, before anything is made final."""
    from flume_og.node.sinks.collector_sink import _CollectorDfs

    def crash(*a, **kw):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(_CollectorDfs, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        col._flow.sink.roll_now()
    monkeypatch.undo()


def test_crashed_collector_salvages_files_without_groups(cluster, store, monkeypatch):
    """Best-effort / disk-failover batches (no E2E group) that a collector had taken when
    it died are made final at its next start instead of being lost."""
    client_a, store_a = cluster.collector_store()
    col = cluster.collector("colS", roll_ms=60_000, store=store_a)
    rpc = RpcClient("127.0.0.1", port_of(col), timeout=10)
    sent = bodies("salvage", 0, 3000)
    for i in range(0, len(sent), 500):
        assert rpc.append_packed(events_from_lines(sent[i:i + 500]))[0] == Status.OK
    rpc.close()
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= len(sent))
    hidden = [p for p in cluster.out.rglob(".*.tmp")]
    assert len(hidden) == 1
    with open(hidden[0], "ab") as f:
        f.write(b"torn-half-li")            # a write cut short by the kill
    crash_while_committing(col, monkeypatch)
    client_a.stop()
    assert not output_lines(cluster.out)
    _, store_a2 = cluster.collector_store()
    col2 = cluster.collector("colS", roll_ms=200, store=store_a2)
    assert sink_metrics(col2).get("files_salvaged", 0) == 1
    assert_exactly_once(cluster.out, sent)
    assert not hidden_files(cluster.out)


def test_plain_batches_survive_a_crash_that_loses_the_group_file(cluster, store,
                                                                  monkeypatch):
    """Best-effort batches and E2E groups reach one collector at the same time; it dies
    before committing. The plain batches were kept apart from the groups, so they are
    salvaged at the next start; the groups come back from their senders, exactly once."""
    client_a, store_a = cluster.collector_store()
    col = cluster.collector("colM", roll_ms=60_000, store=store_a)
    rpc = RpcClient("127.0.0.1", port_of(col), timeout=10)
    plain = bodies("mixed-plain", 0, 2000)
    grouped = [bodies("mixed-group", i, 100) for i in range(0, 1000, 100)]

    def send_group(seq):
        payload = encode_events(events_from_lines(grouped[seq - 1]))
        return rpc.append_group("mixagent", seq, zlib.crc32(payload), payload, 100)
    for i in range(10):
        assert rpc.append_packed(events_from_lines(plain[i * 200:(i + 1) * 200]))[0] \
            == Status.OK
        assert send_group(i + 1)[0] == Status.OK
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= 3000)
    assert sink_metrics(col).get("plain_events", 0) == len(plain)
    assert len(list(cluster.out.rglob(".*.tmp"))) == 2       # one plain, one group file
    crash_while_committing(col, monkeypatch)
    client_a.stop()                       # the session ends: the group claims go
    rpc.close()
    _, store_a2 = cluster.collector_store()
    col2 = cluster.collector("colM", roll_ms=200, store=store_a2)
    assert sink_metrics(col2).get("files_salvaged", 0) == 1
    assert_exactly_once(cluster.out, plain)      # the groups' file is gone, not salvaged
    rpc = RpcClient("127.0.0.1", port_of(col2), timeout=10)
    for seq in range(1, 11):                     # the agent sends them again
        assert send_group(seq)[0] == Status.OK
    rpc.close()
    wait_until(lambda: store.commits.list_groups("mixagent") == list(range(1, 11)),
               what="groups committed")
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= 3000, what="renamed")
    assert_exactly_once(cluster.out, plain + [b for g in grouped for b in g])
    assert not hidden_files(cluster.out)


@pytest.mark.parametrize("data", [b"not json", b'{"groups": 3}', b'{"files": [["only-one"]]}',
                                  b'[1, 2]', b'{"files": [], "uploads": {"h": {"id": 1}}}'])
def test_an_unreadable_commit_record_is_kept_and_deletes_no_hidden_file(store, make_ctx,
                                                                        tmp_path, data,
                                                                        caplog):
    """A file record in ZooKeeper this collector cannot read (junk, another shape): the
    start neither acts on it nor deletes it (before: read as 'no files' and deleted, or
    the start failed on it), and no hidden file of the crashed run is deleted while it is
    there, since it may name any of them. Counted in records_unreadable."""
    import types
    from flume_og.node.component import Metrics
    from flume_og.node.e2e import Committer
    collector = "cphys-colU"
    fpath = store.commits.path("files", collector, "1-bad")
    store.commits.zk.create(fpath, data, makepath=True)
    state = types.SimpleNamespace(commits=store.commits, collector_id=collector)
    metrics = Metrics()
    committer = Committer(make_ctx("colU"), state, metrics)
    hidden = tmp_path / ".f-1.tmp"
    hidden.write_bytes(b"acknowledged events\n")
    committer.journal.add(str(hidden))
    committer.recover()
    assert hidden.read_bytes() == b"acknowledged events\n"
    assert store.commits.zk.exists(fpath) is not None
    assert metrics.get("records_unreadable") == 1
    assert str(hidden) in committer.journal.entries()
    assert fpath in caplog.text          # the operator is told which znode to look at


def test_the_hidden_file_journal_stays_bounded(tmp_path, monkeypatch):
    """A collector running for long writes two journal lines per file it makes: the
    journal is rewritten with the files still open once it passes its bound, instead of
    growing until the next start reads it whole."""
    from flume_og.node.e2e import HiddenJournal
    from flume_og.node.e2e import commit as commit_mod
    monkeypatch.setattr(commit_mod, "JOURNAL_COMPACT_BYTES", 4096, raising=False)
    path = tmp_path / "hidden-files"
    j = HiddenJournal(path)
    j.add("/out/.kept.tmp", "~")
    j.mark(["/out/.kept.tmp"], "!")
    for i in range(5000):
        j.add(f"/out/.file-{i:05d}.tmp")
        if i % 100 != 7:
            j.remove([f"/out/.file-{i:05d}.tmp"])
        assert path.stat().st_size <= 4096 + 100
    want = {"/out/.kept.tmp": "!", **{f"/out/.file-{i:05d}.tmp": "+"
                                      for i in range(5000) if i % 100 == 7}}
    assert j.entries() == want
    assert HiddenJournal(path).entries() == want        # as the next start reads it


def test_a_salvageable_file_kept_by_an_unreadable_record_is_salvaged_later(store, make_ctx,
                                                                          tmp_path):
    """A start that keeps every hidden file because a commit record cannot be read keeps
    each file's mark: once the record is gone, the next start salvages a '~' file (events
    with no E2E group) instead of deleting it as one holding groups."""
    import types
    from flume_og.node.component import Metrics
    from flume_og.node.e2e import Committer
    collector = "cphys-colS"
    fpath = store.commits.path("files", collector, "1-bad")
    store.commits.zk.create(fpath, b"not json", makepath=True)
    state = types.SimpleNamespace(commits=store.commits, collector_id=collector)
    ctx = make_ctx("colS")
    hidden = tmp_path / ".plain-1.tmp"
    hidden.write_bytes(b"event one\nevent two\npart")
    first = Committer(ctx, state, Metrics())
    first.journal.add(str(hidden), "~")
    first.recover()
    assert hidden.exists()
    assert first.journal.entries() == {str(hidden): "~"}
    store.commits.zk.delete(fpath)                 # the operator removes the bad record
    metrics = Metrics()
    Committer(ctx, state, metrics).recover()
    assert metrics.get("files_salvaged") == 1
    assert (tmp_path / "plain-1").read_bytes() == b"event one\nevent two\n"
    assert not hidden.exists()


def test_a_discarded_file_that_cannot_be_deleted_stays_in_the_journal(store, make_ctx,
                                                                      tmp_path):
    """A refused commit deletes its hidden files (aborts its uploads); one that cannot be
    deleted now (a store that gives no answer, a disk error) stays in the journal, so the
    next start deletes it, instead of being forgotten for good (a local file left behind,
    an upload in progress kept by the store)."""
    from flume_og.node.component import Metrics
    from flume_og.node.e2e import Committer
    from flume_og.node.e2e.collector import CollectorState
    state = CollectorState(store.commits, "cphys-colD")
    committer = Committer(make_ctx("colD"), state, Metrics())
    stuck, gone = tmp_path / ".stuck-1.tmp", tmp_path / ".gone-1.tmp"
    stuck.mkdir()                          # unlink() fails on it
    (stuck / "x").write_bytes(b"")
    gone.write_bytes(b"events\n")
    committer.journal.add(str(stuck), "!")
    committer.journal.add(str(gone), "!")
    committer._discard([(str(stuck), str(tmp_path / "stuck-1")),
                        (str(gone), str(tmp_path / "gone-1"))], [], "refused")
    assert not gone.exists()
    assert committer.journal.entries() == {str(stuck): "!"}


@pytest.mark.parametrize("sep", ["\u2028", "\x85", "\u2029"])
def test_the_journal_keeps_a_path_with_a_unicode_line_separator(tmp_path, monkeypatch, sep):
    """A path escape keeps letters of any script, so an event's host can put U+2028 or
    U+0085 into a hidden file's name: the journal's rewrite (and its reading) must split
    on newlines only, or the rewritten journal names a path cut at that character and the
    file is forgotten at the next start."""
    from flume_og.node.e2e import HiddenJournal
    from flume_og.node.e2e import commit as commit_mod
    from flume_og.node.escapes import path_value
    monkeypatch.setattr(commit_mod, "JOURNAL_COMPACT_BYTES", 512)
    path = tmp_path / "hidden-files"
    j = HiddenJournal(path)
    odd = f"/out/.{path_value('web' + sep + '01')}.log.tmp"
    assert sep in odd
    j.add(odd, "~")
    for i in range(100):                           # several rewrites
        j.add(f"/out/.file-{i}.tmp")
        j.remove([f"/out/.file-{i}.tmp"])
    assert HiddenJournal(path).entries() == {odd: "~"}
    j.remove([odd])
    assert HiddenJournal(path).entries() == {}


def test_the_journal_rewrite_is_synced_before_it_replaces_the_journal(tmp_path, monkeypatch):
    """The compacted journal is written to a temporary file, fsynced, renamed over the
    journal and the directory fsynced: a machine crash during a rewrite leaves the old
    journal or the new one, never an empty one that forgets the open hidden files."""
    from flume_og.node.e2e import HiddenJournal
    from flume_og.node.e2e import commit as commit_mod
    monkeypatch.setattr(commit_mod, "JOURNAL_COMPACT_BYTES", 512)
    path = tmp_path / "hidden-files"
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    j = HiddenJournal(path)
    j.add("/out/.open.tmp")
    while not any(e[0] == "replace" for e in events):
        j.add("/out/.f.tmp")
        j.remove(["/out/.f.tmp"])
    tmp = str(path) + ".tmp"
    at = events.index(("replace", tmp, str(path)))
    assert ("fsync", tmp) in events[:at]                 # the new journal's data first
    assert ("fsync", str(tmp_path)) in events[at + 1:]   # then the rename itself
    assert HiddenJournal(path).entries() == {"/out/.open.tmp": "+"}


def test_the_journal_is_not_rewritten_at_every_line_with_many_files_open(tmp_path,
                                                                         monkeypatch):
    """With more files open at once than fit in the bound, a rewrite leaves a journal
    already past it: the next rewrite waits until the journal has doubled, instead of
    rewriting every open file at each line written."""
    from flume_og.node.e2e import HiddenJournal
    from flume_og.node.e2e import commit as commit_mod
    monkeypatch.setattr(commit_mod, "JOURNAL_COMPACT_BYTES", 4096)
    rewrites = []
    real = HiddenJournal._rewrite
    monkeypatch.setattr(HiddenJournal, "_rewrite",
                        lambda self, text: (rewrites.append(len(text)), real(self, text)))
    path = tmp_path / "hidden-files"
    j = HiddenJournal(path)
    for i in range(1000):                          # 1,000 open files: ~25 KB of lines
        j.add(f"/out/.file-{i:06d}.log.tmp")
    assert len(rewrites) <= 10
    assert len(HiddenJournal(path).entries()) == 1000


@pytest.mark.parametrize("ext", ["", ".gz", ".zst"])
def test_salvage_cuts_after_the_last_complete_line(tmp_path, ext):
    import gzip as gz
    import zstandard
    from flume_og.node.e2e import salvage
    lines = b"".join(b"line %d\n" % i for i in range(100))
    hidden = tmp_path / f".data-1{ext}.tmp"
    if ext == ".gz":
        raw = gz.compress(lines + b"partial")
        data = raw[:-8]                                  # no gzip trailer
    elif ext == ".zst":
        import io
        buf = io.BytesIO()
        w = zstandard.ZstdCompressor().stream_writer(buf, closefd=False)
        w.write(lines)
        w.flush()                          # what the sink does after each append
        w.write(b"partial")
        w.flush()
        data = buf.getvalue()[:-2]
    else:
        data = lines + b"partial"
    hidden.write_bytes(data)
    (tmp_path / f"data-1{ext}").write_bytes(b"taken\n")  # the name is taken already
    final = salvage(str(hidden))
    assert final == str(tmp_path / f"data-1.1{ext}")
    out = Path(final).read_bytes()
    if ext == ".gz":
        out = gz.decompress(out)
    elif ext == ".zst":
        out = zstandard.ZstdDecompressor().decompressobj().decompress(out)
    assert out == lines and not hidden.exists()


@pytest.mark.parametrize("ext", ["", ".gz", ".zst"])
def test_salvage_reads_a_large_file_in_bounded_memory(tmp_path, ext):
    """A hidden file of 24 MB of lines (compressed: far smaller on disk) is salvaged with
    a few MB of memory at most: before, it was read whole, decoded whole and encoded
    whole (three copies of the file in memory; a long roll's file could take GBs)."""
    import gzip as gz
    import tracemalloc
    import zstandard
    from flume_og.node.e2e import salvage
    line = b"x" * 99 + b"\n"
    plain = line * (24 * 1024 * 1024 // len(line)) + b"partial"
    hidden = tmp_path / f".big{ext}.tmp"
    data = (gz.compress(plain, 1) if ext == ".gz" else
            zstandard.ZstdCompressor(level=1).compress(plain) if ext == ".zst" else plain)
    hidden.write_bytes(data)
    del data
    tracemalloc.start()
    try:
        final = salvage(str(hidden))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"salvage took {peak} bytes"
    out = Path(final).read_bytes()
    if ext == ".gz":
        out = gz.decompress(out)
    elif ext == ".zst":
        out = zstandard.ZstdDecompressor().decompressobj().decompress(out)
    assert out == plain[:-len(b"partial")]


def test_e2e_to_an_fsspec_url(cluster, channel, store):
    """collectorSink on a non-local filesystem (fsspec's in-memory one): the same commit
    protocol, renames through fsspec."""
    import fsspec
    fs = fsspec.filesystem("memory")
    root = f"/e2e-{channel}"
    col = cluster.collector("colM", sink=f'collectorSink("memory://{root}/%Y", "m-", 200, '
                                         f'compression="gzip")')
    agent = cluster.agent("agentM", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    evs = bodies("mem", 0, 3000)
    memory.push(channel, evs)
    wait_until(lambda: all_acked(agent, len(evs)), what="acknowledged")
    import gzip
    got = collections.Counter()
    for p in fs.find(root):
        name = p.rsplit("/", 1)[1]
        assert not name.startswith("."), p
        got.update(gzip.decompress(fs.cat_file(p)).splitlines())
    assert got == collections.Counter(evs)
    fs.rm(root, recursive=True)


def test_a_batch_over_the_receivers_bounds_becomes_several_groups(cluster, channel):
    """One append of more events than a collector takes in one call is written to the WAL
    as several groups, each under the bounds: all arrive exactly once, none refused."""
    col = cluster.collector("colsplit", roll_ms=200)
    agent = cluster.agent("agentsplit", channel,
                          f'agentE2ESink("127.0.0.1", {port_of(col)})')
    expected = bodies("split", 0, 25_000)                 # > SEND_BATCH_EVENTS (10,000)
    memory.push(channel, expected)
    wait_until(lambda: all_acked(agent, len(expected)), what="every group acknowledged")
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= len(expected))
    assert_exactly_once(cluster.out, expected)
    assert wal_metrics(agent)["groups_written"] >= 3
    src = col.status()["components"]["source"]["metrics"]
    assert src.get("refused", 0) == 0, src


# ---------------------------------------------------------------------- hostile agent ids

def claimed_agents(store) -> set[str]:
    """The agent names under commits/claims (each a persistent znode)."""
    from kazoo.exceptions import NoNodeError
    try:
        return set(store.zk.get_children(store.path("commits", "claims")))
    except NoNodeError:
        return set()


def test_hostile_agent_ids_and_junk_payloads_leave_no_znode(cluster, store):
    """appendGroup from an unauthenticated sender: an agent id of 1 MiB, one of slashes
    (tripled by quoting), others outside the character set, and valid ids with junk
    payloads, wrong counts or wrong checksums are all answered FAILED and counted as
    malformed before ZooKeeper is asked anything: no znode, the collector keeps its
    ZooKeeper session, and a legitimate group is taken and committed afterwards."""
    client, cstore = cluster.collector_store()
    col = cluster.collector("colhostile", roll_ms=60_000, store=cstore)
    session = client.client_id[0]
    before = claimed_agents(store)
    rpc = RpcClient("127.0.0.1", port_of(col), timeout=20)
    payload = encode_events(events_from_lines([b"hostile"]))
    crc = zlib.crc32(payload)
    calls = [("A" * (1 << 20), 1, crc, payload, 1),          # ZooKeeper: Len error
             ("/" * 200_000, 1, crc, payload, 1),            # 600 kB once quoted
             ("A" * 129, 1, crc, payload, 1), ("..", 1, crc, payload, 1),
             ("", 1, crc, payload, 1), ("a/b", 1, crc, payload, 1),
             ("ag\x00", 1, crc, payload, 1), ("ägent", 1, crc, payload, 1),
             ("okagent", 1, crc, payload, 2),                  # count disagrees
             ("okagent", 2, crc ^ 1, payload, 1)]              # checksum disagrees
    calls += [(f"junk-{i}-" + "B" * 100, 1, zlib.crc32(b"junk"), b"junk", 1)
              for i in range(30)]
    for agent, seq, c, pl, n in calls:
        status, msg = rpc.append_group(agent, seq, c, pl, n)
        assert status == Status.FAILED, (agent[:20], msg)
        assert len(msg) < 400, msg[:400]             # the id is never echoed whole
    metrics = col.status()["components"]["source"]["metrics"]
    assert metrics["refused_malformed"] == len(calls)
    assert claimed_agents(store) == before
    assert client.client_id[0] == session and client.connected
    assert rpc.append_group("okagent", 3, crc, payload, 1) == (Status.OK,
                                                               "taken by cphys-colhostile")
    col._flow.sink.roll_now()
    wait_until(lambda: store.commits.list_groups("okagent") == [3],
               what="legitimate group committed")
    rpc.close()
    assert output_lines(cluster.out) == collections.Counter({b"hostile": 1})
    assert claimed_agents(store) - before == {"okagent"}


def test_distinct_agents_past_max_agents_are_refused(cluster, store):
    col = cluster.collector("colcap", roll_ms=60_000, source_args=", maxAgents=2")
    rpc = RpcClient("127.0.0.1", port_of(col), timeout=10)
    payload = encode_events(events_from_lines([b"cap"]))
    crc = zlib.crc32(payload)
    assert rpc.append_group("cap-1", 1, crc, payload, 1)[0] == Status.OK
    assert rpc.append_group("cap-2", 1, crc, payload, 1)[0] == Status.OK
    status, msg = rpc.append_group("cap-3", 1, crc, payload, 1)
    assert status == Status.FAILED and "maxAgents" in msg
    assert rpc.append_group("cap-1", 2, crc, payload, 1)[0] == Status.OK   # known: taken
    rpc.close()
    metrics = col.status()["components"]["source"]["metrics"]
    assert metrics["refused_agents"] == 1
    assert "cap-3" not in claimed_agents(store)
    with pytest.raises(SpecError, match="maxAgents must be at least 1"):
        build_source(parse_source("collectorSource(0, maxAgents=0)"))


def test_max_agents_bounds_live_agents_only_an_idle_one_is_forgotten(cluster, store):
    """maxAgents is not a lifetime budget: once the groups of the first agents are
    committed and they stay idle past agentIdleMs, a new agent is taken."""
    # 2 s idle: the three appends below must all come before the first agent is idle,
    # which a loaded machine (or a parallel test run) can delay past a few hundred ms
    col = cluster.collector("colidle", roll_ms=100,
                            source_args=", maxAgents=2, agentIdleMs=2000")
    rpc = RpcClient("127.0.0.1", port_of(col), timeout=10)
    payload = encode_events(events_from_lines([b"idle"]))
    crc = zlib.crc32(payload)
    for a in ("old-1", "old-2"):
        assert rpc.append_group(a, 1, crc, payload, 1)[0] == Status.OK
    status, msg = rpc.append_group("new-1", 1, crc, payload, 1)
    assert status == Status.FAILED and "maxAgents" in msg
    wait_until(lambda: store.commits.list_groups("old-1") == [1]
               and store.commits.list_groups("old-2") == [1], what="old groups committed")
    wait_until(lambda: rpc.append_group("new-1", 1, crc, payload, 1)[0] == Status.OK,
               timeout=10, what="a new agent taken once the old ones are idle")
    wait_until(lambda: store.commits.list_groups("new-1") == [1], what="new group committed")
    # a forgotten agent's empty claims/<agent> folder is deleted (one at least was
    # forgotten to make room; the other too unless its group was still held then);
    # its committed groups (the acknowledgements) stay
    gone = wait_until(lambda: {"old-1", "old-2"} - claimed_agents(store),
                      what="the claim folder of a forgotten agent deleted")
    old = sorted(gone)[0]
    assert store.commits.list_groups(old) == [1]
    # a forgotten agent comes back: its folder is made again (the cache knew it)
    wait_until(lambda: rpc.append_group(old, 2, crc, payload, 1)[0] == Status.OK,
               timeout=10, what="a forgotten agent taken again")
    wait_until(lambda: store.commits.list_groups(old) == [1, 2], what="its group committed")
    assert rpc.append_group(old, 1, crc, payload, 1) == (Status.OK, "committed")
    rpc.close()
    metrics = col.status()["components"]["source"]["metrics"]
    assert metrics["refused_agents"] >= 1
    assert output_lines(cluster.out) == collections.Counter({b"idle": 4})


def test_a_claim_whose_folder_was_removed_meanwhile_is_made_again(cluster, store):
    """Another collector deleted claims/<agent> of an agent it forgot, after this one had
    made (and remembered) it: the claim makes the folder again instead of failing."""
    other, other_store = cluster.collector_store()
    assert store.commits.claim_group("fold", 1, "c1") == "claimed"
    store.commits.release_claims([("fold", 1)])
    other_store.commits.drop_claim_folders(["fold"])
    wait_until(lambda: "fold" not in claimed_agents(store), what="folder deleted")
    assert store.commits.claim_group("fold", 2, "c1") == "claimed"
    assert store.commits.claim_holder("fold", 2) == "c1"


def test_new_agent_ids_per_address_per_minute_are_bounded(cluster, store):
    col = cluster.collector("colrate", roll_ms=100, source_args=", maxNewAgentsPerMinute=3")
    rpc = RpcClient("127.0.0.1", port_of(col), timeout=10)
    payload = encode_events(events_from_lines([b"rate"]))
    crc = zlib.crc32(payload)
    for i in range(3):
        assert rpc.append_group(f"rate-{i}", 1, crc, payload, 1)[0] == Status.OK
    status, msg = rpc.append_group("rate-3", 1, crc, payload, 1)
    assert status == Status.FAILED, msg
    assert "maxNewAgentsPerMinute" in msg and "127.0.0.1" in msg
    assert rpc.append_group("rate-0", 2, crc, payload, 1)[0] == Status.OK   # live: taken
    rpc.close()
    metrics = col.status()["components"]["source"]["metrics"]
    assert metrics["refused_new_agents"] == 1
    assert "rate-3" not in claimed_agents(store)
    with pytest.raises(SpecError, match="maxNewAgentsPerMinute must be at least 1"):
        build_source(parse_source("collectorSource(0, maxNewAgentsPerMinute=0)"))


def test_agent_table_counts_new_ids_per_address_and_keeps_busy_agents():
    from flume_og.node.e2e.collector import AgentLimits, AgentTable
    now = [0.0]
    table = AgentTable(clock=lambda: now[0])
    limits = AgentLimits(max_agents=3, idle=10.0, max_new_per_minute=2)
    busy: set[str] = set()
    assert table.admit("a", "10.0.0.1", limits, lambda: busy) is None
    assert table.admit("b", "10.0.0.1", limits, lambda: busy) is None
    assert table.admit("c", "10.0.0.1", limits, lambda: busy) == "new_agents"
    assert table.admit("c", "10.0.0.2", limits, lambda: busy) is None   # another address
    assert table.admit("d", "10.0.0.3", limits, lambda: busy) == "agents"
    busy = {"a"}                   # a group of "a" is still held: never forgotten
    now[0] = 11.0
    assert table.admit("d", "10.0.0.3", limits, lambda: busy) is None
    assert set(table.seen) == {"a", "d"}
    now[0] = 30.0
    assert table.admit("e", "10.0.0.1", limits, lambda: busy) == "new_agents"
    now[0] = 61.0                  # a new minute for 10.0.0.1
    assert table.admit("e", "10.0.0.1", limits, lambda: busy) is None


def test_an_agent_named_outside_the_id_characters_still_delivers_exactly_once(cluster,
                                                                             channel, store):
    """A logical node name may hold characters (and a length) an agent id may not: the
    agent's id is then a stable fitted one, which collectors take."""
    from flume_og.node.e2e import agent_id_problem, fit_agent_id
    name = "agent ü (eu)!"
    fitted = fit_agent_id(name)
    assert agent_id_problem(fitted) is None and fitted == fit_agent_id(name)
    assert fitted.startswith("agenteu~") and fit_agent_id("plain-agent") == "plain-agent"
    assert agent_id_problem(fit_agent_id("x" * 200 + "#2")) is None
    col = cluster.collector("colfit", roll_ms=200)
    agent = cluster.agent(name, channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    expected = bodies("fit", 0, 3000)
    memory.push(channel, expected)
    wait_until(lambda: all_acked(agent, len(expected)), what="every group acknowledged")
    wait_until(lambda: sum(output_lines(cluster.out).values()) >= len(expected))
    assert_exactly_once(cluster.out, expected)
    assert col.status()["components"]["source"]["metrics"].get("refused", 0) == 0
    assert fitted in claimed_agents(store)


def test_zookeeper_client_refuses_requests_near_jute_maxbuffer(zk_client, zk_root):
    """No request ZooKeeper would choke on (jute.maxbuffer, 1 MiB) leaves our client: a
    long path, long data, a transaction too long altogether fail at once with a clear
    ZookeeperError; the session stays and ordinary requests go on."""
    from kazoo.exceptions import ZookeeperError
    from flume_og.zk.client import MAX_PATH_BYTES, MAX_REQUEST_BYTES, RequestTooLargeError
    session = zk_client.client_id[0]
    zk_client.ensure_path(zk_root)
    with pytest.raises(RequestTooLargeError, match="znode path of"):
        zk_client.ensure_path(f"{zk_root}/" + "p" * MAX_PATH_BYTES)
    with pytest.raises(RequestTooLargeError, match="request of"):
        zk_client.create(f"{zk_root}/big", b"x" * (MAX_REQUEST_BYTES + 1))
    with pytest.raises(ZookeeperError):                 # what callers already catch
        zk_client.create(f"{zk_root}/huge", b"x" * (3 << 20))
    tx = zk_client.transaction()
    for i in range(8):
        tx.create(f"{zk_root}/t{i}", b"y" * (MAX_REQUEST_BYTES // 8))
    with pytest.raises(RequestTooLargeError):
        tx.commit()
    assert zk_client.get_children(zk_root) == []
    zk_client.create(f"{zk_root}/fine", b"z" * 1000)
    assert zk_client.client_id[0] == session and zk_client.connected
    zk_client.delete(zk_root, recursive=True)


def test_the_commit_log_forgets_ensured_paths_past_its_bound(store, monkeypatch):
    import flume_og.zk.commit_log
    monkeypatch.setattr(flume_og.zk.commit_log, "ENSURED_KEPT", 3)
    for i in range(10):
        store.commits.watch_groups(f"ensured-{i}", lambda seqs: False)
        assert len(store.commits._ensured) <= 3
    assert store.commits.list_groups("ensured-9") == []
