"""``delay(ms)``: adds latency, ``ms`` per event (tests and demos)."""
from __future__ import annotations

from ..component import Decorator, Sink
from ..event import Event
from ..registry import NonNegative, decorator


@decorator("delay")
class DelayDecorator(Decorator):
    """Waits ``ms`` per event of a batch, then passes the batch on. When the node stops,
    the wait ends at once and the batch is passed on (nothing is lost)."""

    def __init__(self, inner: Sink, ms: NonNegative):
        super().__init__(inner)
        self.ms = ms

    def append(self, events: list[Event]) -> None:
        if self.ms and events:
            self.ctx.clock.wait(self.ctx.stop_event, self.ms * len(events) / 1000)
        self.inner.append(events)
