"""The event model.

An event is cheap to create because sources make millions of them: a ``__slots__`` class
with positional construction. ``attrs`` maps attribute names to bytes; decorators that set
attributes make them visible to every later component of the chain.
"""
from __future__ import annotations

import enum
import socket
import threading
import time

DEFAULT_MAX_BODY = 32 * 1024


class Priority(enum.IntEnum):
    FATAL = 0
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4
    TRACE = 5

    @classmethod
    def parse(cls, value: "str | int | Priority") -> "Priority":
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        return cls[value.upper()]


LOCAL_HOST = socket.gethostname()


class Event:
    """One event: timestamp (ms), nanos (monotonic), priority, host, body, attrs."""

    __slots__ = ("body", "timestamp", "nanos", "priority", "host", "attrs")

    def __init__(self, body: bytes, timestamp: int | None = None, nanos: int | None = None,
                 priority: Priority = Priority.INFO, host: str = LOCAL_HOST,
                 attrs: dict[str, bytes] | None = None):
        self.body = body
        self.timestamp = time.time_ns() // 1_000_000 if timestamp is None else timestamp
        self.nanos = time.monotonic_ns() if nanos is None else nanos
        self.priority = priority
        self.host = host
        self.attrs = {} if attrs is None else attrs

    def copy(self) -> "Event":
        return Event(self.body, self.timestamp, self.nanos, self.priority, self.host,
                     dict(self.attrs))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.body == other.body and self.timestamp == other.timestamp
                and self.nanos == other.nanos and self.priority == other.priority
                and self.host == other.host and self.attrs == other.attrs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Event(body={self.body!r}, timestamp={self.timestamp}, nanos={self.nanos}, "
                f"priority={self.priority.name}, host={self.host!r}, attrs={self.attrs!r})")


def one_value(values: list) -> bool:
    """True if ``values`` (not empty) holds one value throughout: a C-level scan
    (``list.count`` compares by identity first, then ``==``). What the per-batch paths
    ask of a batch's hosts, attributes, priorities before doing the work once."""
    return values.count(values[0]) == len(values)


def events_from_lines(lines: list[bytes], host: str = LOCAL_HOST,
                      priority: Priority = Priority.INFO) -> "Batch":
    """What line sources give: a fast :class:`Batch` of ``lines``, no attributes, one
    timestamp per call, nanos strictly increasing."""
    return lines_batch(lines, {}, host=host, priority=priority)


