"""The batch codec: a list of events <-> one compact binary string, every field kept.

Used by ``batch``/``unbatch`` (a batch event's body), the RPC transport (``appendPacked``,
``appendGroup``), the E2E write-ahead log and the DFO spool. Format version 2, integers
big-endian, lengths in bytes::

    header   b"FLB" version:u8 count:u32 nhosts:u32
    hosts    nhosts times: len:u16 utf-8 bytes          (each distinct host once)
    attrsets nsets:u32, then nsets times: len:u32 and a block of len bytes holding
             namelen:u16 valuelen:u32 name(utf-8) value, repeated (each distinct set of
             attributes once)
    records  count times: timestamp:i64 nanos:i64 priority:u8 host:u32 bodylen:u32
             attrset:u32 (0: no attributes; k: the k-th set)
    bodies   the bodies, concatenated in event order

Fixed-size records and one block of bodies let both sides work on whole lists instead of
parsing field by field; attributes repeat from event to event (a tail source gives every
event of a file the same ``tailSrcFile``), so each distinct set is sent and parsed once
per batch and every event gets its own copy. Version 1 (attributes after the bodies, per
event) is still read, so spools and logs written before stay readable.

Bounds: :func:`decode_events` refuses (:class:`BatchTooLarge`), before building any event,
a header announcing more than ``max_events`` events, a batch longer than ``max_bytes``, and
a batch whose events would hold more than ``max_bytes // ATTR_ENTRY_BYTES`` attribute
entries in all (one set named by every event is copied into every event: without this
bound a few kB of shared set would cost gigabytes). Every other length is checked against
the bytes actually present, so decoding never allocates more than a small multiple of
its byte bound: the host and attribute-set tables are no longer than the batch (an
encoder writes each distinct one of its events once). Senders keep their batches under
the receivers' bounds with :func:`split_events` (a count and an estimated encoded size
per piece).
"""
from __future__ import annotations

import itertools
import struct

from .event import Batch, Event, Priority, columns, one_value

MAGIC = b"FLB"
VERSION = 2

_HEAD = struct.Struct(">3sBII")
_HOST = struct.Struct(">H")
_RECORD = struct.Struct(">qqBIII")
_RECORD_V1 = struct.Struct(">qqBIIH")
_ATTR = struct.Struct(">HI")
_COUNT = struct.Struct(">I")
_PRIORITIES = tuple(Priority)

MAX_BATCH_EVENTS = 20_000
"""The default bound on one batch, in events: the RPC ``maxBatchEvents`` default."""
MAX_BATCH_BYTES = 16 << 20
"""The default bound on one batch, in bytes: the RPC ``maxMessageBytes`` default."""
ATTR_ENTRY_BYTES = 8
"""What one attribute entry of a decoded event counts against ``max_bytes``. Names and
values are shared between the events of a set; each event's own dict costs 26-37 bytes per
entry (CPython 3.11), so the attributes decoded from a batch stay under about 5 times
``max_bytes``, the same multiple as the events themselves (a 29-byte record becomes an
Event, a body and a dict of about 300 bytes), while a legitimate batch of 10,000 events
may still carry 200 attributes each."""


class BatchTooLarge(ValueError):
    """A batch over a bound of the receiver; ``reason`` names the bound (``events``,
    ``bytes``, ``decompressed``)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def encoded_size(event: Event) -> int:
    """An upper bound of the bytes ``event`` adds to an encoded batch (its host and
    attributes counted as if no other event shared them)."""
    return _RECORD.size + len(event.body) + _shared_size(event.host, event.attrs)


def _shared_size(host: str, attrs: dict[str, bytes]) -> int:
    """What :func:`encoded_size` counts for an event's host and attributes."""
    size = _HOST.size + len(host) * 4
    for k, v in attrs.items():
        size += _ATTR.size + len(k) * 4 + len(v) + _COUNT.size
    return size


