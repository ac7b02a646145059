"""State files that are valid JSON with values of the wrong type or range are corruption
(issue 11 review): each owner falls back as for undecodable state, logs the file and what
was wrong, and counts it in ``corrupt_state``. Before: ``invalid literal for int()`` or an
OverflowError, naming neither the file nor corruption, and the flow failed at every open.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from flume_og.node.decorators.disk_failover import Spool
from flume_og.node.wal import WriteAheadLog
from tests.node.test_resume import start_node
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def run_until(spec: str, data: Path, out: Path, n: int) -> bytes:
    """A one-shot node running ``spec`` until ``out`` holds ``n`` lines; its stderr."""
    node = start_node(spec, data)
    try:
        wait_until(lambda: len(lines(out)) >= n or node.poll() is not None, 30,
                   f"{n} lines in the output")
    finally:
        node.send_signal(signal.SIGTERM)
        _, err = node.communicate(timeout=30)
    return err


@pytest.mark.parametrize("tag, change, expected", [
    ("tail offset a string", lambda r, t: r.update(offset="x"), 210),
    ("tail offset negative", lambda r, t: r.update(offset=-5), 210),
    ("tail fingerprint a number", lambda r, t: r.update(fp=7), 210),
    ("tail head length a string", lambda r, t: r.update(head_len="x"), 210),
    ("text size a string", lambda r, t: t.__setitem__(0, "x"), 110),
])
def test_a_checkpoint_of_the_wrong_type_is_corruption(tmp_path, tag, change, expected):
    """The tail's position falls back to the start of the file (read again: the
    duplicates are what a lost checkpoint costs); the text sink's size is not trusted
    (nothing is cut) and recorded anew. Either way the node runs on."""
    src, out, data = tmp_path / "in.log", tmp_path / "out.log", tmp_path / "data"
    src.write_bytes(b"".join(b"line %03d\n" % i for i in range(100)))
    spec = f'k: tail("{src}") | text("{out}")'
    run_until(spec, data, out, 100)
    cp = data / "k" / "checkpoint.json"
    state = json.loads(cp.read_text())
    pos = state["positions"]
    text = [pos["text:" + str(out)]]
    change(pos["tail:" + str(src)], text)
    pos["text:" + str(out)] = text[0]
    cp.write_text(json.dumps(state))
    with open(src, "ab") as f:
        f.write(b"".join(b"line %03d\n" % i for i in range(100, 110)))
    err = run_until(spec, data, out, expected)
    assert len(lines(out)) == expected, err.decode(errors="replace")
    assert b"is corrupt" in err and str(cp).encode() in err, err.decode(errors="replace")
    assert set(lines(out)) == {b"line %03d" % i for i in range(110)}


def test_a_wal_meta_of_the_wrong_type_is_rebuilt_from_the_segments(tmp_path, caplog):
    wal = WriteAheadLog(tmp_path / "wal")
    wal.open()
    seqs = [g.seq for g in wal.append([(b"a", 1), (b"b", 1)], {"pos": 2})]
    wal.close()
    (tmp_path / "wal" / "meta.json").write_bytes(b'{"next_seq": Infinity}')
    wal = WriteAheadLog(tmp_path / "wal")
    assert [g.seq for g in wal.open()] == seqs
    assert wal.position == {"pos": 2} and wal.metrics["corrupt_state"] == 1
    assert wal.append([(b"c", 1)], None)[0].seq == seqs[-1] + 1
    wal.close()
    assert "meta.json is unreadable (corrupt" in caplog.text


@pytest.mark.parametrize("pos", [b'{"segment": Infinity, "offset": 0}',
                                 b'{"segment": 0, "offset": -3}',
                                 b'{"segment": "1", "offset": 0}'])
def test_a_spool_replay_position_of_the_wrong_type_replays_from_the_start(tmp_path, pos,
                                                                          caplog):
    spool, d = Spool.claim(tmp_path, "spool")
    for i in range(3):
        spool.write(b"rec %d" % i, 1)
    spool.close()
    (d / "replay.pos").write_bytes(pos)
    spool, _ = Spool.claim(tmp_path, "spool")
    assert spool.corrupt_state == 1 and spool.pending_records == 3
    assert spool.peek()[0] == b"rec 0"
    spool.close()
    assert "replay.pos is corrupt" in caplog.text
