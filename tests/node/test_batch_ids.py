"""Batch ids and deadlines on the RPC (issue 11 items 3 and 4): a collector slower than
the sender's timeout, over real sockets -- a resent batch is not written twice, work whose
caller gave up is dropped and counted, DFO's replay adapts, BE counts ``unknown`` apart
from ``dropped`` and probes a collector before dropping a backlog."""
from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flume_og.node.codec import encode_events
from flume_og.node.decorators.disk_failover import REPLAY_TIMEOUT_FACTOR, DiskFailoverDecorator
from flume_og.node.errors import DeliveryUnknown
from flume_og.node.event import Event
from flume_og.node.logical_node import LogicalNode
from flume_og.node.builder import build_sink
from flume_og.node.component import Sink
from flume_og.node.rpc import BatchId, RpcClient, Status
from flume_og.node.rpc_window import BUSY, CONFLICT, DUPLICATE, BatchWindow
from flume_og.node.sinks import collect
from flume_og.node.spec import parse_sink, parse_source
from tests.conftest import free_port
from tests.sockets import Relay
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def numbered(start: int, n: int) -> list[Event]:
    return [Event(str(i).encode()) for i in range(start, start + n)]


def slow_collector(tmp_path, name: str, ms_per_event: int, **args) -> tuple[LogicalNode, int]:
    """An in-process collector node: collectorSource on a free port, its flow slowed by
    ``delay(ms_per_event)``, events kept by ``collect(name)``."""
    collect.reset(name)
    port = free_port()
    extra = "".join(f", {k}={v}" for k, v in args.items())
    node = LogicalNode(name, tmp_path / name)
    node.configure(parse_source(f'collectorSource({port}, bind="127.0.0.1"{extra})'),
                   parse_sink(f'{{ delay({ms_per_event}) => collect("{name}") }}'))
    return node, port


def source_metrics(node: LogicalNode) -> dict:
    return node._flow.source.metrics


def bodies(name: str) -> list[int]:
    return [int(e.body) for e in collect.collected(name)]


def listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def opened(text: str, ctx):
    s = build_sink(parse_sink(text))
    s.open(ctx)
    return s


# ---------------------------------------------------------------- the window over RPC

def test_a_resend_joins_the_write_in_progress_and_is_not_written_twice(tmp_path):
    node, port = slow_collector(tmp_path, "join", 5)          # 100 events: 0.5 s
    payload = encode_events(numbered(0, 100))
    batch = BatchId("agent-a", 7)
    client = RpcClient("127.0.0.1", port, timeout=0.2)
    with pytest.raises(DeliveryUnknown):                      # the caller gives up...
        client.append_payload(payload, 100, batch)
    # ...and resends while the collector is still writing: it waits for that write
    assert client.append_payload(payload, 100, batch, timeout=5) == (Status.OK,
                                                                     "already taken")
    assert client.append_payload(payload, 100, batch) == (Status.OK, "already taken")
    assert bodies("join") == list(range(100))                 # written once
    m = source_metrics(node)
    assert m["joined"] == 1 and m["duplicate_batches"] == 2
    assert m["duplicate_events"] == 200 and m["batch_ids"] == 1
    # a sender without ids (an older one) is taken as before: each call is written
    plain = encode_events(numbered(100, 2))
    assert client.append_payload(plain, 2, timeout=5)[0] == Status.OK
    assert client.append_payload(plain, 2, timeout=5)[0] == Status.OK
    assert bodies("join") == list(range(102)) + [100, 101]
    client.close()
    node.stop(10)


def test_the_deadline_drops_a_batch_the_flow_did_not_take_in_time(tmp_path):
    """The flow is busy writing a first batch; a second one waits in the collector's
    queue past its caller's deadline: it is withdrawn and counted, never written. Its
    resend (same id) is then written, once."""
    node, port = slow_collector(tmp_path, "deadline", 30)     # 100 events: 3 s
    first, second = RpcClient("127.0.0.1", port, 10), RpcClient("127.0.0.1", port, 1.0)
    done = []
    t = threading.Thread(target=lambda: done.append(
        first.append_payload(encode_events(numbered(0, 100)), 100, BatchId("a", 1))))
    t.start()
    wait_until(lambda: source_metrics(node).get("events_in", 0) == 100, 5,
               "the flow to take the first batch")
    payload = encode_events(numbered(100, 3))
    # withdrawn just before the caller's deadline: it reads a definite RETRY
    status, message = second.append_payload(payload, 3, BatchId("a", 2))
    assert status == Status.RETRY and "deadline" in message
    assert source_metrics(node)["expired"] == 3
    t.join(15)
    assert done == [(Status.OK, "")]
    assert bodies("deadline") == list(range(100))             # the expired one is gone
    assert second.append_payload(payload, 3, BatchId("a", 2), timeout=5) == (Status.OK, "")
    assert bodies("deadline") == list(range(103))
    first.close()
    second.close()
    node.stop(10)


