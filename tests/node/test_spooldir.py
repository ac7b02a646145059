"""spoolDir on real directories: complete ingestion, renaming after commit, restarts."""
from __future__ import annotations

import os

import pytest

from flume_og.node.checkpoint import Checkpoint
from flume_og.node.errors import SpecError
from flume_og.node.builder import build_source
from flume_og.node.sources.spooldir import SpoolDirSource
from flume_og.node.spec import parse_source
from tests.node.reading import commit, poll_until, read_n, read_quiet


def lines(a: int, b: int, tag: bytes = b"l") -> bytes:
    return b"".join(b"%s %05d\n" % (tag, i) for i in range(a, b))


def bodies(a: int, b: int, tag: bytes = b"l") -> list[bytes]:
    return [b"%s %05d" % (tag, i) for i in range(a, b)]


def drop(d, name: str, data: bytes, mtime: int | None = None) -> None:
    """Write a file under a hidden name and rename it in, as a producer should."""
    tmp = d / ("." + name + ".tmp")
    tmp.write_bytes(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, d / name)


def test_happy_path_renames_only_after_commit(ctx, tmp_path, opened):
    d = tmp_path / "spool"
    d.mkdir()
    drop(d, "a.csv", lines(0, 3), mtime=1_000)
    drop(d, "b.csv", lines(3, 5) + b"no newline", mtime=2_000)
    (d / ".hidden").write_bytes(b"hidden\n")
    (d / "old.csv.COMPLETED").write_bytes(b"done before\n")
    (d / "skip.txt").write_bytes(b"not matched\n")
    src = opened(SpoolDirSource(str(d), r".*\.csv"), ctx)
    assert read_n(src, 6) == bodies(0, 5) + [b"no newline"]
    # Read, but not durable yet: nothing renamed.
    assert read_quiet(src, 0.3) == []
    assert (d / "a.csv").exists() and (d / "b.csv").exists()
    cp = src.checkpoint()
    assert cp["spool:" + str(d / "a.csv")]["done"] is True
    assert cp["spool:" + str(d / "b.csv")]["done"] is True
    commit(ctx, src)
    assert poll_until(src, lambda: not (d / "b.csv").exists(), what="b.csv renamed") == []
    assert sorted(p.name for p in d.iterdir()) == [
        ".hidden", "a.csv.COMPLETED", "b.csv.COMPLETED", "old.csv.COMPLETED", "skip.txt"]
    assert ctx.store.get("spool:" + str(d / "a.csv")) is None     # forgotten once renamed
    assert src.checkpoint() == {}
    # A file dropped later is picked up too.
    drop(d, "c.csv", lines(5, 7))
    assert read_n(src, 2) == bodies(5, 7)
    commit(ctx, src)
    assert poll_until(src, lambda: (d / "c.csv.COMPLETED").exists(),
                      what="c.csv renamed") == []


def test_restart_mid_file_neither_loses_nor_repeats(make_ctx, tmp_path, opened):
    d = tmp_path / "spool"
    d.mkdir()
    drop(d, "big.log", lines(0, 10_000), mtime=1_000)
    drop(d, "next.log", lines(0, 5, b"n"), mtime=2_000)
    ctx = make_ctx("n1")
    src = opened(SpoolDirSource(str(d)), ctx)
    first = src.next_batch(1)
    assert 0 < len(first) < 10_000
    commit(ctx, src)
    assert src.next_batch(1)            # read but never committed: read again later
    src.close()
    assert (d / "big.log").exists()
    ctx2 = make_ctx("n1")
    src2 = opened(SpoolDirSource(str(d)), ctx2)
    rest = read_n(src2, 10_000 - len(first) + 5)
    assert [e.body for e in first] + rest == bodies(0, 10_000) + bodies(0, 5, b"n")
    commit(ctx2, src2)
    assert poll_until(src2, lambda: not (d / "next.log").exists(),
                      what="next.log renamed") == []
    assert sorted(p.name for p in d.iterdir()) == ["big.log.COMPLETED", "next.log.COMPLETED"]


def test_done_committed_before_stop_is_renamed_not_reread(make_ctx, tmp_path, opened):
    d = tmp_path / "spool"
    d.mkdir()
    drop(d, "a.log", lines(0, 4))
    ctx = make_ctx("n1")
    src = opened(SpoolDirSource(str(d)), ctx)
    assert read_n(src, 4) == bodies(0, 4)
    cp = src.checkpoint()
    src.close()                         # stopped before it saw the commit
    ctx.store.commit([Checkpoint(cp)])
    assert (d / "a.log").exists()
    src2 = opened(SpoolDirSource(str(d)), make_ctx("n1"))
    assert (d / "a.log.COMPLETED").exists()     # renamed at open
    assert read_quiet(src2, 0.3) == []


def test_offset_at_end_counts_as_done(make_ctx, tmp_path, opened):
    """A file whose committed offset is its end (finished by a batch after which no
    position was recorded) is complete: renamed at open, not read again."""
    d = tmp_path / "spool"
    d.mkdir()
    drop(d, "a.log", lines(0, 4))
    ctx = make_ctx("n1")
    st = (d / "a.log").stat()
    ctx.store.commit([], updates={"spool:" + str(d / "a.log"): {
        "ino": st.st_ino, "mtime": st.st_mtime_ns, "offset": st.st_size,
        "fp": lines(0, 4)[-64:].hex(), "done": False}})
    src = opened(SpoolDirSource(str(d)), make_ctx("n1"))
    assert read_quiet(src, 0.3) == []
    assert (d / "a.log.COMPLETED").exists()


def test_replaced_file_with_stale_record_is_read_whole(make_ctx, tmp_path, opened):
    d = tmp_path / "spool"
    d.mkdir()
    drop(d, "a.log", lines(0, 4))
    ctx = make_ctx("n1")
    ctx.store.commit([], updates={"spool:" + str(d / "a.log"): {
        "ino": (d / "a.log").stat().st_ino, "mtime": 1, "offset": 10,
        "fp": b"something else".hex(), "done": False}})
    src = opened(SpoolDirSource(str(d)), make_ctx("n1"))
    assert read_n(src, 4) == bodies(0, 4)


def test_empty_file_is_completed(ctx, tmp_path, opened):
    d = tmp_path / "spool"
    d.mkdir()
    drop(d, "empty.log", b"")
    src = opened(SpoolDirSource(str(d)), ctx)
    assert poll_until(src, lambda: (d / "empty.log.COMPLETED").exists(),
                      what="empty.log renamed") == []
    assert (d / "empty.log.COMPLETED").exists()


def test_directory_appearing_later(ctx, tmp_path, opened):
    d = tmp_path / "later"
    src = opened(SpoolDirSource(str(d)), ctx)
    assert src.next_batch(0.1) == []
    d.mkdir()
    drop(d, "a.log", b"x\n")
    assert read_n(src, 1) == [b"x"]


def test_spec_building():
    src = build_source(parse_source('spoolDir("/tmp/s", ".*\\\\.log", completedSuffix=".done")'))
    assert isinstance(src, SpoolDirSource) and src.suffix == ".done"
    with pytest.raises(SpecError):
        build_source(parse_source('spoolDir("/tmp/s", "(")'))
