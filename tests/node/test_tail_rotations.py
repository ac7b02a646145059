"""A node process killed while its tailed file then rotates several times: started again,
it reads every rotated file it had not finished, in order, before the live file; each
counter line reaches the output exactly once. And ``flume dump`` of a file that is not
there says so."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.test_resume import ROOT, read_output, start_node
from tests.node.test_tail import rotate_numbered
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def counters(a: int, b: int) -> bytes:
    return b"".join(b"counter %07d\n" % i for i in range(a, b))


def rotate(src: Path, scheme: str, k: int, data: bytes) -> None:
    """The ``k``-th rotation (1, 2, ...) of ``src`` as logrotate names it, a new ``src``
    holding ``data``: ``numbered`` (``name.1`` is the newest, the others shift up) or
    ``daily`` (``name-YYYYMMDD``)."""
    if scheme == "numbered":
        rotate_numbered(src, data)
    else:
        os.rename(src, f"{src}-202612{k:02d}")
        src.write_bytes(data)


def wait_lines(out: Path, n: int) -> None:
    wait_until(lambda: len(read_output(out)) >= n, 30, f"{n} lines in the output",
               interval=0.05)


@pytest.mark.parametrize("scheme", ["numbered", "daily"])
def test_node_down_while_its_file_rotates_three_times(tmp_path, scheme):
    src, out, data = tmp_path / "app.log", tmp_path / "out.log", tmp_path / "data"
    spec = f'k: tail("{src}") | text("{out}")'
    src.write_bytes(counters(0, 1000))
    node = start_node(spec, data)
    try:
        wait_lines(out, 1000)
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        # while the node is down: lines after its position, then three rotations, each
        # new file with its own lines
        with open(src, "ab") as f:
            f.write(counters(1000, 1500))
        for k, (a, b) in enumerate(((1500, 2500), (2500, 3500), (3500, 4500)), 1):
            rotate(src, scheme, k, counters(a, b))
        node = start_node(spec, data)
        with open(src, "ab") as f:                  # the live file grows on
            f.write(counters(4500, 5000))
        wait_lines(out, 5000)
        node.send_signal(signal.SIGTERM)
        _, err = node.communicate(timeout=30)
        assert node.returncode == 0, err
    finally:
        if node.poll() is None:
            node.kill()
    got = read_output(out)
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicated lines"
    assert got == counters(0, 5000).splitlines()


def test_dump_of_a_file_that_does_not_exist_yet_says_so(tmp_path):
    missing = tmp_path / "nonexistent"
    p = subprocess.Popen([sys.executable, "-m", "flume_og.node.cli", "dump",
                          f'tail("{missing}")'], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    got = {"out": b"", "err": b""}
    for pipe in (p.stdout, p.stderr):
        os.set_blocking(pipe.fileno(), False)

    def has(what: str, text: bytes) -> bool:
        got[what] += (p.stdout if what == "out" else p.stderr).read() or b""
        return text in got[what]
    try:
        wait_until(lambda: has("err", b"does not exist yet"), 20,
                   "the dump saying the file does not exist yet", interval=0.05)
        assert str(missing).encode() in got["err"]
        missing.write_bytes(b"hello\n")             # and it is read once it appears
        wait_until(lambda: has("out", b"hello"), 20, "the line dumped", interval=0.05)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)


@pytest.mark.parametrize("kind", ["tailDir", "spoolDir"])
def test_dump_of_a_directory_that_does_not_exist_yet_says_so_once(tmp_path, kind):
    missing = tmp_path / "nonexistent"
    p = subprocess.Popen([sys.executable, "-m", "flume_og.node.cli", "dump",
                          f'{kind}("{missing}")'], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    os.set_blocking(p.stderr.fileno(), False)
    err = [b""]

    def said() -> bool:
        err[0] += p.stderr.read() or b""
        return b"does not exist yet" in err[0]
    try:
        wait_until(said, 20, "the dump saying the directory does not exist yet",
                   interval=0.05)
        assert str(missing).encode() in err[0]
        # later scans (every SCAN_EVERY = 0.5 s) while it is still missing say nothing
        with pytest.raises(AssertionError):
            wait_until(lambda: said() and err[0].count(b"does not exist yet") > 1, 1.5,
                       interval=0.05)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
