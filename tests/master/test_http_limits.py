"""The master's HTTP bounds against a real ``flume master`` process over real sockets:
token before body, body size, Host, slow headers, connection cap, descriptor exhaustion."""
from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.harness import ROOT, Proc, wait_until
from tests.sockets import closed_now, connect_from

# One worker runs this module under pytest-xdist: its master is made once.
pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("http-limits")]

TOKEN = "http-limits-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MB50 = 50 * 1024 * 1024


class LimitedMaster(Proc):
    """A master process with extra arguments; ``url`` and ``pid`` once it answers."""

    def __init__(self, tmp, zk: str, *extra: str, name: str = "m", env=None,
                 preexec=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--log-level", "INFO", "master", "--zk", zk, "--zk-root",
                f"/test-http-{uuid.uuid4().hex[:10]}", "--http-port", str(self.port),
                "--data-dir", str(tmp / f"master-{name}"), "--zk-insecure", *extra]
        self.log = tmp / f"master-{name}.log"
        with open(self.log, "ab") as f:
            self.p = subprocess.Popen([sys.executable, "-m", "flume_og.master.cli", *args], cwd=ROOT,
                                      stdout=f, stderr=subprocess.STDOUT,
                                      env={**os.environ, **(env or {})},
                                      preexec_fn=preexec)
        wait_until(lambda: httpx.get(self.url + "/api/health", timeout=2).status_code == 200,
                   30, f"master {name} up: {self.output()[-2000:]}")
        self.pid = self.p.pid

    def rss_mb(self) -> float:
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def refused(self) -> dict:
        return httpx.get(self.url + "/api/health", timeout=5).json()["refused"]


