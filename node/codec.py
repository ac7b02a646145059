"""The batch codec: a list of events <-> one compact binary string, every field kept.

Used by ``batch``/``unbatch`` (a batch event's body), the RPC transport (``appendPacked``,
``appendGroup``), the E2E write-ahead log and the DFO spool. Format version 1, integers
big-endian, lengths in bytes::

    header   b"FLB" version:u8 count:u32 nhosts:u32
    hosts    nhosts times: len:u16 utf-8 bytes          (each distinct host once)
    records  count times: timestamp:i64 nanos:i64 priority:u8 host:u32 bodylen:u32 nattrs:u16
    bodies   the bodies, concatenated in event order
    attrs    for each event with nattrs > 0, in order, nattrs times:
             namelen:u16 valuelen:u32 name(utf-8) value

Fixed-size records and one block of bodies let both sides work on whole lists instead of
parsing field by field.
"""
from __future__ import annotations

import itertools
import struct

from .event import Event, Priority

MAGIC = b"FLB"
VERSION = 1

_HEAD = struct.Struct(">3sBII")
_HOST = struct.Struct(">H")
_RECORD = struct.Struct(">qqBIIH")
_ATTR = struct.Struct(">HI")
_PRIORITIES = tuple(Priority)


def encode_events(events: list[Event]) -> bytes:
    """The version-1 binary encoding of ``events`` (see the module docstring)."""
    hosts: dict[str, int] = {}
    index = [hosts.setdefault(e.host, len(hosts)) for e in events]
    parts = [_HEAD.pack(MAGIC, VERSION, len(events), len(hosts))]
    for h in hosts:
        hb = h.encode()
        parts.append(_HOST.pack(len(hb)))
        parts.append(hb)
    pack = _RECORD.pack
    parts.append(b"".join([pack(e.timestamp, e.nanos, e.priority, i, len(e.body),
                                len(e.attrs)) for e, i in zip(events, index)]))
    parts.append(b"".join([e.body for e in events]))
    for e in events:
        if e.attrs:
            for k, v in e.attrs.items():
                kb = k.encode()
                parts.append(_ATTR.pack(len(kb), len(v)))
                parts.append(kb)
                parts.append(v)
    return b"".join(parts)


def decode_events(data: bytes) -> list[Event]:
    """Inverse of :func:`encode_events`; ValueError if ``data`` is not a valid batch."""
    try:
        magic, version, count, nhosts = _HEAD.unpack_from(data, 0)
    except struct.error:
        raise ValueError("batch too short") from None
    if magic != MAGIC:
        raise ValueError("not a batch (bad magic)")
    if version != VERSION:
        raise ValueError(f"unsupported batch format version {version}")
    try:
        off = _HEAD.size
        hosts = []
        for _ in range(nhosts):
            (hl,) = _HOST.unpack_from(data, off)
            off += 2
            hosts.append(data[off:off + hl].decode())
            off += hl
        end = off + count * _RECORD.size
        if end > len(data):
            raise ValueError("batch truncated")
        records = list(_RECORD.iter_unpack(data[off:end]))
        bounds = list(itertools.accumulate([r[4] for r in records], initial=end))
        off = bounds[-1]
        if off > len(data):
            raise ValueError("batch truncated")
        prios = _PRIORITIES
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
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt batch: {exc}") from None
    if off != len(data):
        raise ValueError("batch truncated" if off > len(data) else
                         "trailing bytes after batch")
    return out
