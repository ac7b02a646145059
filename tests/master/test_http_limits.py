"""The master's HTTP bounds against a real ``flume master`` process over real sockets:
token before body, body size, Host, slow headers, connection cap, descriptor exhaustion."""
from __future__ import annotations

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

pytestmark = pytest.mark.timeout(90)

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
            self.p = subprocess.Popen([sys.executable, "-m", "master.cli", *args], cwd=ROOT,
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
            while b"\r\n\r\n" not in answer:
                more = s.recv(65536)
                if not more:
                    break
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, time.monotonic() - t0


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


def test_connections_past_the_cap_get_503_and_the_master_recovers(master):
    held = []
    try:
        for _ in range(12):
            held.append(socket.create_connection(("127.0.0.1", master.port), timeout=5))
        extra = socket.create_connection(("127.0.0.1", master.port), timeout=5)
        answer = extra.recv(200)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
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
                   and "refused input (connections)" in m.output(), 20,
                   "descriptors exhausted, connections shed and refused")
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
    assert r.json()["refused"]["refused_connections"] >= 1
    assert m.output().count("Too many open files") <= 2
    m.stop()


def test_a_flood_of_bad_requests_is_one_log_line(master):
    before = master.output().count("Invalid HTTP request")
    for _ in range(30):
        answer, _ = raw(master.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
    assert master.output().count("Invalid HTTP request") - before <= 1


def test_a_stalled_body_is_cut_off_after_the_body_timeout():
    """In-process (uvicorn on a thread) with a half-second body timeout."""
    import threading

    from node.http_server import HttpLimits, listening_socket, server
    from node.component import Metrics
    from node.limits import Refusals

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

    metrics = Metrics()
    refusals = Refusals(metrics, __import__("logging").getLogger("test"), "test server")
    sock = listening_socket("127.0.0.1", 0, refusals)
    srv = server(echo_length, sock, HttpLimits(body_timeout=0.5, header_timeout=5),
                 refusals)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: srv.started, 10, "server started")
        port = sock.getsockname()[1]
        head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
        answer, _ = raw(port, head.encode() + b"x" * 100)
        assert answer.startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(head.encode() + b"x" * 10)   # then nothing more
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert 0.4 < time.monotonic() - t0 < 3
        assert metrics["refused_body_timeout"] == 1
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
