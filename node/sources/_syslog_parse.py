"""Syslog messages as senders write them: RFC 5424, RFC 3164 and its common variants, and
RFC 6587 framing over TCP. Pure functions of bytes; the servers are in :mod:`.syslog`.

A message becomes one event (attribute names: ``docs/syslog.md``):

* **body**: the MSG part only -- after the RFC 5424 structured data, after the RFC 3164
  ``TAG[PID]:``; a UTF-8 byte order mark that starts it is dropped.
* **attributes**: ``syslogfacility`` and ``syslogseverity`` (decimal text, as OG named
  them), ``syslog.hostname``, ``syslog.appname``, ``syslog.procid``, ``syslog.msgid`` (each
  only when the header carries it, not for RFC 5424's nil ``-``), and every structured data
  parameter as ``sd.<SD-ID>.<PARAM-NAME>`` with its value unescaped (when a parameter is
  repeated in an element, the first value is kept).
* **time**: the header's timestamp (RFC 5424 / RFC 3339 with its offset; RFC 3164 in local
  time, the year guessed as :func:`_parse_3164_stamp` says), else the arrival time.
* **host**: the header's HOSTNAME, else the sender's address.
* **priority**: from the severity (0-2 FATAL, 3 ERROR, 4 WARN, 5-6 INFO, 7 DEBUG).

RFC 3164 headers accepted: ``Mmm dd hh:mm:ss`` (optionally with ``.fff`` and a year
``Mmm dd yyyy hh:mm:ss``, Cisco's ``*``/``.`` clock marks and sequence number), or an RFC 3339
stamp (rsyslog's ``RSYSLOG_ForwardFormat``), then an optional HOSTNAME (a token ending in
``:`` or holding ``[`` is a TAG: the sender omitted its host), then ``TAG[PID]: MSG``.

Status of a message: OK; NOHEADER (RFC 3164 section 4.3.3: a PRI and no timestamp, the
rest is MSG); MALFORMED: no valid ``<PRI>`` or a broken RFC 5424 header or structured
data. A malformed message is never dropped: its body is the raw message, it carries
``syslog.malformed`` (the reason) and, when its PRI was valid, the facility and severity.
An unparseable RFC 5424 timestamp alone is not malformed: the arrival time is used.
"""
from __future__ import annotations

import calendar
import datetime
import functools
import re
import time

from ..event import LOCAL_HOST, Event, Priority

DAY_MS = 86_400_000

FACILITY = "syslogfacility"
SEVERITY = "syslogseverity"
HOSTNAME = "syslog.hostname"
APPNAME = "syslog.appname"
PROCID = "syslog.procid"
MSGID = "syslog.msgid"
MALFORMED_ATTR = "syslog.malformed"
SD_PREFIX = "sd."
SD_DROPPED = "syslog.sd_dropped"
MAX_SD_PARAMS = 128   # structured data parameters kept per message; the rest are counted

OK, NOHEADER, MALFORMED = 0, 1, 2

SEVERITY_PRIORITY = (Priority.FATAL, Priority.FATAL, Priority.FATAL, Priority.ERROR,
                     Priority.WARN, Priority.INFO, Priority.INFO, Priority.DEBUG)
_FACILITY_BYTES = [str(i).encode() for i in range(24)]
_SEVERITY_BYTES = [str(i).encode() for i in range(8)]
_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_NIL = b"-"
_BOM = b"\xef\xbb\xbf"

# Cisco IOS: "52: " sequence number, "router1: " host, then "*Mar  1 ...:" (unsynced clock)
_RE_CISCO_PREFIX = re.compile(rb"[0-9]{1,10}: (?:([^\s:]{1,255}): )?(?=[*.]?[A-Z][a-z]{2} )")
# Mmm dd [yyyy] hh:mm:ss[.fff] [TZ] [yyyy][:], after an optional clock mark; a zone name
# is skipped (local time is assumed), a year after it is RFC 3164's "CST 1987" example
_RE_3164 = re.compile(rb"[*.]?([A-Z][a-z]{2}) ([ 0-9]?[0-9]) (?:([0-9]{4}) )?"
                      rb"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
                      rb"(?: [A-Z]{3,5})?(?: ([0-9]{4}))?(:?)(?: +|$)")
_RE_3339 = re.compile(rb"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2})"
                      rb"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))")
# STRUCTURED-DATA: [SD-ID *(SP PARAM-NAME="value")]; in a value only \" \\ \] are escapes
# (RFC 5424 6.3.3), another backslash is kept with the character after it
_RE_SD_ELEMENT = re.compile(rb'\[([^ ="\]]+)((?: [^ ="\]]+="(?:[^"\\]|\\.)*")*)\]', re.S)
_RE_SD_PARAM = re.compile(rb' ([^ ="\]]+)="((?:[^"\\]|\\.)*)"', re.S)
_RE_SD_ESCAPE = re.compile(rb'\\(["\\\]])')
# TAG[PID]: -- a TAG is a program name: no space, colon or brackets
_RE_TAG = re.compile(rb"([^\s\[\]:]{1,64})(?:\[([^\s\]]{1,128})\])?:(?: |$)")


