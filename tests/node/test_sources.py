"""Sources against real files, sockets and processes, built from spec text."""
from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import socket
import sys
import threading
import time

import pytest

from flume_og.node.clock import ManualClock
from flume_og.node.errors import SourceError, SpecError
from flume_og.node.event import Event, Priority
from flume_og.node.builder import build_source
from flume_og.node.sources import memory, syslog
from flume_og.node.spec import parse_source, quote
from tests.waiting import wait_until as wait_for

pytestmark = pytest.mark.timeout(60)


def build(text: str):
    return build_source(parse_source(text))


def opened(text: str, ctx):
    src = build(text)
    src.open(ctx)
    return src


def collect(src, n: int | None = None, deadline: float = 10.0) -> list[Event]:
    """Events until ``n`` arrived, or until the source is exhausted (n=None)."""
    out: list[Event] = []

    def done() -> bool:
        batch = src.next_batch(0.05)
        if batch is None:
            if n is not None:
                raise AssertionError(f"exhausted after {len(out)} of {n} events")
            return True
        out.extend(batch)
        return n is not None and len(out) >= n
    wait_for(done, deadline, f"{n} events" if n is not None else "the source's end",
             interval=0)
    return out




def blocked_next_batch_returns_on_close(src) -> None:
    """A next_batch blocked in another thread returns promptly when close() is called."""
    result = []
    t = threading.Thread(target=lambda: result.append(src.next_batch(30)))
    t.start()
    # a real sleep: nothing tells that the thread is blocked, and next_batch's timeout is
    # real time, not the clock -- the thread needs the chance to get there (or return early)
    time.sleep(0.05)
    assert t.is_alive(), f"next_batch returned {result} without waiting"
    start = time.monotonic()
    src.close()
    t.join(5)
    assert not t.is_alive()
    assert time.monotonic() - start < 5
    assert result == [None]


PY = sys.executable


def pycmd(code: str) -> str:
    return shlex.join([PY, "-c", code])


# ------------------------------------------------------------------ text

def test_text_reads_lines_exactly_then_is_exhausted(tmp_path, ctx):
    f = tmp_path / "in.txt"
    f.write_bytes(b"one\r\n\ntwo\xff\nlast-without-newline")
    src = opened(f"text({quote(str(f))})", ctx)
    events = collect(src)
    assert [e.body for e in events] == [b"one\r", b"", b"two\xff", b"last-without-newline"]
    assert all(e.priority is Priority.INFO for e in events)
    nanos = [e.nanos for e in events]
    assert nanos == sorted(set(nanos))
    assert src.next_batch(0.01) is None
    assert src.metrics["events_in"] == 4
    src.close()
    src.close()


def test_text_lines_across_blocks(tmp_path, ctx):
    lines = [b"line %07d " % i + b"z" * (i % 300) for i in range(20_000)]
    f = tmp_path / "big.txt"
    f.write_bytes(b"\n".join(lines) + b"\n")
    assert f.stat().st_size > 3 * (1 << 18)
    src = opened(f"text({quote(str(f))})", ctx)
    assert [e.body for e in collect(src)] == lines


def test_text_empty_file(tmp_path, ctx):
    f = tmp_path / "empty"
    f.write_bytes(b"")
    assert collect(opened(f"text({quote(str(f))})", ctx)) == []


def test_text_missing_file_names_the_path(tmp_path, ctx):
    path = str(tmp_path / "nope.txt")
    src = build(f"text({quote(path)})")       # building does no I/O
    with pytest.raises(SourceError, match="nope.txt"):
        src.open(ctx)
    src.close()


def test_text_close_ends_reading(tmp_path, ctx):
    f = tmp_path / "in.txt"
    f.write_bytes(b"a\n" * 10)
    src = opened(f"text({quote(str(f))})", ctx)
    src.close()
    assert src.next_batch(0.01) is None


# ------------------------------------------------------------------ exec

