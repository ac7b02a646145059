"""``gzip`` compresses each event's body (usually a batch event); ``gunzip`` reverses it.

A compressed event keeps every other field; the attribute ``gzip`` marks it. ``gunzip``
passes events without the mark through unchanged.
"""
from __future__ import annotations

import logging
import zlib

from ..component import Decorator, Sink
from ..event import Event
from ..registry import decorator

log = logging.getLogger(__name__)

GZIP_ATTR = "gzip"
_GZIP_WBITS = 31  # zlib with a gzip header and trailer


@decorator("gzip")
class GzipDecorator(Decorator):
    """Replaces each body by its gzip compression and marks the event with ``gzip``."""

    def __init__(self, inner: Sink, level: int = 6):
        super().__init__(inner)
        if not 0 <= level <= 9:
            raise ValueError(f"level must be between 0 and 9, got {level}")
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
    """Decompresses events marked ``gzip`` and removes the mark; passes others through. An
    event that fails to decompress is passed on as it is and counted in ``errors``."""

    def append(self, events: list[Event]) -> None:
        out = []
        add = out.append
        for e in events:
            if GZIP_ATTR in e.attrs:
                try:
                    body = zlib.decompress(e.body, _GZIP_WBITS)
                except zlib.error as exc:
                    self.metrics.add("errors")
                    log.warning("gunzip: passing on an event that does not decompress: %s",
                                exc)
                else:
                    attrs = dict(e.attrs)
                    del attrs[GZIP_ATTR]
                    e = Event(body, e.timestamp, e.nanos, e.priority, e.host, attrs)
            add(e)
        self.metrics.add("events_in", len(events))
        self.inner.append(out)
