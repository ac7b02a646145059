"""``stubbornAppend``: on a failed append, reopen the inner sink and try once more."""
from __future__ import annotations

import logging

from ..component import Decorator
from ..errors import SinkError
from ..event import Event
from ..registry import decorator

log = logging.getLogger(__name__)


@decorator("stubbornAppend")
class StubbornAppendDecorator(Decorator):
    """When the inner sink refuses a batch: close it, open it again and append the batch
    once more; a second failure (or a failed reopen) is raised. Checkpoints the inner sink
    held when it was closed are dropped (the next one carries the position)."""

    def append(self, events: list[Event]) -> None:
        try:
            self.inner.append(events)
            return
        except SinkError as exc:
            self.metrics.add("append_failures")
            log.info("stubbornAppend: append failed (%s); reopening", exc)
        try:
            self.inner.close()
        except Exception as exc:  # noqa: BLE001 - a broken sink may fail to close too
            log.debug("stubbornAppend: close after failure failed: %s", exc)
        try:
            self.inner.open(self.ctx)
        except (SinkError, OSError) as exc:
            self.inner.close()
            raise SinkError(f"stubbornAppend: reopen failed: {exc}") from exc
        self.inner.append(events)
        self.metrics.add("append_recoveries")