def test_exec_refused_without_allow_exec(make_ctx):
    src = build(f"exec({quote(pycmd('print(1)'))})")
    with pytest.raises(SourceError, match="--allow-exec"):
        src.open(make_ctx(allow_exec=False))
    src.close()


def test_exec_lines_stdout_only_then_exhausted(ctx):
    code = ("import sys; print('a'); sys.stderr.write('noise\\n'); print('b'); "
            "sys.stdout.write('c')")
    src = opened(f"exec({quote(pycmd(code))})", ctx)
    events = collect(src)
    assert [e.body for e in events] == [b"a", b"b", b"c"]
    assert events[0].attrs["execcmd"] == pycmd(code).encode()
    assert src.metrics["exitcode"] == 0
    src.close()


def test_exec_runs_without_a_shell(ctx):
    echo = shutil.which("echo")
    src = opened(f"execStream({quote(echo + ' $HOME | cat')})", ctx)
    assert [e.body for e in collect(src)] == [b"$HOME | cat"]
    src.close()


def test_exec_aggregate_whole_output_and_exit_code(ctx):
    code = "import sys; print('x'); print('y'); sys.exit(3)"
    src = opened(f"exec({quote(pycmd(code))}, true)", ctx)
    events = collect(src)
    assert len(events) == 1
    assert events[0].body == b"x\ny\n"
    assert events[0].attrs["exec.exitcode"] == b"3"
    src.close()


