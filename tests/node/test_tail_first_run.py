"""A node killed (SIGKILL) during its first run, after lines reached ``text()`` but before the
first checkpoint, loses none of them: the tail recorded where it started reading at open, so
the restarted tail resends what ``text()`` cut back.

``delay`` holds the checkpoint: a batch is passed to ``text()`` in pieces, and its position
is committed only after the last piece, so the kill lands before the first checkpoint."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.node.test_resume import read_output, start_node
from tests.node.test_tail import rotate_numbered
from tests.waiting import wait_until


def counters(a: int, b: int) -> bytes:
    return b"".join(b"counter %07d\n" % i for i in range(a, b))


def kill(node) -> None:
    node.send_signal(signal.SIGKILL)
    node.wait(10)


def stop(node) -> None:
    node.send_signal(signal.SIGTERM)
    node.communicate(timeout=30)


def test_start_from_end_sigkill_before_first_checkpoint(tmp_path):
    data, out, src = tmp_path / "data", tmp_path / "out.log", tmp_path / "app.log"
    src.write_bytes(b"old line\n")
    spec = f'k: tail("{src}", startFromEnd=true) | {{ delay(1) => text("{out}") }}'
    node = start_node(spec, data)
    written = [0]

    def write_until_seen():
        # the tail starts at the end once open: append until its first lines show
        if not read_output(out):
            with open(src, "ab") as f:
                f.write(counters(written[0], written[0] + 1000))
            written[0] += 1000
            return seen_soon(out)
        return True

    try:
        wait_until(write_until_seen, timeout=30, what="the first lines in the output")
        first = read_output(out)[0]
        kill(node)
        end = written[0]
        with open(src, "ab") as f:
            f.write(counters(end, end + 500))
        node = start_node(spec, data)
        start = int(first.split()[1])
        expected = counters(start, end + 500).splitlines()
        wait_until(lambda: len(read_output(out)) >= len(expected), timeout=30,
                   what="every line from the first one seen")
    finally:
        stop(node)
    got = read_output(out)
    assert first in got, "the lines visible at the kill were lost"
    assert got == expected


def seen_soon(out: Path) -> bool:
    """True if the output shows a line within half a second."""
    try:
        wait_until(lambda: read_output(out), timeout=0.5, interval=0.005)
        return True
    except AssertionError:
        return False


@pytest.mark.parametrize("kind", ["tail", "multitail", "tailDir"])
def test_rotation_while_down_after_sigkill_before_first_checkpoint(tmp_path, kind):
    data, out, logs = tmp_path / "data", tmp_path / "out.log", tmp_path / "logs"
    logs.mkdir()
    src = logs / "app.log"
    src.write_bytes(counters(0, 1000))
    source = {"tail": f'tail("{src}")', "multitail": f'multitail("{src}")',
              "tailDir": f'tailDir("{logs}")'}[kind]
    spec = f'k: {source} | {{ delay(1) => text("{out}") }}'
    node = start_node(spec, data)
    try:
        wait_until(lambda: read_output(out), timeout=30, what="the first lines in the output")
        kill(node)
        assert len(read_output(out)) < 1000     # killed mid-batch: before its checkpoint
        rotate_numbered(src, counters(1000, 1500))
        node = start_node(spec, data)
        wait_until(lambda: len(read_output(out)) >= 1500, timeout=30, what="1500 lines")
    finally:
        stop(node)
    assert read_output(out) == counters(0, 1500).splitlines()
