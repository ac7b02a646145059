"""Issue 11 review, agent side, over real sockets: a hung collector does not stall a DFO
chain (only the batch whose outcome is unknown waits for it), one peer cannot flush the
batch ids of others from a collector's window, a reconfigured agent keeps its sender id
and counters, and a DFO agent that spools says why."""
from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time

import pytest

from flume_og.node.codec import encode_events
from flume_og.node.component import Sink
from flume_og.node.decorators.disk_failover import DiskFailoverDecorator
from flume_og.node.errors import DeliveryUnknown
from flume_og.node.event import Event
from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.rpc import BatchId, RpcClient
from flume_og.node.rpc_window import DUPLICATE, BatchWindow
from flume_og.node.sinks import agent as agent_sinks
from flume_og.node.sinks import collect
from flume_og.node.sources import memory
from flume_og.node.spec import parse_sink, parse_source
from tests.conftest import free_port
from tests.node.test_batch_ids import (Counts, bodies, collector_process, listening,
                                       numbered, opened, slow_collector, source_metrics)
from tests.sockets import Relay
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- a hung collector

def test_a_hung_collector_holds_only_its_unknown_batch_the_rest_flows_to_the_next(
        make_ctx, tmp_path):
    """agentDFOChain(c1, c2); c1 (a real process) is stopped (SIGSTOP) before the first
    batch: that batch's call times out, its outcome unknown. Every later batch reaches c2
    within 2 s of its append (before: none for 30 s, then the backlog in a burst,
    again and again), while the first one waits for c1 alone; once c1 resumes it answers
    the resend without writing the batch twice."""
    p1, out1 = free_port(), tmp_path / "c1.txt"
    c1 = collector_process(tmp_path, p1, 0, out1)
    c2, p2 = slow_collector(tmp_path, "hung2", 0)
    try:
        wait_until(lambda: listening(p1), 15, "c1 to listen", ignore=(OSError,))
        os.kill(c1.pid, signal.SIGSTOP)
        agent = opened(f'agentDFOChain("127.0.0.1:{p1}", "127.0.0.1:{p2}", timeoutMs=500, '
                       f'checkMs=50, maxMs=200)', make_ctx("agent"))
        agent.append(numbered(0, 10))                   # to c1: no answer
        assert agent.metrics["spooled"] == 10 and agent.metrics["unknown"] == 0
        latencies = []
        for b in range(1, 21):
            start = time.monotonic()
            agent.append(numbered(b * 10, 10))
            wait_until(lambda: set(range(b * 10, b * 10 + 10)) <= set(bodies("hung2")), 5,
                       f"batch {b} at c2")
            latencies.append(time.monotonic() - start)
            time.sleep(0.05)    # the source's pace between batches
        assert max(latencies) < 2.0, latencies
        assert not set(range(10)) & set(bodies("hung2"))     # the unknown one waits for c1
        os.kill(c1.pid, signal.SIGCONT)
        wait_until(lambda: agent.dfo.spool.empty, 15, "the unknown batch settled at c1")
        agent.append(numbered(210, 10))                 # c1 answered: the primary again
        agent.close()
    finally:
        os.kill(c1.pid, signal.SIGCONT)
        c1.send_signal(signal.SIGTERM)
        c1.wait(20)
        c2.stop(10)
    at_c1 = [int(x) for x in out1.read_bytes().splitlines()]
    copies = collections.Counter(at_c1 + bodies("hung2"))
    assert max(copies.values()) == 1, copies.most_common(3)
    assert sorted(copies) == list(range(220))
    assert set(range(10)) <= set(at_c1) and set(range(210, 220)) <= set(at_c1)


