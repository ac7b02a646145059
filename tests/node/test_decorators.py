"""Every decorator, each built through the real spec builder."""
from __future__ import annotations

import base64
import hashlib
import threading
import zlib

import pytest

from flume_og.node.checkpoint import Checkpoint
from flume_og.node.clock import ManualClock
from flume_og.node.component import Sink
from flume_og.node.decorators.balance import BalanceSink
from flume_og.node.decorators.batch import BATCH_ATTR, decode_events, encode_events
from flume_og.node.decorators.choke import ChokeLimiter, set_choke_limit
from flume_og.node.decorators.gzip import GZIP_ATTR
from flume_og.node.decorators.insistent_append import InsistentAppendDecorator
from flume_og.node.decorators.insistent_open import InsistentOpenDecorator
from flume_og.node.decorators.lazy_open import LazyOpenDecorator
from flume_og.node.decorators.stubborn_append import StubbornAppendDecorator
from flume_og.node.errors import SinkError, SpecError
from flume_og.node.event import Event, Priority
from flume_og.node.builder import build_sink
from flume_og.node.sinks.collect import collected, reset
from flume_og.node.spec import parse_sink
from tests.waiting import wait_until as wait_for

pytestmark = pytest.mark.timeout(30)

SINKS = ("x", "y", "b0", "b1", "b2", "wire", "rt")


@pytest.fixture(autouse=True)
def _clean_collect():
    for name in SINKS:
        reset(name)
    yield
    for name in SINKS:
        reset(name)


def build(text: str, ctx) -> Sink:
    s = build_sink(parse_sink(text))
    s.open(ctx)
    return s


def ev(body: bytes | str, i: int = 0, **kw) -> Event:
    if isinstance(body, str):
        body = body.encode()
    return Event(body, kw.pop("timestamp", 1_600_000_000_000 + i), kw.pop("nanos", i),
                 kw.pop("priority", Priority.INFO), kw.pop("host", "h1"),
                 kw.pop("attrs", {}))


def evs(n: int, start: int = 0, **kw) -> list[Event]:
    return [ev(f"line {i}", i, **kw) for i in range(start, start + n)]




def bodies(events) -> list[bytes]:
    return [e.body for e in events]


def unpacked(name: str) -> list[Event]:
    out = []
    for e in collected(name):
        assert BATCH_ATTR in e.attrs
        out.extend(decode_events(e.body))
    return out


class StepClock(ManualClock):
    """A ManualClock that records each wait (its length) as it starts, so a test can
    advance time knowing the waiter's deadline is already fixed."""

    def __init__(self):
        super().__init__()
        self.waits: list[float] = []

    def wait(self, event, seconds):
        with self._cond:
            self.waits.append(seconds)
            self._wait_until(event.is_set, self._mono + seconds)
        return event.is_set()

    def waiting(self, n: int) -> None:
        """Block until at least ``n`` waits have started."""
        wait_for(lambda: len(self.waits) >= n, what=f"{n} clock waits")


class Scripted(Sink):
    """A test sink: fails the next ``fail_opens`` opens and ``fail_appends`` appends, and
    holds checkpoints until ``make_durable()``."""

    def __init__(self, fail_opens: int = 0, fail_appends: int = 0):
        super().__init__()
        self.fail_opens = fail_opens
        self.fail_appends = fail_appends
        self.opens = self.closes = 0
        self.is_open = False
        self.got: list[Event] = []
        self.held: list[Checkpoint] = []

    def open(self, ctx):
        self.ctx = ctx
        self.opens += 1
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise SinkError("scripted open failure")
        self.is_open = True

    def append(self, events):
        assert self.is_open, "append on a sink that is not open"
        if self.fail_appends > 0:
            self.fail_appends -= 1
            raise SinkError("scripted append failure")
        self.got.extend(events)

    def when_durable(self, cp):
        self.held.append(cp)

    def make_durable(self):
        held, self.held = self.held, []
        self.ctx.store.commit(held)

    def close(self):
        if self.is_open:
            self.closes += 1
        self.is_open = False


# ------------------------------------------------------------------ batch / gzip


