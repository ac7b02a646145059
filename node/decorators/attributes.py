"""Attribute decorators: ``value`` sets one, ``mask`` drops some, ``select`` keeps some.

Like every decorator here they never change the events they are given (a fan-out hands
the same events to each branch): changed events are new Event objects.
"""
from __future__ import annotations

from ..component import Decorator, Sink
from ..escapes import Escaper
from ..event import Event
from ..registry import decorator


@decorator("value")
class ValueDecorator(Decorator):
    """Sets attribute ``attr`` to ``value``; with ``escape=true`` the value is expanded
    per event (``%{host}``, dates, ... see section 6)."""

    def __init__(self, inner: Sink, attr: str, value: str, escape: bool = False):
        super().__init__(inner)
        if not attr:
            raise ValueError("the attribute name must not be empty")
        self.attr = attr
        self.value = value.encode()
        esc = Escaper(value) if escape else None
        self.escaper = esc if esc is not None and esc.has_escapes else None

    def append(self, events: list[Event]) -> None:
        attr = self.attr
        if self.escaper is None:
            v = self.value
            out = [Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                         {**e.attrs, attr: v}) for e in events]
        else:
            values = self.escaper.expand_all(events)
            out = [Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                         {**e.attrs, attr: v.encode()}) for e, v in zip(events, values)]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)


def _check_names(names: tuple, what: str) -> frozenset:
    if not names:
        raise ValueError(f"{what} needs at least one attribute name")
    return frozenset(names)


@decorator("mask")
class MaskDecorator(Decorator):
    """Removes the named attributes from every event."""

    def __init__(self, inner: Sink, *attrs: str):
        super().__init__(inner)
        self.names = _check_names(attrs, "mask")

    def append(self, events: list[Event]) -> None:
        names = self.names
        out = [e if names.isdisjoint(e.attrs) else
               Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                     {k: v for k, v in e.attrs.items() if k not in names})
               for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)


@decorator("select")
class SelectDecorator(Decorator):
    """Keeps only the named attributes of every event."""

    def __init__(self, inner: Sink, *attrs: str):
        super().__init__(inner)
        self.names = _check_names(attrs, "select")

    def append(self, events: list[Event]) -> None:
        names = self.names
        out = [e if names.issuperset(e.attrs) else
               Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                     {k: v for k, v in e.attrs.items() if k in names})
               for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)