def test_an_unknown_batch_waits_for_its_collector_only_up_to_the_bound_and_says_so(
        make_ctx, tmp_path, monkeypatch, caplog):
    """c1 (a real process) is paused (SIGSTOP) and never comes back: the batch whose call
    timed out there waits for it (a gauge says how many do) only up to the bound
    (``UNKNOWN_PIN_SECONDS``, shortened here), then goes to c2 -- logged at WARNING as a
    possible duplicate and counted in ``unknown_released`` (before: released silently,
    nothing showed a batch waiting or given up on)."""
    monkeypatch.setattr(agent_sinks, "UNKNOWN_PIN_SECONDS", 2.0)
    p1, out1 = free_port(), tmp_path / "c1.txt"
    c1 = collector_process(tmp_path, p1, 0, out1)
    c2, p2 = slow_collector(tmp_path, "bound2", 0)
    try:
        wait_until(lambda: listening(p1), 15, "c1 to listen", ignore=(OSError,))
        os.kill(c1.pid, signal.SIGSTOP)
        agent = opened(f'agentDFOChain("127.0.0.1:{p1}", "127.0.0.1:{p2}", timeoutMs=300, '
                       f'checkMs=50, maxMs=200)', make_ctx("agent"))
        with caplog.at_level(logging.INFO, logger="flume_og.node.sinks.agent"):
            agent.append(numbered(0, 10))               # to c1: no answer
            start = time.monotonic()
            m = agent.report()["metrics"]
            assert m["unknown_pending"] == 1 and m["unknown_released"] == 0
            agent.append(numbered(10, 10))              # new batches: c2 at once
            wait_until(lambda: bodies("bound2") == list(range(10, 20)), 5, "batch 1 at c2")
            wait_until(lambda: set(range(10)) <= set(bodies("bound2")), 15,
                       "the unknown batch at c2 after the bound")
            waited = time.monotonic() - start
            wait_until(lambda: agent.dfo.spool.empty, 5, "the spool emptied")
            m = agent.report()["metrics"]
        agent.close()
    finally:
        c1.kill()
        c1.wait(10)
        c2.stop(10)
    assert waited >= 1.5, waited                 # it did wait for c1 first
    assert m["unknown_pending"] == 0 and m["unknown_released"] == 1, m
    warned = [r for r in caplog.records if "may be written a second time" in r.getMessage()]
    assert [r.levelname for r in warned] == ["WARNING"], warned
    assert f"127.0.0.1:{p1}" in warned[0].getMessage()


# ---------------------------------------------------------------- the window, per peer

def test_one_peer_making_up_sender_ids_cannot_flush_the_ids_of_another(make_ctx,
                                                                       tmp_path):
    """A DFO batch is written but its answer lost (the link cut while the collector
    wrote it); before its replay, a client on another address sends 300 one-event calls
    under 300 sender ids -- more than the window's 256. The flood evicts only its own ids
    (at most 64 of that address): the replay is recognised, not written again (before:
    the agent's id, the least recently heard sender, was evicted and the batch written
    twice)."""
    node, port = slow_collector(tmp_path, "flood", 5, maxBatchIds=256,
                                maxBatchIdsPerPeer=64)            # 100 events: 0.5 s
    link, flood_link = Relay(port), Relay(port, source="127.0.0.2")
    agent = opened(f'agentDFOSink("127.0.0.1", {link.port}, checkMs=50, maxMs=200)',
                   make_ctx("agent"))
    sender = threading.Thread(target=agent.append, args=(numbered(0, 100),))
    sender.start()
    wait_until(lambda: source_metrics(node).get("events_in", 0) == 100, 5,
               "the collector to take the batch")
    link.refusing = True                    # no replay until the flood is over
    link.cut()
    sender.join(10)
    assert agent.metrics["spooled"] == 100
    client = RpcClient("127.0.0.1", flood_link.port, 10)
    for i in range(300):
        client.append_payload(encode_events([Event(b"-1")]), 1, BatchId(f"other-{i}", 1))
    client.close()
    link.refusing = False
    wait_until(lambda: agent.dfo.spool.empty, 10, "the replay")
    agent.close()
    assert [b for b in bodies("flood") if b != -1] == list(range(100))
    m = source_metrics(node)
    assert m["duplicate_batches"] == 1
    # the flood's own ids went, all early (the agent's one never)
    assert m["batch_ids_evicted"] == m["batch_ids_evicted_early"] == 300 - 64
    link.close()
    flood_link.close()
    node.stop(10)


