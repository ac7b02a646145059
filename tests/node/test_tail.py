"""tail, multitail and tailDir on real files: delimiters, rotation, truncation, restarts."""
from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest

from flume_og.node.clock import ManualClock
from flume_og.node.errors import SpecError
from flume_og.node.builder import build_source
from flume_og.node.sources import tail as tail_mod
from flume_og.node.sources.tail import MultiTailSource, TailDirSource, TailSource
from flume_og.node.spec import parse_source
from tests.node.reading import commit, read_events, read_n, read_quiet
from tests.waiting import wait_until


def lines(a: int, b: int) -> bytes:
    return b"".join(b"line %05d\n" % i for i in range(a, b))


def bodies(a: int, b: int) -> list[bytes]:
    return [b"line %05d" % i for i in range(a, b)]


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def read_commit_and_stop(make_ctx, opened, f) -> None:
    """Lines 0-9 in ``f``, read by a tail of node n1, its position committed, the tail
    closed: what the restart tests start from."""
    f.write_bytes(lines(0, 10))
    ctx = make_ctx("n1")
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 10) == bodies(0, 10)
    commit(ctx, src)
    src.close()


def lag_behind_a_rotation(ctx, opened, tmp_path) -> tuple[TailSource, Path, list[bytes]]:
    """A tail of ``a.log`` still busy with its 20,000 lines when the file is renamed to
    ``a.log.1`` and a new ``a.log`` of 10 lines appears: (the tail, the path of a.log,
    the bodies it returned so far)."""
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 20_000))
    src = opened(TailSource(str(f)), ctx)
    got = [e.body for e in src.next_batch(1)]
    os.rename(f, tmp_path / "a.log.1")
    f.write_bytes(lines(20_000, 20_010))
    got += [e.body for e in src.next_batch(1)]
    return src, f, got


# ---------------------------------------------------------------- basics

def test_lines_and_incomplete_last_record(ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    f.write_bytes(b"one\ntwo\nthr")
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 2) == [b"one", b"two"]
    assert read_quiet(src, 0.2) == []          # "thr" has no delimiter yet
    pos = src.checkpoint()["tail:" + str(f)]
    assert pos["offset"] == 8 and pos["ino"] == os.stat(f).st_ino
    assert bytes.fromhex(pos["fp"]) == b"one\ntwo\n"
    append(f, b"ee\n\nfour\n")
    batch = read_events(src, 3)
    assert [e.body for e in batch] == [b"three", b"", b"four"]
    assert all(e.attrs == {"tailSrcFile": b"a.log"} for e in batch)
    assert src.checkpoint()["tail:" + str(f)]["offset"] == f.stat().st_size


@pytest.mark.parametrize("delim,mode,expected,offset", [
    # literal delimiters (fast path), written as regexes
    ("\\|\\|", "exclude", [b"a", b"b", b"", b"c"], 11),
    ("\\|\\|", "prev", [b"a||", b"b||", b"||", b"c||"], 11),
    ("\\|\\|", "next", [b"a", b"||b", b"||", b"||c"], 9),
    # true regexes
    ("[;,]+", "exclude", [b"a", b"b", b"c"], 7),
    ("[;,]+", "prev", [b"a;", b"b,,", b"c;"], 7),
    ("[;,]+", "next", [b"a", b";b", b",,c"], 6),
])
def test_delim_modes(ctx, tmp_path, opened, delim, mode, expected, offset):
    f = tmp_path / "d.log"
    f.write_bytes(b"a||b||||c||d" if "|" in delim else b"a;b,,c;d")
    src = opened(TailSource(str(f), delim=delim, delimMode=mode), ctx)
    assert read_n(src, len(expected)) == expected
    assert read_quiet(src, 0.2) == []
    assert src.checkpoint()["tail:" + str(f)]["offset"] == offset


def test_regex_delimiter_spanning_reads(ctx, tmp_path, opened, monkeypatch):
    monkeypatch.setattr(tail_mod, "CHUNK", 7)   # force many small reads
    f = tmp_path / "r.log"
    f.write_bytes(b"rec1<END>rec22<END><END>rec333<END>tail")
    src = opened(TailSource(str(f), delim="<END>(<END>)*", delimMode="exclude"), ctx)
    assert read_n(src, 3) == [b"rec1", b"rec22", b"rec333"]
    assert src.checkpoint()["tail:" + str(f)]["offset"] == len(
        b"rec1<END>rec22<END><END>rec333<END>")


def test_start_from_end(ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 10))
    src = opened(TailSource(str(f), True), ctx)
    assert read_quiet(src, 0.2) == []
    append(f, lines(10, 12))
    assert read_n(src, 2) == bodies(10, 12)


def test_start_from_end_ignored_with_saved_position(make_ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 15))
    src2 = opened(TailSource(str(f), True), make_ctx("n1"))
    assert read_n(src2, 5) == bodies(10, 15)


def test_file_appearing_later(ctx, tmp_path, opened):
    f = tmp_path / "later.log"
    src = opened(TailSource(str(f), True), ctx)
    assert src.next_batch(0.1) == []
    assert src.checkpoint() == {}
    f.write_bytes(lines(0, 3))      # appeared after open: read from its start
    assert read_n(src, 3) == bodies(0, 3)


def test_close_unblocks_next_batch(ctx, tmp_path):
    src = TailSource(str(tmp_path / "none.log"))
    src.open(ctx)
    result = []
    t = threading.Thread(target=lambda: result.append(src.next_batch(30)))
    t.start()
    # a real sleep: nothing tells that the reader is blocked, and next_batch's timeout is
    # real time, not the clock -- the thread needs the chance to get there
    time.sleep(0.1)
    t0 = time.monotonic()
    src.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 1
    assert result == [None]


def test_spec_building_and_errors():
    src = build_source(parse_source(
        'tail("/tmp/x.log", true, delim="\\n\\n", delimMode="prev")'))
    assert isinstance(src, TailSource)
    assert isinstance(build_source(parse_source('multitail("a", "b")')), MultiTailSource)
    assert isinstance(build_source(parse_source('tailDir("/tmp", fileregex=".*\\\\.log", '
                                                'recurseDepth=2)')), TailDirSource)
    with pytest.raises(SpecError, match="delimMode"):
        build_source(parse_source('tail("x", delimMode="middle")'))
    with pytest.raises(SpecError, match="empty string"):
        build_source(parse_source('tail("x", delim="a*")'))
    with pytest.raises(SpecError):
        build_source(parse_source('tailDir("/tmp", fileregex="(")'))


# ---------------------------------------------------------------- truncation and rotation

