"""``syslogUdp([port=514])`` and ``syslogTcp([port=514])``: syslog servers.

Both parse RFC 5424 and RFC 3164 as senders write them (rsyslog, syslog-ng, util-linux
``logger``, network gear): the body is the MSG part, the header fields become attributes,
the header's timestamp the event time and its HOSTNAME the event host; the rules and the
attribute names are in :mod:`._syslog_parse` and ``docs/syslog.md``. A message that cannot
be parsed (no valid ``<PRI>``, a broken RFC 5424 header or structured data) is never
dropped: it keeps the raw message as its body, carries ``syslog.malformed`` (the reason)
and is counted in ``malformed``; an RFC 3164 message with a PRI but no timestamp (allowed
by RFC 3164 section 4.3.3) is counted in ``noheader``.

TCP accepts RFC 6587 framing on the same connection, decided per frame: octet counting
(``123 <34>1 ...``) and newline-delimited frames (a trailing CR is dropped); see
:class:`._syslog_parse.SyslogFramer`. On a node with TLS (:mod:`node.tls`), ``syslogTcp``
serves TLS only: RFC 5425 (octet-counted frames over TLS), port 6514 by default. ``bind``
"" (the default) is 0.0.0.0 on a node with TLS or ``--plaintext-events``, else 127.0.0.1
(``syslogUdp``: 0.0.0.0 only with ``--plaintext-events``, UDP cannot be secured);
``port=0`` picks a free port, readable
as ``self.port`` after ``open``.

Bounds (arguments, with their defaults; see ``node/sources/_net.py`` for the common ones):

* ``maxEventBytes=32768``: a message (frame or datagram) longer than this is *truncated*
  to its first ``maxEventBytes`` bytes -- the header, which syslog puts first, survives --
  and the rest is discarded; counted as ``refused_oversize``.
* ``maxQueueBytes=64 MiB`` (and 10,000 events): while the queue is full, TCP stops reading
  (backpressure: senders block, nothing is lost); UDP drops the datagrams
  (``refused_queue_full``); datagrams the kernel dropped show as ``kernel_dropped``.
* TCP only: ``maxConnections=256`` open at once, ``maxConnectionsPerPeer=64`` from one address,
  ``idleTimeoutMs=600000`` (0: never), ``messageTimeoutMs=30000`` and
  ``minBytesPerSecond=16384`` for an unfinished message: what happens past each (which
  connection is closed to make room, when a slow one is cut) is the same for every TCP
  source and written once in :mod:`node.sources._net` (Connections, Time).
"""
from __future__ import annotations

import logging
from typing import Annotated

from annotated_types import Interval

from ..event import Event
from ..limits import RateLimitedLog
from ..registry import NonNegative, Positive, source
from ..tls import SYSLOG_TLS_PORT
from ._batchqueue import DEFAULT_MAX_BYTES
from ._net import (DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS,
                   DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_EVENT_BYTES,
                   DEFAULT_MESSAGE_TIMEOUT_MS, DEFAULT_MIN_BYTES_PER_SECOND, Port,
                   ServerSource, TcpServer, UdpServer)
from ._syslog_parse import SyslogFramer, parse_messages

log = logging.getLogger(__name__)

QUEUE_EVENTS = 10_000


class _SyslogTcpFramer:
    def __init__(self, src: "SyslogTcpSource", peer: str):
        self.src, self.peer = src, peer
        self.framer = SyslogFramer(src.maxEventBytes)

    def feed(self, data: bytes) -> list[Event]:
        frames, cuts = self.framer.feed(data)
        if cuts:
            self.src.refusals.refuse(
                "oversize", f"truncated a message from {self.peer} to "
                f"maxEventBytes={self.src.maxEventBytes}", cuts)
        return self.src._parse(frames, self.peer)

    @property
    def pending(self) -> bool:
        return self.framer.pending

    def eof(self) -> list[Event]:
        rest = self.framer.finish()
        return self.src._parse([rest], self.peer) if rest else []


class _SyslogSource(ServerSource):
    """Common part of the two syslog servers."""

    queue_events = QUEUE_EVENTS

    def __init__(self, port: Port = 514, *, bind: str = "",
                 maxEventBytes: Positive = DEFAULT_MAX_EVENT_BYTES,
                 maxQueueBytes: Positive = DEFAULT_MAX_BYTES):
        super().__init__(port, bind, max_queue_bytes=maxQueueBytes)
        self.maxEventBytes = maxEventBytes
        self._malformed_log = RateLimitedLog(log)

    def _parse(self, raws: list[bytes], peers) -> list[Event]:
        events, bad, nohdr = parse_messages(raws, peers, self.ctx.clock.now_ms())
        if bad:
            self.metrics.add("malformed", bad)
            # kept (raw, INFO), but a sender is misconfigured or hostile: say so, rarely
            self._malformed_log.warning(
                "malformed", "%s on port %d received %d message(s) without a valid syslog "
                "header; kept raw and counted in malformed", self.spec_name, self.port, bad)
        if nohdr:
            self.metrics.add("noheader", nohdr)
        return events


@source("syslogUdp")
class SyslogUdpSource(_SyslogSource):
    """Syslog server over UDP (RFC 3164 and RFC 5424); a datagram per message."""

    tls_capable = False     # UDP: beyond loopback only with --plaintext-events

    def _make_server(self) -> UdpServer:
        return UdpServer("syslogUdp", self.bind, self.port, self._parse_datagrams,
                         self._queue, self.metrics, self.refusals, self.maxEventBytes)

    def _parse_datagrams(self, datagrams: list[bytes], peers: list[str]) -> list[Event]:
        # senders often end a datagram with LF (or NUL): framing, not message
        return self._parse([d.rstrip(b"\r\n\x00") for d in datagrams], peers)


# syslogTcp's port: None until it opens, then 514, or 6514 on a node with TLS (RFC 5425)
DefaultPort = Annotated[int | None, Interval(ge=0, le=65535)]


@source("syslogTcp")
class SyslogTcpSource(_SyslogSource):
    """Syslog server over TCP: LF-delimited or RFC 6587 octet-counted frames; on a node
    with TLS, over TLS only (RFC 5425), and ``port`` defaults to 6514 instead of 514."""

    def __init__(self, port: DefaultPort = None, *, bind: str = "",
                 maxEventBytes: Positive = DEFAULT_MAX_EVENT_BYTES,
                 maxQueueBytes: Positive = DEFAULT_MAX_BYTES,
                 maxConnections: Positive = DEFAULT_MAX_CONNECTIONS,
                 maxConnectionsPerPeer: Positive = DEFAULT_MAX_CONNECTIONS_PER_PEER,
                 idleTimeoutMs: NonNegative = DEFAULT_IDLE_TIMEOUT_MS,
                 messageTimeoutMs: NonNegative = DEFAULT_MESSAGE_TIMEOUT_MS,
                 minBytesPerSecond: NonNegative = DEFAULT_MIN_BYTES_PER_SECOND):
        super().__init__(port, bind=bind, maxEventBytes=maxEventBytes,
                         maxQueueBytes=maxQueueBytes)
        self._keep_tcp_limits(maxConnections, maxConnectionsPerPeer, idleTimeoutMs,
                              messageTimeoutMs, minBytesPerSecond)

    def open(self, ctx) -> None:
        if self.port is None:
            self.port = SYSLOG_TLS_PORT if ctx.transport.tls else 514
        super().open(ctx)

    def _make_server(self) -> TcpServer:
        return self._tcp_server("syslogTcp", lambda peer: _SyslogTcpFramer(self, peer))
