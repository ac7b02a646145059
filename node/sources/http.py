"""``httpSource(port)``: events POSTed over HTTP, acknowledged only once accepted.

A POST with ``Content-Type: application/json`` carries ``[{"headers": {...}, "body":
"..."}, ...]``: ``body`` (a string) becomes the UTF-8 body; the headers ``timestamp`` (ms),
``host`` and ``priority`` (a name such as ``"WARN"`` or its number) set those fields, and
every other header becomes an attribute (its value as UTF-8 bytes). Any other content type
is raw text: an event per LF-terminated line.

The answer is ``200 {"accepted": n}`` only after the whole request's events were taken by
the source's consumer (the driver's ``next_batch``); if that does not happen within
``timeoutMs`` the events are withdrawn and the answer is ``503``, so a client that retries
never duplicates. A request is taken whole or not at all. Every refusal answers
``{"error": sentence, "reason": word}`` and is counted as ``refused_<reason>``:

* ``411`` (``no_length``) without a Content-Length, chunked bodies included;
* ``400`` (``framing``) for anything a proxy in front could read as another request's
  end (request smuggling): a ``Transfer-Encoding`` with a Content-Length, any
  ``Transfer-Encoding`` other than ``chunked``, two Content-Length headers, a length that
  is not plain ASCII digits (``1_0``, ``+5``, ``٣``). The connection is closed after
  these answers;
* ``400`` (``malformed``) for bad JSON, a JSON document nested deeper than the event
  format allows (4 levels) or a bad event;
* ``413`` (``request_bytes``) for a body over ``maxRequestBytes`` (4 MiB), answered from
  the Content-Length before the body is read (the body is then read and discarded for at
  most 2 s, so the client sees the answer, never more than a fixed buffer in memory);
  ``413`` (``request_events``) for more than ``maxRequestEvents`` (10,000) events and
  (``event_bytes``) for an event body over ``maxEventBytes`` (32 KiB);
* ``503`` (``queue_full``, counted per event) when the flow did not take the events within
  ``timeoutMs``;
* connections: at most ``maxConnections`` (64) open at once and ``maxConnectionsPerPeer``
  (8) from one address. Past either bound the connection that has waited longest for a
  request head (line and headers unfinished, or idle between two requests) -- of the same
  address for the per-address bound -- is closed to make room (``evicted``); a connection
  whose head is complete is never closed so. When none waits for a head, the newcomer is
  answered ``503`` and closed (``connections``, ``peer_connections``). So slow heads, from
  one address or a few, never shut out other senders;
* a connection that does not deliver a request's line and headers within
  ``headerTimeoutMs`` (10 s), or a whole request (line, headers and body) within
  ``requestTimeoutMs`` (30 s), of connecting or of its previous answer is closed
  (``header_timeout``, ``timeout``): slow senders cannot hold connections forever.

Why JSON cannot amplify: before ``json.loads``, a linear scan of the raw text (strings
blanked by one regular expression, then three passes removing innermost brackets) refuses
documents nested deeper than 4 levels and counts the containers (at most two per event),
so the parser never recurses deeper than 4 -- whatever ``sys.getrecursionlimit()`` is --
and never builds more than about ``2 * maxRequestEvents`` containers. Requests are parsed
one at a time (parsing holds the GIL anyway), so memory stays under ``maxConnections *
maxRequestBytes`` for bodies, one parse, and ``maxQueueBytes`` (64 MiB) for the queue.

Plain HTTP (no TLS yet): ``bind`` "" (the default) is 127.0.0.1, and beyond loopback
needs the node's ``--plaintext-events`` (:mod:`node.tls`); ``port=0`` picks a free port,
readable as ``self.port`` after ``open``. Standard library only.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import SourceError
from ..event import LOCAL_HOST, Event, Priority, events_from_lines
from ..http_thread import HttpServerThread
from ..limits import ConnectionSlots, RateLimitedLog
from ..registry import Positive, source
from ._batchqueue import DEFAULT_MAX_BYTES
from ._net import DEFAULT_MAX_EVENT_BYTES, Port, ServerSource

log = logging.getLogger(__name__)

QUEUE_EVENTS = 10_000
RESERVED = ("timestamp", "host", "priority")
# array of events > event object > headers object, and one more level so that a bad header
# value ({"a": [1]}) is reported as such
MAX_DEPTH = 4
DRAIN_SECONDS = 2.0      # how long a refused body is read and discarded
DEFAULT_MAX_REQUEST_BYTES = 4 << 20
DEFAULT_MAX_REQUEST_EVENTS = 10_000
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_MAX_CONNECTIONS_PER_PEER = 8    # a client posts a request at a time, a few at most
DEFAULT_HEADER_TIMEOUT_MS = 10_000
DEFAULT_REQUEST_TIMEOUT_MS = 30_000

# a JSON string, or an unterminated one up to the end (linear: no backtracking)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_INNERMOST = re.compile(rb"[\[{][^\[\]{}]*[\]}]")


class BadRequest(ValueError):
    """The request's content is wrong (answered 400, or ``status``)."""

    status = 400
    reason = "malformed"


