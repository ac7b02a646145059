"""FlumeClient and FlumeLogHandler against a real rpcSource on 127.0.0.1."""
from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from flume_og.node.client import ClientError, FlumeClient, FlumeLogHandler, level_priority
from flume_og.node.event import Event, Priority
from flume_og.node.builder import build_source
from flume_og.node.spec import parse_source
from tests.node.test_agent_modes import free_port
from tests.node.test_rpc import Drain, every_field_events, wait_for

pytestmark = pytest.mark.timeout(60)


class Receiver:
    def __init__(self, ctx, port: int = 0, timeout_ms: int = 5000, drain: bool = True):
        self.ctx = ctx
        self.port = port or free_port()
        self.timeout_ms = timeout_ms
        self.events: list[Event] = []
        self.src = self.drain = None
        self.start(drain)

    def start(self, drain: bool = True):
        self.src = build_source(parse_source(
            f'rpcSource({self.port}, bind="127.0.0.1", timeoutMs={self.timeout_ms})'))
        self.src.open(self.ctx)
        self.drain = Drain(self.src) if drain else None

    def stop(self):
        self.src.close()
        if self.drain:
            self.drain.close()
            self.events.extend(self.drain.events)
        self.drain = None

    def all(self) -> list[Event]:
        return self.events + (self.drain.events if self.drain else [])


@pytest.fixture
def receiver(ctx):
    r = Receiver(ctx)
    yield r
    r.stop()


def test_client_sends_events_with_every_field(receiver):
    with FlumeClient("127.0.0.1", receiver.port, timeout=5) as c:
        sent = every_field_events()
        c.send(sent)
        c.send_body("hello", Priority.WARN, {"k": b"v"}, host="h1")
        assert c.metrics["sent"] == len(sent) + 1
    got = receiver.drain.wait(len(sent) + 1)
    assert got[:-1] == sent
    last = got[-1]
    assert (last.body, last.priority, last.attrs, last.host) == (b"hello", Priority.WARN,
                                                                 {"k": b"v"}, "h1")


def test_client_reconnects_after_the_receiver_restarts(receiver):
    c = FlumeClient("127.0.0.1", receiver.port, timeout=5)
    c.send([Event(b"1")])
    receiver.drain.wait(1)
    receiver.stop()
    receiver.start()
    c.send([Event(b"2")])              # the stale connection is replaced in the same call
    assert [e.body for e in receiver.all()] == [b"1", b"2"]
    c.close()


def test_client_error_when_nobody_listens():
    c = FlumeClient("127.0.0.1", free_port(), timeout=1)
    start = time.monotonic()
    with pytest.raises(ClientError, match="cannot send"):
        c.send([Event(b"x")])
    assert time.monotonic() - start < 2
    c.close()


def test_client_gives_up_on_a_busy_receiver_after_its_timeout(ctx):
    r = Receiver(ctx, timeout_ms=100, drain=False)   # nobody takes the events
    c = FlumeClient("127.0.0.1", r.port, timeout=0.6)
    start = time.monotonic()
    with pytest.raises(ClientError, match="busy"):
        c.send([Event(b"x")])
    assert 0.5 < time.monotonic() - start < 2
    assert c.metrics["retries"] >= 2
    c.close()
    r.stop()


