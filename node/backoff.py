"""Capped exponential backoff: the one retry-delay policy of the node, the client and the
RPC servers.

``Backoff(initial, maximum, cumulative=None, multiplier=2.0)`` hands out delays in seconds.
:meth:`Backoff.next_delay` returns ``initial`` first (cut to ``maximum`` if above it), then
the previous delay times ``multiplier``, never more than ``maximum``; :meth:`Backoff.reset`
(after a success) starts again from ``initial``. With ``cumulative``, the delays handed out
add up to at most that many seconds: the last one is cut to what is left, and
:meth:`Backoff.next_delay` returns None once it is spent (the caller gives up).

It only computes: the caller waits, on its own clock and stop event, so that waiting stays
interruptible and tests move a :class:`node.clock.ManualClock` instead of sleeping. There
is no jitter (no caller had any). Not thread-safe: callers sharing one across threads hold
their own lock, as they already do for the state around it.
"""
from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Capped exponential backoff (see the module docstring). ``current`` is the step
    reached: the last delay handed out before any ``cumulative`` cut, 0.0 after
    :meth:`reset`."""

    __slots__ = ("initial", "maximum", "cumulative", "multiplier", "current", "total")

    def __init__(self, initial: float, maximum: float, cumulative: float | None = None,
                 multiplier: float = 2.0):
        if initial <= 0 or maximum <= 0:
            raise ValueError(f"initial and maximum must be positive, got {initial} and "
                             f"{maximum}")
        if cumulative is not None and cumulative < 0:
            raise ValueError(f"cumulative must not be negative, got {cumulative}")
        if multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {multiplier}")
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
        self.current = (min(self.initial, self.maximum) if self.current == 0 else
                        min(self.current * self.multiplier, self.maximum))
        delay = self.current
        if self.cumulative is not None:
            left = self.cumulative - self.total
            if left <= 0:
                return None
            delay = min(delay, left)
        self.total += delay
        return delay
