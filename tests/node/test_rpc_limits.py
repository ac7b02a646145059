"""Bounds of the RPC transport under hostile input, over real sockets: compression bombs,
announced lengths, floods of idle connections, a server that cannot start threads.
RSS and thread counts are measured on a receiver in its own process
(tests/node/rpc_victim.py)."""
from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from flume_og.node import rpc
from flume_og.node.client import FlumeClient
from flume_og.node.codec import _HEAD, _RECORD, BatchTooLarge, encode_events, split_events
from flume_og.node.event import Event
from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.builder import build_sink, build_source
from flume_og.node.rpc import RpcClient, Status, decode_payload, gzip_payload
from flume_og.node.spec import parse_sink, parse_source
from tests.sockets import closed_by_peer
from tests.sockets import trickle as trickle_until_cut
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


class Victim:
    """A logical node ``SOURCE | null`` in its own process (see rpc_victim.py)."""

    def __init__(self, source: str, give_up: float | None = None, prefix=()):
        args = [*prefix, sys.executable, "-m", "tests.node.rpc_victim", source]
        if give_up is not None:
            args.append(str(give_up))
        self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def status(self) -> dict:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def metric(self, name: str) -> int:
        return self.status()["metrics"].get(name, 0)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def victim():
    made = []

    def make(source: str, **kw) -> Victim:
        v = Victim(source, **kw)
        made.append(v)
        return v
    yield make
    for v in made:
        if v.proc.poll() is None:
            v.proc.kill()
            v.proc.wait()


def empty_events_payload(count: int) -> bytes:
    """A valid batch of ``count`` empty events, built without making them (gzip)."""
    raw = _HEAD.pack(b"FLB", 2, count, 1) + b"\0\0" + b"\0\0\0\0" + bytes(_RECORD.size * count)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(raw) + c.flush()


def zeros_bomb(mbytes: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MB)
    return b"".join(c.compress(chunk) for _ in range(mbytes)) + c.flush()


# ------------------------------------------------------------------ payloads

def test_decode_payload_stops_inflating_at_its_bound():
    bomb = zeros_bomb(64)
    assert len(bomb) < 100_000
    with pytest.raises(BatchTooLarge) as err:
        decode_payload(bomb, max_bytes=MB)
    assert err.value.reason == "decompressed"
    with pytest.raises(BatchTooLarge) as err:
        decode_payload(encode_events([Event(b"x")] * 30), max_events=20)
    assert err.value.reason == "events"
    events = [Event(b"y" * 100)] * 5
    assert decode_payload(gzip_payload(encode_events(events)), max_bytes=MB,
                          max_events=5) == events


def test_split_events_keeps_every_piece_under_both_bounds():
    events = [Event(bytes([i % 256]) * (i % 700), attrs={"k": b"v" * (i % 50)})
              for i in range(3000)]
    pieces = split_events(events, 400, 64 * 1024)
    assert [e for p in pieces for e in p] == events
    assert all(len(p) <= 400 and len(encode_events(p)) <= 64 * 1024 for p in pieces)
    assert split_events(events[:10], 400, 64 * 1024) == [events[:10]]


def test_compression_bomb_and_three_million_events_answered_failed(victim):
    v = victim("collectorSource(0)")
    before = v.status()
    client = RpcClient("127.0.0.1", v.port, 30)
    bomb = zeros_bomb(256)                       # 256 MiB of zeros in ~250 kB
    status, message = client.append_payload(bomb, 1)
    assert status == Status.FAILED and "inflates to more than" in message
    many = empty_events_payload(3_000_000)       # a valid batch, ~110 kB
    status, message = client.append_payload(many, 3_000_000)
    assert status == Status.FAILED and "3000000 events" in message
    status, message = client.append_payload(many, 1)    # the count lies
    assert status == Status.FAILED and "batch too large" in message
    after = v.status()
    m = after["metrics"]
    assert m["refused_decompressed"] == 2 and m["refused_events"] == 1
    # what the receiver paid: its bound (16 MiB) and a copy, never the 256 MiB
    assert after["hwm"] - before["hwm"] < 60 * 1024, (before, after)
    assert client.append_packed([Event(b"still served")]) == (Status.OK, "")
    client.close()


