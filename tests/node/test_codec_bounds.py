"""Bounds of the batch codec and of the decorators that undo ``batch => gzip`` on a
receiver: one attribute set named by every event of a batch, gzip bombs, oversized
batches. The RSS of a flow under attack is measured in its own process
(tests/node/flow_victim.py)."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from flume_og.node.codec import (_ATTR, _HEAD, _RECORD, ATTR_ENTRY_BYTES, MAX_BATCH_BYTES,
                                 BatchTooLarge, decode_events, encode_events)
from flume_og.node.decorators.batch import BATCH_ATTR, make_batch
from flume_og.node.decorators.gzip import GZIP_ATTR
from flume_og.node.errors import SpecError
from flume_og.node.event import Event, Priority
from flume_og.node.builder import build_sink
from flume_og.node.rpc import RpcClient, Status
from flume_og.node.sinks.collect import collected, reset
from flume_og.node.spec import parse_sink
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


@pytest.fixture(autouse=True)
def _clean_collect():
    reset("x")
    yield
    reset("x")


def shared_set_batch(count: int, k: int) -> bytes:
    """A version-2 batch of ``count`` empty events all naming one set of ``k`` attributes
    (what scripts/repro-issue9/codec_attr_bomb.py sends), built without making events."""
    block = b"".join(_ATTR.pack(4, 0) + b"%04x" % i for i in range(k))
    return (_HEAD.pack(b"FLB", 2, count, 1) + struct.pack(">H", 1) + b"h"
            + struct.pack(">II", 1, len(block)) + block
            + _RECORD.pack(1, 0, 3, 0, 0, 1) * count)


def gzip(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def zeros_bomb(mbytes: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(c.compress(bytes(MB)) for _ in range(mbytes)) + c.flush()


def build(text: str, ctx):
    s = build_sink(parse_sink(text))
    s.open(ctx)
    return s


def gz_event(body: bytes, i: int = 0) -> Event:
    return Event(body, 1_700_000_000_000 + i, i, Priority.INFO, "h", {GZIP_ATTR: b"1"})


# ------------------------------------------------------------------ the codec

def test_one_attribute_set_named_by_every_event_is_refused_before_copying():
    # 20,000 events x 120 attributes: 2.4 million entries from a 40 kB batch
    data = shared_set_batch(20_000, 120)
    assert len(data) < MB
    with pytest.raises(BatchTooLarge) as err:
        decode_events(data, 20_000)
    assert err.value.reason == "attributes"
    with pytest.raises(BatchTooLarge) as err:
        decode_events(data, 20_000, MAX_BATCH_BYTES)
    assert err.value.reason == "attributes"
    # the same set named by fewer events fits
    assert len(decode_events(shared_set_batch(1_000, 120), 20_000, MAX_BATCH_BYTES)) == 1_000


def test_attribute_bound_counts_the_set_each_event_names():
    limit = 64 * 1024 // ATTR_ENTRY_BYTES                      # 8192 entries
    big = {f"a{i}": b"v" for i in range(100)}
    eight = {f"b{i}": b"w" for i in range(8)}
    events = ([Event(b"", i, i, Priority.INFO, "h", big) for i in range(10)]
              + [Event(b"x", i, i, Priority.INFO, "h", eight)
                 for i in range((limit - 1000) // 8)])         # 1000 + 899 * 8 = the limit
    data = encode_events(events)
    assert len(data) < 64 * 1024
    assert decode_events(data, max_bytes=64 * 1024) == events
    data = encode_events(events + [Event(b"one more", 0, 0, Priority.INFO, "h", {"k": b""})])
    with pytest.raises(BatchTooLarge) as err:
        decode_events(data, max_bytes=64 * 1024)
    assert err.value.reason == "attributes" and "8193 attribute entries" in str(err.value)


def test_decode_events_refuses_a_batch_longer_than_max_bytes():
    data = encode_events([Event(b"y" * 2000, 1, 1, Priority.INFO, "h", {})])
    with pytest.raises(BatchTooLarge) as err:
        decode_events(data, max_bytes=1024)
    assert err.value.reason == "bytes"
    assert len(decode_events(data, max_bytes=len(data))) == 1


# ------------------------------------------------------------------ host and set tables

def one_event_tail() -> bytes:
    return _RECORD.pack(1, 0, 3, 0, 0, 0)


def table_batch(nhosts: int, nsets: int, count: int = 1) -> bytes:
    """A version-2 batch of ``count`` empty events of host 0 and no attributes, whose
    header announces ``nhosts`` empty hosts and ``nsets`` empty attribute sets (what no
    encoder writes: each distinct host and set of the events once)."""
    return (_HEAD.pack(b"FLB", 2, count, nhosts) + b"\0\0" * nhosts
            + struct.pack(">I", nsets) + b"\0\0\0\0" * nsets + one_event_tail() * count)


@pytest.mark.parametrize("nhosts,nsets", [(50_000, 1), (1, 50_000), (2, 1), (1, 2)],
                         ids=["hosts", "sets", "2 hosts, 1 event", "2 sets, 1 event"])
def test_a_batch_announcing_more_hosts_or_sets_than_events_is_refused(nhosts, nsets):
    """A 16 MiB message of empty attribute sets (4 bytes each) cost a receiver 8 s of CPU
    and 20 times its size in memory (a dict per set) before any check; empty hosts (2
    bytes each) 4 s. An encoder writes at most one host and one set per event, so a
    table longer than the batch is refused before it is read."""
    data = table_batch(nhosts, nsets)
    with pytest.raises(ValueError, match="more .* than events"):
        decode_events(data, 20_000, MAX_BATCH_BYTES)
    with pytest.raises(ValueError, match="more .* than events"):
        decode_events(data)


def test_tables_as_long_as_the_batch_are_read():
    events = [Event(b"", i, i, Priority.INFO, f"h{i}", {"k": b"%d" % i}) for i in range(5)]
    assert decode_events(encode_events(events), 20_000, MAX_BATCH_BYTES) == events
    assert decode_events(table_batch(3, 3, count=3)) == [
        Event(b"", 1, 0, Priority.INFO, "", {})] * 3
    assert decode_events(table_batch(0, 0, count=0)) == []


def test_a_version_1_batch_announcing_more_hosts_than_events_is_refused():
    from flume_og.node.codec import _RECORD_V1
    data = (_HEAD.pack(b"FLB", 1, 1, 3) + b"\0\0" * 3 + _RECORD_V1.pack(1, 0, 3, 0, 0, 0))
    with pytest.raises(ValueError, match="more hosts than events"):
        decode_events(data)
    ok = _HEAD.pack(b"FLB", 1, 1, 1) + b"\0\0" + _RECORD_V1.pack(1, 0, 3, 0, 0, 0)
    assert decode_events(ok) == [Event(b"", 1, 0, Priority.INFO, "", {})]


# ------------------------------------------------------------------ gunzip

def test_gunzip_passes_a_bomb_on_as_it_is_and_counts_it(ctx):
    s = build('{ gunzip(maxBytes=65536) => collect("x") }', ctx)
    bomb = gz_event(zeros_bomb(1))                             # 1 MiB of zeros in ~1 kB
    fine = gz_event(gzip(b"a" * 65536), 1)
    broken = gz_event(b"\x1f\x8b not gzip", 2)
    truncated = gz_event(gzip(b"b" * 1000)[:-12], 3)
    s.append([bomb, fine, broken, truncated])
    out = collected("x")
    assert out[0] is bomb and GZIP_ATTR in out[0].attrs       # still compressed, kept
    assert out[1].body == b"a" * 65536 and GZIP_ATTR not in out[1].attrs
    assert out[2:] == [broken, truncated]
    assert s.metrics["refused_decompressed"] == 1
    assert s.metrics["refused_malformed"] == 2 and s.metrics["refused"] == 3


def test_gunzip_passes_one_append_on_in_pieces_of_its_bound(ctx):
    s = build('{ gunzip(maxBytes=65536) => collect("x") }', ctx)
    seen = []
    s.inner.append = lambda events: seen.append(sum(len(e.body) for e in events))
    events = [gz_event(gzip(bytes([i]) * 40_000), i) for i in range(5)]
    s.append(events + [Event(b"plain")])
    assert seen == [40_000] * 4 + [40_005]
    with pytest.raises(SpecError, match="maxBytes must be at least 1024"):
        build_sink(parse_sink('{ gunzip(maxBytes=10) => null }'))


# ------------------------------------------------------------------ unbatch

def test_unbatch_refuses_batches_over_its_bounds_and_passes_them_on(ctx):
    s = build('{ unbatch(maxEvents=100, maxBytes=65536) => collect("x") }', ctx)
    many = make_batch([Event(b"%d" % i, i, i, Priority.INFO, "h", {}) for i in range(101)])
    bomb = Event(shared_set_batch(100, 900), 0, 0, Priority.INFO, "h", {BATCH_ATTR: b"100"})
    big = make_batch([Event(b"z" * 70_000, 1, 1, Priority.INFO, "h", {})])
    bad = Event(b"not a batch", 2, 2, Priority.INFO, "h", {BATCH_ATTR: b"3"})
    good = [Event(b"ok %d" % i, i, i, Priority.INFO, "h", {"k": b"v"}) for i in range(3)]
    s.append([many, bomb, big, bad, make_batch(good)])
    assert collected("x") == [many, bomb, big, bad] + good
    m = s.metrics
    assert (m["refused_events"], m["refused_attributes"], m["refused_bytes"],
            m["refused_malformed"], m["refused"]) == (1, 1, 1, 1, 4)


def test_unbatch_passes_one_append_on_in_pieces_of_max_events(ctx):
    s = build('{ unbatch(maxEvents=100) => collect("x") }', ctx)
    seen = []
    s.inner.append = lambda events: seen.append(len(events))
    batches = [make_batch([Event(b"%d" % i, i, i, Priority.INFO, "h", {})] * 60)
               for i in range(4)]
    s.append(batches)
    assert seen == [120, 120]
    with pytest.raises(SpecError, match="maxEvents must be at least 1"):
        build_sink(parse_sink('{ unbatch(maxEvents=0) => null }'))


# ------------------------------------------------------------------ a receiver under attack

class FlowVictim:
    """``SOURCE | SINK`` in its own process (tests/node/flow_victim.py)."""

    def __init__(self, source: str, sink: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.node.flow_victim",
                                      source, sink], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def status(self) -> dict:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def metrics(self, *path: int) -> dict:
        """Metrics of the source (no path) or of the sink tree's node at ``path``."""
        comp = self.status()["components"]
        node = comp["source"] if not path else comp["sink"]
        for i in path[1:]:
            node = node["children"][i]
        return node["metrics"]


