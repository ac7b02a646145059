"""Cutting a byte stream into lines, for the sources that read one (console, exec,
netcat)."""
from __future__ import annotations


class LineBuffer:
    """Splits chunks of a stream at LF (dropped); an incomplete last line is kept in
    ``rest`` until the chunk that completes it, or :meth:`finish`."""

    __slots__ = ("rest",)

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes."""
        lines = data.split(b"\n")
        if self.rest:
            lines[0] = self.rest + lines[0]
        self.rest = lines.pop()
        return lines

    def finish(self) -> list[bytes]:
        """At the end of the stream: the incomplete last line as a line of its own
        (``[]`` if there is none)."""
        rest, self.rest = self.rest, b""
        return [rest] if rest else []