def test_truncation_without_copy(ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 20))
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 20) == bodies(0, 20)
    with open(f, "r+b") as fh:
        fh.truncate(0)
    append(f, lines(100, 103))
    assert read_n(src, 3) == bodies(100, 103)
    assert read_quiet(src, 0.2) == []
    assert src.metrics.get("truncations") == 1


def test_truncation_regrown_past_offset_is_detected(ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 5))
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 5) == bodies(0, 5)
    with open(f, "r+b") as fh:      # truncated and rewritten longer before the next poll
        fh.truncate(0)
    append(f, lines(100, 120))
    assert read_n(src, 20) == bodies(100, 120)


def test_copytruncate_recovers_unread_rest(ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 10))
    (tmp_path / "a.log.2").write_bytes(lines(0, 30))   # an older copy: wrong bytes
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 10) == bodies(0, 10)
    append(f, lines(10, 20) + b"line 000")    # not read yet; last line incomplete
    shutil.copyfile(f, tmp_path / "a.log.1")
    with open(f, "r+b") as fh:
        fh.truncate(0)
    append(f, b"20\n" + lines(21, 25))
    # The incomplete copy line is emitted as it is when the copy is left.
    assert read_n(src, 16) == bodies(10, 20) + [b"line 000", b"20"] + bodies(21, 25)
    assert read_quiet(src, 0.2) == []
    pos = src.checkpoint()["tail:" + str(f)]
    assert pos["ino"] == f.stat().st_ino and pos["offset"] == f.stat().st_size


def test_rename_rotation_drains_old_file_first(ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 10))
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 10) == bodies(0, 10)
    with open(f, "ab", buffering=0) as w:          # the writer's open file
        w.write(lines(10, 15))
        os.rename(f, tmp_path / "a.log.1")
        f.write_bytes(b"")                           # logrotate "create"
        assert read_n(src, 5) == bodies(10, 15)
        assert read_quiet(src, 0.2) == []            # the new file is still empty
        w.write(lines(15, 18))                       # still writing to the old inode
        assert read_n(src, 3) == bodies(15, 18)
        w.write(lines(18, 20))
    append(f, lines(20, 25))                         # reopened: writes the new file
    assert read_n(src, 7) == bodies(18, 25)
    assert src.checkpoint()["tail:" + str(f)]["ino"] == f.stat().st_ino
    assert src.metrics.get("rotations") == 1


def test_rotated_file_left_after_idle(make_ctx, tmp_path, opened):
    clock = ManualClock()
    ctx = make_ctx("n1", clock=clock)
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 3))
    old_ino = f.stat().st_ino
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 3) == bodies(0, 3)
    os.rename(f, tmp_path / "a.log.1")
    f.write_bytes(b"")
    assert read_quiet(src, 0.2) == []
    assert src.checkpoint()["tail:" + str(f)]["ino"] == old_ino     # new file empty: wait
    append(tmp_path / "a.log.1", lines(3, 4))                      # a late line
    assert read_n(src, 1) == bodies(3, 4)
    clock.advance(tail_mod.IDLE_SWITCH + 0.1)
    deadline = time.monotonic() + 5
    while (src.checkpoint()["tail:" + str(f)]["ino"] == old_ino
           and time.monotonic() < deadline):
        src.next_batch(0.05)
    pos = src.checkpoint()["tail:" + str(f)]
    assert {k: pos[k] for k in ("dev", "ino", "offset", "fp", "head_len")} == {
        "dev": f.stat().st_dev, "ino": f.stat().st_ino, "offset": 0, "fp": "", "head_len": 0}
    append(f, lines(4, 6))
    assert read_n(src, 2) == bodies(4, 6)


def test_lagging_follower_keeps_every_rotated_file(ctx, tmp_path, opened, monkeypatch):
    """Two rename rotations while the follower is still busy with the first file: the
    file in between is not skipped."""
    monkeypatch.setattr(tail_mod, "POLL", 0.0)      # check the path on every poll
    src, f, got = lag_behind_a_rotation(ctx, opened, tmp_path)
    assert src.metrics.get("rotations") == 1
    os.rename(tmp_path / "a.log.1", tmp_path / "a.log.2")
    os.rename(f, tmp_path / "a.log.1")
    f.write_bytes(lines(20_010, 20_020))
    got += read_n(src, 20_020 - len(got))
    assert got == bodies(0, 20_020)


def test_lagging_follower_recovers_copytruncated_next_file(ctx, tmp_path, opened,
                                                           monkeypatch):
    monkeypatch.setattr(tail_mod, "POLL", 0.0)
    src, f, got = lag_behind_a_rotation(ctx, opened, tmp_path)   # sees the new file's head
    append(f, lines(20_010, 20_012))
    os.rename(tmp_path / "a.log.1", tmp_path / "a.log.2")
    shutil.copyfile(f, tmp_path / "a.log.1")        # copytruncate of the file not reached
    os.truncate(f, 0)
    append(f, lines(20_012, 20_015))
    got += read_n(src, 20_015 - len(got))
    assert got == bodies(0, 20_015)
    assert src.metrics.get("truncations") == 1


class _Writer:
    """Appends numbered lines at about ``rate`` lines/s to ``path`` through an O_APPEND
    descriptor, like a logging program; ``reopen()`` makes it reopen the path (what a
    program does on SIGHUP after logrotate)."""

    def __init__(self, path, rate: int = 2000):
        self.path = str(path)
        self.lock = threading.Lock()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.reopen_wanted = False
        self.count = 0
        self.stop = threading.Event()
        self.rate = rate
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        per = 10
        t0 = time.monotonic()
        while not self.stop.is_set():
            with self.lock:
                if self.reopen_wanted:
                    os.close(self.fd)
                    self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                      0o644)
                    self.reopen_wanted = False
                i = self.count
                os.write(self.fd, b"".join(b"%08d %s\n" % (n, b"x" * (n % 37))
                                           for n in range(i, i + per)))
                self.count = i + per
            # pace: stay near `rate` lines per second
            ahead = self.count / self.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        os.close(self.fd)

    def reopen(self) -> None:
        with self.lock:
            self.reopen_wanted = True


def _shift(path) -> None:
    one = f"{path}.1"
    if os.path.exists(one):
        os.replace(one, f"{path}.2")


