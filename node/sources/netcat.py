"""``netcat(port)``: a line per event from plain TCP connections, any number at once.

A line is the bytes up to LF (kept as sent, CR included); what a connection sends after its
last LF becomes an event when it closes. A line longer than 1 MiB is cut there (counted in
``oversize``). Binds ``bind="0.0.0.0"`` by default like every network source; ``port=0``
picks a free port, readable as ``self.port`` after ``open``. While the queue is full the
server stops reading, so senders block (backpressure).
"""
from __future__ import annotations

from ..event import Event, events_from_lines
from ..registry import source
from ._lines import LineBuffer
from ._net import ServerSource, TcpServer

QUEUE_EVENTS = 10_000
MAX_LINE = 1 << 20


class _LineFramer:
    def __init__(self, src: "NetcatSource"):
        self.src, self.buf = src, LineBuffer()

    def feed(self, data: bytes) -> list[Event]:
        buf = self.buf
        lines = buf.feed(data)
        if len(buf.rest) > MAX_LINE:
            lines.append(buf.rest[:MAX_LINE])
            buf.rest = buf.rest[MAX_LINE:]
            self.src.metrics.add("oversize")
        return events_from_lines(lines) if lines else []

    def eof(self) -> list[Event]:
        last = self.buf.finish()
        return events_from_lines(last) if last else []


@source("netcat")
class NetcatSource(ServerSource):
    """A line per event from plain TCP connections on ``port``."""

    def __init__(self, port: int, *, bind: str = "0.0.0.0"):
        super().__init__(port, bind)

    @property
    def queue_events(self) -> int:
        return QUEUE_EVENTS

    def _make_server(self) -> TcpServer:
        return TcpServer("netcat", self.bind, self.port, lambda peer: _LineFramer(self),
                         self._queue, self.metrics)
