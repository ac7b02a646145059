"""Regular expressions from specs, matched by RE2: time linear in the input, whatever the
pattern.

Every pattern a spec gives (``regex``, ``regexAll``, ``split``, ``tail``'s ``delim``,
``tailDir``'s and ``spoolDir``'s ``fileregex``) is compiled here. Python's ``re``
backtracks: ``(a+)+$`` takes seconds on a 25-character line and doubles per character.
RE2 (``google-re2``) never backtracks, so it refuses the constructs that need it:
backreferences (``\\1``), lookahead and lookbehind (``(?=``, ``(?!``, ``(?<=``, ``(?<!``),
atomic groups and possessive quantifiers. Such a pattern is a spec error (``flume check``
and the master say which construct), not a slow flow. The rest of the syntax is Python's
and Java's, except: ``\\d \\w \\s \\b`` are ASCII-only (as in Java; ``\\pL``, ``\\pN`` match
any letter, any digit), and the end of the text is ``\\z`` (``\\Z`` is refused).

Bounds: a compiled pattern takes at most ``MAX_MEM`` bytes (RE2's default); a bigger one
(``a{1000}{1000}``) is refused. Matching takes time linear in the text's length.

Two kinds of pattern:

* :func:`compile_text` -- text (UTF-8) patterns over bytes. Offsets are byte offsets into
  the matched bytes, so a match is always exactly the bytes it covers. A byte that is not
  part of valid UTF-8 matches as U+FFFD (the replacement character) does: ``.``, ``\\S``,
  ``[^,]`` match it. An empty match never falls inside a character.
* :func:`compile_bytes` -- byte patterns (``tail``'s delimiter): every byte is one
  character, as with Python's ``re`` on bytes; the pattern's non-ASCII characters stand for
  their UTF-8 bytes.
"""
from __future__ import annotations

import bisect
import re
from typing import Iterator

import re2

from .spec import quote

MAX_MEM = 8 << 20

_REPLACEMENT = "\ufffd".encode()
_SURROGATE_RUNS = re.compile("([\udc80-\udcff]+)")  # bytes surrogateescape could not decode

# RE2's message for a construct it does not support -> what to tell the user.
_HINTS = (
    ("invalid perl operator: (?=", "lookahead (?=...) is not supported"),
    ("invalid perl operator: (?!", "negative lookahead (?!...) is not supported"),
    ("invalid perl operator: (?<=", "lookbehind (?<=...) is not supported"),
    ("invalid perl operator: (?<!", "negative lookbehind (?<!...) is not supported"),
    ("invalid perl operator: (?>", "atomic groups (?>...) are not supported"),
    ("invalid perl operator: (?(", "conditional groups (?(...)...) are not supported"),
    ("bad repetition operator: *+", "possessive quantifiers are not supported"),
    ("bad repetition operator: ++", "possessive quantifiers are not supported"),
    ("bad repetition operator: ?+", "possessive quantifiers are not supported"),
    ("invalid escape sequence: \\Z", "write the end of the text as \\z"),
    ("pattern too large", f"the compiled pattern would take more than {MAX_MEM} bytes"),
)
_BACKREFERENCE = re.compile(r"invalid escape sequence: \\[1-9]")


