"""A real rsyslog (Debian's rsyslog + rsyslog-gnutls) forwarding over TLS (RFC 5425,
octet-counted frames, mutual TLS with x509/name checking) to our syslogTcp source."""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from flume_og.node import tls
from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.sinks import collect
from flume_og.node.spec import parse_sink, parse_source
from tests.tls_certs import issue
from tests.waiting import wait_until

GTLS = next(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"), None)
pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(
    not shutil.which("rsyslogd") or GTLS is None,
    reason="needs rsyslog and rsyslog-gnutls (scripts/setup.sh installs them)")]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rsyslog_forwards_over_tls_to_syslog_tcp(tmp_path):
    ours, ca = issue(tmp_path / "pki", prefix="collector")
    theirs, _ = issue(tmp_path / "pki", ca=ca, prefix="rsyslog")
    transport = tls.load(str(ours.cert), str(ours.key), str(ours.ca))
    name = "tls-rsyslog"
    collect.reset(name)
    ln = LogicalNode("sys", tmp_path / "data", transport=transport)
    ln.configure(parse_source("syslogTcp(0)"), parse_sink(f'collect("{name}")'))
    assert ln.state is State.ACTIVE, ln.last_error
    port, udp = ln._flow.source.port, free_udp_port()
    work = tmp_path / "rsyslog"
    work.mkdir()
    conf = work / "rsyslog.conf"
    conf.write_text(f'''
global(workDirectory="{work}"
       DefaultNetstreamDriverCAFile="{theirs.ca}"
       DefaultNetstreamDriverCertFile="{theirs.cert}"
       DefaultNetstreamDriverKeyFile="{theirs.key}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp}")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
       TCP_Framing="octet-counted" StreamDriver="gtls" StreamDriverMode="1"
       StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost"
       template="RSYSLOG_SyslogProtocol23Format")
''')
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            def sent_and_received():
                s.sendto(b"<13>Dec  3 10:00:00 web1 app: over tls", ("127.0.0.1", udp))
                return collect.collected(name)
            got = wait_until(sent_and_received, timeout=30, interval=0.5,
                             what="a message forwarded by rsyslog over TLS")
        body = got[0].body
        assert body.strip() == b"over tls", body
        assert got[0].attrs.get("syslogseverity") == b"5"
        m = ln._flow.source.metrics
        assert not any(k.startswith("refused") for k in m), m
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
        ln.stop(5)
        collect.reset(name)
    assert proc.returncode is not None, out
