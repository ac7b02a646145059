"""Real senders and a real receiver: Debian's rsyslog and util-linux ``logger`` against our
syslogTcp source, and rsyslog as the receiver of our syslogTcp sink.

Each rsyslog is our own instance: its config, pid file and work directory in the test's
tmp dir, listening on a port the kernel picks (``listenPortFileName``), started with
``-n`` and stopped through the pid of the process the test started."""
from __future__ import annotations

import datetime
import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from flume_og.node.builder import build_sink, build_source
from flume_og.node.event import Event, Priority
from flume_og.node.spec import parse_sink, parse_source
from tests.waiting import wait_until

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd"
                                         if Path("/usr/sbin/rsyslogd").exists() else None)
LOGGER = shutil.which("logger")

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(RSYSLOGD is None or LOGGER is None,
                       reason="rsyslog and logger are installed by scripts/setup.sh"),
]

HOST = socket.gethostname()


class Rsyslog:
    """An unprivileged rsyslogd of our own: an imtcp input on a free port (``self.port``)
    into the ruleset ``in``, whose actions the test gives."""

    def __init__(self, tmp: Path, actions: str):
        self.dir = tmp / "rsyslog"
        self.dir.mkdir()
        conf = self.dir / "rsyslog.conf"
        conf.write_text(f'''
global(workDirectory="{self.dir}" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" port="0" listenPortFileName="{self.dir}/port" ruleset="in")
template(name="everything" type="string" string="%jsonmesg%\\n")
ruleset(name="in") {{
{actions}
}}
''')
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        port_file = self.dir / "port"
        try:
            self.port = int(wait_until(
                lambda: (self.proc.poll() is None or self._died())
                and port_file.exists() and port_file.read_text().strip(), 10,
                "rsyslogd to listen"))
        except BaseException:
            self.stop()
            raise

    def _died(self):
        out = self.proc.stdout.read().decode(errors="replace")
        raise AssertionError(f"rsyslogd exited {self.proc.returncode}: {out}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()


@pytest.fixture
def rsyslog(tmp_path):
    started = []

    def start(actions: str) -> Rsyslog:
        r = Rsyslog(tmp_path, actions)
        started.append(r)
        return r
    yield start
    for r in started:
        r.stop()


@pytest.fixture
def source(ctx):
    src = build_source(parse_source('syslogTcp(0, bind="127.0.0.1")'))
    src.open(ctx)
    yield src
    src.close()


def collect(src, n: int) -> list[Event]:
    out: list[Event] = []

    def enough() -> bool:
        out.extend(src.next_batch(0.05) or [])
        return len(out) >= n
    wait_until(enough, 20, f"{n} events", interval=0)
    return out


def logger(port: int, *args: str) -> None:
    subprocess.run([LOGGER, "--tcp", "-n", "127.0.0.1", "-P", str(port), *args],
                   check=True, timeout=10)


def utc_ms(stamp: str) -> int:
    return int(datetime.datetime.fromisoformat(stamp).timestamp() * 1000)


# ------------------------------------------------------------------ into our source

def test_rsyslog_forwards_protocol23_octet_counted(rsyslog, source):
    """rsyslog's RSYSLOG_SyslogProtocol23Format counts each message's LF into the frame:
    before, that LF and the whole header stayed in the body."""
    r = rsyslog(f'action(type="omfwd" target="127.0.0.1" port="{source.port}" protocol="tcp" '
                'template="RSYSLOG_SyslogProtocol23Format" TCP_Framing="octet-counted")')
    logger(r.port, "--rfc5424", "-t", "myapp", "-p", "local4.warning", "--msgid", "ID47",
           "--sd-id", "x@32473", "--sd-param", 'q="a\\"b"', "hello via rsyslog \u00e9")
    logger(r.port, "--rfc3164", "-t", "old", "-i", "-p", "mail.err", "relayed 3164")
    events = {e.attrs.get("syslog.appname"): e for e in collect(source, 2)}
    five, three = events[b"myapp"], events[b"old"]
    assert five.body == "hello via rsyslog \u00e9".encode()
    assert five.host == HOST and five.priority is Priority.WARN
    assert five.attrs["syslogfacility"] == b"20" and five.attrs["syslogseverity"] == b"4"
    assert five.attrs["syslog.hostname"] == HOST.encode()
    assert five.attrs["syslog.appname"] == b"myapp"
    assert five.attrs["syslog.msgid"] == b"ID47"
    assert five.attrs["sd.x@32473.q"] == b'a"b'
    assert five.attrs["sd.timeQuality.tzKnown"] == b"1"
    assert "syslog.procid" not in five.attrs and "syslog.malformed" not in five.attrs
    # rsyslog writes a relayed RFC 3164 message's MSG with the space that followed its tag
    assert three.body == b" relayed 3164"
    assert three.attrs["syslogfacility"] == b"2" and three.priority is Priority.ERROR
    assert three.attrs["syslog.appname"] == b"old"
    assert three.attrs["syslog.procid"].isdigit()
    assert source.metrics.get("malformed", 0) == 0


@pytest.mark.parametrize("framing", [[], ["--octet-count"]], ids=["lf", "octet"])
def test_logger_rfc5424_and_rfc3164(source, framing):
    logger(source.port, *framing, "--rfc5424", "-t", "app5", "-p", "user.notice",
           "--sd-id", "meta", "--sd-param", 'sequenceId="7"', "five four two four")
    logger(source.port, *framing, "--rfc3164", "-t", "app3", "-i", "-p", "daemon.debug",
           "three one six four")
    events = {e.attrs["syslog.appname"]: e for e in collect(source, 2)}
    five, three = events[b"app5"], events[b"app3"]
    assert five.body == b"five four two four" and five.host == HOST
    assert five.attrs["sd.meta.sequenceId"] == b"7"
    assert (five.attrs["syslogfacility"], five.attrs["syslogseverity"]) == (b"1", b"5")
    assert three.body == b"three one six four" and three.host == HOST
    assert three.priority is Priority.DEBUG and three.attrs["syslogfacility"] == b"3"
    assert three.attrs["syslog.procid"].isdigit()
    assert three.attrs["syslog.hostname"] == HOST.encode()


# ------------------------------------------------------------------ from our sink

def test_our_sink_into_rsyslog_round_trip(rsyslog, tmp_path, ctx):
    """Our syslogTcp sink -> rsyslog -> file (%jsonmesg%): the fields rsyslog parsed are the
    event's, one by one."""
    out = tmp_path / "received.json"
    r = rsyslog(f'action(type="omfile" file="{out}" template="everything")')
    full = Event("disk almost full \u00e9".encode(), 1_796_321_600_123, 0, Priority.WARN,
                 "ignored-host",
                 {"syslogfacility": b"3", "syslogseverity": b"4", "syslog.hostname": b"web1",
                  "syslog.appname": b"diskmon", "syslog.procid": b"4242",
                  "syslog.msgid": b"FULL", "sd.origin.ip": b"192.0.2.1",
                  "sd.x@32473.q": b'a"b]c\\d', "sd.x@32473.n": b"2"})
    plain = Event(b"from a tail", 1_796_321_601_000, 0, Priority.ERROR, "agent7", {})
    s = build_sink(parse_sink(f'syslogTcp("127.0.0.1", {r.port})'))
    s.open(ctx)
    try:
        s.append([full, plain])
    finally:
        s.close()
    got = wait_until(lambda: out.exists() and out.read_text().count("\n") >= 2 and [
        json.loads(line) for line in out.read_text().splitlines()], 10, "rsyslog's file")
    a, b = got
    assert a["protocol-version"] == "1" and b["protocol-version"] == "1"
    assert (a["syslogfacility"], a["syslogseverity"]) == ("3", "4")
    assert utc_ms(a["timereported"]) == full.timestamp
    assert (a["hostname"], a["app-name"], a["procid"], a["msgid"]) == \
        ("web1", "diskmon", "4242", "FULL")
    assert a["structured-data"] == '[origin ip="192.0.2.1"][x@32473 q="a\\"b\\]c\\\\d" n="2"]'
    assert a["msg"] == "disk almost full \u00e9"
    # an event without syslog attributes: facility user, severity from its priority
    assert (b["syslogfacility"], b["syslogseverity"]) == ("1", "3")
    assert utc_ms(b["timereported"]) == plain.timestamp
    assert (b["hostname"], b["app-name"], b["procid"], b["msgid"], b["structured-data"]) == \
        ("agent7", "-", "-", "-", "-")
    assert b["msg"] == "from a tail"
