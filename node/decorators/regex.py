"""Extractors into attributes: ``regex``, ``regexAll`` and ``split``.

Bodies are matched as UTF-8 text by RE2 (:mod:`node.regexes`): in time linear in the
body's length whatever the pattern; a pattern RE2 refuses (backreferences, lookaround) is
a spec error. An extracted value is always the exact bytes of the body it came from.
"""
from __future__ import annotations

from typing import Annotated

from ..component import Decorator, Sink
from ..event import Event
from ..regexes import compile_text
from ..registry import NonNegative, decorator


def _with(e: Event, updates: dict) -> Event:
    return Event(e.body, e.timestamp, e.nanos, e.priority, e.host, {**e.attrs, **updates})


@decorator("regex")
class RegexDecorator(Decorator):
    """Sets ``attr`` to group ``idx`` of the first match of ``regex`` in the body (group 0 is
    the whole match); the empty value when nothing matches."""

    def __init__(self, inner: Sink, regex: str, idx: int, attr: str):
        super().__init__(inner)
        self.pattern = compile_text(regex)
        self.idx = idx
        self.attr = attr

    @classmethod
    def check_args(cls, args) -> None:
        groups = compile_text(args["regex"]).groups
        if not 0 <= args["idx"] <= groups:
            raise ValueError(f"group {args['idx']} does not exist: the expression has "
                             f"{groups} groups")

    def _value(self, body: bytes) -> bytes:
        m = self.pattern.search(body)
        if m is None:
            return b""
        g = m.group(self.idx)
        return b"" if g is None else g

    def append(self, events: list[Event]) -> None:
        attr, value = self.attr, self._value
        out = [Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                     {**e.attrs, attr: value(e.body)}) for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)


@decorator("regexAll")
class RegexAllDecorator(Decorator):
    """Sets attributes ``names[0]``, ``names[1]``, ... to groups 1, 2, ... of the first
    match of ``regex`` in the body; an empty name skips its group. Nothing is set when the
    body does not match."""

    def __init__(self, inner: Sink, regex: str, *names: str):
        super().__init__(inner)
        self.pattern = compile_text(regex)
        self.names = [(i, n) for i, n in enumerate(names, 1) if n]

    @classmethod
    def check_args(cls, args) -> None:
        groups = compile_text(args["regex"]).groups
        names = args["names"]
        if not names:
            raise ValueError("regexAll needs at least one attribute name")
        if len(names) > groups:
            raise ValueError(f"{len(names)} names for an expression with {groups} groups")

    def _extract(self, e: Event) -> Event:
        m = self.pattern.search(e.body)
        if m is None:
            return e
        groups = m.groups(b"")
        return _with(e, {n: groups[i - 1] for i, n in self.names})

    def append(self, events: list[Event]) -> None:
        extract = self._extract
        out = [extract(e) for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)


@decorator("split")
class SplitDecorator(Decorator):
    """Splits the body at every match of ``regex`` and sets ``attr`` to piece ``idx``
    (0-based; trailing empty pieces do not count, as in Java); empty if there is none."""

    def __init__(self, inner: Sink, regex: Annotated[str, compile_text],
                 idx: NonNegative, attr: str):
        super().__init__(inner)
        self.pattern = compile_text(regex)
        self.idx = idx
        self.attr = attr

    def _piece(self, body: bytes) -> bytes:
        # cut at the match spans (groups, unlike re.split's, are not pieces); an empty
        # match at the very start cuts nothing, as in Java
        pieces, pos = [], 0
        for m in self.pattern.finditer(body):
            start, end = m.span()
            if end == 0:
                continue
            pieces.append(body[pos:start])
            pos = end
        pieces.append(body[pos:])
        while pieces and not pieces[-1]:
            pieces.pop()
        return pieces[self.idx] if self.idx < len(pieces) else b""

    def append(self, events: list[Event]) -> None:
        attr, piece = self.attr, self._piece
        out = [Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                     {**e.attrs, attr: piece(e.body)}) for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)
