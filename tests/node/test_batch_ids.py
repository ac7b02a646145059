"""Batch ids and deadlines on the RPC (issue 11 items 3 and 4): a collector slower than
the sender's timeout, over real sockets -- a resent batch is not written twice, work whose
caller gave up is dropped and counted, DFO's replay adapts, BE counts ``unknown`` apart
from ``dropped`` and probes a collector before dropping a backlog."""
from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from node.codec import encode_events
from node.errors import DeliveryUnknown
from node.event import Event
from node.logical_node import LogicalNode
from node.builder import build_sink
from node.rpc import BatchId, RpcClient, Status
from node.rpc_window import BUSY, CONFLICT, DUPLICATE, BatchWindow
from node.sinks import collect
from node.spec import parse_sink, parse_source
from tests.conftest import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


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
    node, port = slow_collector(tmp_path, "deadline", 10)     # 100 events: 1 s
    first, second = RpcClient("127.0.0.1", port, 5), RpcClient("127.0.0.1", port, 0.3)
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
    t.join(10)
    assert done == [(Status.OK, "")]
    assert bodies("deadline") == list(range(100))             # the expired one is gone
    assert second.append_payload(payload, 3, BatchId("a", 2), timeout=5) == (Status.OK, "")
    assert bodies("deadline") == list(range(103))
    first.close()
    second.close()
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
