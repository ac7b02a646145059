"""The spec's own constructs: fan-out ``[..]``, failover ``<..>`` and ``let`` -- delivery,
failures, backoff on a ManualClock, and when checkpoints commit."""
from __future__ import annotations

import inspect

import pytest

from flume_og.node.checkpoint import Checkpoint
from flume_og.node.clock import ManualClock
from flume_og.node.component import Sink
from flume_og.node.errors import SinkError
from flume_og.node.event import Event, lines_batch, set_attr
from flume_og.node.builder import build_sink
from flume_og.node.sinks.failover import FailoverSink
from flume_og.node.sinks.fanout import FanOutSink
from flume_og.node.sinks.shared import SharedRef
from flume_og.node.spec import parse_sink


class Rec(Sink):
    """A test sink: records opens, closes and batches; fails on demand (``fail`` holds
    "open", "append", "close"); with ``hold`` it keeps checkpoints until ``flush`` or
    ``close`` (like a file renamed on close), else commits them at once."""

    def __init__(self, name: str = "r", hold: bool = False):
        super().__init__()
        self.name, self.hold = name, hold
        self.fail: set = set()
        self.opens = self.closes = self.open_attempts = 0
        self.is_open = False
        self.batches: list[list[Event]] = []
        self.held: list = []

    @property
    def bodies(self) -> list[bytes]:
        return [e.body for b in self.batches for e in b]

    def open(self, ctx) -> None:
        self.ctx = ctx
        self.open_attempts += 1
        if "open" in self.fail:
            raise SinkError(f"{self.name}: open refused")
        self.opens += 1
        self.is_open = True

    def append(self, events) -> None:
        assert self.is_open, "append on a closed sink"
        if "append" in self.fail:
            raise SinkError(f"{self.name}: append refused")
        self.batches.append(events)

    def when_durable(self, cp) -> None:
        if self.hold:
            self.held.append(cp)
        else:
            self.ctx.store.commit([cp])

    def flush(self) -> None:
        cps, self.held = self.held, []
        self.ctx.store.commit(cps)

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        self.closes += 1
        if "close" in self.fail:
            self.held = []  # the events are lost, so are their checkpoints
            raise SinkError(f"{self.name}: close failed")
        self.flush()


def evs(*bodies: bytes) -> list[Event]:
    return [Event(b) for b in bodies]


@pytest.fixture
def rec_sink(monkeypatch):
    """Registers ``rec("name")`` for spec tests; returns the dict name -> instances."""
    import flume_og.node.components  # noqa: F401  (the table complete before adding to it)
    import flume_og.node.registry as reg

    made: dict[str, list[Rec]] = {}

    class SpecRec(Rec):
        def __init__(self, name: str):
            super().__init__(name)
            made.setdefault(name, []).append(self)

    params = tuple(inspect.signature(SpecRec.__init__).parameters.values())[1:]
    info = reg.ComponentInfo("sink", "rec", SpecRec, (), None, params, {"name": str})
    monkeypatch.setitem(reg.registered("sink"), "rec", info)
    return made


# ------------------------------------------------------------------ fan-out

def test_fanout_delivers_every_event_to_every_branch(ctx):
    a, b, c = Rec("a"), Rec("b"), Rec("c")
    f = FanOutSink([a, b, c])
    f.open(ctx)
    f.append(evs(b"1", b"2"))
    f.append(evs(b"3"))
    f.close()
    for r in (a, b, c):
        assert r.bodies == [b"1", b"2", b"3"]
        assert (r.opens, r.closes) == (1, 1)
    assert f.metrics["events_in"] == 3


def test_fanout_branches_do_not_see_each_others_changes(ctx):
    class Stamp(Rec):
        def append(self, events):
            for e in events:
                e.attrs["seen"] = self.name.encode()
                e.body = e.body.upper()
            super().append(events)

    a, b = Stamp("a"), Rec("b")
    f = FanOutSink([a, b])
    f.open(ctx)
    f.append(evs(b"x"))
    assert a.batches[0][0].attrs == {"seen": b"a"}
    assert b.batches[0][0].attrs == {} and b.bodies == [b"x"]
    assert a.batches[0][0] is not b.batches[0][0]


