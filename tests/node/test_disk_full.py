"""A full disk is transient (issue 11, item 1), on a real 1 MB tmpfs: the segment log cuts
a write cut short back at once and writes its state files in place; the WAL and the spool
free space while full; diskFailover and ackedWriteAhead hold the source back and go on by
themselves; the logical node says "disk full" and a stop while waiting is no failure."""
from __future__ import annotations

import logging
import os
import threading

import pytest

from flume_og.node.builder import build_sink
from flume_og.node.checkpoint import Checkpoint, CheckpointStore
from flume_og.node.clock import SYSTEM_CLOCK
from flume_og.node.component import NodeContext, Sink
from flume_og.node.decorators.acked_write_ahead import AckedWriteAhead
from flume_og.node.decorators.disk_failover import DiskFailoverDecorator, Spool
from flume_og.node.errors import Interrupted, SinkError
from flume_og.node.event import events_from_lines
from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.segment_log import DiskFull, Framing, SegmentLog, SpaceWait
from flume_og.node.sources import memory
from flume_og.node.spec import parse_sink, parse_source
from flume_og.node.wal import WriteAheadLog
from tests.tmpfs import fill, needs_root, tmpfs
from tests.waiting import wait_until

pytestmark = [pytest.mark.timeout(30), needs_root]

FRAMING = Framing("I", {b"RECD": False})
RECORD = 7000                      # payload bytes of one test record


