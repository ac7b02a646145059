"""The segmented durable log under the WAL and the diskFailover spool: framing, fsync
policy, the directory lock, torn-tail repair, failed writes, rotation and open files."""
from __future__ import annotations

import errno
import logging
import os

import pytest

from flume_og.node import segment_log
from flume_og.node.segment_log import Framing, LogError, LogInUse, SegmentLog

FRAMING = Framing("QI", {b"RECD": False, b"RECT": True})
log = logging.getLogger("test.segment_log")


def make(d, **kw) -> SegmentLog:
    args = dict(what="the test log", suffix=".seg", digits=6, durable=True,
                segment_bytes=1 << 20, log=log)
    args.update(kw)
    return SegmentLog(d, FRAMING, **args)


def append(lg: SegmentLog, payload: bytes, seq: int = 1, trailer: bytes | None = None):
    seg = lg.writable()
    rec = FRAMING.pack(b"RECD" if trailer is None else b"RECT", (seq, 1), payload, trailer)
    lg.write(seg, rec, sum(map(len, rec)))
    return seg


def records(lg: SegmentLog, seg, **kw) -> list:
    out = []
    lg.scan(seg, lambda r: out.append(r), **kw)
    return out


def test_records_read_back_with_fields_payload_and_trailer(tmp_path):
    lg = make(tmp_path)
    lg.open()
    append(lg, b"one", 7)
    seg = append(lg, b"two", 8, trailer=b'{"p":1}')
    lg.close()
    lg = make(tmp_path)
    [seg] = lg.open()
    got = records(lg, seg)
    assert [(r.magic, r.fields, r.payload, r.trailer) for r in got] == [
        (b"RECD", (7, 1), b"one", None), (b"RECT", (8, 1), b"two", b'{"p":1}')]
    assert got[1].offset == got[0].size and seg.size == got[0].size + got[1].size
    assert lg.corrupt == 0
    lg.close()


@pytest.mark.parametrize("damage,reason", [       # of the last record, from ``good`` on
    (lambda b, good: b[:-2], "record trailer torn (longer than the file)"),
    (lambda b, good: b[:-6], "record trailer torn (longer than the file)"),
    (lambda b, good: b[:-14], "record longer than the file (torn write)"),
    (lambda b, good: b[:good + 5], "torn record header"),
    (lambda b, good: b[:good] + b"\0" * 40, "bad record magic"),
])
def test_a_torn_tail_is_cut_off_and_reported_as_a_warning(tmp_path, caplog, damage, reason):
    lg = make(tmp_path)
    lg.open()
    append(lg, b"kept")
    seg = append(lg, b"torn", 2, trailer=b"tail")
    good = seg.size - (FRAMING.head.size + 4 + 8 + 4)
    lg.close()
    seg.path.write_bytes(damage(seg.path.read_bytes(), good))
    lg = make(tmp_path)
    [seg] = lg.open()
    with caplog.at_level(logging.WARNING, logger=log.name):
        got = records(lg, seg, last=True)
    assert [r.payload for r in got] == [b"kept"]
    assert seg.size == os.path.getsize(seg.path) == good
    assert lg.corrupt == 1 and lg.truncated_bytes > 0
    [rec] = [r for r in caplog.records if r.name == log.name]
    assert rec.levelno == logging.WARNING and rec.reason == reason
    assert "torn record" in rec.getMessage()
    lg.close()


