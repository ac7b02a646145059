"""``format("pattern")``: replaces each body by the pattern expanded for that event."""
from __future__ import annotations

from typing import Annotated

from ..component import Decorator, Sink
from ..escapes import Escaper
from ..event import Event
from ..registry import decorator


@decorator("format")
class FormatDecorator(Decorator):
    """Replaces the body by ``pattern`` with its escapes (``%{body}``, ``%{host}``, dates,
    ... section 6) expanded per event; ``utc=true`` takes dates in UTC."""

    def __init__(self, inner: Sink, pattern: Annotated[str, Escaper], utc: bool = False):
        super().__init__(inner)
        self.escaper = Escaper(pattern, utc=utc)

    def append(self, events: list[Event]) -> None:
        bodies = self.escaper.expand_all(events)
        out = [Event(b.encode(), e.timestamp, e.nanos, e.priority, e.host, dict(e.attrs))
               for e, b in zip(events, bodies)]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)
