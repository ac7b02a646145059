"""The agent's write-ahead log: group commit, read back, torn tails, deletion, seqs."""
from __future__ import annotations

import logging
import os

import pytest

from flume_og.node.wal import HEAD, WalError, WriteAheadLog


def segments(d):
    return sorted(p for p in os.listdir(d) if p.endswith(".wal"))


def open_wal(d, **kw):
    w = WriteAheadLog(d, **kw)
    live = w.open()
    return w, live


def test_group_commit_one_fsync_per_append_and_read(tmp_path):
    w, live = open_wal(tmp_path / "wal")
    assert live == []
    groups = w.append([(b"alpha", 1), (b"beta" * 100, 4), (b"", 0)])
    assert [g.seq for g in groups] == [1, 2, 3]
    assert w.metrics["fsyncs"] == 1           # one fsync for the whole append
    more = w.append([(b"gamma", 2)])
    assert more[0].seq == 4 and w.metrics["fsyncs"] == 2
    assert w.read(2) == b"beta" * 100
    assert w.read(4) == b"gamma"
    assert w.metrics["wal_groups"] == 4
    assert w.metrics["wal_events"] == 7
    assert w.metrics["wal_bytes"] == 4 * HEAD.size + 5 + 400 + 0 + 5
    w.close()


def test_read_back_after_reopen(tmp_path):
    d = tmp_path / "wal"
    w, _ = open_wal(d)
    w.append([(b"one", 1), (b"two", 2)])
    w.append([(b"three", 3)])
    w.close()
    w2, live = open_wal(d)
    assert [(g.seq, g.count) for g in live] == [(1, 1), (2, 2), (3, 3)]
    assert [w2.read(g.seq) for g in live] == [b"one", b"two", b"three"]
    assert w2.append([(b"four", 4)])[0].seq == 4
    w2.close()


@pytest.mark.parametrize("damage", ["cut_payload", "cut_header", "zeros", "flip_byte"])
def test_torn_tail_is_cut_off_and_reported(tmp_path, caplog, damage):
    d = tmp_path / "wal"
    w, _ = open_wal(d)
    w.append([(b"good-1", 1)])
    w.append([(b"good-2", 1)])
    last = w.append([(b"torn-record-payload", 1)])[0]
    w.close()
    seg = d / segments(d)[0]
    size = seg.stat().st_size
    good_len = size - HEAD.size - last.length
    with open(seg, "r+b") as f:
        if damage == "cut_payload":
            f.truncate(size - 5)
        elif damage == "cut_header":
            f.truncate(good_len + 7)
        elif damage == "zeros":
            f.truncate(good_len)
            f.seek(good_len)
            f.write(b"\0" * 64)
        else:
            f.seek(size - 3)
            b = f.read(1)
            f.seek(size - 3)
            f.write(bytes([b[0] ^ 0xFF]))
    with caplog.at_level(logging.WARNING, logger="flume_og.node.wal"):
        w2, live = open_wal(d)
    assert [w2.read(g.seq) for g in live] == [b"good-1", b"good-2"]
    assert w2.metrics["wal_corrupt"] == 1
    assert w2.metrics["wal_truncated_bytes"] > 0
    assert any("torn record" in r.getMessage() for r in caplog.records)
    assert seg.stat().st_size == good_len            # cut off on disk too
    g = w2.append([(b"after", 1)])[0]
    assert g.seq == 3                                # the torn seq was never durable
    w2.close()
    w3, live = open_wal(d)
    assert [w3.read(x.seq) for x in live] == [b"good-1", b"good-2", b"after"]
    assert w3.metrics["wal_corrupt"] == 0
    w3.close()


def test_corruption_before_the_end_is_reported_as_an_error(tmp_path, caplog):
    d = tmp_path / "wal"
    w, _ = open_wal(d, segment_bytes=1)        # one record per segment
    for i in range(3):
        w.append([(f"rec-{i}".encode(), 1)])
    w.close()
    first = d / segments(d)[0]
    with open(first, "r+b") as f:
        f.seek(HEAD.size)
        f.write(b"X")
    with caplog.at_level(logging.ERROR, logger="flume_og.node.wal"):
        w2, live = open_wal(d)
    assert [w2.read(g.seq) for g in live] == [b"rec-1", b"rec-2"]
    assert w2.metrics["wal_corrupt"] == 1
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    w2.close()


