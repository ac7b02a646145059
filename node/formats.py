"""Output formats and whole-file compression.

A format turns batches of events into bytes. It is a spec value: ``console(json)``,
``text("f", "json")``, ``escapedFormatDfs("dir", "f", avrodata("deflate"))`` -- a string
literal or a function; an unknown name is a ValueError listing the known ones.

Formats (one line per event unless said otherwise):

* ``raw`` -- the body and a newline.
* ``json`` -- ``{"timestamp", "nanos", "priority", "host", "body", "attrs"}``. The body is
  a string when it is valid UTF-8; otherwise it is base64 and the object carries
  ``"body_encoding": "base64"``. Likewise an attribute whose value is not valid UTF-8 is
  base64 and named in ``"attrs_encoding": {"name": "base64"}``. Lossless:
  :func:`decode_json` gives the event back.
* ``debug`` -- ``host [PRIORITY Sun Sep 13 12:26:40 UTC 2020] { k : v } body``, OG's
  human-readable form: attributes sorted, body and values with control characters escaped.
* ``syslog`` -- the syslog wire line ``<pri>body``, as OG's syslog writer sent it: the
  priority comes from the ``syslogfacility``/``syslogseverity`` attributes the syslog
  sources set (ASCII digits or OG's single raw byte), else facility user and a severity
  mapped from the event priority. The syslog sources keep only MSG in the body: for the
  whole message back, use ``syslog5424``.
* ``syslog5424([framing="lf|octet"])`` -- RFC 5424 messages rebuilt from the event and the
  attributes the syslog sources set (:class:`Syslog5424Format`, ``docs/syslog.md``).
* ``log4j`` -- ``2020-09-13 12:26:40,123 INFO log4j: body``, the log4j ISO8601 layout
  Hadoop logs use (OG wrote a mangled ``yyyy-MM-dd'T'HH:mm:ss:Z`` date here).
* ``avrojson`` -- Avro's JSON encoding of the record :data:`AVRO_SCHEMA`, one per line
  (bytes as Avro JSON strings of code points 0-255); readable with ``fastavro.json_reader``.
* ``avrodata([codec])`` -- an Avro object container file of the same schema (a header,
  then blocks); ``codec`` is null (default), deflate, bzip2 or xz.

Dates in ``debug`` and ``log4j`` are local time.

Writing: ``w = fmt.open_writer(binary_file)``; ``w.write(events)`` returns the number of
bytes handed to the file (one ``write`` call per batch for line formats); ``w.flush()``
pushes what the format holds back (an Avro block) into the file and flushes the file;
``w.close()`` flushes and ends the format's own framing but never closes the file: the sink
owns it. ``fmt.container`` is True for formats with a per-file header (``avrodata``): such
a file can only be appended to through a readable handle (``"a+b"``).

Compression wraps the binary file: :func:`open_compressed` with ``none``, ``gzip`` or
**[beyond]** ``zstd``; its ``close`` ends the compressed stream and leaves the file open.
"""
from __future__ import annotations

import base64
import gzip
import json
import time
from typing import BinaryIO, Callable

from .escapes import to_struct, zone_offset
from .event import Event, Priority, columns
from .spec import Func, Lit

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class _PerSecond:
    """Caches ``fn(second)`` for recent seconds: one date format per second, not per event."""

    __slots__ = ("fn", "cache")

    def __init__(self, fn: Callable[[int], str]):
        self.fn = fn
        self.cache: dict[int, str] = {}

    def __call__(self, sec: int) -> str:
        r = self.cache.get(sec)
        if r is None:
            if len(self.cache) >= 4096:
                self.cache.clear()
            r = self.cache[sec] = self.fn(sec)
        return r


def _java_date(sec: int) -> str:
    """``Sun Sep 13 12:26:40 UTC 2020`` (java.util.Date.toString, local time)."""
    tm = time.localtime(sec)
    return (f"{_DAYS[tm.tm_wday]} {_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:02d} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {tm.tm_zone or zone_offset(tm)} "
            f"{tm.tm_year}")


