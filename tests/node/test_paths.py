"""Paths built from event data stay under the sink's fixed prefix (issue 9, path traversal):
encoded values, the error bucket, its counters; escape patterns are bounded."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from flume_og.node.checkpoint import Checkpoint
from flume_og.node.client import FlumeClient
from flume_og.node.errors import SpecError
from flume_og.node.escapes import MAX_ESCAPES, Escaper, PatternError, path_value
from flume_og.node.event import Event, Priority
from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.metrics import summarize
from flume_og.node.builder import build_sink
from flume_og.node.spec import parse_sink, parse_source
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

TS = 1_600_000_000_123

# Hostile values and what each becomes in a path (None: refused, to the error bucket).
HOSTILE = {
    "../../../../x": "%2E.%2F..%2F..%2F..%2Fx",
    "/etc/x": "%2Fetc%2Fx",
    "a/../../b": "a%2F..%2F..%2Fb",
    "..": "%2E.",
    ".": "%2E",
    "a\x00b": "a%00b",
    "x\n-/etc/passwd": "x%0A-%2Fetc%2Fpasswd",
    "~root": "%7Eroot",
    "c:\\w*?[]": "c%3A%5Cw%2A%3F%5B%5D",
    "a::memory://": "a%3A%3Amemory%3A%2F%2F",
    "100%": "100%25",
    "": None,
    "h" * 300: None,
}


def ev(host="web1", attrs=None, body=b"x", ts=TS):
    return Event(body, ts, 1, Priority.INFO, host, attrs or {})


def files_under(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, fs in os.walk(root) for f in fs}


def rejected_lines(base: Path) -> list[bytes]:
    out = []
    for f in sorted((base / "_rejected").iterdir()):
        assert f.name.startswith("rejected-") and not f.name.startswith(".")
        out += f.read_bytes().splitlines()
    return out


# ------------------------------------------------------------------ the encoding

@pytest.mark.parametrize("value", [v for v, enc in HOSTILE.items() if enc is not None])
def test_path_value_encodes_reversibly_and_never_leaves_a_segment(value):
    enc = path_value(value)
    assert enc == HOSTILE[value]
    assert unquote(enc, errors="surrogatepass") == value
    assert "/" not in enc and "\x00" not in enc and "\n" not in enc and "::" not in enc
    assert not enc.startswith(".") and enc not in ("", ".", "..")


def test_path_value_keeps_ordinary_names():
    for v in ("web1", "web-1.example.com", "20200913-122640123+0000.000000000042.00001234",
              "Ünïcode host", "a_b+c"):
        assert path_value(v) == v
    assert path_value("\udcff") == "%ED%B3%BF"       # a lone surrogate, still reversible


def test_only_path_escapers_encode():
    e = ev(host="../x", attrs={"a": b"/y"})
    assert Escaper("/b/%{host}/%{a}").expand(e) == "/b/../x//y"
    assert Escaper("/b/%{host}/%{a}", path=True).expand(e) == "/b/%2E.%2Fx/%2Fy"
    # dates are not values of the sender: %D keeps its slashes
    assert Escaper("/b/%D/%{body}", utc=True, path=True).expand(ev(body=b"..")) == \
        "/b/09/13/20/%2E."
    assert Escaper("/srv/base/%{host}/f").fixed_prefix == "/srv/base/"
    assert Escaper("%{host}/f").fixed_prefix == ""


# ------------------------------------------------------------------ bounded patterns

def test_too_many_escapes_is_a_clear_error_not_a_recursion_error():
    Escaper("%{host}" * MAX_ESCAPES, path=True)          # at the bound: fine
    with pytest.raises(PatternError, match=f"3000 escapes; at most {MAX_ESCAPES}"):
        Escaper("%{host}" * 3000)
    with pytest.raises(SpecError, match="at most 128") as info:
        build_sink(parse_sink('{ format("' + "%Y" * 3000 + '") => null }'))
    assert info.value.line == 1


def test_many_literal_percents_parse_in_linear_time():
    assert Escaper("%%" * 200_000).literal == "%" * 200_000


def test_flume_check_refuses_3000_escapes_with_exit_2(tmp_path):
    spec = 'a: null | dfs("/srv/base/' + "%{host}" * 3000 + '")'
    p = subprocess.run([sys.executable, "-m", "flume_og.node.cli", "check", "-c", spec],
                       capture_output=True, text=True, timeout=30,
                       cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == 2, p.stderr[-2000:]
    assert "at most 128 are allowed" in p.stderr
    assert "line 1, column 11" in p.stderr
    assert "Recursion" not in p.stderr and "Traceback" not in p.stderr


# ------------------------------------------------------------------ dfs, direct

def test_pattern_with_empty_or_dot_segments_after_an_escape_is_refused(tmp_path):
    for bad in (f'dfs("{tmp_path}/%{{host}}//f")', f'dfs("{tmp_path}/%{{host}}/../f")',
                f'dfs("{tmp_path}/%{{host}}/./f")', 'dfs("/srv/a\\nb/%{host}")'):
        with pytest.raises(SpecError):
            build_sink(parse_sink(bad))
    build_sink(parse_sink(f'dfs("{tmp_path}/../x/%{{host}}/f")'))   # before: the author's


def test_dfs_hostile_values_stay_under_the_base(ctx, tmp_path):
    base = tmp_path / "a" / "b" / "c" / "d" / "srv" / "base"
    s = build_sink(parse_sink(f'escapedCustomDfs("{base}/%{{host}}", "%{{svc}}.log")'))
    s.open(ctx)
    batch = [ev(host=h, attrs={"svc": b"s"}, body=f"host {i}".encode())
             for i, h in enumerate(HOSTILE)]
    batch += [ev(host="web1", attrs={"svc": b"../../../../y"}, body=b"svc"),
              ev(host="web1", attrs={}, body=b"no svc")]
    s.append(batch)
    s.when_durable(Checkpoint({"pos": 1}))
    s.close()
    assert all(base in f.parents for f in files_under(tmp_path / "a"))
    expect_refused = [i for i, enc in enumerate(HOSTILE.values()) if enc is None]
    assert sorted(rejected_lines(base)) == sorted(f"host {i}".encode() for i in expect_refused)
    # a missing attribute in a name is no empty segment: written, as before
    assert (base / "web1" / ".log").read_bytes() == b"no svc\n"
    for i, (h, enc) in enumerate(HOSTILE.items()):
        if enc is not None:
            assert (base / enc / "s.log").read_bytes() == f"host {i}\n".encode()
    assert (base / "web1" / "%2E.%2F..%2F..%2F..%2Fy.log").read_bytes() == b"svc\n"
    assert s.metrics["refused_path"] == len(expect_refused)
    assert s.metrics["refused"] == s.metrics["refused_path"]
    assert ctx.store.get("pos") == 1          # the bucket is committed with the rest


def test_dfs_directory_resolving_outside_the_base_goes_to_the_bucket(ctx, tmp_path):
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "evil").symlink_to(outside)     # a link inside the base: followed, refused
    s = build_sink(parse_sink(f'dfs("{base}/%{{host}}/f.log")'))
    s.open(ctx)
    s.append([ev(host="evil", body=b"e"), ev(host="good", body=b"g")])
    s.close()
    assert list(outside.iterdir()) == []
    assert rejected_lines(base) == [b"e"]
    assert (base / "good" / "f.log").read_bytes() == b"g\n"
    assert s.metrics["refused_path"] == 1


def test_dfs_on_a_store_path_never_climbs(ctx):
    import fsspec
    fs = fsspec.filesystem("memory")
    root = f"/flume-paths-{os.getpid()}"
    s = build_sink(parse_sink(f'escapedCustomDfs("memory://{root}/base/%{{host}}", "f")'))
    s.open(ctx)
    s.append([ev(host="../../x"), ev(host="")])
    s.close()
    found = sorted(fs.find(root))
    fs.rm(root, recursive=True)
    assert all(p.startswith(f"{root}/base/") for p in found), found
    assert f"{root}/base/%2E.%2F..%2Fx/f" in found
    assert any(p.startswith(f"{root}/base/_rejected/rejected-") for p in found), found
    assert s.metrics["refused_path"] == 1


def test_roll_keeps_the_refusals_of_closed_instances(ctx, tmp_path):
    s = build_sink(parse_sink(
        f'roll(60000) {{ escapedCustomDfs("{tmp_path}/%{{host}}", "f-%{{rolltag}}") }}'))
    s.open(ctx)
    try:
        s.append([ev(host="")])
        s.roll_now()
        s.append([ev(host=""), ev(host="ok")])
        report = s.report()
        assert summarize({"components": {"sink": report}})["refused_path"] == 2
        s.roll_now()   # the instance that refused is closed: its counters are carried
        report = s.report()
        assert summarize({"components": {"sink": report}})["refused_path"] == 2
        assert report["children"][0]["metrics"]["refused_path"] == 2
    finally:
        s.close()
    assert len(rejected_lines(tmp_path)) == 2


# ------------------------------------------------------------------ end to end

def run_node(tmp_path, source: str, sink: str) -> LogicalNode:
    node = LogicalNode("collector", tmp_path / "data")
    node.configure(parse_source(source), parse_sink(sink))
    assert node.state is State.ACTIVE, node.last_error
    return node


def test_syslog_tcp_hostnames_into_collector_sink_stay_under_the_base(tmp_path):
    top = tmp_path / "a" / "b"
    base = top / "c" / "d" / "srv" / "base"
    node = run_node(tmp_path, 'syslogTcp(0, bind="127.0.0.1")',
                    f'collectorSink("{base}/%{{host}}/", "data-", 60000)')
    try:
        # syslog host tokens have no space or newline, nor "[" nor a final ":"
        hosts = ["../../../../x", "/etc/x", "a/../../b", "..", ".", "a\x00b", "~root",
                 "a::memory://", "100%", "%2E.", "h" * 5000, "web1"]
        port = node._flow.source.port
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"".join(b"<13>Jan  1 00:00:00 %s msg%d\n" % (h.encode(), i)
                               for i, h in enumerate(hosts)))
        wait_until(lambda: node.events_in == len(hosts), what="every message")
        counters = wait_until(lambda: summarize(node.status()).get("refused_path") and
                              summarize(node.status()), what="the refusal counted")
        assert counters["refused_path"] == 1 and counters["refused"] == 1
    finally:
        node.stop(10)
    written = files_under(tmp_path / "a")
    assert written and all(base in f.parents for f in written), written
    by_dir = {f.parent.name: f.read_bytes() for f in written if f.parent != base / "_rejected"}
    for i, h in enumerate(hosts[:-2]):
        assert by_dir[path_value(h)] == b"msg%d\n" % i, (h, by_dir)   # the body is MSG
    assert by_dir["%252E."] == b"msg9\n"       # a sender cannot forge an encoding
    assert by_dir["web1"] == b"msg11\n"
    assert rejected_lines(base) == [b"msg10"]        # its host: 5000 bytes


@pytest.mark.parametrize("source", ["rpcSource", "collectorSource"])
def test_rpc_attributes_into_collector_sink_stay_under_the_base(tmp_path, source):
    base = tmp_path / "a" / "b" / "c" / "d" / "srv" / "base"
    node = run_node(tmp_path, f'{source}(0, bind="127.0.0.1")',
                    f'collectorSink("{base}/%{{svc}}/", "%{{svc}}-", 60000)')
    values = ["../../../../x", "/etc/x", "a/../../b", "..", ".", "a\x00b", "", "v" * 400,
              "ok"]
    try:
        port = node._flow.source.port
        with FlumeClient("127.0.0.1", port, timeout=10) as c:
            c.send([Event(f"e{i}".encode(), host="h", attrs={"svc": v.encode()})
                    for i, v in enumerate(values)])
            c.send([Event(b"nosvc", host="h")])
        wait_until(lambda: node.events_in == len(values) + 1, what="every event")
        wait_until(lambda: summarize(node.status()).get("refused_path") == 3,
                   what="three refusals counted")
    finally:
        node.stop(10)
    written = files_under(tmp_path / "a")
    assert written and all(base in f.parents for f in written), written
    refused = sorted(rejected_lines(base))
    assert refused == sorted([b"e6", b"e7", b"nosvc"])        # empty, too long, missing
    for i, v in enumerate(values):
        if i in (6, 7):
            continue
        enc = path_value(v)
        got = [f for f in written if f.parent == base / enc]
        assert len(got) == 1 and got[0].name.startswith(enc + "-"), (v, got)
        assert got[0].read_bytes() == f"e{i}\n".encode()


def test_dfs_keeps_at_most_max_open_files_open(ctx, tmp_path):
    import gzip
    s = build_sink(parse_sink(f'dfs("{tmp_path}/%{{host}}/f", compression="gzip", '
                              f'maxOpen=8)'))
    s.open(ctx)
    fds = len(os.listdir("/proc/self/fd"))
    for i in range(0, 60, 20):
        s.append([ev(host=f"h{j}", body=b"%d" % j) for j in range(i, i + 20)])
    s.append([ev(host="h0", body=b"again")])        # h0 was completed early: a new file
    assert len(os.listdir("/proc/self/fd")) - fds <= 8
    assert len(s.files) == 8 and s.metrics["files_completed_early"] == 61 - 8
    s.when_durable(Checkpoint({"pos": 9}))
    s.close()
    for j in range(60):
        assert gzip.decompress((tmp_path / f"h{j}" / "f.gz").read_bytes()) == b"%d\n" % j
    assert gzip.decompress((tmp_path / "h0" / "f.1.gz").read_bytes()) == b"again\n"
    assert not [p for p in tmp_path.rglob(".*")]    # every hidden file made final
    assert ctx.store.get("pos") == 9


def test_max_open_must_be_positive():
    with pytest.raises(SpecError, match="maxOpen"):
        build_sink(parse_sink('dfs("/x/%{host}", maxOpen=0)'))
    with pytest.raises(SpecError, match="maxOpen"):
        build_sink(parse_sink('collectorSink("/x/", "d", maxOpen=0)'))
