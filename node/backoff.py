"""Capped exponential backoff: the one retry-delay policy of the node, the client and the
RPC servers.

``Backoff(initial, maximum, cumulative=None, multiplier=2.0)`` hands out delays in seconds.
:meth:`Backoff.next_delay` returns ``initial`` first (cut to ``maximum`` if above it), then
the previous delay times ``multiplier``, never more than ``maximum``; :meth:`Backoff.reset`
(after a success) starts again from ``initial``. With ``cumulative``, the delays handed out
add up to at most that many seconds: the last one is cut to what is left, and
:meth:`Backoff.next_delay` returns None once it is spent (the caller gives up).

:func:`step` is the same rule for state kept elsewhere, where an object would cost more
than the retry it paces (a local in a loop run for every batch, a float per pending item):
the delay after ``previous`` (0: none yet).

It only computes: the caller waits, on its own clock and stop event, so that waiting stays
interruptible and tests move a :class:`node.clock.ManualClock` instead of sleeping. There
is no jitter (no caller had any). It holds no lock: callers sharing one between threads
lock around it, or accept that a race repeats or skips one step.
"""
from __future__ import annotations

__all__ = ["Backoff", "step"]


def step(previous: float, initial: float, maximum: float, multiplier: float = 2.0) -> float:
    """The delay after ``previous``: ``initial`` when it is 0, else ``previous`` times
    ``multiplier``; never more than ``maximum``."""
    return min(initial if previous == 0 else previous * multiplier, maximum)


class Backoff:
    """Capped exponential backoff (see the module docstring). ``current`` is the step
    reached: the last delay handed out before any ``cumulative`` cut, 0.0 after
    :meth:`reset`."""

    __slots__ = ("initial", "maximum", "cumulative", "multiplier", "current", "total")

    def __init__(self, initial: float, maximum: float, cumulative: float | None = None,
                 multiplier: float = 2.0):
        if not (initial > 0 and maximum > 0 and multiplier >= 1
                and (cumulative is None or cumulative >= 0)):
            raise ValueError(f"a backoff needs initial > 0, maximum > 0, multiplier >= 1 and "
                             f"cumulative >= 0 or None; got {initial}, {maximum}, "
                             f"{multiplier}, {cumulative}")
        self.initial = initial
        self.maximum = maximum
        self.cumulative = cumulative
        self.multiplier = multiplier
        self.current = 0.0
        self.total = 0.0

    def reset(self) -> None:
        """After a success: the next delay is ``initial`` again, the cumulative budget
        whole again."""
        self.current = 0.0
        self.total = 0.0

    def next_delay(self) -> float | None:
        """The delay before the next attempt, in seconds; None once ``cumulative`` is
        spent."""
        self.current = delay = step(self.current, self.initial, self.maximum, self.multiplier)
        if self.cumulative is not None:
            left = self.cumulative - self.total
            if left <= 0:
                return None
            delay = min(delay, left)
        self.total += delay
        return delay
