"""The Python client for applications: :class:`FlumeClient` sends events to an
``rpcSource`` or ``collectorSource``; :class:`FlumeLogHandler` ships ``logging`` records
through it.

``FlumeClient(host, port=35853, timeout=10.0, tls=None)``::

    with FlumeClient("agent1", 35853) as c:
        c.send([Event(b"hello")])            # or c.send_body(b"hello", attrs={...})

``tls``: an ``ssl.SSLContext`` for a receiver on a node with TLS, e.g.
``node.tls.load(cert, key, ca).client`` (the receiver's certificate is checked against the
CA and must name ``host``; the context's certificate is presented for mutual TLS).

Bodies and attribute values may be ``str`` (sent as UTF-8) or ``bytes``; any other
attribute value is sent as its JSON text. ``send_record({"user": "bob", "n": 3})`` (or
``send`` given a dict, like fluent-logger's ``emit``) sends one event whose body is the
record as compact JSON (UTF-8; values JSON cannot hold are written as their ``str``).

``send`` returns once the receiver's flow took the events (a batch over the receivers'
default bounds, ``node.rpc.SEND_BATCH_EVENTS`` events or ``SEND_BATCH_BYTES`` bytes, is
sent as several calls in order; when one fails, the earlier ones were delivered), and raises
:class:`ClientError` (a SinkError) if that did not happen within ``timeout`` seconds: a
broken connection is retried at once on a fresh one (a collector restarted since the last
call), a busy receiver (RETRY) after short pauses. Delivery is at-least-once: when a
connection breaks after the events were sent, they may arrive twice.

``FlumeLogHandler(host, port=35853, capacity=10000, timeout=0.0, ...)`` is a standard
``logging.Handler``. ``emit`` formats the record into an event and puts it in a bounded
in-memory buffer; a background thread sends the buffer in batches. ``emit`` waits at most
``timeout`` seconds for room (default 0: a record that finds the buffer full is dropped at
once and counted in ``metrics["dropped"]``), so the application is never held up by a slow
or absent receiver. While the receiver is unreachable the sender keeps the oldest records
and retries with backoff (0.1 s doubling to 5 s). ``flush()`` waits until the buffer is
sent, at most ``flush_timeout`` seconds; ``close()`` flushes the same way and stops:
it returns within ``flush_timeout`` seconds (default 5) in every case, a receiver absent or
a connection hanging included; what was not sent by then is dropped and counted in
``metrics["dropped"]``. Pass ``flush_timeout=0`` for a ``close()`` that never waits.

Each event carries: body = the formatted message (UTF-8), timestamp = the record's time,
priority from the level (CRITICAL->FATAL, ERROR, WARNING->WARN, INFO, DEBUG, below
DEBUG->TRACE), host = this machine, and attributes ``logger``, ``level``, ``thread``,
``pid``, ``file``, ``line``, ``function``, plus the handler's ``attrs`` and, when a record
has one, ``exception`` (the formatted traceback is also in the body when the formatter
adds it). Fields given with ``extra={...}`` are attributes too (``str`` as UTF-8, ``bytes``
as they are, anything else as JSON); where a name clashes with one of the fields above,
the field above is kept.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

from .backoff import Backoff, step
from .component import Metrics
from .errors import SinkError
from .event import LOCAL_HOST, Event, Priority
from .logs import details
from . import rpc
from .codec import split_events
from .rpc import DEFAULT_PORT, RpcClient, Status, idl

__all__ = ["ClientError", "FlumeClient", "FlumeLogHandler"]

BUSY_PAUSE_FIRST, BUSY_PAUSE_MAX = 0.05, 1.0     # seconds between sends a busy receiver refused
RETRY_PAUSE_FIRST, RETRY_PAUSE_MAX = 0.1, 5.0    # the log handler's, while sends fail


class ClientError(SinkError):
    """Events could not be delivered."""


def as_bytes(value) -> bytes:
    """An attribute value or body as bytes: ``str`` as UTF-8 (a lone surrogate becomes
    ``?``: what goes out is always valid UTF-8), ``bytes``-like as it is, anything else as
    its compact JSON text (``str()`` for what JSON cannot hold: a value of another type
    inside, keys that are not strings, a structure that holds itself)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):      # {(1, 2): 3}, a circular list...
        text = str(value)
    return text.encode("utf-8", "replace")