@pytest.fixture(scope="module")
def master(zk_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-limits")
    (tmp / "token").write_text(TOKEN)
    m = LimitedMaster(tmp, zk_server.connect_string, "--token-file", str(tmp / "token"),
                      "--header-timeout", "1", "--max-connections", "12",
                      "--allowed-host", "flume.example")
    yield m
    m.stop()


def raw(port: int, head: bytes, body_bytes: int = 0, chunk: bytes = b"x" * 65536,
        timeout: float = 10) -> tuple[bytes, float]:
    """Send ``head`` then up to ``body_bytes`` of body (stopping when the server answers
    or closes); return the answer's first bytes and the seconds it took."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        s.setblocking(False)
        sent, answer = 0, b""
        while sent < body_bytes:
            try:
                answer += s.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                sent += s.send(chunk[:body_bytes - sent])
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        s.setblocking(True)
        s.settimeout(timeout)
        try:
            while not _whole(answer):     # the head, then the body it announces
                more = s.recv(65536)
                if not more:
                    break
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, time.monotonic() - t0


def _whole(answer: bytes) -> bool:
    """Whether ``answer`` holds an answer's head and as much body as its Content-Length
    says (the body may come in a later segment than the head)."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return True


def post_head(port: int, length: int, token: bool, host: str = "127.0.0.1") -> bytes:
    return (f"POST /api/commands HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
            + (f"Authorization: Bearer {TOKEN}\r\n" if token else "") + "\r\n").encode()


def test_a_50mb_body_without_token_is_refused_before_it_is_read(master):
    before = master.rss_mb()
    answer, took = raw(master.port, post_head(master.port, MB50, token=False), MB50)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"access token" in answer
    # httpx too: it reads the answer although the server stops reading the body
    r = httpx.post(master.url + "/api/commands", content=b"x" * MB50, timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    after = master.rss_mb()
    print(f"50 MB without token: 401 in {took:.3f} s; RSS {before:.0f} -> {after:.0f} MB")
    assert took < 2 and after - before < 30
    assert master.refused()["refused_token"] >= 2


def test_a_50mb_body_with_token_is_413_whether_announced_or_chunked(master):
    before = master.rss_mb()
    answer, took = raw(master.port, post_head(master.port, MB50, token=True), MB50)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert took < 2

    def chunks():   # no Content-Length: the body is counted as it comes
        for _ in range(MB50 // 65536):
            yield b"x" * 65536
    r = httpx.post(master.url + "/api/commands", content=chunks(), headers=AUTH,
                   timeout=30)
    assert r.status_code == 413 and "--max-body" in r.json()["message"]
    after = master.rss_mb()
    print(f"50 MB with token: 413 in {took:.3f} s; RSS {before:.0f} -> {after:.0f} MB")
    assert after - before < 30
    # a body within the bound still works
    ok = httpx.post(master.url + "/api/commands", json={"command": "noop"}, headers=AUTH,
                    timeout=10)
    assert ok.status_code == 200 and ok.json()["state"] == "SUCCEEDED"


def test_foreign_host_names_are_refused(master):
    r = httpx.get(master.url + "/api/status", headers={"Host": "evil.example"}, timeout=5)
    assert r.status_code == 421 and "evil.example" in r.json()["message"]
    r = httpx.get(master.url + "/", headers={"Host": f"evil.example:{master.port}"},
                  timeout=5)
    assert r.status_code == 421
    for host in (f"127.0.0.1:{master.port}", "localhost", f"[::1]:{master.port}",
                 "flume.example", socket.gethostname(), "10.1.2.3:80"):
        r = httpx.get(master.url + "/api/health", headers={"Host": host}, timeout=5)
        assert r.status_code == 200, host
    assert master.refused()["refused_host"] >= 2


def test_slow_headers_are_cut_off_after_the_header_timeout(master):
    before = master.refused().get("refused_header_timeout", 0)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", master.port), timeout=10) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\n")
        closed_after = None
        for i in range(40):           # a header line every 0.2 s: never complete
            try:
                s.sendall(f"X-Slow-{i}: {i}\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
            s.settimeout(0.2)
            try:
                if s.recv(100) == b"":
                    closed_after = time.monotonic() - t0
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed_after = time.monotonic() - t0
                break
    assert closed_after is not None and 0.9 < closed_after < 3, closed_after
    # a connection that sends nothing at all is closed too
    with socket.create_connection(("127.0.0.1", master.port), timeout=5) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert 0.9 < time.monotonic() - t0 < 3
    assert master.refused()["refused_header_timeout"] >= before + 2


def test_slow_heads_from_other_addresses_never_get_the_api_503(master):
    """The review's M2 on the real master (12 slots here, 64 per address): 100 unfinished
    heads from 127.0.0.2 and 127.0.0.3. Before, every GET from 127.0.0.1 got 503; now the
    oldest heads are closed to make room."""
    before = master.refused().get("refused_evicted", 0)
    hogs = [connect_from(a, master.port, HALF_HEAD) for a in ("127.0.0.2", "127.0.0.3")
            for _ in range(50)]
    try:
        for _ in range(5):
            r = httpx.get(master.url + "/api/health", timeout=5)
            assert r.status_code == 200
        assert sum(not closed_now(c) for c in hogs) <= 12
        assert r.json()["refused"]["refused_evicted"] >= before + 100 - 12
    finally:
        for c in hogs:
            c.close()


def test_connections_being_served_past_the_cap_get_503_and_the_master_recovers(master):
    def serving():                         # a body that never ends: being served
        c = socket.create_connection(("127.0.0.1", master.port), timeout=5)
        c.sendall(post_head(master.port, 100, token=True) + b"{")
        return c

    def refused() -> bool:
        # a probe that came before the server read a held head took that one's slot
        lost = [i for i, c in enumerate(held) if closed_now(c)]
        for i in lost:
            held[i].close()
            held[i] = serving()
        return not lost and answer(master.port, "127.0.0.1").startswith(b"HTTP/1.1 503")
    held = [serving() for _ in range(12)]
    try:
        assert wait_until(refused, 15, "a 503 past 12 connections being served",
                          interval=0.2)
    finally:
        for s in held:
            s.close()
    assert wait_until(lambda: httpx.get(master.url + "/api/health", timeout=2)
                      .json()["refused"].get("refused_connections", 0) >= 1, 10,
                      "the master serves again")


def test_out_of_descriptors_the_master_neither_spins_nor_floods_its_log(zk_server,
                                                                         tmp_path):
    """96 descriptors: the master caps itself at 32 connections; a burst of connections
    queued while it was stopped exhausts its descriptors on the first wake-up (one accept
    pass takes up to the backlog). It sheds them and stays quiet."""
    import signal
    limit = 96

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    m = LimitedMaster(tmp_path, zk_server.connect_string, "--max-connections", "500",
                      "--header-timeout", "30", preexec=low_fd_limit)
    assert "at most 32 HTTP connections at once instead of 500" in m.output()
    socks = []
    try:
        m.p.send_signal(signal.SIGSTOP)
        for _ in range(limit + 40):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", m.port))
            except BlockingIOError:
                pass
            socks.append(s)
        m.p.send_signal(signal.SIGCONT)
        wait_until(lambda: "refused input (descriptors)" in m.output()
                   and "refused input (evicted)" in m.output(), 20,
                   "descriptors exhausted, connections shed and evicted")
        lines, cpu, t0 = m.output().count("\n"), m.cpu_seconds(), time.monotonic()
        time.sleep(2)   # measuring: the master must stay quiet over these 2 s
        cpu_pct = 100 * (m.cpu_seconds() - cpu) / (time.monotonic() - t0)
        new_lines = m.output().count("\n") - lines
        print(f"out of descriptors: {cpu_pct:.0f} % CPU, {new_lines} log lines in 2 s")
        assert cpu_pct < 20 and new_lines <= 2, m.output()[-3000:]
    finally:
        for s in socks:
            s.close()
    r = wait_until(lambda: httpx.get(m.url + "/api/health", timeout=2), 10, "served again")
    assert r.status_code == 200
    assert r.json()["refused"]["refused_descriptors"] >= 1
    assert r.json()["refused"]["refused_evicted"] >= 1
    assert m.output().count("Too many open files") <= 2
    m.stop()


def test_a_flood_of_bad_requests_is_one_log_line(master):
    before = master.output().count("Invalid HTTP request")
    for _ in range(30):
        answer, _ = raw(master.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
    assert master.output().count("Invalid HTTP request") - before <= 1


async def echo_length(scope, receive, send):   # reads the whole body, like the API
    if scope["type"] != "http":
        return
    n, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        n += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(n).encode()})


@contextlib.contextmanager
def inprocess_server(limits, app=echo_length):
    """:func:`node.http_server.server` running ``app`` on a thread: (port, metrics,
    the uvicorn server)."""
    import threading

    from flume_og.node.http_server import listening_socket, server
    from flume_og.node.component import Metrics
    from flume_og.node.limits import Refusals

    metrics = Metrics()
    refusals = Refusals(metrics, logging.getLogger("test"), "test server")
    sock = listening_socket("127.0.0.1", 0, refusals)
    srv = server(app, sock, limits, refusals)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: srv.started, 10, "server started")
        yield sock.getsockname()[1], metrics, srv
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()






HALF_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def get(port: int, address: str = "127.0.0.1") -> bytes:
    with connect_from(address, port, b"GET / HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n") as c:
        out = b""
        while chunk := c.recv(4096):
            out += chunk
    return out


def answer(port: int, address: str) -> bytes:
    """What the server says to a connection from ``address`` before any request (a
    refused one is answered at once; sending could meet a reset instead)."""
    with connect_from(address, port) as c:
        out = b""
        while chunk := c.recv(4096):
            out += chunk
    return out


def test_slow_heads_from_two_addresses_never_shut_out_a_third():
    """The review's M2 in little: 40 unfinished heads each from 127.0.0.2 and 127.0.0.3
    against 16 slots (8 per address). Before, every slot held a head and a GET from
    127.0.0.1 got 503; now each address keeps its 8 newest heads, and the GET a slot."""
    from flume_og.node.http_server import HttpLimits
    with inprocess_server(HttpLimits(max_connections=16, max_connections_per_peer=8,
                                     header_timeout=30)) as (port, metrics, _):
        hogs = {a: [connect_from(a, port, HALF_HEAD) for _ in range(40)]
                for a in ("127.0.0.2", "127.0.0.3")}
        try:
            for a, socks in hogs.items():
                wait_until(lambda: sum(map(closed_now, socks[:32])) == 32, 5,
                           f"the 32 oldest heads from {a} evicted")
                assert not any(closed_now(c) for c in socks[32:])
            assert get(port).startswith(b"HTTP/1.1 200")
            assert metrics["refused_evicted"] == 2 * 32 + 1   # and one for the GET
            assert "refused_connections" not in metrics
            # the GET took the slot of the oldest head left, whatever its address
            assert sum(closed_now(c) for socks in hogs.values() for c in socks[32:]) == 1
        finally:
            for socks in hogs.values():
                for c in socks:
                    c.close()


def test_connections_being_served_are_never_evicted_past_them_503():
    """A complete head is being served (here: its body still coming): such connections
    are never closed to make room; past them a newcomer is answered 503."""
    from flume_og.node.http_server import HttpLimits
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345"
    with inprocess_server(HttpLimits(max_connections=6, max_connections_per_peer=3,
                                     header_timeout=30, body_timeout=30)) as (port, metrics, srv):
        served = [connect_from(a, port, head) for a in ("127.0.0.2", "127.0.0.3")
                  for _ in range(3)]
        try:
            wait_until(lambda: len(srv.server_state.connections) == 6, 5, "all six served")
            assert answer(port, "127.0.0.2").startswith(b"HTTP/1.1 503")   # its 3 are busy
            assert answer(port, "127.0.0.4").startswith(b"HTTP/1.1 503")   # all 6 are busy
            assert metrics["refused_peer_connections"] == 1
            assert metrics["refused_connections"] == 1
            assert "refused_evicted" not in metrics
            for c in served:                       # each finishes its request: 200
                c.sendall(b"67890")
                assert c.recv(100).startswith(b"HTTP/1.1 200")
        finally:
            for c in served:
                c.close()
        assert get(port, "127.0.0.4").startswith(b"HTTP/1.1 200")


def test_a_refused_body_cannot_hold_a_slot_by_trickling():
    """An answer given before the body was read (the API's 401 before the body): the
    rest of the body may come for body_timeout in all, however slowly it trickles."""
    from flume_og.node.http_server import HttpLimits

    async def refuse(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})
    with inprocess_server(HttpLimits(body_timeout=0.6, header_timeout=5),
                          refuse) as (port, metrics, _):
        with connect_from("127.0.0.1", port,
                          b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n") as c:
            assert c.recv(100).startswith(b"HTTP/1.1 401")
            t0, gone = time.monotonic(), None
            while gone is None and time.monotonic() - t0 < 4:   # a byte every 0.1 s
                try:
                    c.sendall(b"x")
                except OSError:
                    gone = time.monotonic() - t0
                    break
                if closed_now(c):
                    gone = time.monotonic() - t0
                else:
                    time.sleep(0.1)
            assert gone is not None and 0.4 < gone < 2, gone
        assert metrics["refused_body_timeout"] == 1


def test_a_stalled_body_is_cut_off_after_the_body_timeout():
    """In-process (uvicorn on a thread) with a half-second body timeout."""
    from flume_og.node.http_server import HttpLimits
    with inprocess_server(HttpLimits(body_timeout=0.5, header_timeout=5)) as (port, metrics, _):
        head = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
        answer, _ = raw(port, head.encode() + b"x" * 100)
        assert answer.startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(head.encode() + b"x" * 10)   # then nothing more
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert 0.4 < time.monotonic() - t0 < 3
        assert metrics["refused_body_timeout"] == 1


def test_master_help_states_the_quota_and_flags_reach_the_limits():
    """The --zk-heap-mb help says the data quota the master sets (review 2, L3: it said
    MIB/4); --max-connections-per-peer reaches the server's limits."""
    import re

    from flume_og.master import cli
    from flume_og.master.server import quota
    parser = cli.build_parser()
    master_parser = next(a for a in parser._actions if a.dest == "command").choices["master"]
    text = " ".join(master_parser.format_help().split())
    znodes, data = re.search(r"MIB\*(\d+) znodes, MIB/(\d+) MiB of data", text).groups()
    assert quota(256) == (256 * int(znodes), 256 * 1024 * 1024 // int(data))
    args = parser.parse_args(["master", "--max-connections-per-peer", "5"])
    assert cli._http_options(args)["limits"].max_connections_per_peer == 5
    assert cli._http_options(parser.parse_args(["master"]))["limits"] \
        .max_connections_per_peer == 64
