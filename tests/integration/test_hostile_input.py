"""Hostile input against every network source of one real node process at once.

One ``flume node --one-shot`` process runs a logical node per network source (syslogTcp,
syslogUdp, netcat, httpSource, rpcSource, collectorSource), each into ``null``. The test
sends each of them what an attacker on the same network would: garbage, announced lengths
of 2 GiB, a compression bomb, a batch of more events than allowed, lines far past the event
size, floods of idle connections, unfinished requests, deeply nested JSON. Then it asserts:

* the process's peak RSS (VmHWM) stayed under ``RSS_BOUND_MB`` through all of it;
* every attack was refused and counted (``refused`` in each source's metrics);
* a legitimate client of every source is served afterwards.

The master's REST API gets the same treatment in tests/master/test_http_limits.py.
"""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest

from flume_og.node.client import FlumeClient
from flume_og.node.event import Event
from flume_og.node.rpc import RpcClient, encode_payload
from tests.conftest import free_port

from .harness import ROOT, wait_until

pytestmark = pytest.mark.timeout(120)

RSS_BOUND_MB = 200    # the stated bound for one node under all of these at once

SOURCES = {
    "stcp": "syslogTcp({port})",
    "sudp": "syslogUdp({port})",
    "nc": "netcat({port})",
    "http": "httpSource({port})",
    "rpc": "rpcSource({port})",
    "coll": "collectorSource({port})",
}


class NodeUnderAttack:
    def __init__(self, tmp: Path):
        self.ports = {name: free_port() for name in SOURCES}
        self.http_port = free_port()
        spec = ";\n".join(f"{name}: {src.format(port=self.ports[name])} | null"
                          for name, src in SOURCES.items())
        self.log = tmp / "node.log"
        with open(self.log, "wb") as f:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "flume_og.node.cli", "--log-level", "INFO", "node",
                 "--one-shot", "-n", "victim", "--data-dir", str(tmp / "data"),
                 "--http-port", str(self.http_port), "-c", spec],
                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        wait_until(lambda: all(self.row(n).get("state") == "ACTIVE" for n in SOURCES),
                   30, f"every source active: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.http_port}/status.json", timeout=5).json()

    def row(self, name: str) -> dict:
        return (self.status().get("logical") or {}).get(name) or {}

    def source_metrics(self, name: str) -> dict:
        comps = self.row(name).get("components") or {}
        return (comps.get("source") or {}).get("metrics") or {}

    def events_in(self, name: str) -> int:
        return int(self.row(name).get("events_in") or 0)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


@pytest.fixture
def node(tmp_path):
    n = NodeUnderAttack(tmp_path)
    yield n
    n.stop()


# ---------------------------------------------------------------- attackers

def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setblocking(False)
    return s


def push(sock: socket.socket, data: bytes, seconds: float = 2.0) -> int:
    """Send as much of ``data`` as the receiver takes within ``seconds``; bytes sent."""
    sent, deadline = 0, time.monotonic() + seconds
    view = memoryview(data)
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(view[sent:sent + (1 << 20)])
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:      # refused, reset or closed by the receiver: what we expect
            break
    return sent


def close_all(socks) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def thrift_call(name: str, body: bytes) -> bytes:
    """A strict binary-protocol CALL message of ``name`` whose arguments are ``body``."""
    nb = name.encode()
    return struct.pack(">iI", -2147418111, len(nb)) + nb + struct.pack(">i", 1) + body


def announced_binary(length: int) -> bytes:
    """appendPacked whose payload field announces ``length`` bytes and carries 16."""
    return thrift_call("appendPacked", struct.pack(">bhi", 11, 1, length) + b"x" * 16)