def _iso_date(sec: int) -> str:
    """``2020-09-13 12:26:40`` local time (the milliseconds are added per event)."""
    tm = to_struct(sec, False)
    return (f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")


# Control characters as escapes, so one event stays one line in human-readable formats.
_ESCAPE_TABLE = {i: f"\\u{i:04x}" for i in list(range(0x20)) + [0x7f]}
_ESCAPE_TABLE.update({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r",
                      ord("\t"): "\\t", ord("\b"): "\\b", ord("\f"): "\\f"})


def escape_text(data: bytes) -> str:
    return data.decode("utf-8", "replace").translate(_ESCAPE_TABLE)


# ---------------------------------------------------------------- compression

COMPRESSIONS = {"none": "", "gzip": ".gz", "zstd": ".zst"}


class Compression:
    """Whole-file compression: ``none``, ``gzip`` or ``zstd`` (a string or a bare name)."""

    spec_type_name = "compression"

    def __init__(self, name: str = "none"):
        name = {"gz": "gzip", "zst": "zstd", "zstandard": "zstd", "": "none"}.get(name, name)
        if name not in COMPRESSIONS:
            raise ValueError(f"unknown compression {name}; known: "
                             + ", ".join(COMPRESSIONS))
        self.name = name

    @property
    def extension(self) -> str:
        return COMPRESSIONS[self.name]

    @classmethod
    def of(cls, value: "Compression | str | None") -> "Compression":
        if isinstance(value, Compression):
            return value
        return cls(value or "none")

    @classmethod
    def from_spec(cls, value) -> "Compression":
        if isinstance(value, Lit) and value.kind == "string":
            return cls(value.value)
        if isinstance(value, Func) and not value.args and not value.kwargs:
            return cls(value.name)
        raise ValueError("compression must be \"none\", \"gzip\" or \"zstd\"")

    def __eq__(self, other) -> bool:
        return isinstance(other, Compression) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return f'"{self.name}"'

    def __repr__(self) -> str:
        return f"Compression({self.name!r})"


def open_compressed(raw: BinaryIO, compression: "Compression | str | None") -> BinaryIO:
    """A writable stream compressing into ``raw`` (``raw`` itself for none). Its ``flush``
    makes everything written so far decodable; its ``close`` ends the stream (gzip trailer,
    zstd frame end) and leaves ``raw`` open."""
    c = Compression.of(compression)
    if c.name == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)
    if c.name == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
    return raw


# ---------------------------------------------------------------- formats