@pytest.mark.parametrize("first", ["columns", "events"])
def test_fanout_branches_of_a_fast_batch_do_not_see_each_others_changes(ctx, first):
    """A fast batch (node.event.Batch) is copied for each branch but the last, whether a
    branch stamps it as columns (set_attr) or as events."""
    class Stamp(Rec):
        def append(self, events):
            if first == "columns":
                set_attr(events, "seen", self.name.encode())
            else:
                for e in events:
                    e.attrs["seen"] = self.name.encode()
            super().append(events)

    a, b, c = Stamp("a"), Stamp("b"), Rec("c")
    f = FanOutSink([a, b, c])
    f.open(ctx)
    f.append(lines_batch([b"x", b"y"], {"k": b"v"}))
    assert [e.attrs for e in a.batches[0]] == [{"k": b"v", "seen": b"a"}] * 2
    assert [e.attrs for e in b.batches[0]] == [{"k": b"v", "seen": b"b"}] * 2
    assert [e.attrs for e in c.batches[0]] == [{"k": b"v"}] * 2 and c.bodies == [b"x", b"y"]


def test_fanout_failure_names_the_failed_branches(ctx):
    rs = [Rec(f"s{i}") for i in range(4)]
    rs[1].fail.add("append")
    rs[3].fail.add("append")
    f = FanOutSink(rs)
    f.open(ctx)
    with pytest.raises(SinkError) as ei:
        f.append(evs(b"x"))
    msg = str(ei.value)
    assert "2 of 4" in msg and "branch 1" in msg and "branch 3" in msg
    assert "branch 0" not in msg and "branch 2" not in msg
    assert rs[0].bodies == [b"x"] and rs[2].bodies == [b"x"]  # every branch was tried
    assert f.metrics["errors"] == 2


def test_fanout_open_failure_closes_the_opened_branches(ctx):
    a, b, c = Rec("a"), Rec("b"), Rec("c")
    b.fail.add("open")
    f = FanOutSink([a, b, c])
    with pytest.raises(SinkError):
        f.open(ctx)
    assert (a.opens, a.closes) == (1, 1)
    assert c.open_attempts == 0


def test_fanout_checkpoint_commits_only_when_every_branch_is_durable(ctx):
    a, b = Rec("a", hold=True), Rec("b", hold=True)
    f = FanOutSink([a, b])
    f.open(ctx)
    f.append(evs(b"x"))
    f.when_durable(Checkpoint({"pos": 1}))
    a.flush()
    assert ctx.store.get("pos") is None
    b.flush()
    assert ctx.store.get("pos") == 1
    f.append(evs(b"y"))
    f.when_durable(Checkpoint({"pos": 2}))
    b.flush()
    assert ctx.store.get("pos") == 1
    f.close()
    assert ctx.store.get("pos") == 2


def test_fanout_checkpoint_is_never_committed_when_a_branch_loses_its_events(ctx):
    a, b = Rec("a", hold=True), Rec("b", hold=True)
    f = FanOutSink([a, b])
    f.open(ctx)
    f.append(evs(b"x"))
    f.when_durable(Checkpoint({"pos": 1}))
    b.fail.add("close")
    with pytest.raises(SinkError):
        f.close()
    assert a.closes == 1          # every branch is closed even though one failed
    assert ctx.store.get("pos") is None


# ------------------------------------------------------------------ failover

@pytest.fixture
def mctx(make_ctx):
    clock = ManualClock()
    return make_ctx(clock=clock), clock


