"""Cutting a byte stream into lines, for the sources that read one (console, exec,
netcat)."""
from __future__ import annotations

MAX_LINE = 1 << 20     # default bound of one line (as tail's records)


class LineBuffer:
    """Splits chunks of a stream at LF (dropped); an incomplete last line is kept in
    ``rest`` until the chunk that completes it, or :meth:`finish`.

    Bound: a line longer than ``max_line`` bytes is *truncated* to its first ``max_line``
    bytes and the rest of it, up to its LF, is discarded; so ``rest`` never holds more
    than ``max_line`` bytes, whatever the stream. ``cuts`` counts the truncated lines
    (the caller reports them as ``refused_oversize``)."""

    __slots__ = ("rest", "max_line", "cuts", "_skipping")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.rest = b""
        self.max_line = max_line
        self.cuts = 0
        self._skipping = False    # discarding the rest of a truncated line

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes (each at most ``max_line`` bytes)."""
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return []
            self._skipping = False
            data = data[nl + 1:]
        lines = data.split(b"\n")
        if self.rest:
            lines[0] = self.rest + lines[0]
        self.rest = lines.pop()
        limit = self.max_line
        if lines and max(map(len, lines)) > limit:
            for i, line in enumerate(lines):
                if len(line) > limit:
                    lines[i] = line[:limit]
                    self.cuts += 1
        if len(self.rest) > limit:
            lines.append(self.rest[:limit])
            self.rest = b""
            self._skipping = True
            self.cuts += 1
        return lines

    @property
    def pending(self) -> bool:
        """Part of a line is held, or the rest of a truncated one is being discarded."""
        return bool(self.rest) or self._skipping

    def take_cuts(self) -> int:
        """Lines truncated since the last call."""
        n, self.cuts = self.cuts, 0
        return n

    def finish(self) -> list[bytes]:
        """At the end of the stream: the incomplete last line as a line of its own
        (``[]`` if there is none)."""
        rest, self.rest = self.rest, b""
        return [rest] if rest else []