@pytest.mark.parametrize("packed", ["true", "false"])
def test_rpc_sink_resending_a_timed_out_batch_keeps_its_id(make_ctx, tmp_path, packed):
    """What stubbornAppend or insistentAppend do: append the same events again after a
    timeout. The second call joins the collector's write of the first (before batch ids:
    written twice)."""
    # 100 events: 2 s, past the 1 s timeout however fast the machine; 1 s leaves a loaded
    # machine (or a parallel test run) time to carry each "still being written" answer
    node, port = slow_collector(tmp_path, f"rpcsink-{packed}", 20)
    sink = opened(f'rpcSink("127.0.0.1", {port}, packed={packed}, timeoutMs=1000)',
                  make_ctx("agent"))
    events = numbered(0, 100)
    with pytest.raises(DeliveryUnknown):
        sink.append(events)
    sink.append(events)        # told "still being written" (RETRY) until it is written
    sink.append(numbered(100, 1))
    sink.close()
    assert bodies(f"rpcsink-{packed}") == list(range(101))
    assert source_metrics(node)["joined"] >= 1
    assert source_metrics(node)["duplicate_batches"] == 1
    node.stop(10)


@pytest.mark.parametrize("packed", ["true", "false"])
def test_rpc_sink_resending_a_batch_cut_off_in_its_second_piece_skips_the_first(
        make_ctx, tmp_path, monkeypatch, packed):
    """A batch over the send bound goes as 2 x 50 events; the link breaks while the
    receiver writes the second piece; the events are appended again (a DFO replay,
    insistentAppend): the first piece, answered OK, is not sent again (before: sent with a
    new id and written twice)."""
    from flume_og.node import rpc
    monkeypatch.setattr(rpc, "SEND_BATCH_EVENTS", 50)
    name = f"rpcpieces-{packed}"
    node, port = slow_collector(tmp_path, name, 5)            # 50 events: 0.25 s
    link = Relay(port)
    sink = opened(f'rpcSink("127.0.0.1", {link.port}, packed={packed}, timeoutMs=5000)',
                  make_ctx("agent"))
    events = numbered(0, 100)
    failed = []

    def send():
        try:
            sink.append(events)
        except DeliveryUnknown as exc:
            failed.append(exc)
    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: source_metrics(node).get("events_in", 0) == 100, 5, "both pieces")
    link.cut()
    sender.join(10)
    assert failed
    sink.append(events)                              # the resend
    sink.append(numbered(100, 1))
    sink.close()
    wait_until(lambda: len(bodies(name)) >= 101, 5, "the writes")
    copies = collections.Counter(bodies(name))
    assert max(copies.values()) == 1, copies.most_common(3)
    assert sorted(copies) == list(range(101))
    link.close()
    node.stop(10)


def test_a_sender_id_over_the_bound_is_refused(tmp_path):
    node, port = slow_collector(tmp_path, "longsender", 0)
    client = RpcClient("127.0.0.1", port, 5)
    status, message = client.append_payload(encode_events(numbered(0, 1)), 1,
                                            BatchId("s" * 300, 1))
    assert status == Status.FAILED and "sender id" in message
    assert source_metrics(node)["refused_malformed"] == 1
    assert client.append_payload(encode_events(numbered(0, 1)), 1,
                                 BatchId("s" * 200, 1)) == (Status.OK, "")
    assert bodies("longsender") == [0]
    client.close()
    node.stop(10)


# ---------------------------------------------------------------- the window's bounds

class Counts(dict):
    def add(self, name, n=1):
        self[name] = self.get(name, 0) + n