def split_events(events: list[Event], max_events: int, max_bytes: int) -> list[list[Event]]:
    """``events`` cut, in order, into pieces of at most ``max_events`` events and at most
    ``max_bytes`` estimated encoded bytes each (:func:`encoded_size`; an event larger than
    ``max_bytes`` alone is a piece of its own). One piece, ``events`` itself, when it fits;
    the pieces of a fast :class:`~node.event.Batch` are fast batches."""
    b = columns(events)
    if b is not None:
        shared = _RECORD.size + _shared_size(b.host, b.attrs)
        sizes = [shared + k for k in map(len, b.bodies)]
    else:
        sizes = [encoded_size(e) for e in events]
    if len(sizes) <= max_events and sum(sizes) + _HEAD.size <= max_bytes:
        return [events]
    cut = b.piece if b is not None else (lambda i, j: events[i:j])
    return [cut(i, j) for i, j in _cuts(sizes, max_events, max_bytes)]


def _cuts(sizes: list[int], max_events: int, max_bytes: int):
    """(start, stop) of each piece of :func:`split_events`, given each event's size."""
    start, size = 0, _HEAD.size
    for i, n in enumerate(sizes):
        if i > start and (i - start >= max_events or size + n > max_bytes):
            yield start, i
            start, size = i, _HEAD.size
        size += n
    if start < len(sizes):
        yield start, len(sizes)


def _encode_batch(b: Batch) -> bytes:
    """:func:`encode_events` of a fast batch: columns packed by C-level maps."""
    n = len(b)
    hb = b.host.encode()
    parts = [_HEAD.pack(MAGIC, VERSION, n, 1), _HOST.pack(len(hb)), hb]
    if b.attrs:
        block = _pack_attrs(b.attrs.items())
        parts += [_COUNT.pack(1), _COUNT.pack(len(block)), block]
        aset = 1
    else:
        parts.append(_COUNT.pack(0))
        aset = 0
    repeat = itertools.repeat
    parts.append(b"".join(map(_RECORD.pack, b.timestamps, b.nanos, repeat(int(b.priority), n),
                              repeat(0, n), map(len, b.bodies), repeat(aset, n))))
    parts.append(b"".join(b.bodies))
    return b"".join(parts)


def encode_events(events: list[Event]) -> bytes:
    """The version-2 binary encoding of ``events`` (see the module docstring)."""
    b = columns(events)
    if b is not None and len(b):
        return _encode_batch(b)
    n = len(events)
    # The usual batch (one source, one host, one set of attributes) is recognised with
    # C-level list scans (one_value); the per-event dict and tuple work below is for
    # mixed batches only.
    host_list = [e.host for e in events]
    hosts: dict[str, int] = {}
    if n and one_value(host_list):
        hosts[host_list[0]] = 0
        index: "list[int] | itertools.repeat" = itertools.repeat(0)
    else:
        index = [hosts.setdefault(h, len(hosts)) for h in host_list]
    attr_list = [e.attrs for e in events]
    sets: dict[tuple, int] = {}
    if n and one_value(attr_list):
        key = tuple(attr_list[0].items())
        if key:
            sets[key] = 1
        set_index: "list[int] | itertools.repeat" = itertools.repeat(1 if key else 0)
    else:
        set_index = [(sets.get(key) or sets.setdefault(key, len(sets) + 1))
                     if (key := tuple(a.items())) else 0 for a in attr_list]
    # struct packs an IntEnum through its Python-level __index__: plain ints are packed
    # several times faster, and a batch rarely holds more than one priority.
    prio_list = [e.priority for e in events]
    if n and one_value(prio_list):
        prios: "list[int] | itertools.repeat" = itertools.repeat(int(prio_list[0]))
    else:
        prios = [int(p) for p in prio_list]
    parts = [_HEAD.pack(MAGIC, VERSION, n, len(hosts))]
    for h in hosts:
        hb = h.encode()
        parts.append(_HOST.pack(len(hb)))
        parts.append(hb)
    parts.append(_COUNT.pack(len(sets)))
    for key in sets:
        block = _pack_attrs(key)
        parts.append(_COUNT.pack(len(block)))
        parts.append(block)
    pack = _RECORD.pack
    parts.append(b"".join([pack(e.timestamp, e.nanos, p, i, len(e.body), a)
                           for e, p, i, a in zip(events, prios, index, set_index)]))
    parts.append(b"".join([e.body for e in events]))
    return b"".join(parts)


