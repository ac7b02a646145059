"""``counter("name")``: counts events.

Counts are per name for the whole process (every ``counter`` with that name adds to one
count, so a counter inside ``roll`` keeps counting across instances); read them with
:func:`get_count`. Each instance also keeps its own count in ``metrics["count"]`` and logs
it when closed.
"""
from __future__ import annotations

import logging
import threading

from ..component import Sink
from ..registry import sink

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_COUNTS: dict[str, int] = {}


def get_count(name: str) -> int:
    """Events counted under ``name`` in this process (0 if none)."""
    with _LOCK:
        return _COUNTS.get(name, 0)


def reset_count(name: str | None = None) -> None:
    """Reset ``name``'s count (every count when None)."""
    with _LOCK:
        if name is None:
            _COUNTS.clear()
        else:
            _COUNTS.pop(name, None)


@sink("counter")
class CounterSink(Sink):
    """Counts the events appended to it under ``name``."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.count = 0
        self.closed = False

    def append(self, events) -> None:
        n = len(events)
        with _LOCK:
            _COUNTS[self.name] = _COUNTS.get(self.name, 0) + n
        self.count += n
        self.metrics.add("events_in", n)
        self.metrics.set("count", self.count)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            log.info("counter %s counted %d events", self.name, self.count,
                     extra={"counter": self.name, "count": self.count})
