"""roll and collector: time and size triggers, idle close by the trigger thread, rolltag,
checkpoints committed when an instance closes, failures, no thread leak."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from flume_og.node.checkpoint import Checkpoint
from flume_og.node.clock import ManualClock
from flume_og.node.component import Sink
from flume_og.node.decorators.collector import CollectorRollSink
from flume_og.node.decorators.roll import RollSink, Trigger
from flume_og.node.errors import SinkError, SpecError
from flume_og.node.event import Event
from flume_og.node.builder import build_sink
from flume_og.node.spec import Func, Lit, parse_sink
from tests.waiting import wait_until as wait_for




def evs(*bodies: bytes) -> list[Event]:
    return [Event(b) for b in bodies]


class FileRec(Sink):
    """A file sink like ``dfs``: writes a hidden file, renames it to its final name on close
    (in the same commit as the checkpoints it holds). Records its lifecycle in ``log``."""

    def __init__(self, outdir: Path, log: list, index: int, fail: dict):
        super().__init__()
        self.outdir, self.log, self.index, self.fail = outdir, log, index, fail
        self.f = None
        self.cps: list = []
        self.tags: set = set()

    @property
    def final(self) -> Path:
        return self.outdir / f"part-{self.index:03d}"

    @property
    def hidden(self) -> Path:
        return self.outdir / f".part-{self.index:03d}.tmp"

    def open(self, ctx) -> None:
        self.ctx = ctx
        if self.fail.get("open"):
            raise SinkError("open refused")
        self.f = open(self.hidden, "wb")
        self.log.append(("open", self.index))

    def append(self, events) -> None:
        if self.f is None:  # would be a roll bug: append on a closed instance
            self.log.append(("append-after-close", self.index))
            raise SinkError("closed")
        self.f.write(b"".join(e.body + b"\n" for e in events))
        self.tags.update(e.attrs["rolltag"] for e in events)

    def when_durable(self, cp) -> None:
        self.cps.append(cp)

    def close(self) -> None:
        if self.f is None:
            return
        f, self.f = self.f, None
        if self.fail.get("slow"):
            time.sleep(0.002)  # slow storage: widens the window a racing append could hit
        f.flush()
        os.fsync(f.fileno())
        f.close()
        if self.fail.get("close"):
            self.log.append(("close-failed", self.index))
            raise SinkError("close failed")
        self.ctx.store.commit(self.cps, renames=[(self.hidden, self.final)])
        self.log.append(("close", self.index))


class Factory:
    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.log: list = []
        self.made: list[FileRec] = []
        self.fail: dict = {}

    def __call__(self) -> FileRec:
        s = FileRec(self.outdir, self.log, len(self.made), self.fail)
        self.made.append(s)
        return s

    def count(self, what: str) -> int:
        return sum(1 for w, _ in self.log if w == what)

    def finals(self) -> list[str]:
        return sorted(p.name for p in self.outdir.iterdir() if not p.name.startswith("."))


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def fac(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return Factory(d)


@pytest.fixture
def roll_open(make_ctx, clock, fac):
    opened = []

    def make(cls=RollSink, **kw):
        kw.setdefault("rollmillis", 1000)
        kw.setdefault("checkmillis", 100)
        ctx = make_ctx(clock=clock)
        r = cls(fac, **kw)
        r.open(ctx)
        opened.append(r)
        return r, ctx

    yield make
    for r in opened:
        try:
            r.close()
        except SinkError:
            pass


def roll_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("roll-trigger")]


def test_trigger_thread_closes_an_idle_file_on_time(roll_open, clock, fac):
    r, _ = roll_open()
    r.append(evs(b"a", b"b"))
    r.append(evs(b"c"))
    assert fac.finals() == []             # still the hidden file
    clock.advance(0.5)
    clock.settle()                        # a (wrong) early roll would be done by now
    assert fac.count("close") == 0
    clock.advance(0.5)                    # no event arrives: the thread must roll
    wait_for(lambda: fac.count("close") == 1)
    assert fac.finals() == ["part-000"]
    assert (fac.outdir / "part-000").read_bytes() == b"a\nb\nc\n"
    wait_for(lambda: fac.count("open") == 2)   # a fresh instance is open
    assert r.metrics["rolls"] == 1


def test_idle_periods_make_no_empty_files(roll_open, clock, fac):
    r, _ = roll_open()
    for _ in range(3):
        tag = r.current_tag
        clock.advance(1.0)
        wait_for(lambda: r.current_tag != tag)  # the thread saw the period end
    r.append(evs(b"x"))
    clock.settle()
    assert fac.count("close") == 0 and fac.count("open") == 1
    clock.advance(1.0)
    wait_for(lambda: fac.count("close") == 1)
    assert fac.finals() == ["part-000"]


def test_append_after_deadline_goes_to_the_new_instance(make_ctx, clock, fac):
    # checkmillis huge: only append sees the deadline
    r = RollSink(fac, rollmillis=1000, checkmillis=3_600_000)
    r.open(make_ctx(clock=clock))
    try:
        r.append(evs(b"old"))
        clock.advance(1.0)
        r.append(evs(b"new"))
        assert fac.count("close") == 1
        assert (fac.outdir / "part-000").read_bytes() == b"old\n"
    finally:
        r.close()
    assert (fac.outdir / "part-001").read_bytes() == b"new\n"


def test_size_trigger_rolls_after_n_body_bytes(roll_open, fac, clock):
    r, _ = roll_open(rollmillis=60_000, trigger=Trigger("size", 10))
    r.append(evs(b"1234", b"5678"))          # 8 bytes
    assert fac.count("close") == 0
    r.append(evs(b"9a"))                     # 10 bytes: roll right after this batch
    assert fac.count("close") == 1
    assert (fac.outdir / "part-000").read_bytes() == b"1234\n5678\n9a\n"
    r.append(evs(b"bcdefghijklm"))           # one batch over the limit: its own file
    assert fac.count("close") == 2
    r.append(evs(b"x"))
    # the time rule still applies with a size trigger
    clock.advance(60.0)
    wait_for(lambda: fac.count("close") == 3)
    assert fac.finals() == ["part-000", "part-001", "part-002"]
    assert (fac.outdir / "part-002").read_bytes() == b"x\n"


def test_rolltag_is_stamped_and_differs_per_roll(roll_open, fac, clock):
    r, _ = roll_open()
    batch1 = evs(b"a", b"b")
    r.append(batch1)
    clock.advance(1.0)
    wait_for(lambda: fac.count("open") == 2)
    batch2 = evs(b"c")
    r.append(batch2)
    t1 = {e.attrs["rolltag"] for e in batch1}
    t2 = {e.attrs["rolltag"] for e in batch2}
    assert len(t1) == 1 and len(t2) == 1 and t1 != t2
    tag1, tag2 = t1.pop(), t2.pop()
    assert isinstance(tag1, bytes)
    assert tag1.startswith(b"20200913-122640000+0000.")   # ManualClock's start, UTC
    assert tag1 < tag2                                     # sorts by roll order
    assert fac.made[0].tags == {tag1} and fac.made[1].tags == {tag2}


def test_checkpoints_commit_when_the_instance_closes(roll_open, fac, clock):
    r, ctx = roll_open()
    r.append(evs(b"a"))
    r.when_durable(Checkpoint({"k": 1}))
    r.append(evs(b"b"))
    r.when_durable(Checkpoint({"k": 2}))
    clock.settle()
    assert ctx.store.get("k") is None
    clock.advance(1.0)
    wait_for(lambda: ctx.store.get("k") == 2)
    assert fac.finals() == ["part-000"]
    # nothing appended since the roll: the position is already durable
    r.when_durable(Checkpoint({"k": 3}))
    assert ctx.store.get("k") == 3


def test_close_flushes_and_commits(make_ctx, clock, fac):
    ctx = make_ctx(clock=clock)
    r = RollSink(fac, rollmillis=1000, checkmillis=100)
    r.open(ctx)
    r.append(evs(b"a", b"b"))
    r.when_durable(Checkpoint({"k": 7}))
    r.close()
    assert fac.finals() == ["part-000"]
    assert (fac.outdir / "part-000").read_bytes() == b"a\nb\n"
    assert ctx.store.get("k") == 7
    r.close()  # idempotent
    assert fac.count("close") == 1


def test_trigger_thread_stops_at_close(make_ctx, clock, fac):
    before = set(roll_threads())
    r = RollSink(fac, rollmillis=1000, checkmillis=100)
    r.open(make_ctx(clock=clock))
    started = set(roll_threads()) - before
    assert len(started) == 1
    r.close()
    (t,) = started
    assert not t.is_alive()
    assert t not in threading.enumerate()
    clock.advance(5.0)
    clock.settle()
    assert fac.count("open") == 1     # nothing reopened after close


def test_failed_close_drops_later_checkpoints_but_keeps_data_flowing(roll_open, fac, clock):
    r, ctx = roll_open()
    r.append(evs(b"a"))
    r.when_durable(Checkpoint({"k": 1}))
    fac.fail["close"] = True
    clock.advance(1.0)
    wait_for(lambda: fac.count("close-failed") == 1)
    fac.fail.clear()
    wait_for(lambda: fac.count("open") == 2)
    assert r.metrics["rollfails"] == 1 and r.metrics["errors"] == 1
    # data flows to the new instance ...
    r.append(evs(b"b"))
    r.when_durable(Checkpoint({"k": 2}))
    clock.advance(1.0)
    wait_for(lambda: fac.count("close") == 1)
    assert (fac.outdir / "part-001").read_bytes() == b"b\n"
    # ... but no position past the lost events is ever committed
    assert ctx.store.get("k") is None
    r.when_durable(Checkpoint({"k": 3}))
    assert ctx.store.get("k") is None
    assert r.metrics["checkpoints_dropped"] == 2


def test_failed_open_raises_from_append_then_recovers(roll_open, fac, clock):
    r, _ = roll_open()
    r.append(evs(b"a"))
    fac.fail["open"] = True
    clock.advance(1.0)
    wait_for(lambda: fac.count("close") == 1)
    with pytest.raises(SinkError):
        r.append(evs(b"lost?"))
    assert r.metrics["errors"] >= 1
    fac.fail.clear()
    clock.advance(0.1)                        # the next trigger check retries
    wait_for(lambda: fac.count("open") == 2)
    r.append(evs(b"b"))
    r.close()
    assert fac.finals() == ["part-000", f"part-{len(fac.made) - 1:03d}"]


def test_failed_initial_open_raises_and_close_is_harmless(make_ctx, clock, fac):
    fac.fail["open"] = True
    before = set(roll_threads())
    r = RollSink(fac, rollmillis=1000)
    with pytest.raises(SinkError):
        r.open(make_ctx(clock=clock))
    assert set(roll_threads()) == before
    r.close()


def test_appends_racing_rolls_never_hit_a_closing_instance(roll_open, fac, clock):
    r, _ = roll_open(checkmillis=1)
    fac.fail["slow"] = True
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            clock.advance(0.5)
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    n = 0

    def append_until_five_rolls() -> bool:
        nonlocal n
        if fac.count("close") >= 5:
            return True
        r.append(evs(b"%d" % n, b"%d" % (n + 1)))
        n += 2
        return False
    try:
        wait_for(append_until_five_rolls, 5, "five rolls while appending", interval=0)
    finally:
        stop.set()
        t.join()
    r.close()
    assert fac.count("append-after-close") == 0
    assert fac.count("close") >= 5
    lines = b"".join((fac.outdir / f).read_bytes() for f in fac.finals()).split()
    assert sorted(int(x) for x in lines) == list(range(n))


def test_collector_is_a_roll_with_a_close_hook(make_ctx, clock, fac):
    closed = []

    class Hooked(CollectorRollSink):
        def on_inner_closed(self, tag, durable):
            closed.append((tag, durable))

    r = Hooked(fac, rollmillis=2000)
    assert r.checkmillis == 250 and r.trigger == Trigger("time")
    r.open(make_ctx(clock=clock))
    try:
        batch = evs(b"a")
        r.append(batch)
        clock.advance(2.0)
        wait_for(lambda: len(closed) == 1)
        assert closed == [(batch[0].attrs["rolltag"], True)]
        clock.advance(2.0)  # idle: no instance closed, no hook
        clock.settle()
        assert len(closed) == 1
    finally:
        r.close()
    assert len(closed) == 1


# ------------------------------------------------------------------ spec arguments

def test_trigger_from_spec():
    assert Trigger.from_spec(Func("time")) == Trigger("time")
    assert Trigger.from_spec(Func("size", (Lit(100, "int"),))) == Trigger("size", 100)
    for bad in (Func("size"), Func("size", (Lit("1", "string"),)), Func("bytes"),
                Func("size", (Lit(0, "int"),)), Lit(5, "int")):
        with pytest.raises(ValueError):
            Trigger.from_spec(bad)


@pytest.fixture
def x_sink(monkeypatch):
    """Registers a test sink ``x`` (a plain Sink keeping every batch) for spec tests."""
    import flume_og.node.components  # noqa: F401  (the table complete before adding to it)
    import flume_og.node.registry as reg

    class X(Sink):
        made: list = []

        def __init__(self):
            super().__init__()
            self.got: list = []
            X.made.append(self)

        def append(self, events):
            self.got.extend(events)

    monkeypatch.setitem(reg.registered("sink"), "x", reg.ComponentInfo("sink", "x", X))
    return X


def test_spec_builds_roll_and_collector(x_sink, make_ctx, clock):
    r = build_sink(parse_sink("roll(1000, trigger=size(3)) { x }"))
    assert type(r) is RollSink
    assert (r.rollmillis, r.checkmillis, r.trigger) == (1000, 250, Trigger("size", 3))
    r2 = build_sink(parse_sink("roll(500, 20, trigger=time) { x }"))
    assert (r2.rollmillis, r2.checkmillis, r2.trigger) == (500, 20, Trigger("time"))
    c = build_sink(parse_sink("collector(5000) { x }"))
    assert type(c) is CollectorRollSink and c.rollmillis == 5000
    assert build_sink(parse_sink("collector { x }")).rollmillis == 30000
    # every roll gets a fresh instance built from the spec
    x_sink.made.clear()
    r.open(make_ctx(clock=clock))
    try:
        r.append(evs(b"abc"))
        r.append(evs(b"d"))
    finally:
        r.close()
    assert len(x_sink.made) == 2 and x_sink.made[0] is not x_sink.made[1]
    assert [e.body for e in x_sink.made[0].got] == [b"abc"]
    assert [e.body for e in x_sink.made[1].got] == [b"d"]


@pytest.mark.parametrize("text, msg", [
    ("roll(0) { x }", "rollmillis must be > 0"),
    ("roll(10, trigger=size) { x }", "size(bytes)"),
    ("roll(10, trigger=sizes(5)) { x }", "trigger must be time or size(bytes)"),
    ("roll(10, trigger=size(-1)) { x }", "positive"),
    ("roll { x }", "rollmillis"),
])
def test_bad_roll_specs_are_spec_errors(text, msg, x_sink):
    with pytest.raises(SpecError) as ei:
        build_sink(parse_sink(text))
    assert msg in str(ei.value)


def test_roll_over_the_collect_connector_from_a_spec(make_ctx, clock):
    from flume_og.node.sinks.collect import collected, reset

    reset("roll-spec")
    r = build_sink(parse_sink('roll(1000, 100) { collect("roll-spec") }'))
    r.open(make_ctx(clock=clock))
    try:
        r.append(evs(b"a"))
        tag = r.current_tag
        clock.advance(1.0)
        wait_for(lambda: r.current_tag != tag)
        r.append(evs(b"b"))
    finally:
        r.close()
    got = collected("roll-spec")
    assert [e.body for e in got] == [b"a", b"b"]
    assert got[0].attrs["rolltag"] != got[1].attrs["rolltag"]


def test_roll_over_the_real_dfs_sink(make_ctx, clock, tmp_path):
    out = tmp_path / "logs"
    spec = f'roll(1000, 100) {{ escapedCustomDfs("{out}", "part-%{{rolltag}}") }}'
    r = build_sink(parse_sink(spec))
    ctx = make_ctx(clock=clock)
    r.open(ctx)

    def visible():
        return sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) \
            if out.exists() else []

    try:
        r.append(evs(b"a", b"b"))
        r.when_durable(Checkpoint({"pos": 2}))
        tag1 = r.current_tag
        assert visible() == [] and any(out.iterdir())   # written, still hidden
        assert ctx.store.get("pos") is None
        clock.advance(1.0)                              # idle: the trigger thread closes it
        wait_for(lambda: visible() == [f"part-{tag1.decode()}"])
        assert (out / f"part-{tag1.decode()}").read_bytes() == b"a\nb\n"
        assert ctx.store.get("pos") == 2
        r.append(evs(b"c"))
        r.when_durable(Checkpoint({"pos": 3}))
        tag2 = r.current_tag
        assert tag2 != tag1
    finally:
        r.close()
    assert visible() == sorted([f"part-{tag1.decode()}", f"part-{tag2.decode()}"])
    assert (out / f"part-{tag2.decode()}").read_bytes() == b"c\n"
    assert ctx.store.get("pos") == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_roll_now_waits_for_the_checkpoint_of_a_group_on_its_way(make_ctx, clock, fac):
    """An administrative roll (``roll_now``) does not close the file between an append and
    the checkpoint that follows it while an E2E group is on its way, as the trigger thread
    does not: the group's checkpoint reaches the instance holding its events."""
    from flume_og.node.e2e import HeldState
    from flume_og.node.e2e.collector import CollectorState

    r = CollectorRollSink(fac, rollmillis=60_000)
    r.open(make_ctx(clock=clock))
    r.state = CollectorState(None, "c1")      # as under ZooKeeper: a group in the flow
    r.state.held[("agentA", 1)] = HeldState.QUEUED
    try:
        r.append(evs(b"a", b"b"))
        rolled = threading.Event()
        t = threading.Thread(target=lambda: (r.roll_now(), rolled.set()))
        t.start()
        assert not rolled.wait(0.3), "rolled before the group's checkpoint arrived"
        r.state.held[("agentA", 1)] = HeldState.WRITTEN
        r.when_durable(Checkpoint({"pos": 2}))
        assert rolled.wait(10)
        t.join(10)
        assert [cp.updates for cp in fac.made[0].cps] == [{"pos": 2}]
        assert fac.count("close") == 1
    finally:
        r.state = None
        r.close()