def test_rotation_under_steady_writer(ctx, tmp_path, opened):
    """20 rename-and-create and 20 copytruncate rotations done as logrotate does them, with
    a writer at 2000 lines/s: every line arrives exactly once and in order."""
    path = tmp_path / "app.log"
    w = _Writer(path)
    src = opened(TailSource(str(path)), ctx)
    got: list[bytes] = []
    reading = threading.Event()

    def reader():
        while not reading.is_set():
            batch = src.next_batch(0.1)
            if batch:
                got.extend(e.body for e in batch)
    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    w.thread.start()
    try:
        for k in range(40):
            time.sleep(0.2)         # the interval between rotations (pacing, not waiting)
            _shift(path)
            if k % 2 == 0:          # rename and create, then the program reopens
                os.rename(path, f"{path}.1")
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                time.sleep(0.03)
                w.reopen()
            else:                   # copytruncate with the writer held between lines
                with w.lock:
                    shutil.copyfile(path, f"{path}.1")
                    os.truncate(path, 0)
    finally:
        w.stop.set()
        w.thread.join(5)
    total = w.count
    with suppress(AssertionError):      # the check below says what is missing
        wait_until(lambda: len(got) >= total, 10, "every line written")
    reading.set()
    rt.join(5)
    assert total > 10_000
    expected = [b"%08d %s" % (n, b"x" * (n % 37)) for n in range(total)]
    if got != expected:
        missing = sorted(set(expected) - set(got))[:5]
        dup = len(got) - len(set(got))
        pytest.fail(f"got {len(got)} of {total} lines; first missing {missing}; "
                    f"duplicates {dup}")
    assert src.metrics.get("rotations", 0) >= 20
    assert src.metrics.get("truncations", 0) >= 20


# ---------------------------------------------------------------- restarts

def test_restart_resumes_without_loss_or_repeat(make_ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 10_000))
    ctx = make_ctx("n1")
    src = opened(TailSource(str(f)), ctx)
    first = src.next_batch(1)
    n = len(first)
    assert 0 < n < 10_000
    commit(ctx, src)
    second = src.next_batch(1)       # read but never committed: read again after restart
    assert second
    src.close()
    append(f, lines(10_000, 10_010))
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    rest = read_n(src2, 10_010 - n)
    assert [e.body for e in first] + rest == bodies(0, 10_010)
    assert read_quiet(src2, 0.2) == []


def test_rotated_while_stopped_is_finished_first(make_ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 15))
    os.rename(f, tmp_path / "a.log.1")
    (tmp_path / "a.log.2").write_bytes(lines(0, 10))   # same name pattern, other inode
    f.write_bytes(lines(15, 20))
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 10) == bodies(10, 20)
    assert read_quiet(src2, 0.2) == []


def test_rotated_away_while_stopped_reads_new_file(make_ctx, tmp_path, opened, caplog):
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    os.unlink(f)
    f.write_bytes(lines(50, 53))
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 3) == bodies(50, 53)
    assert "cannot be found" in caplog.text


def test_copytruncated_while_stopped(make_ctx, tmp_path, opened):
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 15))
    shutil.copyfile(f, tmp_path / "a.log.1")
    with open(f, "r+b") as fh:
        fh.truncate(0)
    append(f, lines(100, 130))       # regrown past the saved offset: same inode, new bytes
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 35) == bodies(10, 15) + bodies(100, 130)
    assert read_quiet(src2, 0.2) == []


def test_copytruncated_while_stopped_before_anything_was_read(make_ctx, tmp_path, opened):
    """The saved position is at the start of an empty file (nothing read, no bytes to
    recognise a copy by); while stopped, lines are written, the file is copied and
    truncated, and more lines come: the copy is read first, then the file from its start."""
    f = tmp_path / "a.log"
    f.write_bytes(b"")
    ctx = make_ctx("n1")
    src = opened(TailSource(str(f)), ctx)
    assert read_quiet(src, 0.1) == []
    commit(ctx, src)
    src.close()
    saved = ctx.store.get("tail:" + str(f))
    assert saved["offset"] == 0
    append(f, lines(0, 5))
    shutil.copyfile(f, tmp_path / "a.log.1")
    later = saved["mtime"] + 10_000_000     # a tick after the save (times are coarse)
    os.utime(tmp_path / "a.log.1", ns=(later, later))
    with open(f, "r+b") as fh:
        fh.truncate(0)
    append(f, lines(5, 8))
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 8) == bodies(0, 8)
    assert read_quiet(src2, 0.2) == []


def rotate_numbered(f: Path, data: bytes) -> None:
    """A size-based rotation: ``name.N`` -> ``name.N+1``, ``name`` -> ``name.1``, a new
    ``name`` holding ``data``."""
    d, n = f.parent, f.name
    k = 1
    while (d / f"{n}.{k}").exists():
        k += 1
    for i in range(k - 1, 0, -1):
        os.rename(d / f"{n}.{i}", d / f"{n}.{i + 1}")
    os.rename(f, d / f"{n}.1")
    f.write_bytes(data)


def test_symlink_rotated_while_stopped_is_finished_next_to_its_target(make_ctx, tmp_path,
                                                                      opened):
    """A link into another directory, its target rotated while down: the rest of the saved
    file is found next to the target (real/a.log.1), then the new file, each line once."""
    real = tmp_path / "real"
    real.mkdir()
    target, link = real / "a.log", tmp_path / "a.log"
    link.symlink_to(target)
    read_commit_and_stop(make_ctx, opened, link)
    append(target, lines(10, 15))
    rotate_numbered(target, lines(15, 20))
    src2 = opened(TailSource(str(link)), make_ctx("n1"))
    assert read_n(src2, 10) == bodies(10, 20)
    assert read_quiet(src2, 0.2) == []


def test_start_is_recorded_before_the_first_lines_of_a_late_file(make_ctx, tmp_path, opened):
    """startFromEnd, the file appearing after open: where it starts (0) is in the store
    before its lines are given, so a crash before any checkpoint reads them again."""
    f = tmp_path / "later.log"
    ctx = make_ctx("n1")
    src = opened(TailSource(str(f), True), ctx)
    assert src.next_batch(0.1) == []
    f.write_bytes(lines(0, 3))
    assert read_n(src, 3) == bodies(0, 3)
    assert ctx.store.get("tail:" + str(f))["offset"] == 0     # no checkpoint committed
    src.close()                     # nothing committed: as after a crash
    src2 = opened(TailSource(str(f), True), make_ctx("n1"))
    assert read_n(src2, 3) == bodies(0, 3)