# ------------------------------------------------------------------ the wire

def call_header(name: bytes, seqid: int = 1) -> bytes:
    return struct.pack(">Ii", 0x80010001, len(name)) + name + struct.pack(">i", seqid)




def test_announced_lengths_past_the_bound_are_refused_without_allocation(victim):
    v = victim("rpcSource(0)")
    base = v.status()
    # appendPacked whose payload announces 2 GiB - 1 bytes, and a 200 MiB one
    for length in (2**31 - 1, 200 * MB):
        s = socket.create_connection(("127.0.0.1", v.port))
        s.sendall(call_header(b"appendPacked") + b"\x0b\x00\x01" + struct.pack(">i", length)
                  + b"x" * 1000)
        assert closed_by_peer(s)
        s.close()
    # appendBatch announcing 2^31 - 1 events, then 30,000 (within the bytes, over the
    # events): both refused before the first element, whatever follows
    for size in (2**31 - 1, 30_000):
        s = socket.create_connection(("127.0.0.1", v.port))
        s.sendall(call_header(b"appendBatch") + b"\x0f\x00\x01\x0c" + struct.pack(">i", size))
        try:
            for _ in range(100):
                s.sendall(b"\x00" * 10_000)
        except OSError:
            pass
        assert closed_by_peer(s)
        s.close()
    after = v.status()
    assert after["metrics"]["refused_oversize"] == 3
    assert after["metrics"]["refused_events"] == 1
    assert after["hwm"] - base["hwm"] < 30 * 1024, (base, after)
    with FlumeClient("127.0.0.1", v.port) as c:
        c.send([Event(b"served")])


def test_long_strings_of_all_connections_share_one_budget(victim):
    """16 x maxMessageBytes of long strings at once: a 17th waits for room, then its
    connection is closed (busy) -- connections x bound is not what the receiver holds."""
    v = victim("rpcSource(0, maxMessageBytes=1048576, idleTimeoutMs=1500)")
    base = v.status()
    conns = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", v.port))
        s.sendall(call_header(b"appendPacked") + b"\x0b\x00\x01"
                  + struct.pack(">i", 1_000_000) + bytes(900_000))
        conns.append(s)

    def keep_sending() -> bool:
        if v.metric("refused_busy") >= 4:
            return True
        for s in conns:            # the 16 that got room keep their messages going
            try:
                s.send(b"\0")
            except OSError:
                pass
        return False
    wait_until(keep_sending, 10, "4 connections refused as busy", interval=0.2)
    st = v.status()
    assert st["metrics"]["refused_busy"] == 4, st
    assert st["hwm"] - base["hwm"] < 40 * 1024, (base, st)
    for s in conns:
        s.close()


def test_containers_of_nothing_cannot_make_the_receiver_loop(victim):
    """An unknown field holding lists of 2^31 elements of a type that takes no bytes:
    thriftpy2 would loop over them holding the GIL (the whole receiver frozen)."""
    v = victim("rpcSource(0)")
    nothing = b"\x00" + struct.pack(">i", 2**31 - 1)            # list<STOP> of 2^31 - 1
    s = socket.create_connection(("127.0.0.1", v.port))
    s.sendall(call_header(b"appendPacked") + b"\x0f\x00\x63\x0f" + struct.pack(">i", 1000)
              + nothing * 1000)
    assert closed_by_peer(s, 5)
    s.close()
    assert v.status()["metrics"]["refused_malformed"] == 1
    with FlumeClient("127.0.0.1", v.port, timeout=5) as c:
        c.send([Event(b"served")])