def test_failover_uses_the_backup_when_the_primary_fails(mctx):
    ctx, clock = mctx
    p, b = Rec("p"), Rec("b")
    fo = FailoverSink([p, b])
    fo.open(ctx)
    assert (p.opens, b.opens) == (1, 0)   # the backup opens only when needed
    fo.append(evs(b"1"))
    p.fail.add("append")
    fo.append(evs(b"2"))
    fo.append(evs(b"3"))
    assert p.bodies == [b"1"] and b.bodies == [b"2", b"3"]
    assert p.closes == 1                   # the failed primary was closed
    assert fo.metrics["failovers"] == 1


def test_failover_retries_the_primary_after_backoff(mctx):
    ctx, clock = mctx
    p, b = Rec("p"), Rec("b")
    fo = FailoverSink([p, b])
    fo.open(ctx)
    p.fail.add("append")
    fo.append(evs(b"1"))                   # primary fails: backoff 1 s
    p.fail.clear()
    clock.advance(0.9)
    fo.append(evs(b"2"))
    assert p.open_attempts == 1            # not retried before the backoff expires
    clock.advance(0.1)
    fo.append(evs(b"3"))
    assert p.open_attempts == 2 and p.bodies == [b"3"]
    assert b.bodies == [b"1", b"2"]
    # a success resets the backoff: the next failure waits 1 s again
    p.fail.add("append")
    fo.append(evs(b"4"))
    p.fail.clear()
    clock.advance(1.0)
    fo.append(evs(b"5"))
    assert p.bodies == [b"3", b"5"] and b.bodies == [b"1", b"2", b"4"]


def test_failover_backoff_doubles_up_to_60_seconds(mctx):
    ctx, clock = mctx
    p, b = Rec("p"), Rec("b")
    fo = FailoverSink([p, b])
    fo.open(ctx)
    p.fail.update({"append", "open"})
    fo.append(evs(b"x"))                   # fails at t=0: next try at t=1
    waits = []
    appends, last_attempts, last_t, t = 1, p.open_attempts, 0.0, 0.0
    while len(waits) < 9:
        clock.advance(0.5)
        t += 0.5
        fo.append(evs(b"x"))
        appends += 1
        if p.open_attempts != last_attempts:
            waits.append(t - last_t)
            last_attempts, last_t = p.open_attempts, t
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert len(b.bodies) == appends and p.bodies == []


def test_failover_never_loses_a_batch(mctx):
    ctx, clock = mctx
    p, b = Rec("p"), Rec("b")
    fo = FailoverSink([p, b])
    fo.open(ctx)
    p.fail.add("append")
    b.fail.add("append")
    with pytest.raises(SinkError, match="all 2 branches failed"):
        fo.append(evs(b"lost?"))
    assert fo.metrics["errors"] == 1
    b.fail.clear()
    clock.advance(1.0)
    fo.append(evs(b"retried"))             # the caller retries: it lands in the backup
    assert b.bodies == [b"retried"] and p.bodies == []


def test_failover_open_falls_back_and_fails_when_nothing_opens(mctx):
    ctx, clock = mctx
    p, b = Rec("p"), Rec("b")
    p.fail.add("open")
    fo = FailoverSink([p, b])
    fo.open(ctx)
    fo.append(evs(b"1"))
    assert b.bodies == [b"1"]
    p2, b2 = Rec("p"), Rec("b")
    p2.fail.add("open")
    b2.fail.add("open")
    with pytest.raises(SinkError):
        FailoverSink([p2, b2]).open(ctx)


def test_failover_checkpoint_waits_for_every_branch_holding_events(mctx):
    ctx, clock = mctx
    p, b = Rec("p", hold=True), Rec("b", hold=True)
    fo = FailoverSink([p, b])
    fo.open(ctx)
    fo.append(evs(b"1"))
    fo.when_durable(Checkpoint({"pos": 1}))
    p.fail.add("append")
    fo.append(evs(b"2"))                   # primary closed cleanly: pos 1 is durable
    assert ctx.store.get("pos") == 1
    fo.when_durable(Checkpoint({"pos": 2}))
    p.fail.clear()
    clock.advance(1.0)
    fo.append(evs(b"3"))                   # back on the primary; backup still holds "2"
    fo.when_durable(Checkpoint({"pos": 3}))
    p.flush()
    assert ctx.store.get("pos") == 1       # "2" is not durable yet
    b.flush()
    assert ctx.store.get("pos") == 3
    fo.close()