def test_batch_format_round_trip_keeps_every_field():
    events = [
        Event(b"", 0, 0, Priority.FATAL, "", {}),
        Event(bytes(range(256)) * 3, 1_700_000_000_123, 2**62, Priority.TRACE, "höst-ü",
              {"a": b"1", "ünï": b"\x00\xff", "empty": b""}),
        Event(b"x" * 70000, -5, 7, Priority.WARN, "h", {"k" * 300: b"v" * 100000}),
    ]
    data = encode_events(events)
    assert data[:3] == b"FLB" and data[3] == 2
    assert decode_events(data) == events
    with pytest.raises(ValueError):
        decode_events(data[:-1])
    with pytest.raises(ValueError):
        decode_events(data + b"\x00")
    with pytest.raises(ValueError):
        decode_events(b"XXX" + data[3:])


def test_equal_attributes_are_packed_once_and_decoded_into_separate_dicts():
    events = [Event(b"%d" % i, i, i, Priority.INFO, "h", {"tailSrcFile": b"app.log"})
              for i in range(3)] + [Event(b"other", 9, 9, Priority.INFO, "h", {"k": b"v"})]
    data = encode_events(events)
    assert data.count(b"app.log") == 1
    out = decode_events(data)
    assert out == events
    out[0].attrs["new"] = b"1"            # a decorator setting an attribute on one event
    assert "new" not in out[1].attrs
    # an attribute block whose value runs past the block is refused
    broken = bytearray(data)
    at = data.index(b"tailSrcFile") - 4   # valuelen of the shared block
    broken[at:at + 4] = (1000).to_bytes(4, "big")
    with pytest.raises(ValueError):
        decode_events(bytes(broken))


def test_version_1_batches_are_still_read():
    import struct
    ev = [(b"one", 1, 2, 3, {"a": b"x", "bb": b""}), (b"two", 4, 5, 0, {})]
    head = struct.pack(">3sBII", b"FLB", 1, len(ev), 1) + struct.pack(">H", 1) + b"h"
    recs = b"".join(struct.pack(">qqBIIH", ts, ns, pr, 0, len(body), len(attrs))
                    for body, ts, ns, pr, attrs in ev)
    bodies = b"".join(e[0] for e in ev)
    attrs = b"".join(struct.pack(">HI", len(k), len(v)) + k.encode() + v
                     for e in ev for k, v in e[4].items())
    out = decode_events(head + recs + bodies + attrs)
    assert out == [Event(body, ts, ns, Priority(pr), "h", a) for body, ts, ns, pr, a in ev]
    with pytest.raises(ValueError):
        decode_events(head + recs + bodies + attrs[:-1])


def test_batch_packs_n_events_and_flushes_the_rest_at_close(ctx):
    s = build('{ batch(3) => collect("x") }', ctx)
    s.append(evs(2))
    assert collected("x") == []
    s.append(evs(3, 2))
    assert len(collected("x")) == 1
    s.append(evs(5, 5))                       # 10 events in all: 3 full batches
    assert [e.attrs[BATCH_ATTR] for e in collected("x")] == [b"3", b"3", b"3"]
    s.close()
    assert [e.attrs[BATCH_ATTR] for e in collected("x")] == [b"3", b"3", b"3", b"1"]
    assert unpacked("x") == evs(10)


def test_batch_append_is_all_or_nothing(ctx):
    # the inner fails every second append: the refused events are not kept by batch
    s = build('{ batch(2) => intervalFlakeyAppend(2) => collect("x") }', ctx)
    s.append(evs(2))
    with pytest.raises(SinkError):
        s.append(evs(2, 2))
    s.append(evs(2, 2))                       # the caller's retry
    s.close()
    assert unpacked("x") == evs(4)


def test_batch_latency_timer_flushes_a_partial_batch(make_ctx):
    clock = ManualClock()
    ctx = make_ctx(clock=clock)
    s = build('{ batch(100, 1000) => collect("x") }', ctx)
    timer = s._timer
    assert timer is not None and timer.is_alive()
    s.append(evs(2))
    clock.advance(0.5)
    clock.settle()  # the timer has seen the time: a wrong flush would be done
    assert collected("x") == []
    clock.advance(0.6)
    wait_for(lambda: len(collected("x")) == 1, what="the timed flush")
    assert unpacked("x") == evs(2)
    # a new partial batch gets its own full latency
    s.append(evs(1, 2))
    clock.advance(0.9)
    clock.settle()
    assert len(collected("x")) == 1
    clock.advance(0.2)
    wait_for(lambda: len(collected("x")) == 2, what="the second timed flush")
    s.close()
    assert not timer.is_alive()
    assert unpacked("x") == evs(3)
    assert s.metrics["timeouts"] == 2


