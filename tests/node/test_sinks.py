"""The local sinks: console, text, the dfs family, syslogTcp, counter, null, fail, collect."""
from __future__ import annotations

import gzip
import io
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import fastavro
import pytest
import zstandard

from flume_og.node.checkpoint import Checkpoint, CheckpointStore
from flume_og.node.component import NodeContext
from flume_og.node.errors import SinkError, SpecError
from flume_og.node.event import Event, Priority
from flume_og.node.formats import decode_json, event_from_avro
from flume_og.node.builder import build_sink
from flume_og.node.sinks import collect, counter
from flume_og.node.sinks.dfs import DfsSink
from flume_og.node.sinks.text import TextSink
from flume_og.node.spec import parse_sink
from tests.waiting import wait_until as wait_for

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
TS = 1_600_000_000_000  # 2020-09-13 12:26:40 UTC


def events(n, start=0, ts=TS, host="h1", attrs=None):
    return [Event(b"line %05d" % i, ts, i, Priority.INFO, host, dict(attrs or {}))
            for i in range(start, start + n)]


def lines(n, start=0):
    return [b"line %05d" % i for i in range(start, start + n)]


def sink(spec: str):
    return build_sink(parse_sink(spec))




# ---------------------------------------------------------------- console

def test_console_writes_the_format_to_stdout(ctx, capsysbinary):
    s = sink("console(json)")
    s.open(ctx)
    s.append(events(2))
    s.close()
    out = capsysbinary.readouterr().out.splitlines()
    assert [decode_json(x) for x in out] == events(2)
    assert s.metrics["events_in"] == 2


def test_console_default_is_debug_and_flushes_each_batch(tmp_path):
    child = textwrap.dedent("""
        import sys
        from pathlib import Path
        from flume_og.node.checkpoint import CheckpointStore
        from flume_og.node.component import NodeContext
        from flume_og.node.event import Event
        from flume_og.node.builder import build_sink
        from flume_og.node.spec import parse_sink
        s = build_sink(parse_sink("console"))
        s.open(NodeContext("c", Path("."), CheckpointStore.in_memory()))
        s.append([Event(b"first", 1600000000000, 1, host="hA")])
        sys.stdin.readline()  # the parent must see "first" while we are still running
        s.append([Event(b"second", 1600000000000, 2, host="hA")])
        s.close()
    """)
    p = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=dict(os.environ, TZ="UTC"))
    try:
        ready, _, _ = select.select([p.stdout], [], [], 10)
        assert ready, "the first batch was not flushed"
        first = p.stdout.readline()
        assert first == b"hA [INFO Sun Sep 13 12:26:40 UTC 2020] first\n"
        p.stdin.write(b"go\n")
        p.stdin.flush()
        rest, _ = p.communicate(timeout=10)
        assert rest == b"hA [INFO Sun Sep 13 12:26:40 UTC 2020] second\n"
        assert p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- text

def test_text_appends_and_records_the_size_with_the_checkpoint(ctx, tmp_path):
    out = tmp_path / "out" / "t.log"  # a missing directory is created
    s = sink(f'text("{out}")')
    s.open(ctx)
    s.append(events(3))
    s.when_durable(Checkpoint({"src": 3}))
    assert ctx.store.get("src") == 3
    assert ctx.store.get(f"text:{out}") == out.stat().st_size == 33
    s.append(events(2, 3))
    s.close()
    assert out.read_bytes().splitlines() == lines(5)


def test_text_keeps_preexisting_content(make_ctx, tmp_path):
    out = tmp_path / "t.log"
    out.write_bytes(b"old\n")
    ctx = make_ctx("pre")
    s = TextSink(str(out))
    s.open(ctx)
    assert ctx.store.get(f"text:{out}") == 4  # recorded before anything is written
    s.append(events(1))
    s.close()
    assert out.read_bytes() == b"old\nline 00000\n"


