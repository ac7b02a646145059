"""``syslogUdp([port=514])`` and ``syslogTcp([port=514])``: syslog servers.

Both parse RFC 3164 (``<PRI>Mmm dd hh:mm:ss host msg``) and RFC 5424
(``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG``). Every message becomes one event whose
body is the original message unchanged (so the ``syslog`` output format can reproduce it)
and whose attributes carry ``syslogfacility`` and ``syslogseverity`` as decimal text
(``b"3"``); RFC 5424 adds ``syslog.appname``, ``syslog.procid`` and ``syslog.msgid`` (when
not nil). The priority comes from the severity (0-2 FATAL, 3 ERROR, 4 WARN, 5-6 INFO,
7 DEBUG), the host and the timestamp from the header when present and parseable (else the
sender's address and the arrival time). RFC 3164 stamps carry no year: the current year is
assumed, or last year if that puts the stamp more than a day in the future (and next year
for a January stamp received on December 31st, so a clock slightly ahead across New Year
does not move an event back a year).

A message without a valid ``<PRI>`` is still emitted (raw body, INFO, no syslog attributes)
and counted in ``malformed``; one whose RFC 5424 header is broken keeps its PRI-derived
fields and is counted in ``malformed`` too; an RFC 3164 message with a PRI but no
timestamp/host header (allowed by RFC 3164 section 4.3.3) is counted in ``noheader``.

TCP accepts newline-delimited frames (a trailing CR is dropped) and RFC 6587 octet-counted
frames (``123 <34>1 ...``), decided per frame. On a node with TLS (:mod:`node.tls`),
``syslogTcp`` serves TLS only: RFC 5425 (octet-counted frames over TLS), port 6514 by
default. ``bind`` "" (the default) is 0.0.0.0 on a node with TLS or
``--plaintext-events``, else 127.0.0.1 (``syslogUdp``: 0.0.0.0 only with
``--plaintext-events``, UDP cannot be secured); ``port=0`` picks a free port, readable
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

import datetime
import functools
import logging
import re
import time
from typing import Annotated

from annotated_types import Interval

from ..event import LOCAL_HOST, Event, Priority
from ..limits import RateLimitedLog
from ..registry import NonNegative, Positive, source
from ..tls import SYSLOG_TLS_PORT
from ._batchqueue import DEFAULT_MAX_BYTES
from ._net import (DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS,
                   DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_EVENT_BYTES,
                   DEFAULT_MESSAGE_TIMEOUT_MS, DEFAULT_MIN_BYTES_PER_SECOND, Port,
                   ServerSource, TcpServer, UdpServer)

log = logging.getLogger(__name__)

QUEUE_EVENTS = 10_000
DAY_MS = 86_400_000

SEVERITY_PRIORITY = (Priority.FATAL, Priority.FATAL, Priority.FATAL, Priority.ERROR,
                     Priority.WARN, Priority.INFO, Priority.INFO, Priority.DEBUG)
_FACILITY_BYTES = [str(i).encode() for i in range(24)]
_SEVERITY_BYTES = [str(i).encode() for i in range(8)]
_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# Mmm dd hh:mm:ss, then an optional HOSTNAME token (see _looks_like_host).
_RE_3164 = re.compile(rb"([A-Z][a-z]{2}) ([ 0-9]?[0-9]) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
                      rb"(?: +(\S+))?")
_NIL = b"-"

OK, NOHEADER, MALFORMED = 0, 1, 2


@functools.lru_cache(maxsize=4096)
def _local_ms(year: int, month: int, day: int, h: int, m: int, s: int) -> int:
    return int(datetime.datetime(year, month, day, h, m, s).timestamp() * 1000)


def _year_of(now_ms: int) -> int:
    return time.localtime(now_ms / 1000).tm_year


def _parse_3164(rest: bytes, now_ms: int) -> tuple[int, bytes | None] | None:
    """(timestamp, host or None) from an RFC 3164 header, or None if there is none."""
    m = _RE_3164.match(rest)
    if m is None:
        return None
    mon = _MONTHS.get(m.group(1))
    if mon is None:
        return None
    day, h, mi, s = int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))
    ts = now_ms               # if no year makes a valid date (25:61:61...): arrival time
    this_year = _year_of(now_ms)
    # the latest year that does not put the stamp more than a day in the future: this
    # year, last year just after New Year, next year just before it (skewed clocks)
    for year in (this_year + 1, this_year, this_year - 1):
        try:
            t = _local_ms(year, mon, day, h, mi, s)
        except ValueError:    # Feb 29 of a common year, hour 25...
            continue
        if t <= now_ms + DAY_MS:
            ts = t
            break
    host = m.group(6)
    if host is not None and not _looks_like_host(host):
        host = None           # "su: message" -- a TAG, the sender omitted its HOSTNAME
    return ts, host


def _looks_like_host(token: bytes) -> bool:
    return not (token.endswith(b":") or b"[" in token)


def _skip_sd(rest: bytes, i: int) -> int:
    """Index just after the STRUCTURED-DATA starting at ``rest[i]``, or -1 if broken."""
    if rest[i:i + 1] == _NIL:
        return i + 1
    n = len(rest)
    if i >= n or rest[i] != 0x5B:          # "["
        return -1
    while i < n and rest[i] == 0x5B:
        i += 1
        quoted = False
        while i < n:
            c = rest[i]
            if quoted:
                if c == 0x5C:              # backslash escapes the next char in a value
                    i += 1
                elif c == 0x22:
                    quoted = False
            elif c == 0x22:
                quoted = True
            elif c == 0x5D:                # "]" closes the element
                break
            i += 1
        if i >= n:
            return -1
        i += 1
    return i


def _parse_5424(rest: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
    """(timestamp, host, app, procid, msgid) of an RFC 5424 header after ``1 ``, or None."""
    parts = rest.split(b" ", 5)
    if len(parts) < 6:                     # a field or the STRUCTURED-DATA is missing
        return None
    ts, host, app, procid, msgid, tail = parts
    if not all((ts, host, app, procid, msgid)):
        return None
    end = _skip_sd(tail, 0)
    if end < 0 or (end < len(tail) and tail[end] != 0x20):
        return None
    return ts, host, app, procid, msgid


def _parse_5424_time(ts: bytes, now_ms: int) -> int:
    if ts == _NIL:
        return now_ms
    try:
        dt = datetime.datetime.fromisoformat(ts.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return now_ms
    return int(dt.timestamp() * 1000)


def parse_message(raw: bytes, now_ms: int, peer: str | None = None,
                  nanos: int | None = None) -> tuple[Event, int]:
    """One syslog message -> (event, status); status is OK, NOHEADER or MALFORMED.

    ``raw`` is the message without its transport framing; it becomes the body unchanged.
    ``peer`` (the sender's address) is the host when the header names none.
    """
    nanos = time.monotonic_ns() if nanos is None else nanos
    fallback_host = peer or LOCAL_HOST
    gt = raw.find(b">", 1, 5)
    pri = -1
    if raw[:1] == b"<" and gt > 1 and raw[1:gt].isdigit():
        pri = int(raw[1:gt])
    if not 0 <= pri <= 191:
        return Event(raw, now_ms, nanos, Priority.INFO, fallback_host, {}), MALFORMED
    fac, sev = pri >> 3, pri & 7
    attrs = {"syslogfacility": _FACILITY_BYTES[fac], "syslogseverity": _SEVERITY_BYTES[sev]}
    prio = SEVERITY_PRIORITY[sev]
    rest = raw[gt + 1:]
    if rest[:2] == b"1 ":
        hdr = _parse_5424(rest[2:])
        if hdr is None:
            return Event(raw, now_ms, nanos, prio, fallback_host, attrs), MALFORMED
        ts, host, app, procid, msgid = hdr
        if app != _NIL:
            attrs["syslog.appname"] = app
        if procid != _NIL:
            attrs["syslog.procid"] = procid
        if msgid != _NIL:
            attrs["syslog.msgid"] = msgid
        hoststr = fallback_host if host == _NIL else host.decode("utf-8", "replace")
        return Event(raw, _parse_5424_time(ts, now_ms), nanos, prio, hoststr, attrs), OK
    hdr3 = _parse_3164(rest, now_ms)
    if hdr3 is None:
        return Event(raw, now_ms, nanos, prio, fallback_host, attrs), NOHEADER
    ts3, host3 = hdr3
    hoststr = fallback_host if host3 is None else host3.decode("utf-8", "replace")
    return Event(raw, ts3, nanos, prio, hoststr, attrs), OK


def parse_messages(raws: list[bytes], peers: list[str] | str | None, now_ms: int
                   ) -> tuple[list[Event], int, int]:
    """A batch of messages -> (events, malformed count, noheader count)."""
    base = time.monotonic_ns()
    events = []
    counts = [0, 0, 0]
    for i, raw in enumerate(raws):
        peer = peers if peers is None or isinstance(peers, str) else peers[i]
        ev, status = parse_message(raw, now_ms, peer, base + i)
        events.append(ev)
        counts[status] += 1
    return events, counts[MALFORMED], counts[NOHEADER]


class SyslogFramer:
    """Cuts a TCP stream into syslog frames of at most ``max_frame`` bytes.

    A frame starting with a digit is RFC 6587 octet-counted (``LEN SP MSG``); any other is
    terminated by LF (a CR before the LF is dropped). A frame longer than ``max_frame`` is
    *truncated*: its first ``max_frame`` bytes become the frame (counted by the caller:
    ``feed`` returns how many were truncated) and the rest of it is read and discarded,
    so the framer never holds more than ``max_frame`` plus one read of a connection.
    """

    __slots__ = ("max_frame", "buf", "skip", "skip_line")

    def __init__(self, max_frame: int):
        self.max_frame = max_frame
        self.buf = b""
        self.skip = 0            # bytes of a truncated octet-counted frame still to discard
        self.skip_line = False   # discarding the rest of a truncated LF frame

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """(frames ``data`` completes, how many of them were truncated)."""
        buf = self.buf + data if self.buf else data
        frames: list[bytes] = []
        limit, i, n, cuts = self.max_frame, 0, len(buf), 0
        while i < n:
            if self.skip:
                k = min(self.skip, n - i)
                self.skip -= k
                i += k
                continue
            if self.skip_line:
                nl = buf.find(b"\n", i)
                if nl < 0:
                    i = n
                    break
                self.skip_line = False
                i = nl + 1
                continue
            if 0x30 <= buf[i] <= 0x39:
                sp = buf.find(b" ", i, i + 11)
                if sp < 0 and n - i < 11:
                    break                                  # the length may still be arriving
                if sp > i and buf[i:sp].isdigit():
                    start = sp + 1
                    end = start + int(buf[i:sp])
                    if end - start > limit:
                        if n - start < limit:
                            break                          # wait for the head we keep
                        frames.append(buf[start:start + limit])
                        cuts += 1
                        self.skip = max(0, end - n)
                        i = min(end, n)
                        continue
                    if end > n:
                        break
                    frames.append(buf[start:end])
                    i = end
                    continue
            nl = buf.find(b"\n", i, i + limit + 2)        # + CR LF
            if nl < 0:
                if n - i > limit + 1:
                    frames.append(buf[i:i + limit])
                    cuts += 1
                    self.skip_line = True
                    i += limit
                    continue
                break
            frame = buf[i:nl]
            if frame.endswith(b"\r"):
                frame = frame[:-1]
            if len(frame) > limit:
                frames.append(frame[:limit])
                cuts += 1
            elif frame:
                frames.append(frame)
            i = nl + 1
        self.buf = buf[i:]
        return frames, cuts

    @property
    def pending(self) -> bool:
        """Part of a frame is held, or the rest of a truncated one is being discarded."""
        return bool(self.buf or self.skip or self.skip_line)

    def finish(self) -> bytes:
        """At the end of the stream: what is left of an unterminated frame (b"" if none)."""
        rest, self.buf = self.buf, b""
        return b"" if self.skip or self.skip_line else rest.rstrip(b"\r\n")


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
