"""Samplers: ``intervalSampler(n)``, ``probSampler(p)``, ``reservoirSampler(k)``."""
from __future__ import annotations

import random

from ..component import Decorator, Sink
from ..event import Event
from ..registry import decorator


def check_probability(p: float) -> float:
    """``p`` if it is a probability (0 to 1); ValueError otherwise."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be between 0 and 1, got {p}")
    return p


def check_at_least_one(name: str, value: int) -> int:
    """``value`` if it is 1 or more; ValueError naming ``name`` otherwise."""
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


class _Sampler(Decorator):
    def _pass(self, events: list[Event], kept: list[Event]) -> None:
        self.metrics.add("events_in", len(events))
        self.metrics.add("events_out", len(kept))
        if kept:
            self.inner.append(kept)


@decorator("intervalSampler")
class IntervalSampler(_Sampler):
    """Keeps the first event and then every ``n``-th one (counting across batches)."""

    def __init__(self, inner: Sink, n: int):
        super().__init__(inner)
        self.n = check_at_least_one("n", n)
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

    def __init__(self, inner: Sink, p: float):
        super().__init__(inner)
        self.p = check_probability(p)
        self.random = random.Random()

    def append(self, events: list[Event]) -> None:
        rnd, p = self.random.random, self.p
        self._pass(events, [e for e in events if rnd() < p])


@decorator("reservoirSampler")
class ReservoirSampler(_Sampler):
    """Passes on a uniform random sample of ``k`` events of each appended batch (all of a
    batch of ``k`` or fewer), in their original order."""

    def __init__(self, inner: Sink, k: int):
        super().__init__(inner)
        self.k = check_at_least_one("k", k)
        self.random = random.Random()

    def append(self, events: list[Event]) -> None:
        if len(events) <= self.k:
            kept = events
        else:
            kept = [events[i] for i in sorted(self.random.sample(range(len(events)), self.k))]
        self._pass(events, kept)