@functools.lru_cache(maxsize=4096)
def _local_ms(year: int, month: int, day: int, h: int, m: int, s: int) -> int:
    return int(datetime.datetime(year, month, day, h, m, s).timestamp() * 1000)


def _year_of(now_ms: int) -> int:
    return time.localtime(now_ms / 1000).tm_year


def _parse_3164_stamp(mon: int, day: int, year: int | None, h: int, mi: int, s: int,
                      now_ms: int) -> int:
    """Epoch ms of a local RFC 3164 stamp. Without a year: the latest year that does not put
    the stamp more than a day in the future -- this year, last year just after New Year,
    next year for a January stamp received on December 31st (a clock slightly ahead).
    A date no year makes valid (Feb 30, 25:61:61) gives the arrival time."""
    if year is not None:
        try:
            return _local_ms(year, mon, day, h, mi, s)
        except (ValueError, OverflowError):
            return now_ms
    this_year = _year_of(now_ms)
    for y in (this_year + 1, this_year, this_year - 1):
        try:
            t = _local_ms(y, mon, day, h, mi, s)
        except ValueError:
            continue
        if t <= now_ms + DAY_MS:
            return t
    return now_ms


@functools.lru_cache(maxsize=4096)
def _utc_seconds(stamp: bytes) -> int | None:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM:SS`` read as UTC, None if no valid date (cached:
    a sender's stamps share their second)."""
    y, mo, d, h, mi, s = (int(stamp[i:j]) for i, j in ((0, 4), (5, 7), (8, 10), (11, 13),
                                                      (14, 16), (17, 19)))
    if (y == 0 or not 1 <= mo <= 12 or not 1 <= d <= calendar.monthrange(y, mo)[1]
            or h > 23 or mi > 59 or s > 60):
        return None
    return calendar.timegm((y, mo, d, h, mi, min(s, 59)))    # a leap second: :59


def _parse_rfc3339(m: re.Match) -> int | None:
    """Epoch ms of an :data:`_RE_3339` match, or None if it is no valid date."""
    secs = _utc_seconds(m.group(1))
    if secs is None:
        return None
    ms = secs * 1000
    frac = m.group(2)
    if frac:
        ms += int((frac + b"00")[:3])
    if not m.group(3):
        oh, om = int(m.group(5)), int(m.group(6))
        if oh > 23 or om > 59:
            return None
        off = (oh * 60 + om) * 60_000
        ms += -off if m.group(4) == b"+" else off
    return ms


def _looks_like_host(token: bytes) -> bool:
    return not (token.endswith(b":") or b"[" in token)


def _split_tag(content: bytes, attrs: dict[str, bytes]) -> bytes:
    """MSG of RFC 3164 CONTENT; ``TAG[PID]:`` goes to appname and procid."""
    m = _RE_TAG.match(content)
    if m is None:
        return content
    attrs[APPNAME] = m.group(1)
    if m.group(2) is not None:
        attrs[PROCID] = m.group(2)
    return content[m.end():]


def _strip_bom(msg: bytes) -> bytes:
    return msg[3:] if msg.startswith(_BOM) else msg


def _parse_sd(data: bytes, i: int, attrs: dict[str, bytes]) -> int:
    """Parses the STRUCTURED-DATA starting at ``data[i]`` into ``sd.*`` attributes; the index
    just after it, or -1 if it is broken (then ``attrs`` may hold part of it)."""
    if data[i:i + 1] == _NIL:
        return i + 1
    m = _RE_SD_ELEMENT.match(data, i)
    if m is None:
        return -1
    kept = dropped = 0
    while m is not None:
        prefix = SD_PREFIX + m.group(1).decode("utf-8", "replace") + "."
        for name, value in _RE_SD_PARAM.findall(m.group(2)):
            if kept >= MAX_SD_PARAMS:    # each attribute costs ~100 bytes of objects
                dropped += 1
                continue
            if b"\\" in value:
                value = _RE_SD_ESCAPE.sub(rb"\1", value)
            attrs.setdefault(prefix + name.decode("utf-8", "replace"), value)
            kept += 1
        i = m.end()
        m = _RE_SD_ELEMENT.match(data, i)
    if dropped:
        attrs[SD_DROPPED] = str(dropped).encode()
    return i


def _parse_5424(rest: bytes, attrs: dict[str, bytes], now_ms: int
                ) -> tuple[int, bytes | None, bytes] | str:
    """(time, hostname or None, MSG) of an RFC 5424 message after ``<PRI>1 ``, filling
    ``attrs``; or the reason it is malformed."""
    parts = rest.split(b" ", 5)
    if len(parts) < 6:
        return "RFC 5424 header incomplete"
    ts, host, app, procid, msgid, tail = parts
    if not all((ts, host, app, procid, msgid)):
        return "RFC 5424 header has an empty field"
    for key, value in ((HOSTNAME, host), (APPNAME, app), (PROCID, procid), (MSGID, msgid)):
        if value != _NIL:
            attrs[key] = value
    end = _parse_sd(tail, 0, attrs)
    if end < 0 or (end < len(tail) and tail[end] != 0x20):
        return "RFC 5424 structured data broken"
    t = None
    if ts != _NIL:
        m = _RE_3339.fullmatch(ts)
        t = _parse_rfc3339(m) if m else None
    return (now_ms if t is None else t, None if host == _NIL else host,
            _strip_bom(tail[end + 1:]))


def _parse_3164(rest: bytes, attrs: dict[str, bytes], now_ms: int
                ) -> tuple[int, bytes | None, bytes] | None:
    """(time, hostname or None, MSG) of an RFC 3164 message after ``<PRI>``, filling
    ``attrs``; None if it has no timestamp."""
    host = None
    cisco = _RE_CISCO_PREFIX.match(rest)
    if cisco is not None:
        host = cisco.group(1)
        rest = rest[cisco.end():]
    m = _RE_3164.match(rest)
    if m is not None and (mon := _MONTHS.get(m.group(1))) is not None:
        year = m.group(3) or m.group(8)
        t = _parse_3164_stamp(mon, int(m.group(2)), int(year) if year else None,
                              int(m.group(4)), int(m.group(5)), int(m.group(6)), now_ms)
        if m.group(7):
            t += int((m.group(7) + b"00")[:3])
        rest = rest[m.end():]
        if m.group(9):                     # "hh:mm:ss:" -- Cisco: the MSG follows
            if host is not None:
                attrs[HOSTNAME] = host
            return t, host, _strip_bom(rest)
    else:
        m = _RE_3339.match(rest)
        if m is None or rest[m.end():m.end() + 1] not in (b" ", b""):
            return None
        t = _parse_rfc3339(m)
        if t is None:
            t = now_ms
        rest = rest[m.end() + 1:]
    if host is None:
        sp = rest.find(b" ")
        token = rest if sp < 0 else rest[:sp]
        if token and _looks_like_host(token):
            host = token
            rest = b"" if sp < 0 else rest[sp + 1:]
    if host is not None:
        attrs[HOSTNAME] = host
    return t, host, _strip_bom(_split_tag(rest, attrs))


def parse_message(raw: bytes, now_ms: int, peer: str | None = None,
                  nanos: int | None = None) -> tuple[Event, int]:
    """One syslog message without its framing -> (event, status): see the module docstring.
    ``peer`` (the sender's address) is the host when the header names none."""
    nanos = time.monotonic_ns() if nanos is None else nanos
    fallback_host = peer or LOCAL_HOST
    gt = raw.find(b">", 1, 5)
    pri = -1
    if raw[:1] == b"<" and gt > 1 and raw[1:gt].isdigit() and (gt == 2 or raw[1] != 0x30):
        pri = int(raw[1:gt])
    if not 0 <= pri <= 191:
        return Event(raw, now_ms, nanos, Priority.INFO, fallback_host,
                     {MALFORMED_ATTR: b"no valid <PRI>"}), MALFORMED
    fac, sev = pri >> 3, pri & 7
    attrs = {FACILITY: _FACILITY_BYTES[fac], SEVERITY: _SEVERITY_BYTES[sev]}
    prio = SEVERITY_PRIORITY[sev]
    rest = raw[gt + 1:]
    if rest[:2] == b"1 ":
        parsed = _parse_5424(rest[2:], attrs, now_ms)
        if isinstance(parsed, str):
            attrs = {FACILITY: attrs[FACILITY], SEVERITY: attrs[SEVERITY],
                     MALFORMED_ATTR: parsed.encode()}
            return Event(raw, now_ms, nanos, prio, fallback_host, attrs), MALFORMED
        status = OK
    else:
        parsed = _parse_3164(rest, attrs, now_ms)
        if parsed is None:
            parsed = (now_ms, None, _strip_bom(_split_tag(rest, attrs)))
            status = NOHEADER
        else:
            status = OK
    ts, host, msg = parsed
    hoststr = fallback_host if host is None else host.decode("utf-8", "replace")
    return Event(msg, ts, nanos, prio, hoststr, attrs), status


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

    A frame starting with a digit is RFC 6587 octet-counted (``LEN SP MSG``; a LF or CR LF
    ending MSG is dropped); any other is terminated by LF (a CR before the LF is dropped).
    Both may alternate on one connection. A frame longer than ``max_frame`` is
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
                    frame = buf[start:end]
                    # senders that count the line's LF in (logger, some appliances):
                    # framing, not message -- as rsyslog's DropTrailingLFOnReception
                    if frame.endswith(b"\n"):
                        frame = frame[:-2] if frame.endswith(b"\r\n") else frame[:-1]
                    frames.append(frame)
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
