"""The batch representation (node.event.Batch): events kept as columns on the hot path.

A Batch reads as the list of its events everywhere; the components of the usual path
(tail, codec, queue, roll, escaped files, raw format, the driver) read its columns
instead and never make an event. These tests hold both: the same results as lists of
events, and the batch still in columns after the path ran.
"""
from __future__ import annotations

import threading
import time

import pytest

from flume_og.node import codec
from flume_og.node.builder import build_sink
from flume_og.node.event import (Event, Priority, body_bytes, columns, lines_batch,
                                 set_attr)
from flume_og.node.sources._batchqueue import BatchQueue, batch_bytes
from flume_og.node.sources.tail import MultiTailSource, TailSource
from flume_og.node.spec import parse_sink
from tests.node.test_batch_paths import uniform

FILE = {"tailSrcFile": b"/var/log/app.log"}


def fast(n=5, attrs=None):
    """A decoded uniform batch: what a collector gets from an agent."""
    b = codec.decode_events(codec.encode_events(uniform(n, attrs)))
    assert columns(b) is b
    return b


def test_a_batch_reads_as_the_list_of_its_events():
    events = uniform(5)
    b = fast(5)
    assert len(b) == 5 and bool(b) and b.fast
    assert b.first() == events[0] and b.fast          # reading the first keeps columns
    assert b == events and events == b
    assert b[1:3] == events[1:3] and b[-1] == events[-1]
    assert b + [events[0]] == events + [events[0]]
    assert [events[0]] + b == [events[0]] + events
    assert [e.body for e in b] == [e.body for e in events]
    assert not b.fast and columns(b) is None and b.events is b.events


