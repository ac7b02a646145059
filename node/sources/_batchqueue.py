"""A bounded queue of event batches between producer threads and ``next_batch``.

Shared by the sources whose events arrive on their own threads (network servers, exec,
console, memory). It is bounded twice: by *events* (``capacity``) and by *bytes*
(``max_bytes``, measured by :func:`batch_bytes`), not by batches, so backpressure does not
depend on how a producer happens to slice its input, and a few huge events cannot take
the memory a count bound allows (10,000 events of 1 MiB).

Contract:

* The queue is *full* when one more batch would take it past ``capacity`` events, or when
  it holds ``max_bytes`` bytes or more: it never holds more than ``max_bytes`` plus one
  batch, so a producer bounds the overshoot by bounding its batches. ``capacity=None``
  removes both bounds (the in-process test channels).
* ``put`` blocks while the queue is full (a batch larger than a whole bound is still
  accepted once the queue is empty, so it cannot wait forever) and returns a sequence
  number, or ``None`` if it timed out or the queue was closed. ``offer`` never blocks.
* Blocked producers are served in the order they came to wait, and a ``put`` finding
  others waiting waits behind them even if its batch would fit: many senders into one
  flow (a collector's connection threads) each get their turn. Without the line, every
  waiter was woken and the first to run won, and a sender back from its last call took
  the room before those waiting: over seconds some senders got half their share, others
  one and a half. A waiter that gives up (timeout) leaves the line.
* ``get`` returns what is queued, several batches merged up to ``max_batch`` events, ``[]``
  after ``timeout`` with nothing, and ``None`` once the queue is closed, or finished and
  drained.
* ``wait_taken(seq)`` waits until the batch ``seq`` has been handed to a ``get`` caller;
  ``withdraw(seq)`` makes sure it never will be, unless that already happened (a producer
  that gives up and must tell its client whether the batch went through).
* ``close`` wakes every waiter at once; ``wake`` only wakes ``get`` callers so they can
  check their own ``cancelled`` condition (a shared queue with several consumers).
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Callable

from ..component import Source
from ..event import Batch, Event, columns, one_value

DEFAULT_MAX_BYTES = 64 << 20
EVENT_OVERHEAD = 100   # bytes of Python objects around each event's body, roughly
ATTR_OVERHEAD = 100    # and around each attribute (a str, a bytes and a dict slot)


def batch_bytes(events: list[Event]) -> int:
    """What ``events`` weigh in a queue: body and attribute bytes, plus
    ``EVENT_OVERHEAD`` per event and ``ATTR_OVERHEAD`` per attribute (a message of 3,000
    tiny attributes weighs what it costs in memory, not its 29 KB of text)."""
    count = len(events)
    b = columns(events)
    if b is not None:
        return EVENT_OVERHEAD * count + sum(map(len, b.bodies)) + count * _attrs_bytes(b.attrs)
    n = EVENT_OVERHEAD * count + sum(map(len, [e.body for e in events]))
    attrs = [e.attrs for e in events]
    # Usually every event of a batch carries the same attributes (one source, one file):
    # weighed once, with a C-level scan to make sure.
    if count and one_value(attrs):
        return n + count * _attrs_bytes(attrs[0])
    for a in attrs:
        if a:
            n += _attrs_bytes(a)
    return n


def _attrs_bytes(attrs: dict) -> int:
    n = ATTR_OVERHEAD * len(attrs)
    for k, v in attrs.items():
        n += len(k) + len(v)
    return n


class BatchQueue:
    """Bounded FIFO of event batches (see the module docstring)."""

    def __init__(self, capacity: int | None = 10_000, max_batch: int = 10_000,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.capacity = capacity
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)    # consumers and wait_taken
        self._items: deque[tuple[int, list[Event], int]] = deque()
        self._size = 0
        self._bytes = 0
        self._seq = 0       # sequence number of the last batch put
        self._taken = 0     # sequence number of the last batch handed to get()
        self._finished = False
        self._closed = False
        # blocked puts, first come first served: each waits on its own condition (on the
        # same lock), and only the first is woken when room is made
        self._waiters: deque[threading.Condition] = deque()

    # ------------------------------------------------------------ producer side

    def _room(self, n: int) -> bool:
        return (self.capacity is None or self._size == 0
                or (self._size + n <= self.capacity and self._bytes < self.max_bytes))

    def _append(self, events: list[Event], nbytes: int) -> int:
        self._seq += 1
        self._items.append((self._seq, events, nbytes))
        self._size += len(events)
        self._bytes += nbytes
        self._cond.notify_all()
        return self._seq

    def put(self, events: list[Event], timeout: float | None = None) -> int | None:
        """Queue ``events``; blocks while full. The batch's sequence number, or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        nbytes = batch_bytes(events)    # weighed outside the lock the consumer waits on
        n = len(events)
        with self._cond:
            if not self._waiters or self._closed:
                if self._closed or self._finished:
                    return None
                if self._room(n):
                    return self._append(events, nbytes)
            ticket = threading.Condition(self._lock)    # in line, behind the others
            self._waiters.append(ticket)
            try:
                while not self._closed and not (self._waiters[0] is ticket
                                                and self._room(n)):
                    if deadline is None:
                        ticket.wait()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return None
                        ticket.wait(left)
                if self._closed or self._finished:
                    return None
                return self._append(events, nbytes)
            finally:
                head = self._waiters[0] is ticket
                self._waiters.remove(ticket)
                if head and self._room(1):
                    self._next_producer()   # the next in line may have room

    def _next_producer(self) -> None:
        """Wake the first blocked put (room was made, or it became the first)."""
        if self._waiters:
            self._waiters[0].notify()

    def offer(self, events: list[Event]) -> bool:
        """Queue ``events`` if there is room now; False if full, closed or finished."""
        nbytes = batch_bytes(events)
        with self._cond:
            if self._closed or self._finished or not self._room(len(events)):
                return False
            self._append(events, nbytes)
            return True

    def finish(self) -> None:
        """No more batches will come: ``get`` returns None once the queue is drained."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()
            for w in self._waiters:
                w.notify()

    def wait_taken(self, seq: int, timeout: float) -> bool:
        """True once batch ``seq`` was handed to a consumer; False on timeout or close."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._taken < seq:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def withdraw(self, seq: int) -> bool:
        """Make sure batch ``seq`` will never reach a consumer: True if no consumer took it
        (it is removed, or was dropped by ``close``), False if one already did."""
        with self._cond:
            if self._taken >= seq:
                return False
            for i, (s, events, nbytes) in enumerate(self._items):
                if s == seq:
                    del self._items[i]
                    self._size -= len(events)
                    self._bytes -= nbytes
                    self._cond.notify_all()
                    self._next_producer()
                    break
            return True

    # ------------------------------------------------------------ consumer side

    def get(self, timeout: float, cancelled: Callable[[], bool] | None = None
            ) -> list[Event] | None:
        """Up to ``max_batch`` queued events; [] on timeout; None when closed or done."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed or self._finished or (cancelled is not None and cancelled()):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            if self._closed:
                return None
            seq, out, nbytes = self._items.popleft()
            first = seq
            if len(out) < self.max_batch and self._items:
                # Fast batches (node.event.Batch) are merged only with batches they join,
                # so they stay fast; other batches are merged into a list of events.
                fast = columns(out)
                parts, size = [out], len(out)
                while (self._items and size + len(self._items[0][1]) <= self.max_batch
                       and self._joinable(first, self._items[0][0])
                       and (fast is None or fast.joins(self._items[0][1]))):
                    seq, more, more_bytes = self._items.popleft()
                    parts.append(more)
                    size += len(more)
                    nbytes += more_bytes
                if len(parts) > 1:
                    out = (Batch.concat(parts) if fast is not None
                           else list(itertools.chain.from_iterable(parts)))
            self._size -= len(out)
            self._bytes -= nbytes
            self._taken = seq
            self._cond.notify_all()
            self._next_producer()
            return out

    def _joinable(self, first: int, seq: int) -> bool:
        """May batch ``seq`` be merged into a ``get`` that started with batch ``first``?"""
        return True

    def wake(self) -> None:
        """Wake blocked ``get`` callers so they re-check their ``cancelled`` condition."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Drop everything queued and wake every waiter; puts fail from now on."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._size = 0
            self._bytes = 0
            self._cond.notify_all()
            for w in self._waiters:
                w.notify()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Events queued."""
        return self._size

    @property
    def bytes(self) -> int:
        """What the queued events weigh (:func:`batch_bytes`)."""
        return self._bytes


class QueuedSource(Source):
    """A source whose events arrive on its own threads: ``open`` sets ``self._queue``,
    ``next_batch`` takes from it (None before ``open`` and once the queue is closed or
    finished and drained), and ``close`` closes it, which wakes ``next_batch`` at once."""

    _queue: BatchQueue | None = None

    def next_batch(self, timeout: float) -> list[Event] | None:
        if self._queue is None:
            return None
        out = self._queue.get(timeout)
        if out:
            self.metrics.add("events_in", len(out))
        return out

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