class TooLarge(BadRequest):
    """The request is over a bound (answered 413); ``reason`` names the bound."""

    status = 413

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class LengthRequired(BadRequest):
    """The request has no Content-Length (answered 411)."""

    status = 411
    reason = "no_length"


class BadFraming(BadRequest):
    """The headers do not say plainly where the body ends (answered 400)."""

    reason = "framing"


def content_length(headers) -> int:
    """The body's length: exactly one Content-Length of ASCII digits (optional spaces or
    tabs around them) and no Transfer-Encoding; otherwise LengthRequired or BadFraming
    (or TooLarge past 18 digits).
    ``headers`` is an ``email.message.Message`` (what ``http.server`` parses)."""
    lengths = headers.get_all("Content-Length") or []
    codings = headers.get_all("Transfer-Encoding") or []
    if codings:
        if lengths:
            raise BadFraming("Transfer-Encoding together with Content-Length: where the "
                             "body ends is ambiguous")
        if [c.strip(" \t").lower() for c in codings] == ["chunked"]:
            raise LengthRequired("Content-Length is required: chunked bodies are not "
                                 "supported")
        raise BadFraming(f"Transfer-Encoding {', '.join(codings)[:60]!r} is not supported; "
                         f"send a Content-Length")
    if not lengths:
        raise LengthRequired("Content-Length is required")
    if len(lengths) > 1:
        raise BadFraming(f"Content-Length given {len(lengths)} times")
    value = lengths[0].strip(" \t")
    # int() would also take "1_0", "+5", "\f5" and other scripts' digits ("٣")
    if not (value.isascii() and value.isdigit()):
        raise BadFraming(f"bad Content-Length {value[:40]!r}: expected ASCII digits")
    digits = value.lstrip("0")
    if len(digits) > 18:      # int() would refuse past 4,300 digits, and no bound is near
        raise TooLarge("request_bytes", f"a Content-Length of {len(digits)} digits is "
                       f"over any bound")
    return int(digits or "0")


def check_json_shape(data: bytes, max_events: int) -> None:
    """Refuse, before parsing, a JSON text nested deeper than ``MAX_DEPTH`` (BadRequest)
    or holding more containers than ``max_events`` events can (TooLarge)."""
    bare = _STRING.sub(b'""', data)
    opened = bare.count(b"[") + bare.count(b"{")
    if opened != bare.count(b"]") + bare.count(b"}"):
        raise BadRequest("bad JSON: brackets or braces do not balance")
    for _ in range(MAX_DEPTH):
        bare = _INNERMOST.sub(b"0", bare)
    if b"[" in bare or b"{" in bare:
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels: expected "
                         f'[{{"headers": {{...}}, "body": "..."}}, ...]')
    if opened > 2 * max_events + 1:
        raise TooLarge("request_events", f"more than {max_events} events in one request")


def _attr_value(i: int, key: str, v) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v).encode()
    raise BadRequest(f"event {i}: header {key!r} must be a string or a number, "
                     f"got {type(v).__name__}")