def test_batch_holds_checkpoint_until_its_events_are_passed_on(ctx):
    s = build('{ batch(3) => collect("x") }', ctx)
    s.append(evs(2))
    s.when_durable(Checkpoint({"pos": 2}))
    assert ctx.store.get("pos") is None       # its events are still buffered
    s.append(evs(1, 2))                       # completes the batch
    assert ctx.store.get("pos") == 2
    s.when_durable(Checkpoint({"pos": 3}))    # nothing buffered: straight through
    assert ctx.store.get("pos") == 3
    s.append(evs(1, 3))
    s.when_durable(Checkpoint({"pos": 4}))
    assert ctx.store.get("pos") == 3
    s.close()                                 # the close flush releases it
    assert ctx.store.get("pos") == 4


def test_batch_checkpoint_released_by_timer_flush(make_ctx):
    clock = ManualClock()
    ctx = make_ctx(clock=clock)
    s = build('{ batch(10, 200) => collect("x") }', ctx)
    s.append(evs(4))
    s.when_durable(Checkpoint({"pos": 4}))
    assert ctx.store.get("pos") is None
    clock.advance(0.3)
    wait_for(lambda: ctx.store.get("pos") == 4, what="the checkpoint after the timed flush")
    assert len(collected("x")) == 1
    s.close()


def test_batch_rejects_bad_size():
    with pytest.raises(SpecError):
        build_sink(parse_sink('{ batch(0) => collect("x") }'))


def test_batch_gzip_gunzip_unbatch_round_trip(ctx):
    events = [ev("plain", 1),
              ev(b"\x00\x01binary\xff", 2, priority=Priority.ERROR, host="other"),
              ev("", 3, attrs={"a": b"x", "b": b""}),
              ev("é" * 1000, 4, nanos=123456789012345, priority=Priority.TRACE),
              ev("last", 5, timestamp=42)]
    s = build('{ batch(4) => gzip => [ collect("wire"), '
              '{ gunzip => unbatch => collect("rt") } ] }', ctx)
    s.append(events)
    s.close()
    wire = collected("wire")
    assert len(wire) == 2
    for w in wire:
        assert w.attrs[GZIP_ATTR] == b"1" and BATCH_ATTR in w.attrs
        assert decode_events(zlib.decompress(w.body, 31))   # a gzip stream of a batch
    assert sum(len(w.body) for w in wire[:1]) < len(encode_events(events[:4]))
    assert collected("rt") == events


def test_unbatch_and_gunzip_pass_other_events_through(ctx):
    s = build('{ gunzip => unbatch => collect("x") }', ctx)
    plain = evs(3)
    s.append(plain)
    assert collected("x") == plain


def test_unbatch_passes_a_corrupt_batch_on_and_counts_it(ctx):
    s = build('{ unbatch => collect("x") }', ctx)
    bad = ev(b"not a batch", attrs={BATCH_ATTR: b"3"})
    s.append([bad] + evs(1))
    assert collected("x") == [bad] + evs(1)
    assert s.metrics["refused_malformed"] == 1 and s.metrics["refused"] == 1


def test_gzip_does_not_change_the_events_it_is_given(ctx):
    s = build('[ { gzip => collect("x") }, collect("y") ]', ctx)
    s.append(evs(2))
    assert collected("y") == evs(2)
    assert all(zlib.decompress(e.body, 31) == o.body for e, o in zip(collected("x"), evs(2)))


# ------------------------------------------------------------------ attributes


def test_value_sets_an_attribute(ctx):
    s = build('{ value("dc", "east") => value("who", "%{host}-x", escape=true) => '
              'value("raw", "%{host}") => collect("x") }', ctx)
    s.append([ev("a", host="web1", attrs={"dc": b"old"})])
    (e,) = collected("x")
    assert e.attrs == {"dc": b"east", "who": b"web1-x", "raw": b"%{host}"}


def test_mask_and_select(ctx):
    attrs = {"a": b"1", "b": b"2", "c": b"3"}
    s = build('[ { mask("a", "c") => collect("x") }, { select("a", "c") => collect("y") } ]',
              ctx)
    s.append([ev("e", attrs=dict(attrs)), ev("f")])
    assert [e.attrs for e in collected("x")] == [{"b": b"2"}, {}]
    assert [e.attrs for e in collected("y")] == [{"a": b"1", "c": b"3"}, {}]
    assert bodies(collected("x")) == [b"e", b"f"]
    with pytest.raises(SpecError):
        build_sink(parse_sink('{ mask => collect("x") }'))