def test_garbage_is_counted_and_warned_about(ctx, opened, caplog):
    src = opened(build_source(parse_source("rpcSource(0)")), ctx)
    for junk in (b"GET / HTTP/1.0\r\n\r\n", b"\x80\x01\x00\x01" + b"\xff" * 64):
        s = socket.create_connection(("127.0.0.1", src.port))
        s.sendall(junk)
        assert closed_by_peer(s)
        s.close()
    wait_until(lambda: src.metrics.get("refused_malformed", 0) >= 1, 5, "refusal counted")
    assert src.metrics["refused"] >= 1
    assert any(r.levelname == "WARNING" and "refused input (malformed)" in r.getMessage()
               for r in caplog.records)


# ------------------------------------------------------------------ connections

def test_idle_flood_is_capped_and_a_client_is_served_at_once(victim):
    """2,000 idle connections from one address: at most maxConnections threads, and each
    new connection closes the one idle the longest, so a client is served at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    v = victim("rpcSource(0, maxConnections=200)")
    base = v.status()["threads"]
    flood = []
    try:
        for i in range(2000):
            flood.append(socket.create_connection(("127.0.0.1", v.port)))
        wait_until(lambda: (lambda m: m.get("connections", 0) +
                            m.get("refused_connections", 0) == 2000)(v.status()["metrics"]),
                   20, "every connection accepted or refused")
        wait_until(lambda: v.status()["threads"] <= base + 200 + 1, 10, "evicted ones gone")
        st = v.status()
        assert st["metrics"]["refused_evicted"] >= 1800 - 1, st
        assert st["metrics"].get("refused_connections", 0) == 0, st
        with FlumeClient("127.0.0.1", v.port, timeout=5) as c:     # no wait for idling
            c.send([Event(b"legitimate")])
        assert v.status()["threads"] <= base + 200 + 1
    finally:
        for s in flood:
            s.close()


def test_connection_closed_while_idle_is_reconnected_transparently(ctx, opened):
    src = opened(build_source(parse_source("rpcSource(0, idleTimeoutMs=200)")), ctx)
    drained = []
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            if b := src.next_batch(0.05):
                drained.extend(b)
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        client = RpcClient("127.0.0.1", src.port, 5)
        assert client.append_packed([Event(b"1")]) == (Status.OK, "")
        wait_until(lambda: src.metrics.get("idle_closed", 0) == 1, 5, "idle close")
        assert client.append_packed([Event(b"2")]) == (Status.OK, "")
        assert client.stale_reconnects == 1 and client.connects == 2
        assert [e.body for e in drained] == [b"1", b"2"]
        client.close()
    finally:
        stop.set()
        t.join(2)


def test_senders_split_batches_the_receiver_would_refuse(ctx, opened):
    src = opened(build_source(parse_source("rpcSource(0)")), ctx)
    got = []
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            if b := src.next_batch(0.05):
                got.extend(b)
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        many = [Event(b"%d" % i) for i in range(25_000)]       # > maxBatchEvents
        with FlumeClient("127.0.0.1", src.port) as c:
            c.send(many)
        big = [Event(b"b" * 30_000) for _ in range(100)]      # 3 MB: > appendBatch's 2 MiB
        sink = build_sink(parse_sink(f"rpcSink(\"127.0.0.1\", {src.port}, packed=false)"))
        sink.open(ctx)
        sink.append(big)
        sink.close()
        wait_until(lambda: len(got) == 25_100, 10, "every event")
        assert [e.body for e in got[:25_000]] == [e.body for e in many]
        assert src.metrics.get("refused", 0) == 0
    finally:
        stop.set()
        t.join(2)


# ------------------------------------------------------------------ accept failures

def test_thread_start_failure_puts_the_logical_node_in_error(monkeypatch, tmp_path):
    monkeypatch.setattr(rpc, "ACCEPT_GIVE_UP", 0.5)
    node = LogicalNode("col", tmp_path)
    node.configure(parse_source("rpcSource(0)"), parse_sink("null"))
    port = node._flow.source.port
    real_start = threading.Thread.start

    def start(self):
        if self.name.startswith(f"rpcSource:{port}:"):
            raise RuntimeError("can't start new thread")
        return real_start(self)
    monkeypatch.setattr(threading.Thread, "start", start)

    def knock():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
        return node.state is State.ERROR
    wait_until(knock, 10, "logical node in ERROR")
    assert "cannot start a thread for a connection" in node.last_error
    metrics = node.status()["components"]["source"]["metrics"]
    assert metrics["accept_failed"] == 1 and metrics["refused_threads"] >= 1
    with pytest.raises(OSError):      # its port is closed: agents fail over at once
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    node.stop(5)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv")
                    or not shutil.which("prlimit"), reason="needs root, setpriv and prlimit")
def test_real_thread_limit_puts_the_logical_node_in_error(victim):
    """A real limit on threads (RLIMIT_NPROC): the receiver runs with the real uid of
    ``nobody`` (its effective uid stays root, to read this checkout) and without the
    capabilities that exempt from the limit."""
    v = victim("rpcSource(0)", give_up=0.5,
               prefix=("setpriv", "--ruid=65534", "--bounding-set=-sys_resource,-sys_admin",
                       "prlimit", "--nproc=12"))
    conns = []
    try:
        def flood():
            try:
                conns.append(socket.create_connection(("127.0.0.1", v.port), timeout=1))
            except OSError:
                pass
            return v.status()["state"] == "ERROR"
        wait_until(flood, 30, "receiver in ERROR")
        st = v.status()
        assert "cannot start a thread" in st["last_error"], st
        assert st["metrics"]["refused_threads"] >= 1 and st["metrics"]["accept_failed"] == 1
        assert st["threads"] <= 12
    finally:
        for s in conns:
            s.close()


def test_unknown_fields_and_old_style_headers_are_read_as_thrift_requires(ctx, opened):
    """The bounded reader (node/rpc_wire.py) skips fields it does not know, or of
    another type, and reads the old unversioned message header."""
    src = opened(build_source(parse_source("rpcSource(0)")), ctx)
    got = []

    def drain():            # the driver: take, append, then tell the source (checkpoint)
        got.extend(src.next_batch(5) or [])
        src.checkpoint()
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    name = b"appendBatch"
    event = (b"\x0b\x00\x03" + struct.pack(">i", 2) + b"hi"               # body
             + b"\x08\x00\x09" + struct.pack(">i", 7)                     # unknown i32
             + b"\x0f\x00\x0a\x0b" + struct.pack(">ii", 1, 1) + b"z"      # unknown list
             + b"\x08\x00\x01" + struct.pack(">i", 5)                     # timestamp as i32
             + b"\x0d\x00\x06\x0b\x0b" + struct.pack(">ii", 1, 1) + b"k"
             + struct.pack(">i", 1) + b"v"                                # fieldss
             + b"\x00")
    msg = (struct.pack(">i", len(name)) + name + b"\x01" + struct.pack(">i", 42)  # old style
           + b"\x0f\x00\x01\x0c" + struct.pack(">i", 1) + event + b"\x00")
    s = socket.create_connection(("127.0.0.1", src.port))
    s.sendall(msg)
    s.settimeout(5)
    answer = s.recv(1000)
    t.join(5)
    assert answer.startswith(struct.pack(">I", 0x80010002) + struct.pack(">i", len(name))
                             + name + struct.pack(">i", 42))
    assert b"\x08\x00\x01" + struct.pack(">i", Status.OK) in answer
    assert [(e.body, e.attrs, e.timestamp) for e in got] == [(b"hi", {"k": b"v"}, 0)]
    s.sendall(call_header(b"noSuchMethod", 7) + b"\x00")       # answered, not fatal
    assert struct.pack(">I", 0x80010003) in s.recv(1000)
    s.close()


# ------------------------------------------------------------------ issue 9 review

def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the receiver takes before it closes the connection."""
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_long_method_names_are_refused_before_they_are_read(victim):
    """4 connections each calling a method named by 15 MiB of 0xFF and never reading:
    the name was read, then echoed twice with every byte tripled (50 -> 705 MiB RSS)."""
    v = victim("rpcSource(0)")
    base = v.status()
    name = b"\xff" * (15 * MB)
    conns = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", v.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        send_quietly(s, call_header(name) + b"\x00")
        conns.append(s)
    for s in conns:
        assert closed_by_peer(s)
        s.close()
    st = v.status()
    assert st["metrics"]["refused_malformed"] == 4, st
    assert st["hwm"] - base["hwm"] < 20 * 1024, (base, st)
    # 64 bytes is still a name: answered as an unknown method, the name shown once each
    s = socket.create_connection(("127.0.0.1", v.port), timeout=5)
    s.sendall(call_header(b"\xff" * 64) + b"\x00")
    answer = s.recv(4096)
    assert struct.pack(">I", 0x80010003) in answer and len(answer) < 500, answer
    s.close()


