"""Injectable time, so timers, backoff and rolls are tested without sleeping."""
from __future__ import annotations

import threading
import time


class Clock:
    """Wall time in ms for event stamps, monotonic seconds for timers."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait on ``event`` up to ``seconds``; True if it was set."""
        return event.wait(seconds)


class ManualClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, start_ms: int = 1_600_000_000_000):
        self._ms = start_ms
        self._mono = 0.0
        self._cond = threading.Condition()

    def now_ms(self) -> int:
        return self._ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._ms += int(seconds * 1000)
            self._mono += seconds
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        deadline = self._mono + seconds
        with self._cond:
            while self._mono < deadline:
                self._cond.wait(0.05)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        deadline = self._mono + seconds
        with self._cond:
            while not event.is_set() and self._mono < deadline:
                self._cond.wait(0.01)
        return event.is_set()


SYSTEM_CLOCK = Clock()
