"""``netcat(port)``: a line per event from plain TCP connections, any number at once.

A line is the bytes up to LF (kept as sent, CR included); what a connection sends after its
last LF becomes an event when it closes. Where it listens, and TLS on a node with TLS, as
every TCP source (:mod:`node.tls`: ``bind`` "" is 0.0.0.0 with TLS or ``--plaintext-events``,
else 127.0.0.1); ``port=0`` picks a free port, readable as ``self.port`` after ``open``.

Bounds (arguments, with their defaults; see ``node/sources/_net.py``):

* ``maxEventBytes=32768``: a longer line is *truncated* to its first ``maxEventBytes``
  bytes and the rest of it, up to its LF, is discarded (``refused_oversize``); so a
  connection never holds more than that of an unfinished line.
* ``maxQueueBytes=64 MiB`` (and 10,000 events): while the queue is full the server stops
  reading, so senders block (backpressure).
* ``maxConnections=256`` open at once, ``maxConnectionsPerPeer=64`` from one address,
  ``idleTimeoutMs=600000`` (0: never), ``messageTimeoutMs=30000`` and
  ``minBytesPerSecond=16384`` for an unfinished line: what happens past each (which
  connection is closed to make room, when a slow one is cut) is the same for every TCP
  source and written once in :mod:`node.sources._net` (Connections, Time).
"""
from __future__ import annotations

from ..event import Event, events_from_lines
from ..registry import NonNegative, Positive, source
from ._batchqueue import DEFAULT_MAX_BYTES
from ._lines import LineBuffer
from ._net import (DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS,
                   DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_EVENT_BYTES,
                   DEFAULT_MESSAGE_TIMEOUT_MS, DEFAULT_MIN_BYTES_PER_SECOND, Port,
                   ServerSource, TcpServer)

QUEUE_EVENTS = 10_000


class _LineFramer:
    def __init__(self, src: "NetcatSource", peer: str):
        self.src, self.peer = src, peer
        self.buf = LineBuffer(src.maxEventBytes)

    def feed(self, data: bytes) -> list[Event]:
        lines = self.buf.feed(data)
        cuts = self.buf.take_cuts()
        if cuts:
            self.src.refusals.refuse("oversize", f"truncated a line from {self.peer} to "
                                     f"maxEventBytes={self.buf.max_line}", cuts)
        return events_from_lines(lines) if lines else []

    @property
    def pending(self) -> bool:
        return self.buf.pending

    def eof(self) -> list[Event]:
        last = self.buf.finish()
        return events_from_lines(last) if last else []


@source("netcat")
class NetcatSource(ServerSource):
    """A line per event from plain TCP connections on ``port``."""

    queue_events = QUEUE_EVENTS

    def __init__(self, port: Port, *, bind: str = "",
                 maxEventBytes: Positive = DEFAULT_MAX_EVENT_BYTES,
                 maxQueueBytes: Positive = DEFAULT_MAX_BYTES,
                 maxConnections: Positive = DEFAULT_MAX_CONNECTIONS,
                 maxConnectionsPerPeer: Positive = DEFAULT_MAX_CONNECTIONS_PER_PEER,
                 idleTimeoutMs: NonNegative = DEFAULT_IDLE_TIMEOUT_MS,
                 messageTimeoutMs: NonNegative = DEFAULT_MESSAGE_TIMEOUT_MS,
                 minBytesPerSecond: NonNegative = DEFAULT_MIN_BYTES_PER_SECOND):
        super().__init__(port, bind, max_queue_bytes=maxQueueBytes)
        self.maxEventBytes = maxEventBytes
        self._keep_tcp_limits(maxConnections, maxConnectionsPerPeer, idleTimeoutMs,
                              messageTimeoutMs, minBytesPerSecond)

    def _make_server(self) -> TcpServer:
        return self._tcp_server("netcat", lambda peer: _LineFramer(self, peer))
