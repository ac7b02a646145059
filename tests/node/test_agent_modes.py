"""Agent sinks in best-effort and disk-failover mode against real collector sources on
127.0.0.1 (stopped and restarted on the same port), and diskFailover's spool, including
an agent process killed with SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from flume_og.node.checkpoint import Checkpoint
from flume_og.node.errors import SinkError
from flume_og.node.event import Event
from flume_og.node.builder import build_sink, build_source
from flume_og.node.spec import parse_sink, parse_source
from tests.conftest import free_port
from tests.node.test_rpc import Drain, wait_for

pytestmark = pytest.mark.timeout(60)

FAST = "checkMs=50, maxMs=200"


class RunningCollector:
    """A collectorSource with a consumer, restartable on the same port."""

    def __init__(self, ctx, port: int = 0, start: bool = True):
        self.ctx = ctx
        self.port = port or free_port()
        self.received: list[Event] = []
        self.src = self.drain = None
        if start:
            self.start()

    def start(self):
        self.src = build_source(parse_source(
            f'collectorSource({self.port}, bind="127.0.0.1")'))
        self.src.open(self.ctx)
        self.drain = Drain(self.src)

    def stop(self):
        if self.src is not None:
            self.src.close()
            self.drain.close()
            self.received.extend(self.drain.events)
            self.src = self.drain = None

    def events(self) -> list[Event]:
        return self.received + (self.drain.events if self.drain else [])

    def bodies(self) -> list[int]:
        return [int(e.body) for e in self.events()]


def numbered(start: int, n: int) -> list[Event]:
    return [Event(str(i).encode(), attrs={"n": str(i).encode()})
            for i in range(start, start + n)]


def opened(text: str, ctx):
    s = build_sink(parse_sink(text))
    s.open(ctx)
    return s


def chain_over_two_collectors(make_ctx, chain: str):
    """Collectors c1 and c2 and a ``chain`` sink (agentBEChain, agentDFOChain) over them,
    c1 first, opened: (c1, c2, the sink)."""
    c1, c2 = RunningCollector(make_ctx("c1")), RunningCollector(make_ctx("c2"))
    sink = opened(f'{chain}("127.0.0.1:{c1.port}", "127.0.0.1:{c2.port}", {FAST})',
                  make_ctx("agent"))
    return c1, c2, sink


# ---------------------------------------------------------------- best effort

def test_be_drops_while_the_collector_is_down_and_counts_every_drop(make_ctx):
    ctx = make_ctx("agent")
    col = RunningCollector(make_ctx("collector"))
    agent = opened(f'agentBESink("127.0.0.1", {col.port}, {FAST})', ctx)
    sent = 0
    for _ in range(5):
        agent.append(numbered(sent, 10))
        sent += 10
    assert agent.wait_sent()
    col.stop()
    for _ in range(5):
        agent.append(numbered(sent, 10))   # never raises
        sent += 10
    assert agent.wait_sent()
    assert agent.metrics["dropped"] == 50
    col.start()
    # after its backoff the collector gets events again

    def send_until_received() -> bool:
        nonlocal sent
        if len(col.events()) > 50:
            return True
        agent.append(numbered(sent, 10))
        sent += 10
        return False
    wait_for(send_until_received, 10, "the BE agent back at the collector", interval=0.02)
    agent.close()
    got = col.bodies()
    assert len(got) == len(set(got))
    missing = sent - len(got)
    assert missing == agent.metrics["dropped"] > 0
    assert agent.metrics["events_out"] == len(got)
    col.stop()


def test_be_with_no_collector_at_all_opens_and_drops(ctx):
    agent = opened(f'agentBEChain("127.0.0.1:{free_port()}", "127.0.0.1:{free_port()}", '
                   f'{FAST})', ctx)
    agent.append(numbered(0, 7))
    agent.append(numbered(7, 3))
    assert agent.wait_sent()
    assert agent.metrics["dropped"] == 10
    agent.when_durable(Checkpoint({"pos": 10}))   # best effort: the position moves on
    assert ctx.store.get("pos") == 10
    agent.close()


def test_be_chain_fails_over_without_loss_and_returns_to_the_primary(make_ctx):
    c1, c2, agent = chain_over_two_collectors(make_ctx, "agentBEChain")
    agent.append(numbered(0, 10))
    assert agent.wait_sent()
    c1.stop()
    start = time.monotonic()
    agent.append(numbered(10, 10))        # fails on c1, goes to c2 in the same call
    assert agent.wait_sent()
    assert time.monotonic() - start < 2
    agent.append(numbered(20, 10))
    assert agent.metrics.get("dropped", 0) == 0
    wait_for(lambda: len(c2.events()) == 20)
    c1.start()
    sent = 30

    def send_until_primary() -> bool:
        nonlocal sent
        if c1.drain.events:
            return True
        agent.append(numbered(sent, 1))
        sent += 1
        return False
    wait_for(send_until_primary, 10, "the chain back at the primary", interval=0.02)
    agent.close()
    got = sorted(c1.bodies() + c2.bodies())
    assert got == list(range(sent))
    assert agent.metrics["failovers"] >= 1
    c1.stop()
    c2.stop()


def test_the_report_names_the_collectors_found_down_until_one_takes_a_batch(make_ctx):
    """``down`` in the chain's report: what the master's console uses to show a dead
    collector at once, before its own reports go silent."""
    c1, c2, agent = chain_over_two_collectors(make_ctx, "agentBEChain")
    a1, a2 = f"127.0.0.1:{c1.port}", f"127.0.0.1:{c2.port}"
    agent.append(numbered(0, 5))
    assert agent.wait_sent()
    assert agent.report()["down"] == [] and agent.report()["target"] == a1
    c1.stop()
    agent.append(numbered(5, 5))
    assert agent.wait_sent()
    rep = agent.report()
    assert rep["down"] == [a1] and rep["target"] == a2
    c1.start()
    sent = 10

    def back_at_primary() -> bool:
        nonlocal sent
        if c1.drain.events:
            return True
        agent.append(numbered(sent, 1))
        sent += 1
        return False
    wait_for(back_at_primary, 10, "the chain back at the primary", interval=0.02)
    assert agent.wait_sent()
    assert agent.report()["down"] == []
    agent.close()
    c1.stop()
    c2.stop()


def test_be_commits_positions_in_order_without_holding_up_the_next_append(make_ctx):
    """A slow checkpoint write (a busy disk) in a sender lane must not stall the flow's
    next append, and positions are committed in order (never an older over a newer)."""
    import threading
    ctx = make_ctx("agent")
    store, gate, committed = ctx.store, threading.Event(), []
    real_commit = store.commit

    def slow_commit(cps, *a, **kw):
        gate.wait(10)
        committed.extend(cp.updates["pos"] for cp in cps)
        real_commit(cps, *a, **kw)

    store.commit = slow_commit
    col = RunningCollector(make_ctx("collector"))
    agent = opened(f'agentBESink("127.0.0.1", {col.port}, {FAST}, lanes=3)', ctx)
    agent.append(numbered(0, 10))
    agent.when_durable(Checkpoint({"pos": 10}))
    wait_for(lambda: len(col.events()) == 10, 5, "the first batch")
    # a lane is now writing the first checkpoint (held at the gate)
    t0 = time.monotonic()
    for i in range(1, 20):
        agent.append(numbered(10 * i, 10))
        agent.when_durable(Checkpoint({"pos": 10 * (i + 1)}))
    assert time.monotonic() - t0 < 5, "appends waited for the checkpoint write"
    wait_for(lambda: len(col.events()) == 200, 10, "every batch")
    gate.set()
    assert agent.wait_sent(10)
    assert committed == sorted(committed) and committed[-1] == 200
    assert store.get("pos") == 200
    agent.close()
    col.stop()


def test_batching_and_compression_options(make_ctx):
    ctx = make_ctx("agent")
    col = RunningCollector(make_ctx("collector"))
    agent = opened(f'agentBESink("127.0.0.1", {col.port}, batchCount=50, batchMillis=100, '
                   f'compression=true, lanes=1)', ctx)     # one lane keeps the order
    for i in range(0, 120, 10):
        agent.append(numbered(i, 10))
    agent.when_durable(Checkpoint({"pos": 120}))
    # 100 events went in calls of >= 50; the last 20 wait for batchMillis
    wait_for(lambda: len(col.events()) == 120, 5, "the partial gathering")
    wait_for(lambda: col.src.metrics.get("batches_in") == 3, 5, "the last answer")
    wait_for(lambda: ctx.store.get("pos") == 120, 5, "the held checkpoint")
    assert [e.attrs["n"] for e in col.events()] == [str(i).encode() for i in range(120)]
    agent.close()
    col.stop()


# ---------------------------------------------------------------- disk failover

def spool_files(ctx) -> list[str]:
    d = ctx.data_dir / "dfo"
    return sorted(str(p.relative_to(d)) for p in d.rglob("*.dfo")) if d.exists() else []


def test_dfo_spools_while_the_collector_is_down_and_replays_everything(make_ctx):
    ctx = make_ctx("agent")
    col = RunningCollector(make_ctx("collector"))
    agent = opened(f'agentDFOSink("127.0.0.1", {col.port}, {FAST})', ctx)
    agent.append(numbered(0, 100))
    col.stop()
    for i in range(100, 1000, 100):
        agent.append(numbered(i, 100))
        agent.when_durable(Checkpoint({"pos": i + 100}))
    assert ctx.store.get("pos") == 1000         # spooled counts as durable
    assert agent.metrics["spooled"] == 900
    assert agent.metrics["spool_bytes"] > 0
    assert spool_files(ctx)
    col.start()
    wait_for(lambda: len(col.events()) == 1000, 10, "the replay")
    wait_for(lambda: agent.dfo.metrics["replayed"] == 900, 5, "the replay's bookkeeping")
    agent.append(numbered(1000, 10))             # spool empty again: straight through
    wait_for(lambda: len(col.events()) == 1010)
    assert col.bodies() == list(range(1010))     # nothing missing, in order
    assert agent.metrics["replayed"] == 900
    assert agent.metrics["spool_bytes"] == 0
    assert spool_files(ctx) == []
    agent.close()
    col.stop()


def test_dfo_keeps_order_while_replaying(make_ctx):
    """Appends made while the spool is not empty go behind it, never ahead."""
    ctx = make_ctx("agent")
    col = RunningCollector(make_ctx("collector"), start=False)
    agent = opened(f'agentDFOSink("127.0.0.1", {col.port}, {FAST})', ctx)
    sent = 0
    for _ in range(20):
        agent.append(numbered(sent, 50))
        sent += 50
    col.start()
    while len(col.events()) < sent and sent < 5000:
        agent.append(numbered(sent, 50))
        sent += 50
    wait_for(lambda: len(col.events()) == sent, 10)
    assert col.bodies() == list(range(sent))
    agent.close()
    col.stop()


def test_dfo_spool_is_replayed_after_an_agent_restart(make_ctx):
    ctx = make_ctx("agent")
    col = RunningCollector(make_ctx("collector"), start=False)
    spec = f'agentDFOChain("127.0.0.1:{col.port}", {FAST})'
    agent = opened(spec, ctx)
    agent.append(numbered(0, 300))
    agent.close()                                  # leaves the spool on disk
    assert spool_files(ctx)
    col.start()
    agent = opened(spec, make_ctx("agent"))        # same data directory
    agent.append(numbered(300, 10))                # goes behind the old spool
    wait_for(lambda: len(col.events()) == 310, 10, "replay after restart")
    wait_for(lambda: agent.dfo.metrics["spool_bytes"] == 0, 5, "the replay's bookkeeping")
    assert agent.dfo.metrics["replayed"] >= 300
    assert col.bodies() == list(range(310))
    agent.close()
    col.stop()
    assert spool_files(ctx) == []


def test_dfo_survives_sigkill_of_the_agent_process(make_ctx, tmp_path):
    ctx = make_ctx("agent")
    col = RunningCollector(make_ctx("collector"), start=False)
    spec = f'agentDFOSink("127.0.0.1", {col.port}, {FAST})'
    script = textwrap.dedent(f"""
        import sys, time
        from flume_og.node.checkpoint import CheckpointStore
        from flume_og.node.component import NodeContext
        from flume_og.node.event import Event
        from flume_og.node.builder import build_sink
        from flume_og.node.spec import parse_sink
        from pathlib import Path
        d = Path({str(ctx.data_dir)!r})
        ctx = NodeContext("agent", d, CheckpointStore(d / "checkpoint.json"))
        sink = build_sink(parse_sink({spec!r}))
        sink.open(ctx)
        for i in range(0, 2000, 100):
            sink.append([Event(str(j).encode()) for j in range(i, i + 100)])
        print("spooled", sink.metrics["spooled"], flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            cwd=os.getcwd(), text=True)
    try:
        line = proc.stdout.readline()
        assert line.split() == ["spooled", "2000"], line
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    col.start()
    agent = opened(spec, ctx)
    wait_for(lambda: len(col.events()) == 2000, 10, "replay after SIGKILL")
    assert col.bodies() == list(range(2000))
    agent.close()
    col.stop()