def test_names_from_the_wire_are_cut_in_answers(ctx, opened):
    src = opened(build_source(parse_source("rpcSource(0)")), ctx)
    client = RpcClient("127.0.0.1", src.port, 5)
    agent = "a" * 10_000
    status, message = client.append_group(agent, 1, 12345, b"not checked", 1)
    assert status == Status.FAILED and "checksum mismatch" in message
    assert len(message) < 300 and "(10000 characters)" in message, message
    client.close()


class OneBytePerRecv(socket.socket):
    """A real socket whose reads return one byte at a time: what a peer sending one byte
    per TCP segment makes the receiver see."""

    def recv(self, n, *flags):
        return super().recv(1, *flags)


def test_a_string_received_a_byte_at_a_time_costs_its_length():
    """Each recv() result was kept as a bytes object of its own until the string was
    complete: 400 kB sent a byte per segment cost 12 MiB (~30x)."""
    import tracemalloc

    from flume_og.node import rpc_wire as wire
    a, b = socket.socketpair()
    n = 200_000
    reader = wire.Reader(OneBytePerRecv(fileno=b.detach()), 10)
    reader.sock.settimeout(5)
    reader.begin(MB)
    a.sendall(b"x" * n)
    tracemalloc.start()
    try:
        data = reader.take(n)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        a.close()
        reader.sock.close()
    assert data == b"x" * n
    assert peak < 3 * n, f"peak {peak} bytes for a string of {n}"


