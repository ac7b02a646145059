"""A node killed with SIGKILL and restarted resumes at the right line: the final output
holds every line of the tailed file exactly once."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
LINES = 60_000


def start_node(spec: str, data: Path) -> subprocess.Popen:
    env = dict(os.environ, FLUME_DATA_DIR=str(data))
    return subprocess.Popen([sys.executable, "-m", "flume_og.node.cli", "--log-level", "WARNING",
                             "node", "--one-shot", "-n", "k", "-c", spec],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def writer(path: Path, done: threading.Event) -> None:
    """Appends LINES numbered lines at a steady pace (about 3 s in all)."""
    with open(path, "ab", buffering=0) as f:
        for start in range(0, LINES, 1000):
            f.write(b"".join(b"line %07d\n" % i for i in range(start, start + 1000)))
            time.sleep(0.05)
    done.set()


def read_output(out: Path) -> list[bytes]:
    """The lines of a sink's output, a file or a directory of files; none before it exists.

    The sink may create the output between two looks, so the kind is found by trying."""
    try:
        names = sorted(out.iterdir())
    except FileNotFoundError:       # the sink has not opened its first file yet
        return []
    except NotADirectoryError:
        return out.read_bytes().splitlines()
    lines = []
    for f in names:
        if not f.name.startswith("."):
            lines.extend(f.read_bytes().splitlines())
    return lines


def run_kill_restart(tmp_path: Path, sink: str, out: Path, kills: int) -> list[bytes]:
    src = tmp_path / "app.log"
    src.touch()
    data = tmp_path / "data"
    spec = f'k: tail("{src}") | {sink}'
    done = threading.Event()
    t = threading.Thread(target=writer, args=(src, done), daemon=True)
    t.start()
    rnd = random.Random(7)
    node = start_node(spec, data)
    try:
        for _ in range(kills):
            time.sleep(rnd.uniform(0.2, 0.7))
            node.send_signal(signal.SIGKILL)
            node.wait(10)
            node = start_node(spec, data)
        assert done.wait(60)
        # on a timeout the node is stopped all the same: check_exactly_once says what is lost
        with suppress(AssertionError):
            wait_until(lambda: len(read_output(out)) >= LINES, 60, "every line in the output",
                       interval=0.1)
        node.send_signal(signal.SIGTERM)
        _, err = node.communicate(timeout=30)
        assert node.returncode == 0, err
    finally:
        if node.poll() is None:
            node.kill()
    return read_output(out)


def check_exactly_once(lines: list[bytes]) -> None:
    expected = [b"line %07d" % i for i in range(LINES)]
    assert len(lines) == len(set(lines)), "duplicated lines in the output"
    missing = set(expected) - set(lines)
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:3]}"
    assert lines == expected  # one file: in order


@pytest.mark.timeout(180)
def test_sigkill_text_sink_exactly_once(tmp_path):
    out = tmp_path / "out.log"
    lines = run_kill_restart(tmp_path, f'text("{out}")', out, kills=4)
    check_exactly_once(lines)


@pytest.mark.timeout(180)
def test_sigkill_roll_sink_exactly_once(tmp_path):
    out = tmp_path / "out"
    sink = f'roll(300) {{ escapedCustomDfs("file://{out}", "part-%{{rolltag}}") }}'
    lines = run_kill_restart(tmp_path, sink, out, kills=4)
    assert len(lines) == len(set(lines)), "duplicated lines in the output"
    assert sorted(lines) == [b"line %07d" % i for i in range(LINES)]


@pytest.mark.parametrize("junk", [b"\xff\xfe\x00garbage\x80", b"[1, 2]",
                                  b'{"positions": {}, "renames": [["a"]]}'])
def test_undecodable_checkpoint_is_corruption_not_a_stuck_node(tmp_path, junk):
    """A checkpoint file holding bytes that are not UTF-8 (or JSON of the wrong shape) is
    set aside as corrupt; the flow starts from scratch and runs to the end."""
    src = tmp_path / "in.log"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    out = tmp_path / "out.log"
    data = tmp_path / "data"
    (data / "k").mkdir(parents=True)
    (data / "k" / "checkpoint.json").write_bytes(junk)
    node = start_node(f'k: text("{src}") | text("{out}")', data)
    _, err = node.communicate(timeout=60)
    assert node.returncode == 0, err.decode(errors="replace")
    assert out.read_bytes().splitlines() == [b"line %d" % i for i in range(100)]
    assert (data / "k" / "checkpoint.json.corrupt").read_bytes() == junk
    assert b"is corrupt" in err