def test_window_past_its_total_forgets_the_oldest_id_of_the_busiest_peer():
    """Unit level: a peer past ``per_peer`` forgets its own ids; past the total, the peer
    holding the most gives one up -- never the agent holding one (before: the sender
    heard of least recently, whoever it was)."""
    m = Counts()
    w = BatchWindow(m, per_sender=3, total=5, per_peer=4)
    w.finish(w.claim("agent", 1, (1, 1), 1, 0, "10.0.0.1"), True)
    for i in range(10):
        w.finish(w.claim(f"x{i}", 1, (1, 1), 1, 0, "10.0.0.2"), True)
    assert m["batch_ids_evicted"] == 6 and w.size == 5
    for i in range(3):
        w.finish(w.claim(f"y{i}", 1, (1, 1), 1, 0, "10.0.0.3"), True)
    assert m["batch_ids_evicted"] == 9 and w.size == 5
    assert w.claim("agent", 1, (1, 1), 1, 0, "10.0.0.1") == DUPLICATE
    assert w.claim("y2", 1, (1, 1), 1, 0, "10.0.0.3") == DUPLICATE
    assert w.claim("x0", 1, (1, 1), 1, 0, "10.0.0.2") != DUPLICATE   # forgotten


# ---------------------------------------------------------------- reconfiguration

def agent_sink(node: LogicalNode):
    return node._flow.sink


def test_reconfiguring_an_agent_keeps_its_sender_its_unknown_batches_and_counters(
        tmp_path):
    """A DFO agent's batch times out at a slow c1 (its outcome unknown, spooled); the
    node is configured again with agentDFOChain(c1, c2) -- as an auto chain changes when
    collectors fail. The new sink resends the batch with the same id, to c1: written
    once (before: a new sender id, the batch written again -- 1,000 duplicates of 1,000
    lines in the review), and its counters go on from the old ones (before: ``spooled``
    0 while ``replayed`` 100)."""
    c1, p1 = slow_collector(tmp_path, "re1", 10)        # 100 events: 1 s
    c2, p2 = slow_collector(tmp_path, "re2", 0)
    memory.reset("re-src")
    agent = LogicalNode("agent", tmp_path / "agent")
    agent.configure(parse_source('memory("re-src")'),
                    parse_sink(f'agentDFOSink("127.0.0.1", {p1}, timeoutMs=300, '
                               f'checkMs=2000, maxMs=2000)'))
    memory.push("re-src", [str(i).encode() for i in range(100)])
    wait_until(lambda: agent_sink(agent).metrics.get("spooled") == 100, 10, "the timeout")
    agent.configure(parse_source('memory("re-src")'),
                    parse_sink(f'agentDFOChain("127.0.0.1:{p1}", "127.0.0.1:{p2}", '
                               f'timeoutMs=300, checkMs=50, maxMs=200)'))
    wait_until(lambda: agent_sink(agent).dfo.spool.empty, 15, "the replay")
    memory.push("re-src", [str(i).encode() for i in range(100, 110)])
    wait_until(lambda: len(set(bodies("re1") + bodies("re2"))) == 110, 10, "new events")
    m = agent_sink(agent).report()["metrics"]
    agent.stop(10)
    wait_until(lambda: len(bodies("re1")) >= 100, 5, "c1's write")
    copies = collections.Counter(bodies("re1") + bodies("re2"))
    assert max(copies.values()) == 1, copies.most_common(3)
    assert sorted(copies) == list(range(110))
    assert m["events_in"] == 110 and m["spooled"] == 100 and m["replayed"] == 100
    c1.stop(10)
    c2.stop(10)


# ---------------------------------------------------------------- the condition