def test_format_replaces_the_body(ctx):
    s = build('{ format("%{host} [%{priority}] %{body} %Y", utc=true) => collect("x") }', ctx)
    s.append([ev("hello", host="web1", priority=Priority.WARN, timestamp=0)])
    assert bodies(collected("x")) == [b"web1 [WARN] hello 1970"]


# ------------------------------------------------------------------ extractors


def test_regex_regexall_split(ctx):
    s = build('{ regex("(\\\\w+)=(\\\\d+)", 2, "num") => '
              'regexAll("(\\\\w+)=(\\\\d+)", "key", "val") => '
              'split(" +", 1, "second") => collect("x") }', ctx)
    s.append([ev("abc x=42  tail"), ev("nothing here"), ev("one")])
    a, b, c = collected("x")
    assert a.attrs == {"num": b"42", "key": b"x", "val": b"42", "second": b"x=42"}
    assert b.attrs == {"num": b"", "second": b"here"}          # regexAll sets nothing
    assert c.attrs == {"num": b"", "second": b""}


def test_split_with_groups_and_trailing_empties(ctx):
    s = build('{ split("(,)", 2, "p") => collect("x") }', ctx)
    s.append([ev("a,b,c"), ev("a,b,,,")])
    assert [e.attrs["p"] for e in collected("x")] == [b"c", b""]


def test_regex_keeps_exact_bytes_of_non_utf8_bodies(ctx):
    s = build('{ regex("^(\\\\S+)", 1, "first") => collect("x") }', ctx)
    s.append([ev(b"\xff\xfeab cd")])
    assert collected("x")[0].attrs["first"] == b"\xff\xfeab"


@pytest.mark.parametrize("spec", ['regex("(", 1, "a")', 'regex("(a)", 2, "a")',
                                  'regexAll("(a)", "x", "y")', 'split("x", -1, "a")'])
def test_extractor_argument_errors(spec):
    with pytest.raises(SpecError):
        build_sink(parse_sink(f'{{ {spec} => collect("x") }}'))


# ------------------------------------------------------------------ exDate / digest


def test_exdate(ctx):
    s = build('[ { exDate("d", "yyyy-MM-dd HH:mm:ss.SSS") => collect("x") }, '
              '{ exDate("d", "dd/MMM/yy:hh:mm a", "my_", false) => collect("y") } ]', ctx)
    s.append([ev("a", attrs={"d": b"2011-03-04 05:06:07.890"})])
    assert collected("x")[0].attrs == {
        "d": b"2011-03-04 05:06:07.890", "dateyear": b"2011", "datemonth": b"03",
        "dateday": b"04", "datehour": b"05", "dateminute": b"06", "datesecond": b"07"}
    assert collected("y")[0].attrs == {"d": b"2011-03-04 05:06:07.890"}   # no parse
    assert s.branches[1].metrics["parse_errors"] == 1
    reset("x")
    reset("y")
    s.append([ev("b", attrs={"d": b"09/Feb/99:03:04 PM"}), ev("missing")])
    assert collected("y")[0].attrs == {
        "d": b"09/Feb/99:03:04 PM", "my_year": b"1999", "my_month": b"2", "my_day": b"9",
        "my_hour": b"15", "my_minute": b"4", "my_second": b"0"}
    assert collected("y")[1].attrs == {}
    with pytest.raises(SpecError):
        build_sink(parse_sink('{ exDate("d", "yyyy-QQ") => collect("x") }'))


@pytest.mark.parametrize("algo,name", [("MD5", "md5"), ("SHA-1", "sha1"),
                                       ("SHA-256", "sha256")])
def test_digest(ctx, algo, name):
    s = build(f'[ {{ digest("{algo}", "h") => collect("x") }}, '
              f'{{ digest("{algo}", "h", base64=true) => collect("y") }} ]', ctx)
    s.append([ev("hello"), ev("")])
    for e in collected("x"):
        assert e.attrs["h"] == hashlib.new(name, e.body).hexdigest().encode()
    for e in collected("y"):
        assert e.attrs["h"] == base64.b64encode(hashlib.new(name, e.body).digest())