def test_two_threads_reading_a_batch_get_the_same_events():
    b = fast(20_000)
    got = []
    threads = [threading.Thread(target=lambda: got.append(b.events)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(g is got[0] for g in got)


def test_a_change_to_a_read_event_is_kept_and_encoded():
    b = fast(3)
    for e in b:
        e.attrs["k"] = b"v"
    b[2].body = b"changed"
    assert [e.attrs["k"] for e in b] == [b"v"] * 3
    back = codec.decode_events(codec.encode_events(b))
    assert back[2].body == b"changed" and back[0].attrs == {**FILE, "k": b"v"}


def test_events_of_a_fast_batch_have_their_own_attributes():
    b = fast(2)
    first, second = list(b)
    first.attrs["x"] = b"1"
    assert "x" not in second.attrs


@pytest.mark.parametrize("attrs", [FILE, {}], ids=["attributes", "none"])
def test_a_fast_batch_encodes_to_the_bytes_of_its_events(attrs):
    events = uniform(50, attrs)
    b = codec.decode_events(codec.encode_events(events))
    assert columns(b) is b
    assert codec.encode_events(b) == codec.encode_events(events)
    lb = lines_batch([e.body for e in events], dict(attrs), ts=TS_FIXED, host="web1")
    assert codec.decode_events(codec.encode_events(lb)) == list(lb)


TS_FIXED = 1_600_000_000_000


def test_only_a_uniform_batch_decodes_to_columns():
    events = uniform(10)
    events[-1].priority = Priority.ERROR
    back = codec.decode_events(codec.encode_events(events))
    assert columns(back) is None and back == events
    events = uniform(10)
    events[-1].host = "other"
    assert columns(codec.decode_events(codec.encode_events(events))) is None


@pytest.mark.parametrize("max_events,max_bytes", [(3, 10**6), (100, 500), (7, 300), (1, 1),
                                                  (100, 10**6)])
def test_a_fast_batch_splits_like_its_events(max_events, max_bytes):
    events = uniform(20)
    want = codec.split_events(events, max_events, max_bytes)
    got = codec.split_events(fast(20), max_events, max_bytes)
    assert [len(p) for p in got] == [len(p) for p in want]
    assert all(columns(p) is p for p in got)
    assert [list(p) for p in got] == want


def test_a_piece_has_its_own_attributes():
    b = fast(4)
    p = b.piece(0, 2)
    set_attr(p, "rolltag", b"t")
    assert "rolltag" not in b.attrs and p.attrs["rolltag"] == b"t"


def test_set_attr_and_body_bytes_give_what_the_events_would():
    b, events = fast(4), uniform(4)
    set_attr(b, "rolltag", b"t1")
    set_attr(events, "rolltag", b"t1")
    assert b.fast and body_bytes(b) == body_bytes(events) == sum(len(e.body) for e in events)
    assert batch_bytes(b) == batch_bytes(events)
    assert b == events


def test_the_queue_merges_batches_that_join_and_keeps_them_in_columns():
    q = BatchQueue(capacity=1000, max_batch=1000)
    q.put(fast(3))
    q.put(fast(4))
    q.put(fast(2, attrs={"tailSrcFile": b"/other"}))     # does not join: next get
    q.put(fast(1))
    got = q.get(1.0)
    assert columns(got) is got and len(got) == 7
    assert got == uniform(3) + uniform(4)
    rest = q.get(1.0)
    assert columns(rest) is rest and len(rest) == 2
    assert len(q.get(1.0)) == 1 and len(q) == 0


def test_a_list_batch_first_merges_the_rest_as_events():
    q = BatchQueue(capacity=1000, max_batch=1000)
    q.put(uniform(2))
    q.put(fast(3))
    got = q.get(1.0)
    assert isinstance(got, list) and got == uniform(2) + uniform(3)


def test_a_collector_sink_writes_a_fast_batch_without_making_events(make_ctx, tmp_path):
    out = tmp_path / "out"
    sink = build_sink(parse_sink(f'collectorSink("file://{out}", "data-", 60000)'))
    sink.open(make_ctx("c1"))
    batches = [fast(5), fast(3)]
    try:
        for b in batches:
            sink.append(b)
            assert b.fast, "the collector's path made events of the batch"
    finally:
        sink.close()
    files = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(files) == 1
    want = b"".join(e.body + b"\n" for e in uniform(5) + uniform(3))
    assert files[0].read_bytes() == want


def test_a_json_collector_sink_makes_the_events_it_needs(make_ctx, tmp_path):
    out = tmp_path / "out"
    sink = build_sink(parse_sink(f'collectorSink("file://{out}", "data-", 60000, json)'))
    sink.open(make_ctx("c1"))
    try:
        sink.append(fast(2))
    finally:
        sink.close()
    (f,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    text = f.read_text()
    assert text.count("\n") == 2 and '"rolltag"' in text and "line 000001" in text


def test_tail_gives_one_busy_file_as_columns(make_ctx, tmp_path):
    f = tmp_path / "app.log"
    f.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    src = TailSource(str(f))
    src.open(make_ctx("t1"))
    try:
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 100 and time.monotonic() < deadline:
            b = src.next_batch(0.5)
            if b:
                assert columns(b) is b
                assert b.attrs == {"tailSrcFile": b"app.log"}
                got += b.bodies
                nanos = list(b.nanos)
                assert nanos == sorted(set(nanos))
    finally:
        src.close()
    assert got == [b"line %d" % i for i in range(100)]


def test_tail_of_several_files_in_one_call_gives_events(make_ctx, tmp_path):
    paths = [tmp_path / "a.log", tmp_path / "b.log"]
    for p in paths:
        p.write_bytes(b"x\ny\n")
    src = MultiTailSource(*[str(p) for p in paths])
    src.open(make_ctx("t2"))
    try:
        got: list[Event] = []
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            got += list(src.next_batch(0.5) or [])
    finally:
        src.close()
    assert sorted((e.attrs["tailSrcFile"], e.body) for e in got) == sorted(
        (p.name.encode(), b) for p in paths for b in (b"x", b"y"))


def test_set_attr_reaches_events_another_thread_made_after_it_found_the_batch_fast():
    """set_attr finds a batch fast, then (before it writes the attribute) another thread
    makes the events (a sender lane, a fanout sibling): the events must carry the
    attribute all the same. The interleaving is forced with a trace hook on set_attr."""
    import sys

    from flume_og.node import event as event_mod

    b = fast(6)
    fired = []

    def local(frame, what, arg):
        if what == "line" and "b" in frame.f_locals and not fired:
            fired.append(True)
            t = threading.Thread(target=lambda: list(b))   # the other thread reads events
            t.start()
            t.join()
        return local

    def tracer(frame, what, arg):
        return local if frame.f_code is event_mod.set_attr.__code__ else None

    sys.settrace(tracer)
    try:
        set_attr(b, "rolltag", b"t1")
    finally:
        sys.settrace(None)
    assert fired and not b.fast
    assert [e.attrs.get("rolltag") for e in b] == [b"t1"] * 6
    assert codec.decode_events(codec.encode_events(b))[0].attrs["rolltag"] == b"t1"


def test_a_batch_has_the_read_only_list_methods():
    """What a component may call on the list it was given works on a fast batch too
    (a component author writing events.copy() or events.index(e) gets what a list
    gives, not an AttributeError in production only, where batches come fast)."""
    events, b = uniform(4), fast(4)
    assert b.copy() == events.copy() and type(b.copy()) is list
    assert b.count(events[1]) == events.count(events[1]) == 1
    assert b.index(events[2]) == 2
    assert b * 2 == events * 2 and 2 * b == 2 * events
    assert events[3] in b and list(reversed(b)) == events[::-1]
    mine = b.copy()
    mine.append(events[0])          # a copy is the caller's own list
    assert len(b) == 4


def test_set_attr_never_writes_into_a_dict_a_batch_was_given():
    """A source that gives its batches one dict of its own (a newcomer's natural
    ``lines_batch(lines, self.attrs)``) must not see a roll tag stamped on one batch
    appear in its later batches, nor a reader of the old dict see it change."""
    shared = {"src": b"a"}
    first = lines_batch([b"1", b"2"], shared, ts=TS_FIXED)
    second = lines_batch([b"3"], shared, ts=TS_FIXED)
    seen = first.attrs
    set_attr(first, "rolltag", b"t1")
    assert shared == {"src": b"a"} and seen == {"src": b"a"}
    assert second.attrs == {"src": b"a"} and [e.attrs for e in second] == [{"src": b"a"}]
    assert first.fast and [e.attrs for e in first] == [{"src": b"a", "rolltag": b"t1"}] * 2


def test_a_batch_of_columns_of_different_lengths_is_refused_when_made():
    """zip() would make as many events as the shortest column while len() and the
    encoding's header count the bodies: a source author's off-by-one became a corrupt
    batch at the collector (refused whole) instead of an error at the source."""
    from flume_og.node.event import Batch
    with pytest.raises(ValueError, match="columns"):
        Batch([b"a", b"b"], [1], range(0, 2), Priority.INFO, "h", {})
    with pytest.raises(ValueError, match="columns"):
        Batch([b"a"], [1], range(0, 2), Priority.INFO, "h", {})
    assert len(Batch([b"a"], (1,), range(5, 6), Priority.INFO, "h", {})) == 1


def test_the_queue_joins_neither_other_roll_tags_nor_e2e_tagged_with_untagged():
    from flume_og.node.sources import rpc as rpc_source
    a, b = fast(3), fast(2)
    set_attr(a, "rolltag", b"t1")
    set_attr(b, "rolltag", b"t2")
    q = BatchQueue(capacity=1000, max_batch=1000)
    q.put(a)
    q.put(b)
    assert [len(q.get(1.0)), len(q.get(1.0))] == [3, 2]
    tq = rpc_source._TaggedQueue(1000, 1000)
    tq.put(fast(3))
    rpc_source._local.tag = {"e2e:a:1": 2}
    try:
        tq.put(fast(2))
        tq.put(fast(4))
    finally:
        rpc_source._local.tag = None
    tq.put(fast(5))
    got = []
    for _ in range(3):
        g = tq.get(1.0)
        got.append((len(g), columns(g) is g, tq.last_tagged))
    assert got == [(3, True, False), (6, True, True), (5, True, False)]


def test_an_empty_fast_batch_is_the_empty_list_everywhere():
    from flume_og.node.escapes import Escaper
    from flume_og.node.event import Batch
    from flume_og.node.formats import RawFormat
    empty = Batch([], [], range(0), Priority.INFO, "h", {"a": b"1"})
    assert codec.encode_events(empty) == codec.encode_events([])
    assert codec.decode_events(codec.encode_events(empty)) == [] == empty
    assert [list(p) for p in codec.split_events(empty, 10, 1000)] == [[]]
    assert Escaper("%{host}-%Y").group(empty) == {} and RawFormat().encode(empty) == b"\n"
    assert batch_bytes(empty) == 0 == body_bytes(empty) and not empty and list(empty) == []
