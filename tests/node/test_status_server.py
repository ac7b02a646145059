"""The node status page (HTML, JSON, Prometheus text) and the counters behind it: unit
cases on a fixed status, then a real physical node on a real ZooKeeper."""
from __future__ import annotations

import json
import logging
import os
import re
import select
import socket
import time

import httpx
import pytest

from flume_og.node.metrics import prometheus_text, summarize
from flume_og.node.physical_node import PhysicalNode
from flume_og.node.sinks import collect
from flume_og.node.sources import memory
from flume_og.node.status_server import StatusServer
from flume_og.zk.store import LogicalConfig
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+]+|NaN|[+-]Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')




def parse_prometheus(text: str) -> dict[tuple, float]:
    """``{(name, frozenset(labels)): value}``; asserts the format as it goes: every
    sample's family was declared by a TYPE line, families are not interleaved."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    done: set[str] = set()
    current = None
    out = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "untyped"), line
            assert name not in typed, f"family {name} declared twice"
            if current:
                done.add(current)
            typed[name] = kind
            current = name
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels_text = m.group(1), m.group(3) or ""
        assert name == current and name not in done, f"{name} outside its family"
        labels = {}
        pos = 0
        while pos < len(labels_text):
            lm = LABEL.match(labels_text, pos)
            assert lm, f"bad labels in {line!r}"
            labels[lm.group(1)] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n"
                                         else e.group(1), lm.group(2))
            pos = lm.end()
        out[(name, frozenset(labels.items()))] = float(m.group(4))
    return out


def status_fixture() -> dict:
    tricky = 'we"ird\\name\n2'
    return {
        "physical": "p1", "host": "h1", "pid": 42, "started": 1_700_000_000_000,
        "updated": 1_700_000_005_000,
        "logical": {
            "web": {
                "name": "web", "state": "ACTIVE", "version": 3, "flow": "f1",
                "source": 'tail("/var/log/a.log")',
                "sink": '[ text("/out/a"), { batch(10) => rpcSink("c1") } ]',
                "last_error": None, "events_in": 100, "bytes_in": 5000,
                "components": {
                    "source": {"name": "tail", "kind": "source",
                               "metrics": {"events_in": 100, "bytes_in": 5000}},
                    "sink": {"name": "fanout", "kind": "sink", "metrics": {"events_in": 100},
                             "children": [
                                 {"name": "text", "kind": "sink",
                                  "metrics": {"events_in": 100, "bytes_out": 5100}},
                                 {"name": "batch", "kind": "decorator",
                                  "metrics": {"events_in": 100, "events_out": 10},
                                  "children": [
                                      {"name": "rpcSink", "kind": "sink",
                                       "metrics": {"events_in": 10, "events_out": 9,
                                                   "errors": 1, "bytes_out": 700,
                                                   "wal_bytes": 2048,
                                                   "acks_pending": 2}}]}]}},
            },
            tricky: {"name": tricky, "state": "ERROR", "version": None, "flow": None,
                     "source": "", "sink": "", "last_error": "<b>boom</b>",
                     "events_in": 0, "bytes_in": 0, "components": None},
        },
    }


def test_summarize_counts_leaf_sinks_errors_and_other_counters():
    c = summarize(status_fixture()["logical"]["web"])
    # out: text wrote 100, rpcSink sent 9 (its events_out wins over its events_in)
    assert c["events_in"] == 100 and c["bytes_in"] == 5000
    assert c["events_out"] == 109 and c["bytes_out"] == 5800
    assert c["errors"] == 1 and c["wal_bytes"] == 2048 and c["acks_pending"] == 2
    assert summarize({"events_in": 5, "bytes_in": 7, "components": None}) == {
        "events_in": 5, "bytes_in": 7, "events_out": 0, "bytes_out": 0, "errors": 0}


def test_prometheus_text_families_labels_and_values():
    samples = parse_prometheus(prometheus_text(status_fixture()))
    web = {"physical": "p1", "logical": "web"}

    def value(name, **labels):
        return samples[(name, frozenset(labels.items()))]
    assert value("flume_logical_events_in_total", **web) == 100
    assert value("flume_logical_events_out_total", **web) == 109
    assert value("flume_logical_errors_total", **web) == 1
    assert value("flume_logical_node_state", **web, state="ACTIVE") == 1
    assert value("flume_logical_node_spec_version", **web) == 3
    assert value("flume_component_wal_bytes", **web, component="rpcSink", kind="sink",
                 path="sink/fanout/1.batch/rpcSink") == 2048
    # a name with a quote, a backslash and a newline survives the label escaping
    tricky = 'we"ird\\name\n2'
    assert value("flume_logical_node_state", physical="p1", logical=tricky,
                 state="ERROR") == 1


@pytest.fixture
def server():
    servers = []

    def start(status, **kw):
        s = StatusServer(lambda: status, port=kw.pop("port", 0), **kw).start()
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.stop()


def test_page_json_metrics_and_404(server):
    st = status_fixture()
    s = server(st)
    assert s.port and s.port != 0
    base = f"http://127.0.0.1:{s.port}"
    r = httpx.get(base + "/", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for text in ("Flume node p1", "web", "ACTIVE", "rpcSink", "wal_bytes", "2,048",
                 "acks_pending", "tail(&quot;/var/log/a.log&quot;)"):
        assert text in page, text
    assert "<b>boom</b>" not in page and "&lt;b&gt;boom&lt;/b&gt;" in page  # escaped
    r = httpx.get(base + "/status.json", timeout=5)
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {**st, "status_page": {}}     # and the page's own refusals: none
    r = httpx.get(base + "/metrics", timeout=5)
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert parse_prometheus(r.text)
    assert httpx.get(base + "/nope", timeout=5).status_code == 404


def test_taken_port_moves_to_the_next_one_unless_told_not_to(server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = server({"physical": "p", "logical": {}}, port=port)
        assert s.port != port and port < s.port <= port + 64
        assert httpx.get(f"http://127.0.0.1:{s.port}/status.json", timeout=5).json() == {
            "physical": "p", "logical": {}, "status_page": {}}
        with pytest.raises(OSError):
            StatusServer(lambda: {}, port=port, autofind=False).start()


def test_physical_node_serves_its_status_and_writes_counters_to_zookeeper(
        zk_server, zk_root, tmp_path, store):
    collect.reset("ss")
    memory.reset("ss")
    node = PhysicalNode("p1", zk_server.connect_string, zk_root, data_dir=tmp_path / "n",
                        http_port=0).start()
    try:
        assert node.http_port and node.status_server.port == node.http_port
        assert store.list_physical()["p1"]["http_port"] == node.http_port  # registered
        base = f"http://127.0.0.1:{node.http_port}"
        store.put_logical(LogicalConfig("p1", 'memory("ss")',
                                        '[ collect("ss"), { batch(2) => null } ]'))
        memory.push("ss", [b"one", b"two", b"three", b"four"])
        wait_until(lambda: len(collect.collected("ss")) == 4, what="events through")

        def counters():
            st = httpx.get(base + "/status.json", timeout=5).json()
            return st["logical"].get("p1", {}).get("counters")
        c = wait_until(lambda: (c := counters()) and c["events_out"] == 6 and c, what="out")
        assert c["events_in"] == 4 and c["bytes_in"] == 15 and c["errors"] == 0
        page = httpx.get(base + "/", timeout=5).text
        assert "ACTIVE" in page and "collect" in page and "batch" in page
        samples = parse_prometheus(httpx.get(base + "/metrics", timeout=5).text)
        assert samples[("flume_logical_events_in_total",
                        frozenset({"physical": "p1", "logical": "p1"}.items()))] == 4
        # the same counters reach ZooKeeper (what every master shows), with components
        zk_rep = wait_until(lambda: (r := store.get_status("p1").get("logical", {}).get("p1", {}))
                            .get("counters", {}).get("events_out") == 6 and r,
                            what="counters in the status znode")
        assert zk_rep["counters"]["events_in"] == 4
        assert zk_rep["components"]["sink"]["name"] == "fanout"
        json.dumps(zk_rep)
    finally:
        node.stop()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{node.http_port}/", timeout=2)


def test_large_status_leaves_components_out_of_the_znode(zk_server, zk_root, tmp_path,
                                                         store, monkeypatch):
    import flume_og.node.physical_node as pn
    monkeypatch.setattr(pn, "STATUS_ZNODE_BUDGET", 10)  # anything is "large"
    memory.reset("big")
    node = PhysicalNode("p1", zk_server.connect_string, zk_root,
                        data_dir=tmp_path / "n").start()
    try:
        assert node.status_server is None  # no http_port: no page
        store.put_logical(LogicalConfig("p1", 'memory("big")', "null"))
        rep = wait_until(lambda: (r := store.get_status("p1").get("logical", {}).get("p1", {}))
                         .get("state") == "ACTIVE" and r, what="active")
        assert "components" not in rep and rep["counters"]["events_in"] == 0
        assert node.status()["logical"]["p1"]["components"]  # still on the page
    finally:
        node.stop()


def test_a_reachable_address_is_refused_and_passwords_are_hidden(server):
    from flume_og.node.status_server import UnsafeBindError
    for bind in ("0.0.0.0", "::", "192.0.2.1", "example.com"):
        with pytest.raises(UnsafeBindError, match="refusing to serve the node status page"):
            StatusServer(lambda: {}, bind=bind, port=0)
    st = status_fixture()
    st["logical"]["web"]["sink"] = 'dfs("s3://AKIA:SeCrEt@bucket/logs")'
    s = server(st)
    base = f"http://127.0.0.1:{s.port}"
    for path in ("/", "/status.json"):
        text = httpx.get(base + path, timeout=5).text
        assert "SeCrEt" not in text and "s3://AKIA:***@bucket/logs" in text, path


def test_a_foreign_host_name_is_refused(server):
    s = server(status_fixture())
    base = f"http://127.0.0.1:{s.port}"
    for path in ("/", "/status.json", "/metrics"):
        r = httpx.get(base + path, headers={"Host": "evil.example"}, timeout=5)
        assert r.status_code == 421 and "web" not in r.text, path
    for host in (f"127.0.0.1:{s.port}", "localhost", socket.gethostname()):
        assert httpx.get(base + "/", headers={"Host": host}, timeout=5).status_code == 200


# ------------------------------------------------------------ bounds (issue 9, review 12)

def _proc_threads(pid: int | str = "self") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def _proc_rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def _read_to_end(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server sends until it closes (a reset counts as closed)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def test_a_request_head_trickling_in_is_closed_at_the_header_timeout(server):
    from flume_og.node.http_server import HttpLimits
    s = server(status_fixture(), limits=HttpLimits(header_timeout=0.5))
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        t0 = time.monotonic()
        closed = None
        for i in range(len(head)):          # a byte every 50 ms: each read is quick
            try:
                c.sendall(head[i:i + 1])
            except OSError:
                closed = time.monotonic() - t0
                break
            c.settimeout(0.05)
            try:
                if c.recv(100) == b"":
                    closed = time.monotonic() - t0
                    break
            except TimeoutError:
                pass
            if time.monotonic() - t0 > 4:
                break
    assert closed is not None and 0.4 < closed < 2, closed
    assert s.metrics["refused_header_timeout"] == 1
    r = httpx.get(f"http://127.0.0.1:{s.port}/status.json", timeout=5)
    assert r.json()["status_page"] == {"refused": 1, "refused_header_timeout": 1}
    assert "flume_status_page_refused_total" in httpx.get(
        f"http://127.0.0.1:{s.port}/metrics", timeout=5).text


def test_a_half_sent_request_that_goes_away_is_neither_rendered_nor_logged(server, caplog):
    calls = []

    def status():
        calls.append(1)
        return status_fixture()
    s = server(None)
    s.status = status
    # a first request: the server's loop runs (its descriptors are open) before counting
    assert httpx.get(f"http://127.0.0.1:{s.port}/", timeout=5).status_code == 200
    fds = len(os.listdir("/proc/self/fd"))
    for i in range(20):   # an address each: within the per-address bound, nothing evicted
        _from(f"127.0.0.{10 + i}", s.port).close()     # an unfinished request head
    # the server closed its side of each once the process is back to its descriptors
    wait_until(lambda: len(os.listdir("/proc/self/fd")) <= fds, 10, "connections closed")
    assert httpx.get(f"http://127.0.0.1:{s.port}/", timeout=5).status_code == 200
    assert len(calls) == 2                           # only the whole requests were rendered
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _from(address: str, port: int) -> socket.socket:
    c = socket.socket()
    c.bind((address, 0))
    c.settimeout(5)
    c.connect(("127.0.0.1", port))
    c.sendall(b"GET / HTTP/1.1\r\n")              # a request head never finished
    return c


def _closed(c: socket.socket) -> bool:
    return bool(select.select([c], [], [], 0)[0]) and _read_to_end(c) == b""


def test_unfinished_heads_past_the_caps_are_evicted_and_cost_no_thread(server):
    """Four addresses hold every slot (8 each) with unfinished heads, a fifth sends 8
    more: each newcomer closes the oldest head (of its own address past 8), a reader
    from a sixth address is served. Before, every newcomer got 503."""
    from flume_og.node.status_server import STATUS_LIMITS
    assert (STATUS_LIMITS.max_connections, STATUS_LIMITS.max_connections_per_peer) == (32, 8)
    s = server(status_fixture())
    threads = _proc_threads()
    held = {}
    try:
        for a in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            held[a] = [_from(a, s.port) for _ in range(8)]
        wait_until(lambda: len(s._serving.server.server_state.connections) == 32, 5,
                   "every held connection accepted", ignore=(AttributeError,))
        held["127.0.0.6"] = [_from("127.0.0.6", s.port) for _ in range(12)]
        wait_until(lambda: s.metrics.get("refused_evicted") == 12, 5, "12 evicted")
        # 8 of the other addresses' oldest heads, then 4 of 127.0.0.6's own
        # counted before its close reaches the client: wait for the closes themselves
        wait_until(lambda: sum(_closed(c) for c in held["127.0.0.6"]) == 4, 5,
                   "the 4 oldest heads of 127.0.0.6 closed")
        assert not any(_closed(c) for c in held["127.0.0.6"][4:])
        r = httpx.get(f"http://127.0.0.1:{s.port}/status.json", timeout=5)
        assert r.status_code == 200
        grown = _proc_threads() - threads
    finally:
        for socks in held.values():
            for c in socks:
                c.close()
    assert "refused_connections" not in s.metrics
    assert grown <= 2, f"{grown} more threads for 44 connections"


def test_a_node_process_under_300_slow_heads_serves_others_keeps_threads_memory(tmp_path):
    """The reviews' attack on a real one-shot node: 300 unfinished request heads from
    one address. Before, every reader got 503 (review 2, M2)."""
    import subprocess
    import sys
    from tests.conftest import free_port
    from tests.node.victim import REPO
    port = free_port()
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flume_og.master.cli", "node", "--one-shot", "-n", "v", "-c",
             'v: syslogTcp(0, bind="127.0.0.1") | null', "--data-dir", str(tmp_path / "d"),
             "--http-port", str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    socks = []
    try:
        url = f"http://127.0.0.1:{port}/status.json"
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, 30,
                   "the node's status page", ignore=(httpx.HTTPError,))
        threads, rss = _proc_threads(proc.pid), _proc_rss_kb(proc.pid)
        for _ in range(300):
            socks.append(_from("127.0.0.2", port))
        # every head but the newest 8 is closed to make room (the per-address bound)
        wait_until(lambda: sum(map(_closed, socks[:292])) == 292, 20,
                   "the oldest heads closed")
        for _ in range(5):       # a reader from another address is always served
            assert httpx.get(url, timeout=5).status_code == 200
        after_threads, after_rss = _proc_threads(proc.pid), _proc_rss_kb(proc.pid)
        print(f"300 slow heads: threads {threads} -> {after_threads}, "
              f"RSS {rss // 1024} -> {after_rss // 1024} MiB")
        assert not any(_closed(c) for c in socks[292:])
        assert after_threads <= threads + 2
        assert after_rss - rss < 8 * 1024
        refused = httpx.get(url, timeout=5).json()["status_page"]
        assert refused == {"refused": 292, "refused_evicted": 292}
    finally:
        for c in socks:
            c.close()
        proc.kill()
        proc.wait(10)
    lines = log_path.read_text(errors="replace").splitlines()
    assert not [line for line in lines if "Traceback" in line], lines[-20:]
    assert len(lines) < 20, lines
