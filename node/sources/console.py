"""``console`` (alias ``stdin``): reads the node's standard input, an event per line.

A reader thread reads ``sys.stdin.buffer`` (whatever it is at ``open``) and hands lines over
through a queue, so ``close`` never waits on a blocked read: it returns at once and the
(daemon) reader ends with the input or the process. Exhausted at end of input.
"""
from __future__ import annotations

import logging
import sys
import threading

from ..component import NodeContext
from ..errors import SourceError
from ..event import events_from_lines
from ..registry import source
from ._batchqueue import BatchQueue, QueuedSource
from ._lines import LineBuffer

log = logging.getLogger(__name__)

READ_SIZE = 1 << 16


@source("console", aliases=("stdin",))
class ConsoleSource(QueuedSource):
    """Reads standard input, an event per line; exhausted at end of input."""

    def __init__(self):
        super().__init__()
        self._queue: BatchQueue | None = None

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        if stream is None:
            raise SourceError("console: this process has no standard input")
        self._queue = BatchQueue(10_000)
        threading.Thread(target=self._read, args=(stream, self._queue), name="console-source",
                         daemon=True).start()

    def _read(self, stream, queue: BatchQueue) -> None:
        # read1 returns what one read(2) gives, so interactive lines arrive at once
        read = getattr(stream, "read1", stream.read)
        buf = LineBuffer()
        try:
            while not queue.closed:
                data = read(READ_SIZE)
                if not data:
                    break
                self.metrics.add("bytes_in", len(data))
                lines = buf.feed(data)
                if buf.cuts:
                    self.metrics.add("refused_oversize", buf.cuts)
                    self.metrics.add("refused", buf.take_cuts())
                if lines and queue.put(events_from_lines(lines)) is None:
                    return
            last = buf.finish()
            if last:
                queue.put(events_from_lines(last))
        except (OSError, ValueError) as exc:   # stdin closed under us
            if not queue.closed:
                log.warning("console: reading standard input failed: %s", exc)
                self.metrics.add("errors")
        finally:
            queue.finish()