def test_a_dfo_agent_spooling_because_its_collector_refuses_says_so(tmp_path):
    """While its collector is unreachable the DFO agent stays ACTIVE (it spools) but
    says why (before: no ``last_error`` at all); the condition ends once it replayed."""
    port = free_port()
    memory.reset("cond-src")
    agent = LogicalNode("agent", tmp_path / "agent")
    agent.configure(parse_source('memory("cond-src")'),
                    parse_sink(f'agentDFOSink("127.0.0.1", {port}, checkMs=50, '
                               f'maxMs=100)'))
    memory.push("cond-src", [b"1", b"2"])
    wait_until(lambda: agent.last_error, 10, "the condition")
    assert agent.state is State.ACTIVE
    assert agent.last_error.startswith("spooling: ") and str(port) in agent.last_error
    assert agent.status()["conditions"] == [agent.last_error]
    collect.reset("cond")
    c = LogicalNode("cond", tmp_path / "cond")          # comes up where the agent sends
    c.configure(parse_source(f'collectorSource({port}, bind="127.0.0.1")'),
                parse_sink('collect("cond")'))
    wait_until(lambda: agent.last_error is None, 10, "the condition to end")
    assert bodies("cond") == [1, 2] and agent.state is State.ACTIVE
    agent.stop(10)
    c.stop(10)


# ---------------------------------------------------------------- parking, unit level

class HangsOn(Sink):
    """An inner sink whose calls of the batches in ``hung`` (their encoded bytes) get no
    answer (DeliveryUnknown); every other batch is taken."""

    def __init__(self):
        super().__init__()
        self.timeout = 0.05
        self.hung: set[bytes] = set()
        self.got: list[bytes] = []

    def append_encoded(self, data: bytes, count: int, lane: int = 0,
                       timeout: float | None = None, resend: bool = False) -> None:
        if data in self.hung:
            raise DeliveryUnknown("no answer")
        self.got.append(data)


def test_a_parked_batch_lets_the_spool_behind_it_go_even_among_equal_batches(make_ctx):
    """The batch whose outcome is unknown is moved to the end of the spool; the batches
    behind it are replayed past it, and new ones go straight through; two batches of the
    same bytes (one parked) do not make the replay go round for ever (before: every
    batch waited behind the first)."""
    inner = HangsOn()
    dfo = DiskFailoverDecorator(inner, maxMs=20, checkMs=10)
    dfo.open(make_ctx("agent"))
    stuck, twice, later = numbered(0, 5), numbered(5, 5), numbered(10, 5)
    inner.hung = {encode_events(stuck), encode_events(twice)}
    dfo.append(stuck)                             # unknown: parked
    dfo.append(twice)                             # unknown too, parked
    inner.hung = {encode_events(stuck)}
    dfo.append(twice)                             # the same bytes again: taken at once
    dfo.append(later)
    assert inner.got == [encode_events(twice), encode_events(later)]
    wait_until(lambda: inner.got.count(encode_events(twice)) == 2, 5, "the parked twin")
    assert dfo.spool.pending_records == 1         # the stuck one, waiting alone
    inner.hung = set()
    wait_until(lambda: dfo.spool.empty, 5, "the stuck one")
    dfo.close()
    assert inner.got.count(encode_events(stuck)) == 1 and len(inner.got) == 4


def test_an_unknown_batch_stops_waiting_for_a_collector_that_refuses_connections(
        make_ctx, tmp_path):
    """The collector that left the batch's call unanswered dies (nothing listens on its
    port any more): its window died with it, so the batch goes to the next collector at
    once (before: it waited for the dead one for the whole pin)."""
    p1, out1 = free_port(), tmp_path / "c1.txt"
    c1 = collector_process(tmp_path, p1, 0, out1)
    c2, p2 = slow_collector(tmp_path, "dead2", 0)
    try:
        wait_until(lambda: listening(p1), 15, "c1 to listen", ignore=(OSError,))
        os.kill(c1.pid, signal.SIGSTOP)
        agent = opened(f'agentDFOChain("127.0.0.1:{p1}", "127.0.0.1:{p2}", timeoutMs=500, '
                       f'checkMs=50, maxMs=200)', make_ctx("agent"))
        agent.append(numbered(0, 10))                   # to c1: no answer
        assert agent.metrics["spooled"] == 10
        c1.kill()
        c1.wait(10)
        wait_until(lambda: bodies("dead2") == list(range(10)), 5, "the batch at c2")
        agent.close()
    finally:
        if c1.poll() is None:
            c1.kill()
            c1.wait(10)
        c2.stop(10)
