"""``collect("name")``: a test connector keeping every appended event in memory.

The events of every ``collect`` sink with the same name go to one list of this process,
read with :func:`collected` and cleared with :func:`reset`. Thread-safe.
"""
from __future__ import annotations

import threading

from ..component import Sink
from ..event import Event
from ..registry import sink

_LOCK = threading.Lock()
_COLLECTED: dict[str, list[Event]] = {}


def collected(name: str = "default") -> list[Event]:
    """A copy of the events collected under ``name`` so far, in append order."""
    with _LOCK:
        return list(_COLLECTED.get(name, ()))


def reset(name: str | None = None) -> None:
    """Forget the events of ``name`` (of every name when None)."""
    with _LOCK:
        if name is None:
            _COLLECTED.clear()
        else:
            _COLLECTED.pop(name, None)


@sink("collect")
class CollectSink(Sink):
    """Keeps appended events in memory under ``name`` (see :func:`collected`)."""

    def __init__(self, name: str = "default"):
        super().__init__()
        self.name = name

    def append(self, events) -> None:
        with _LOCK:
            _COLLECTED.setdefault(self.name, []).extend(events)
        self.metrics.add("events_in", len(events))