class WatchedClock(ManualClock):
    """A ManualClock that tells when a thread first waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = threading.Event()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.waited.set()
        return super().wait(event, seconds)


def test_exec_restart_waits_period_on_the_clock(make_ctx):
    clock = WatchedClock()
    ctx = make_ctx(clock=clock)
    echo = shutil.which("echo")
    src = opened(f"exec({quote(echo + ' run')}, false, true, 60000)", ctx)
    try:
        assert [e.body for e in collect(src, 1)] == [b"run"]
        # the next run waits for 60 s of the (manual) clock: 59 s, and whatever a wrong
        # timer would have started has started once the reader waits on the clock again
        wait_for(clock.waited.is_set, 5, "the reader waiting for the period")
        clock.advance(59)
        clock.settle()
        assert src.metrics["runs"] == 1 and src.next_batch(0) == []
        advanced = 59
        got: list[Event] = []
        while not got:
            clock.advance(30)
            advanced += 30
            got = src.next_batch(0.1)
            assert advanced < 3000, "restart never happened"
        assert advanced >= 60 and [e.body for e in got] == [b"run"]
        assert src.metrics["runs"] == 2
    finally:
        src.close()


def test_exec_restart_without_period_keeps_running(ctx):
    echo = shutil.which("echo")
    src = opened(f"exec({quote(echo + ' again')}, restart=true)", ctx)
    events = collect(src, 5)
    assert {e.body for e in events} == {b"again"}
    src.close()
    assert src.next_batch(0.01) is None


def test_exec_periodic_aggregates_each_run(make_ctx):
    clock = ManualClock()
    src = opened(f"execPeriodic({quote(pycmd('print(1); print(2)'))}, 1000)",
                 make_ctx(clock=clock))
    try:
        assert [e.body for e in collect(src, 1)] == [b"1\n2\n"]
        got: list[Event] = []
        while not got:
            clock.advance(1)
            got = src.next_batch(0.05)
        assert [e.body for e in got] == [b"1\n2\n"]
        assert got[0].attrs["exec.exitcode"] == b"0"
    finally:
        src.close()


def test_exec_close_kills_the_process_group(ctx):
    # the child starts a grandchild; both must die on close
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(p.pid, flush=True); time.sleep(60)")
    src = opened(f"execStream({quote(pycmd(code))})", ctx)
    grandchild = int(collect(src, 1)[0].body)
    proc = src._proc
    start = time.monotonic()
    src.close()
    assert time.monotonic() - start < 3
    assert proc.poll() is not None
    wait_for(lambda: not _alive(grandchild), 5, "the grandchild to die")
    assert src.next_batch(0.01) is None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_exec_close_unblocks_next_batch(ctx):
    src = opened(f"execStream({quote(pycmd('import time; time.sleep(60)'))})", ctx)
    blocked_next_batch_returns_on_close(src)


def test_exec_missing_program(ctx):
    src = build('exec("/nonexistent/program --flag")')
    with pytest.raises(SourceError, match="/nonexistent/program"):
        src.open(ctx)
    src.close()


@pytest.mark.parametrize("text", ['exec("")', 'exec("unbalanced \\"quote")',
                                  'exec("ls", period=-1)', 'execPeriodic("ls")'])
def test_exec_bad_arguments_are_spec_errors(text):
    with pytest.raises(SpecError):
        build(text)


# ------------------------------------------------------------------ syslog

def test_syslog_udp(ctx):
    src = opened('syslogUdp(0, bind="127.0.0.1")', ctx)
    try:
        assert src.port > 0
        msgs = [b"<34>Oct 11 22:14:15 mymachine su: failed\n",
                b"<165>1 2003-10-11T22:14:15.003Z web1 app 42 ID7 - hello",
                b"garbage"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for m in msgs:
                s.sendto(m, ("127.0.0.1", src.port))
        events = collect(src, 3)
        # the body is MSG (docs/syslog.md); a malformed message is kept raw
        assert [e.body for e in events] == [b"failed", b"hello", b"garbage"]
        assert events[0].host == "mymachine" and events[0].priority is Priority.FATAL
        assert events[0].attrs["syslog.appname"] == b"su"
        assert events[1].host == "web1"
        assert events[1].attrs["syslog.procid"] == b"42"
        assert events[2].host == "127.0.0.1"
        assert events[2].attrs == {"syslog.malformed": b"no valid <PRI>"}
        assert src.metrics["malformed"] == 1
    finally:
        src.close()


def test_syslog_udp_full_queue_drops_and_counts(ctx, monkeypatch):
    monkeypatch.setattr(syslog.SyslogUdpSource, "queue_events", 5)
    src = opened('syslogUdp(0, bind="127.0.0.1")', ctx)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(40):
                s.sendto(b"<13>msg %d" % i, ("127.0.0.1", src.port))
                # one datagram at a time, so each is offered on its own
                wait_for(lambda: src.metrics.get("bytes_in", 0) >= sum(
                    len(b"<13>msg %d" % j) for j in range(i + 1)), 5, "datagram")
        events = collect(src, 5)
        assert len(events) == 5
        assert src.metrics["refused_queue_full"] == src.metrics["refused"] == 35
    finally:
        src.close()


def test_syslog_tcp_framings_and_connections(ctx):
    src = opened('syslogTcp(0, bind="127.0.0.1")', ctx)
    try:
        m5424 = b"<34>1 2003-10-11T22:14:15.003Z h1 su - ID47 - multi\nline"
        with socket.create_connection(("127.0.0.1", src.port)) as a, \
                socket.create_connection(("127.0.0.1", src.port)) as b:
            a.sendall(b"<13>Feb  5 17:32:18 h0 first\r\n<13>Feb  5 17:32:18 h0 sec")
            b.sendall(b"%d " % len(m5424) + m5424)
            a.sendall(b"ond\n")
            b.sendall(b"<13>tail without newline")
        events = collect(src, 4)
        bodies = sorted(e.body for e in events)
        assert bodies == sorted([b"first", b"second", b"multi\nline",
                                 b"tail without newline"])
        by_body = {e.body: e for e in events}
        assert by_body[b"multi\nline"].host == "h1"
        assert by_body[b"multi\nline"].attrs["syslog.msgid"] == b"ID47"
        assert by_body[b"first"].host == "h0"
        assert by_body[b"tail without newline"].host == "127.0.0.1"
        assert src.metrics["noheader"] == 1
        assert src.metrics["connections"] == 2
    finally:
        src.close()


def test_syslog_tcp_backpressure_loses_nothing(ctx, monkeypatch):
    monkeypatch.setattr(syslog.SyslogTcpSource, "queue_events", 10)
    src = opened('syslogTcp(0, bind="127.0.0.1")', ctx)
    n = 20_000
    try:
        def send():
            with socket.create_connection(("127.0.0.1", src.port)) as s:
                s.sendall(b"".join(b"<13>Oct 11 22:14:15 h m%d\n" % i for i in range(n)))
        t = threading.Thread(target=send)
        t.start()
        wait_for(lambda: len(src._queue) >= 10, 5, "the queue to fill")
        events: list[Event] = []

        def consume_slowly() -> bool:
            batch = src.next_batch(0.05)
            events.extend(batch)
            if batch:
                time.sleep(0.02)   # a slow consumer: the server must wait, not drop
            return len(events) >= n
        wait_for(consume_slowly, 20, f"{n} events", interval=0)
        t.join(5)
        assert [e.body for e in events] == [b"m%d" % i for i in range(n)]
    finally:
        src.close()


def test_syslog_close_unblocks_and_frees_the_port(ctx):
    src = opened('syslogTcp(0, bind="127.0.0.1")', ctx)
    port = src.port
    conn = socket.create_connection(("127.0.0.1", port))
    blocked_next_batch_returns_on_close(src)
    conn.close()
    again = opened(f'syslogTcp({port}, bind="127.0.0.1")', ctx)
    again.close()


def test_syslog_port_in_use(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        src = build(f'syslogTcp({s.getsockname()[1]}, bind="127.0.0.1")')
        with pytest.raises(SourceError, match="cannot bind"):
            src.open(ctx)
        src.close()


def test_syslog_bad_port_is_a_spec_error():
    with pytest.raises(SpecError, match="port"):
        build("syslogUdp(70000)")


# ------------------------------------------------------------------ console

@pytest.fixture
def stdin_pipe(monkeypatch):
    r, w = os.pipe()
    reader = open(r, "r")
    monkeypatch.setattr(sys, "stdin", reader)
    writer = open(w, "wb", buffering=0)
    yield writer
    if not writer.closed:
        writer.close()


def test_console_reads_stdin_until_eof(ctx, stdin_pipe):
    src = opened("stdin", ctx)
    stdin_pipe.write(b"hello\nwor")
    assert [e.body for e in collect(src, 1)] == [b"hello"]
    stdin_pipe.write(b"ld\r\nlast")
    stdin_pipe.close()
    assert [e.body for e in collect(src)] == [b"world\r", b"last"]
    src.close()


def test_console_close_does_not_hang(ctx, stdin_pipe):
    src = opened("console", ctx)
    blocked_next_batch_returns_on_close(src)


# ------------------------------------------------------------------ synth

def test_asciisynth_count_and_size(ctx):
    src = opened("asciisynth(12000, 20)", ctx)
    events = collect(src)
    assert len(events) == 12000
    assert all(len(e.body) == 20 and all(0x20 <= c < 0x7F for c in e.body) for e in events)
    assert len({e.body for e in events}) > 11000


def test_synth_seed_is_reproducible(ctx):
    a = [e.body for e in collect(opened("synth(100, 64, seed=7)", ctx))]
    b = [e.body for e in collect(opened("synth(100, 64, seed=7)", ctx))]
    c = [e.body for e in collect(opened("synth(100, 64, seed=8)", ctx))]
    assert a == b != c
    assert len(a) == 100 and all(len(x) == 64 for x in a)


def test_nonlsynth_has_no_newlines(ctx):
    events = collect(opened("nonlsynth(20000, 100)", ctx))
    assert len(events) == 20000
    assert not any(b"\n" in e.body for e in events)
    # plain synth does produce newlines at this volume: the test can tell the difference
    assert any(b"\n" in e.body for e in collect(opened("synth(20000, 100)", ctx)))


def test_synth_forever_until_closed(ctx):
    src = opened("asciisynth", ctx)
    total = 0
    for _ in range(5):
        batch = src.next_batch(0.1)
        assert batch
        total += len(batch)
    assert total > 5 and len(batch[0].body) == 150
    src.close()
    assert src.next_batch(0.1) is None


# ------------------------------------------------------------------ null, fail

def test_null_never_produces_and_close_unblocks(ctx):
    src = opened("null", ctx)
    start = time.monotonic()
    assert src.next_batch(0.1) == []
    assert time.monotonic() - start >= 0.09
    blocked_next_batch_returns_on_close(src)


def test_fail_source(ctx):
    src = build('fail("disk on fire")')
    with pytest.raises(SourceError, match="disk on fire"):
        src.open(ctx)


# ------------------------------------------------------------------ httpSource

class Consumer:
    """Calls next_batch in a thread, like the driver does."""

    def __init__(self, src):
        self.src, self.events, self.stop = src, [], False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            batch = self.src.next_batch(0.05)
            if batch is None:
                return
            self.events.extend(batch)


def post(port: int, body: bytes, ctype: str = "application/json", method: str = "POST"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, "/", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)
    finally:
        conn.close()


def test_http_json_events(ctx):
    src = opened('httpSource(0, bind="127.0.0.1")', ctx)
    consumer = Consumer(src)
    try:
        doc = [{"headers": {"timestamp": 1234, "host": "web7", "priority": "WARN",
                            "service": "shop", "n": 5}, "body": "héllo"},
               {"body": "plain"}]
        status, answer = post(src.port, json.dumps(doc).encode())
        assert (status, answer) == (200, {"accepted": 2})
        # 200 came once next_batch handed them over (the consumer thread may still be
        # on its way to storing them)
        wait_for(lambda: len(consumer.events) == 2, 5, "the consumer to store the events")
        a, b = consumer.events
        assert (a.body, a.timestamp, a.host, a.priority) == \
            ("héllo".encode(), 1234, "web7", Priority.WARN)
        assert a.attrs == {"service": b"shop", "n": b"5"}
        assert b.body == b"plain" and b.priority is Priority.INFO and b.attrs == {}
    finally:
        consumer.stop = True
        src.close()


def test_http_raw_lines(ctx):
    src = opened('httpSource(0, bind="127.0.0.1")', ctx)
    consumer = Consumer(src)
    try:
        status, answer = post(src.port, b"one\ntwo\n\nthree\n", "text/plain")
        assert (status, answer) == (200, {"accepted": 4})
        wait_for(lambda: len(consumer.events) == 4, 5, "the consumer to store the events")
        assert [e.body for e in consumer.events] == [b"one", b"two", b"", b"three"]
    finally:
        consumer.stop = True
        src.close()


@pytest.mark.parametrize("body,message", [
    (b"[{\"body\": ", "bad JSON"),
    (b"{\"body\": \"x\"}", "array"),
    (b"[{\"body\": 5}]", "body must be a string"),
    (b"[{\"body\": \"x\", \"headers\": {\"priority\": \"LOUD\"}}]", "unknown priority"),
    (b"[{\"body\": \"x\", \"headers\": {\"timestamp\": \"noon\"}}]", "timestamp"),
    (b"[{\"body\": \"x\", \"headers\": {\"a\": [1]}}]", "header 'a'"),
])
def test_http_bad_json_is_400(ctx, body, message):
    src = opened('httpSource(0, bind="127.0.0.1")', ctx)
    try:
        status, answer = post(src.port, body)
        assert status == 400
        assert message in answer["error"]
        assert src.next_batch(0.01) == []
    finally:
        src.close()


def test_http_503_when_not_taken_in_time_and_no_duplicate(ctx):
    src = opened('httpSource(0, bind="127.0.0.1", timeoutMs=200)', ctx)
    try:
        status, answer = post(src.port, b"lost?\n", "text/plain")
        assert status == 503 and "in time" in answer["error"]
        assert src.next_batch(0.05) == []      # withdrawn: a retry will not duplicate
        assert post(src.port, b"", "GET", method="GET")[0] == 405
    finally:
        src.close()


def test_http_close_unblocks(ctx):
    src = opened('httpSource(0, bind="127.0.0.1")', ctx)
    blocked_next_batch_returns_on_close(src)
    with pytest.raises(OSError):
        post(src.port, b"x\n", "text/plain")


# ------------------------------------------------------------------ netcat

def test_netcat_several_connections(ctx):
    src = opened('netcat(0, bind="127.0.0.1")', ctx)
    try:
        conns = [socket.create_connection(("127.0.0.1", src.port)) for _ in range(3)]
        for i, c in enumerate(conns):
            c.sendall(b"c%d-a\nc%d-b" % (i, i))
        for i, c in enumerate(conns):
            c.sendall(b"\r\nc%d-partial" % i)
        for c in conns:
            c.close()
        events = collect(src, 9)
        assert sorted(e.body for e in events) == sorted(
            [b"c%d-a" % i for i in range(3)] + [b"c%d-b\r" % i for i in range(3)]
            + [b"c%d-partial" % i for i in range(3)])
        per_conn = [[e.body for e in events if e.body.startswith(b"c%d" % i)]
                    for i in range(3)]
        assert all(b[0].endswith(b"-a") and b[2].endswith(b"partial") for b in per_conn)
        assert src.metrics["connections"] == 3
    finally:
        src.close()


def test_netcat_close_unblocks(ctx):
    src = opened('netcat(0, bind="127.0.0.1")', ctx)
    blocked_next_batch_returns_on_close(src)


# ------------------------------------------------------------------ memory

@pytest.fixture
def channels():
    yield
    memory.reset()


def test_memory_push_finish(ctx, channels):
    memory.push("m1", [b"early", "text"])          # before the source opens
    src = opened('memory("m1")', ctx)
    ev = Event(b"an event", 42)
    memory.push("m1", [ev])
    memory.finish("m1")
    events = collect(src)
    assert [e.body for e in events] == [b"early", b"text", b"an event"]
    assert events[2] is ev
    assert src.next_batch(0.01) is None
    with pytest.raises(RuntimeError):
        memory.push("m1", [b"late"])


def test_memory_push_from_threads(ctx, channels):
    src = opened('memory("m2")', ctx)

    def pusher(k):
        for i in range(100):
            memory.push("m2", [b"%d-%d" % (k, i)])
    threads = [threading.Thread(target=pusher, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    events = collect(src, 400)
    for t in threads:
        t.join()
    assert len({e.body for e in events}) == 400


def test_memory_close_unblocks(ctx, channels):
    src = opened('memory("m3")', ctx)
    blocked_next_batch_returns_on_close(src)
    # the channel outlives the source
    memory.push("m3", [b"x"])
    again = opened('memory("m3")', ctx)
    assert [e.body for e in collect(again, 1)] == [b"x"]


def test_exec_lines_and_aggregate_output_are_bounded(ctx):
    """A program writing one endless line, or more output than one event may hold, is cut
    at the bound and counted; the source's memory never holds more than that."""
    from flume_og.node.sources import exec_source
    from flume_og.node.sources._lines import MAX_LINE
    src = build_source(parse_source(
        'exec("python3 -c \\"import sys; sys.stdout.write(\'x\' * 3000000 + \'\\\\nok\\\\n\')\\"")'))
    src.open(ctx)
    got = []
    try:
        while (b := src.next_batch(0.5)) is not None:
            got.extend(b)
            if len(got) >= 2:
                break
    finally:
        src.close()
    assert [len(e.body) for e in got[:2]] == [MAX_LINE, 2]
    assert src.metrics["refused_oversize"] == 1
    src = build_source(parse_source(
        'exec("head -c 20000000 /dev/zero", aggregate=true)'))
    src.open(ctx)
    try:
        batch = None
        while not batch:
            batch = src.next_batch(1.0)
    finally:
        src.close()
    assert len(batch[0].body) == exec_source.MAX_AGGREGATE
    assert src.metrics["refused_oversize"] == 1