def test_damage_before_the_newest_segment_is_an_error_and_checksums_are_checked(
        tmp_path, caplog):
    lg = make(tmp_path, segment_bytes=1)          # one record per segment
    lg.open()
    first = append(lg, b"payload-1")
    append(lg, b"payload-2", 2)
    lg.close()
    data = bytearray(first.path.read_bytes())
    data[-1] ^= 0xFF
    first.path.write_bytes(bytes(data))
    lg = make(tmp_path, segment_bytes=1)
    a, b = lg.open()
    with caplog.at_level(logging.ERROR, logger=log.name):
        assert records(lg, a) == []
        assert [r.payload for r in records(lg, b, last=True)] == [b"payload-2"]
    [rec] = [r for r in caplog.records if r.name == log.name]
    assert rec.levelno == logging.ERROR and rec.reason == "record checksum mismatch"
    # read alone, a record whose framing holds is returned with its checksum failure
    lg.close()
    lg = make(tmp_path / "other")
    lg.open()
    seg = append(lg, b"x" * 10)
    with open(seg.path, "r+b") as f:
        f.seek(FRAMING.head.size)
        f.write(b"y")
    rec, bad = FRAMING.read(lg.fd(seg), 0, seg.size)
    assert bad == "record checksum mismatch" and rec.size == seg.size
    lg.close()


def test_an_owner_check_refusing_a_record_ends_the_segment(tmp_path):
    lg = make(tmp_path)
    lg.open()
    for seq in (1, 2, 3):
        seg = append(lg, b"r", seq)
    lg.close()
    lg = make(tmp_path)
    [seg] = lg.open()
    got = []
    lg.scan(seg, lambda r: "out of order" if r.fields[0] == 2 else got.append(r))
    assert [r.fields[0] for r in got] == [1] and lg.corrupt == 1
    assert seg.size == got[0].size
    lg.close()


@pytest.mark.parametrize("durable,syncs", [(True, 2), (False, 0)])
def test_fsync_policy(tmp_path, monkeypatch, durable, syncs):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(segment_log.os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    lg = make(tmp_path, durable=durable)
    lg.open()
    append(lg, b"a")
    append(lg, b"b", 2)
    assert len(calls) == syncs                  # one per write when durable, else none
    lg.close()


def test_one_writer_per_directory(tmp_path):
    lg = make(tmp_path)
    lg.open()
    with pytest.raises(LogInUse, match="the test log .* is in use by another writer"):
        make(tmp_path).open()
    lg.close()
    again = make(tmp_path)
    again.open()
    again.close()


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    lg = make(tmp_path, durable=False)
    lg.open()
    seg = append(lg, b"before")
    size = seg.size

    def torn_writev(fd, bufs):                 # half a record reaches the file, then ENOSPC
        os.write(fd, bufs[0][:10])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(segment_log.os, "writev", torn_writev)
    with pytest.raises(LogError, match="cannot write the test log"):
        append(lg, b"lost", 2)
    monkeypatch.undo()
    assert seg.size == size == os.path.getsize(seg.path)
    append(lg, b"after", 3)
    lg.close()
    lg = make(tmp_path)
    [seg] = lg.open()
    assert [r.payload for r in records(lg, seg, last=True)] == [b"before", b"after"]
    assert lg.corrupt == 0
    lg.close()


def test_rotation_numbers_and_open_files(tmp_path):
    lg = make(tmp_path, durable=False, segment_bytes=1, keep_open=False)
    lg.open()
    segs = [append(lg, b"r", i) for i in range(20)]
    assert [s.number for s in segs] == list(range(20))
    assert all(s.sealed for s in segs[:-1]) and not segs[-1].sealed
    assert sum(s.fd is not None for s in lg.segments) == 1     # only the one written
    assert sorted(p.name for p in tmp_path.glob("*.seg"))[:2] == ["seg-000000.seg",
                                                                  "seg-000001.seg"]
    lg.remove(segs[0])
    assert not segs[0].path.exists() and lg.segments[0] is segs[1]
    new = lg.writable(100)                                     # the last one is full
    assert new.number == 100 and segs[-1].sealed and segs[-1].fd is None
    lg.close()
    (tmp_path / "seg-x.seg").write_bytes(b"")                  # not a segment's name
    lg = make(tmp_path, keep_open=False)
    assert [s.number for s in lg.open()] == list(range(1, 20)) + [100]
    assert lg.next_number == 101
    lg.close()


def test_state_files_are_rewritten_in_place_and_durably(tmp_path, monkeypatch):
    synced = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)
        monkeypatch.setattr(segment_log.os, name,
                            lambda fd, real=real, name=name: (synced.append(name), real(fd)))
    lg = make(tmp_path)
    lg.open()
    lg.write_state("state", "one")
    assert synced == ["fsync", "fsync"]          # created: the file, then the directory
    inode = os.stat(tmp_path / "state").st_ino
    lg.write_state("state", "two")
    lg.write_state("state", "three")
    assert synced[2:] == ["fdatasync", "fdatasync"]    # rewritten: the file alone
    assert os.stat(tmp_path / "state").st_ino == inode
    assert os.path.getsize(tmp_path / "state") == 2 * segment_log.STATE_SLOT
    assert not (tmp_path / "state.tmp").exists()
    lg.close()
    lg = make(tmp_path)
    lg.open()
    assert lg.read_state("state") == "three" and lg.read_state("other") is None
    lg.close()


