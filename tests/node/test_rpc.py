"""The RPC transport over real sockets on 127.0.0.1: rpcSink -> rpcSource / collectorSource,
RpcClient and RpcServer, backpressure and failures."""
from __future__ import annotations

import socket
import threading
import time
import zlib

import pytest

from flume_og.node.codec import encode_events
from flume_og.node.errors import SinkError, SourceError
from flume_og.node.event import Event, Priority
from flume_og.node.builder import build_sink, build_source
from flume_og.node.rpc import (RpcClient, RpcServer, Status, decode_payload, encode_payload, idl,
                               idl_path, result)
from flume_og.node.spec import parse_sink, parse_source
from tests.waiting import wait_until as wait_for

pytestmark = pytest.mark.timeout(60)




class Drain:
    """Plays the logical node's driver for a source: next_batch, 'append', checkpoint."""

    def __init__(self, src, delay_start: float = 0.0):
        self.src = src
        self.events: list[Event] = []
        self.checkpoints: list[dict] = []
        self.stop = threading.Event()
        self.go = threading.Event()
        if delay_start == 0:
            self.go.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.go.wait()
        while not self.stop.is_set():
            batch = self.src.next_batch(0.05)
            if batch is None:
                return
            if batch:
                self.events.extend(batch)
                cp = self.src.checkpoint()
                if cp:
                    self.checkpoints.append(cp)

    def wait(self, n: int, deadline: float = 10.0) -> list[Event]:
        wait_for(lambda: len(self.events) >= n, deadline, f"{n} events")
        return self.events

    def close(self):
        self.stop.set()
        self.go.set()
        self.thread.join(5)


def every_field_events() -> list[Event]:
    out = []
    for i, prio in enumerate(Priority):
        out.append(Event(f"body {i} \u00e9".encode() + bytes(range(256)),
                         1_600_000_000_000 + i, 2**62 + i, prio, f"h\u00f6st-{i}",
                         {"a": b"\x00\xff", "empty": b"", f"k{i}": b"v" * i}))
    out.append(Event(b"", 0, 0, Priority.TRACE, "", {}))
    return out


@pytest.fixture
def rpc_source(ctx):
    src = build_source(parse_source('rpcSource(0, bind="127.0.0.1")'))
    src.open(ctx)
    yield src
    src.close()


def opened_sink(text, ctx):
    s = build_sink(parse_sink(text))
    s.open(ctx)
    return s


def test_idl_is_the_repository_file():
    assert idl_path().name == "flume.thrift" and idl_path().is_file()
    m = idl()
    assert m.__name__ == "flume_thrift"
    assert m.Status.RETRY == Status.RETRY and m.Status.FAILED == Status.FAILED
    assert idl() is m


@pytest.mark.parametrize("packed", [True, False])
def test_round_trip_keeps_every_field(ctx, rpc_source, packed):
    drain = Drain(rpc_source)
    sink = opened_sink(f'rpcSink("127.0.0.1", {rpc_source.port}, '
                       f'packed={"true" if packed else "false"})', ctx)
    sent = every_field_events()
    sink.append(sent)
    sink.append(sent[:2])
    got = drain.wait(len(sent) + 2)
    assert got == sent + sent[:2]
    assert sink.metrics["events_out"] == len(sent) + 2
    assert sink.metrics["bytes_out"] > 0
    assert rpc_source.metrics["events_in"] == len(sent) + 2
    sink.close()
    drain.close()


def test_ok_means_the_flow_appended_the_events(ctx, rpc_source):
    """append returns only after the consumer took the batch and came back for more."""
    sink = opened_sink(f'rpcSink("127.0.0.1", {rpc_source.port})', ctx)
    done = threading.Event()
    t = threading.Thread(target=lambda: (sink.append([Event(b"x")]), done.set()))
    t.start()
    batch = wait_for(lambda: rpc_source.next_batch(0.05), 5, "the batch", interval=0)
    assert batch[0].body == b"x"
    # real time: the answer waits on the source's checkpoint, no clock is involved
    assert not done.wait(0.2), "answered before the flow appended the batch"
    rpc_source.checkpoint()           # what the driver does after appending
    assert done.wait(5)
    t.join()
    sink.close()


def test_compressed_payload_round_trip(rpc_source):
    drain = Drain(rpc_source)
    client = RpcClient("127.0.0.1", rpc_source.port, 5)
    sent = every_field_events()
    assert client.append_packed(sent, compress=True) == (Status.OK, "")
    assert drain.wait(len(sent)) == sent
    assert decode_payload(encode_payload(sent, True)) == sent
    client.close()
    drain.close()