def test_three_rotations_while_stopped_are_read_in_order(make_ctx, tmp_path, opened):
    """Down while the file rotates 3 times: the rest of the saved file (now a.log.3), then
    a.log.2, a.log.1 and a.log, each line once; the older a.log.4 is not read again."""
    f = tmp_path / "a.log"
    (tmp_path / "a.log.1").write_bytes(b"older rotation\n")
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 15))
    rotate_numbered(f, lines(15, 20))
    rotate_numbered(f, lines(20, 25))
    rotate_numbered(f, lines(25, 30))
    assert (tmp_path / "a.log.4").read_bytes() == b"older rotation\n"
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 20) == bodies(10, 30)
    assert read_quiet(src2, 0.2) == []
    assert src2.checkpoint()["tail:" + str(f)]["ino"] == f.stat().st_ino


def test_daily_rotations_while_stopped_are_read_in_order(make_ctx, tmp_path, opened):
    """A weekend of daily rotations (``name-YYYYMMDD``, dates in the names, older ones
    compressed before the node went down): every uncompressed file after the saved one."""
    f = tmp_path / "a.log"
    (tmp_path / "a.log-20261128.gz").write_bytes(b"\x1f\x8b not read")
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 12))
    for day, (a, b) in zip(("20261129", "20261130", "20261201"),
                           ((12, 14), (14, 16), (16, 18))):
        os.rename(f, tmp_path / f"a.log-{day}")
        f.write_bytes(lines(a, b))
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 8) == bodies(10, 18)
    assert read_quiet(src2, 0.2) == []
    assert src2.metrics.get("refused", 0) == 0     # the old .gz was finished before


def test_three_copytruncates_while_stopped_are_read_in_order(make_ctx, tmp_path, opened):
    """copytruncate 3 times while stopped: the saved file's rest is in its oldest copy
    (a.log.3, found by its first bytes), then a.log.2, a.log.1 and the truncated a.log."""
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 15))
    for a, b in ((15, 20), (20, 25), (25, 30)):
        for i in (2, 1):
            if (tmp_path / f"a.log.{i}").exists():
                os.rename(tmp_path / f"a.log.{i}", tmp_path / f"a.log.{i + 1}")
        shutil.copyfile(f, tmp_path / "a.log.1")
        os.truncate(f, 0)
        append(f, lines(a, b))
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 20) == bodies(10, 30)
    assert read_quiet(src2, 0.2) == []


def test_rotations_faster_than_the_checks_are_not_skipped(ctx, tmp_path, opened):
    """Three rotations between two looks at the path: the two files that never were at the
    path when it was looked at are read, in order, before the new one."""
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 10))
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 10) == bodies(0, 10)
    append(f, lines(10, 12))
    rotate_numbered(f, lines(12, 14))       # nothing polls the source meanwhile
    rotate_numbered(f, lines(14, 16))
    rotate_numbered(f, lines(16, 18))
    assert read_n(src, 8) == bodies(10, 18)
    assert read_quiet(src, 0.2) == []
    assert src.metrics.get("rotations") == 3


def test_reused_inode_with_other_first_bytes_is_read_from_its_start(make_ctx, tmp_path,
                                                                    opened):
    """The file is deleted and a new one gets its inode, with the same bytes before the
    saved offset (repeated lines) but other first bytes: read from 0, not from the offset."""
    f = tmp_path / "a.log"
    f.write_bytes(b"start A\n" + b"same\n" * 20)
    ctx = make_ctx("n1")
    src = opened(TailSource(str(f)), ctx)
    assert len(read_n(src, 21)) == 21
    commit(ctx, src)
    src.close()
    ino = f.stat().st_ino
    for _ in range(20):                         # ext4 and tmpfs hand the inode out again
        f.unlink()
        f.write_bytes(b"start B\n" + b"same\n" * 30)
        if f.stat().st_ino == ino:
            break
    else:
        pytest.skip("this file system did not reuse the inode")
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 31) == [b"start B"] + [b"same"] * 30
    assert read_quiet(src2, 0.2) == []


def test_compressed_rotation_with_unread_lines_is_counted(make_ctx, tmp_path, opened,
                                                          caplog):
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 12))
    gz = tmp_path / "a.log.1.gz"
    gz.write_bytes(gzip.compress(f.read_bytes()))   # rotated, then compressed
    f.unlink()
    later = time.time() + 5
    os.utime(gz, (later, later))                # written after the position was saved
    f.write_bytes(lines(12, 14))
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 2) == bodies(12, 14)
    assert src2.metrics.get("refused_compressed") == 1
    assert "a.log.1.gz is compressed" in caplog.text


def test_past_the_bound_of_rotated_files_the_older_ones_are_counted(make_ctx, tmp_path,
                                                                    opened, monkeypatch):
    """With MAX_ROTATED 1, only the newest rotated file is considered: the saved file is
    still found by its inode and finished, the one between is skipped and counted."""
    monkeypatch.setattr(tail_mod, "MAX_ROTATED", 1)
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 12))
    rotate_numbered(f, lines(12, 14))
    rotate_numbered(f, lines(14, 16))
    rotate_numbered(f, lines(16, 18))
    t = time.time()
    for i, name in enumerate(("a.log.3", "a.log.2", "a.log.1", "a.log")):
        os.utime(tmp_path / name, (t + i, t + i))   # distinct times, oldest first
    src2 = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src2, 6) == bodies(10, 12) + bodies(14, 18)
    assert read_quiet(src2, 0.2) == []
    assert src2.metrics.get("refused_rotated_over_limit") == 1


# ---------------------------------------------------------------- multitail, tailDir

def test_multitail(ctx, tmp_path, opened):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"a1\na2\n")
    src = opened(MultiTailSource(str(a), str(b)), ctx)
    b.write_bytes(b"b1\n")
    got = read_events(src, 3)
    assert sorted((e.attrs["tailSrcFile"], e.body) for e in got) == [
        (b"a.log", b"a1"), (b"a.log", b"a2"), (b"b.log", b"b1")]
    cp = src.checkpoint()
    assert cp["tail:" + str(a)]["offset"] == 6 and cp["tail:" + str(b)]["offset"] == 3


def _read_dir(src, n, timeout=5.0):
    return sorted((e.attrs["tailSrcFile"], e.body) for e in read_events(src, n, timeout))