def test_failover_drops_checkpoints_after_losing_events(mctx):
    ctx, clock = mctx
    p, b = Rec("p", hold=True), Rec("b")
    fo = FailoverSink([p, b])
    fo.open(ctx)
    fo.append(evs(b"1"))
    fo.when_durable(Checkpoint({"pos": 1}))
    p.fail.update({"append", "close"})     # "1" is lost with the primary
    fo.append(evs(b"2"))
    fo.when_durable(Checkpoint({"pos": 2}))
    assert ctx.store.get("pos") is None
    assert fo.metrics["checkpoints_dropped"] == 1


def test_failover_close_closes_every_open_branch(mctx):
    ctx, clock = mctx
    p, b = Rec("p"), Rec("b")
    fo = FailoverSink([p, b])
    fo.open(ctx)
    p.fail.add("append")
    fo.append(evs(b"1"))
    p.fail.clear()
    clock.advance(1.0)
    fo.append(evs(b"2"))                   # both open now
    p.fail.add("close")
    with pytest.raises(SinkError):
        fo.close()
    assert b.closes == 1 and not b.is_open
    fo.close()                             # idempotent
    assert (p.closes, b.closes) == (2, 1)


# ------------------------------------------------------------------ let, and the builder

def test_let_shares_one_instance(rec_sink, ctx):
    s = build_sink(parse_sink('let x := rec("a") in [ x, x ]'))
    assert isinstance(s, FanOutSink)
    assert all(isinstance(br, SharedRef) for br in s.branches)
    (target,) = rec_sink["a"]
    s.open(ctx)
    assert target.opens == 1
    s.append(evs(b"1", b"2"))
    assert target.bodies == [b"1", b"2", b"1", b"2"]
    s.when_durable(Checkpoint({"pos": 5}))
    assert ctx.store.get("pos") == 5
    s.close()
    assert target.closes == 1
    s.close()
    assert target.closes == 1


def test_let_in_a_failover(rec_sink, ctx):
    s = build_sink(parse_sink('let x := rec("a") in < rec("p") ? [ x, rec("q") ] ? x >'))
    s.open(ctx)
    (p,) = rec_sink["p"]
    p.fail.add("append")
    s.append(evs(b"1"))
    (target,) = rec_sink["a"]
    assert target.bodies == [b"1"] and rec_sink["q"][0].bodies == [b"1"]
    s.close()
    assert (target.opens, target.closes) == (1, 1)


def test_builder_makes_fanout_and_failover_with_default_backoff(rec_sink):
    f = build_sink(parse_sink('[ rec("a"), < rec("b") ? rec("c") > ]'))
    assert isinstance(f, FanOutSink) and isinstance(f.branches[1], FailoverSink)
    fo = f.branches[1]
    assert (fo.initial, fo.maximum) == (1.0, 60.0)
    assert [br.sink.name for br in fo.branches] == ["b", "c"]


def test_spec_constructs_with_the_real_test_connectors(ctx):
    from flume_og.node.sinks.collect import collected, reset

    for n in ("cmb-a", "cmb-b", "cmb-c"):
        reset(n)
    s = build_sink(parse_sink('let x := collect("cmb-a") in '
                              '[ x, x, < fail("down") ? collect("cmb-b") >, collect("cmb-c") ]'))
    s.open(ctx)
    s.append(evs(b"1", b"2"))
    s.when_durable(Checkpoint({"pos": 1}))
    s.close()
    assert [e.body for e in collected("cmb-a")] == [b"1", b"2", b"1", b"2"]
    assert [e.body for e in collected("cmb-b")] == [b"1", b"2"]
    assert [e.body for e in collected("cmb-c")] == [b"1", b"2"]
    assert ctx.store.get("pos") == 1