def test_window_bounds_per_sender_and_in_all_and_counts_evictions():
    m = Counts()
    w = BatchWindow(m, per_sender=3, total=5)
    for n in range(1, 5):                        # a's 4th id pushes out its 1st
        w.finish(w.claim("a", n, (1, n), 1, 0), True)
    assert m["batch_ids_evicted"] == 1 and w.size == 3
    assert w.claim("a", 2, (1, 2), 1, 0) == DUPLICATE
    w.finish(w.claim("a", 1, (1, 1), 1, 0), True)          # forgotten: a new claim
    assert m["batch_ids_evicted"] == 2
    for n in range(1, 4):                        # b fills the total: a's oldest go first
        w.finish(w.claim("b", n, (1, n), 1, 0), True)
    assert w.size == 5 and m["batch_ids_evicted"] == 3
    assert w.claim("a", 2, (1, 2), 1, 0) != DUPLICATE   # forgotten: written again
    assert w.claim("b", 1, (1, 1), 1, 0) == DUPLICATE
    assert w.claim("b", 1, (9, 9), 1, 0) == CONFLICT and m["batch_id_conflicts"] == 1
    # one being written: a resend whose deadline has passed is told BUSY
    c = w.claim("c", 1, (1, 1), 1, 0)
    assert w.claim("c", 1, (1, 1), 1, 0) == BUSY
    w.finish(c, False)                           # not written: forgotten
    assert w.claim("c", 1, (1, 1), 1, 0) not in (BUSY, DUPLICATE)
    assert w.size <= 5


def test_an_id_forgotten_while_its_sender_may_still_resend_it_is_counted_early():
    """A sender resends a batch of unknown outcome to the same collector for up to
    ``UNKNOWN_PIN_SECONDS`` (600 s): an id forgotten 2 minutes after it was taken can
    still be resent, and written again (before: counted early only within 60 s)."""
    from flume_og.node.rpc_window import EARLY_SECONDS
    from flume_og.node.sinks.agent import UNKNOWN_PIN_SECONDS
    assert EARLY_SECONDS >= UNKNOWN_PIN_SECONDS
    now = [0.0]
    m = Counts()
    w = BatchWindow(m, per_sender=1, total=5, clock=lambda: now[0])
    w.finish(w.claim("a", 1, (1, 1), 1, 0), True)
    now[0] = 120.0
    w.finish(w.claim("a", 2, (1, 2), 1, 0), True)          # a's 1st id goes
    assert m["batch_ids_evicted"] == 1 and m["batch_ids_evicted_early"] == 1
    now[0] = 120.0 + UNKNOWN_PIN_SECONDS
    w.finish(w.claim("a", 3, (1, 3), 1, 0), True)          # past the pin: not early
    assert m["batch_ids_evicted"] == 2 and m["batch_ids_evicted_early"] == 1


# ---------------------------------------------------------------- DFO