def events_from_json(data: bytes, now_ms: int, max_events: int = DEFAULT_MAX_REQUEST_EVENTS,
                     max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[Event]:
    """Parse ``[{"headers": {...}, "body": "..."}, ...]``; BadRequest (or TooLarge, past
    ``max_events`` events or a body over ``max_event_bytes``) names what is wrong."""
    check_json_shape(data, max_events)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"bad JSON: {exc}") from None
    if not isinstance(doc, list):
        raise BadRequest(f"expected a JSON array of events, got {type(doc).__name__}")
    if len(doc) > max_events:
        raise TooLarge("request_events", f"{len(doc)} events in one request, over "
                       f"maxRequestEvents={max_events}")
    base = time.monotonic_ns()
    events = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise BadRequest(f"event {i}: expected an object, got {type(item).__name__}")
        body = item.get("body", "")
        if not isinstance(body, str):
            raise BadRequest(f"event {i}: body must be a string, got {type(body).__name__}")
        body = body.encode()
        if len(body) > max_event_bytes:
            raise TooLarge("event_bytes", f"event {i}: body of {len(body)} bytes, over "
                           f"maxEventBytes={max_event_bytes}")
        headers = item.get("headers") or {}
        if not isinstance(headers, dict):
            raise BadRequest(f"event {i}: headers must be an object, "
                             f"got {type(headers).__name__}")
        ts, host, prio = now_ms, LOCAL_HOST, Priority.INFO
        if "timestamp" in headers:
            v = headers["timestamp"]
            try:
                ts = int(v)
                if isinstance(v, bool):
                    raise ValueError
            except (TypeError, ValueError):
                raise BadRequest(f"event {i}: timestamp must be ms since the epoch, "
                                 f"got {v!r}") from None
        if "host" in headers:
            host = headers["host"]
            if not isinstance(host, str):
                raise BadRequest(f"event {i}: host must be a string, got {host!r}")
        if "priority" in headers:
            v = headers["priority"]
            try:
                prio = Priority.parse(v)
            except (KeyError, ValueError, AttributeError):
                raise BadRequest(f"event {i}: unknown priority {v!r}; use one of "
                                 f"{', '.join(p.name for p in Priority)}") from None
        attrs = {k: _attr_value(i, k, v) for k, v in headers.items() if k not in RESERVED}
        events.append(Event(body, ts, base + i, prio, host, attrs))
    return events