@pytest.fixture
def disk(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as d:
        yield d


def seglog(d, **kw) -> SegmentLog:
    args = dict(what="the test log", suffix=".seg", digits=6, durable=False,
                segment_bytes=1 << 30, log=logging.getLogger("test.disk_full"))
    args.update(kw)
    return SegmentLog(d, FRAMING, **args)


def write_until_full(lg: SegmentLog) -> int:
    """Records written before the disk refused one."""
    n = 0
    while True:
        seg = lg.writable()
        rec = FRAMING.pack(b"RECD", (n,), b"r" * RECORD)
        try:
            lg.write(seg, rec, sum(map(len, rec)))
        except DiskFull:
            return n
        n += 1


def test_a_write_cut_short_by_a_full_disk_is_cut_back_at_once(disk):
    lg = seglog(disk / "log")
    lg.open()
    n = write_until_full(lg)
    seg = lg.segments[-1]
    assert n > 100 and (disk / "log" / seg.path.name).stat().st_size == seg.size
    lg.close()
    lg = seglog(disk / "log")
    [seg] = lg.open()
    assert lg.scan(seg, last=True)[0] == n and lg.corrupt == 0      # nothing "damaged"
    lg.close()


def test_state_files_are_rewritten_on_a_full_disk(disk):
    lg = seglog(disk / "log", durable=True)
    lg.open()
    lg.write_state("pos", '{"offset": 0}')
    fill(disk)
    with pytest.raises(OSError):
        (disk / "log" / "other").write_bytes(b"x" * 8192)     # the disk is full indeed
    for i in range(1, 200):
        lg.write_state("pos", '{"offset": %d}' % i)
    lg.close()
    lg = seglog(disk / "log")
    lg.open()
    assert lg.read_state("pos") == '{"offset": 199}'
    lg.close()


def test_space_wait_holds_a_write_until_a_segment_is_removed(disk):
    lg = seglog(disk / "log")
    lg.open()
    write_until_full(lg)
    first = lg.segments[0]
    lg.segment_bytes = 0                  # each write now starts a new segment
    metrics, reports = {}, []
    space = SpaceWait(lg, metrics, reports.append, SYSTEM_CLOCK)
    rec = FRAMING.pack(b"RECD", (0,), b"w" * RECORD)
    done = []
    t = threading.Thread(target=lambda: done.append(space.call(
        lambda: lg.write(lg.writable(), rec, sum(map(len, rec))), lambda: False)))
    t.start()
    wait_until(lambda: reports, 5, "disk full reported")
    assert reports[0].startswith("disk full: the test log in ") and t.is_alive()
    assert metrics["disk_full"] == 1 and metrics["disk_free_bytes"] < 2 * RECORD
    lg.remove(first)                      # what a replay or an acknowledgement does
    t.join(5)
    assert done == [None] and reports[-1] is None
    assert metrics["disk_free_bytes"] > 100 * RECORD
    with pytest.raises(Interrupted, match="the flow stops"):
        fill(disk)
        space.call(lambda: lg.write(lg.writable(), rec, sum(map(len, rec))), lambda: True)
    lg.close()


def test_the_wal_is_trimmed_by_acknowledgements_on_a_full_disk(disk):
    """Before: deleting an acknowledged segment first wrote meta.json with a new file,
    which failed on the full disk; the WAL was never trimmed."""
    wal = WriteAheadLog(disk / "wal", segment_bytes=64 << 10)
    wal.open()
    groups = []
    with pytest.raises(DiskFull):
        while True:
            groups += wal.append([(b"g" * RECORD, 1)], {"pos": len(groups)})
    fill(disk)                              # not a page left, whoever took it
    assert len(wal.log.segments) > 3
    wal.ack([g.seq for g in groups])
    assert len(wal) == 0 and sum(s.size for s in wal.log.segments) == 0
    wal.append([(b"after", 1)], {"pos": "after"})
    wal.close()
    wal = WriteAheadLog(disk / "wal")
    assert [g.seq for g in wal.open()] == [len(groups) + 1]
    assert wal.position == {"pos": "after"} and wal.metrics["wal_corrupt"] == 0
    wal.close()


def test_the_spool_replays_and_reopens_on_a_full_disk(disk):
    """Before: the replay position was written with a new file (replay.pos.tmp), which
    failed on the full disk and stopped the replay."""
    spool, d = Spool.claim(disk, "spool")
    n = 0
    with pytest.raises(DiskFull):
        while True:
            spool.write(b"%06d" % n + b"s" * RECORD, 1)
            n += 1
    fill(disk)                              # not a page left, whoever took it
    for i in range(3):
        data, _ = spool.peek()
        assert data.startswith(b"%06d" % i)
        spool.advance(len(data))
    spool.close()
    spool, _ = Spool.claim(disk, "spool")          # a refresh with the disk still full
    assert (spool.pending_records, spool.corrupt) == (n - 3, 0)
    while (rec := spool.peek()) is not None:
        spool.advance(len(rec[0]))
    spool.write(b"fresh", 1)
    assert spool.pending_records == 1
    spool.close()


class Gate(Sink):
    """A collector that is down (SinkError) until ``up`` is set; keeps what it takes."""

    def __init__(self):
        super().__init__()
        self.up = threading.Event()
        self.bodies: list[bytes] = []

    def append(self, events) -> None:
        if not self.up.is_set():
            raise SinkError("the collector is down")
        self.bodies.extend(e.body for e in events)


def disk_ctx(disk) -> NodeContext:
    d = disk / "n"
    d.mkdir(exist_ok=True)
    return NodeContext(logical_name="n", data_dir=d, store=CheckpointStore(d / "cp.json"))


def drive(sink, ctx, batches: int):
    """A driver thread appending ``batches`` batches of 50 events, each with its position;
    returns (thread, number of batches appended so far)."""
    appended = [0]

    def run():
        for b in range(batches):
            sink.append(events_from_lines([b"%05d-%02d" % (b, i) + b"x" * 100
                                           for i in range(50)]))
            sink.when_durable(Checkpoint({"pos": b}))
            appended[0] = b + 1
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, appended


def expected(batches: int) -> list[bytes]:
    return [b"%05d-%02d" % (b, i) + b"x" * 100 for b in range(batches) for i in range(50)]


@pytest.mark.parametrize("kind", ["dfo", "e2e"])
def test_a_full_disk_holds_the_source_back_until_sending_frees_it(disk, kind):
    ctx = disk_ctx(disk)
    gate = Gate()
    sink = (DiskFailoverDecorator(gate, 100, 20) if kind == "dfo"
            else AckedWriteAhead(gate, 200, 20, retransmitMs=60_000))
    sink.open(ctx)
    batches = 400                          # about 2.4 MB: more than the disk holds
    t, appended = drive(sink, ctx, batches)
    # (the spooling itself is a condition too: "spooling: <why>", after it by its key)
    wait_until(lambda: ctx.conditions.texts()[:1] and
               ctx.conditions.texts()[0].startswith("disk full: "), 20, "disk full reported")
    held = appended[0]
    assert t.is_alive() and held < batches and sink.metrics["disk_full"] >= 1
    assert sink.metrics["disk_free_bytes"] < 64 << 10
    gate.up.set()                          # the collector is back: sending frees space
    t.join(20)
    assert not t.is_alive() and appended[0] == batches
    wait_until(lambda: len(gate.bodies) >= batches * 50, 20, "everything delivered")
    wait_until(lambda: not ctx.conditions.texts(), 5, "disk full cleared")
    sink.close()
    assert gate.bodies == expected(batches)        # in order, once each
    assert ctx.store.get("pos") == batches - 1


@pytest.mark.parametrize("sink", ["diskFailover(100, 20) flakeyAppend(1.0) null",
                                  "ackedWriteAhead(200, 20) flakeyAppend(1.0) null"])
def test_the_logical_node_says_disk_full_and_a_stop_while_full_is_no_failure(disk, sink):
    memory.reset("full")
    memory.push("full", [b"e%06d" % i + b"y" * 200 for i in range(8000)])
    node = LogicalNode("n", disk)
    node.configure(parse_source('memory("full")'), parse_sink(sink))
    wait_until(lambda: (node.last_error or "").startswith("disk full: "), 20,
               "the node saying disk full")
    st = node.status()
    assert node.state is State.ACTIVE and "; ".join(st["conditions"]) == node.last_error
    assert node.stop(10)
    assert node.state is State.IDLE and node.last_error is None


def test_the_free_bytes_gauge_is_the_least_over_components_not_the_sum():
    from flume_og.node.metrics import summarize
    spool = {"name": "diskFailover", "kind": "decorator",
             "metrics": {"disk_free_bytes": 5000, "spooled": 3}}
    wal = {"name": "ackedWriteAhead", "kind": "decorator",
           "metrics": {"disk_free_bytes": 4000, "spooled": 4}}
    c = summarize({"components": {"sink": {"name": "fanout", "kind": "sink",
                                           "children": [spool, wal]}}})
    assert c["disk_free_bytes"] == 4000 and c["spooled"] == 7


@pytest.mark.parametrize("kind", ["dfo", "e2e"])
def test_a_disk_filled_by_someone_else_holds_the_source_back_until_they_free_it(disk, kind):
    """The collector is up, nothing is spooled: only the checkpoint file (DFO sending
    directly) or the log needs space, and another program took it all."""
    ctx = disk_ctx(disk)
    gate = Gate()
    gate.up.set()
    sink = (DiskFailoverDecorator(gate, 100, 20) if kind == "dfo"
            else AckedWriteAhead(gate, 200, 20, retransmitMs=60_000))
    sink.open(ctx)
    filler = fill(disk)
    t, appended = drive(sink, ctx, 20)
    wait_until(lambda: ctx.conditions.texts(), 10, "disk full reported")
    assert t.is_alive() and appended[0] < 20
    filler.unlink()
    finish_after_space_returns(sink, ctx, gate, t, appended)


def finish_after_space_returns(sink, ctx, gate, t, appended) -> None:
    """The 20 appends of ``drive`` go through once space is back: all delivered, the
    condition cleared, the last position committed."""
    t.join(10)
    assert not t.is_alive() and appended[0] == 20
    wait_until(lambda: len(gate.bodies) >= 20 * 50, 10, "everything delivered")
    wait_until(lambda: not ctx.conditions.texts(), 5, "disk full cleared")
    sink.close()
    assert gate.bodies == expected(20) and ctx.store.get("pos") == 19


def big_position(files: int) -> dict:
    """What tail/multitail checkpoint: an entry per file (25 files: about 5.6 KB of JSON,
    more than a state slot of 4 KB)."""
    return {f"tail:/var/log/app/service-{i:03d}.log": {"dev": 2049, "ino": 1000 + i,
            "offset": 123456789, "fp": "ab" * 64} for i in range(files)}


def fill_wal(wal: WriteAheadLog, position) -> list[int]:
    """Append groups carrying ``position`` until the disk refuses one; their seqs."""
    seqs = []
    with pytest.raises(DiskFull):
        while True:
            seqs += [g.seq for g in wal.append([(b"x" * 4000, 10)], position)]
    return seqs


def test_acks_free_a_full_disk_when_the_position_outgrows_the_first_state_slot(disk):
    """Before: deleting an acknowledged segment rewrote meta.json, which had to become a
    new, bigger file (a 5.6 KB position in 4 KB slots): ENOSPC in ack, and the segments
    stayed for good. Now meta.json grows when such a position is first appended."""
    wal = WriteAheadLog(disk / "wal", {}, segment_bytes=64 << 10)
    wal.open()
    seqs = fill_wal(wal, big_position(25))
    fill(disk)                              # the last few KB taken by another program
    assert len(wal.log.segments) > 10
    assert [g.seq for g in wal.ack(seqs)] == seqs
    assert len(wal.log.segments) <= 1 and len(wal) == 0
    wal.close()
    wal = WriteAheadLog(disk / "wal")
    wal.open()
    assert wal.position == big_position(25) and wal.next_seq == seqs[-1] + 1
    wal.close()


def test_a_deletion_that_fails_is_tried_again_once_there_is_space(disk):
    """A log written by an older version: its meta.json has 4 KB slots and its segments a
    bigger position; the disk is full at open. meta.json cannot grow, so acknowledging
    deletes what needs it not (every segment but the newest, which holds the newest
    position) and keeps the newest due, which the next trim deletes (meta.json grown in
    the space freed). Before: ack raised ENOSPC, forgot the groups, deleted nothing."""
    wal = WriteAheadLog(disk / "wal", {}, segment_bytes=64 << 10)
    wal.open()
    seqs = fill_wal(wal, big_position(25))
    wal.close()
    (disk / "wal" / "meta.json").unlink()
    old = seglog(disk / "wal", suffix=".old")       # meta.json as the older version left it
    old.open()
    old.write_state("meta.json", '{"next_seq":1,"pos_no":0,"position":null}')
    old.close()
    fill(disk)
    wal = WriteAheadLog(disk / "wal", {}, segment_bytes=64 << 10)
    assert [g.seq for g in wal.open()] == seqs
    newest = wal.log.segments[-1]
    assert len(wal.log.segments) > 10 and wal.log.state_room("meta.json") < 5000
    assert [g.seq for g in wal.ack(seqs)] == seqs                   # no error
    assert len(wal) == 0 and wal.log.segments == [newest]          # due, not deleted
    wal.seal_older_than(3600)               # what the owner's maintenance calls
    assert wal.log.segments == [] and wal.trim()
    assert wal.log.state_room("meta.json") > 5000
    wal.close()
    wal = WriteAheadLog(disk / "wal")
    assert wal.open() == [] and wal.position == big_position(25)
    assert wal.next_seq == seqs[-1] + 1
    wal.close()


def test_the_wal_and_the_spool_open_on_a_disk_full_from_the_start(disk):
    """Before: both created their state file at open, which raised ENOSPC. Now the open
    needs no space; the first write creates it (and is refused while the disk is full)."""
    filler = fill(disk)
    wal = WriteAheadLog(disk / "wal")
    assert wal.open() == [] and wal.is_new
    wal.ensure_next_seq(40)                 # learnt from ZooKeeper: kept until written
    with pytest.raises(DiskFull):
        wal.append([(b"first", 1)], {"pos": 1})
    spool, _ = Spool.claim(disk, "spool")
    assert spool.empty
    with pytest.raises(DiskFull):
        spool.write(b"first", 1)
    filler.unlink()
    assert [g.seq for g in wal.append([(b"first", 1)], {"pos": 1})] == [40]
    spool.write(b"first", 1)
    wal.close()
    spool.close()
    wal = WriteAheadLog(disk / "wal")
    assert [g.seq for g in wal.open()] == [40] and wal.position == {"pos": 1}
    wal.close()
    spool, _ = Spool.claim(disk, "spool")
    assert spool.peek() == (b"first", 1) and (disk / "spool" / "replay.pos").exists()
    spool.close()


@pytest.mark.parametrize("kind", ["dfo", "e2e"])
def test_a_sink_opened_on_a_full_disk_waits_for_space_then_goes_on(disk, kind):
    """The disk was full before the flow first opened (another program). Before: open
    raised SinkError (the flow in ERROR for good); now the first write waits, saying
    "disk full", and everything goes through once space returns."""
    ctx = disk_ctx(disk)
    gate = Gate()                          # down: DFO spools, so both need their disk
    sink = (DiskFailoverDecorator(gate, 100, 20) if kind == "dfo"
            else AckedWriteAhead(gate, 200, 20, retransmitMs=60_000))
    filler = fill(disk)
    sink.open(ctx)
    t, appended = drive(sink, ctx, 20)
    wait_until(lambda: ctx.conditions.texts()[:1] and
               ctx.conditions.texts()[0].startswith("disk full: "), 10, "disk full reported")
    assert t.is_alive() and appended[0] == 0 and sink.metrics["disk_full"] == 1
    filler.unlink()
    gate.up.set()
    finish_after_space_returns(sink, ctx, gate, t, appended)


@pytest.mark.parametrize("sink", ["diskFailover(100, 20) flakeyAppend(1.0) null",
                                  "ackedWriteAhead(200, 20) flakeyAppend(1.0) null"])
def test_a_flow_configured_on_a_full_disk_is_active_and_says_disk_full(disk, sink):
    memory.reset("full0")
    memory.push("full0", [b"e%06d" % i for i in range(100)])
    (disk / "n").mkdir()
    fill(disk)
    node = LogicalNode("n", disk)
    node.configure(parse_source('memory("full0")'), parse_sink(sink))
    assert node.state is State.ACTIVE, node.last_error
    wait_until(lambda: (node.last_error or "").startswith("disk full: "), 10,
               "the node saying disk full")
    assert node.stop(10)
    assert node.state is State.IDLE and node.last_error is None


def test_a_dfs_batch_the_disk_refuses_is_cut_off_its_file(disk, tmp_path):
    """Before: the lines the disk took stayed in the file, the last one torn, and the file
    was made final with them: a resend wrote them twice."""
    ctx = disk_ctx(tmp_path)
    sink = build_sink(parse_sink(f'dfs("{disk}/out")'))
    sink.open(ctx)
    first = [b"first %04d " % i + b"f" * 1000 for i in range(10)]
    sink.append(events_from_lines(first))         # past the write buffer: on the disk
    fill(disk)
    with pytest.raises(SinkError):
        sink.append(events_from_lines([b"x" * 100 + b" %06d" % i for i in range(20_000)]))
    hidden = disk / ".out.tmp"
    assert hidden.read_bytes() == b"".join(line + b"\n" for line in first)
    assert sink.metrics["batches_cut"] == 1
    (disk / "filler").unlink()
    sink.append(events_from_lines([b"after"]))
    sink.close()
    assert (disk / "out").read_bytes().splitlines() == first + [b"after"]


def test_collector_sink_waits_for_space_then_writes_the_batch_once(disk, tmp_path):
    """Before: the append failed (the flow went to ERROR until a refresh)."""
    ctx = disk_ctx(tmp_path)
    sink = build_sink(parse_sink(f'collectorSink("{disk}/out", "data-", 60000)'))
    sink.open(ctx)
    filler = fill(disk)
    batch = events_from_lines([b"line %06d" % i for i in range(20_000)])
    t = threading.Thread(target=sink.append, args=(batch,))
    t.start()
    wait_until(lambda: "disk full" in " ".join(ctx.conditions.texts()), 5,
               "the sink saying its disk is full")
    assert sink.metrics.get("disk_full") == 1 and sink.metrics["disk_free_bytes"] < 4096
    assert t.is_alive()
    filler.unlink()
    t.join(5)
    assert not t.is_alive() and ctx.conditions.texts() == []
    sink.close()
    lines = [line for f in (disk / "out").iterdir()
             for line in f.read_bytes().splitlines()]
    assert sorted(lines) == [b"line %06d" % i for i in range(20_000)]
    assert sink.metrics["batches_cut"] >= 1


def test_a_stop_while_the_collector_disk_is_full_interrupts_the_wait(disk, tmp_path):
    ctx = disk_ctx(tmp_path)
    sink = build_sink(parse_sink(f'collectorSink("{disk}/out", "data-", 60000)'))
    sink.open(ctx)
    fill(disk)
    errors = []

    def append():
        try:
            sink.append(events_from_lines([b"y" * 200] * 10_000))
        except SinkError as exc:
            errors.append(exc)
    t = threading.Thread(target=append)
    t.start()
    wait_until(lambda: sink.metrics.get("disk_full") == 1, 5, "the sink waiting")
    ctx.stop_event.set()
    t.join(5)
    assert not t.is_alive() and isinstance(errors[0], Interrupted)
    sink.close()
    assert not [f for f in (disk / "out").iterdir() if not f.name.startswith(".")]


def test_a_compressed_dfs_file_with_part_of_a_failed_batch_is_never_made_final(disk,
                                                                              tmp_path):
    """A gzip stream cannot be cut back: the file stays hidden and nothing is committed
    (the source resends), rather than a final file with part of the batch."""
    ctx = disk_ctx(tmp_path)
    sink = build_sink(parse_sink(f'dfs("{disk}/out", compression="gzip")'))
    sink.open(ctx)
    filler = fill(disk)
    with pytest.raises(SinkError):
        sink.append(events_from_lines([os.urandom(100).hex().encode()
                                       for _ in range(20_000)]))
    filler.unlink()                 # completing it could succeed now: it must not
    with pytest.raises(SinkError, match="part of a batch that failed"):
        sink.close()
    assert not (disk / "out.gz").exists()
