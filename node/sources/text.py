"""``text("file")``: reads a file once, an event per line, then is exhausted.

A line's body is its bytes without the terminating LF (a CR before it is kept: the file's
bytes are the events' bytes). A last line without LF is still an event. The file is read
in 256 KiB blocks (faster than larger ones, which fall out of the CPU cache) and each
block becomes one batch, so the per-event cost is building the event and nothing else.
"""
from __future__ import annotations

from ..component import NodeContext, Source
from ..errors import SourceError
from ..event import Event, events_from_lines
from ..registry import LiteralPath, source

BLOCK = 1 << 18


@source("text")
class TextSource(Source):
    """Reads a file once, an event per line; exhausted at the end of the file."""

    def __init__(self, file: LiteralPath):
        super().__init__()
        self.file = file
        self._f = None
        self._rest = b""
        self._done = False

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        try:
            self._f = open(self.file, "rb", buffering=0)
        except OSError as exc:
            raise SourceError(f"text: cannot open {self.file!r}: "
                              f"{exc.strerror or exc}") from exc

    def next_batch(self, timeout: float) -> list[Event] | None:
        f = self._f
        if f is None or self._done:
            return None
        try:
            block = f.read(BLOCK)
        except ValueError:          # closed by close() from another thread
            return None
        except OSError as exc:
            self.metrics.add("errors")
            raise SourceError(f"text: cannot read {self.file!r}: {exc.strerror or exc}") \
                from exc
        if not block:
            self._done = True
            if not self._rest:
                return None
            lines = [self._rest]
            self._rest = b""
        else:
            lines = block.split(b"\n")
            if self._rest:
                lines[0] = self._rest + lines[0]
            self._rest = lines.pop()    # an unterminated tail waits for the next block
            if not lines:
                return []
        self.metrics.add("events_in", len(lines))
        self.metrics.add("bytes_in", len(block))
        return events_from_lines(lines)

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()
