"""``delay(ms)``: adds latency, ``ms`` per event (tests and demos)."""
from __future__ import annotations

from ..component import PIECE_SECONDS, Decorator, Sink
from ..event import Event
from ..registry import NonNegative, decorator


@decorator("delay")
class DelayDecorator(Decorator):
    """Waits ``ms`` per event, passing the events on in pieces of at most
    :data:`~node.component.PIECE_SECONDS` of waiting (an event is held about that long plus
    its own ``ms``, not the whole batch's). When the node stops, the waits end at once and
    the rest is passed on (nothing is lost)."""

    def __init__(self, inner: Sink, ms: NonNegative):
        super().__init__(inner)
        self.ms = ms

    def append(self, events: list[Event]) -> None:
        if not (self.ms and events):
            self.inner.append(events)
            return
        step = max(1, int(PIECE_SECONDS * 1000 // self.ms))
        for i in range(0, len(events), step):
            piece = events[i:i + step]
            self.ctx.clock.wait(self.ctx.stop_event, self.ms * len(piece) / 1000)
            self.inner.append(piece)
