"""Attribute decorators: ``value`` sets one, ``mask`` drops some, ``select`` keeps some.

Like every decorator here they never change the events they are given (a fan-out hands
the same events to each branch): changed events are new Event objects.
"""
from __future__ import annotations

from ..component import Decorator, Sink
from ..escapes import Escaper
from ..event import Event
from ..registry import NonEmpty, decorator


@decorator("value")
class ValueDecorator(Decorator):
    """Sets attribute ``attr`` to ``value``; with ``escape=true`` the value is expanded
    per event (``%{host}``, dates, ... see section 6)."""

    def __init__(self, inner: Sink, attr: NonEmpty, value: str, escape: bool = False):
        super().__init__(inner)
        self.attr = attr
        self.value = value.encode()
        esc = Escaper(value) if escape else None
        self.escaper = esc if esc is not None and esc.has_escapes else None

    @classmethod
    def check_args(cls, args) -> None:
        if args["escape"]:
            Escaper(args["value"])

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


class _Names(Decorator):
    """Common part of ``mask`` and ``select``: at least one attribute name."""

    def __init__(self, inner: Sink, *attrs: str):
        super().__init__(inner)
        self.names = frozenset(attrs)

    @classmethod
    def check_args(cls, args) -> None:
        if not args["attrs"]:
            raise ValueError(f"{cls.spec_name} needs at least one attribute name")


@decorator("mask")
class MaskDecorator(_Names):
    """Removes the named attributes from every event."""

    def append(self, events: list[Event]) -> None:
        names = self.names
        out = [e if names.isdisjoint(e.attrs) else
               Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                     {k: v for k, v in e.attrs.items() if k not in names})
               for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)


@decorator("select")
class SelectDecorator(_Names):
    """Keeps only the named attributes of every event."""

    def append(self, events: list[Event]) -> None:
        names = self.names
        out = [e if names.issuperset(e.attrs) else
               Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                     {k: v for k, v in e.attrs.items() if k in names})
               for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)