class FormatWriter:
    """Writes batches of one line format to a binary file (see the module docstring)."""

    __slots__ = ("encode", "file")

    def __init__(self, encode: Callable[[list[Event]], bytes], file: BinaryIO):
        self.encode = encode
        self.file = file

    def write(self, events: list[Event]) -> int:
        if not events:
            return 0
        data = self.encode(events)
        self.file.write(data)
        return len(data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.flush()


class OutputFormat:
    """Base of the formats. Line formats implement ``encode(events) -> bytes``."""

    name = "?"
    container = False
    spec_type_name = "format"

    def encode(self, events: list[Event]) -> bytes:
        raise NotImplementedError

    def open_writer(self, file: BinaryIO) -> FormatWriter:
        return FormatWriter(self.encode, file)

    # -- spec value

    @classmethod
    def get(cls, name: str, *args, **kwargs) -> "OutputFormat":
        """The format ``name`` built with ``args`` (ValueError if unknown or bad args)."""
        fmt_cls = FORMATS.get(name)
        if fmt_cls is None:
            raise ValueError(f"unknown output format {name}; known: "
                             + ", ".join(sorted(FORMATS)))
        try:
            return fmt_cls(*args, **kwargs)
        except TypeError:
            raise ValueError(f"bad arguments for output format {name}; usage: "
                             f"{fmt_cls.usage}") from None

    @classmethod
    def from_spec(cls, value) -> "OutputFormat":
        if isinstance(value, OutputFormat):
            return value
        if isinstance(value, Lit):
            if value.kind != "string":
                raise ValueError(f"an output format is a name such as json or \"json\", "
                                 f"got {value.kind} {value.value!r}")
            return cls.get(value.value)
        if isinstance(value, Func):
            args = [a.value if isinstance(a, Lit) else a.name for a in value.args]
            kwargs = {k: (v.value if isinstance(v, Lit) else v.name) for k, v in value.kwargs}
            return cls.get(value.name, *args, **kwargs)
        raise ValueError(f"not an output format: {value!r}")

    @classmethod
    def of(cls, value: "OutputFormat | str | None", default: str = "raw") -> "OutputFormat":
        """Accepts a built format, a name, or None (the default)."""
        if value is None:
            return cls.get(default)
        if isinstance(value, str):
            return cls.get(value)
        return value

    usage = "?"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<format {self}>"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))


class RawFormat(OutputFormat):
    name, usage = "raw", "raw"

    def encode(self, events: list[Event]) -> bytes:
        if not events:
            return b"\n"
        b = columns(events)
        bodies = [e.body for e in events] if b is None else list(b.bodies)
        bodies.append(b"")      # the last newline, without copying the batch once more
        return b"\n".join(bodies)


_PRIO_NAMES = tuple(p.name for p in Priority)
_json_str = json.encoder.encode_basestring  # C: a JSON string literal, non-ASCII kept


class JsonFormat(OutputFormat):
    name, usage = "json", "json"

    def encode(self, events: list[Event]) -> bytes:
        # Built by hand from escaped string literals: several times faster than json.dumps
        # of a dict per event, and the same output.
        out = []
        for e in events:
            try:
                body, extra = _json_str(e.body.decode("utf-8")), ""
            except UnicodeDecodeError:
                body = '"' + base64.b64encode(e.body).decode("ascii") + '"'
                extra = ', "body_encoding": "base64"'
            if e.attrs:
                items, enc = [], []
                for k, v in e.attrs.items():
                    try:
                        items.append(f"{_json_str(k)}: {_json_str(v.decode('utf-8'))}")
                    except UnicodeDecodeError:
                        b64 = base64.b64encode(v).decode("ascii")
                        items.append(f'{_json_str(k)}: "{b64}"')
                        enc.append(f'{_json_str(k)}: "base64"')
                attrs = "{" + ", ".join(items) + "}"
                if enc:
                    extra += ', "attrs_encoding": {' + ", ".join(enc) + "}"
            else:
                attrs = "{}"
            out.append(f'{{"timestamp": {e.timestamp}, "nanos": {e.nanos}, '
                       f'"priority": "{_PRIO_NAMES[e.priority]}", "host": {_json_str(e.host)}, '
                       f'"body": {body}, "attrs": {attrs}{extra}}}\n')
        return "".join(out).encode("utf-8", "surrogatepass")


def decode_json(line: "str | bytes") -> Event:
    """The event of one ``json`` format line."""
    d = json.loads(line)
    body = d["body"]
    body = (base64.b64decode(body) if d.get("body_encoding") == "base64"
            else body.encode("utf-8"))
    enc = d.get("attrs_encoding", {})
    attrs = {k: base64.b64decode(v) if enc.get(k) == "base64" else v.encode("utf-8")
             for k, v in d.get("attrs", {}).items()}
    return Event(body, d["timestamp"], d["nanos"], Priority[d["priority"]], d["host"], attrs)


class DebugFormat(OutputFormat):
    name, usage = "debug", "debug"

    def __init__(self):
        self._date = _PerSecond(_java_date)

    def encode(self, events: list[Event]) -> bytes:
        date = self._date
        out = []
        for e in events:
            if e.attrs:
                attrs = "".join(f"{{ {k} : {escape_text(e.attrs[k])} }} "
                                for k in sorted(e.attrs))
            else:
                attrs = ""
            out.append(f"{e.host} [{_PRIO_NAMES[e.priority]} {date(e.timestamp // 1000)}] "
                       f"{attrs}{escape_text(e.body)}\n")
        return "".join(out).encode("utf-8", "replace")


# flume priority -> syslog severity (FATAL->emerg, ERROR->err, WARN->warning,
# INFO->notice, DEBUG and TRACE->debug), OG's fallback when no syslog attributes exist.
_PRIO_TO_SEVERITY = (0, 3, 4, 5, 7, 7)


def _syslog_number(v: bytes | None) -> int | None:
    if not v:
        return None
    if v.isdigit():
        return int(v)
    if len(v) == 1:
        return v[0]  # OG stored the number as one raw byte
    return None


def syslog_pri(e: Event) -> int:
    """The syslog PRI of an event (facility * 8 + severity)."""
    fac = _syslog_number(e.attrs.get("syslogfacility"))
    sev = _syslog_number(e.attrs.get("syslogseverity"))
    if fac is None or not 0 <= fac <= 23:
        fac = 1
    if sev is None or not 0 <= sev <= 7:
        sev = _PRIO_TO_SEVERITY[int(e.priority)]
    return fac * 8 + sev


class SyslogFormat(OutputFormat):
    name, usage = "syslog", "syslog"

    def encode(self, events: list[Event]) -> bytes:
        out = []
        for e in events:
            if e.attrs:
                pri = syslog_pri(e)
            else:
                pri = 8 + _PRIO_TO_SEVERITY[e.priority]
            out.append(b"<%d>%b\n" % (pri, e.body))
        return b"".join(out)


_YEAR_10000_MS = 253_402_300_800_000   # 10000-01-01T00:00:00Z


def _gm_iso(sec: int) -> str:
    """``2020-09-13T12:26:40`` UTC (the milliseconds and ``Z`` are added per event)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def _field_table(exclude: bytes) -> bytes:
    """bytes.translate table: PRINTUSASCII (33-126) minus ``exclude`` kept, others ``_``."""
    return bytes(c if 33 <= c <= 126 and c not in exclude else 0x5F for c in range(256))


_HEADER_FIELD = _field_table(b"")
_SD_NAME = _field_table(b'= ]"')
_SD_VALUE_ESCAPES = ((b"\\", b"\\\\"), (b'"', b'\\"'), (b"]", b"\\]"))


def _header_field(value: bytes | None, limit: int) -> bytes:
    """An RFC 5424 header field: PRINTUSASCII, at most ``limit`` bytes, ``-`` when empty."""
    return value[:limit].translate(_HEADER_FIELD) if value else b"-"


def _structured_data(attrs: dict[str, bytes]) -> bytes:
    """STRUCTURED-DATA from the ``sd.<SD-ID>.<PARAM-NAME>`` attributes, in their order (the
    SD-ID is what lies before the last dot), or ``-``."""
    elements: dict[bytes, list[bytes]] = {}
    for k, v in attrs.items():
        if not k.startswith("sd."):
            continue
        sd_id, dot, name = k[3:].rpartition(".")
        if not sd_id or not name:
            continue
        for a, b in _SD_VALUE_ESCAPES:
            v = v.replace(a, b)
        elements.setdefault(sd_id.encode()[:32].translate(_SD_NAME), []).append(
            b'%b="%b"' % (name.encode()[:32].translate(_SD_NAME), v))
    if not elements:
        return b"-"
    return b"".join(b"[%b %b]" % (i, b" ".join(p)) for i, p in elements.items())


class Syslog5424Format(OutputFormat):
    """RFC 5424 messages, the inverse of what the syslog sources parse (docs/syslog.md).

    ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG``: PRI as in
    ``syslog``; the event time in UTC with milliseconds; HOSTNAME from ``syslog.hostname``,
    else the event host; APP-NAME, PROCID, MSGID from ``syslog.appname``, ``syslog.procid``,
    ``syslog.msgid`` (nil ``-`` when absent), each cut to RFC 5424's length (255, 48, 128,
    32) with any byte outside printable ASCII written ``_``; the ``sd.*`` attributes as
    structured data, values escaped; the body as MSG, unchanged. ``framing``: ``lf`` ends
    each message with LF (a file: a body holding LF spans lines), ``octet`` writes RFC 6587
    octet counting ``LEN SP MESSAGE`` (a stream that any body survives).
    """

    name, usage = "syslog5424", 'syslog5424([framing="lf|octet"])'

    def __init__(self, framing: str = "lf"):
        if framing not in ("lf", "octet"):
            raise ValueError(f"unknown syslog framing {framing}; known: lf, octet")
        self.framing = framing
        self._date = _PerSecond(_gm_iso)

    def message(self, e: Event) -> bytes:
        """One event as an RFC 5424 message, without framing."""
        a = e.attrs
        if 0 <= e.timestamp < _YEAR_10000_MS:
            stamp = f"{self._date(e.timestamp // 1000)}.{e.timestamp % 1000:03d}Z".encode()
        else:     # RFC 5424 has four-digit years: a time it cannot write is NILVALUE
            stamp = b"-"
        host = a.get("syslog.hostname") or e.host.encode("utf-8", "replace")
        head = b"<%d>1 %b %b %b %b %b %b" % (
            syslog_pri(e), stamp, _header_field(host, 255),
            _header_field(a.get("syslog.appname"), 48), _header_field(a.get("syslog.procid"), 128),
            _header_field(a.get("syslog.msgid"), 32), _structured_data(a) if a else b"-")
        return head + b" " + e.body if e.body else head

    def encode(self, events: list[Event]) -> bytes:
        msgs = [self.message(e) for e in events]
        if self.framing == "octet":
            return b"".join([b"%d %b" % (len(m), m) for m in msgs])
        return b"\n".join(msgs) + b"\n"

    def __str__(self) -> str:
        return "syslog5424" if self.framing == "lf" else f'syslog5424("{self.framing}")'


class Log4jFormat(OutputFormat):
    name, usage = "log4j", "log4j"

    def __init__(self):
        self._date = _PerSecond(_iso_date)

    def encode(self, events: list[Event]) -> bytes:
        date = self._date
        return "".join([f"{date(e.timestamp // 1000)},{e.timestamp % 1000:03d} "
                        f"{_PRIO_NAMES[e.priority]} log4j: {escape_text(e.body)}\n"
                        for e in events]).encode("utf-8", "replace")


AVRO_SCHEMA = {
    "type": "record",
    "name": "Event",
    "namespace": "flume",
    "fields": [
        {"name": "timestamp", "type": "long"},
        {"name": "nanos", "type": "long"},
        {"name": "priority", "type": {"type": "enum", "name": "Priority",
                                      "symbols": [p.name for p in Priority]}},
        {"name": "host", "type": "string"},
        {"name": "body", "type": "bytes"},
        {"name": "attrs", "type": {"type": "map", "values": "bytes"}},
    ],
}


def event_from_avro(r: dict) -> Event:
    return Event(r["body"], r["timestamp"], r["nanos"], Priority[r["priority"]], r["host"],
                 dict(r["attrs"]))


class AvroJsonFormat(OutputFormat):
    name, usage = "avrojson", "avrojson"

    def encode(self, events: list[Event]) -> bytes:
        # Avro's JSON encoding of bytes is a string of code points 0-255: latin-1.
        q = json.encoder.encode_basestring_ascii
        out = []
        for e in events:
            if e.attrs:
                attrs = "{" + ", ".join([f"{q(k)}: {q(v.decode('latin-1'))}"
                                         for k, v in e.attrs.items()]) + "}"
            else:
                attrs = "{}"
            out.append(f'{{"timestamp": {e.timestamp}, "nanos": {e.nanos}, '
                       f'"priority": "{_PRIO_NAMES[e.priority]}", "host": {q(e.host)}, '
                       f'"body": {q(e.body.decode("latin-1"))}, "attrs": {attrs}}}\n')
        return "".join(out).encode("ascii")


_AVRO_CODECS = ("null", "deflate", "bzip2", "xz")


class AvroWriter:
    """An Avro container on a binary file. Records are buffered in blocks of about 64 KiB;
    ``flush`` ends the current block."""

    def __init__(self, file: BinaryIO, codec: str):
        import fastavro
        self.file = file
        self._w = fastavro.write.Writer(file, _parsed_schema(), codec=codec,
                                        sync_interval=64 * 1024)

    def write(self, events: list[Event]) -> int:
        """Returns an estimate of the encoded size (the block encoder buffers; exact sizes
        show in the file itself)."""
        w = self._w.write
        n = 0
        for e in events:
            w({"timestamp": e.timestamp, "nanos": e.nanos, "priority": _PRIO_NAMES[e.priority],
               "host": e.host, "body": e.body, "attrs": e.attrs})
            n += len(e.body)
        return n + 24 * len(events)

    def flush(self) -> None:
        self._w.flush()

    def close(self) -> None:
        self._w.flush()


_PARSED = None


def _parsed_schema():
    global _PARSED
    if _PARSED is None:
        import fastavro
        _PARSED = fastavro.parse_schema(AVRO_SCHEMA)
    return _PARSED


class AvroDataFormat(OutputFormat):
    name, usage = "avrodata", "avrodata([codec=\"null|deflate|bzip2|xz\"])"
    container = True

    def __init__(self, codec: str = "null"):
        if codec not in _AVRO_CODECS:
            raise ValueError(f"unknown avro codec {codec}; known: " + ", ".join(_AVRO_CODECS))
        self.codec = codec

    def open_writer(self, file: BinaryIO) -> AvroWriter:
        return AvroWriter(file, self.codec)

    def encode(self, events: list[Event]) -> bytes:
        raise TypeError("avrodata is a container format: use open_writer")

    def __str__(self) -> str:
        return "avrodata" if self.codec == "null" else f'avrodata("{self.codec}")'


FORMATS: dict[str, type[OutputFormat]] = {
    f.name: f for f in (RawFormat, JsonFormat, DebugFormat, SyslogFormat, Syslog5424Format,
                        Log4jFormat, AvroJsonFormat, AvroDataFormat)
}