def test_a_message_must_arrive_within_message_timeout(ctx, opened):
    """A byte now and then within idleTimeoutMs held a slot forever; now the message
    must be complete messageTimeoutMs after its first byte. A silent connection is not
    affected."""
    src = opened(build_source(parse_source(
        "rpcSource(0, messageTimeoutMs=600, idleTimeoutMs=60000)")), ctx)
    silent = socket.create_connection(("127.0.0.1", src.port))
    drip = socket.create_connection(("127.0.0.1", src.port))
    message = call_header(b"appendPacked") + b"\x0b\x00\x01" + struct.pack(">i", 1000)
    start = time.monotonic()
    closed = False
    for byte in message:
        try:
            drip.send(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.1)
    assert closed or closed_by_peer(drip, 5)
    assert time.monotonic() - start < 4
    wait_until(lambda: src.metrics.get("refused_slow") == 1, 5, "counted slow")
    drip.close()
    # the silent one was idle all along (idle timeout 60 s): still open and usable
    silent.setblocking(False)
    with pytest.raises(BlockingIOError):
        silent.recv(1)
    silent.close()
    assert src.metrics.get("idle_closed", 0) == 0


def test_one_address_cannot_hold_every_slot(ctx, opened):
    """From one address: 512 connections each holding a started message kept every
    other sender out. Now an address gets maxConnectionsPerPeer slots, and a full server
    closes the connection idle the longest, not one in the middle of a message."""
    src = opened(build_source(parse_source(
        "rpcSource(0, maxConnections=6, maxConnectionsPerPeer=3)")), ctx)

    def connect(host: str) -> socket.socket:
        return socket.create_connection(("127.0.0.1", src.port), timeout=5,
                                        source_address=(host, 0))
    hogs = [connect("127.0.0.2") for _ in range(3)]
    for h in hogs:
        h.sendall(b"\x80")                       # a message begun, never finished
    wait_until(lambda: src._server is not None and
               sum(r.started for _, r in src._server._conns.values()) == 3, 5,
               "three messages begun")
    extra = connect("127.0.0.2")
    assert closed_by_peer(extra)
    wait_until(lambda: src.metrics.get("refused_peer_connections") == 1, 5, "refused")
    idle = [connect("127.0.0.3") for _ in range(3)]     # the server is full now
    wait_until(lambda: len(src._server._conns) == 6, 5, "six connections")
    got = []
    t = threading.Thread(target=lambda: got.extend(src.next_batch(5) or []) or
                         src.checkpoint(), daemon=True)
    t.start()
    legit = RpcClient("127.0.0.1", src.port, 5)
    assert legit.append_packed([Event(b"legitimate")]) == (Status.OK, "")
    t.join(5)
    assert [e.body for e in got] == [b"legitimate"]
    assert closed_by_peer(idle[0])            # the one idle the longest made room
    assert src.metrics["refused_evicted"] == 1
    for h in hogs:                            # messages in progress are never cut off
        h.setblocking(False)
        with pytest.raises(BlockingIOError):
            h.recv(1)
    legit.close()
    for s in hogs + idle + [extra]:
        s.close()