def as_attrs(attrs) -> dict[str, bytes]:
    """Attributes with ``str`` names and values converted by :func:`as_bytes`."""
    return {str(k): as_bytes(v) for k, v in (attrs or {}).items()}


class FlumeClient:
    """Sends event batches to an RPC source (see the module docstring). Thread-safe."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout: float = 10.0,
                 compress: bool = False, tls: ssl.SSLContext | None = None):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.compress = compress
        self.metrics = Metrics()
        self._rpc = RpcClient(host, port, timeout, connect_timeout=min(timeout, 5.0), tls=tls)
        idl()   # load the IDL now, not on a first send that an application may be timing
        self._lock = threading.Lock()

    def send(self, events: "list[Event] | Mapping[str, Any]") -> None:
        """Deliver ``events`` (one call, or one per piece of a batch over the receivers'
        bounds); ClientError if not done within ``timeout``. A mapping is sent as one
        JSON record (:meth:`send_record`), and so is each mapping in the list."""
        if isinstance(events, Mapping):
            self.send_record(events)
            return
        events = [Event(as_bytes(e)) if isinstance(e, Mapping) else e for e in events]
        for piece in split_events(events, rpc.SEND_BATCH_EVENTS, rpc.SEND_BATCH_BYTES):
            self._send(piece)

    def _send(self, events: list[Event]) -> None:
        if not events:
            return
        deadline = time.monotonic() + self.timeout
        delay = 0.0     # a local, not a Backoff: this runs for every call
        reconnected = False
        with self._lock:
            while True:
                was_connected = self._rpc.connected
                try:
                    status, message = self._rpc.append_packed(events, self.compress)
                except SinkError as exc:
                    self.metrics.add("errors")
                    if was_connected and not reconnected and time.monotonic() < deadline:
                        reconnected = True   # a stale connection: one immediate retry
                        continue
                    raise ClientError(f"cannot send to {self.host}:{self.port}: {exc}") \
                        from exc
                if status == Status.OK:
                    self.metrics.add("sent", len(events))
                    return
                if status != Status.RETRY:
                    self.metrics.add("errors")
                    raise ClientError(f"{self.host}:{self.port} refused the events: {message}")
                self.metrics.add("retries")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientError(f"{self.host}:{self.port} stayed busy for "
                                      f"{self.timeout} s: {message}")
                delay = step(delay, BUSY_PAUSE_FIRST, BUSY_PAUSE_MAX)
                time.sleep(min(delay, left))

    def send_body(self, body: "bytes | str | Mapping[str, Any]",
                  priority: Priority = Priority.INFO,
                  attrs: "Mapping[str, Any] | None" = None, host: str = LOCAL_HOST) -> None:
        """Send one event made of ``body`` and these fields (values converted by
        :func:`as_bytes`: a mapping body is sent as JSON)."""
        self.send([Event(as_bytes(body), priority=priority, host=host,
                         attrs=as_attrs(attrs))])

    def send_record(self, record: "Mapping[str, Any]", priority: Priority = Priority.INFO,
                    attrs: "Mapping[str, Any] | None" = None,
                    host: str = LOCAL_HOST) -> None:
        """Send ``record`` as one event whose body is its compact JSON text."""
        if not isinstance(record, Mapping):
            raise TypeError(f"a record is a mapping, not {type(record).__name__}")
        self.send_body(dict(record), priority, attrs, host)

    def close(self, timeout: float | None = None) -> None:
        """Close the connection; a send in progress fails at once. A connect in progress
        is waited for at most ``timeout`` seconds (None: until it ends)."""
        self._rpc.close(timeout)

    def __enter__(self) -> "FlumeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def level_priority(levelno: int) -> Priority:
    """The event priority of a ``logging`` level."""
    if levelno >= logging.CRITICAL:
        return Priority.FATAL
    if levelno >= logging.ERROR:
        return Priority.ERROR
    if levelno >= logging.WARNING:
        return Priority.WARN
    if levelno >= logging.INFO:
        return Priority.INFO
    if levelno >= logging.DEBUG:
        return Priority.DEBUG
    return Priority.TRACE


class FlumeLogHandler(logging.Handler):
    """A ``logging.Handler`` shipping records to an RPC source (see the module docstring).
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, *, capacity: int = 10_000,
                 timeout: float = 0.0, batch_size: int = 500, flush_timeout: float = 5.0,
                 send_timeout: float = 10.0, attrs: dict[str, str | bytes] | None = None,
                 level: int = logging.NOTSET, tls: ssl.SSLContext | None = None):
        super().__init__(level)
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be at least 1")
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        self.capacity = capacity
        self.timeout = timeout
        self.batch_size = batch_size
        self.flush_timeout = flush_timeout
        self.attrs = as_attrs(attrs)
        self.metrics = Metrics()
        self.client = FlumeClient(host, port, send_timeout, tls=tls)
        self._buf: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition()
        self._inflight = 0
        self._closing = False
        self._pid = str(os.getpid()).encode()
        self._sender = threading.Thread(target=self._run, name="flume-log-sender",
                                        daemon=True)
        self._sender.start()

    # -------------------------------------------------------------- application side

    def _event(self, record: logging.LogRecord) -> Event:
        attrs = dict(self.attrs)
        attrs.update(as_attrs(details(record)))      # the record's extra= fields
        attrs.update({
            "logger": record.name.encode(),
            "level": record.levelname.encode(),
            "thread": (record.threadName or "").encode(),
            "pid": self._pid,
            "file": (record.pathname or "").encode(),
            "line": str(record.lineno).encode(),
            "function": (record.funcName or "").encode(),
        })
        if record.exc_info and record.exc_info[0] is not None:
            attrs["exception"] = record.exc_info[0].__name__.encode()
        return Event(self.format(record).encode("utf-8", "replace"),
                     int(record.created * 1000), None, level_priority(record.levelno),
                     LOCAL_HOST, attrs)

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._sender:
            return   # the sender's own logging (connection errors...) must not loop back
        try:
            event = self._event(record)
        except Exception:
            self.handleError(record)
            return
        with self._cond:
            if len(self._buf) >= self.capacity and self.timeout > 0 and not self._closing:
                deadline = time.monotonic() + self.timeout
                while len(self._buf) >= self.capacity and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            if len(self._buf) >= self.capacity or self._closing:
                self.metrics.add("dropped")
                return
            self._buf.append(event)
            self.metrics.add("emitted")
            if len(self._buf) == 1 or len(self._buf) >= self.batch_size:
                self._cond.notify_all()

    def flush(self, deadline: float | None = None) -> None:
        """Wait until everything buffered is sent, at most ``flush_timeout`` seconds (or
        until the ``time.monotonic()`` ``deadline``)."""
        if deadline is None:
            deadline = time.monotonic() + self.flush_timeout
        with self._cond:
            self._cond.notify_all()
            while (self._buf or self._inflight) and self._sender.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, 0.1))

    def close(self) -> None:
        """Flush, stop the sender, close the connection: all within ``flush_timeout``
        seconds; what is left unsent is dropped and counted."""
        if not self._closing:
            deadline = time.monotonic() + self.flush_timeout
            self.flush(deadline)
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            # interrupts a send in progress; a hanging connect is left to end by itself
            self.client.close(max(0.0, deadline - time.monotonic()))
            self._sender.join(max(0.0, deadline - time.monotonic()))
            with self._cond:
                if self._buf:
                    self.metrics.add("dropped", len(self._buf))
                    self._buf.clear()
        super().close()

    # -------------------------------------------------------------- sender thread

    def _run(self) -> None:
        backoff = Backoff(RETRY_PAUSE_FIRST, RETRY_PAUSE_MAX)
        while True:
            with self._cond:
                while not self._buf and not self._closing:
                    self._cond.wait(1.0)
                if self._closing:
                    return
                n = min(len(self._buf), self.batch_size)
                batch = [self._buf[i] for i in range(n)]
                self._inflight = n
            try:
                self.client.send(batch)
            except Exception:
                self.metrics.add("errors")
                end = time.monotonic() + backoff.next_delay()
                with self._cond:
                    self._inflight = 0
                    self._cond.notify_all()
                    while not self._closing:   # only close() cuts the pause short
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                continue
            backoff.reset()
            with self._cond:
                for _ in range(n):
                    self._buf.popleft()
                self._inflight = 0
                self.metrics.add("sent", n)
                self._cond.notify_all()