def test_a_torn_state_write_leaves_the_previous_state(tmp_path):
    lg = make(tmp_path)
    lg.open()
    lg.write_state("state", "one")
    lg.write_state("state", "two")           # the second slot
    lg.close()
    with open(tmp_path / "state", "r+b") as f:   # a crash in the middle of writing it
        f.seek(segment_log.STATE_SLOT + 20)
        f.write(b"garbage")
    lg = make(tmp_path)
    lg.open()
    assert lg.read_state("state") == "one"
    lg.write_state("state", "three")         # over the torn slot, not the good one
    assert make_read(tmp_path, "state") == "three"
    lg.close()


def make_read(d, name) -> str | None:
    lg = make(d, durable=False)
    lg._lock_fd = None                        # reading only: no lock needed
    try:
        return lg.read_state(name)
    finally:
        lg.close()


def test_a_state_bigger_than_its_slot_gets_a_bigger_file(tmp_path):
    lg = make(tmp_path)
    lg.open()
    lg.write_state("state", "small")
    big = "x" * (segment_log.STATE_SLOT * 3)
    lg.write_state("state", big)
    assert os.path.getsize(tmp_path / "state") == 2 * 4 * segment_log.STATE_SLOT
    lg.write_state("state", "small again")
    lg.close()
    assert make_read(tmp_path, "state") == "small again"


def test_a_state_file_of_the_older_format_is_read_and_rewritten_in_this_one(tmp_path):
    (tmp_path / "state").write_text('{"old": 1}')
    lg = make(tmp_path)
    lg.open()
    assert lg.read_state("state") == '{"old": 1}'
    assert os.path.getsize(tmp_path / "state") == 2 * segment_log.STATE_SLOT   # converted
    lg.write_state("state", '{"new": 2}')
    lg.close()
    assert make_read(tmp_path, "state") == '{"new": 2}'


def open_files_under(d) -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith(str(d))
               for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))


def test_a_long_spool_keeps_two_segment_files_open(tmp_path, monkeypatch):
    from flume_og.node.decorators import disk_failover
    monkeypatch.setattr(disk_failover, "SEGMENT_BYTES", 1)      # one record per segment
    spool, d = disk_failover.Spool.claim(tmp_path, "spool")
    for i in range(30):
        spool.write(b"batch-%d" % i, 1)
    assert len(list(d.glob("*.dfo"))) == 30
    assert open_files_under(d) <= 3      # the lock, the position file, the segment written
    spool.close()
    spool, d = disk_failover.Spool.claim(tmp_path, "spool")
    assert spool.pending_records == 30 and open_files_under(d) <= 2
    for i in range(15):
        data, _ = spool.peek()
        assert data == b"batch-%d" % i
        spool.advance(len(data))
    spool.write(b"more", 1)
    assert open_files_under(d) <= 4      # the lock, the position, the segment read and written
    spool.close()