def test_acknowledged_groups_are_deleted_with_their_segments(tmp_path):
    d = tmp_path / "wal"
    w, _ = open_wal(d, segment_bytes=50)
    for i in range(6):
        w.append([(bytes(60), 1)])                  # each record fills a segment
    assert len(segments(d)) == 6
    w.ack([1, 2])
    assert len(segments(d)) == 4
    assert w.read(1) is None and w.read(3) == bytes(60)
    assert w.lowest_live() == 3
    w.ack([4])
    assert w.lowest_live() == 3
    w.ack([3, 5, 6])
    assert segments(d) == []
    assert w.metrics["wal_groups"] == 0 and w.metrics["wal_bytes"] == 0
    assert w.lowest_live() == 7
    w.close()


def test_segment_with_some_groups_live_is_kept(tmp_path):
    d = tmp_path / "wal"
    w, _ = open_wal(d)
    w.append([(b"a", 1), (b"b", 1), (b"c", 1)])
    w.ack([1, 3])
    assert len(segments(d)) == 1
    w.close()
    w2, live = open_wal(d)
    # acknowledgements live in ZooKeeper: the agent drops 1 and 3 again after a restart
    assert [g.seq for g in live] == [1, 2, 3]
    w2.close()


def test_seq_never_reused_after_everything_was_deleted(tmp_path):
    d = tmp_path / "wal"
    w, _ = open_wal(d)
    w.append([(b"a", 1), (b"b", 1), (b"c", 1)])
    w.ack([1, 2, 3])
    assert segments(d) == []
    w.close()
    w2, live = open_wal(d)
    assert live == []
    assert w2.append([(b"d", 1)])[0].seq == 4
    w2.ensure_next_seq(100)
    w2.close()
    w3, _ = open_wal(d)
    assert w3.append([(b"e", 1)])[0].seq == 100
    w3.close()


def test_seq_after_restart_with_segments_left(tmp_path):
    d = tmp_path / "wal"
    w, _ = open_wal(d, segment_bytes=1)
    w.append([(b"a", 1)])
    w.append([(b"b", 1)])
    w.ack([2])          # the newest segment goes first; the older one names seq 1 only
    w.close()
    w2, live = open_wal(d, segment_bytes=1)
    assert [g.seq for g in live] == [1]
    assert w2.append([(b"c", 1)])[0].seq == 3
    w2.close()


def test_one_writer_at_a_time(tmp_path):
    d = tmp_path / "wal"
    w, _ = open_wal(d)
    with pytest.raises(WalError, match="in use"):
        WriteAheadLog(d).open()
    w.close()
    w2, _ = open_wal(d)
    w2.close()


def test_sealed_segment_is_deleted_once_acknowledged(tmp_path):
    from flume_og.node.clock import ManualClock
    clock = ManualClock()
    d = tmp_path / "wal"
    w, _ = open_wal(d, clock=clock)
    w.append([(b"a", 1)])
    clock.advance(11)
    w.seal_older_than(10)
    w.append([(b"b", 1)])
    assert len(segments(d)) == 2
    w.ack([1])
    assert len(segments(d)) == 1
    w.close()


def test_position_travels_with_its_group(tmp_path):
    d = tmp_path / "wal"
    w, _ = open_wal(d)
    w.append([(b"a", 1)], position={"tail:f": 10})
    w.append([(b"b", 1)], position={"tail:f": 20})
    w.write_position({"tail:f": 25})
    w.close()
    w2, live = open_wal(d)
    assert w2.position == {"tail:f": 25} and [g.seq for g in live] == [1, 2]
    start2 = live[1].offset - HEAD.size
    w2.close()
    # torn: the last group goes, and its position with it (and the position after it)
    seg = d / segments(d)[0]
    with open(seg, "r+b") as f:
        f.truncate(start2 + live[1].size - 3)      # the trailer of group 2 is cut
    w3, live = open_wal(d)
    assert [g.seq for g in live] == [1]
    assert w3.position == {"tail:f": 10}
    assert w3.metrics["wal_corrupt"] == 1
    w3.close()


def test_position_survives_deletion_of_every_segment(tmp_path):
    d = tmp_path / "wal"
    w, _ = open_wal(d)
    w.append([(b"a", 1)], position={"k": 1})
    w.append([(b"b", 1)], position={"k": 2})
    w.ack([1, 2])
    assert segments(d) == []
    w.close()
    w2, live = open_wal(d)
    assert live == [] and w2.position == {"k": 2}
    assert w2.append([(b"c", 1)], position={"k": 3})[0].seq == 3
    w2.close()
    w3, _ = open_wal(d)
    assert w3.position == {"k": 3}
    w3.close()