class Batch:
    """Events that share their host, priority and attributes, kept as columns: the batch
    representation of the data path (one buffer's worth of bodies, one set of attributes).

    It is a read-only sequence of :class:`Event`: ``len``, iteration, indexing, slicing,
    ``==``, ``+``, ``*``, ``in`` and ``copy``/``count``/``index`` behave as on a list of the
    same events. It is not a ``list``: no ``append``/``extend``/``sort`` (take
    ``list(batch)`` or ``batch.copy()`` to have a list of your own), ``isinstance(b,
    list)`` is False and ``json`` needs ``list(b)``. The events are made the first
    time something reads them that way, once (under a lock: two threads get the same
    list), and kept (:attr:`events`); from then on the batch is that list and ``fast`` is
    False, since a decorator may change the events it was given. Components on the hot
    path read the columns instead while ``fast`` (:func:`columns`): the bodies, one host,
    one priority, one attribute dict, timestamps and nanos, and so never make per-event
    objects. The columns stay as they were when the events are made, so a reader that
    found the batch fast reads consistent columns even if another thread (a fanout's
    sibling sink, an agent's sender thread) makes the events meanwhile.

    The columns are read-only. A sink that stamps one attribute on every event of a fast
    batch calls :func:`set_attr`, which gives the batch a new ``attrs`` dict (one the
    maker handed over, maybe to several batches, is never changed); a component that
    changes bodies or times makes new events (or a new batch) and never writes into
    ``bodies``/``timestamps``/``nanos``: a reader that found the batch fast (another
    thread, a later component) reads them as they are. The columns must have one length
    (ValueError when made otherwise).
    """

    __slots__ = ("bodies", "timestamps", "nanos", "priority", "host", "attrs", "_events")

    def __init__(self, bodies: list[bytes], timestamps, nanos, priority: Priority,
                 host: str, attrs: dict[str, bytes]):
        if not len(bodies) == len(timestamps) == len(nanos):
            raise ValueError(f"a batch's columns differ in length: {len(bodies)} bodies, "
                             f"{len(timestamps)} timestamps, {len(nanos)} nanos")
        self.bodies = bodies            # list[bytes]
        self.timestamps = timestamps    # sequence of int, one per event
        self.nanos = nanos              # sequence of int, one per event (a range will do)
        self.priority = priority
        self.host = host
        self.attrs = attrs
        self._events: list[Event] | None = None

    @property
    def fast(self) -> bool:
        """Still columns: no one has read the events one by one yet."""
        return self._events is None

    @property
    def events(self) -> list[Event]:
        """The batch as a list of events (made once, then kept)."""
        ev = self._events
        if ev is None:
            with _MAKING:
                ev = self._events
                if ev is None:
                    prio, host, attrs = self.priority, self.host, self.attrs
                    ev = self._events = [Event(b, t, n, prio, host, attrs.copy())
                                         for b, t, n in zip(self.bodies, self.timestamps,
                                                            self.nanos)]
        return ev

    def first(self) -> Event:
        """The first event, to read only (a fast batch stays fast; a change to it is not
        kept)."""
        if self._events is not None:
            return self._events[0]
        return Event(self.bodies[0], self.timestamps[0], self.nanos[0], self.priority,
                     self.host, dict(self.attrs))

    def piece(self, start: int, stop: int) -> "Batch | list[Event]":
        """Events ``start`` to ``stop``: a fast batch of their own (attributes copied),
        or a list slice once the events are made."""
        if self._events is not None:
            return self._events[start:stop]
        return Batch(self.bodies[start:stop], self.timestamps[start:stop],
                     self.nanos[start:stop], self.priority, self.host, dict(self.attrs))

    def joins(self, other: object) -> bool:
        """True if ``other`` is a fast batch that :meth:`concat` can join to this one."""
        return (type(other) is Batch and other._events is None and self._events is None
                and other.host == self.host and other.priority == self.priority
                and other.attrs == self.attrs)

    @staticmethod
    def concat(batches: "list[Batch]") -> "Batch":
        """One fast batch of the events of ``batches`` (fast, and joinable: :meth:`joins`)."""
        first = batches[0]
        bodies: list[bytes] = []
        ts: list[int] = []
        nanos: list[int] = []
        for b in batches:
            bodies += b.bodies
            ts += b.timestamps
            nanos += b.nanos
        return Batch(bodies, ts, nanos, first.priority, first.host, dict(first.attrs))

    def __len__(self) -> int:
        return len(self.bodies)

    def __iter__(self):
        return iter(self.events)

    def __getitem__(self, index):
        return self.events[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Batch):
            return self.events == other.events
        if isinstance(other, list):
            return self.events == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> list[Event]:
        """A list of the events (the caller's own list, as ``list.copy``)."""
        return list(self.events)

    def count(self, event: Event) -> int:
        return self.events.count(event)

    def index(self, event: Event, *args) -> int:
        return self.events.index(event, *args)

    def __mul__(self, n: int) -> list[Event]:
        return self.events * n

    __rmul__ = __mul__

    def __add__(self, other):
        return self.events + list(other)

    def __radd__(self, other):
        return list(other) + self.events

    def __repr__(self) -> str:
        state = f"{len(self)} events" + (", columns" if self._events is None else "")
        return f"Batch({state})"


_MAKING = threading.Lock()     # one batch's events are made once, whichever thread asks


def columns(events) -> "Batch | None":
    """``events`` itself when it is a :class:`Batch` still in columns, else None: the test a
    hot-path component makes before reading columns instead of events."""
    return events if type(events) is Batch and events._events is None else None


def set_attr(events, name: str, value: bytes) -> None:
    """Set attribute ``name`` to ``value`` on every event of ``events`` (once, on a fast
    batch)."""
    b = columns(events)
    if b is not None:
        # Under the lock that makes events: another thread may have made them since
        # columns() found the batch fast (then they are stamped too), or makes them after
        # (then they copy the attribute), never in between. A new dict, not a write into
        # the old one: a dict a source handed to several batches, or that a reader is
        # iterating, is never changed.
        with _MAKING:
            b.attrs = {**b.attrs, name: value}
            if b._events is None:
                return
    for e in events:
        e.attrs[name] = value


def body_bytes(events) -> int:
    """The bytes of the bodies of ``events``."""
    b = columns(events)
    return sum(map(len, b.bodies if b is not None else [e.body for e in events]))


def lines_batch(lines: list[bytes], attrs: dict[str, bytes], ts: int | None = None,
                host: str = LOCAL_HOST, priority: Priority = Priority.INFO) -> Batch:
    """A fast batch of lines read now: one timestamp, nanos strictly increasing (what
    :func:`events_from_lines` gives, without the per-event objects). ``lines`` becomes the
    bodies, not copied: do not change it afterwards. ``attrs`` may be shared between
    batches (nothing writes into it: :func:`set_attr` replaces it)."""
    n = len(lines)
    if ts is None:
        ts = time.time_ns() // 1_000_000
    base = time.monotonic_ns()
    return Batch(lines, [ts] * n, range(base, base + n), priority, host, attrs)
