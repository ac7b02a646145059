"""TLS on event links (node/tls.py): agent -> collector over mutual TLS, what is refused
and counted, the handshake under the connection's deadline, the plaintext opt-in rule,
syslogTcp as RFC 5425, and a node refusing bad TLS files at start. Real sockets and
threads; nodes as in-process logical nodes with the transport a `flume node` would make."""
from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from flume_og.node import tls
from flume_og.node.errors import DeliveryUnknown, SinkError
from flume_og.node.event import Event
from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.rpc import RpcClient, Status
from flume_og.node.sinks import collect
from flume_og.node.sources import memory
from flume_og.node.spec import parse_sink, parse_source
from tests.tls_certs import issue
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


class Pki:
    """One CA's folder: ``node(name)`` issues a certificate for localhost/127.0.0.1
    (tests/tls_certs.py), ``bundle`` is the CA's PEM file."""

    def __init__(self, folder):
        self.folder, self.ca = folder, None
        self.bundle = folder / "ca.pem"

    def node(self, name: str):
        files, self.ca = issue(self.folder, ca=self.ca, prefix=name)
        return files


@pytest.fixture
def ca(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def mutual(ca) -> tls.Transport:
    """A node's transport with mutual TLS (require client certificates)."""
    c = ca.node("node1")
    return tls.load(str(c.cert), str(c.key), str(c.ca))


@pytest.fixture
def names(request):
    name = f"tls-{request.node.name}"
    memory.reset(name)
    collect.reset(name)
    yield name
    memory.reset(name)
    collect.reset(name)


def node(tmp_path, name: str, source: str, sink: str, transport) -> LogicalNode:
    ln = LogicalNode(name, tmp_path / name, transport=transport)
    ln.configure(parse_source(source), parse_sink(sink))
    return ln


def collector(tmp_path, transport, names, args: str = "") -> LogicalNode:
    ln = node(tmp_path, "col", f"collectorSource(0{args})", f'collect("{names}")',
              transport)
    assert ln.state is State.ACTIVE, ln.last_error
    return ln


def port_of(ln: LogicalNode) -> int:
    return ln._flow.source.port


def counters(ln: LogicalNode) -> dict:
    return ln._flow.source.metrics.copy()


def bodies(n: int) -> list[bytes]:
    return [f"ev-{i:06d}".encode() for i in range(n)]


def stopped(*nodes):
    for n in nodes:
        n.stop(10)


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("mode", ["agentBESink", "agentDFOSink", "rpcSink"])
def test_agent_to_collector_over_mutual_tls(tmp_path, mutual, names, mode):
    col = collector(tmp_path, mutual, names)
    agent = node(tmp_path, "agent", f'memory("{names}")',
                 f'{mode}("127.0.0.1", {port_of(col)})', mutual)
    try:
        assert agent.state is State.ACTIVE, agent.last_error
        evs = bodies(3000)
        memory.push(names, evs)
        wait_until(lambda: len(collect.collected(names)) >= len(evs), what="all events")
        assert sorted(e.body for e in collect.collected(names)) == evs
        # the collector saw TLS connections, and refused nothing
        assert counters(col).get("connections", 0) >= 1
        assert not any(k.startswith("refused") for k in counters(col))
    finally:
        stopped(agent, col)


def test_e2e_agent_to_collector_over_mutual_tls(tmp_path, mutual, names, zk_server,
                                                zk_root):
    """agentE2ESink: groups over TLS, acknowledged through the commit log, once each."""
    from flume_og.node.commit_port import CommitLogPort
    from flume_og.node.component import NodeShared
    from flume_og.zk.client import connect
    from flume_og.zk.store import ConfigStore
    clients = [connect(zk_server.connect_string) for _ in range(2)]
    out = tmp_path / "out"
    col = LogicalNode("col", tmp_path / "c", transport=mutual, shared=NodeShared(
        commit_log=CommitLogPort(ConfigStore(clients[0], zk_root).commits)))
    agent = LogicalNode("agent", tmp_path / "a", transport=mutual, shared=NodeShared(
        commit_log=CommitLogPort(ConfigStore(clients[1], zk_root).commits)))
    try:
        col.configure(parse_source("collectorSource(0)"),
                      parse_sink(f'collectorSink("{out}", "e2e-", 200)'))
        assert col.state is State.ACTIVE, col.last_error
        agent.configure(parse_source(f'memory("{names}")'),
                        parse_sink(f'agentE2ESink("localhost", {port_of(col)})'))
        assert agent.state is State.ACTIVE, agent.last_error
        evs = bodies(2000)
        memory.push(names, evs)

        def written():
            return sorted(line for p in out.rglob("e2e-*") if not p.name.startswith(".")
                          for line in p.read_bytes().splitlines())
        wait_until(lambda: written() == evs, timeout=40, what="every event written once")
        assert counters(col).get("groups", 0) >= 1 or written() == evs
    finally:
        stopped(agent, col)
        for c in clients:
            c.stop()


def test_the_application_client_speaks_tls(tmp_path, mutual, names):
    from flume_og.node.client import FlumeClient
    col = collector(tmp_path, mutual, names)
    try:
        with FlumeClient("localhost", port_of(col), timeout=5, tls=mutual.client) as c:
            c.send([Event(b"from an application", 0, 0)])
        assert [e.body for e in collect.collected(names)] == [b"from an application"]
    finally:
        stopped(col)


# ---------------------------------------------------------------- refusals

def send_one(transport_client, port, host="127.0.0.1"):
    client = RpcClient(host, port, timeout=5, tls=transport_client)
    try:
        return client.append_packed([Event(b"x", 0, 0)])
    finally:
        client.close()


def test_a_sender_without_a_certificate_is_refused_and_counted(tmp_path, mutual, ca,
                                                               names):
    col = collector(tmp_path, mutual, names)
    anonymous = tls.load(ca=str(ca.bundle), client_cert="none")   # trusts, no cert
    try:
        with pytest.raises(SinkError, match="requires a client certificate"):
            send_one(anonymous.client, port_of(col))
        wait_until(lambda: counters(col).get("refused_tls_client_certificate") == 1,
                   what="the refusal counted")
        assert collect.collected(names) == []
        assert send_one(mutual.client, port_of(col))[0] == Status.OK    # others still go
    finally:
        stopped(col)


def test_a_certificate_of_another_ca_is_refused_both_ways(tmp_path, mutual, names):
    other = Pki(tmp_path / "other").node("intruder")
    intruder = tls.load(str(other.cert), str(other.key), str(other.ca))
    col = collector(tmp_path, mutual, names)
    try:
        # it does not trust our collector's certificate...
        with pytest.raises(SinkError, match="cannot be trusted"):
            send_one(intruder.client, port_of(col))
        # ...and trusting it anyway, its own certificate is refused by the collector
        ctx = intruder.client
        ctx.load_verify_locations(cafile=str(mutual_ca_of(tmp_path)))
        with pytest.raises(SinkError, match="refused this node's certificate"):
            send_one(ctx, port_of(col))
        wait_until(lambda: counters(col).get("refused_tls_client_certificate") == 1,
                   what="the foreign certificate counted")
        assert counters(col).get("refused_tls_handshake", 0) >= 1   # the first attempt
        assert collect.collected(names) == []
    finally:
        stopped(col)


def mutual_ca_of(tmp_path):
    return tmp_path / "pki" / "ca.pem"


def test_plaintext_to_a_tls_port_is_refused_and_counted(tmp_path, mutual, names):
    """The plaintext sender is answered, in plaintext, why: its error says what to do."""
    col = collector(tmp_path, mutual, names)
    try:
        with pytest.raises(DeliveryUnknown, match="this port speaks TLS only: start the "
                                                  "sending node with --tls-cert"):
            send_one(None, port_of(col))
        wait_until(lambda: counters(col).get("refused_tls_plaintext") == 1,
                   what="the plaintext sender counted")
        assert collect.collected(names) == []
    finally:
        stopped(col)


def test_tls_to_a_plaintext_port_fails_with_a_sentence(tmp_path, mutual, names):
    col = collector(tmp_path, tls.PLAINTEXT, names)
    try:
        with pytest.raises(SinkError, match="TLS handshake: it may not serve TLS"):
            send_one(mutual.client, port_of(col))
        wait_until(lambda: counters(col).get("refused_malformed") == 1,
                   what="the plaintext port refused the ClientHello")
    finally:
        stopped(col)


def test_a_refused_agent_logs_why(tmp_path, mutual, ca, names, caplog):
    """The agent's log says why in a sentence, not a Thrift traceback."""
    col = collector(tmp_path, mutual, names)
    anonymous = tls.load(ca=str(ca.bundle), client_cert="none")
    agent = node(tmp_path, "agent", f'memory("{names}")',
                 f'agentBESink("127.0.0.1", {port_of(col)})', anonymous)
    try:
        with caplog.at_level(logging.INFO):
            memory.push(names, bodies(5))
            wait_until(lambda: any("requires a client certificate" in r.getMessage()
                                   for r in caplog.records), what="the sentence logged")
        assert not any("Traceback" in r.getMessage() or r.exc_info
                       for r in caplog.records if "client certificate" in r.getMessage())
    finally:
        stopped(agent, col)


# ---------------------------------------------------------------- handshake deadline

def test_a_stalled_handshake_holds_nobody_and_is_closed_in_time(tmp_path, mutual, names):
    col = collector(tmp_path, mutual, names, ", messageTimeoutMs=1500")
    port = port_of(col)
    silent = socket.create_connection(("127.0.0.1", port))          # never says hello
    trickle = socket.create_connection(("127.0.0.1", port))         # a byte now and then
    hello = client_hello(port)
    try:
        trickle.sendall(hello[:1])
        started = time.monotonic()
        # meanwhile another sender gets through at once
        assert send_one(mutual.client, port)[0] == Status.OK
        assert time.monotonic() - started < 1.0
        # a byte every 0.1 s does not buy more time: cut 1.5 s after the accept
        try:
            for b in hello[1:]:
                trickle.sendall(bytes([b]))
                time.sleep(0.1)     # the trickle's pace: a byte every 0.1 s
        except OSError:     # closed by the collector
            pass
        for s in (silent, trickle):
            s.settimeout(5)
            wait_closed(s)
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, elapsed
        wait_until(lambda: counters(col).get("refused_tls_handshake") == 2,
                   what="both stalls counted")
    finally:
        silent.close()
        trickle.close()
        stopped(col)


def test_handshaking_connections_hold_slots_and_make_room_first(tmp_path, mutual, names):
    """Connection caps apply before the handshake: silent connections fill every slot,
    yet a real sender gets in by evicting one of them (they count as idle)."""
    col = collector(tmp_path, mutual, names, ", maxConnections=4, maxConnectionsPerPeer=4")
    port = port_of(col)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        wait_until(lambda: counters(col).get("connections", 0) == 4, what="4 accepted")
        assert send_one(mutual.client, port)[0] == Status.OK
        assert counters(col).get("refused_evicted", 0) >= 1
    finally:
        for s in silent:
            s.close()
        stopped(col)


def wait_closed(s: socket.socket) -> bool:
    """True once the peer has closed ``s`` (EOF or reset) within its timeout."""
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def client_hello(port: int) -> bytes:
    """The first flight of a real TLS client (captured through a memory BIO)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


# ---------------------------------------------------------------- where sources listen

def test_without_tls_event_sources_listen_on_loopback_unless_opted_in(tmp_path, names):
    plain = collector(tmp_path, tls.PLAINTEXT, names)
    try:
        assert plain._flow.source.bind == "127.0.0.1"
    finally:
        stopped(plain)
    for spec in ('collectorSource(0, bind="0.0.0.0")', 'syslogTcp(0, bind="0.0.0.0")',
                 'netcat(0, bind="0.0.0.0")', 'httpSource(0, bind="0.0.0.0")',
                 'syslogUdp(0, bind="0.0.0.0")', 'rpcSource(0, bind="0.0.0.0")'):
        ln = node(tmp_path, "x", spec, "null", tls.PLAINTEXT)
        assert ln.state is State.ERROR, spec
        assert "refusing to listen on 0.0.0.0 without TLS" in ln.last_error
        assert "--plaintext-events" in ln.last_error
        ln.stop(5)
        opted = node(tmp_path, "y", spec, "null", tls.Transport(plaintext=True))
        assert opted.state is State.ACTIVE, (spec, opted.last_error)
        assert opted._flow.source.bind == "0.0.0.0"
        opted.stop(5)


def test_with_tls_sources_listen_everywhere_but_plain_ones_stay_on_loopback(tmp_path,
                                                                             mutual, names):
    col = collector(tmp_path, mutual, names)
    http = node(tmp_path, "h", "httpSource(0)", "null", mutual)
    udp = node(tmp_path, "u", 'syslogUdp(0, bind="0.0.0.0")', "null", mutual)
    try:
        assert col._flow.source.bind == "0.0.0.0"
        assert http._flow.source.bind == "127.0.0.1"      # plain HTTP: not TLS capable
        assert udp.state is State.ERROR and "has no TLS (UDP" in udp.last_error
    finally:
        stopped(col, http, udp)


# ---------------------------------------------------------------- syslog over TLS

def test_syslog_tcp_over_tls_rfc5425(tmp_path, mutual, names, ca):
    ln = node(tmp_path, "sys", "syslogTcp(0, messageTimeoutMs=1500)", f'collect("{names}")',
              mutual)
    try:
        assert ln.state is State.ACTIVE, ln.last_error
        port = port_of(ln)
        messages = [f"<34>1 2026-12-03T10:00:00Z host app - - - message {i}".encode()
                    for i in range(200)]
        frames = b"".join(b"%d %s" % (len(m), m) for m in messages)
        raw = socket.create_connection(("127.0.0.1", port))
        with mutual.client.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(frames)
        wait_until(lambda: len(collect.collected(names)) == 200, what="200 messages")
        assert [e.body for e in collect.collected(names)] == [
            f"message {i}".encode() for i in range(200)]      # the MSG part of each
        # plaintext, no certificate and a stall are refused and counted
        with socket.create_connection(("127.0.0.1", port)) as p:
            p.sendall(b"<34>Dec  3 10:00:00 host app: plaintext\n")
            p.settimeout(5)
            wait_closed(p)
        anonymous = tls.load(ca=str(ca.bundle), client_cert="none")
        with socket.create_connection(("127.0.0.1", port)) as p:
            p.settimeout(5)
            try:
                with anonymous.client.wrap_socket(p, server_hostname="localhost") as s:
                    s.sendall(b"10 <34>1 - - ")
                    wait_closed(s)
            except (ssl.SSLError, OSError):
                pass
        stall = socket.create_connection(("127.0.0.1", port))
        stall.settimeout(5)
        wait_closed(stall)
        stall.close()
        m = ln._flow.source.metrics.copy()
        wait_until(lambda: ln._flow.source.metrics.copy().get("refused_tls_handshake")
                   == 1, what="the stall counted")
        m = ln._flow.source.metrics.copy()
        assert m.get("refused_tls_plaintext") == 1, m
        assert m.get("refused_tls_client_certificate") == 1, m
        assert len(collect.collected(names)) == 200
    finally:
        stopped(ln)


def test_syslog_tcp_port_defaults_to_6514_with_tls(tmp_path, mutual):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 6514))
        except OSError:
            pytest.skip("port 6514 is taken on this host")
    ln = node(tmp_path, "s", 'syslogTcp(bind="127.0.0.1")', "null", mutual)
    try:
        assert ln.state is State.ACTIVE, ln.last_error
        assert port_of(ln) == 6514
    finally:
        stopped(ln)


# ---------------------------------------------------------------- a node's start

def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flume_og.master.cli", "node", "-1",
                           "-c", 'n: collectorSource(0) | null;', *args],
                          capture_output=True, text=True, timeout=30)


def test_a_node_refuses_to_start_with_bad_tls_files(tmp_path, ca):
    c = ca.node("n")
    other = Pki(tmp_path / "o").node("n")
    open_key = tmp_path / "open.key"
    open_key.write_bytes(c.key.read_bytes())
    open_key.chmod(0o644)
    cases = [
        (["--tls-cert", str(c.cert), "--tls-key", str(tmp_path / "missing.key"),
          "--tls-ca", str(c.ca)], f"cannot read the private key {tmp_path}/missing.key: "
                                  f"No such file or directory"),
        (["--tls-cert", str(c.cert), "--tls-key", str(other.key), "--tls-ca", str(c.ca)],
         f"the key {other.key} does not match the certificate {c.cert}"),
        (["--tls-cert", str(c.cert), "--tls-key", str(c.key), "--tls-ca", str(c.key)],
         "holds no usable certificate"),
        (["--tls-cert", str(c.cert)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(c.cert), "--tls-key", str(open_key), "--tls-ca", str(c.ca)],
         f"the private key {open_key} is accessible by other users (mode 644)"),
        (["--tls-cert", str(c.cert), "--tls-key", str(c.key), "--tls-client-cert",
          "require"], "needs --tls-ca"),
    ]
    for args, sentence in cases:
        r = run_node(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert sentence in r.stderr, (sentence, r.stderr)
        assert "Traceback" not in r.stderr


def test_tls_settings_from_the_node_config_file(tmp_path, ca):
    c = ca.node("n")
    conf = tmp_path / "node.toml"
    conf.write_text(f'tls-cert = "{c.cert}"\ntls-key = "{tmp_path}/nope.key"\n'
                    f'tls-ca = "{c.ca}"\n')
    r = run_node("--config-file", str(conf))
    assert r.returncode == 2 and "cannot read the private key" in r.stderr, r.stderr


def test_a_node_whose_sources_stay_on_loopback_advertises_loopback(mutual):
    from flume_og.node.cli import local_only
    assert local_only(tls.PLAINTEXT) == "127.0.0.1"
    assert local_only(tls.Transport(plaintext=True)) is None
    assert local_only(mutual) is None