def collector_process(tmp_path, port: int, ms_per_event: int, out: Path):
    env = dict(os.environ, FLUME_DATA_DIR=str(tmp_path / "collector-data"))
    spec = (f'c: collectorSource({port}, bind="127.0.0.1") | '
            f'{{ delay({ms_per_event}) => text("{out}") }}')
    return subprocess.Popen([sys.executable, "-m", "flume_og.node.cli", "--log-level", "WARNING",
                             "node", "--one-shot", "-n", "c", "-c", spec], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_dfo_against_a_collector_slower_than_the_timeout_writes_each_event_once(make_ctx,
                                                                                tmp_path):
    """A real collector process writing 200 events in 1 s, an agent giving up after
    0.5 s: every batch times out, is spooled and replayed -- and is in the collector's
    file once (before batch ids: 12 copies of the first batch within 12 s, the others
    never delivered)."""
    port, out = free_port(), tmp_path / "out.txt"
    proc = collector_process(tmp_path, port, 5, out)
    try:
        wait_until(lambda: listening(port), 15,
                   "the collector to listen", ignore=(OSError,))
        ctx = make_ctx("agent")
        agent = opened(f'agentDFOSink("127.0.0.1", {port}, timeoutMs=500, checkMs=50, '
                       f'maxMs=400)', ctx)
        for start in range(0, 600, 200):
            agent.append(numbered(start, 200))
        assert agent.metrics["spooled"] >= 200               # the timeouts happened
        try:
            replayed = wait_until(lambda: agent.dfo.spool.empty and agent.dfo.metrics.get(
                "replayed", 0) == agent.metrics["spooled"], 15, "the replay")
        except AssertionError:
            replayed = False
        agent.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    copies = collections.Counter(out.read_bytes().splitlines())
    assert max(copies.values()) == 1, copies.most_common(3)
    assert len(copies) == 600 and replayed


def cut_while_written(agent, collector: LogicalNode, link: Relay) -> None:
    """``agent`` appends 100 events; the link is cut once ``collector`` took them (while
    it writes them); returns when the append returned."""
    sender = threading.Thread(target=agent.append, args=(numbered(0, 100),))
    sender.start()
    wait_until(lambda: source_metrics(collector).get("events_in", 0) == 100, 5,
               "the collector to take the batch")
    link.cut()
    sender.join(10)


def test_dfo_batch_in_flight_at_a_network_cut_is_written_once(make_ctx, tmp_path):
    """The link breaks while the collector writes a batch: the agent cannot know whether
    it arrived, spools and replays it -- and the collector answers the replay without
    writing it again (before batch ids: written twice)."""
    node, port = slow_collector(tmp_path, "cut", 5)           # 100 events: 0.5 s
    link = Relay(port)
    agent = opened(f'agentDFOSink("127.0.0.1", {link.port}, checkMs=50, maxMs=200)',
                   make_ctx("agent"))
    cut_while_written(agent, node, link)
    assert agent.metrics["spooled"] == 100
    wait_until(lambda: agent.dfo.spool.empty and agent.dfo.metrics.get("replayed") == 100,
               10, "the replay")
    agent.append(numbered(100, 5))
    agent.close()
    assert bodies("cut") == list(range(105))
    assert source_metrics(node)["duplicate_batches"] + source_metrics(node)["joined"] >= 1
    link.close()
    node.stop(10)


def test_dfo_batch_sent_in_pieces_cut_off_midway_writes_each_piece_once(make_ctx, tmp_path,
                                                                         monkeypatch):
    """A batch over the send bound goes as several calls (here 2 x 50 events); the link
    breaks while the collector writes the second piece. The whole batch is spooled and
    replayed: the piece the collector already took keeps its id, so the collector answers
    it without writing it again (before: a new id, the first 50 events written twice)."""
    from flume_og.node import rpc
    monkeypatch.setattr(rpc, "SEND_BATCH_EVENTS", 50)
    node, port = slow_collector(tmp_path, "pieces", 5)        # 50 events: 0.25 s
    link = Relay(port)
    agent = opened(f'agentDFOSink("127.0.0.1", {link.port}, checkMs=50, maxMs=200)',
                   make_ctx("agent"))
    cut_while_written(agent, node, link)                       # both pieces taken
    assert agent.metrics["spooled"] == 100
    wait_until(lambda: agent.dfo.spool.empty and agent.dfo.metrics.get("replayed") == 100,
               10, "the replay")
    agent.append(numbered(100, 5))
    agent.close()
    copies = collections.Counter(bodies("pieces"))
    assert max(copies.values()) == 1, copies.most_common(3)
    assert sorted(copies) == list(range(105))
    link.close()
    node.stop(10)


def test_the_pieces_kept_for_resends_are_bounded_and_forgotten_once_sent():
    from flume_og.node.rpc import BatchIds
    ids = BatchIds("agent", limit=2)
    for n in range(3):
        ids.keep_pieces(b"batch %d" % n, {0, n})
    assert ids.pieces_taken(b"batch 0") == set()              # the oldest forgotten
    assert ids.pieces_taken(b"batch 2") == {0, 2}
    ids.keep_pieces(b"batch 2", set())
    assert ids.pieces_taken(b"batch 2") == set()


def test_dfo_batch_cut_off_at_one_collector_is_not_written_by_another(make_ctx, tmp_path):
    """A chain of two collectors; the link to the first breaks while it writes a batch.
    The agent asks the first again (it alone knows the batch's id) instead of sending the
    batch to the second, which would write it a second time (before: written by both)."""
    first, first_port = slow_collector(tmp_path, "pin1", 5)    # 100 events: 0.5 s
    second, second_port = slow_collector(tmp_path, "pin2", 0)
    link = Relay(first_port)
    agent = opened(f'agentDFOChain("127.0.0.1:{link.port}", "127.0.0.1:{second_port}", '
                   f'checkMs=50, maxMs=200)', make_ctx("agent"))
    cut_while_written(agent, first, link)
    wait_until(lambda: agent.dfo.spool.empty and
               set(range(100)) <= set(bodies("pin1") + bodies("pin2")), 15, "the batch delivered")
    wait_until(lambda: bodies("pin1") == list(range(100)), 5, "the first collector's write")
    assert bodies("pin2") == []                               # before: the batch again
    assert agent.dfo.metrics.get("replayed") == 100
    assert source_metrics(first)["duplicate_batches"] + source_metrics(first)["joined"] >= 1
    agent.append(numbered(100, 5))
    agent.close()
    assert sorted(bodies("pin1") + bodies("pin2")) == list(range(105))
    link.close()
    first.stop(10)
    second.stop(10)


class Unanswered(Sink):
    """An inner sink whose calls get no answer within less than ``needs`` seconds."""

    def __init__(self, needs: float):
        super().__init__()
        self.timeout = 0.1
        self.needs = needs
        self.asked: list[float] = []
        self.got: list[bytes] = []

    def append_encoded(self, data: bytes, count: int, lane: int = 0,
                       timeout: float | None = None, resend: bool = False) -> None:
        self.asked.append(timeout)
        if timeout is None or timeout < self.needs:
            raise DeliveryUnknown("timed out")
        self.got.append(data)


def test_dfo_replay_waits_longer_after_each_unknown_outcome_up_to_a_bound(make_ctx,
                                                                           caplog):
    inner = Unanswered(needs=0.5)
    dfo = DiskFailoverDecorator(inner, maxMs=20, checkMs=10)
    dfo.open(make_ctx("agent"))
    with caplog.at_level(logging.WARNING, logger="flume_og.node.decorators.disk_failover"):
        dfo.append(numbered(0, 5))                   # no answer: spooled
        wait_until(lambda: inner.got, 10, "the replay")
    dfo.close()
    # the direct send and the first replay wait 0.1 s, then 0.2, 0.4, 0.8
    assert inner.asked == [None, 0.1, 0.2, 0.4, 0.8]
    assert dfo.metrics["replayed"] == 5
    assert [r.levelname for r in caplog.records if "replay" in r.message][:1] == ["WARNING"]
    # never past the bound
    inner = Unanswered(needs=100)
    dfo = DiskFailoverDecorator(inner, maxMs=10, checkMs=10)
    dfo.open(make_ctx("agent2"))
    dfo.append(numbered(0, 1))
    wait_until(lambda: len(inner.asked) >= 8, 10, "several replays")
    dfo.close()
    assert max(t for t in inner.asked if t) == pytest.approx(0.1 * REPLAY_TIMEOUT_FACTOR)


# ---------------------------------------------------------------- BE

def test_be_counts_timed_out_batches_as_unknown_and_only_lost_ones_as_dropped(make_ctx,
                                                                              tmp_path):
    """Against a collector slower than the timeout, then down: lost = dropped exactly
    when only refusals count as dropped, and unknown covers what may have arrived (before:
    every timed-out batch counted as dropped although the collector wrote it)."""
    node, port = slow_collector(tmp_path, "be", 4)            # 100 events: 0.4 s
    agent = opened(f'agentBESink("127.0.0.1", {port}, timeoutMs=250, checkMs=50, '
                   f'maxMs=100, lanes=1)', make_ctx("agent"))
    sent = 0
    for _ in range(4):
        agent.append(numbered(sent, 100))
        sent += 100
    assert agent.wait_sent(20)
    node.stop(10)                                              # the collector goes away
    for _ in range(3):
        agent.append(numbered(sent, 100))
        sent += 100
    assert agent.wait_sent(20)
    agent.close()
    got = bodies("be")
    assert len(got) == len(set(got))
    m = agent.metrics
    lost = sent - len(got)
    assert m["dropped"] <= lost <= m["dropped"] + m.get("unknown", 0)
    assert m["dropped"] == 300                                # refused: surely lost
    assert m["events_out"] + m["dropped"] + m["unknown"] == sent
    assert m["unknown"] > 0 and len(got) > m["events_out"]    # some unknown arrived


def test_be_probes_a_collector_backing_off_before_dropping(make_ctx, tmp_path):
    """The collector comes back during a long backoff (5 s): batches sent right after
    reach it (before: dropped until the backoff ended)."""
    node, port = slow_collector(tmp_path, "probe", 0)
    agent = opened(f'agentBESink("127.0.0.1", {port}, checkMs=5000, maxMs=5000, lanes=1)',
                   make_ctx("agent"))
    agent.append(numbered(0, 10))
    assert agent.wait_sent(10) and agent.metrics["events_out"] == 10
    node.stop(10)
    agent.append(numbered(10, 10))                            # refused: backs off 5 s
    assert agent.wait_sent(10) and agent.metrics["dropped"] == 10
    node.configure(parse_source(f'collectorSource({port}, bind="127.0.0.1")'),
                   parse_sink('collect("probe")'))
    wait_until(lambda: listening(port), 10,
               "the collector to listen again", ignore=(OSError,))
    sent = 20
    for _ in range(20):
        agent.append(numbered(sent, 10))
        sent += 10
        agent.wait_sent(10)
    agent.close()
    assert agent.metrics["dropped"] <= 20                     # at most one batch more
    assert len(bodies("probe")) >= sent - 20
    assert agent.metrics["probes"] >= 1
    node.stop(10)