def test_oneway_append_without_an_event_is_counted_not_logged_each_time(ctx, opened,
                                                                         caplog):
    """Each one logged a WARNING with a traceback: 20,000 grew the log by 2.28 MB."""
    src = opened(build_source(parse_source("rpcSource(0)")), ctx)
    empty = struct.pack(">Ii", 0x80010004, 6) + b"append" + struct.pack(">i", 0) + b"\x00"
    s = socket.create_connection(("127.0.0.1", src.port))
    s.sendall(empty * 2000)
    wait_until(lambda: src.metrics.get("refused_malformed") == 2000, 10, "all counted")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]
    assert not any(r.exc_info for r in warnings)
    s.close()


@pytest.mark.parametrize("arg", ["maxConnectionsPerPeer=0", "messageTimeoutMs=0"])
def test_connection_bounds_are_checked(arg):
    from flume_og.node.errors import SpecError
    with pytest.raises(SpecError, match=arg.split("=")[0]):
        build_source(parse_source(f"collectorSource(0, {arg})"))


def test_a_few_addresses_cannot_keep_a_new_one_out(ctx, opened):
    """Two addresses filled every slot (per-address cap x 2 = the total), each connection
    holding a begun message: a call from a third address was answered 0 of 20 times over
    40 s. Now the slowest message of the address holding the most slots makes room,
    while an address cannot take a slot from one holding as few as itself."""
    src = opened(build_source(parse_source(
        "rpcSource(0, maxConnections=6, maxConnectionsPerPeer=3)")), ctx)

    def connect(host: str) -> socket.socket:
        return socket.create_connection(("127.0.0.1", src.port), timeout=5,
                                        source_address=(host, 0))
    hogs = {h: [connect(h) for _ in range(3)] for h in ("127.0.0.2", "127.0.0.3")}
    for i, h in enumerate(hogs["127.0.0.2"] + hogs["127.0.0.3"]):
        h.sendall(b"\x80")                       # a message begun, never finished
        wait_until(lambda: src._server is not None and
                   sum(r.started for _, r in src._server._conns.values()) == i + 1, 5,
                   "message begun")
    got = []
    t = threading.Thread(target=lambda: got.extend(src.next_batch(5) or []) or
                         src.checkpoint(), daemon=True)
    t.start()
    legit = RpcClient("127.0.0.1", src.port, 5)   # a third address
    assert legit.append_packed([Event(b"legitimate")]) == (Status.OK, "")
    t.join(5)
    assert [e.body for e in got] == [b"legitimate"]
    assert closed_by_peer(hogs["127.0.0.2"][0], 5)   # the oldest of the biggest holder
    assert src.metrics["refused_evicted_slow"] == 1
    legit.close()
    wait_until(lambda: len(src._server._conns) == 5, 5, "legit gone")
    busy = connect("127.0.0.4")
    busy.sendall(b"\x80")                        # full again, nobody idle
    wait_until(lambda: sum(r.started for _, r in src._server._conns.values()) == 6, 5,
               "six messages begun")
    back = connect("127.0.0.2")                  # holds 2, the biggest holder 3: refused
    assert closed_by_peer(back, 5)
    wait_until(lambda: src.metrics.get("refused_connections") == 1, 5, "refused")
    assert src.metrics["refused_evicted_slow"] == 1
    for h in hogs["127.0.0.2"][1:] + hogs["127.0.0.3"] + [busy]:   # still open
        h.setblocking(False)
        with pytest.raises(BlockingIOError):
            h.recv(1)
    for h in hogs["127.0.0.2"] + hogs["127.0.0.3"] + [busy, back]:
        h.close()