KILL_CHILD = """
import os, signal, sys
from pathlib import Path
from flume_og.node.checkpoint import Checkpoint, CheckpointStore
from flume_og.node.component import NodeContext
from flume_og.node.event import Event
from flume_og.node.sinks.text import TextSink
data, out, fmt = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = NodeContext("k", data, CheckpointStore(data / "checkpoint.json"))
s = TextSink(out, fmt)
s.open(ctx)
ev = lambda a, b: [Event(b"line %05d" % i, 1600000000000, i) for i in range(a, b)]
s.append(ev(0, 100))
s.when_durable(Checkpoint({"src": 100}))
s.append(ev(100, 150))
s.writer.flush()  # the uncommitted lines really are in the file
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("fmt", ["raw", "avrodata"])
def test_text_is_exactly_once_across_sigkill(tmp_path, fmt):
    data, out = tmp_path / "data", tmp_path / "out.log"
    data.mkdir()
    r = subprocess.run([sys.executable, "-c", KILL_CHILD, str(data), str(out), fmt],
                       cwd=ROOT, timeout=30)
    assert r.returncode == -9
    killed_size = out.stat().st_size
    # restart: the store says 100 events are durable; the source resends from there
    store = CheckpointStore(data / "checkpoint.json")
    assert store.get("src") == 100
    ctx = NodeContext("k", data, store)
    s = TextSink(str(out), fmt)
    s.open(ctx)
    assert out.stat().st_size == store.get(f"text:{out}") < killed_size
    s.append([Event(b"line %05d" % i, TS, i) for i in range(100, 200)])
    s.when_durable(Checkpoint({"src": 200}))
    s.close()
    if fmt == "raw":
        got = out.read_bytes().splitlines()
    else:
        with open(out, "rb") as f:
            got = [event_from_avro(r).body for r in fastavro.reader(f)]
    assert got == lines(200)


def test_text_reopen_in_the_same_process_keeps_earlier_bytes(ctx, tmp_path):
    out = tmp_path / "t.log"
    a = TextSink(str(out))
    a.open(ctx)
    a.append(events(5))  # no checkpoint: the running source will not resend these
    a.close()
    b = TextSink(str(out))  # e.g. roll or stubbornAppend reopening
    b.open(ctx)
    b.append(events(5, 5))
    b.close()
    assert out.read_bytes().splitlines() == lines(10)


def test_text_failure_raises_sink_error(ctx, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    s = TextSink(str(blocker / "x.log"))
    with pytest.raises(SinkError, match="cannot open"):
        s.open(ctx)
    s.close()  # harmless after a failed open


def test_text_raw_is_fast(ctx, tmp_path):
    out = tmp_path / "fast.log"
    batch = [Event(b"x" * 99, TS, i) for i in range(1000)]
    s = TextSink(str(out))
    s.open(ctx)
    n = 300
    t0 = time.perf_counter()
    for _ in range(n):
        s.append(batch)
    s.close()
    rate = n * len(batch) / (time.perf_counter() - t0)
    assert out.stat().st_size == n * len(batch) * 100
    print(f"text raw: {rate:,.0f} events/s")
    assert rate > 500_000


# ---------------------------------------------------------------- dfs

def test_dfs_file_is_hidden_until_close_then_renamed(ctx, tmp_path):
    d = tmp_path / "new" / "dir"
    s = sink(f'escapedCustomDfs("{d}", "events.log")')
    s.open(ctx)
    s.append(events(3))
    s.when_durable(Checkpoint({"src": 3}))
    assert sorted(os.listdir(d)) == [".events.log.tmp"]
    assert ctx.store.get("src") is None  # durable only once renamed
    s.append(events(2, 3))
    s.close()
    assert sorted(os.listdir(d)) == ["events.log"]
    assert (d / "events.log").read_bytes().splitlines() == lines(5)
    assert ctx.store.get("src") == 3
    s.close()  # idempotent


def test_dfs_buckets_by_event_time(ctx, tmp_path):
    s = sink(f'escapedFormatDfs("{tmp_path}/%Y-%m-%d/%H", "web-%{{host}}.log", json, '
             f'utc=true)')
    s.open(ctx)
    batch = (events(2, 0, ts=TS) + events(2, 2, ts=TS + HOUR) + events(1, 4, ts=TS)
             + events(1, 5, ts=TS + 24 * HOUR, host="h2"))
    s.append(batch)
    s.append(events(1, 6, ts=TS - 2 * HOUR))  # a late event lands in its own hour
    s.close()

    def read(rel):
        return [decode_json(x).body for x in (tmp_path / rel).read_bytes().splitlines()]
    assert read("2020-09-13/12/web-h1.log") == [b"line 00000", b"line 00001", b"line 00004"]
    assert read("2020-09-13/13/web-h1.log") == [b"line 00002", b"line 00003"]
    assert read("2020-09-14/12/web-h2.log") == [b"line 00005"]
    assert read("2020-09-13/10/web-h1.log") == [b"line 00006"]
    hidden = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert hidden == []


def test_dfs_rolltag_in_file_name(ctx, tmp_path):
    out = tmp_path / "o"
    s = sink(f'dfs("{out}", "log-%{{rolltag}}")')
    s.open(ctx)
    s.append(events(1, attrs={"rolltag": b"r1"}) + events(1, 1, attrs={"rolltag": b"r2"}))
    s.close()
    assert sorted(os.listdir(out)) == ["log-r1", "log-r2"]


@pytest.mark.parametrize("compression,ext,decompress", [
    ("gzip", ".gz", gzip.decompress),
    ("zstd", ".zst",
     lambda b: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(b)).read()),
])
def test_dfs_compression(ctx, tmp_path, compression, ext, decompress):
    out = tmp_path / "o"
    s = sink(f'dfs("{out}/out.log", compression="{compression}")')
    s.open(ctx)
    for i in range(0, 3000, 1000):
        s.append(events(1000, i))
    s.close()
    assert os.listdir(out) == ["out.log" + ext]
    assert decompress((out / ("out.log" + ext)).read_bytes()).splitlines() == lines(3000)


def test_dfs_avrodata_gzip(ctx, tmp_path):
    s = sink(f'formatDfs("{tmp_path}/a.avro", avrodata("deflate"), compression=gzip)')
    s.open(ctx)
    s.append(events(10))
    s.close()
    data = gzip.decompress((tmp_path / "a.avro.gz").read_bytes())
    assert [event_from_avro(r) for r in fastavro.reader(io.BytesIO(data))] == events(10)


def test_dfs_never_overwrites_an_existing_file(ctx, tmp_path):
    (tmp_path / "out.log").write_bytes(b"previous run\n")
    (tmp_path / "out.log.1").write_bytes(b"older\n")
    (tmp_path / "z.log.gz").write_bytes(b"x")
    a = sink(f'dfs("{tmp_path}/out.log")')
    b = sink(f'dfs("{tmp_path}/out.log")')  # a second instance with the same name, at once
    c = sink(f'dfs("{tmp_path}/z.log", compression="gzip")')
    for s in (a, b, c):
        s.open(ctx)
        s.append(events(1))
    assert (tmp_path / ".out.log.tmp").exists() and (tmp_path / ".out.log.1.tmp").exists()
    for s in (a, b, c):
        s.close()
    assert (tmp_path / "out.log").read_bytes() == b"previous run\n"
    assert (tmp_path / "out.log.1").read_bytes() == b"older\n"
    assert (tmp_path / "out.log.2").read_bytes() == b"line 00000\n"
    assert (tmp_path / "out.log.3").read_bytes() == b"line 00000\n"
    assert gzip.decompress((tmp_path / "z.log.1.gz").read_bytes()) == b"line 00000\n"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_dfs_file_url_and_format_second_argument(ctx, tmp_path):
    s = sink(f'formatDfs("file://{tmp_path}/sub/f.json", "json")')
    s.open(ctx)
    s.append(events(2))
    s.close()
    got = (tmp_path / "sub" / "f.json").read_bytes().splitlines()
    assert [decode_json(x) for x in got] == events(2)
    # in escapedFormatDfs a string second argument is a file name, even "json"
    s = sink(f'escapedFormatDfs("{tmp_path}/sub", "json")')
    s.open(ctx)
    s.append(events(1))
    s.close()
    assert (tmp_path / "sub" / "json").read_bytes() == b"line 00000\n"


def test_dfs_on_a_non_local_filesystem(ctx):
    import fsspec
    fs = fsspec.filesystem("memory")
    base = f"/flume-test-{os.getpid()}-{time.monotonic_ns()}"
    s = sink(f'escapedCustomDfs("memory://{base}/%{{host}}", "f.log")')
    s.open(ctx)
    s.append(events(2) + events(1, 2, host="h2"))
    s.when_durable(Checkpoint({"mem": 1}))
    assert fs.exists(f"{base}/h1/.f.log.tmp") and not fs.exists(f"{base}/h1/f.log")
    s.close()
    assert fs.cat(f"{base}/h1/f.log").splitlines() == lines(2)
    assert fs.cat(f"{base}/h2/f.log") == b"line 00002\n"
    assert not fs.exists(f"{base}/h1/.f.log.tmp")
    assert ctx.store.get("mem") == 1
    fs.rm(base, recursive=True)


def test_dfs_renames_are_journaled_with_the_checkpoint(make_ctx, tmp_path):
    ctx = make_ctx("j")
    s = DfsSink(str(tmp_path / "out"), "f.log")
    s.open(ctx)
    s.append(events(1))
    s.when_durable(Checkpoint({"pos": 1}))
    s.close()
    # the store file says the position; a reload (restart) agrees, nothing to roll forward
    store = json.loads((ctx.data_dir / "checkpoint.json").read_text())
    assert store["positions"]["pos"] == 1 and store["renames"]
    assert CheckpointStore(ctx.data_dir / "checkpoint.json").get("pos") == 1


def test_dfs_failure_raises_sink_error(ctx, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    s = sink(f'dfs("{blocker}/sub/out.log")')
    s.open(ctx)
    with pytest.raises(SinkError, match="cannot create"):
        s.append(events(1))
    s.close()


def test_dfs_empty_expanded_name_goes_to_the_error_bucket(ctx, tmp_path):
    s = sink(f'dfs("{tmp_path}", "%{{missing}}")')
    s.open(ctx)
    s.append(events(1))
    s.close()
    (bucket,) = (tmp_path / "_rejected").iterdir()
    assert bucket.read_bytes() == b"line 00000\n"
    assert s.metrics["refused_path"] == 1


def test_dfs_close_without_events_commits_pending(ctx, tmp_path):
    out = tmp_path / "o"
    s = sink(f'dfs("{out}/x.log")')
    s.open(ctx)
    s.when_durable(Checkpoint({"idle": 7}))
    s.close()
    assert ctx.store.get("idle") == 7
    assert not out.exists()  # no empty file made


@pytest.mark.parametrize("spec,message", [
    ('dfs("/x/")', "names a directory"),
    ('dfs("/x", "a/b")', "plain name"),
    ('formatDfs("/x", json, raw)', "given twice"),
    ('dfs("/x", compression="lz4")', "unknown compression lz4"),
    ('escapedCustomDfs("/x", "f", seqfile("bzip2"))', "unknown output format seqfile"),
    ('dfs("/x", 3)', "file name or an output format"),
])
def test_dfs_bad_arguments(spec, message):
    with pytest.raises(SpecError, match=message):
        sink(spec)


# ---------------------------------------------------------------- syslogTcp

class SyslogServer:
    """A TCP server on 127.0.0.1 that keeps what each connection sent; ``kick`` closes the
    current connection from the server side."""

    def __init__(self):
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.conns: list[bytearray] = []
        self.kick_flag = threading.Event()
        self.kicked = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            buf = bytearray()
            self.conns.append(buf)
            conn.settimeout(0.02)
            with conn:
                while not self.kick_flag.is_set():
                    try:
                        data = conn.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    buf.extend(data)
            if self.kick_flag.is_set():
                self.kick_flag.clear()
                self.kicked.set()

    def kick(self):
        self.kicked.clear()
        self.kick_flag.set()
        assert self.kicked.wait(5)

    def close(self):
        self.stopped = True
        self.lsock.close()


def stamp(e: Event) -> bytes:
    """The RFC 5424 TIMESTAMP of an event: UTC with milliseconds."""
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(e.timestamp // 1000))
            + ".%03dZ" % (e.timestamp % 1000)).encode()


@pytest.fixture
def syslog_server():
    srv = SyslogServer()
    yield srv
    srv.close()


def test_syslog_tcp_sends_lines_and_reconnects(ctx, syslog_server):
    srv = syslog_server
    s = sink(f'syslogTcp("127.0.0.1", {srv.port})')
    s.open(ctx)
    batch = events(2, attrs={"syslogfacility": b"4", "syslogseverity": b"6"})
    s.append(batch)
    # RFC 5424, octet-counted (the field mapping is tested in test_syslog_rsyslog)
    first = [b"<38>1 %s h1 - - - - line %05d" % (stamp(e), i) for i, e in enumerate(batch)]
    expected = b"".join(b"%d %s" % (len(m), m) for m in first)
    wait_for(lambda: srv.conns and len(srv.conns[0]) == len(expected), what="first batch")
    assert bytes(srv.conns[0]) == expected
    srv.kick()  # the syslog daemon restarts
    later = events(1, 2)
    s.append(later)
    m = b"<13>1 %s h1 - - - - line 00002" % stamp(later[0])
    wait_for(lambda: len(srv.conns) == 2 and len(srv.conns[1]) == len(m) + 3,
             what="batch on the new connection")
    assert bytes(srv.conns[1]) == b"%d %s" % (len(m), m)
    assert s.metrics["connects"] == 2
    s.close()


def test_syslog_tcp_fails_when_nobody_listens(ctx, syslog_server):
    srv = syslog_server
    s = sink(f'syslogTcp("127.0.0.1", {srv.port})')
    s.open(ctx)
    s.append(events(1))
    wait_for(lambda: srv.conns and srv.conns[0], what="first batch")
    srv.close()
    srv.kick()
    with pytest.raises(SinkError, match="cannot send"):
        s.append(events(1, 1))
    s.close()
    with pytest.raises(SinkError, match="cannot connect"):
        s.open(ctx)


# ---------------------------------------------------------------- counter, null, fail, collect

def test_counter(ctx, caplog):
    counter.reset_count("c1")
    a, b = sink('counter("c1")'), sink('counter("c1")')
    a.open(ctx)
    b.open(ctx)
    a.append(events(3))
    b.append(events(2))
    assert counter.get_count("c1") == 5 and counter.get_count("nothing") == 0
    assert a.metrics["count"] == 3
    with caplog.at_level("INFO", logger="flume_og.node.sinks.counter"):
        a.close()
    assert "counter c1 counted 3 events" in caplog.text


def test_null_and_fail(ctx):
    n = sink("null")
    n.open(ctx)
    n.append(events(4))
    n.close()
    assert n.metrics["events_in"] == 4
    f = sink('fail("disk on fire")')
    with pytest.raises(SinkError, match="disk on fire"):
        f.open(ctx)
    f.close()


def test_collect(ctx):
    collect.reset()
    s = sink('collect("c")')
    s.open(ctx)
    threads = [threading.Thread(target=s.append, args=(events(100, i * 100),))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = collect.collected("c")
    assert sorted(e.body for e in got) == lines(400)
    got.clear()  # a copy
    assert len(collect.collected("c")) == 400
    collect.reset("c")
    assert collect.collected("c") == []