def test_bad_payloads_are_failed_and_nothing_is_queued(rpc_source):
    client = RpcClient("127.0.0.1", rpc_source.port, 5)
    status, message = client.append_payload(b"garbage", 1)
    assert status == Status.FAILED and "bad payload" in message
    status, message = client.append_payload(encode_events([Event(b"a")]), 2)
    assert status == Status.FAILED and "1 events" in message
    # the connection is still usable
    drain = Drain(rpc_source)
    assert client.append_packed([Event(b"ok")])[0] == Status.OK
    assert [e.body for e in drain.wait(1)] == [b"ok"]
    assert rpc_source.metrics["failed"] == 2
    client.close()
    drain.close()


def test_retry_when_nobody_takes_the_events_then_sinkerror(ctx):
    src = build_source(parse_source('rpcSource(0, bind="127.0.0.1", timeoutMs=100)'))
    src.open(ctx)
    sink = opened_sink(f'rpcSink("127.0.0.1", {src.port})', ctx)
    sink.retry_limit = 2
    start = time.monotonic()
    with pytest.raises(SinkError, match="busy"):
        sink.append([Event(b"refused")])
    assert time.monotonic() - start < 5
    assert sink.metrics["retries"] == 3          # the first answer and two resends
    assert sink.metrics["errors"] == 1
    assert src.metrics["refused"] == 3
    # every refused attempt was withdrawn: a consumer now sees only what comes next
    drain = Drain(src)
    sink.append([Event(b"accepted")])
    drain.wait(1)
    assert [e.body for e in drain.events] == [b"accepted"]
    assert len(src._queue) == 0       # a refused batch left behind would be queued
    sink.close()
    drain.close()
    src.close()


def test_backpressure_slow_consumer_delivers_everything_once(ctx):
    src = build_source(parse_source('rpcSource(0, bind="127.0.0.1", timeoutMs=100)'))
    src.open(ctx)
    drain = Drain(src, delay_start=1)
    sink = opened_sink(f'rpcSink("127.0.0.1", {src.port})', ctx)
    threading.Timer(0.4, drain.go.set).start()
    sink.append([Event(str(i).encode()) for i in range(100)])
    assert sink.metrics["retries"] >= 1
    got = drain.wait(100)
    assert len(src._queue) == 0       # no second copy waits behind them
    assert [int(e.body) for e in got] == list(range(100))
    sink.close()
    drain.close()
    src.close()


def test_server_stop_gives_sinkerror_and_next_call_reconnects(ctx):
    src = build_source(parse_source('rpcSource(0, bind="127.0.0.1")'))
    src.open(ctx)
    port = src.port
    drain = Drain(src)
    sink = opened_sink(f'rpcSink("127.0.0.1", {port})', ctx)
    sink.append([Event(b"1")])
    drain.wait(1)
    start = time.monotonic()
    src.close()
    drain.close()
    assert time.monotonic() - start < 2, "stop is not prompt with a connected client"
    with pytest.raises(SinkError):
        sink.append([Event(b"lost")])
    with pytest.raises(SinkError):
        sink.append([Event(b"lost")])      # still down: connection refused
    src2 = build_source(parse_source(f'rpcSource({port}, bind="127.0.0.1")'))
    src2.open(ctx)
    drain2 = Drain(src2)
    sink.append([Event(b"2")])
    assert [e.body for e in drain2.wait(1)] == [b"2"]
    assert sink.metrics["errors"] == 2
    sink.close()
    drain2.close()
    src2.close()


