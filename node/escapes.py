"""Escape expansion in paths, prefixes and patterns (docs/spec-language.md, "Escapes in
file names").

Escapes:

* ``%{host}`` (also ``%{hostname}``), ``%{nanos}``, ``%{priority}`` (the name, ``INFO``),
  ``%{body}``, and ``%{name}`` for any attribute (``%{rolltag}`` is the attribute ``roll``
  stamps). Bytes are decoded as UTF-8 with replacement; a missing attribute expands to "".
* ``%%`` -> ``%``; ``%t`` -> epoch ms; ``%s`` -> epoch seconds.
* Dates, from the **event's own timestamp** (so a late event lands in the bucket of its
  time), local time by default or UTC: ``%a`` Mon, ``%A`` Monday, ``%b`` Jan, ``%B`` January,
  ``%c`` ``Mon Jan 2 15:04:05 2006``, ``%d`` 02, ``%D`` 01/02/06, ``%H`` 15, ``%I`` 03,
  ``%j`` 002, ``%k`` 15 (unpadded 0-23), ``%l`` 3 (unpadded 1-12), ``%m`` 01, ``%M`` 04,
  ``%p`` AM/PM, ``%S`` 05, ``%y`` 06, ``%Y`` 2006, ``%z`` -0700. Names are English whatever
  the process locale (as OG's Java formatting gave).

Unknown ``%x`` escapes (and a ``%`` not followed by a word character or ``{name}``) are kept
literally. **[beyond]** OG replaced unknown ``%x`` escapes with "" and logged a warning per
event; keeping them literal makes a typo visible in the output name instead of silently
merging buckets.

**Bound.** A pattern holds at most :data:`MAX_ESCAPES` (128) escapes (``%%`` is not one);
a longer one is refused with :class:`PatternError` (a ``ValueError``, so a component
building it reports a spec error at its position).

**In paths** (``Escaper(pattern, path=True)``, used by every sink that names files: the
``dfs`` family and ``collectorSink``), a value taken from the event -- ``%{host}``,
``%{body}``, ``%{priority}``, ``%{nanos}``, any attribute, ``%{rolltag}`` included -- is
*percent-encoded* (:func:`path_value`) so that it can never add a directory level nor
climb out of one:

* ``%`` ``/`` ``\\`` ``:`` ``*`` ``?`` ``[`` ``]``, the control characters U+0000-U+001F
  and U+007F (NUL and newline included) and lone surrogates become ``%XX`` -- each UTF-8
  byte, upper-case hex (``/`` -> ``%2F``, NUL -> ``%00``, ``%`` -> ``%25``);
* a leading ``.`` or ``~`` becomes ``%2E`` / ``%7E``: a value is never ``.``, ``..`` or a
  hidden name, and never the start of a home-directory path;
* everything else (letters of any script, digits, ``-`` ``_`` ``+`` ``.`` after the first
  character, spaces) is kept.

The encoding is reversible (``urllib.parse.unquote``), since ``%`` itself is encoded, and
its output contains no ``/``, no ``..`` segment, no NUL and no character that fsspec
treats specially (``::`` chains filesystems, ``*?[`` are globs in ``mv``/``rm``). Dates,
``%t`` and ``%s`` come from the event's timestamp, a number, and are written as they are
(``%D`` gives ``01/02/06``, three levels, on purpose). An empty value stays empty: the
sink refuses a path whose expansion leaves an empty segment (see ``node.sinks.dfs``).

A pattern is parsed once into a small generated function. The date fields of one second
are computed once and cached, so expanding a million events of the same few seconds costs
a dict lookup per event, not a date format.
"""
from __future__ import annotations

import re
import time
from typing import Callable

from .errors import FlumeError
from .event import Event, columns, one_value

_TAG = re.compile(r"%(?:\{([\w.\-]+)\}|(\w|%))")

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")