def test_a_slow_link_is_not_cut_a_trickle_and_a_burst_then_silence_are(ctx, opened):
    """The fixed 30 s deadline from a message's first byte cut a 3 MiB batch at 90 kB/s
    at 30.2 s, and every resend of it. Now a message must keep arriving at
    minBytesPerSecond with at most messageTimeoutMs of credit: a 200 kB appendPacked at
    64 kB/s (three times the timeout) is answered, a byte every 50 ms is cut about
    messageTimeoutMs after it began, and so is a 100 kB burst followed by silence."""
    src = opened(build_source(parse_source(
        "rpcSource(0, messageTimeoutMs=1000, minBytesPerSecond=16384)")), ctx)
    events = [Event(b"s" * 1000, i) for i in range(200)]
    payload = rpc.encode_payload(events, False)
    message = (call_header(b"appendPacked") + b"\x0b\x00\x01" +
               struct.pack(">i", len(payload)) + payload + b"\x08\x00\x02" +
               struct.pack(">i", len(events)) + b"\x00")
    answer: list = []

    def slow_sender() -> None:
        with socket.create_connection(("127.0.0.1", src.port)) as s:
            start = time.monotonic()
            for i in range(0, len(message), 3200):      # 64 kB/s in 50 ms pieces
                s.sendall(message[i:i + 3200])
                time.sleep(max(0.0, start + (i + 3200) / 64_000 - time.monotonic()))
            answer.append(time.monotonic() - start)
            s.settimeout(10)
            answer.append(s.recv(1000))
    got: list = []
    consumer = threading.Thread(target=lambda: got.extend(src.next_batch(10) or []) or
                                src.checkpoint(), daemon=True)
    consumer.start()
    sender = threading.Thread(target=slow_sender, daemon=True)
    sender.start()
    burst = socket.create_connection(("127.0.0.1", src.port))
    trickle = socket.create_connection(("127.0.0.1", src.port))
    burst.sendall(call_header(b"appendPacked") + b"\x0b\x00\x01" +
                  struct.pack(">i", 1_000_000) + b"b" * 100_000)
    start = time.monotonic()
    cut = trickle_until_cut(trickle, message[:80], 0.05, 4)
    assert cut is not None and cut < 2.5, cut          # cut about 1 s after it began
    assert closed_by_peer(burst, 2)
    assert time.monotonic() - start < 2.5              # and the burst as soon
    sender.join(10)
    consumer.join(10)
    assert answer and answer[0] > 2.5, answer          # three times messageTimeoutMs
    assert len(got) == 200 and answer[1]               # taken and answered
    assert src.metrics["refused_slow"] == 2
    trickle.close()
    burst.close()


def test_min_bytes_per_second_is_checked():
    from flume_og.node.errors import SpecError
    with pytest.raises(SpecError, match="minBytesPerSecond"):
        build_source(parse_source("collectorSource(0, minBytesPerSecond=-1)"))
