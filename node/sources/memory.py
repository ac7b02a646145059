"""``memory("name")``: a test connector fed from Python.

Tests (and embedding code) call ``push(name, items)`` with events or bodies (bytes or str)
and ``finish(name)``; a ``memory("name")`` source returns what was pushed, in order, and is
exhausted once finished and drained. Channels live in a thread-safe module registry,
created by whichever comes first (a push or an ``open``), so a test may push before the
node starts. ``reset()`` forgets every channel.
"""
from __future__ import annotations

import threading
from typing import Iterable

from ..component import NodeContext, Source
from ..event import Event, events_from_lines
from ..registry import source
from ._batchqueue import BatchQueue

_lock = threading.Lock()
_channels: dict[str, BatchQueue] = {}


def channel(name: str) -> BatchQueue:
    """The queue of channel ``name`` (created if new)."""
    with _lock:
        q = _channels.get(name)
        if q is None:
            q = _channels[name] = BatchQueue(capacity=None)
        return q


def push(name: str, items: Iterable[Event | bytes | str]) -> int:
    """Queue events (or bodies, made into events now) on channel ``name``; returns how many."""
    items = list(items)
    if not items:
        return 0
    events = [it for it in items if isinstance(it, Event)]
    if len(events) != len(items):
        bodies = [it.encode() if isinstance(it, str) else it for it in items
                  if not isinstance(it, Event)]
        made = iter(events_from_lines(bodies))
        events = [it if isinstance(it, Event) else next(made) for it in items]
    if channel(name).put(events) is None:
        raise RuntimeError(f"memory channel {name!r} is finished")
    return len(events)


def finish(name: str) -> None:
    """No more pushes on ``name``: its source ends once it has returned everything."""
    channel(name).finish()


def reset(name: str | None = None) -> None:
    """Forget channel ``name`` (or every channel), waking their sources."""
    with _lock:
        dropped = list(_channels.values()) if name is None else [_channels.pop(name, None)]
        if name is None:
            _channels.clear()
    for q in dropped:
        if q is not None:
            q.close()


@source("memory")
class MemorySource(Source):
    """Events pushed from Python with ``node.sources.memory.push(name, ...)``."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self._queue: BatchQueue | None = None
        self._closed = False

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._closed = False
        self._queue = channel(self.name)

    def next_batch(self, timeout: float) -> list[Event] | None:
        if self._queue is None or self._closed:
            return None
        out = self._queue.get(timeout, cancelled=lambda: self._closed)
        if out:
            self.metrics.add("events_in", len(out))
        return out

    def close(self) -> None:
        # the channel outlives the source: a later source of the same name continues it
        self._closed = True
        if self._queue is not None:
            self._queue.wake()