def _options(latin1: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False    # the error is raised to the caller, not printed
    options.max_mem = MAX_MEM
    if latin1:
        options.encoding = re2.Options.Encoding.LATIN1
    return options


def _compile(pattern, what: str, latin1: bool):
    try:
        return re2.compile(pattern, _options(latin1))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else str(exc)
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        hint = next((h for key, h in _HINTS if key in reason), None)
        if hint is None and _BACKREFERENCE.search(reason):
            hint = "backreferences are not supported"
        if hint:
            reason += f" ({hint}: patterns run on RE2, which never backtracks)"
        raise ValueError(f"{what} {_shown(pattern)} is not a usable regular expression: "
                         f"{reason}") from None


def _shown(pattern) -> str:
    """The pattern as a spec string literal (as the user wrote it), shortened."""
    if isinstance(pattern, bytes):
        pattern = pattern.decode("utf-8", "surrogateescape")
    return quote(pattern if len(pattern) <= 80 else pattern[:77] + "...")


def compile_bytes(pattern: str, what: str = "pattern"):
    """``pattern`` compiled for bytes (each byte one character); an ``re``-like object
    (``search``, ``finditer``, ``groups``) over bytes. ValueError naming ``what`` and the
    reason if RE2 refuses it."""
    return _compile(pattern.encode("utf-8", "surrogateescape"), what, latin1=True)


def compile_text(pattern: str, what: str = "pattern") -> "TextRegex":
    """``pattern`` compiled for UTF-8 text held in bytes. ValueError naming ``what`` and
    the reason if RE2 refuses it."""
    return TextRegex(pattern, _compile(pattern, what, latin1=False))


class TextMatch:
    """One match; offsets and groups refer to the bytes given to the search."""

    __slots__ = ("_spans", "_data")

    def __init__(self, spans: list[tuple[int, int]], data: bytes):
        self._spans = spans
        self._data = data

    def span(self, group: int = 0) -> tuple[int, int]:
        """(start, end) of ``group``; (-1, -1) if it did not take part in the match."""
        return self._spans[group]

    def group(self, group: int = 0) -> bytes | None:
        s, e = self._spans[group]
        return None if s < 0 else self._data[s:e]

    def groups(self, default: bytes | None = None) -> tuple:
        return tuple(default if s < 0 else self._data[s:e] for s, e in self._spans[1:])


class TextRegex:
    """A text pattern (see the module's docstring) with the part of ``re``'s interface the
    components use: ``groups``, ``search``, ``fullmatch``, ``finditer``."""

    def __init__(self, pattern: str, compiled):
        self.pattern = pattern
        self.groups: int = compiled.groups
        self._rx = compiled

    def search(self, data: bytes) -> TextMatch | None:
        subject, starts = _as_utf8(data)
        m = self._rx.search(subject)
        return None if m is None else self._match(m, data, starts)

    def fullmatch(self, data: bytes) -> TextMatch | None:
        subject, starts = _as_utf8(data)
        m = self._rx.fullmatch(subject)
        return None if m is None else self._match(m, data, starts)

    def finditer(self, data: bytes) -> Iterator[TextMatch]:
        """Every match, left to right, as ``re.finditer``."""
        subject, starts = _as_utf8(data)
        for m in self._rx.finditer(subject):
            s, e = m.span()
            if s == e and 0 < s < len(subject) and 0x80 <= subject[s] < 0xC0:
                continue  # RE2's wrapper steps one byte past an empty match: not a char
            yield self._match(m, data, starts)

    def _match(self, m, data: bytes, starts: list[int]) -> TextMatch:
        spans = [m.span(g) for g in range(self.groups + 1)]
        if starts:
            spans = [(-1, -1) if a < 0 else (_back(a, starts), _back(b, starts))
                     for a, b in spans]
        return TextMatch(spans, data)


def _as_utf8(data: bytes) -> tuple[bytes, list[int]]:
    """``data`` as valid UTF-8 (each byte not part of valid UTF-8 replaced by U+FFFD) and
    the offsets, in the result, of the replacements (empty for valid UTF-8, the usual case,
    where the result is ``data`` itself)."""
    if data.isascii():
        return data, []
    text = data.decode("utf-8", "surrogateescape")
    pieces = _SURROGATE_RUNS.split(text)
    if len(pieces) == 1:
        return data, []
    out, starts = bytearray(), []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            out += piece.encode("utf-8")
            continue
        for _ in piece:
            starts.append(len(out))
            out += _REPLACEMENT
    return bytes(out), starts


def _back(offset: int, starts: list[int]) -> int:
    """The offset in the original bytes of ``offset`` in the repaired ones: each replaced
    byte grew by two; an offset inside a replacement means just after its byte."""
    before = bisect.bisect_left(starts, offset)   # replacements starting before offset
    if before and offset < starts[before - 1] + len(_REPLACEMENT):
        return starts[before - 1] - 2 * (before - 1) + 1
    return offset - 2 * before