def test_digest_unknown_algorithm():
    with pytest.raises(SpecError):
        build_sink(parse_sink('{ digest("CRC99", "h") => collect("x") }'))


# ------------------------------------------------------------------ samplers


def test_interval_sampler_counts_across_batches(ctx):
    s = build('{ intervalSampler(3) => collect("x") }', ctx)
    s.append(evs(4))
    s.append(evs(2, 4))
    s.append(evs(5, 6))
    assert bodies(collected("x")) == [f"line {i}".encode() for i in (0, 3, 6, 9)]


def test_prob_sampler(ctx):
    s = build('[ { probSampler(0.0) => collect("x") }, { probSampler(1.0) => collect("y") }, '
              '{ probSampler(0.5) => collect("b0") } ]', ctx)
    s.append(evs(2000))
    assert collected("x") == []
    assert collected("y") == evs(2000)
    assert 800 < len(collected("b0")) < 1200          # ~ 22 standard deviations apart
    kept = collected("b0")
    assert kept == sorted(kept, key=lambda e: e.nanos)


def test_reservoir_sampler(ctx):
    s = build('{ reservoirSampler(5) => collect("x") }', ctx)
    s.append(evs(3))
    assert collected("x") == evs(3)
    reset("x")
    seen = set()
    for _ in range(50):
        s.append(evs(20))
    out = collected("x")
    assert len(out) == 250
    for k in range(50):
        chunk = out[5 * k:5 * k + 5]
        assert [e.nanos for e in chunk] == sorted(e.nanos for e in chunk)
        seen.update(e.nanos for e in chunk)
    assert len(seen) == 20                              # every position gets sampled


# ------------------------------------------------------------------ fault injection


def test_interval_flakey_and_droppy(ctx):
    s = build('{ intervalFlakeyAppend(3) => intervalDroppyAppend(4) => collect("x") }', ctx)
    s.append(evs(3))
    s.append(evs(3, 3))
    with pytest.raises(SinkError):
        s.append(evs(3, 6))
    s.append(evs(3, 6))
    assert [e.nanos for e in collected("x")] == [0, 1, 2, 4, 5, 6, 8]
    assert s.inner.metrics["events_dropped"] == 2


def test_flakey_append(ctx):
    always = build('{ flakeyAppend(1.0) => collect("x") }', ctx)
    never = build('{ flakeyAppend(0.0) => collect("y") }', ctx)
    with pytest.raises(SinkError):
        always.append(evs(1))
    never.append(evs(1))
    assert collected("x") == [] and collected("y") == evs(1)
    with pytest.raises(SpecError):
        build_sink(parse_sink('{ flakeyAppend(1.5) => collect("x") }'))


# ------------------------------------------------------------------ open / append policies


def test_lazy_open_opens_at_first_append(ctx):
    inner = Scripted()
    s = LazyOpenDecorator(inner)
    s.open(ctx)
    assert inner.opens == 0
    s.when_durable(Checkpoint({"pos": 0}))            # nothing pending: commits at once
    assert ctx.store.get("pos") == 0
    s.append(evs(2))
    s.append(evs(1, 2))
    assert inner.opens == 1 and inner.got == evs(3)
    s.close()
    assert inner.closes == 1
    b = build('{ lazyOpen => collect("x") }', ctx)
    b.append(evs(1))
    assert collected("x") == evs(1)


def test_lazy_open_surfaces_open_failure_at_append(ctx):
    inner = Scripted(fail_opens=1)
    s = LazyOpenDecorator(inner)
    s.open(ctx)
    with pytest.raises(SinkError):
        s.append(evs(1))
    s.append(evs(1))
    assert inner.got == evs(1)


def test_insistent_open_retries_with_backoff(make_ctx):
    clock = StepClock()
    ctx = make_ctx(clock=clock)
    inner = Scripted(fail_opens=2)
    s = InsistentOpenDecorator(inner, maxMs=60000, initMs=1000)
    t = threading.Thread(target=s.open, args=(ctx,))
    t.start()
    clock.waiting(1)
    clock.advance(0.5)
    clock.settle()
    assert inner.opens == 1
    clock.advance(0.5)                                # 1 s: second attempt
    clock.waiting(2)
    assert inner.opens == 2
    clock.advance(1.5)
    clock.settle()
    assert inner.opens == 2                           # the wait doubled to 2 s
    clock.advance(0.5)
    t.join(5)
    assert not t.is_alive() and inner.opens == 3 and inner.is_open
    assert clock.waits == [1.0, 2.0]
    s.append(evs(1))
    assert inner.got == evs(1)