def gzip_bomb(inflated: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    return b"".join(c.compress(chunk) for _ in range(inflated >> 20)) + c.flush()


def attack_line_sources(node: NodeUnderAttack, keep: list) -> None:
    huge = b"A" * (8 << 20)                   # one 8 MiB "line" without a newline
    for name in ("stcp", "nc"):
        port = node.ports[name]
        for _ in range(4):
            s = connect(port)
            push(s, huge, 1.0)
            keep.append(s)
        s = connect(port)
        push(s, bytes(range(256)) * 4096 + b"\n", 1.0)     # binary garbage
        keep.append(s)
        keep.extend(connect(port) for _ in range(300))      # past the connection cap
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(2000):
        try:
            u.sendto(b"\xff" * 60_000, ("127.0.0.1", node.ports["sudp"]))
        except OSError:
            pass
    u.close()


def attack_rpc_sources(node: NodeUnderAttack, keep: list) -> None:
    for name in ("rpc", "coll"):
        port = node.ports[name]
        s = connect(port)
        push(s, announced_binary(2**31 - 1), 1.0)            # 2 GiB announced
        keep.append(s)
        s = connect(port)
        push(s, b"\x80\x01" + bytes(range(256)) * 64, 1.0)  # garbage
        keep.append(s)
    bomb = gzip_bomb(256 << 20)                              # 1/4 GiB inflated
    c = RpcClient("127.0.0.1", node.ports["coll"], timeout=30)
    status, message = c.append_payload(bomb, 1)
    c.close()
    assert status == 2 and "more than" in message, (status, message)
    many = encode_payload([Event(b"")] * 100_000)           # more events than allowed
    c = RpcClient("127.0.0.1", node.ports["rpc"], timeout=30)
    status, message = c.append_payload(many, 100_000)
    c.close()
    assert status == 2, (status, message)
    for name in ("rpc", "coll"):                              # past the connection cap
        keep.extend(connect(node.ports[name]) for _ in range(600))


def attack_http(node: NodeUnderAttack, keep: list) -> None:
    url = f"http://127.0.0.1:{node.ports['http']}/"
    r = httpx.post(url, content=b"\n" * (8 << 20), timeout=30)
    assert r.status_code == 413, r.text
    r = httpx.post(url, content=b"[" * 100_000 + b"]" * 100_000,
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    for _ in range(20):                                      # unfinished requests
        s = connect(node.ports["http"])
        push(s, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc", 0.2)
        keep.append(s)


# ---------------------------------------------------------------- legitimate clients

def serve_legitimately(node: NodeUnderAttack) -> None:
    with socket.create_connection(("127.0.0.1", node.ports["stcp"]), timeout=5) as s:
        s.sendall(b"<13>Jan  1 00:00:00 host app: legitimate tcp\n")
    with socket.create_connection(("127.0.0.1", node.ports["nc"]), timeout=5) as s:
        s.sendall(b"legitimate netcat\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"<13>Jan  1 00:00:00 host app: legitimate udp",
                 ("127.0.0.1", node.ports["sudp"]))
    r = httpx.post(f"http://127.0.0.1:{node.ports['http']}/",
                   content=json.dumps([{"headers": {}, "body": "legitimate http"}]),
                   headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    for name in ("rpc", "coll"):
        with FlumeClient("127.0.0.1", node.ports[name], timeout=10) as client:
            client.send_body(b"legitimate " + name.encode())


def test_every_source_survives_hostile_input_within_a_memory_bound(node):
    before = {name: node.events_in(name) for name in SOURCES}
    keep: list[socket.socket] = []
    try:
        attack_line_sources(node, keep)
        attack_rpc_sources(node, keep)
        attack_http(node, keep)
        peak = node.peak_rss_mb()
    finally:
        close_all(keep)
    assert node.p.poll() is None, node.output()[-3000:]
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"
    for name in SOURCES:
        wait_until(lambda: node.source_metrics(name).get("refused", 0) > 0, 20,
                   f"{name} counts its refusals: {node.source_metrics(name)}")
        assert node.row(name)["state"] == "ACTIVE", node.row(name)
    # every source serves a legitimate client once the attackers are gone (the UDP source
    # may still be draining the flood, so its datagram is sent until one is taken)
    serve_legitimately(node)
    for name in SOURCES:
        if name == "sudp":
            continue
        wait_until(lambda: node.events_in(name) > before[name], 20,
                   f"{name} serves a legitimate client")
    base = node.events_in("sudp")

    def udp_served():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"<13>Jan  1 00:00:00 host app: legitimate udp",
                     ("127.0.0.1", node.ports["sudp"]))
        return node.events_in("sudp") > base
    wait_until(udp_served, 20, "syslogUdp serves a legitimate client", interval=0.2)
    print(f"peak RSS under attack: {peak:.0f} MB")
