"""``text("file"[, format=raw])``: appends events to a local file, exactly once.

The file's valid length is recorded in the checkpoint store together with the source
position that produced it: ``when_durable(cp)`` flushes the file and commits ``cp`` with
``{"text:<absolute path>": <size>}`` in one store commit. When the sink opens after a crash
(SIGKILL included), bytes past the recorded size were written after the last commit; the
source will send their events again from the committed position, so they are cut off.

Details:

* The first time a path is seen (no recorded size), its current size is recorded before
  anything is written, so pre-existing content is kept and a crash before the first
  checkpoint still cuts back to it.
* The cut happens once per path per checkpoint store in a process: a sink reopened in the
  same process (``roll``, ``stubbornAppend``) keeps the bytes its predecessor wrote, whose
  events the running source will not send again.
* Every append is handed to the OS when it returns (one write per batch, as rsyslog's
  ``flushOnTXEnd``), so what the sink took is readable in the file at once whatever the
  rate; an Avro container ends a block there.
* ``flush`` is enough against a process crash; ``close`` also fsyncs.
* Unlike OG (which overwrote the file), the file is appended to: restarts must not erase
  output. A container format (``avrodata``) is appended to as a continuation of the
  existing container.
"""
from __future__ import annotations

import logging
import os
import threading
import weakref

from ..checkpoint import Checkpoint
from ..component import NodeContext, Sink
from ..errors import SinkError
from ..formats import OutputFormat
from ..registry import LiteralPath, sink

log = logging.getLogger(__name__)

# store -> paths already recovered (cut back) by a sink of that store in this process
_RECOVERED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_RECOVERED_LOCK = threading.Lock()


@sink("text")
class TextSink(Sink):
    """Appends to the local file ``file`` in ``format``; exactly once across crashes (see
    the module docstring)."""

    def __init__(self, file: LiteralPath, format: OutputFormat = OutputFormat.get("raw")):
        super().__init__()
        self.file = file
        self.format = OutputFormat.of(format, "raw")
        self.path = ""
        self.key = ""
        self.f = None
        self.writer = None

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.path = os.path.abspath(os.path.expanduser(self.file))
        self.key = "text:" + self.path
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._recover(ctx)
            # a container continues the existing one: its writer must read the header
            self.f = open(self.path, "a+b" if self.format.container else "ab")
            self.writer = self.format.open_writer(self.f)
        except (OSError, ValueError) as exc:
            self._close_quietly()
            self.metrics.add("errors")
            raise SinkError(f"text: cannot open {self.path}: {exc}") from exc

    def _recover(self, ctx: NodeContext) -> None:
        with _RECOVERED_LOCK:
            done = _RECOVERED.setdefault(ctx.store, set())
            if self.path in done:
                return
            done.add(self.path)
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            size = 0
        recorded = ctx.store.get(self.key)
        if recorded is not None and (not isinstance(recorded, int)
                                     or isinstance(recorded, bool) or recorded < 0):
            # valid JSON of the wrong type is corruption: nothing is cut (the bytes may be
            # committed ones); the size now is recorded instead
            self.metrics.add("corrupt_state")
            log.error("text sink's recorded size is corrupt; nothing is cut off its file",
                      extra={"path": self.path, "file": str(ctx.store.path),
                             "recorded": repr(recorded)[:200], "size": size})
            recorded = None
        if recorded is None or (not ctx.source_replays and size != recorded):
            # no record yet; or a source that resends nothing: every byte in the file was
            # answered for, so all of it is kept (and becomes the baseline)
            if recorded is not None and size > recorded:
                log.info("text sink keeps the bytes written after its last commit: its "
                         "source does not send them again",
                         extra={"path": self.path, "kept": size, "committed": recorded})
            ctx.store.commit([], updates={self.key: size})
        elif size > recorded:
            os.truncate(self.path, recorded)
            log.info("text sink cut uncommitted bytes off its file; the source resends them",
                     extra={"path": self.path, "kept": recorded, "cut": size - recorded})

    def append(self, events) -> None:
        try:
            n = self.writer.write(events)
            self.writer.flush()     # visible at once, as rsyslog's flushOnTXEnd
        except (OSError, ValueError) as exc:
            self.metrics.add("errors")
            raise SinkError(f"text: cannot write {self.path}: {exc}") from exc
        self.metrics.add("events_in", len(events))
        self.metrics.add("bytes_out", n)

    def when_durable(self, cp: Checkpoint) -> None:
        if self.writer is None:
            return  # closed or never opened: nothing of ours is durable, drop cp
        try:
            self.writer.flush()
            size = self.f.tell()
        except (OSError, ValueError) as exc:
            self.metrics.add("errors")
            raise SinkError(f"text: cannot flush {self.path}: {exc}") from exc
        self.ctx.store.commit([cp], updates={self.key: size})

    def close(self) -> None:
        if self.f is None:
            return
        try:
            self.writer.close()
            self.f.flush()
            os.fsync(self.f.fileno())
            if not self.ctx.source_replays:     # everything written stays: the baseline
                self.ctx.store.commit([], updates={self.key: self.f.tell()})
        except (OSError, ValueError) as exc:
            self.metrics.add("errors")
            raise SinkError(f"text: cannot close {self.path}: {exc}") from exc
        finally:
            self._close_quietly()

    def _close_quietly(self) -> None:
        f, self.f, self.writer = self.f, None, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