def test_dfo_chain_fails_over_to_the_second_collector(make_ctx):
    c1, c2, agent = chain_over_two_collectors(make_ctx, "agentDFOChain")
    agent.append(numbered(0, 10))
    c1.stop()
    agent.append(numbered(10, 10))
    assert agent.metrics.get("spooled", 0) == 0
    c2.stop()
    agent.append(numbered(20, 10))                 # both down: spooled
    assert agent.metrics["spooled"] == 10
    c2.start()
    wait_for(lambda: len(c2.events()) == 20, 10)
    assert sorted(c1.bodies() + c2.bodies()) == list(range(30))
    agent.close()
    c1.stop()
    c2.stop()


def test_disk_failover_over_an_rpc_sink_that_cannot_open(make_ctx):
    ctx = make_ctx("agent")
    col = RunningCollector(make_ctx("collector"), start=False)
    sink = opened(f'diskFailover(200, 50) rpcSink("127.0.0.1", {col.port})', ctx)
    sink.append(numbered(0, 10))
    sink.append(numbered(10, 10))
    assert sink.metrics["spooled"] == 20 and sink.metrics["send_errors"] >= 1
    col.start()
    wait_for(lambda: len(col.events()) == 20, 10)
    wait_for(lambda: sink.metrics.get("replayed") == 20, 5, "the replay's bookkeeping")
    sink.append(numbered(20, 5))
    wait_for(lambda: len(col.events()) == 25)
    assert col.bodies() == list(range(25))
    assert sink.metrics["events_out"] == 5 and sink.metrics["replayed"] == 20
    sink.close()
    col.stop()


