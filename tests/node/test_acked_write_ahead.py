"""``ackedWriteAhead`` over an ordinary sink (no ZooKeeper): at-least-once through the
write-ahead log, and the source position recorded with its group."""
from __future__ import annotations


import pytest

from flume_og.node.checkpoint import Checkpoint, CheckpointStore
from flume_og.node.decorators.acked_write_ahead import AckedWriteAhead
from flume_og.node.event import events_from_lines
from flume_og.node.builder import build_sink
from flume_og.node.sinks import collect
from flume_og.node.spec import parse_sink
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(30)




def test_delivers_to_an_ordinary_sink_and_empties_the_wal(make_ctx):
    collect.reset("awa")
    ctx = make_ctx("awa1")
    sink = build_sink(parse_sink('ackedWriteAhead(1000, 50) collect("awa")'))
    sink.open(ctx)
    sink.append(events_from_lines([b"a", b"b"]))
    sink.when_durable(Checkpoint({"pos": 2}))
    sink.append(events_from_lines([b"c"]))
    sink.when_durable(Checkpoint({"pos": 3}))
    wait_until(lambda: len(collect.collected("awa")) == 3)
    wait_until(lambda: sink.metrics["wal_groups"] == 0)     # acknowledged: collect commits
    assert [e.body for e in collect.collected("awa")] == [b"a", b"b", b"c"]
    assert ctx.store.get("pos") == 3
    assert sink.metrics["groups_acked"] == 2 and sink.metrics["fsyncs"] == 2
    sink.close()


def test_position_recorded_in_the_wal_is_restored_after_a_crash(make_ctx, monkeypatch):
    """A crash after the group and its position are in the log but before the
    checkpoint store has the position: the reopened sink gives the store the position,
    so the source does not read the batch again."""
    collect.reset("awa2")
    ctx = make_ctx("awa2")
    sink = AckedWriteAhead(build_sink(parse_sink('collect("awa2")')), 1000, 50)
    # nothing ever acknowledges: the inner sink never commits
    monkeypatch.setattr(sink.inner, "when_durable", lambda cp: None)
    sink.open(ctx)
    sink.append(events_from_lines([b"x"]))

    def crash(*a, **kw):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(ctx.store, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        sink.when_durable(Checkpoint({"tail:/f": 1234}))
    sink.sender.stop()
    sink.wal.close()                       # the process is gone; nothing else is done
    store = CheckpointStore(ctx.store.path)
    assert store.get("tail:/f") is None
    ctx2 = make_ctx("awa2")
    assert ctx2.store.get("tail:/f") is None
    sink2 = AckedWriteAhead(build_sink(parse_sink('collect("awa2")')), 1000, 50)
    sink2.open(ctx2)
    assert ctx2.store.get("tail:/f") == 1234
    wait_until(lambda: sink2.metrics["wal_groups"] == 0)
    sink2.close()
    # the group itself is resent from the log (at-least-once over an ordinary sink)
    assert {e.body for e in collect.collected("awa2")} == {b"x"}


def test_batch_without_position_is_written_on_its_own(make_ctx):
    collect.reset("awa3")
    ctx = make_ctx("awa3")
    sink = build_sink(parse_sink('ackedWriteAhead(1000, 50) collect("awa3")'))
    sink.open(ctx)
    sink.append(events_from_lines([b"lonely"]))
    wait_until(lambda: len(collect.collected("awa3")) == 1)
    sink.close()
    assert sink.metrics["groups_written"] == 1