def test_tail_dir(ctx, tmp_path, opened):
    d = tmp_path / "logs"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "a.log").write_bytes(b"a1\n")
    (d / "x.txt").write_bytes(b"not matched\n")
    (d / "sub" / "b.log").write_bytes(b"b1\n")
    (d / "sub" / "deeper" / "z.log").write_bytes(b"too deep\n")
    src = opened(TailDirSource(str(d), fileregex=r".*\.log", recurseDepth=1), ctx)
    assert _read_dir(src, 2) == [(b"a.log", b"a1"), (b"b.log", b"b1")]
    (d / "c.log").write_bytes(b"c1\n")                 # appears later
    (d / "sub2").mkdir()                               # a subdirectory appearing later
    (d / "sub2" / "e.log").write_bytes(b"e1\n")
    append(d / "a.log", b"a2\n")
    assert _read_dir(src, 3) == [(b"a.log", b"a2"), (b"c.log", b"c1"), (b"e.log", b"e1")]
    # a rename rotation: the renamed file is not followed as a new file
    os.rename(d / "a.log", d / "a.log.1")
    (d / "a.log").write_bytes(b"a3\n")
    assert _read_dir(src, 1) == [(b"a.log", b"a3")]
    assert _read_dir(src, 1, timeout=2 * tail_mod.SCAN_EVERY + 0.3) == []
    keys = set(src.checkpoint())
    assert {"tail:" + str(d / n) for n in ("a.log", "c.log", "sub/b.log",
                                           "sub2/e.log")} == keys


def test_tail_dir_scan_cost_grows_linearly_with_the_files(ctx, tmp_path, opened,
                                                         monkeypatch):
    """Opening a tailDir over 400 files (with look-alike names: ``f1.log`` and
    ``f1.log-x``) costs a few system calls per file, not one per file already followed
    (which made 3,000 files take 13.5 s to their first lines); and what is a rotated copy
    is still told apart."""
    n = 400
    for i in range(n):
        (tmp_path / f"f{i}.log").write_bytes(b"x\n")
        (tmp_path / f"f{i}.log-x").write_bytes(b"y\n")      # no rotated suffix: followed
    (tmp_path / "f0.log.1").write_bytes(b"old\n")            # a rotated copy: not followed
    calls = [0]
    real_fstat = os.fstat

    def counting_fstat(fd):
        calls[0] += 1
        return real_fstat(fd)
    monkeypatch.setattr(tail_mod.os, "fstat", counting_fstat)
    src = opened(TailDirSource(str(tmp_path)), ctx)
    assert calls[0] < 10 * 2 * n
    monkeypatch.undo()
    got = _read_dir(src, 2 * n)
    assert sorted(body for _, body in got) == [b"x"] * n + [b"y"] * n
    assert read_quiet(src, 0.2) == []


def test_tail_dir_depth_zero_and_start_from_end(ctx, tmp_path, opened):
    d = tmp_path / "logs"
    (d / "sub").mkdir(parents=True)
    (d / "a.log").write_bytes(b"old\n")
    (d / "sub" / "b.log").write_bytes(b"b1\n")
    src = opened(TailDirSource(str(d), ".*", True), ctx)
    append(d / "a.log", b"new\n")
    (d / "c.log").write_bytes(b"c1\n")          # new files are read from their start
    assert _read_dir(src, 2) == [(b"a.log", b"new"), (b"c.log", b"c1")]
    assert _read_dir(src, 1, timeout=2 * tail_mod.SCAN_EVERY + 0.3) == []


def test_tail_dir_resumes_per_file(make_ctx, tmp_path, opened):
    d = tmp_path / "logs"
    d.mkdir()
    (d / "a.log").write_bytes(b"a1\n")
    (d / "b.log").write_bytes(b"b1\n")
    ctx = make_ctx("n1")
    src = opened(TailDirSource(str(d)), ctx)
    assert _read_dir(src, 2) == [(b"a.log", b"a1"), (b"b.log", b"b1")]
    commit(ctx, src)
    src.close()
    append(d / "a.log", b"a2\n")
    src2 = opened(TailDirSource(str(d)), make_ctx("n1"))
    assert _read_dir(src2, 1) == [(b"a.log", b"a2")]
    assert _read_dir(src2, 1, timeout=0.3) == []


def test_tail_dir_and_multitail_read_every_rotation_made_while_stopped(make_ctx, tmp_path,
                                                                       opened):
    d = tmp_path / "logs"
    d.mkdir()
    a, b = d / "a.log", d / "b.log"
    for make in (lambda: TailDirSource(str(d), r".*\.log"),
                 lambda: MultiTailSource(str(a), str(b))):
        for p in d.iterdir():
            p.unlink()
        a.write_bytes(b"a0\n")
        b.write_bytes(b"b0\n")
        ctx = make_ctx("dir" if isinstance(make(), TailDirSource) else "multi")
        src = opened(make(), ctx)
        assert _read_dir(src, 2) == [(b"a.log", b"a0"), (b"b.log", b"b0")]
        commit(ctx, src)
        src.close()
        append(a, b"a1\n")
        for i in (2, 3, 4):
            rotate_numbered(a, b"a%d\n" % i)
        rotate_numbered(b, b"b1\n")
        src2 = opened(make(), make_ctx(ctx.logical_name))
        got = [(e.attrs["tailSrcFile"], e.body) for e in read_events(src2, 6)]
        assert [x for x in got if x[0] == b"a.log"] == [(b"a.log", b"a%d" % i)
                                                       for i in range(1, 5)]
        assert [x for x in got if x[0] == b"b.log"] == [(b"b.log", b"b1")]
        assert _read_dir(src2, 1, timeout=2 * tail_mod.SCAN_EVERY + 0.3) == []
        src2.close()


def test_tail_dir_finishes_a_file_rotated_away_while_stopped(make_ctx, tmp_path, opened):
    """Rotated while the node was stopped and not created again yet: the rotated file is
    finished from the saved position, not followed as a new file from its start."""
    d = tmp_path / "logs"
    d.mkdir()
    a = d / "a.log"
    a.write_bytes(b"a0\n")
    ctx = make_ctx("n1")
    src = opened(TailDirSource(str(d)), ctx)
    assert _read_dir(src, 1) == [(b"a.log", b"a0")]
    commit(ctx, src)
    src.close()
    append(a, b"a1\n")
    os.rename(a, d / "a.log.1")
    src2 = opened(TailDirSource(str(d)), make_ctx("n1"))
    assert _read_dir(src2, 1) == [(b"a.log", b"a1")]
    assert _read_dir(src2, 1, timeout=2 * tail_mod.SCAN_EVERY + 0.3) == []
    a.write_bytes(b"a2\n")                      # created again: followed on
    assert _read_dir(src2, 1) == [(b"a.log", b"a2")]