# tm: time.struct_time. Each returns the text of one date escape.
_DATE_FIELDS: dict[str, Callable[[time.struct_time], str]] = {
    "a": lambda tm: _DAYS[tm.tm_wday][:3],
    "A": lambda tm: _DAYS[tm.tm_wday],
    "b": lambda tm: _MONTHS[tm.tm_mon - 1][:3],
    "B": lambda tm: _MONTHS[tm.tm_mon - 1],
    "c": lambda tm: (f"{_DAYS[tm.tm_wday][:3]} {_MONTHS[tm.tm_mon - 1][:3]} {tm.tm_mday} "
                     f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {tm.tm_year}"),
    "d": lambda tm: f"{tm.tm_mday:02d}",
    "D": lambda tm: f"{tm.tm_mon:02d}/{tm.tm_mday:02d}/{tm.tm_year % 100:02d}",
    "H": lambda tm: f"{tm.tm_hour:02d}",
    "I": lambda tm: f"{(tm.tm_hour % 12) or 12:02d}",
    "j": lambda tm: f"{tm.tm_yday:03d}",
    "k": lambda tm: str(tm.tm_hour),
    "l": lambda tm: str((tm.tm_hour % 12) or 12),
    "m": lambda tm: f"{tm.tm_mon:02d}",
    "M": lambda tm: f"{tm.tm_min:02d}",
    "p": lambda tm: "AM" if tm.tm_hour < 12 else "PM",
    "S": lambda tm: f"{tm.tm_sec:02d}",
    "y": lambda tm: f"{tm.tm_year % 100:02d}",
    "Y": lambda tm: str(tm.tm_year),
    "z": lambda tm: zone_offset(tm),
}

_CACHE_LIMIT = 4096
MAX_ESCAPES = 128


class PatternError(FlumeError, ValueError):
    """An escape pattern is refused (too many escapes)."""


# What a value from an event never brings into a path as such (module docstring).
_PATH_UNSAFE = re.compile(r"^[.~]|[\x00-\x1f\x7f%/\\:*?\[\]\ud800-\udfff]")
_PATH_VALUES: dict[str, str] = {}


def _percent(m: re.Match) -> str:
    return "".join([f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")])


def path_value(text: str) -> str:
    """``text`` percent-encoded to be a part of one path segment (module docstring):
    never a separator, ``.``/``..``, NUL, a control character or an fsspec special."""
    # A collector sees the same few hosts and tags again and again: a dict hit is several
    # times cheaper than the regex.
    out = _PATH_VALUES.get(text)
    if out is None:
        out = _PATH_UNSAFE.sub(_percent, text)
        if len(_PATH_VALUES) >= _CACHE_LIMIT:
            _PATH_VALUES.clear()
        if len(text) <= 256:
            _PATH_VALUES[text] = out
    return out


def zone_offset(tm: time.struct_time) -> str:
    """``+hhmm`` / ``-hhmm`` of a struct_time (``+0000`` for gmtime)."""
    off = tm.tm_gmtoff or 0
    sign = "-" if off < 0 else "+"
    off = abs(off) // 60
    return f"{sign}{off // 60:02d}{off % 60:02d}"


def to_struct(sec: int, utc: bool) -> time.struct_time:
    return time.gmtime(sec) if utc else time.localtime(sec)


class _Part:
    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: str):
        self.kind = kind    # "lit", "field" (host/nanos/priority/body/attr), "date", "t", "s"
        self.value = value

    def __repr__(self) -> str:
        return f"{self.kind}:{self.value!r}"


def parse(pattern: str) -> list[_Part]:
    """The pattern as parts, adjacent literals merged. One pass over the matches, no
    recursion: a pattern of any length parses in linear time."""
    parts: list[_Part] = []
    text: list[str] = []     # literal pieces not yet added (joined once: no quadratic +=)

    def flush() -> None:
        joined = "".join(text)
        text.clear()
        if joined:
            parts.append(_Part("lit", joined))

    pos = 0
    for m in _TAG.finditer(pattern):
        text.append(pattern[pos:m.start()])
        pos = m.end()
        name, short = m.group(1), m.group(2)
        if name is not None:
            flush()
            parts.append(_Part("field", "host" if name == "hostname" else name))
        elif short == "%":
            text.append("%")
        elif short in _DATE_FIELDS:
            flush()
            parts.append(_Part("date", short))
        elif short in ("t", "s"):
            flush()
            parts.append(_Part(short, short))
        else:
            text.append(m.group(0))  # unknown %x: kept literally (see module docstring)
    text.append(pattern[pos:])
    flush()
    return parts


_FIELD_CODE = {
    "host": "e.host",
    "nanos": "str(e.nanos)",
    "priority": "e.priority.name",
    "body": "e.body.decode('utf-8', 'replace')",
}


class Escaper:
    """A compiled escape pattern: ``Escaper("/logs/%Y-%m-%d/%{host}").expand(event)``.

    ``has_escapes``: the expansion depends on the event (False: ``expand`` returns the
    constant ``literal``). ``uses_time``: it depends on the event's timestamp.
    ``path=True``: values from the event are encoded by :func:`path_value`.
    ``fixed_prefix``: the text before the first escape, the same in every expansion.
    PatternError past :data:`MAX_ESCAPES` escapes.
    """

    __slots__ = ("pattern", "utc", "path", "parts", "_fn", "_segments", "_cache", "literal",
                 "_inputs")

    def __init__(self, pattern: str, utc: bool = False, path: bool = False):
        self.pattern = pattern
        self.utc = utc
        self.path = path
        self.parts = parse(pattern)
        n = sum([1 for p in self.parts if p.kind != "lit"])
        if n > MAX_ESCAPES:
            raise PatternError(f"the pattern has {n} escapes; at most {MAX_ESCAPES} are "
                               f"allowed in one pattern")
        self._segments: list = []
        self._cache: dict[int, object] = {}
        self.literal = "".join(p.value for p in self.parts) if not self.has_escapes else None
        self._fn = self._compile()
        self._inputs = self._key_inputs()

    def _key_inputs(self):
        """What the expansion depends on, when that is only attributes, the host and the
        second of the timestamp: ``(attribute names, uses host, uses the second)``, so
        that :meth:`group` can tell a batch of one expansion without expanding each event.
        None when it depends on more (``%t``, ``%{nanos}``, ``%{priority}``, ``%{body}``).
        """
        names, host, sec = [], False, False
        for p in self.parts:
            if p.kind == "lit":
                continue
            if p.kind in ("date", "s"):
                sec = True
            elif p.kind == "field" and p.value == "host":
                host = True
            elif p.kind == "field" and p.value not in _FIELD_CODE:
                names.append(p.value)
            else:
                return None
        return tuple(names), host, sec

    def _one_key(self, events: list[Event]) -> bool:
        """True if every event of ``events`` (not empty) has the same inputs, so the same
        expansion: C-level scans of the batch (list.count, min, max), no per-event call."""
        inputs = self._inputs
        if inputs is None:
            return False
        names, host, sec = inputs
        b = columns(events)
        if b is not None:     # one host and one set of attributes by construction
            return not sec or min(b.timestamps) // 1000 == max(b.timestamps) // 1000
        for name in names:
            if not one_value([e.attrs.get(name) for e in events]):
                return False
        if host and not one_value([e.host for e in events]):
            return False
        if sec:
            ts = [e.timestamp for e in events]
            if min(ts) // 1000 != max(ts) // 1000:
                return False
        return True

    @property
    def has_escapes(self) -> bool:
        return any(p.kind != "lit" for p in self.parts)

    @property
    def uses_time(self) -> bool:
        return any(p.kind in ("date", "t", "s") for p in self.parts)

    @property
    def fixed_prefix(self) -> str:
        if not self.has_escapes:
            return self.literal
        first = self.parts[0]
        return first.value if first.kind == "lit" else ""

    def _compile(self) -> Callable[[Event], str]:
        # Generated code, so expansion runs no per-part loop. Maximal runs of literals and
        # second-resolution escapes (dates, %s) become "segments" whose text is computed
        # once per second and cached: "/logs/%Y-%m-%d/%H00/%{host}" costs one cache lookup
        # and one concatenation per event. The result is one flat f-string (a single
        # BUILD_STRING, whatever the number of parts: no nested expression for the
        # compiler to recurse into), and no text of the pattern is pasted into the code:
        # literals and attribute names are passed in as names.
        if not self.has_escapes:
            const = self.literal
            return lambda e: const
        runs: list = []   # _Part (lit or event field) or list of parts (a segment)
        for p in self.parts:
            if p.kind in ("lit", "date", "s"):
                if runs and isinstance(runs[-1], list):
                    runs[-1].append(p)
                    continue
                runs.append([p])
            else:
                runs.append(p)
        # a "segment" made of a literal only stays a literal
        runs = [r[0] if isinstance(r, list) and len(r) == 1 and r[0].kind == "lit" else r
                for r in runs]
        segments = [r for r in runs if isinstance(r, list)]
        self._segments = segments
        ns: dict = {"cache": self._cache, "seg_values": self._segment_values,
                    "LIMIT": _CACHE_LIMIT, "q": path_value}
        exprs, seg_i = [], 0
        for i, r in enumerate(runs):
            if isinstance(r, list):
                exprs.append(f"d[{seg_i}]")
                seg_i += 1
            elif r.kind == "lit":
                ns[f"L{i}"] = r.value
                exprs.append(f"L{i}")
            elif r.kind == "t":
                exprs.append("e.timestamp")
            else:
                code = _FIELD_CODE.get(r.value)
                if code is None:
                    ns[f"A{i}"] = r.value
                    code = f"e.attrs.get(A{i}, b'').decode('utf-8', 'replace')"
                exprs.append(f"q({code})" if self.path else code)
        body = "".join(f"{{{x}}}" for x in exprs)
        lines = ["def expand(e):"]
        if segments:
            lines += ["    sec = e.timestamp // 1000",
                      "    d = cache.get(sec)",
                      "    if d is None:",
                      "        d = segs(sec)"]
        lines.append(f'    return f"{body}"')
        src = "\n".join(["def segs(sec):",
                         "    d = seg_values(sec)",
                         "    if len(cache) >= LIMIT:",
                         "        cache.clear()",
                         "    cache[sec] = d",
                         "    return d"] + lines)
        exec(compile(src, "<escape pattern>", "exec"), ns)
        return ns["expand"]

    def _segment_values(self, sec: int) -> tuple:
        tm = to_struct(sec, self.utc)
        out = []
        for seg in self._segments:
            out.append("".join(p.value if p.kind == "lit" else
                               str(sec) if p.kind == "s" else _DATE_FIELDS[p.value](tm)
                               for p in seg))
        return tuple(out)

    def expand(self, event: Event) -> str:
        return self._fn(event)

    def expand_all(self, events: list[Event]) -> list[str]:
        fn = self._fn
        return [fn(e) for e in events]

    def group(self, events: list[Event]) -> dict[str, list[Event]]:
        """Events bucketed by their expansion, each bucket in arrival order."""
        if not self.has_escapes:
            return {self.literal: events} if events else {}
        fn = self._fn
        if events and self._one_key(events):
            b = columns(events)
            return {fn(events[0] if b is None else b.first()): events}
        keys = [fn(e) for e in events]
        first = keys[0] if keys else None
        if first is not None and keys.count(first) == len(keys):
            return {first: events}
        out: dict[str, list[Event]] = {}
        for k, e in zip(keys, events):
            b = out.get(k)
            if b is None:
                out[k] = [e]
            else:
                b.append(e)
        return out

    def __repr__(self) -> str:
        return f"Escaper({self.pattern!r}, utc={self.utc})"


_ESCAPERS: dict[tuple[str, bool], Escaper] = {}


def expand(pattern: str, event: Event, utc: bool = False) -> str:
    """Expand ``pattern`` for one event (compiled patterns are kept for reuse)."""
    esc = _ESCAPERS.get((pattern, utc))
    if esc is None:
        if len(_ESCAPERS) >= 256:
            _ESCAPERS.clear()
        esc = _ESCAPERS[(pattern, utc)] = Escaper(pattern, utc)
    return esc.expand(event)


def has_escapes(pattern: str) -> bool:
    """True if expanding ``pattern`` depends on the event."""
    return any(p.kind != "lit" for p in parse(pattern))


def literal_path(path: str) -> str:
    """Declared check of a path that names one file or directory as written (``text``,
    ``tail``, ``spooldir``...): ValueError if it holds an escape (``%Y``, ``%{host}``,
    ``%%``), which such a component would not expand, instead of creating a file
    literally called ``%Y.txt``. An unknown ``%x`` is not an escape (kept as written)."""
    first = next((m for m in _TAG.finditer(path)
                  if m.group(1) is not None or m.group(2) == "%"
                  or m.group(2) in _DATE_FIELDS or m.group(2) in ("t", "s")), None)
    if first is not None:
        raise ValueError(f"{path!r} holds the escape {first.group(0)!r}, which only sinks "
                         f"that write time buckets expand (collectorSink, "
                         f"escapedCustomDfs...); this path is taken as written")
    return path