def test_open_fails_when_nobody_listens(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = build_sink(parse_sink(f'rpcSink("127.0.0.1", {port})'))
    with pytest.raises(SinkError, match="connect"):
        sink.open(ctx)
    sink.close()


def test_bind_conflict_is_a_source_error(ctx, rpc_source):
    other = build_source(parse_source(f'rpcSource({rpc_source.port}, bind="127.0.0.1")'))
    with pytest.raises(SourceError, match="cannot bind"):
        other.open(ctx)
    other.close()


def test_close_unblocks_next_batch_and_answers_waiting_calls(ctx):
    src = build_source(parse_source('collectorSource(0, bind="127.0.0.1", timeoutMs=30000)'))
    src.open(ctx)
    client = RpcClient("127.0.0.1", src.port, 10)
    answers = []
    t = threading.Thread(target=lambda: answers.append(client.append_packed([Event(b"w")])))
    t.start()
    wait_for(lambda: len(src._queue) == 1, what="queued batch")
    got = []
    nb = threading.Thread(target=lambda: got.append(src.next_batch(30)))
    start = time.monotonic()
    src.close()
    nb.start()
    nb.join(5)
    t.join(5)
    assert time.monotonic() - start < 3
    assert got == [None]
    assert answers and answers[0][0] == Status.RETRY and "closing" in answers[0][1]
    client.close()


def test_oneway_append(rpc_source):
    drain = Drain(rpc_source)
    client = RpcClient("127.0.0.1", rpc_source.port, 5)
    e = every_field_events()[1]
    client.append_one(e)
    assert drain.wait(1) == [e]
    client.close()
    drain.close()


def test_append_group_without_zookeeper_is_taken_like_packed(ctx):
    src = build_source(parse_source('collectorSource(0, bind="127.0.0.1")'))
    src.open(ctx)
    drain = Drain(src)
    client = RpcClient("127.0.0.1", src.port, 5)
    events = every_field_events()
    payload = encode_events(events)
    assert client.append_group("agent1", 1, zlib.crc32(payload), payload,
                               len(events))[0] == Status.OK
    assert drain.wait(len(events)) == events
    status, message = client.append_group("agent1", 2, zlib.crc32(payload) ^ 1, payload,
                                          len(events))
    assert status == Status.FAILED and "checksum" in message
    client.close()
    drain.close()
    src.close()


def test_checkpoint_returns_the_updates_of_returned_batches(ctx, rpc_source):
    answers = {}

    def enqueue(name, updates):
        answers[name] = rpc_source._enqueue([Event(name.encode())], updates)

    t1 = threading.Thread(target=enqueue, args=("a", {"e2e:ag:1": 1}))
    t1.start()
    wait_for(lambda: len(rpc_source._queue) == 1)
    assert rpc_source.checkpoint() == {}          # nothing returned yet
    batch = rpc_source.next_batch(1)
    assert [e.body for e in batch] == [b"a"]
    assert rpc_source.checkpoint() == {"e2e:ag:1": 1}
    assert rpc_source.checkpoint() == {}          # reported once
    t1.join(5)
    assert answers["a"] is True
    # two batches merged into one next_batch: their updates merged
    ts = [threading.Thread(target=enqueue, args=(n, {f"e2e:ag:{k}": k}))
          for n, k in (("b", 2), ("c", 3))]
    for t in ts:
        t.start()
        wait_for(lambda t=t: len(rpc_source._queue) >= ts.index(t) + 1)
    batch = rpc_source.next_batch(1)
    assert sorted(e.body for e in batch) == [b"b", b"c"]
    assert rpc_source.checkpoint() == {"e2e:ag:2": 2, "e2e:ag:3": 3}
    for t in ts:
        t.join(5)
    assert answers["b"] is True and answers["c"] is True


def test_batches_with_and_without_groups_are_never_merged(ctx, rpc_source):
    threads = []

    def enqueue(name, updates):
        t = threading.Thread(target=rpc_source._enqueue, args=([Event(name)], updates))
        threads.append(t)
        t.start()
        wait_for(lambda: len(rpc_source._queue) == len(threads))
    enqueue(b"plain-1", None)
    enqueue(b"plain-2", None)
    enqueue(b"group-1", {"e2e:ag:1": 1})
    enqueue(b"group-2", {"e2e:ag:2": 2})
    enqueue(b"plain-3", None)
    got = []
    while len(got) < 3:
        batch = rpc_source.next_batch(1)
        if batch:
            got.append(([e.body for e in batch], rpc_source._queue.last_tagged,
                        rpc_source.checkpoint()))
    assert got == [([b"plain-1", b"plain-2"], False, {}),
                   ([b"group-1", b"group-2"], True, {"e2e:ag:1": 1, "e2e:ag:2": 2}),
                   ([b"plain-3"], False, {})]
    rpc_source.next_batch(0.01)          # marks the last one done
    for t in threads:
        t.join(5)


def test_withdrawn_batch_updates_never_reported(ctx):
    src = build_source(parse_source('rpcSource(0, bind="127.0.0.1", timeoutMs=100)'))
    src.open(ctx)
    assert src._enqueue([Event(b"x")], {"e2e:ag:9": 9}) is False
    assert src.next_batch(0.05) == []
    assert src.checkpoint() == {}
    src.close()


def test_handler_exception_is_failed_and_connection_survives():
    class Handler:
        def appendPacked(self, payload, count):
            if count == 1:
                raise RuntimeError("boom")
            return result(Status.OK, "fine")

    server = RpcServer("127.0.0.1", 0, Handler())
    server.start()
    client = RpcClient("127.0.0.1", server.port, 5)
    status, message = client.append_packed([Event(b"x")])
    assert status == Status.FAILED and "boom" in message
    assert client.append_packed([Event(b"x"), Event(b"y")]) == (Status.OK, "fine")
    assert client.connects == 1
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 1
    with pytest.raises(SinkError):
        client.append_packed([Event(b"x")])
    client.close()


def test_client_timeout_is_a_sinkerror():
    """A server that accepts but never answers: the call fails after the timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = RpcClient("127.0.0.1", listener.getsockname()[1], timeout=0.3)
        start = time.monotonic()
        with pytest.raises(SinkError):
            client.append_packed([Event(b"x")])
        assert 0.25 < time.monotonic() - start < 3
        client.close()