def _pack_attrs(items) -> bytes:
    parts = []
    for k, v in items:
        kb = k.encode()
        parts.append(_ATTR.pack(len(kb), len(v)))
        parts.append(kb)
        parts.append(v)
    return b"".join(parts)


def _parse_attrs(block: bytes) -> dict[str, bytes]:
    attrs = {}
    off, end, asize = 0, len(block), _ATTR.size
    while off < end:
        kl, vl = _ATTR.unpack_from(block, off)
        off += asize
        k = block[off:off + kl].decode()
        off += kl
        if off + vl > end:
            raise ValueError("corrupt batch: an attribute runs past its set")
        attrs[k] = block[off:off + vl]
        off += vl
    return attrs


def decode_events(data: bytes, max_events: int | None = None,
                  max_bytes: int | None = None) -> list[Event]:
    """Inverse of :func:`encode_events` (versions 1 and 2); ValueError if ``data`` is not
    a valid batch, :class:`BatchTooLarge` if it announces more than ``max_events`` events
    (reason ``events``), is longer than ``max_bytes`` (``bytes``) or would give its events
    more than ``max_bytes // ATTR_ENTRY_BYTES`` attribute entries in all (``attributes``).

    Without ``max_bytes`` (a node decoding its own spool or log) the length is not bounded
    and the attribute entries are bounded by ``max(MAX_BATCH_BYTES, len(data))``."""
    if max_bytes is not None and len(data) > max_bytes:
        raise BatchTooLarge("bytes", f"batch of {len(data)} bytes, more than the "
                                     f"{max_bytes} allowed")
    try:
        magic, version, count, nhosts = _HEAD.unpack_from(data, 0)
    except struct.error:
        raise ValueError("batch too short") from None
    if magic != MAGIC:
        raise ValueError("not a batch (bad magic)")
    if version not in (1, VERSION):
        raise ValueError(f"unsupported batch format version {version}")
    if max_events is not None and count > max_events:
        raise BatchTooLarge("events", f"batch of {count} events, more than the "
                                      f"{max_events} allowed")
    # An encoder writes each distinct host and attribute set of its events once: a table
    # longer than the batch is refused before it is read (16 MiB of 4-byte empty sets
    # were a dict each: 20 times the message in memory and seconds of CPU).
    if nhosts > count:
        raise ValueError(f"corrupt batch: more hosts than events ({nhosts} > {count})")
    try:
        off = _HEAD.size
        hosts = []
        for _ in range(nhosts):
            (hl,) = _HOST.unpack_from(data, off)
            off += 2
            hosts.append(data[off:off + hl].decode())
            off += hl
        sets: list[dict] = [{}]
        if version == VERSION:
            (nsets,) = _COUNT.unpack_from(data, off)
            off += 4
            if nsets > count:
                raise ValueError(f"corrupt batch: more attribute sets than events "
                                 f"({nsets} > {count})")
            for _ in range(nsets):
                (sl,) = _COUNT.unpack_from(data, off)
                off += 4
                if off + sl > len(data):
                    raise ValueError("batch truncated")
                sets.append(_parse_attrs(data[off:off + sl]))
                off += sl
        record = _RECORD if version == VERSION else _RECORD_V1
        end = off + count * record.size
        if end > len(data):
            raise ValueError("batch truncated")
        if version == 1:
            records = list(record.iter_unpack(data[off:end]))
            bounds = list(itertools.accumulate([r[4] for r in records], initial=end))
            if bounds[-1] > len(data):
                raise ValueError("batch truncated")
            return _decode_v1_rest(data, records, bounds, hosts)
        if not count:
            if end != len(data):
                raise ValueError("trailing bytes after batch")
            return []
        # Columns, unpacked and transposed in C (_columns). A batch with one host, priority
        # and set of attributes (the usual one) becomes a fast Batch, with no per-event
        # object; the others become events.
        ts, nanos, prio_col, host_col, lens, set_col = _columns(record, data, off, end)
        if len(sets) > 1:
            _check_attr_entries(sets, set_col, count, max_bytes if max_bytes is not None
                                else max(MAX_BATCH_BYTES, len(data)))
        bounds = list(itertools.accumulate(lens, initial=end))
        off = bounds[-1]
        if off > len(data):
            raise ValueError("batch truncated")
        bodies = list(map(data.__getitem__, map(slice, bounds, bounds[1:])))
        if one_value(prio_col) and one_value(host_col) and one_value(set_col):
            if off != len(data):
                raise ValueError("trailing bytes after batch")
            return Batch(bodies, ts, nanos, _PRIORITIES[prio_col[0]], hosts[host_col[0]],
                         sets[set_col[0]].copy())
        prios = _PRIORITIES
        out = [Event(b, t, n, prios[p], hosts[h], sets[a].copy() if a else {})
               for b, t, n, p, h, a in zip(bodies, ts, nanos, prio_col, host_col, set_col)]
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt batch: {exc}") from None
    if off != len(data):
        raise ValueError("trailing bytes after batch")
    return out