def test_rotated_files_are_listed_in_rotation_order(tmp_path):
    from flume_og.node.sources._rotation import rotated_files
    for name in ("a.log", "a.log.2", "a.log.10", "a.log.1", "a.log.3.gz", "a.log.bak",
                 "a.logger", "b.log.1"):
        (tmp_path / name).write_bytes(b"x\n")
    got = [(os.path.basename(r.path), r.compressed)
           for r in rotated_files(str(tmp_path), "a.log")]
    assert got == [("a.log.10", False), ("a.log.3.gz", True), ("a.log.2", False),
                   ("a.log.1", False)]
    d = tmp_path / "daily"
    d.mkdir()
    for name in ("a.log-20261203", "a.log-20261129", "a.log-20261130.gz"):
        (d / name).write_bytes(b"x\n")
    assert [os.path.basename(r.path) for r in rotated_files(str(d), "a.log")] == [
        "a.log-20261129", "a.log-20261130.gz", "a.log-20261203"]
    e = tmp_path / "stamps"
    e.mkdir()
    for name in ("a.log.2026-12-02", "a.log.2026-11-30", "b.log-1764720000",
                 "b.log-1764633600.gz"):
        (e / name).write_bytes(b"x\n")
    assert [os.path.basename(r.path) for r in rotated_files(str(e), "a.log")] == [
        "a.log.2026-11-30", "a.log.2026-12-02"]
    assert [os.path.basename(r.path) for r in rotated_files(str(e), "b.log")] == [
        "b.log-1764633600.gz", "b.log-1764720000"]
    m = tmp_path / "mixed"                      # two schemes: by modification time
    m.mkdir()
    t = time.time()
    for i, name in enumerate(("a.log-20261201", "a.log.1")):
        (m / name).write_bytes(b"x\n")
        os.utime(m / name, (t + i, t + i))
    assert [os.path.basename(r.path) for r in rotated_files(str(m), "a.log")] == [
        "a.log-20261201", "a.log.1"]


def _roll_over(d: Path, name: str) -> None:
    """What RotatingFileHandler.doRollover does: every numbered file one up, the live file
    to .1, a new live file."""
    k = max(int(p.name[len(name) + 1:]) for p in d.glob(name + ".*"))
    for i in range(k, 0, -1):
        os.rename(d / f"{name}.{i}", d / f"{name}.{i + 1}")
    os.rename(d / name, d / f"{name}.1")
    (d / name).write_bytes(b"live\n")


@pytest.mark.parametrize("after_listing", [1, 2, 3])
def test_a_rotation_while_files_are_listed_leaves_none_out(tmp_path, monkeypatch,
                                                          after_listing):
    """Every numbered file is renamed by a rotation that comes between a listing and the
    look at each file it lists: every file still comes once, in rotation order."""
    from flume_og.node.sources import _rotation
    for i in range(1, 9):
        (tmp_path / f"app.log.{i}").write_bytes(b"%d\n" % i)
    (tmp_path / "app.log").write_bytes(b"0\n")
    names, calls = _rotation._names, []

    def listing_then_rotation(directory, name):
        out = names(directory, name)
        calls.append(1)
        if len(calls) == after_listing:
            _roll_over(tmp_path, "app.log")      # the listing is stale at once
        return out
    monkeypatch.setattr(_rotation, "_names", listing_then_rotation)
    got = _rotation.rotated_files(str(tmp_path), "app.log")
    now = sorted(tmp_path.glob("app.log.*"), key=lambda p: -int(p.suffix[1:]))  # oldest 1st
    assert len(now) == (9 if calls[after_listing - 1:] else 8)
    assert [r.ino for r in got] == [p.stat().st_ino for p in now]
    # each described as it is now, under the name it has now
    assert [(r.path, r.dev, r.mtime_ns) for r in got] == \
        [(str(p), p.stat().st_dev, p.stat().st_mtime_ns) for p in now]


@pytest.mark.parametrize("after_stat", range(1, 11))
def test_a_rotation_in_the_middle_of_the_walk_leaves_none_out(tmp_path, monkeypatch,
                                                             after_stat):
    """A rotation (every numbered file one up, from the highest down) between any two of
    the looks at the numbered names: every file there before it still comes once, in
    rotation order (the file it adds may come too, as the newest)."""
    from flume_og.node.sources import _rotation
    for i in range(1, 9):
        (tmp_path / f"app.log.{i}").write_bytes(b"%d\n" % i)
    (tmp_path / "app.log").write_bytes(b"0\n")
    before = [(tmp_path / f"app.log.{i}").stat().st_ino for i in range(8, 0, -1)]
    live = (tmp_path / "app.log").stat().st_ino
    lstat, calls = _rotation._lstat, []

    def rotation_between_looks(path):
        calls.append(path)
        if len(calls) == after_stat:
            _roll_over(tmp_path, "app.log")
        return lstat(path)
    monkeypatch.setattr(_rotation, "_lstat", rotation_between_looks)
    got = [r.ino for r in _rotation.rotated_files(str(tmp_path), "app.log")]
    assert got in (before, before + [live])
    assert len(calls) >= after_stat          # the rotation did come during the walk


def _rotating_writer(f: Path, backups: int):
    """``(logger, handler)``: Python's RotatingFileHandler on ``f``, rotating every 2,000
    bytes and keeping ``backups`` rotated files, writing bare messages."""
    import logging.handlers
    handler = logging.handlers.RotatingFileHandler(f, maxBytes=2000, backupCount=backups)
    handler.setFormatter(logging.Formatter("%(message)s"))
    writer = logging.getLogger(f"rotating-writer-{id(f)}-{backups}")
    writer.addHandler(handler)
    writer.propagate = False
    writer.setLevel(logging.INFO)
    return writer, handler


def test_rotation_storm_in_a_directory_of_many_other_files(ctx, tmp_path, opened):
    """20,000 unrelated files next to the followed one (a shared log directory): the
    listings of rotated files cost one pass over them, and every line comes once."""
    for i in range(20_000):
        (tmp_path / f"other-{i:05d}.log").touch()
    f = tmp_path / "app.log"
    writer, handler = _rotating_writer(f, 1000)
    writer.info("counter %07d", 0)
    src = opened(TailSource(str(f)), ctx)
    n = 8_000

    def write():
        for i in range(1, n):
            writer.info("counter %07d", i)
    t = threading.Thread(target=write, daemon=True)
    t.start()
    got = read_n(src, n, timeout=60)
    t.join(10)
    handler.close()
    assert got == [b"counter %07d" % i for i in range(n)]


