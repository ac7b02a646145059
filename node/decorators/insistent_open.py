"""``insistentOpen([maxMs[, initMs[, cumulativeMaxMs]]])``: retries ``inner.open`` with
capped exponential backoff. Also home of :class:`Backoff`, the retry policy shared by the
insistent decorators and ``diskFailover``, and of :class:`InsistentDecorator`, their common
arguments."""
from __future__ import annotations

import logging

from ..component import Decorator, NodeContext, Sink
from ..errors import SinkError
from ..registry import decorator

log = logging.getLogger(__name__)


class Backoff:
    """Capped exponential backoff, in seconds: ``initial``, doubling up to ``maximum``; with
    ``cumulative``, the total of the delays handed out never exceeds it, and
    :meth:`next_delay` returns None once it is spent."""

    def __init__(self, initial: float, maximum: float, cumulative: float | None = None):
        self.initial = initial
        self.maximum = maximum
        self.cumulative = cumulative
        self.reset()

    def reset(self) -> None:
        self.current = 0.0
        self.total = 0.0

    def next_delay(self) -> float | None:
        self.current = (self.initial if self.current == 0 else
                        min(self.current * 2, self.maximum))
        delay = min(self.current, self.maximum)
        if self.cumulative is not None:
            left = self.cumulative - self.total
            if left <= 0:
                return None
            delay = min(delay, left)
        self.total += delay
        return delay


class InsistentDecorator(Decorator):
    """The arguments the insistent decorators share: ``maxMs``, ``initMs`` and
    ``cumulativeMaxMs`` of the backoff between retries."""

    def __init__(self, inner: Sink, maxMs: int = 60000, initMs: int = 1000,
                 cumulativeMaxMs: int | None = None):
        super().__init__(inner)
        if initMs <= 0 or maxMs <= 0:
            raise ValueError(f"maxMs and initMs must be positive, got {maxMs} and {initMs}")
        if cumulativeMaxMs is not None and cumulativeMaxMs < 0:
            raise ValueError(f"cumulativeMaxMs must not be negative, got {cumulativeMaxMs}")
        self.max_ms = maxMs
        self.init_ms = initMs
        self.cumulative_ms = cumulativeMaxMs

    def new_backoff(self) -> Backoff:
        """A fresh backoff for one retried call."""
        return Backoff(self.init_ms / 1000, self.max_ms / 1000,
                       None if self.cumulative_ms is None else self.cumulative_ms / 1000)


@decorator("insistentOpen")
class InsistentOpenDecorator(InsistentDecorator):
    """Retries a failing ``inner.open`` after ``initMs``, doubling the wait up to ``maxMs``,
    until it succeeds, the waits add up to ``cumulativeMaxMs`` (then the last error is
    raised) or the node stops (SinkError at once)."""

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        backoff = self.new_backoff()
        attempt = 0
        while True:
            attempt += 1
            self.metrics.add("open_attempts")
            try:
                self.inner.open(ctx)
            except (SinkError, OSError) as exc:
                error = exc
            else:
                if attempt > 1:
                    log.info("insistentOpen: opened after %d attempts", attempt)
                return
            try:
                self.inner.close()  # allowed after a failed open; clears partial state
            except Exception:  # noqa: BLE001 - the open error is the one that matters
                pass
            delay = backoff.next_delay()
            if delay is None:
                self.metrics.add("open_giveups")
                raise SinkError(f"insistentOpen: gave up after {attempt} attempts: "
                                f"{error}") from error
            log.info("insistentOpen: open attempt %d failed (%s); retrying in %.1f s",
                     attempt, error, delay)
            self.metrics.add("open_retries")
            if ctx.clock.wait(ctx.stop_event, delay):
                raise SinkError("insistentOpen: stopped while retrying open") from error