def test_insistent_open_gives_up_after_cumulative_max(make_ctx):
    clock = StepClock()
    ctx = make_ctx(clock=clock)
    s = build_sink(parse_sink('{ insistentOpen(1000, 1000, 2500) => fail("down") }'))
    errors = []

    def run():
        try:
            s.open(ctx)
        except SinkError as exc:
            errors.append(exc)
    t = threading.Thread(target=run)
    t.start()
    for n in (1, 2, 3):
        clock.waiting(n)
        clock.advance(1.0)
    t.join(5)
    assert not t.is_alive() and len(errors) == 1 and "gave up" in str(errors[0])
    assert clock.waits == [1.0, 1.0, 0.5]
    assert s.metrics["open_attempts"] == 4


def test_insistent_open_stops_promptly(make_ctx):
    clock = StepClock()                               # time never moves
    ctx = make_ctx(clock=clock)
    s = build_sink(parse_sink('{ insistentOpen => fail("down") }'))
    errors = []

    def run():
        try:
            s.open(ctx)
        except SinkError as exc:
            errors.append(exc)
    t = threading.Thread(target=run)
    t.start()
    clock.waiting(1)
    ctx.stop_event.set()
    t.join(5)
    assert not t.is_alive() and "stopped" in str(errors[0])


def test_stubborn_append_reopens_and_retries_once(ctx):
    s = build('{ stubbornAppend => intervalFlakeyAppend(2) => collect("x") }', ctx)
    for i in range(4):
        s.append(evs(1, i))
    assert collected("x") == evs(4)
    assert s.metrics["append_recoveries"] == 3

    inner = Scripted(fail_appends=1)
    d = StubbornAppendDecorator(inner)
    d.open(ctx)
    d.append(evs(2))
    assert inner.opens == 2 and inner.closes == 1 and inner.got == evs(2)
    inner.fail_appends = 2
    with pytest.raises(SinkError):
        d.append(evs(1))


def test_insistent_append_retries_until_accepted(make_ctx):
    clock = StepClock()
    ctx = make_ctx(clock=clock)
    inner = Scripted(fail_appends=2)
    s = InsistentAppendDecorator(inner, maxMs=1500, initMs=1000)
    s.open(ctx)
    t = threading.Thread(target=s.append, args=(evs(3),))
    t.start()
    clock.waiting(1)
    clock.advance(1.0)
    clock.waiting(2)
    clock.advance(1.0)
    clock.settle()
    assert t.is_alive()                               # the wait is 1.5 s now (capped)
    clock.advance(0.5)
    t.join(5)
    assert not t.is_alive() and inner.got == evs(3)
    assert clock.waits == [1.0, 1.5]


def test_insistent_append_gives_up(make_ctx):
    clock = StepClock()
    ctx = make_ctx(clock=clock)
    s = build('{ insistentAppend(1000, 1000, 1000) => flakeyAppend(1.0) => collect("x") }',
              ctx)
    errors = []

    def run():
        try:
            s.append(evs(1))
        except SinkError as exc:
            errors.append(exc)
    t = threading.Thread(target=run)
    t.start()
    clock.waiting(1)
    clock.advance(1.0)
    t.join(5)
    assert not t.is_alive() and "gave up" in str(errors[0])


# ------------------------------------------------------------------ delay / choke


def test_delay_waits_per_event_and_passes_events_on_in_pieces(make_ctx):
    """delay(100) on 5 events: 0.5 s in all, but each event goes on after its own 0.1 s
    (pieces of PIECE_SECONDS), not after the whole batch's wait."""
    clock = StepClock()
    ctx = make_ctx(clock=clock)
    s = build('{ delay(100) => collect("x") }', ctx)
    t = threading.Thread(target=s.append, args=(evs(5),))
    t.start()
    clock.waiting(1)
    assert clock.waits == [pytest.approx(0.1)]
    clock.advance(0.05)
    clock.settle()
    assert collected("x") == []
    clock.advance(0.05)
    wait_for(lambda: collected("x") == evs(1), what="the first event")
    for n in range(2, 6):
        clock.waiting(n)
        clock.advance(0.1)
        wait_for(lambda: collected("x") == evs(n), what=f"{n} events")
    t.join(5)
    assert clock.waits == [pytest.approx(0.1)] * 5
    # a stopping node is not held back, and nothing is lost
    t = threading.Thread(target=s.append, args=(evs(3, 5),))
    t.start()
    clock.waiting(6)
    ctx.stop_event.set()
    t.join(5)
    assert not t.is_alive() and collected("x") == evs(8)


