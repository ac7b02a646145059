"""``console([format=debug])``: events to standard output."""
from __future__ import annotations

import sys

from ..component import NodeContext, Sink
from ..errors import SinkError
from ..formats import OutputFormat
from ..registry import sink


class _TextAdapter:
    """Binary writes onto a text stream without ``.buffer`` (some test harnesses)."""

    def __init__(self, text):
        self.text = text

    def write(self, data: bytes) -> int:
        self.text.write(data.decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self.text.flush()

    def seekable(self) -> bool:
        return False


@sink("console")
class ConsoleSink(Sink):
    """Writes each batch to standard output in ``format`` and flushes it, so a console
    sink's output appears batch by batch. Standard output is never closed."""

    def __init__(self, format: OutputFormat = OutputFormat.get("debug")):
        super().__init__()
        self.format = OutputFormat.of(format, "debug")
        self.writer = None

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        out = getattr(sys.stdout, "buffer", None) or _TextAdapter(sys.stdout)
        self.writer = self.format.open_writer(out)

    def append(self, events) -> None:
        try:
            n = self.writer.write(events)
            self.writer.flush()
        except (OSError, ValueError) as exc:
            self.metrics.add("errors")
            raise SinkError(f"console: cannot write to standard output: {exc}") from exc
        self.metrics.add("events_in", len(events))
        self.metrics.add("bytes_out", n)

    def close(self) -> None:
        w, self.writer = self.writer, None
        if w is not None:
            try:
                w.close()
            except (OSError, ValueError):
                pass
