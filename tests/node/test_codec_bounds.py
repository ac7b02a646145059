"""Bounds of the batch codec: one attribute set named by every event of a batch,
oversized batches."""
from __future__ import annotations

import struct

import pytest

from node.codec import (_ATTR, _HEAD, _RECORD, ATTR_ENTRY_BYTES, MAX_BATCH_BYTES,
                        BatchTooLarge, decode_events, encode_events)
from node.event import Event, Priority

MB = 1 << 20


def shared_set_batch(count: int, k: int) -> bytes:
    """A version-2 batch of ``count`` empty events all naming one set of ``k`` attributes
    (what scripts/repro-issue9/codec_attr_bomb.py sends), built without making events."""
    block = b"".join(_ATTR.pack(4, 0) + b"%04x" % i for i in range(k))
    return (_HEAD.pack(b"FLB", 2, count, 1) + struct.pack(">H", 1) + b"h"
            + struct.pack(">II", 1, len(block)) + block
            + _RECORD.pack(1, 0, 3, 0, 0, 1) * count)


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