def events_from_text(data: bytes, max_events: int = DEFAULT_MAX_REQUEST_EVENTS,
                     max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[Event]:
    """An event per LF-terminated line (and one for an unterminated last line); TooLarge
    past ``max_events`` lines (counted before splitting) or a line over
    ``max_event_bytes``."""
    n = data.count(b"\n") + (not data.endswith(b"\n"))
    if n > max_events:
        raise TooLarge("request_events", f"{n} lines in one request, over "
                       f"maxRequestEvents={max_events}")
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    if lines and max(map(len, lines)) > max_event_bytes:
        raise TooLarge("event_bytes", f"a line of {max(map(len, lines))} bytes, over "
                       f"maxEventBytes={max_event_bytes}")
    return events_from_lines(lines)


class _Conn:
    """A connection's clocks (monotonic seconds): ``head_since`` while it waits for a
    request's line and headers (None once they are in: it is being served), ``deadline``
    for the whole request (None while the source, not the client, has the turn);
    ``cut`` once a timeout shut it down."""

    __slots__ = ("head_since", "deadline", "cut")

    def __init__(self, head_since: float, deadline: float | None):
        self.head_since = head_since
        self.deadline = deadline
        self.cut = False


class _Server(ThreadingHTTPServer):
    """The stdlib threading server, with the connection bounds and the request deadlines
    (checked by the serving thread between two polls)."""

    daemon_threads = True
    block_on_close = False     # stop() shuts the open connections down instead
    request_queue_size = 128   # the stdlib's 5 drops a burst's SYNs: clients wait 1-3 s

    def __init__(self, addr, handler, src: "HttpSource"):
        self.src = src
        self._lock = threading.Lock()
        self._open: dict[socket.socket, _Conn] = {}
        self._slots = ConnectionSlots(src.maxConnections, src.maxConnectionsPerPeer,
                                      lambda r: self._open[r].head_since,
                                      idle_from_any=True)
        self._errors = RateLimitedLog(log)
        super().__init__(addr, handler)

    def process_request(self, request, client_address) -> None:
        peer = client_address[0]
        now = time.monotonic()
        with self._lock:
            refused, evicted = self._slots.admit(request, peer)
            if refused is None:
                self._open[request] = _Conn(now, self.src.request_deadline(now))
            if evicted is not None:
                self._open.pop(evicted[0], None)
        if evicted is not None:
            self.src.refusals.refuse("evicted", f"closed a connection from {evicted[1]} "
                                     f"waiting for a request head to make room for {peer}")
            _shutdown(evicted[0])       # its handler thread ends and closes it
        if refused is None:
            return super().process_request(request, client_address)
        bound = (f"{self.src.maxConnectionsPerPeer} connections from {peer}"
                 if refused == "peer_connections" else f"{self.src.maxConnections} connections")
        self.src.refusals.refuse(refused, f"{bound} are open already, every one being "
                                 f"served; answered 503 to {peer}")
        body = json.dumps({"error": "too many connections: try again later",
                           "reason": refused}).encode()
        try:
            request.settimeout(0)
            request.send(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)
                self._slots.remove(request)

    def handle_error(self, request, client_address) -> None:
        # the stdlib prints a traceback per failed connection: a hostile client could
        # flood stderr with them. A client that went away is routine; anything else is
        # logged, at most every 10 s.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("httpSource: connection from %s ended: %s", client_address[0], exc)
            return
        self._errors.log(logging.ERROR, "handler", "httpSource on port %d: a request from "
                         "%s failed: %r", self.server_address[1], client_address[0], exc)

    def head_received(self, request: socket.socket) -> bool:
        """The request's line and headers are in: it is being served. False if the
        connection was shut down (evicted, timed out): what was read is cut short."""
        with self._lock:
            conn = self._open.get(request)
            if conn is None or conn.cut:
                return False
            conn.head_since = None
            return True

    def set_deadline(self, request: socket.socket, deadline: float | None,
                     next_head: bool = False) -> None:
        """The whole request's ``deadline``; with ``next_head``, the connection waits for
        another request head from now."""
        with self._lock:
            conn = self._open.get(request)
            if conn is not None:
                conn.deadline = deadline
                if next_head:
                    conn.head_since = time.monotonic()

    def service_actions(self) -> None:
        now = time.monotonic()
        head_limit = self.src.headerTimeoutMs / 1000
        late = []
        with self._lock:
            for r, c in self._open.items():
                if c.head_since is not None and now - c.head_since >= head_limit:
                    late.append((r, "header_timeout", "its request's line and headers",
                                 self.src.headerTimeoutMs))
                elif c.deadline is not None and c.deadline <= now:
                    late.append((r, "timeout", "a whole request", self.src.requestTimeoutMs))
                else:
                    continue
                c.head_since = c.deadline = None     # closed once, counted once
                c.cut = True
        for r, reason, what, ms in late:
            self.src.refusals.refuse(reason, f"closed a connection that did not send {what} "
                                     f"within {ms} ms")
            _shutdown(r)

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            conns = list(self._open)
        for r in conns:
            _shutdown(r)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)    # wakes the handler thread blocked reading it
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flume-httpSource"
    src: "HttpSource"

    def setup(self) -> None:
        self.timeout = self.src.requestTimeoutMs / 1000   # no single read waits longer
        super().setup()

    def log_message(self, fmt, *args) -> None:
        log.debug("httpSource %s: " + fmt, self.address_string(), *args)

    def _reply(self, code: int, doc: dict, close: bool = False) -> None:
        body = json.dumps(doc).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, code: int, reason: str, message: str, close: bool = False) -> None:
        self.src.refusals.refuse(reason, message)
        self._reply(code, {"error": message, "reason": reason}, close)

    def parse_request(self) -> bool:
        ok = super().parse_request()          # reads the headers
        if not self.server.head_received(self.connection):
            self.close_connection = True      # a head cut short by a shutdown: not a request
            return False
        return ok

    def handle_one_request(self) -> None:
        super().handle_one_request()
        # the next request (keep-alive) gets clocks of its own
        self.server.set_deadline(self.connection, self.src.request_deadline(),
                                 next_head=True)

    def do_GET(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_DELETE = do_HEAD = do_GET

    def _length(self, drain: bool) -> int | None:
        """The Content-Length (:func:`content_length`) within maxRequestBytes, or None once
        a refusal was answered (the connection then closes). With ``drain``, the body of
        a request over the bound is read and discarded first (:meth:`_drain`)."""
        try:
            n = content_length(self.headers)
        except BadRequest as exc:
            self._refuse(exc.status, exc.reason, str(exc), close=True)
            return None
        limit = self.src.maxRequestBytes
        if n > limit:
            self._refuse(413, "request_bytes", f"a request of {n} bytes is over "
                         f"maxRequestBytes={limit}", close=True)
            if drain:
                self.wfile.flush()
                self._drain(n)
            return None
        return n

    def handle_expect_100(self) -> bool:
        # "Expect: 100-continue": refuse an oversized body before the client sends it
        if self.command == "POST" and self._length(drain=False) is None:
            return False
        return super().handle_expect_100()

    def _drain(self, n: int) -> None:
        """Read and discard up to ``n`` bytes for at most DRAIN_SECONDS, so that a client
        still sending a refused body reads the answer instead of a reset."""
        end = time.monotonic() + DRAIN_SECONDS
        buf = bytearray(1 << 16)
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while n > 0 and time.monotonic() < end:
                self.connection.settimeout(max(0.01, end - time.monotonic()))
                got = self.connection.recv_into(buf, min(n, len(buf)))
                if not got:
                    break
                n -= got
        except OSError:
            pass

    def do_POST(self) -> None:
        src = self.src
        n = self._length(drain=True)
        if n is None:
            return
        data = self.rfile.read(n)
        if len(data) < n:            # the client went away, or the deadline closed it
            self.close_connection = True
            return
        self.server.set_deadline(self.connection, None)   # now waiting on us, not on it
        src.metrics.add("bytes_in", len(data))
        try:
            with src.parse_lock:      # one parse at a time: memory of one, same speed (GIL)
                if self.headers.get_content_type() == "application/json":
                    events = events_from_json(data, src.ctx.clock.now_ms(),
                                              src.maxRequestEvents, src.maxEventBytes)
                else:
                    events = events_from_text(data, src.maxRequestEvents, src.maxEventBytes)
        except BadRequest as exc:
            return self._refuse(exc.status, exc.reason, str(exc))
        finally:
            del data
        if not events:
            return self._reply(200, {"accepted": 0})
        code, doc = src._accept(events)
        self._reply(code, doc)


@source("httpSource")
class HttpSource(ServerSource):
    """HTTP server taking events as JSON or raw lines; answers once they are accepted."""

    queue_events = QUEUE_EVENTS
    tls_capable = False     # plain HTTP: beyond loopback only with --plaintext-events

    def __init__(self, port: Port, *, bind: str = "", timeoutMs: Positive = 10_000,
                 maxRequestBytes: Positive = DEFAULT_MAX_REQUEST_BYTES,
                 maxRequestEvents: Positive = DEFAULT_MAX_REQUEST_EVENTS,
                 maxEventBytes: Positive = DEFAULT_MAX_EVENT_BYTES,
                 maxConnections: Positive = DEFAULT_MAX_CONNECTIONS,
                 maxConnectionsPerPeer: Positive = DEFAULT_MAX_CONNECTIONS_PER_PEER,
                 headerTimeoutMs: Positive = DEFAULT_HEADER_TIMEOUT_MS,
                 requestTimeoutMs: Positive = DEFAULT_REQUEST_TIMEOUT_MS,
                 maxQueueBytes: Positive = DEFAULT_MAX_BYTES):
        super().__init__(port, bind, max_queue_bytes=maxQueueBytes)
        self.timeoutMs = timeoutMs
        self.maxRequestBytes = maxRequestBytes
        self.maxRequestEvents = maxRequestEvents
        self.maxEventBytes = maxEventBytes
        self.maxConnections = maxConnections
        self.maxConnectionsPerPeer = maxConnectionsPerPeer
        self.headerTimeoutMs = headerTimeoutMs
        self.requestTimeoutMs = requestTimeoutMs
        self.parse_lock = threading.Lock()

    def request_deadline(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) + self.requestTimeoutMs / 1000

    def _make_server(self) -> HttpServerThread:
        handler = type("HttpSourceHandler", (_Handler,), {"src": self})
        try:
            server = _Server((self.bind, self.port), handler, self)
        except OSError as exc:
            raise SourceError(f"httpSource: cannot bind {self.bind}:{self.port}: "
                              f"{exc.strerror or exc}") from exc
        return HttpServerThread(server, "httpSource:", poll_interval=0.1)

    def _accept(self, events: list[Event]) -> tuple[int, dict]:
        """Hand ``events`` to the consumer; (status, answer) for the client."""
        timeout = self.timeoutMs / 1000
        deadline = time.monotonic() + timeout
        seq = self._queue.put(events, timeout)
        if seq is not None and self._queue.wait_taken(seq, max(0.0, deadline - time.monotonic())):
            return 200, {"accepted": len(events)}
        if seq is not None and not self._queue.withdraw(seq):
            return 200, {"accepted": len(events)}   # taken just as we gave up
        if self._queue.closed:
            return 503, {"error": "source is closing", "reason": "closing"}
        why = f"events not accepted in time ({self.timeoutMs} ms): the flow is behind"
        self.refusals.refuse("queue_full", why, len(events))
        return 503, {"error": why, "reason": "queue_full"}