@pytest.mark.parametrize("listings", [1, 3])
@pytest.mark.parametrize("before", [0, 1])
def test_rotations_during_the_listing_neither_lose_nor_reorder_a_file(ctx, tmp_path, opened,
                                                                    monkeypatch, before,
                                                                    listings):
    """The tail, at the end of a.log (L), finds a new file at the path (N) with one it never
    saw (M, at .1) in between. ``before`` rotations come between opening N and the first
    look of the walk over the numbered names, and two more right after that look. So a
    file is met at .1, then the next one two places up, as if it were older:
    before=0: M is met at .1, N at .2 after it (M was lost: it looked newer than N);
    before=1: N is met at .1, the file after it at .2 (that file was read before N).
    So it goes for the first ``listings`` listings: one is listed again, and when every
    listing saw a rotation (3), the files after N are told by modification time.
    Every file is read, in writing order."""
    from flume_og.node.sources import _rotation
    f = tmp_path / "app.log"
    f.write_bytes(lines(0, 10))
    stamp = [time.time_ns() - 100 * 10**9]

    def written(data=None):
        if data is not None:
            rotate_numbered(f, data)
        stamp[0] += 10**9             # distinct modification times, in writing order
        os.utime(f, ns=(stamp[0], stamp[0]))
    written()
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 10) == bodies(0, 10)
    written(lines(10, 20))            # M
    written(lines(20, 30))            # N
    lstat, looks, end = _rotation._lstat, [], [30]

    def rotations(k):
        for _ in range(k):
            written(lines(end[0], end[0] + 10))
            end[0] += 10

    disturbed = [0]

    def rotations_around_the_first_look(path):
        first = path.endswith("app.log.1") and disturbed[0] < listings
        if first:
            rotations(before)
        got = lstat(path)
        looks.append(path)
        if first:
            disturbed[0] += 1
            rotations(2)
        return got
    monkeypatch.setattr(_rotation, "_lstat", rotations_around_the_first_look)
    n = 20 + 10 * (before + 2) * listings
    assert read_n(src, n) == bodies(10, 10 + n)
    assert looks[0].endswith("app.log.1") and disturbed[0] == listings


@pytest.mark.parametrize("create", [True, False])
def test_a_missed_file_written_after_the_new_one_is_not_lost_to_a_rotation_during_the_listing(
        ctx, tmp_path, opened, monkeypatch, create):
    """logrotate with a writer that reopens late (nginx before USR1): M, rotated to .1, is
    still written after the new file N was created at the path, so N (still empty) is
    older by modification time than M's last write. The tail, at the end of L, finds N at
    the path with M never seen in between, and N is rotated again during the listing.
    create=True (logrotate ``create``): a new file is at the path after that rotation.
    create=False (``nocreate``): nothing is, at the end of that listing and of the next,
    until the writer makes it; nothing left the path during the next listing, so its
    order holds. Either way M comes before N in rotation order: it is read, then what
    follows."""
    from flume_og.node.sources import _rotation
    f = tmp_path / "app.log"
    f.write_bytes(lines(0, 10))
    stamp = [time.time_ns() - 100 * 10**9]

    def written(path=f):
        stamp[0] += 10**9             # distinct modification times, in writing order
        os.utime(path, ns=(stamp[0], stamp[0]))
    written()
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 10) == bodies(0, 10)
    rotate_numbered(f, lines(10, 20))  # M
    written()
    rotate_numbered(f, b"")           # N, created empty
    written()
    append(tmp_path / "app.log.1", lines(20, 25))   # M, written late
    written(tmp_path / "app.log.1")
    lstat, looks = _rotation._lstat, []

    def rotation_after_the_first_look(path):
        got = lstat(path)
        looks.append(path)
        if len(looks) == 1:
            rotate_numbered(f, lines(25, 35) if create else b"")
            if create:
                written()
            else:
                f.unlink()            # nocreate: nothing at the path for now
        return got
    monkeypatch.setattr(_rotation, "_lstat", rotation_after_the_first_look)
    if create:
        assert read_n(src, 25) == bodies(10, 35)
    else:
        assert read_n(src, 15) == bodies(10, 25)
        f.write_bytes(lines(25, 35))
        assert read_n(src, 10) == bodies(25, 35)
    assert looks[0].endswith("app.log.1")


def rotated_twice_after_reading(ctx, opened, tmp_path) -> TailSource:
    """A tail that read lines 0-9 of ``a.log``, which was then rotated twice before the
    tail looked again: ``a.log.2`` (the file read), ``a.log.1`` (lines 10-11, never seen
    at the path), ``a.log`` (lines 12-13)."""
    f = tmp_path / "a.log"
    f.write_bytes(lines(0, 10))
    src = opened(TailSource(str(f)), ctx)
    assert read_n(src, 10) == bodies(0, 10)
    os.rename(f, tmp_path / "a.log.1")
    f.write_bytes(lines(10, 12))
    os.rename(tmp_path / "a.log.1", tmp_path / "a.log.2")
    os.rename(f, tmp_path / "a.log.1")
    f.write_bytes(lines(12, 14))
    return src


def test_files_rotated_in_the_same_clock_tick_as_a_deleted_one_are_read(ctx, tmp_path,
                                                                       opened):
    """The file being read is rotated twice and then deleted (it left the rotated names)
    while the file after it was written in the same tick of the file system's clock
    (modification times are coarse: a few milliseconds): the file after it is still
    read, by modification time, before the live one."""
    src = rotated_twice_after_reading(ctx, opened, tmp_path)
    tick = (tmp_path / "a.log.2").stat().st_mtime_ns
    os.utime(tmp_path / "a.log.1", ns=(tick, tick))
    os.unlink(tmp_path / "a.log.2")       # still open: read to its end
    assert read_n(src, 4) == bodies(10, 14)


def test_a_rotated_file_that_cannot_be_opened_holds_the_tail_back_without_leaking(
        ctx, tmp_path, opened, monkeypatch):
    """A file rotated twice between two checks cannot be opened (permission denied):
    the tail counts the error, keeps no descriptor of each look, reads nothing past it,
    and reads everything in order once it can be opened."""
    src = rotated_twice_after_reading(ctx, opened, tmp_path)
    real_open = tail_mod._open

    def denied(path):
        if path.endswith("a.log.1"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path)
    monkeypatch.setattr(tail_mod, "_open", denied)
    fds = len(os.listdir("/proc/self/fd"))
    assert read_quiet(src, 0.5) == []
    assert src.metrics.get("errors", 0) > 0
    assert len(os.listdir("/proc/self/fd")) <= fds + 1
    monkeypatch.undo()
    assert read_n(src, 4) == bodies(10, 14)


def test_a_fifo_under_a_rotated_name_is_passed_over(make_ctx, tmp_path, opened):
    """A FIFO named like a rotated file (or put at the followed path) while the node was
    stopped: opening it would wait for a writer for ever; it is not a file to read."""
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 12))
    os.rename(f, tmp_path / "a.log.2")
    os.mkfifo(tmp_path / "a.log.1")
    f.write_bytes(lines(12, 14))
    src = opened(TailSource(str(f)), make_ctx("n1"))
    assert read_n(src, 4) == bodies(10, 14)
    os.rename(f, tmp_path / "a.log.3")
    os.mkfifo(f)
    assert read_quiet(src, 0.3) == []