def test_delay_of_a_large_batch_passes_the_first_events_after_one_piece(make_ctx):
    clock = StepClock()
    ctx = make_ctx(clock=clock)
    s = build('{ delay(5) => collect("x") }', ctx)
    t = threading.Thread(target=s.append, args=(evs(2000),))
    t.start()
    clock.waiting(1)
    clock.advance(0.1)                  # 20 events of 5 ms: not the 10 s of the batch
    wait_for(lambda: collected("x") == evs(20), what="the first piece")
    ctx.stop_event.set()
    t.join(5)
    assert collected("x") == evs(2000)


def test_choke_passes_a_large_batch_on_in_pieces(make_ctx):
    clock = StepClock()
    ctx = make_ctx(clock=clock)
    s = build('{ choke("c") => collect("x") }', ctx)
    set_choke_limit(ctx.shared, "c", 10)                # 10 KB/s: pieces of 1,000 bytes
    batch = [ev("z" * 100, i) for i in range(50)]
    t = threading.Thread(target=s.append, args=(batch,))
    t.start()
    wait_for(lambda: len(collected("x")) == 10, what="the burst's piece")
    clock.waiting(1)
    assert clock.waits == [pytest.approx(0.1)]
    clock.advance(0.1)
    wait_for(lambda: len(collected("x")) == 20, what="the second piece")
    for n in range(2, 5):
        clock.waiting(n)
        clock.advance(0.1)
    t.join(5)
    assert collected("x") == batch


def test_choke_limiter_math():
    lim = ChokeLimiter()
    assert lim.reserve(10**9, 0.0) == 0.0             # unlimited by default
    lim.set_limit(1)                                  # 1000 bytes/s, bucket of 100
    assert lim.reserve(100, 10.0) == 0.0
    assert lim.reserve(500, 10.0) == pytest.approx(0.5)
    assert lim.reserve(500, 10.5) == pytest.approx(0.5)   # the debt is shared
    lim.set_limit(None)
    assert lim.reserve(10**9, 11.0) == 0.0


def test_chokes_with_one_id_share_a_limit(make_ctx):
    clock = StepClock()
    ctx = make_ctx(clock=clock)
    a = build('{ choke("c1") => collect("x") }', ctx)
    b = build('{ choke("c1") => collect("y") }', ctx)
    other = build('{ choke("c2") => collect("b0") }', ctx)
    a.append([ev("z" * 5000)])                        # unlimited until the master says
    assert len(collected("x")) == 1
    set_choke_limit(ctx.shared, "c1", 1)             # 1 KB/s for a and b together
    a.append([ev("z" * 100)])                         # the bucket's burst
    assert len(collected("x")) == 2
    t = threading.Thread(target=b.append, args=([ev("z" * 1000)],))
    t.start()
    other.append([ev("z" * 10000)])                   # another id is not limited
    assert len(collected("b0")) == 1
    clock.waiting(1)
    assert clock.waits == [pytest.approx(1.0)]
    assert collected("y") == []
    clock.advance(0.9)
    clock.settle()
    assert collected("y") == []
    clock.advance(0.1)
    wait_for(lambda: len(collected("y")) == 1, what="the choked append")
    t.join(5)
    with pytest.raises(ValueError):
        set_choke_limit(ctx.shared, "c1", 0)


# ------------------------------------------------------------------ balance


def test_balance_round_robin(ctx):
    s = build('balance [ collect("b0"), collect("b1"), collect("b2") ]', ctx)
    for i in range(6):
        s.append(evs(2, 2 * i))
    assert [e.nanos for e in collected("b0")] == [0, 1, 6, 7]
    assert [e.nanos for e in collected("b1")] == [2, 3, 8, 9]
    assert [e.nanos for e in collected("b2")] == [4, 5, 10, 11]


def test_balance_random_delivers_everything_once(ctx):
    s = build('{ balance("random") => [ collect("b0"), collect("b1") ] }', ctx)
    for i in range(100):
        s.append(evs(1, i))
    got = collected("b0") + collected("b1")
    assert sorted(e.nanos for e in got) == list(range(100))
    assert 20 < len(collected("b0")) < 80


