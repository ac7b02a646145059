"""``spoolDir("dir"[, fileregex=".*"], completedSuffix=".COMPLETED")``: ingest dropped files.

Every regular file of the directory whose name matches ``fileregex`` (a full match), does
not start with ``.`` and does not end with ``completedSuffix`` is read once, oldest first
(modification time, then name), an event per line (LF dropped; a last line without LF is an
event too). Files must be complete when they appear under a matching name: write them under
a hidden or non-matching name and rename them in. A file that grows while it is read is
read on until it stops growing.

Guarantee: a restart neither loses nor repeats a line, given a sink that commits
checkpoints only once the events before them are durable. ``checkpoint()`` records, per
file, ``{"spool:<abs path>": {"ino", "mtime", "offset", "fp", "done"[, "size"]}}``: the
position after the last event returned, and ``done`` once the whole file was returned.
A file is renamed to ``name + completedSuffix`` only when the store holds its ``done``
record, i.e. once all its events are durable (checked on every poll); its record is then
forgotten. On ``open``, a file whose committed record covers all of it (done with the same
inode, size and modification time, or an offset at its end with the same bytes before it)
is renamed and skipped; one with a committed offset (same inode and the same bytes before
the offset) resumes there; anything else is read from its start.
"""
from __future__ import annotations

import logging
import os
import stat as stat_mod
import time

from ..component import NodeContext
from ..errors import SourceError
from ..event import LOCAL_HOST, Event, Priority
from ..registry import LiteralPath, NonEmpty, source
from ._files import FileRegex, PollingSource, compile_fileregex

log = logging.getLogger(__name__)

CHUNK = 1 << 20          # bytes per read
MAX_BATCH = 4096         # events per next_batch
SCAN_EVERY = 0.5         # seconds between directory scans when idle
FP_LEN = 64              # bytes kept before a position to recognise the file


def _unhex(text) -> bytes:
    try:
        return bytes.fromhex(text or "")
    except (TypeError, ValueError):
        return b""


class _File:
    """The file being read: ready records and the position after the last one taken.

    When no record is ready, ``buf`` holds the bytes from ``offset`` to ``read_pos``.
    """

    __slots__ = ("path", "key", "fd", "ino", "mtime", "offset", "read_pos", "buf", "fp",
                 "ready", "ri", "ready_end", "raw", "raw_base", "raw_fp", "eof")

    def __init__(self, path: str, fd: int, st: os.stat_result, offset: int, fp: bytes):
        self.path, self.key, self.fd = path, "spool:" + path, fd
        self.ino, self.mtime = st.st_ino, st.st_mtime_ns
        self.offset = self.read_pos = offset
        self.fp = fp
        self.buf = b""
        self.ready: list[bytes] = []
        self.ri = 0
        self.ready_end = offset
        self.raw, self.raw_base, self.raw_fp = b"", offset, fp
        self.eof = False

    def record(self, done: bool) -> dict:
        rec = {"ino": self.ino, "mtime": self.mtime, "offset": self.offset,
               "fp": self.fp.hex(), "done": done}
        if done:
            rec["size"] = self.offset
        return rec


