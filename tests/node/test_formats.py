"""Output formats, their spec values, and whole-file compression."""
from __future__ import annotations

import gzip
import io
import json
import time

import fastavro
import pytest
import zstandard

from flume_og.node.event import Event, Priority
from flume_og.node.formats import (AVRO_SCHEMA, FORMATS, Compression, OutputFormat, decode_json,
                                   event_from_avro, open_compressed, syslog_pri)
from flume_og.node.spec import Func, Lit

TS = 1_600_000_000_123  # 2020-09-13 12:26:40.123 UTC


@pytest.fixture
def utc_tz(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def sample() -> list[Event]:
    return [
        Event(b"GET /index.html 200", TS, 7, Priority.INFO, "web1", {"svc": b"nginx"}),
        Event(b"tab\there\nnewline", TS + 1000, 8, Priority.ERROR, "web2", {}),
        Event(b"\xff\xfe binary \x00", TS + 2000, 9, Priority.DEBUG, "web3",
              {"raw": b"\x80\x81", "text": b"ok"}),
    ]


def write_all(fmt: OutputFormat, events, batches=1) -> bytes:
    buf = io.BytesIO()
    w = fmt.open_writer(buf)
    step = max(1, len(events) // batches)
    for i in range(0, len(events), step):
        w.write(events[i:i + step])
    w.close()
    return buf.getvalue()


def test_raw():
    assert write_all(OutputFormat.get("raw"), sample()) == \
        b"GET /index.html 200\ntab\there\nnewline\n\xff\xfe binary \x00\n"


def test_raw_writes_once_per_batch():
    class Counting(io.BytesIO):
        calls = 0

        def write(self, b):
            Counting.calls += 1
            return super().write(b)

    f = Counting()
    w = OutputFormat.get("raw").open_writer(f)
    w.write([Event(b"x%d" % i, TS) for i in range(1000)])
    w.write([])
    assert Counting.calls == 1
    assert f.getvalue().count(b"\n") == 1000


def test_json_is_lossless_and_readable():
    evs = sample()
    lines = write_all(OutputFormat.get("json"), evs).splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first == {"timestamp": TS, "nanos": 7, "priority": "INFO", "host": "web1",
                     "body": "GET /index.html 200", "attrs": {"svc": "nginx"}}
    third = json.loads(lines[2])
    assert third["body_encoding"] == "base64"
    assert third["attrs_encoding"] == {"raw": "base64"}
    assert third["attrs"]["text"] == "ok"
    assert [decode_json(line) for line in lines] == evs


def test_debug_line(utc_tz):
    out = write_all(OutputFormat.get("debug"), sample()).decode()
    lines = out.split("\n")
    assert lines[0] == "web1 [INFO Sun Sep 13 12:26:40 UTC 2020] { svc : nginx } GET /index.html 200"
    assert lines[1] == "web2 [ERROR Sun Sep 13 12:26:41 UTC 2020] tab\\there\\nnewline"
    assert lines[2].startswith("web3 [DEBUG Sun Sep 13 12:26:42 UTC 2020] "
                               "{ raw : \ufffd\ufffd } { text : ok } ")
    assert lines[2].endswith("binary \\u0000")
    assert lines[3] == "" and len(lines) == 4


def test_log4j_line(utc_tz):
    out = write_all(OutputFormat.get("log4j"), sample()[:2]).decode()
    assert out == ("2020-09-13 12:26:40,123 INFO log4j: GET /index.html 200\n"
                   "2020-09-13 12:26:41,123 ERROR log4j: tab\\there\\nnewline\n")


def test_syslog_priority():
    fmt = OutputFormat.get("syslog")
    e = Event(b"Sep 13 12:26:40 web1 sshd[1]: hi", TS, 0, Priority.INFO, "h",
              {"syslogfacility": b"4", "syslogseverity": b"6"})
    assert fmt.encode([e]) == b"<38>Sep 13 12:26:40 web1 sshd[1]: hi\n"
    # OG's single raw byte attributes
    e.attrs = {"syslogfacility": b"\x10", "syslogseverity": b"\x03"}
    assert syslog_pri(e) == 16 * 8 + 3
    # no attributes: facility user, severity from the priority
    plain = [Event(b"m", TS, 0, p, "h", {}) for p in Priority]
    assert fmt.encode(plain) == b"<8>m\n<11>m\n<12>m\n<13>m\n<15>m\n<15>m\n"
    # out-of-range values fall back as well
    bad = Event(b"m", TS, 0, Priority.WARN, "h", {"syslogfacility": b"99",
                                                  "syslogseverity": b"x y"})
    assert syslog_pri(bad) == 8 + 4


def test_avrojson_reads_back_with_fastavro():
    data = write_all(OutputFormat.get("avrojson"), sample(), batches=3)
    assert data.count(b"\n") == 3
    records = list(fastavro.json_reader(io.StringIO(data.decode("ascii")), AVRO_SCHEMA))
    assert [event_from_avro(r) for r in records] == sample()


@pytest.mark.parametrize("codec", ["null", "deflate", "bzip2", "xz"])
def test_avrodata_container_reads_back(codec):
    fmt = OutputFormat.get("avrodata", codec)
    assert fmt.container
    evs = sample() * 500
    data = write_all(fmt, evs, batches=5)
    reader = fastavro.reader(io.BytesIO(data))
    assert reader.metadata["avro.codec"] == codec
    assert [event_from_avro(r) for r in reader] == evs


def test_avrodata_appends_to_an_existing_container(tmp_path):
    path = tmp_path / "a.avro"
    fmt = OutputFormat.get("avrodata")
    with open(path, "a+b") as f:
        w = fmt.open_writer(f)
        w.write(sample()[:1])
        w.close()
    with open(path, "a+b") as f:
        w = fmt.open_writer(f)
        w.write(sample()[1:])
        w.close()
    with open(path, "rb") as f:
        assert [event_from_avro(r) for r in fastavro.reader(f)] == sample()


@pytest.mark.parametrize("compression,decompress", [
    ("gzip", gzip.decompress),
    ("zstd", lambda b: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(b)).read()),
    ("none", lambda b: b),
])
@pytest.mark.parametrize("name", ["raw", "json", "avrodata"])
def test_compression_round_trip(compression, decompress, name):
    raw = io.BytesIO()
    stream = open_compressed(raw, compression)
    w = OutputFormat.get(name).open_writer(stream)
    evs = sample() * 100
    w.write(evs[:150])
    w.flush()
    w.write(evs[150:])
    w.close()
    if stream is not raw:
        stream.close()
    assert not raw.closed  # the sink owns the file
    plain = decompress(raw.getvalue())
    if name == "raw":
        assert plain == b"".join(e.body + b"\n" for e in evs)
    elif name == "json":
        assert [decode_json(x) for x in plain.splitlines()] == evs
    else:
        assert [event_from_avro(r) for r in fastavro.reader(io.BytesIO(plain))] == evs


def test_compressed_flush_makes_data_readable_before_close():
    raw = io.BytesIO()
    stream = open_compressed(raw, "zstd")
    stream.write(b"abc\n")
    stream.flush()
    dec = zstandard.ZstdDecompressor().decompressobj()
    assert dec.decompress(raw.getvalue()) == b"abc\n"


def test_from_spec():
    assert str(OutputFormat.from_spec(Lit("json", "string"))) == "json"
    assert str(OutputFormat.from_spec(Func("avrojson"))) == "avrojson"
    assert str(OutputFormat.from_spec(Func("avrodata", (Lit("deflate", "string"),)))) == \
        'avrodata("deflate")'
    assert OutputFormat.from_spec(Func("avrodata", (), (("codec", Lit("xz", "string")),))) \
        == OutputFormat.get("avrodata", "xz")
    with pytest.raises(ValueError, match=r"unknown output format seqfile; known: avrodata, "
                                         r"avrojson, debug, json, log4j, raw, syslog, "
                                         r"syslog5424"):
        OutputFormat.from_spec(Func("seqfile", (Lit("bzip2", "string"),)))
    with pytest.raises(ValueError, match="unknown output format nope"):
        OutputFormat.from_spec(Lit("nope", "string"))
    with pytest.raises(ValueError, match="bad arguments for output format json"):
        OutputFormat.from_spec(Func("json", (Lit(1, "int"),)))
    with pytest.raises(ValueError, match="got int"):
        OutputFormat.from_spec(Lit(3, "int"))
    assert set(FORMATS) == {"raw", "json", "debug", "syslog", "syslog5424", "log4j",
                            "avrojson", "avrodata"}


def test_compression_spec():
    assert Compression.from_spec(Lit("gzip", "string")).extension == ".gz"
    assert Compression.from_spec(Func("zstd")).extension == ".zst"
    assert Compression.of(None).extension == ""
    with pytest.raises(ValueError, match="unknown compression lz4"):
        Compression.from_spec(Lit("lz4", "string"))
    with pytest.raises(ValueError):
        Compression.from_spec(Lit(1, "int"))


def test_json_format_speed():
    evs = [Event(b"x" * 100, TS + i, i, Priority.INFO, "h", {"a": b"b"})
           for i in range(50_000)]
    fmt = OutputFormat.get("json")
    t0 = time.perf_counter()
    for i in range(0, len(evs), 1000):
        fmt.encode(evs[i:i + 1000])
    assert time.perf_counter() - t0 < 3.0


# ------------------------------------------------------------------ syslog5424

def test_syslog5424_writes_the_header_fields_and_structured_data():
    fmt = OutputFormat.get("syslog5424")
    e = Event(b"disk \xc3\xa9 full\nsecond line", TS, 0, Priority.WARN, "ignored",
              {"syslogfacility": b"4", "syslogseverity": b"2", "syslog.hostname": b"web1",
               "syslog.appname": b"my app", "syslog.procid": b"42", "syslog.msgid": b"ID47",
               "sd.origin.ip": b"192.0.2.1", "sd.x@32473.q": b'a"b\\c]d',
               "sd.origin.software": b"flume", "sd.bad": b"no param", "other": b"x"})
    assert fmt.encode([e]) == (
        b'<34>1 2020-09-13T12:26:40.123Z web1 my_app 42 ID47 '
        b'[origin ip="192.0.2.1" software="flume"][x@32473 q="a\\"b\\\\c\\]d"] '
        b'disk \xc3\xa9 full\nsecond line\n')


def test_syslog5424_nil_fields_bounds_and_octet_framing():
    plain = Event(b"", TS, 0, Priority.ERROR, "h1", {})
    long_app = Event(b"m", TS, 0, Priority.INFO, "", {"syslog.appname": b"a" * 100,
                                                      "syslog.procid": b"\x00\xff"})
    assert OutputFormat.get("syslog5424").encode([plain, long_app]) == (
        b"<11>1 2020-09-13T12:26:40.123Z h1 - - - -\n"
        b"<13>1 2020-09-13T12:26:40.123Z - " + b"a" * 48 + b" __ - - m\n")
    octet = OutputFormat.get("syslog5424", "octet")
    assert str(octet) == 'syslog5424("octet")' and str(OutputFormat.get("syslog5424")) == \
        "syslog5424"
    m = b"<11>1 2020-09-13T12:26:40.123Z h1 - - - -"
    assert octet.encode([plain, plain]) == b"%d %s%d %s" % (len(m), m, len(m), m)
    assert OutputFormat.from_spec(Func("syslog5424", (Lit("octet", "string"),))) == octet
    assert OutputFormat.from_spec(Lit("syslog5424", "string")) == OutputFormat.get("syslog5424")
    with pytest.raises(ValueError, match="unknown syslog framing"):
        OutputFormat.get("syslog5424", "crlf")


def test_syslog5424_reads_back_as_it_was_parsed():
    from flume_og.node.sources._syslog_parse import SyslogFramer, parse_message
    raw = (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
           b'[exampleSDID@32473 iut="3" eventSource="Appl\\"i]c" eventID="1011"]'
           b'[examplePriority@32473 class="high"] An application\nevent log entry')
    ev, _ = parse_message(raw, 0, "peer", 7)
    frames, _ = SyslogFramer(1 << 16).feed(OutputFormat.get("syslog5424", "octet").encode([ev]))
    assert [parse_message(f, 0, "peer", 7)[0] for f in frames] == [ev]


@pytest.mark.parametrize("ts", [253_402_300_800_000, 2**62, -1000])
def test_syslog5424_writes_no_timestamp_it_cannot_write_in_four_digit_years(ts):
    out = OutputFormat.get("syslog5424").encode([Event(b"x", ts)])
    assert out.startswith(b"<13>1 - ") and out.endswith(b" x\n")
