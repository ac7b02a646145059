"""The per-batch fast paths of the data path give what the per-event paths give.

The codec, the queue weight and the escape bucketing recognise the usual batch (one host,
one set of attributes, one priority, one roll tag) with C-level scans and do the work once;
a batch that differs anywhere, even in its last event, takes the per-event path. Each test
compares both against a per-event reference, at the boundary where the fast path stops.
"""
from __future__ import annotations

import struct
import threading

import pytest

from flume_og.node import codec
from flume_og.node.escapes import Escaper
from flume_og.node.event import Event, Priority
from flume_og.node.formats import RawFormat
from flume_og.node.sources import _batchqueue
from flume_og.node.sources._batchqueue import ATTR_OVERHEAD, EVENT_OVERHEAD, BatchQueue

TS = 1_600_000_000_123


def uniform(n=500, attrs=None, host="web1", prio=Priority.INFO):
    attrs = {"tailSrcFile": b"/var/log/app.log"} if attrs is None else attrs
    return [Event(b"line %06d" % i, TS + i // 100, 7_000 + i, prio, host, dict(attrs))
            for i in range(n)]


def reference_encode(events):
    """The per-event encoding (format version 2), written out field by field."""
    hosts, sets = {}, {}
    hidx = [hosts.setdefault(e.host, len(hosts)) for e in events]
    sidx = []
    for e in events:
        key = tuple(e.attrs.items())
        sidx.append(sets.setdefault(key, len(sets) + 1) if key else 0)
    out = [codec._HEAD.pack(codec.MAGIC, codec.VERSION, len(events), len(hosts))]
    for h in hosts:
        out += [struct.pack(">H", len(h.encode())), h.encode()]
    out.append(struct.pack(">I", len(sets)))
    for key in sets:
        block = b"".join(struct.pack(">HI", len(k.encode()), len(v)) + k.encode() + v
                         for k, v in key)
        out += [struct.pack(">I", len(block)), block]
    out += [codec._RECORD.pack(e.timestamp, e.nanos, int(e.priority), h, len(e.body), s)
            for e, h, s in zip(events, hidx, sidx)]
    out += [e.body for e in events]
    return b"".join(out)


def variants():
    """A uniform batch and batches differing from it in the last event only."""
    yield "uniform", uniform()
    yield "no attributes", uniform(attrs={})
    b = uniform()
    b[-1].host = "web2"
    yield "last host differs", b
    b = uniform()
    b[-1].attrs["tailSrcFile"] = b"/var/log/other.log"
    yield "last attributes differ", b
    b = uniform()
    b[-1].attrs = {}
    yield "last has no attributes", b
    b = uniform()
    b[-1].priority = Priority.ERROR
    yield "last priority differs", b
    b = uniform(prio=Priority.FATAL)
    yield "all FATAL (0)", b
    yield "one event", uniform(1)
    yield "empty", []


@pytest.mark.parametrize("name,events", list(variants()), ids=[n for n, _ in variants()])
def test_encoding_is_the_per_event_encoding_and_decodes_back(name, events):
    data = codec.encode_events(events)
    assert data == reference_encode(events)
    back = codec.decode_events(data)
    assert back == events
    assert all(isinstance(e.priority, Priority) for e in back)


def test_events_of_equal_attributes_in_another_order_decode_equal():
    events = uniform(10, attrs={"a": b"1", "b": b"2"})
    events[-1].attrs = {"b": b"2", "a": b"1"}
    assert codec.decode_events(codec.encode_events(events)) == events


def reference_weight(events):
    n = 0
    for e in events:
        n += EVENT_OVERHEAD + len(e.body)
        for k, v in e.attrs.items():
            n += ATTR_OVERHEAD + len(k) + len(v)
    return n


@pytest.mark.parametrize("name,events", list(variants()), ids=[n for n, _ in variants()])
def test_batch_weight_is_the_per_event_weight(name, events):
    assert _batchqueue.batch_bytes(events) == reference_weight(events)


def test_a_batch_is_weighed_outside_the_queue_lock(monkeypatch):
    """The consumer waits on the queue's lock: weighing a batch (a pass over its events)
    must not hold it."""
    q = BatchQueue(capacity=100_000)
    held = []
    real = _batchqueue.batch_bytes

    def spy(events):
        held.append(q._cond._is_owned())
        return real(events)

    monkeypatch.setattr(_batchqueue, "batch_bytes", spy)
    q.put(uniform(10))
    q.offer(uniform(10))
    assert held == [False, False]
    assert q.get(1.0) is not None


def test_put_still_blocks_on_bytes_and_wakes_when_taken():
    one = uniform(10)
    q = BatchQueue(capacity=100_000, max_bytes=_batchqueue.batch_bytes(one))
    assert q.put(one) == 1
    done = []
    t = threading.Thread(target=lambda: done.append(q.put(uniform(10), timeout=30)))
    t.start()
    assert q.get(5.0) == one
    t.join(30)
    assert done == [2]


ROLL = "/logs/%Y-%m-%d/data-%{rolltag}-%{host}"


def stamped(n=300, tag=b"20200913-122640123+0000.1"):
    events = uniform(n)
    for e in events:
        e.attrs["rolltag"] = tag
    return events


def reference_group(esc, events):
    out = {}
    for e in events:
        out.setdefault(esc.expand(e), []).append(e)
    return out


def counting(esc):
    calls = [0]
    fn = esc._fn

    def wrapped(e):
        calls[0] += 1
        return fn(e)
    esc._fn = wrapped
    return calls


def test_a_batch_of_one_roll_tag_host_and_second_is_expanded_once():
    esc = Escaper(ROLL, utc=True, path=True)
    events = stamped()
    calls = counting(esc)
    groups = esc.group(events)
    assert calls[0] == 1
    assert groups == reference_group(Escaper(ROLL, utc=True, path=True), events)
    assert list(groups.values())[0] is events


@pytest.mark.parametrize("change", ["tag", "host", "second", "missing attribute"])
def test_a_batch_differing_in_its_last_event_is_bucketed_per_event(change):
    esc = Escaper(ROLL, utc=True, path=True)
    events = stamped()
    last = events[-1]
    if change == "tag":
        last.attrs["rolltag"] = b"20200913-122641000+0000.2"
    elif change == "host":
        last.host = "web9"
    elif change == "second":
        last.timestamp += 86_400_000      # the next day: another directory
    else:
        del last.attrs["rolltag"]
    groups = esc.group(events)
    assert groups == reference_group(esc, events)
    assert len(groups) == 2


@pytest.mark.parametrize("pattern", ["data-%t", "data-%{nanos}", "data-%{priority}",
                                     "data-%{body}"])
def test_patterns_of_per_event_fields_are_expanded_per_event(pattern):
    esc = Escaper(pattern, path=True)
    events = stamped(50)
    calls = counting(esc)
    assert esc.group(events) == reference_group(Escaper(pattern, path=True), events)
    assert calls[0] == 50


def test_raw_format_is_the_bodies_each_with_its_newline():
    events = uniform(5)
    assert RawFormat().encode(events) == b"".join(e.body + b"\n" for e in events)
    assert RawFormat().encode([]) == b"\n"
