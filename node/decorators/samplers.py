"""Samplers: ``intervalSampler(n)``, ``probSampler(p)``, ``reservoirSampler(k)``."""
from __future__ import annotations

import random
from typing import Annotated

from annotated_types import Interval

from ..component import Decorator, Sink
from ..event import Event
from ..registry import AtLeast1, decorator


Probability = Annotated[float, Interval(ge=0, le=1)]   # declared check (node/registry.py)


class _Sampler(Decorator):
    def _pass(self, events: list[Event], kept: list[Event]) -> None:
        self.metrics.add("events_in", len(events))
        self.metrics.add("events_out", len(kept))
        if kept:
            self.inner.append(kept)


@decorator("intervalSampler")
class IntervalSampler(_Sampler):
    """Keeps the first event and then every ``n``-th one (counting across batches)."""

    def __init__(self, inner: Sink, n: AtLeast1):
        super().__init__(inner)
        self.n = n
        self.count = 0  # events seen so far

    def append(self, events: list[Event]) -> None:
        n = self.n
        first = (-self.count) % n  # index in this batch of the next event to keep
        kept = events[first::n]
        self.count += len(events)
        self._pass(events, kept)


@decorator("probSampler")
class ProbSampler(_Sampler):
    """Keeps each event independently with probability ``p``."""

    def __init__(self, inner: Sink, p: Probability):
        super().__init__(inner)
        self.p = p
        self.random = random.Random()

    def append(self, events: list[Event]) -> None:
        rnd, p = self.random.random, self.p
        self._pass(events, [e for e in events if rnd() < p])


@decorator("reservoirSampler")
class ReservoirSampler(_Sampler):
    """Passes on a uniform random sample of ``k`` events of each appended batch (all of a
    batch of ``k`` or fewer), in their original order."""

    def __init__(self, inner: Sink, k: AtLeast1):
        super().__init__(inner)
        self.k = k
        self.random = random.Random()

    def append(self, events: list[Event]) -> None:
        if len(events) <= self.k:
            kept = events
        else:
            kept = [events[i] for i in sorted(self.random.sample(range(len(events)), self.k))]
        self._pass(events, kept)