def make_logger(name: str, handler) -> logging.Logger:
    logger = logging.getLogger(f"test.client.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_log_handler_ships_records(receiver):
    h = FlumeLogHandler("127.0.0.1", receiver.port, attrs={"app": "shop"})
    h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = make_logger("ship", h)
    log.info("hello %s", "world")
    log.warning("careful")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    log.critical("down")
    h.flush()
    got = receiver.drain.wait(4)
    assert [e.body.split(b"\n")[0] for e in got] == [
        b"INFO hello world", b"WARNING careful", b"ERROR failed", b"CRITICAL down"]
    assert [e.priority for e in got] == [Priority.INFO, Priority.WARN, Priority.ERROR,
                                         Priority.FATAL]
    assert got[0].attrs["logger"] == b"test.client.ship"
    assert got[0].attrs["app"] == b"shop"
    assert got[0].attrs["level"] == b"INFO"
    assert int(got[0].attrs["line"]) > 0
    assert got[2].attrs["exception"] == b"ValueError"
    assert b"Traceback" in got[2].body
    assert abs(got[0].timestamp - time.time() * 1000) < 60_000
    h.close()
    assert h.metrics["sent"] == 4 and h.metrics.get("dropped", 0) == 0


def test_level_mapping():
    assert level_priority(5) == Priority.TRACE
    assert level_priority(logging.DEBUG) == Priority.DEBUG
    assert level_priority(logging.INFO + 5) == Priority.INFO


def test_log_handler_never_blocks_when_the_collector_is_gone():
    h = FlumeLogHandler("127.0.0.1", free_port(), capacity=50, flush_timeout=0.5)
    log = make_logger("gone", h)
    worst = 0.0
    start = time.monotonic()
    for i in range(2000):
        t = time.monotonic()
        log.error("record %d", i)
        worst = max(worst, time.monotonic() - t)
    assert time.monotonic() - start < 2
    # no waiting on the network (connect timeouts are seconds); only thread scheduling
    assert worst < 0.25
    assert h.metrics["dropped"] >= 2000 - 50
    assert h.metrics["emitted"] + h.metrics["dropped"] == 2000
    t = time.monotonic()
    h.close()                                    # bounded by flush_timeout
    assert time.monotonic() - t < 2


def test_log_handler_waits_at_most_its_timeout_for_room():
    h = FlumeLogHandler("127.0.0.1", free_port(), capacity=5, timeout=0.2,
                        flush_timeout=0.2)
    log = make_logger("wait", h)
    for i in range(5):
        log.info("fill %d", i)
    t = time.monotonic()
    log.info("one too many")
    took = time.monotonic() - t
    assert 0.15 < took < 1.0
    assert h.metrics["dropped"] == 1
    h.close()


def test_log_handler_delivers_its_buffer_once_the_collector_is_back(ctx):
    port = free_port()
    h = FlumeLogHandler("127.0.0.1", port, capacity=1000)
    log = make_logger("back", h)
    for i in range(100):
        log.info("early %d", i)
    wait_for(lambda: h.metrics.get("errors", 0) >= 1, 10, "the sender failing")
    r = Receiver(ctx, port=port)
    wait_for(lambda: len(r.all()) == 100, 15, "the buffered records")
    log.info("late")
    h.flush()
    wait_for(lambda: len(r.all()) == 101)
    assert [e.body for e in r.all()] == [f"early {i}".encode() for i in range(100)] + [b"late"]
    h.close()
    r.stop()


def test_client_takes_str_values_and_json_records(receiver):
    with FlumeClient("127.0.0.1", receiver.port, timeout=5) as c:
        c.send_body("x", attrs={"service": "billing", "raw": b"\xff", "n": 3,
                                "tags": ["a", "é"]})
        c.send_record({"user": "bob", "n": 3, "ok": True}, attrs={"src": "app"})
        c.send({"event": "login"})                      # like fluent-logger's emit
        c.send_body({"nested": {"k": None}})
        with pytest.raises(TypeError, match="a record is a mapping"):
            c.send_record(["not", "a", "mapping"])
    got = receiver.drain.wait(4)
    assert got[0].body == b"x"
    assert got[0].attrs["service"] == b"billing" and got[0].attrs["raw"] == b"\xff"
    assert got[0].attrs["n"] == b"3" and got[0].attrs["tags"] == '["a","é"]'.encode()
    assert json.loads(got[1].body) == {"user": "bob", "n": 3, "ok": True}
    assert got[1].attrs["src"] == b"app"
    assert json.loads(got[2].body) == {"event": "login"}
    assert json.loads(got[3].body) == {"nested": {"k": None}}


def test_log_handler_sends_extra_fields_as_attributes(receiver):
    h = FlumeLogHandler("127.0.0.1", receiver.port)
    log = make_logger("extra", h)
    log.info("paid", extra={"user": "bob", "amount": 12.5, "items": [1, 2],
                            "blob": b"\x00\x01", "level": "not the level"})
    h.flush()
    got = receiver.drain.wait(1)[0]
    assert got.attrs["user"] == b"bob"
    assert got.attrs["amount"] == b"12.5" and got.attrs["items"] == b"[1,2]"
    assert got.attrs["blob"] == b"\x00\x01"
    assert got.attrs["level"] == b"INFO"          # the record's own field wins
    assert "msg" not in got.attrs and "args" not in got.attrs
    h.close()


def test_log_handler_close_is_bounded_while_a_connect_hangs():
    """A receiver whose accept backlog is full leaves connects hanging (no SYN answer):
    close() still returns within flush_timeout and counts what it could not send."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        h = FlumeLogHandler("127.0.0.1", port, flush_timeout=1.0, send_timeout=30)
        log = make_logger("hang", h)
        log.warning("stuck")
        wait_for(lambda: h.metrics.get("emitted") == 1)
        t = time.monotonic()
        h.close()
        assert time.monotonic() - t < 2.0
        assert h.metrics["dropped"] == 1
    finally:
        for s in fillers:
            s.close()
        srv.close()


def test_values_json_cannot_hold_and_lists_of_records(receiver):
    loop = []
    loop.append(loop)
    with FlumeClient("127.0.0.1", receiver.port, timeout=5) as c:
        c.send_body("x", attrs={"odd": {(1, 2): 3}, "loop": loop, "lone": "a\ud800b"})
        c.send([{"a": 1}, {"b": 2}])
    got = receiver.drain.wait(3)
    assert got[0].attrs["odd"] == b"{(1, 2): 3}" and got[0].attrs["loop"] == b"[[...]]"
    assert got[0].attrs["lone"] == b"a?b"
    assert [json.loads(e.body) for e in got[1:]] == [{"a": 1}, {"b": 2}]


def test_log_handler_keeps_a_record_whose_extra_json_cannot_hold(receiver):
    h = FlumeLogHandler("127.0.0.1", receiver.port)
    log = make_logger("odd", h)
    log.info("kept", extra={"d": {(1, 2): 3}})
    h.flush()
    got = receiver.drain.wait(1)[0]
    assert got.body == b"kept" and got.attrs["d"] == b"{(1, 2): 3}"
    h.close()
