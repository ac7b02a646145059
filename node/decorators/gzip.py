"""``gzip`` compresses each event's body (usually a batch event); ``gunzip`` reverses it.

A compressed event keeps every other field; the attribute ``gzip`` marks it. ``gunzip``
passes events without the mark through unchanged, and inflates no body past its
``maxBytes`` bound.
"""
from __future__ import annotations

import logging
import zlib
from typing import Annotated

from annotated_types import Interval

from ..codec import MAX_BATCH_BYTES
from ..component import Decorator, Sink
from ..event import Event
from ..limits import Refusals
from ..registry import decorator
from .batch import BatchBytes

log = logging.getLogger(__name__)

GZIP_ATTR = "gzip"
_GZIP_WBITS = 31  # zlib with a gzip header and trailer


@decorator("gzip")
class GzipDecorator(Decorator):
    """Replaces each body by its gzip compression and marks the event with ``gzip``."""

    def __init__(self, inner: Sink, level: Annotated[int, Interval(ge=0, le=9)] = 6):
        super().__init__(inner)
        self.level = level

    def append(self, events: list[Event]) -> None:
        level = self.level
        out = [Event(zlib.compress(e.body, level, _GZIP_WBITS), e.timestamp, e.nanos,
                     e.priority, e.host, {**e.attrs, GZIP_ATTR: b"1"}) for e in events]
        self.metrics.add("events_in", len(events))
        self.metrics.add("bytes_in", sum([len(e.body) for e in events]))
        self.metrics.add("bytes_out", sum([len(e.body) for e in out]))
        self.inner.append(out)


@decorator("gunzip")
class GunzipDecorator(Decorator):
    """Decompresses events marked ``gzip`` and removes the mark; passes others through.

    Bounds: one body inflates to at most ``maxBytes`` bytes (default 16 MiB, the RPC
    ``maxMessageBytes``); the inflater stops one byte past it, so a compression bomb costs
    that much at most. An event past the bound is refused (``refused_decompressed``) and an
    event that does not decompress is refused as ``refused_malformed``; both are passed on
    as they are, still compressed and marked ``gzip``, so nothing is lost: the sink
    downstream keeps their bytes, and a rate-limited warning says so. The events of one
    append are passed on in pieces holding at most ``maxBytes`` decompressed bytes each (one
    event over it alone), so a message of many small bombs costs no more than one; if the
    inner sink fails on a later piece, the earlier pieces have already been passed on."""

    def __init__(self, inner: Sink, maxBytes: BatchBytes = MAX_BATCH_BYTES):
        super().__init__(inner)
        self.max_bytes = maxBytes
        self.refusals = Refusals(self.metrics, log, "gunzip")

    def _inflate(self, body: bytes) -> bytes | None:
        """``body`` decompressed, or None (counted and logged) if it is not a whole gzip
        stream or inflates to more than ``max_bytes``."""
        inflater = zlib.decompressobj(_GZIP_WBITS)
        try:
            out = inflater.decompress(body, self.max_bytes + 1)
        except zlib.error as exc:
            self.refusals.refuse("malformed", f"passing on an event that does not "
                                              f"decompress as it is: {exc}")
            return None
        if len(out) > self.max_bytes:
            self.refusals.refuse("decompressed", f"passing on as it is an event that "
                                                 f"inflates to more than {self.max_bytes} "
                                                 f"bytes")
            return None
        if not inflater.eof:
            self.refusals.refuse("malformed", "passing on an event that does not "
                                              "decompress as it is: truncated stream")
            return None
        return out

    def append(self, events: list[Event]) -> None:
        piece: list[Event] = []
        inflated = 0
        for e in events:
            if GZIP_ATTR in e.attrs:
                body = self._inflate(e.body)
                if body is not None:
                    if piece and inflated + len(body) > self.max_bytes:
                        self.inner.append(piece)
                        piece, inflated = [], 0
                    inflated += len(body)
                    attrs = dict(e.attrs)
                    del attrs[GZIP_ATTR]
                    e = Event(body, e.timestamp, e.nanos, e.priority, e.host, attrs)
            piece.append(e)
        self.metrics.add("events_in", len(events))
        if piece:
            self.inner.append(piece)