@pytest.fixture
def flow_victim():
    made = []

    def make(source: str, sink: str) -> FlowVictim:
        v = FlowVictim(source, sink)
        made.append(v)
        return v
    yield make
    for v in made:
        v.proc.stdin.close()
        try:
            v.proc.wait(10)
        except subprocess.TimeoutExpired:
            v.proc.kill()
            v.proc.wait()


def test_gzip_bomb_and_shared_attribute_set_cost_a_receiver_its_bounds(flow_victim):
    # the receiving end of `batch => gzip` agents
    v = flow_victim("collectorSource(0)", "{ gunzip => unbatch => null }")
    before = v.status()
    client = RpcClient("127.0.0.1", v.port, 30)
    bomb = Event(zeros_bomb(256), 1, 0, Priority.INFO, "h", {GZIP_ATTR: b"1"})
    assert len(bomb.body) < 300_000                           # 256 MiB of zeros
    assert client.append_packed([bomb]) == (Status.OK, "")
    wait_until(lambda: v.metrics(0).get("refused_decompressed") == 1, timeout=20)
    # one attribute set of 4,000 entries named by 19,999 events, in an 11 kB payload
    status, message = client.append_payload(gzip(shared_set_batch(19_999, 4_000)), 19_999)
    assert status == Status.FAILED and "attribute entries" in message
    assert v.metrics()["refused_attributes"] == 1
    # and the same inside a gzip-marked batch event
    inner = Event(gzip(shared_set_batch(19_999, 4_000)), 1, 0, Priority.INFO, "h",
                  {GZIP_ATTR: b"1", BATCH_ATTR: b"19999"})
    assert client.append_packed([inner]) == (Status.OK, "")
    wait_until(lambda: v.metrics(0, 0).get("refused_attributes") == 1, timeout=20)
    after = v.status()
    assert after["state"] == "ACTIVE", after
    # what the receiver paid: about its 16 MiB bound, never the 256 MiB or gigabytes
    assert after["hwm"] - before["hwm"] < 80 * 1024, (before["hwm"], after["hwm"])
    assert client.append_packed([Event(b"still served")]) == (Status.OK, "")
    client.close()


def test_decoding_a_batch_of_records_stays_within_seven_times_its_bytes():
    """The records are transposed into columns a few thousand at a time: all at once
    (zip(*records)) held every record's tuple next to the columns, 9 times the bytes of a
    batch of empty events (a node reading its own spool has no event bound)."""
    import tracemalloc
    n = (4 * MB) // _RECORD.size
    data = (_HEAD.pack(b"FLB", 2, n, 1) + struct.pack(">H", 1) + b"h" + struct.pack(">I", 0)
            + b"".join(_RECORD.pack(1_700_000_000_000 + i, 10**12 + i, 3, 0, 0, 0)
                       for i in range(n)))
    tracemalloc.start()
    try:
        events = decode_events(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(events) == n and events[-1].nanos == 10**12 + n - 1
    assert peak < 7 * len(data), f"peak {peak / len(data):.1f} times the batch"
