"""``insistentOpen([maxMs[, initMs[, cumulativeMaxMs]]])``: retries ``inner.open`` with
capped exponential backoff (:class:`node.backoff.Backoff`). Also home of :class:`InsistentDecorator`, the arguments the
insistent decorators share."""
from __future__ import annotations

import logging
from typing import Annotated

from annotated_types import Ge

from ..backoff import Backoff
from ..component import Decorator, NodeContext, Sink
from ..errors import SinkError
from ..registry import Positive, decorator

log = logging.getLogger(__name__)


class InsistentDecorator(Decorator):
    """The arguments the insistent decorators share: ``maxMs``, ``initMs`` and
    ``cumulativeMaxMs`` of the backoff between retries."""

    def __init__(self, inner: Sink, maxMs: Positive = 60000, initMs: Positive = 1000,
                 cumulativeMaxMs: Annotated[int | None, Ge(0)] = None):
        super().__init__(inner)
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
