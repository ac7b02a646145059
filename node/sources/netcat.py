"""``netcat(port)``: a line per event from plain TCP connections, any number at once.

A line is the bytes up to LF (kept as sent, CR included); what a connection sends after its
last LF becomes an event when it closes. A line longer than 1 MiB is cut there (counted in
``oversize``). Binds ``bind="0.0.0.0"`` by default like every network source; ``port=0``
picks a free port, readable as ``self.port`` after ``open``. While the queue is full the
server stops reading, so senders block (backpressure).
"""
from __future__ import annotations

from ..component import NodeContext, Source
from ..event import Event, events_from_lines
from ..registry import source
from ._batchqueue import BatchQueue
from ._net import TcpServer

QUEUE_EVENTS = 10_000
MAX_LINE = 1 << 20


class _LineFramer:
    def __init__(self, src: "NetcatSource"):
        self.src, self.rest = src, b""

    def feed(self, data: bytes) -> list[Event]:
        lines = data.split(b"\n")
        if self.rest:
            lines[0] = self.rest + lines[0]
        self.rest = lines.pop()
        if len(self.rest) > MAX_LINE:
            lines.append(self.rest[:MAX_LINE])
            self.rest = self.rest[MAX_LINE:]
            self.src.metrics.add("oversize")
        return events_from_lines(lines) if lines else []

    def eof(self) -> list[Event]:
        rest, self.rest = self.rest, b""
        return events_from_lines([rest]) if rest else []


@source("netcat")
class NetcatSource(Source):
    """A line per event from plain TCP connections on ``port``."""

    def __init__(self, port: int, *, bind: str = "0.0.0.0"):
        super().__init__()
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {port}")
        self.port = port
        self.bind = bind
        self._queue: BatchQueue | None = None
        self._server: TcpServer | None = None

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._queue = BatchQueue(QUEUE_EVENTS)
        self._server = TcpServer("netcat", self.bind, self.port, lambda peer: _LineFramer(self),
                                 self._queue, self.metrics)
        self._server.start()
        self.port = self._server.port

    def next_batch(self, timeout: float) -> list[Event] | None:
        if self._queue is None:
            return None
        out = self._queue.get(timeout)
        if out:
            self.metrics.add("events_in", len(out))
        return out

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
        if self._server is not None:
            self._server.stop()