_CHUNK_RECORDS = 4096


def _columns(record: struct.Struct, data: bytes, off: int, end: int) -> list[list]:
    """The fields of the records in ``data[off:end]`` as one list per field, transposed
    (a zip of the unpacked records) a few thousand records at a time: a zip of them all
    at once held every record's tuple as well as the columns (9 times the bytes of a batch
    of records, 4 this way) and was slower (a call with 20,000 arguments)."""
    cols: list[list] = [[], [], [], [], [], []]     # the six fields of a record
    step = _CHUNK_RECORDS * record.size
    for start in range(off, end, step):
        for col, part in zip(cols, zip(*record.iter_unpack(data[start:min(end, start + step)]))):
            col += part
    return cols


def _check_attr_entries(sets: list[dict], set_col, count: int, budget: int) -> None:
    """BatchTooLarge if ``count`` events naming the sets ``set_col`` would hold more than
    ``budget // ATTR_ENTRY_BYTES`` attribute entries in all (each gets a copy of its set)."""
    limit = budget // ATTR_ENTRY_BYTES
    sizes = [len(s) for s in sets]
    if count * max(sizes) <= limit:   # the usual case: no need to look at every record
        return
    total = sum(map(sizes.__getitem__, set_col))
    if total > limit:
        raise BatchTooLarge("attributes", f"batch whose {count} events would hold {total} "
                                          f"attribute entries, more than the {limit} "
                                          f"allowed")


def _decode_v1_rest(data: bytes, records: list, bounds: list[int],
                    hosts: list[str]) -> list[Event]:
    prios = _PRIORITIES
    off = bounds[-1]
    out = [Event(data[a:b], r[0], r[1], prios[r[2]], hosts[r[3]], {})
           for r, a, b in zip(records, bounds, bounds[1:])]
    asize = _ATTR.size
    for e, r in zip(out, records):
        if r[5]:
            attrs = e.attrs
            for _ in range(r[5]):
                kl, vl = _ATTR.unpack_from(data, off)
                off += asize
                k = data[off:off + kl].decode()
                off += kl
                attrs[k] = data[off:off + vl]
                off += vl
    if off != len(data):
        raise ValueError("batch truncated" if off > len(data) else
                         "trailing bytes after batch")
    return out