def replay_damaged_spool(make_ctx, damage):
    """Spools events 0-29 as three records with the collector down, rewrites the spool
    segment as ``damage(bytes)`` returns it, then starts the collector and reopens the
    sink: (collector, sink) once 20 events arrived and one record was counted corrupt."""
    ctx = make_ctx("agent")
    col = RunningCollector(make_ctx("collector"), start=False)
    spec = f'diskFailover(200, 50) rpcSink("127.0.0.1", {col.port})'
    sink = opened(spec, ctx)
    for i in range(0, 30, 10):
        sink.append(numbered(i, 10))
    sink.close()
    [seg] = spool_files(ctx)
    path = ctx.data_dir / "dfo" / seg
    path.write_bytes(damage(path.read_bytes()))
    col.start()
    sink = opened(spec, ctx)
    wait_for(lambda: len(col.events()) == 20 and sink.metrics.get("corrupt") == 1, 10)
    return col, sink


def test_a_corrupt_spool_tail_is_reported_not_replayed(make_ctx):
    col, sink = replay_damaged_spool(make_ctx, lambda data: data[:-5])  # a torn last record
    sink.append(numbered(100, 1))
    wait_for(lambda: len(col.events()) == 21)
    assert col.bodies() == list(range(20)) + [100]
    sink.close()
    col.stop()


