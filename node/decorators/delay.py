"""``delay(ms)``: adds latency, ``ms`` per event (tests and demos)."""
from __future__ import annotations

from ..component import Decorator, Sink
from ..event import Event
from ..registry import decorator


@decorator("delay")
class DelayDecorator(Decorator):
    """Waits ``ms`` per event of a batch, then passes the batch on. When the node stops,
    the wait ends at once and the batch is passed on (nothing is lost)."""

    def __init__(self, inner: Sink, ms: int):
        super().__init__(inner)
        if ms < 0:
            raise ValueError(f"ms must not be negative, got {ms}")
        self.ms = ms

    def append(self, events: list[Event]) -> None:
        if self.ms and events:
            self.ctx.clock.wait(self.ctx.stop_event, self.ms * len(events) / 1000)
        self.inner.append(events)