@source("spoolDir")
class SpoolDirSource(PollingSource):
    """Ingests each complete file dropped into a directory, an event per line, then
    renames it with ``completedSuffix`` once its events are durable."""

    replays = True      # a file is renamed only once its events are durable

    def __init__(self, dir: LiteralPath, fileregex: FileRegex = ".*",
                 completedSuffix: NonEmpty = ".COMPLETED"):
        super().__init__()
        self.matches = compile_fileregex(fileregex)
        self.dir = dir
        self.suffix = completedSuffix
        self._cur: _File | None = None
        self._queue: list[str] = []
        self._done: dict[str, dict] = {}    # path -> done record, until renamed
        self._next_scan = 0.0
        self._missing = False               # the directory was missing at the last scan

    # ------------------------------------------------------------------ lifecycle

    def open(self, ctx: NodeContext) -> None:
        self._start(ctx)
        self._root = os.path.abspath(self.dir)
        self._cur, self._queue, self._done = None, [], {}
        self._missing = False
        prefix = "spool:" + self._root + os.sep
        try:
            for key in ctx.store.keys():
                # Records of files renamed (or removed) since: nothing left to resume.
                if key.startswith(prefix) and not os.path.lexists(key[len("spool:"):]):
                    ctx.store.forget(key)
            self._scan(ctx.clock.monotonic())
        except OSError as exc:
            raise SourceError(f"spoolDir: cannot open {self.dir!r}: {exc}") from exc

    def _close_files(self) -> None:
        if self._cur is not None:
            os.close(self._cur.fd)
            self._cur = None

    def checkpoint(self) -> dict:
        out = {"spool:" + p: dict(rec) for p, rec in self._done.items()}
        cur = self._cur
        if cur is not None:
            out[cur.key] = cur.record(False)
        return out

    # ------------------------------------------------------------------ files

    def _wanted(self, name: str) -> bool:
        return (not name.startswith(".") and not name.endswith(self.suffix)
                and self.matches(name))

    def _scan(self, now: float) -> None:
        self._next_scan = now + SCAN_EVERY
        try:
            entries = list(os.scandir(self._root))
        except FileNotFoundError:
            if not self._missing:           # said once per absence
                self._missing = True
                log.info("spooled directory does not exist yet; waiting for it to appear",
                         extra={"path": self._root})
            return
        self._missing = False
        found = []
        for e in entries:
            try:
                if self._wanted(e.name) and e.is_file(follow_symlinks=False):
                    found.append((e.stat(follow_symlinks=False).st_mtime_ns, e.name, e.path))
            except OSError:
                continue
        found.sort()
        busy = set(self._done)
        if self._cur is not None:
            busy.add(self._cur.path)
        store = self.ctx.store
        queue = []
        for _, _, path in found:
            if path in busy:
                continue
            if self._committed_whole(path):
                self._complete(path)        # committed before a stop, not yet renamed
                continue
            queue.append(path)
        # A file with a saved position was being read: finish it first.
        queue.sort(key=lambda p: store.get("spool:" + p) is None)
        self._queue = queue

    def _committed_whole(self, path: str) -> bool:
        """True if the store holds a record of ``path`` covering all of it: done, or an
        offset at its end (the driver records no position after a batch without events,
        so a file finished by such a batch may have no done record)."""
        rec = self.ctx.store.get("spool:" + path)
        if not isinstance(rec, dict):
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        if rec.get("done"):
            return (st.st_ino, st.st_size, st.st_mtime_ns) == \
                (rec.get("ino"), rec.get("size"), rec.get("mtime"))
        if rec.get("ino") != st.st_ino or rec.get("offset") != st.st_size or not st.st_size:
            return False
        want = _unhex(rec.get("fp"))
        if len(want) > st.st_size:
            return False
        try:
            with open(path, "rb") as f:
                f.seek(st.st_size - len(want))
                return f.read(len(want)) == want
        except OSError:
            return False

    def _open_next(self) -> bool:
        store = self.ctx.store
        while self._queue:
            path = self._queue.pop(0)
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                continue
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                os.close(fd)
                continue
            offset, fp = 0, b""
            rec = store.get("spool:" + path)
            if isinstance(rec, dict) and rec.get("ino") == st.st_ino and not rec.get("done"):
                off = int(rec.get("offset", 0))
                want = _unhex(rec.get("fp"))
                if (len(want) <= off <= st.st_size
                        and os.pread(fd, len(want), off - len(want)) == want):
                    offset, fp = off, want
                else:
                    log.warning("spooled file changed since its position was saved; "
                                "reading it from the start", extra={"path": path})
            self._cur = _File(path, fd, st, offset, fp)
            return True
        return False

    def _complete(self, path: str) -> None:
        """Rename a file whose events are all durable, and forget its record."""
        target = path + self.suffix
        if os.path.lexists(target):
            target = f"{path}.{time.time_ns()}{self.suffix}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            log.warning("spooled file disappeared before it could be renamed",
                        extra={"path": path})
        except OSError as exc:
            self.metrics.add("errors")
            log.warning("cannot rename a spooled file",
                        extra={"path": path, "error": str(exc.strerror or exc)})
            return
        else:
            self.metrics.add("files_completed")
        self.ctx.store.forget("spool:" + path)

    def _rename_committed(self) -> None:
        if not self._done:
            return
        store = self.ctx.store
        for path, rec in list(self._done.items()):
            if store.get("spool:" + path) == rec:
                del self._done[path]
                self._complete(path)

    # ------------------------------------------------------------------ reading

    def _fill(self, f: _File) -> bool:
        """Read the next chunk of ``f`` into records; False at its end (nothing read)."""
        data = os.pread(f.fd, CHUNK, f.read_pos)
        if not data:
            if os.fstat(f.fd).st_size > f.read_pos:
                return True
            if f.buf:                       # the last line has no LF: still a line
                self._set_ready(f, [f.buf], f.buf, f.read_pos)
                f.buf = b""
                return True
            return False
        n = len(data)
        self.metrics.add("bytes_in", n)
        f.read_pos += n
        if f.buf:
            data = f.buf + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if n < CHUNK and not rest:
            f.eof = os.fstat(f.fd).st_size == f.read_pos
        if lines:
            self._set_ready(f, lines, data, f.offset + len(data) - len(rest))
        f.buf = rest
        return True

    @staticmethod
    def _set_ready(f: _File, recs, raw, end) -> None:
        f.ready, f.ri, f.ready_end = recs, 0, end
        f.raw, f.raw_base, f.raw_fp = raw, f.offset, f.fp

    @staticmethod
    def _take(f: _File, n: int) -> list[bytes]:
        i = f.ri
        recs = f.ready[i:i + n]
        f.ri = j = i + len(recs)
        if j >= len(f.ready):
            f.offset = f.ready_end
            f.ready, f.ri = [], 0
        else:
            f.offset += sum(map(len, recs)) + len(recs)
        o = f.offset - f.raw_base
        f.fp = f.raw[o - FP_LEN:o] if o >= FP_LEN else (f.raw_fp + f.raw[:o])[-FP_LEN:]
        return recs

    def _finish(self, f: _File) -> None:
        os.close(f.fd)
        self._cur = None
        if f.offset == 0:
            self._complete(f.path)          # empty: no event to wait for
        else:
            self._done[f.path] = f.record(True)

    def _gather(self) -> list[Event]:
        try:
            return self._read_events()
        except OSError as exc:
            self.metrics.add("errors")
            raise SourceError(f"spoolDir: {exc}") from exc

    def _read_events(self) -> list[Event]:
        self._rename_committed()
        now = self.ctx.clock.monotonic()
        recs: list[bytes] = []
        for _ in range(16):
            f = self._cur
            if f is None:
                if not self._queue and now >= self._next_scan:
                    self._scan(now)
                if not self._open_next():
                    break
                f = self._cur
            if f.ri >= len(f.ready) and not self._fill(f):
                self._finish(f)
                continue
            if f.ri < len(f.ready):
                recs.extend(self._take(f, MAX_BATCH - len(recs)))
                # A file read to its end is done now, so the checkpoint taken right after
                # this batch carries it (none is taken after a batch without events).
                if f.eof and f.ri >= len(f.ready) and not f.buf:
                    self._finish(f)
                if len(recs) >= MAX_BATCH:
                    break
        if not recs:
            return []
        self.metrics.add("events_in", len(recs))
        ts = self.ctx.clock.now_ms()
        base = time.monotonic_ns()
        info, host = Priority.INFO, LOCAL_HOST
        return [Event(r, ts, base + i, info, host, {}) for i, r in enumerate(recs)]