def test_balance_hash_keeps_a_key_on_one_branch(ctx):
    s = build('balance("hash") [ collect("b0"), collect("b1"), collect("b2") ]', ctx)
    hosts = [f"host{i}" for i in range(12)]
    for rnd in range(3):
        s.append([ev(f"{h} {rnd}", host=h) for h in hosts])
    where = {}
    for name in ("b0", "b1", "b2"):
        for e in collected(name):
            where.setdefault(e.host, set()).add(name)
    assert set(where) == set(hosts)
    assert all(len(v) == 1 for v in where.values())
    assert len(set().union(*where.values())) > 1
    s2 = build('balance("hash", key="%{k}") [ collect("x"), collect("y") ]', ctx)
    s2.append([ev("a", attrs={"k": b"same"}, host=f"h{i}") for i in range(10)])
    assert sorted([len(collected("x")), len(collected("y"))]) == [0, 10]


def test_balance_policy_checked():
    with pytest.raises(SpecError):
        build_sink(parse_sink('balance("nope") [ collect("x"), collect("y") ]'))
    with pytest.raises(SpecError):
        build_sink(parse_sink('balance collect("x")'))


def test_balance_skips_failed_branch_and_retries_after_backoff(make_ctx):
    clock = ManualClock()
    ctx = make_ctx(clock=clock)
    b0, b1 = Scripted(fail_appends=1), Scripted()
    s = BalanceSink([b0, b1])
    s.open(ctx)
    s.append(evs(1, 0))                     # b0 fails: b1 takes it
    assert b1.got == evs(1, 0) and b0.got == [] and not b0.is_open
    s.append(evs(1, 1))                     # b0 is in backoff: b1 again
    assert b1.got == evs(2)
    clock.advance(1.0)                      # backoff over: b0 reopened and used
    s.append(evs(1, 2))
    assert b0.got == evs(1, 2) and b0.opens == 2
    b0.fail_appends = b1.fail_appends = 1
    with pytest.raises(SinkError):
        s.append(evs(1, 3))
    # both in backoff (b0 now 1 s, b1 1 s): nothing is usable until then
    with pytest.raises(SinkError):
        s.append(evs(1, 3))
    clock.advance(1.0)
    s.append(evs(1, 3))
    assert (b0.got + b1.got).count(evs(1, 3)[0]) == 1
    s.close()


def test_balance_open_fails_only_if_every_branch_fails(make_ctx):
    ctx = make_ctx(clock=ManualClock())
    b0, b1 = Scripted(fail_opens=1), Scripted()
    s = BalanceSink([b0, b1])
    s.open(ctx)
    s.append(evs(1))
    assert b1.got == evs(1)
    dead = BalanceSink([Scripted(fail_opens=1), Scripted(fail_opens=1)])
    with pytest.raises(SinkError):
        dead.open(ctx)


def test_balance_checkpoint_waits_for_every_open_branch(ctx):
    b0, b1 = Scripted(), Scripted()
    s = BalanceSink([b0, b1])
    s.open(ctx)
    s.append(evs(1, 0))
    s.append(evs(1, 1))
    s.when_durable(Checkpoint({"pos": 2}))
    b0.make_durable()
    assert ctx.store.get("pos") is None
    b1.make_durable()
    assert ctx.store.get("pos") == 2


def test_balance_drops_checkpoint_when_a_branch_with_events_failed(make_ctx):
    ctx = make_ctx(clock=ManualClock())
    b0, b1 = Scripted(), Scripted()
    s = BalanceSink([b0, b1])
    s.open(ctx)
    s.append(evs(1, 0))                     # b0 holds an event not yet durable
    b0.fail_appends = 1
    s.append(evs(1, 1))                     # b1 took it... (round robin: b1)
    s.append(evs(1, 2))                     # b0 fails, b1 takes it
    assert not b0.is_open
    s.when_durable(Checkpoint({"pos": 3}))
    b1.make_durable()
    assert ctx.store.get("pos") is None
    assert s.metrics["checkpoints_dropped"] == 1
    s.append(evs(1, 3))
    s.when_durable(Checkpoint({"pos": 4}))  # a later one goes through again
    b1.make_durable()
    assert ctx.store.get("pos") == 4