def flip_a_middle_byte(data: bytes) -> bytes:
    """``data`` with the byte in its middle inverted (inside the second record's payload)."""
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    return bytes(damaged)


def test_a_record_failing_its_checksum_is_dropped_and_counted(make_ctx):
    col, sink = replay_damaged_spool(make_ctx, flip_a_middle_byte)
    assert col.bodies() == list(range(10)) + list(range(20, 30))
    sink.close()
    col.stop()


def test_two_disk_failovers_of_one_node_get_their_own_spools(make_ctx):
    ctx = make_ctx("agent")
    port = free_port()
    a = opened(f'diskFailover(200, 50) rpcSink("127.0.0.1", {port})', ctx)
    b = opened(f'diskFailover(200, 50) rpcSink("127.0.0.1", {port})', ctx)
    assert a.spool_dir != b.spool_dir
    a.append(numbered(0, 1))
    b.append(numbered(1, 1))
    a.close()
    b.close()
    assert len(spool_files(ctx)) == 2


def test_spool_write_failure_is_a_sinkerror(make_ctx):
    ctx = make_ctx("agent")
    sink = opened(f'diskFailover(200, 50) rpcSink("127.0.0.1", {free_port()})', ctx)
    sink.close()
    with pytest.raises(SinkError):
        sink.append(numbered(0, 1))


def test_be_batch_over_the_receivers_bounds_is_sent_in_pieces(ctx):
    """One append of more events than a collector takes in one call arrives whole, in
    order, in several calls; one event alone over the byte bound is sent as it is (the
    receiver refuses it and it is counted), never split without end."""
    col = RunningCollector(ctx)
    try:
        sink = opened(f'agentBESink("127.0.0.1", {col.port}, lanes=1)', ctx)
        sink.append(numbered(0, 25_000))
        wait_for(lambda: len(col.events()) == 25_000, 20)
        assert col.bodies() == list(range(25_000))
        assert col.src.metrics.get("refused", 0) == 0
        sink.append([Event(b"x" * (17 << 20))])           # > the receiver's 16 MiB
        wait_for(lambda: col.src.metrics.get("refused", 0) >= 1, 20)
        sink.close()
    finally:
        col.stop()
