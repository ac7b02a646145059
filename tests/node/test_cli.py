"""The ``flume`` command line, run as a real process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def flume(*args, data_dir=None, timeout=60, **kw):
    env = dict(os.environ)
    if data_dir is not None:
        env["FLUME_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "flume_og.node.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def test_check_prints_canonical_form():
    r = flume("check", "-c", 'a:text("x")|{batch(10)=>gzip=>null};b : null | console')
    assert r.returncode == 0, r.stderr
    assert r.stdout == ('a : text("x") | { batch(10) => gzip => null } ;\n'
                        'b : null | console ;\n')


def test_check_reports_position_with_caret():
    r = flume("check", "-c", 'a: text("x") | consle')
    assert r.returncode == 2
    assert "line 1, column 16" in r.stderr
    assert "unknown sink 'consle'" in r.stderr and "did you mean 'console'" in r.stderr
    lines = r.stderr.splitlines()
    caret = next(i for i, l in enumerate(lines) if l.strip() == "^")
    assert lines[caret].index("^") == lines[caret - 1].index("consle")


def test_check_reads_file_and_reports_every_error(tmp_path):
    f = tmp_path / "flows.flume"
    f.write_text('a: text("x") | batch("ten") null ;\nb: nosource | null ;\n')
    r = flume("check", "-c", f"@{f}")
    assert r.returncode == 2
    assert "line 1" in r.stderr and "must be an int" in r.stderr
    assert "line 2" in r.stderr and "unknown source 'nosource'" in r.stderr


def test_check_shows_twenty_errors_each_under_a_short_piece_of_the_line():
    line = "".join(f"a{i}: nosuch{i} | null; " for i in range(100))   # one 2.4 kB line
    r = flume("check", "-c", line)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 3 * 20 + 1 and lines[-1].startswith("... and 80 more problems")
    assert max(len(x) for x in lines) <= 125
    caret = lines[2].index("^")
    assert lines[1][caret:].startswith("nosuch0") and lines[1].endswith("…")


def test_check_missing_file_is_usage_error(tmp_path):
    r = flume("check", "-c", f"@{tmp_path}/missing.flume")
    assert r.returncode == 2 and "cannot read spec file" in r.stderr
    assert "Traceback" not in r.stderr


def test_components_lists_usage():
    r = flume("components")
    assert r.returncode == 0
    for usage in ("tail(file: str", "roll(rollmillis: int", "batch(n: int",
                  "collectorSink" if False else "text(file: str"):
        assert usage in r.stdout, usage


def test_one_shot_text_to_text(tmp_path):
    src = tmp_path / "in.log"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    out = tmp_path / "out.log"
    r = flume("node", "--one-shot", "-n", "t1", "-c", f't1: text("{src}") | text("{out}")',
              data_dir=tmp_path / "data")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == src.read_bytes()


def test_one_shot_missing_input_is_clear_error(tmp_path):
    r = flume("node", "--one-shot", "-c", f't1: text("{tmp_path}/nope.log") | null',
              data_dir=tmp_path / "data")
    assert r.returncode == 1
    assert "nope.log" in r.stderr and "Traceback" not in r.stderr


def test_one_shot_bad_spec_exits_2(tmp_path):
    r = flume("node", "--one-shot", "-c", "t1: text( | null", data_dir=tmp_path / "data")
    assert r.returncode == 2 and "^" in r.stderr


def test_dump_prints_events():
    r = flume("dump", "asciisynth(3, 10)", "--format", "raw")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3


def test_sigterm_writes_buffered_events_and_renames(tmp_path):
    """SIGTERM closes cleanly: the batch decorator's buffer is written and the roll's file
    gets its final name."""
    out = tmp_path / "out"
    spec = (f't1: asciisynth(0, 20) | {{ delay(1) => roll(600000) '
            f'{{ escapedCustomDfs("file://{out}", "data-%{{rolltag}}") }} }}')
    env = dict(os.environ, FLUME_DATA_DIR=str(tmp_path / "data"))
    p = subprocess.Popen([sys.executable, "-m", "flume_og.node.cli", "node", "--one-shot", "-c", spec],
                         cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)

    def written() -> int:      # lines in the roll's open (hidden) file so far
        return sum(len(f.read_bytes().splitlines()) for f in out.glob(".*"))
    wait_until(lambda: written() > 10, 20, "more than 10 events in the open file",
               ignore=(OSError,))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    finals = [f for f in out.iterdir() if not f.name.startswith(".")]
    hidden = [f for f in out.iterdir() if f.name.startswith(".")]
    assert len(finals) == 1 and not hidden
    assert len(finals[0].read_bytes().splitlines()) > 10


def test_node_refuses_a_status_page_on_a_reachable_address(tmp_path):
    r = flume("node", "--one-shot", "-c", "n: asciisynth(1) | null", "--http-port", "0",
              "--http-bind", "0.0.0.0", "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert "refusing to serve the node status page in plain HTTP on 0.0.0.0" in r.stderr
    assert "--http-tls-cert FILE --http-tls-key FILE" in r.stderr and "--http-insecure" in r.stderr


def test_check_refuses_a_spec_nesting_too_deeply_with_a_caret():
    chained = "a: null | { " + "batch(1) => " * 1000 + "null }"
    r = flume("check", "-c", chained)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "nests too deeply" in r.stderr
    lines = r.stderr.splitlines()
    caret = next(i for i, line in enumerate(lines) if line.strip() == "^")
    assert lines[caret - 1][lines[caret].index("^"):].startswith("batch(1)")


def test_check_names_a_regex_construct_the_engine_refuses():
    r = flume("check", "-c", 'a: null | { regex("(\\\\w+) \\\\1", 1, "word") => null }')
    assert r.returncode == 2, r.stderr
    assert "line 1, column 13" in r.stderr and "backreferences are not supported" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_remote_master_handing_out_its_loopback_zookeeper_is_refused():
    """A master on another host with its managed ZooKeeper on 127.0.0.1 (or a host name
    that is loopback here) would send the node to its own host: refused, with the way out.
    192.0.2.1 (TEST-NET-1) is never an address of this machine."""
    from flume_og.node.cli import UsageError, check_reachable_zk
    for zk in ("127.0.0.1:3181", "localhost:3181", "127.0.0.1:3181,[::1]:3181"):
        with pytest.raises(UsageError, match="--zk-bind ADDRESS"):
            check_reachable_zk("http://192.0.2.1:35871", zk)
    check_reachable_zk("http://192.0.2.1:35871", "192.0.2.2:2181,127.0.0.1:2181")
    check_reachable_zk("http://127.0.0.1:35871", "127.0.0.1:3181")  # the master is here
    check_reachable_zk("http://localhost:35871", "localhost:3181")


def test_version_and_log_options_are_checked():
    r = flume("--version")
    assert r.returncode == 0 and r.stdout.startswith("flume ")
    r = flume("--log-level", "verbose", "components")
    assert r.returncode == 2 and "unknown log level 'verbose'" in r.stderr
    r = flume("--log-format", "xml", "components")
    assert r.returncode == 2 and "invalid choice: 'xml'" in r.stderr
    r = flume("--log-format", "json", "node", "--one-shot", "-c", "a: asciisynth(1) | null")
    assert r.returncode == 0
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert any(rec["message"].startswith("logical node a is active") for rec in records)
