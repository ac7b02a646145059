"""``exDate("attr", "pattern"[, prefix="date"[, padding=true]])``: parses a date attribute.

The pattern uses Java ``SimpleDateFormat`` letters (``yyyy-MM-dd HH:mm:ss``), translated
once to a ``strptime`` format. Supported: ``y`` (``yy`` = two-digit year), ``M`` (``MMM``
short and ``MMMM`` full month names), ``d``, ``H``, ``h``, ``m``, ``s``, ``S`` (fraction),
``a``, ``Z``/``X`` (offset), ``z`` (zone name), ``E`` (day name), ``D`` (day of year), and
``'quoted text'``.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from ..component import Decorator, Sink
from ..event import Event
from ..registry import decorator

log = logging.getLogger(__name__)


def _directive(letter: str, count: int) -> str:
    if letter == "y":
        return "%y" if count == 2 else "%Y"
    if letter == "M":
        return {1: "%m", 2: "%m", 3: "%b"}.get(count, "%B")
    if letter == "E":
        return "%a" if count <= 3 else "%A"
    simple = {"d": "%d", "H": "%H", "h": "%I", "m": "%M", "s": "%S", "S": "%f", "a": "%p",
              "Z": "%z", "X": "%z", "z": "%Z", "D": "%j"}
    if letter in simple:
        return simple[letter]
    raise ValueError(f"unsupported date pattern letter {letter!r}")


def java_to_strptime(pattern: str) -> str:
    """Translate a SimpleDateFormat pattern to a strptime format (ValueError if unknown)."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "'":
            end = pattern.find("'", i + 1)
            if end == -1:
                raise ValueError("unterminated quote in date pattern")
            text = pattern[i + 1:end] if end > i + 1 else "'"  # '' is a literal quote
            out.append(text.replace("%", "%%"))
            i = end + 1
        elif c.isascii() and c.isalpha():
            j = i
            while j < n and pattern[j] == c:
                j += 1
            out.append(_directive(c, j - i))
            i = j
        else:
            out.append("%%" if c == "%" else c)
            i += 1
    return "".join(out)


@decorator("exDate")
class ExDateDecorator(Decorator):
    """Parses attribute ``attr`` with ``pattern`` and sets ``<prefix>year``,
    ``<prefix>month``, ``<prefix>day``, ``<prefix>hour``, ``<prefix>minute`` and
    ``<prefix>second`` (two digits each with ``padding``). An event whose attribute is
    missing or does not parse passes unchanged and is counted in ``parse_errors``."""

    def __init__(self, inner: Sink, attr: str, pattern: Annotated[str, java_to_strptime],
                 prefix: str = "date", padding: bool = True):
        super().__init__(inner)
        self.attr = attr
        self.format = java_to_strptime(pattern)
        self.prefix = prefix
        self.padding = padding
        p = prefix
        self.names = (p + "year", p + "month", p + "day", p + "hour", p + "minute",
                      p + "second")

    def _extract(self, e: Event) -> Event:
        raw = e.attrs.get(self.attr)
        try:
            if not raw:
                raise ValueError("missing or empty")
            d = datetime.strptime(raw.decode(), self.format)
        except ValueError as exc:  # includes UnicodeDecodeError
            self.metrics.add("parse_errors")
            log.debug("exDate: cannot parse %r: %s", raw, exc)
            return e
        fmt = "%02d" if self.padding else "%d"
        values = (str(d.year).encode(),) + tuple(
            (fmt % v).encode() for v in (d.month, d.day, d.hour, d.minute, d.second))
        attrs = dict(e.attrs)
        attrs.update(zip(self.names, values))
        return Event(e.body, e.timestamp, e.nanos, e.priority, e.host, attrs)

    def append(self, events: list[Event]) -> None:
        extract = self._extract
        out = [extract(e) for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)
