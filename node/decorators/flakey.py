"""Fault injection for tests: ``flakeyAppend(p)``, ``intervalFlakeyAppend(n)``,
``intervalDroppyAppend(n)``."""
from __future__ import annotations

import logging
import random

from ..component import Decorator, Sink
from ..errors import SinkError
from ..event import Event
from ..registry import AtLeast1, decorator
from .samplers import Probability

log = logging.getLogger(__name__)


@decorator("flakeyAppend")
class FlakeyAppend(Decorator):
    """Each append fails (SinkError, nothing passed on) with probability ``p``."""

    def __init__(self, inner: Sink, p: Probability):
        super().__init__(inner)
        self.p = p
        self.random = random.Random()

    def append(self, events: list[Event]) -> None:
        if self.random.random() < self.p:
            self.metrics.add("injected_failures")
            raise SinkError("flakeyAppend: injected failure")
        self.inner.append(events)


@decorator("intervalFlakeyAppend")
class IntervalFlakeyAppend(Decorator):
    """Every ``n``-th append fails (SinkError, nothing passed on)."""

    def __init__(self, inner: Sink, n: AtLeast1):
        super().__init__(inner)
        self.n = n
        self.count = 0

    def append(self, events: list[Event]) -> None:
        self.count += 1
        if self.count % self.n == 0:
            self.count = 0
            self.metrics.add("injected_failures")
            raise SinkError("intervalFlakeyAppend: injected failure")
        self.inner.append(events)


@decorator("intervalDroppyAppend")
class IntervalDroppyAppend(Decorator):
    """Silently drops every ``n``-th event (counting across batches), counted in
    ``events_dropped``."""

    def __init__(self, inner: Sink, n: AtLeast1):
        super().__init__(inner)
        self.n = n
        self.count = 0  # events seen so far

    def append(self, events: list[Event]) -> None:
        n, base = self.n, self.count + 1
        kept = [e for i, e in enumerate(events, base) if i % n]
        self.count += len(events)
        dropped = len(events) - len(kept)
        if dropped:
            self.metrics.add("events_dropped", dropped)
            log.debug("intervalDroppyAppend: dropped %d events", dropped)
        if kept:
            self.inner.append(kept)
