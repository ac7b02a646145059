"""The on-disk formats of the write-ahead log and of diskFailover's spool are pinned: the
bytes below were written by the code of 2026-12-03 (before both moved onto one segment
log), and what is written now must be the same bytes, and read back the same. The state
files (``meta.json``, ``replay.pos``) are, since disk full became transient, two
fixed-size slots rewritten in place (STATE_FILES); the older files, the text alone, are
still read."""
from __future__ import annotations

from pathlib import Path

from flume_og.node.decorators.disk_failover import Spool
from flume_og.node.wal import WriteAheadLog

WAL_FILES = {
    "meta.json": b'{"next_seq":4,"pos_no":2,"position":{"tail:f":12}}',
    "seg-00000000000000000001.wal":
        b'FWAL\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x05\xd0\xe09j'
        b'alpha'
        b'FWAX\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x04\x8f\x91\x04c'
        b'beta\x00\x00\x00\x19Y\xd9\x08\xae{"n":1,"p":{"tail:f":10}}'
        b'FWAP\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
        b'\x00\x00\x00\x00\x19\xf5\xf4\x91\n{"n":2,"p":{"tail:f":12}}',
}

def slots(*records: bytes) -> bytes:
    """A state file of two 4,096-byte slots holding ``records``."""
    return b"".join(r.ljust(4096, b"\0") for r in records)


STATE_FILES = {
    "wal": {"meta.json": slots(
        b'FST1\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00)\xae\xdd0\xd2'
        b'{"next_seq":1,"pos_no":0,"position":null}',          # allocated at open
        b'FST1\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x002\xfe\xaez#'
        b'{"next_seq":4,"pos_no":2,"position":{"tail:f":12}}')},
    "spool": {"replay.pos": slots(
        b'FST1\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x1c\xc53\x95A'
        b'{"segment": -1, "offset": 0}',                        # allocated at open
        b'FST1\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x1c\xe9\xf5\xf2\x8c'
        b'{"segment": 0, "offset": 19}')},
}

SPOOL_FILES = {
    "replay.pos": b'{"segment": 0, "offset": 19}',
    "seg-000000000000.dfo":
        b'DFO1\x00\x00\x00\x01\x00\x00\x00\x03zl\x86\xf1one'
        b'DFO1\x00\x00\x00\x02\x00\x00\x00\x03\x11\xca\x8aftwo',
}


def files_of(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name != "lock"}


def write_files(d: Path, files: dict[str, bytes]) -> None:
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)


def test_the_wal_writes_the_bytes_it_always_wrote(tmp_path):
    w = WriteAheadLog(tmp_path / "wal", segment_bytes=100)
    w.open()
    w.append([(b"alpha", 1), (b"beta", 2)], position={"tail:f": 10})
    w.write_position({"tail:f": 12})
    w.append([(b"gamma", 3)])        # the first segment is full: seq 3 gets its own
    w.ack([3])                       # which is deleted, so meta.json is written
    w.close()
    assert files_of(tmp_path / "wal") == dict(WAL_FILES, **STATE_FILES["wal"])


def test_the_wal_reads_a_directory_written_before(tmp_path):
    write_files(tmp_path / "wal", WAL_FILES)
    w = WriteAheadLog(tmp_path / "wal")
    live = w.open()
    assert [(g.seq, g.count) for g in live] == [(1, 1), (2, 2)]
    assert [w.read(g.seq) for g in live] == [b"alpha", b"beta"]
    assert w.position == {"tail:f": 12}
    assert w.metrics["wal_corrupt"] == 0
    assert w.append([(b"delta", 4)])[0].seq == 4
    w.close()


def test_the_spool_writes_the_bytes_it_always_wrote(tmp_path):
    s, d = Spool.claim(tmp_path / "dfo", "spool")
    s.write(b"one", 1)
    s.write(b"two", 2)
    data, _ = s.peek()
    s.advance(len(data))
    s.close()
    assert files_of(d) == dict(SPOOL_FILES, **STATE_FILES["spool"])


def test_the_spool_reads_a_spool_written_before(tmp_path):
    write_files(tmp_path / "dfo" / "spool", SPOOL_FILES)
    s, _ = Spool.claim(tmp_path / "dfo", "spool")
    assert (s.pending_records, s.corrupt) == (1, 0)
    assert s.peek() == (b"two", 2)
    s.advance(3)
    assert s.empty and s.peek() is None
    s.close()


def test_a_spool_left_with_only_its_replay_position_loses_nothing_later(tmp_path):
    """A crash while an emptied spool deletes its files can leave ``replay.pos`` naming a
    segment that is gone; records spooled afterwards must not be taken for replayed ones
    at the next open (new segments are numbered past the recorded position)."""
    write_files(tmp_path / "dfo" / "spool", {"replay.pos": b'{"segment": 5, "offset": 40}'})
    s, _ = Spool.claim(tmp_path / "dfo", "spool")
    assert s.empty
    s.write(b"kept", 1)
    s.close()
    s, _ = Spool.claim(tmp_path / "dfo", "spool")
    assert s.pending_records == 1 and s.peek() == (b"kept", 1)
    s.close()


def test_the_wal_opens_with_an_unreadable_meta_json(tmp_path, caplog):
    files = dict(WAL_FILES, **{"meta.json": b"\xff\xfe not json"})
    write_files(tmp_path / "wal", files)
    w = WriteAheadLog(tmp_path / "wal")
    assert [g.seq for g in w.open()] == [1, 2]
    assert any("meta.json is unreadable" in r.getMessage() for r in caplog.records)
    assert w.position == {"tail:f": 12}        # from the position record
    assert w.append([(b"next", 1)])[0].seq == 3    # derived from the segments
    w.close()
