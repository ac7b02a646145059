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
    """A clock that only moves when told to (tests).

    :meth:`settle` is how a test checks that something did *not* happen after
    :meth:`advance`: it returns once every thread that was waiting on this clock has seen
    the new time and is waiting again (or has ended), so whatever a wrong timer would have
    done is done by then -- no sleep that merely hopes to be long enough."""

    def __init__(self, start_ms: int = 1_600_000_000_000):
        self._ms = start_ms
        self._mono = 0.0
        self._cond = threading.Condition()
        self._generation = 0                         # advances so far
        self._waiters: dict[threading.Thread, int] = {}   # waiting thread -> generation seen
        self._woken: set[threading.Thread] = set()        # waiting at the last advance

    def now_ms(self) -> int:
        return self._ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._ms += int(seconds * 1000)
            self._mono += seconds
            self._generation += 1
            self._woken = set(self._waiters)
            self._cond.notify_all()

    def settle(self, timeout: float = 10.0) -> None:
        """Return once each thread that waited on this clock at the last :meth:`advance`
        is waiting again having seen it, or has ended. TimeoutError if one is still busy
        after ``timeout`` seconds of real time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            busy = set(self._woken)
            while True:
                busy = {t for t in busy if t.is_alive()
                        and self._waiters.get(t) != self._generation}
                if not busy:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"threads still busy after the clock moved: "
                                       f"{sorted(t.name for t in busy)}")
                self._cond.wait(min(left, 0.01))

    def _wait_until(self, done, deadline: float) -> None:
        """Block until ``done()`` or the clock reaches ``deadline``; the caller holds
        ``_cond``. Records, for :meth:`settle`, that this thread waits having seen the
        current time."""
        me = threading.current_thread()
        try:
            while not done() and self._mono < deadline:
                self._waiters[me] = self._generation
                self._cond.notify_all()
                self._cond.wait(0.01)
        finally:
            self._waiters.pop(me, None)
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        with self._cond:
            self._wait_until(lambda: False, self._mono + seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._cond:
            self._wait_until(event.is_set, self._mono + seconds)
        return event.is_set()


SYSTEM_CLOCK = Clock()
