"""``insistentAppend([maxMs[, initMs[, cumulativeMaxMs]]])``: retries a failing append."""
from __future__ import annotations

import logging

from ..errors import SinkError
from ..event import Event
from ..registry import decorator
from .insistent_open import InsistentDecorator

log = logging.getLogger(__name__)


@decorator("insistentAppend")
class InsistentAppendDecorator(InsistentDecorator):
    """Retries a batch the inner sink refused after ``initMs``, doubling the wait up to
    ``maxMs``, until it is accepted, the waits add up to ``cumulativeMaxMs`` (then the
    last error is raised) or the node stops. The inner sink is not reopened: put
    ``stubbornAppend`` inside for that."""

    def append(self, events: list[Event]) -> None:
        try:
            self.inner.append(events)
            return
        except SinkError as exc:
            error = exc
        ctx = self.ctx
        backoff = self.new_backoff()
        attempt = 1
        while True:
            self.metrics.add("append_failures")
            delay = backoff.next_delay()
            if delay is None:
                self.metrics.add("append_giveups")
                raise SinkError(f"insistentAppend: gave up after {attempt} attempts: "
                                f"{error}") from error
            log.info("insistentAppend: append failed (%s); retrying in %.1f s", error, delay)
            if ctx.clock.wait(ctx.stop_event, delay):
                raise SinkError("insistentAppend: stopped while retrying append") from error
            attempt += 1
            self.metrics.add("append_retries")
            try:
                self.inner.append(events)
                return
            except SinkError as exc:
                error = exc
