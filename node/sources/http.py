"""``httpSource(port)``: events POSTed over HTTP, acknowledged only once accepted.

A POST with ``Content-Type: application/json`` carries ``[{"headers": {...}, "body":
"..."}, ...]``: ``body`` (a string) becomes the UTF-8 body; the headers ``timestamp`` (ms),
``host`` and ``priority`` (a name such as ``"WARN"`` or its number) set those fields, and
every other header becomes an attribute (its value as UTF-8 bytes). Any other content type
is raw text: an event per LF-terminated line.

The answer is ``200 {"accepted": n}`` only after the whole request's events were taken by
the source's consumer (the driver's ``next_batch``); if that does not happen within
``timeoutMs`` the events are withdrawn and the answer is ``503``, so a client that retries
never duplicates. Bad JSON or a bad event is ``400`` with a message; a request without a
length is ``411``, one over 64 MiB ``413``.

Binds ``bind="0.0.0.0"`` by default like every network source (``port=0`` picks a free
port, readable as ``self.port`` after ``open``). Standard library only.
"""
from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import SourceError
from ..event import LOCAL_HOST, Event, Priority, events_from_lines
from ..http_thread import HttpServerThread
from ..registry import source
from ._net import ServerSource

log = logging.getLogger(__name__)

QUEUE_EVENTS = 10_000
MAX_REQUEST = 64 << 20
RESERVED = ("timestamp", "host", "priority")


class BadRequest(ValueError):
    """The request's content is wrong (answered 400)."""


def _attr_value(i: int, key: str, v) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v).encode()
    raise BadRequest(f"event {i}: header {key!r} must be a string or a number, "
                     f"got {type(v).__name__}")


def events_from_json(data: bytes, now_ms: int) -> list[Event]:
    """Parse ``[{"headers": {...}, "body": "..."}, ...]``; BadRequest names what is wrong."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"bad JSON: {exc}") from None
    if not isinstance(doc, list):
        raise BadRequest(f"expected a JSON array of events, got {type(doc).__name__}")
    base = time.monotonic_ns()
    events = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise BadRequest(f"event {i}: expected an object, got {type(item).__name__}")
        body = item.get("body", "")
        if not isinstance(body, str):
            raise BadRequest(f"event {i}: body must be a string, got {type(body).__name__}")
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
        events.append(Event(body.encode(), ts, base + i, prio, host, attrs))
    return events


def events_from_text(data: bytes) -> list[Event]:
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return events_from_lines(lines)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flume-httpSource"
    timeout = 60  # an idle keep-alive connection is closed after this many seconds
    src: "HttpSource"

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

    def do_GET(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_DELETE = do_HEAD = do_GET

    def do_POST(self) -> None:
        src = self.src
        length = self.headers.get("Content-Length")
        if length is None:
            return self._reply(411, {"error": "Content-Length is required"}, close=True)
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            return self._reply(400, {"error": f"bad Content-Length {length!r}"}, close=True)
        if n > MAX_REQUEST:
            src.metrics.add("rejected")
            return self._reply(413, {"error": f"request over {MAX_REQUEST} bytes"},
                               close=True)
        data = self.rfile.read(n)
        src.metrics.add("bytes_in", len(data))
        try:
            if self.headers.get_content_type() == "application/json":
                events = events_from_json(data, src.ctx.clock.now_ms())
            else:
                events = events_from_text(data)
        except BadRequest as exc:
            src.metrics.add("rejected")
            return self._reply(400, {"error": str(exc)})
        if not events:
            return self._reply(200, {"accepted": 0})
        code, doc = src._accept(events)
        self._reply(code, doc)


@source("httpSource")
class HttpSource(ServerSource):
    """HTTP server taking events as JSON or raw lines; answers once they are accepted."""

    queue_events = QUEUE_EVENTS

    def __init__(self, port: int, *, bind: str = "0.0.0.0", timeoutMs: int = 10_000):
        super().__init__(port, bind)
        if timeoutMs <= 0:
            raise ValueError(f"timeoutMs must be > 0, got {timeoutMs}")
        self.timeoutMs = timeoutMs

    def _make_server(self) -> HttpServerThread:
        handler = type("HttpSourceHandler", (_Handler,), {"src": self})
        try:
            server = ThreadingHTTPServer((self.bind, self.port), handler)
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
        self.metrics.add("refused", len(events))
        why = "source is closing" if self._queue.closed else "events not accepted in time"
        return 503, {"error": why}