def test_busy_writer_rotating_faster_than_the_checks(ctx, tmp_path, opened):
    """Python's RotatingFileHandler rotating every 2,000 bytes (about 100 rotations, many
    between two looks at the path, renames racing the directory listings): every line
    once, in order."""
    n = 12_000
    f = tmp_path / "app.log"
    writer, handler = _rotating_writer(f, 1000)
    writer.info("counter %07d", 0)
    src = opened(TailSource(str(f)), ctx)

    def write():
        for i in range(1, n):
            writer.info("counter %07d", i)
    t = threading.Thread(target=write, daemon=True)
    t.start()
    got = read_n(src, n, timeout=60)
    t.join(10)
    handler.close()
    assert len(list(tmp_path.glob("app.log.*"))) > 80
    assert got == [b"counter %07d" % i for i in range(n)]
    assert read_quiet(src, 0.2) == []


def test_rotation_storm_with_hundreds_of_rotated_files(ctx, tmp_path, opened):
    """A RotatingFileHandler keeping 300 rotated files, all there from the start, renaming
    every one of them at each of its ~200 rotations while the tail lists them: every line
    once, in order, and a checkpoint (which waits for the source's lock) never waits
    behind the listings for long."""
    n = int(os.environ.get("STORM_N", 25_000))
    f = tmp_path / "app.log"
    for i in range(1, 301):
        (tmp_path / f"app.log.{i}").write_bytes(b"old %07d\n" % i * 125)
    writer, handler = _rotating_writer(f, 300)
    writer.info("counter %07d", 0)
    src = opened(TailSource(str(f)), ctx)
    # without a saved position the tail starts at the live file: the backups are not read
    assert read_n(src, 1, timeout=10) == [b"counter 0000000"]
    waits: list[float] = []
    stop = threading.Event()

    def checkpoints():
        while not stop.is_set():
            t0 = time.monotonic()
            src.checkpoint()
            waits.append(time.monotonic() - t0)
            stop.wait(0.01)                  # pacing: a checkpoint every 10 ms

    def write():
        for i in range(1, n):
            writer.info("counter %07d", i)
    threads = [threading.Thread(target=write, daemon=True),
               threading.Thread(target=checkpoints, daemon=True)]
    for t in threads:
        t.start()
    got = read_n(src, n - 1, timeout=120)
    stop.set()
    for t in threads:
        t.join(10)
    handler.close()
    missing = sorted(set(range(1, n)) - {int(b.split()[1]) for b in got})
    assert not missing, f"{len(missing)} lines lost, first {missing[:5]}"
    assert got == [b"counter %07d" % i for i in range(1, n)]
    assert max(waits) < 2.0, f"a checkpoint waited {max(waits):.1f} s"


@pytest.mark.parametrize("rotations", [1, 2])
def test_rotations_while_a_restart_lists_the_files_are_not_skipped(make_ctx, tmp_path,
                                                                   opened, monkeypatch,
                                                                   rotations):
    """The file rotates once while stopped, then again (once or twice) between the
    restart's listing of the rotated files and its opening of the live file (a writer in
    another process rotating many times a second): the files rotated in between are read
    too, in order, each line once. (Before: a.log.1 of the restart's listing was read,
    then the live file: the file(s) between them were skipped.)"""
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 12))
    rotate_numbered(f, lines(12, 14))
    listing, done = tail_mod.rotated_files, []

    def rotating_after_listing(directory, name):
        out = listing(directory, name)
        if not done:
            done.append(1)
            for k in range(rotations):
                append(f, lines(14 + 2 * k, 15 + 2 * k))
                rotate_numbered(f, lines(15 + 2 * k, 16 + 2 * k))
        return out
    monkeypatch.setattr(tail_mod, "rotated_files", rotating_after_listing)
    src = opened(TailSource(str(f)), make_ctx("n1"))
    n = 14 + 2 * rotations
    assert read_n(src, n - 10) == bodies(10, n)
    assert read_quiet(src, 0.2) == []


def test_a_high_or_six_digit_suffix_is_not_walked_to_and_dates_are_dates(tmp_path):
    """A rotated file named with a large number (``app.log.9999``, ``app.log.99999``: a
    PID, a counter) does not make every listing look at every number below it (before:
    one stat per number, seconds per rotation with the source's lock held;
    ``app.log.999999`` alone: 22 s), and monthly or
    two-digit-year date names (``app.log.202612``, ``app.log-261203``) are dates, newer
    when higher (before: indexes, read newest first)."""
    from flume_og.node.sources import _rotation
    (tmp_path / "app.log.1").write_bytes(b"1\n")
    (tmp_path / "app.log.9999").write_bytes(b"x\n")
    (tmp_path / "app.log.99999").write_bytes(b"x\n")
    looks = []
    lstat = _rotation._lstat

    def counted(path):
        looks.append(path)
        return lstat(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_rotation, "_lstat", counted)
        got = _rotation.rotated_files(str(tmp_path), "app.log")
    assert sorted(os.path.basename(r.path) for r in got) == \
        ["app.log.1", "app.log.9999", "app.log.99999"]
    assert len(looks) < 100
    for names in (["app.log.202610", "app.log.202611", "app.log.202612"],
                  ["app.log-261201", "app.log-261202", "app.log-261203"]):
        d = tmp_path / names[0]
        d.mkdir()
        t = time.time()
        for i, n in enumerate(reversed(names)):    # modification times disagree
            (d / n).write_bytes(b"x\n")
            os.utime(d / n, (t + i, t + i))
        assert [os.path.basename(r.path)
                for r in _rotation.rotated_files(str(d), "app.log")] == names


def test_a_socket_under_the_followed_name_is_passed_over(make_ctx, tmp_path, opened):
    """A UNIX socket bound at the followed path while the node was stopped (opening one
    fails with ENXIO): the rotated file is still finished, the socket is no file to read
    (before: the source could not open at all)."""
    import socket
    f = tmp_path / "a.log"
    read_commit_and_stop(make_ctx, opened, f)
    append(f, lines(10, 12))
    os.rename(f, tmp_path / "a.log.1")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(f))
        src = opened(TailSource(str(f)), make_ctx("n1"))
        assert read_n(src, 2) == bodies(10, 12)
        assert read_quiet(src, 0.2) == []
