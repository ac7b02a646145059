"""Generated events for tests and benchmarks: ``asciisynth``, ``synth``, ``nonlsynth``.

All take ``([count=0[, size=150]], seed=)``: ``count`` events (0: forever) of ``size``
bytes. ``asciisynth`` bodies are printable ASCII, ``synth`` bodies random bytes,
``nonlsynth`` random bytes without LF. Bodies are cut from one random block per batch, so
generating costs little more than building the events. ``seed`` makes the bodies
reproducible.
"""
from __future__ import annotations

import random
import threading
from typing import Annotated

from annotated_types import Ge

from ..component import NodeContext, Source
from ..event import Event, events_from_lines
from ..registry import source

BATCH_BYTES = 1 << 20
MAX_BATCH = 5000

# 256 byte values folded onto the 95 printable characters 0x20..0x7E
_ASCII = bytes(0x20 + b % 95 for b in range(256))
# LF becomes a space; every other byte is kept
_NONL = bytes(0x20 if b == 0x0A else b for b in range(256))


class _SynthBase(Source):
    table: bytes | None = None

    def __init__(self, count: Annotated[int, Ge(0)] = 0, size: Annotated[int, Ge(0)] = 150,
                 *, seed: int | None = None):
        super().__init__()
        self.count = count
        self.size = size
        self.seed = seed
        self._made = 0
        self._closed = threading.Event()

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._rng = random.Random(self.seed)

    def next_batch(self, timeout: float) -> list[Event] | None:
        if self._closed.is_set():
            return None
        n = min(MAX_BATCH, max(1, BATCH_BYTES // max(self.size, 1)))
        if self.count:
            n = min(n, self.count - self._made)
            if n <= 0:
                return None
        size = self.size
        blob = self._rng.randbytes(n * size)
        if self.table is not None:
            blob = blob.translate(self.table)
        bodies = [blob[i:i + size] for i in range(0, n * size, size)] if size else [b""] * n
        self._made += n
        self.metrics.add("events_in", n)
        self.metrics.add("bytes_in", n * size)
        return events_from_lines(bodies)

    def close(self) -> None:
        self._closed.set()


@source("asciisynth")
class AsciiSynthSource(_SynthBase):
    """``count`` events (0: forever) with ``size`` random printable ASCII bytes each."""

    table = _ASCII


@source("synth")
class SynthSource(_SynthBase):
    """``count`` events (0: forever) with ``size`` random bytes each."""


@source("nonlsynth")
class NoNlSynthSource(_SynthBase):
    """``count`` events (0: forever) with ``size`` random bytes each, none of them LF."""

    table = _NONL
