"""``tail``, ``multitail`` and ``tailDir``: follow growing files like ``tail -F``.

A file is cut into records by ``delim`` (a regex over bytes, run by RE2: see
:mod:`node.regexes`; default newline) in one of three modes:
``exclude`` (the delimiter is dropped), ``prev`` (it ends the record before it), ``next`` (it
starts the record after it). A record is emitted only once the delimiter that ends it has
been read; an incomplete last record stays unread (and is read again after a restart). It is
emitted as it is when its file is left for good (rotated away, truncated) or when it grows
past ``MAX_RECORD`` bytes (counted: ``oversize``). Every event carries the attribute
``tailSrcFile``: the followed file's name.

Rotation, both ways logrotate does it:

* rename and create (``mv a.log a.log.1``, a new ``a.log``): the open file is read to its
  end and left only once it is drained *and* the new file has data (a writer writes to the
  new file only after it stopped writing to the old one), or the old file has been idle for
  ``IDLE_SWITCH`` seconds. The new file is opened as soon as it is seen, so a second rotation
  before the switch does not skip it. While the path names no file, a renamed file is
  followed on; a deleted one is closed once drained and idle.
* copy and truncate: a file shorter than what was read, or whose bytes before the read
  position changed, was truncated. The unread rest is recovered from the copy: a file in the
  same directory whose name starts with the followed name, not compressed, and whose bytes
  just before the read position match the last bytes read. The copy is read to its end,
  then the truncated file from offset 0. The copy/truncate race of logrotate itself (lines
  written between the copy and the truncate) cannot be recovered by any reader.

Positions survive restarts: ``checkpoint()`` gives, per followed path,
``{"tail:<abs path>": {"dev", "ino", "offset", "fp"}}``, the position just after the last
event returned (``fp``: hex of the bytes just before it, to recognise the file). On ``open``
the file at the path resumes there if it is the same file with the same bytes; if it was
rotated while the source was stopped, the old file is found in the directory by inode and
finished first; if it was truncated, the copy is found by content. Otherwise (with a
warning) the file is read from its start. ``startFromEnd`` applies only when there is no
saved position. A file that does not exist yet is waited for and read from its start.

Limits: a follower lagging more than one rotation behind is only safe for rename rotations
(the next file is held open as soon as it is seen); a copy-and-truncate of a file the
follower has not reached yet loses what the copy took away. After a restart, one rotation
that happened while stopped is handled, not a chain of them.

``tailDir`` follows every file of a directory whose name matches ``fileregex`` (a full
match), including files that appear later (scanned every ``SCAN_EVERY`` seconds), down to
``recurseDepth`` levels of subdirectories. A file named like a rotated copy of a followed
file (``<name>.<digits>``, ``<name>-<date>``, optionally compressed), or whose inode a
follower has open, is not followed itself: its lines were read under the live name.
"""
from __future__ import annotations

import logging
import os
import re
import stat as stat_mod
import time
from typing import Annotated

from annotated_types import Ge

from ..component import NodeContext
from ..errors import SourceError
from ..event import LOCAL_HOST, Event, Priority
from ..regexes import compile_bytes
from ..registry import LiteralPath, source
from ._files import FileRegex, PollingSource, compile_fileregex

try:
    import re._parser as _sre_parse        # Python >= 3.11
except ImportError:                         # pragma: no cover
    import sre_parse as _sre_parse  # type: ignore[no-redef]

log = logging.getLogger(__name__)

CHUNK = 1 << 20          # bytes per read while there is data
MAX_BATCH = 4096         # events per next_batch
POLL = 0.05              # seconds between checks of an idle file
IDLE_SWITCH = 1.0        # a rotated file idle this long is left for the new one
FP_LEN = 64              # bytes of fingerprint kept before a position
MAX_RECORD = 1 << 20     # a pending record longer than this is emitted as it is
REGEX_LOOKAHEAD = 4096   # regex delimiters: matches this close to the data's end wait
SCAN_EVERY = 0.5         # tailDir: seconds between directory scans
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".z", ".zip")
ROTATED_SUFFIX = re.compile(
    r"[.-](?:\d+|\d{4}-?\d{2}-?\d{2}(?:[-_T.:]?\d+)*)(?:\.(?:gz|bz2|xz|zst|lz4|lzma|Z|zip))?")


def _literal(pattern: str) -> bytes | None:
    """The bytes ``pattern`` matches if it matches exactly one fixed string, else None."""
    try:
        parsed = _sre_parse.parse(pattern.encode())
    except Exception:
        return None
    if parsed.state.flags:
        return None
    out = bytearray()
    for op, av in parsed:
        if op is not _sre_parse.LITERAL:
            return None
        out.append(av)
    return bytes(out) or None


class Splitter:
    """Cuts bytes into records by a delimiter regex in a delimiter mode.

    ``split(data, eof)`` -> ``(records, extra, rest)``: ``rest`` is the unfinished tail of
    ``data``; the bytes a record consumed are ``len(record) + extra`` when ``extra`` is an
    int, or ``extra[i]`` when it is a list.
    """

    MODES = ("exclude", "prev", "next")

    def __init__(self, delim: str, mode: str):
        if mode not in self.MODES:
            raise ValueError(f"delimMode must be one of exclude, prev, next, got {mode!r}")
        if not delim:
            raise ValueError("delim must not be empty")
        self.rx = compile_bytes(delim, "delim")
        if self.rx.search(b"") is not None:
            raise ValueError(f"delim {delim!r} matches the empty string")
        self.mode = mode
        self.lit = _literal(delim)

    def split(self, data: bytes, eof: bool) -> tuple[list[bytes], int | list[int], bytes]:
        d, mode = self.lit, self.mode
        if d is not None:
            parts = data.split(d)
            if mode == "exclude":
                rest = parts.pop()
                return parts, len(d), rest
            if mode == "prev":
                rest = parts.pop()
                return [p + d for p in parts], 0, rest
            if len(parts) == 1:
                return [], 0, data
            rest = d + parts.pop()
            recs = [d + p for p in parts]
            recs[0] = parts[0]          # before the first delimiter: no delimiter to prefix
            if not recs[0]:
                del recs[0]
            return recs, 0, rest
        return self._split_regex(data, eof)

    def _split_regex(self, data: bytes, eof: bool):
        recs: list[bytes] = []
        used: list[int] = []
        start, mode = 0, self.mode
        # Unless the file's end was reached, a match near the end of the data is not
        # trusted: more data could extend it (``<END>(<END>)*`` after ``<END><E``).
        limit = len(data) if eof else len(data) - REGEX_LOOKAHEAD
        for m in self.rx.finditer(data):
            s, e = m.span()
            if e > limit:
                break
            if mode == "next":
                if s > start:
                    recs.append(data[start:s])
                    start = s
                continue
            if mode == "exclude":
                recs.append(data[start:s])
                used.append(e - start)
            else:
                recs.append(data[start:e])
            start = e
        return recs, (used if mode == "exclude" else 0), data[start:]


def _stat(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat_mod.S_ISREG(st.st_mode) else None


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None


def _holds(fd: int, offset: int, fp: bytes) -> bool:
    """True if the file has at least ``offset`` bytes and ``fp`` just before ``offset``."""
    if os.fstat(fd).st_size < offset or len(fp) > offset:
        return False
    return not fp or os.pread(fd, len(fp), offset - len(fp)) == fp


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class _Next:
    """A file to read after the current one, from its start. ``size`` and ``head`` (its
    first bytes) as last seen tell when it is copied and truncated before it is reached;
    ``finishing``: a static copy, left as soon as it is read to its end."""

    __slots__ = ("fd", "dev", "ino", "size", "head", "finishing")

    def __init__(self, fd: int, finishing: bool = False):
        st = os.fstat(fd)
        self.fd, self.dev, self.ino = fd, st.st_dev, st.st_ino
        self.size, self.head, self.finishing = 0, b"", finishing
        self.watch()

    def watch(self) -> bool:
        """Update what was seen; False if the file lost bytes seen before (truncated)."""
        size = os.fstat(self.fd).st_size
        if size < self.size or (self.head and os.pread(self.fd, len(self.head), 0) != self.head):
            return False
        self.size = size
        if len(self.head) < FP_LEN and size > len(self.head):
            self.head = os.pread(self.fd, FP_LEN, 0)
        return True


def _wrong_record(rec) -> str | None:
    """What is wrong with a saved tail position (a dict with ``ino``), or None. A record
    of another shape (no ``ino``) is no position and not wrong."""
    if not isinstance(rec, dict) or "ino" not in rec:
        return None
    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if not whole(rec["ino"]) or not (rec.get("dev") is None or whole(rec.get("dev"))):
        return "dev and ino must be whole numbers"
    if not whole(rec.get("offset", 0)):
        return f"the offset {rec.get('offset')!r} is not a whole number of bytes"
    fp = rec.get("fp")
    if fp is not None and not isinstance(fp, str):
        return f"the fingerprint {fp!r} is not a hex string"
    try:
        bytes.fromhex(fp or "")
    except ValueError:
        return "the fingerprint is not hex"
    return None


def _forget_wrong_record(store, key: str, path: str, metrics) -> None:
    """A saved position that is valid JSON of the wrong shape is corruption too: as for an
    undecodable checkpoint file, it is dropped (logged with the file and what was wrong,
    counted in ``corrupt_state``), so the file is read from the WAL's position, if any (put
    in the store before this open), or from the start."""
    rec = store.get(key)
    wrong = _wrong_record(rec)
    if wrong is None:
        return
    metrics.add("corrupt_state")
    log.error("the saved position of a tailed file is corrupt (%s); reading it as if none "
              "had been saved", wrong,
              extra={"path": path, "file": str(getattr(store, "path", "")), "key": key,
                     "record": repr(rec)[:200]})
    try:
        store.forget(key)
    except OSError:
        pass        # dropped in memory; the file is rewritten by the next commit


class _Cursor:
    """Follows one path: the file open now (``fd``), then the files after it (``queue``:
    files that took the path's name since, opened as soon as seen) or whatever the path
    names once those are read.

    Invariants: ``offset`` is the position just after the last record taken, in the file
    ``(dev, ino)``; when no record is ready, ``buf`` holds the bytes from ``offset`` to
    ``read_pos``. ``poll`` is only called when no record is ready, so a file is only ever
    left with every record of it taken.
    """

    def __init__(self, path: str, splitter: Splitter, start_from_end: bool, metrics):
        self.path = path
        self.key = "tail:" + path
        self.name = b""
        self.splitter = splitter
        self.start_from_end = start_from_end
        self.metrics = metrics
        self.fd: int | None = None
        self.queue: list[_Next] = []
        self.finishing = False          # fd is a static copy: leave it at its end
        self.dev = self.ino = None
        self.offset = 0
        self.read_pos = 0
        self.buf = b""
        self.fp = b""                   # bytes just before offset
        self.tail_fp = b""              # bytes just before read_pos
        self.at_eof = False
        self.reparse = False
        self.last_data = 0.0
        self.pending = None             # leaves the file once its last records are taken
        self.ready: list[bytes] = []
        self.ri = 0
        self.extra: int | list[int] = 0
        self.ready_end = 0
        self.raw = b""
        self.raw_base = 0
        self.raw_fp = b""
        self.last_error = None
        self.idle_until = 0.0           # real monotonic time before which not to poll
        self.next_check = 0.0           # real monotonic time of the next rotation check

    # ------------------------------------------------------------------ setup

    def start(self, store, now: float) -> None:
        """Open at the saved position, or at the start (end) when there is none."""
        self.close()
        self.ready, self.ri, self.pending, self.finishing = [], 0, None, False
        self.buf, self.reparse = b"", False
        self.dev = self.ino = None
        self.path = os.path.abspath(self.path)
        self.key = "tail:" + self.path
        self.dir, self.base = os.path.split(self.path)
        self.name = os.fsencode(self.base)
        self.last_data = now
        _forget_wrong_record(store, self.key, self.path, self.metrics)
        rec = store.get(self.key)
        st = _stat(self.path)
        if isinstance(rec, dict) and "ino" in rec:
            dev, ino, off = rec.get("dev"), rec["ino"], int(rec.get("offset", 0))
            try:
                fp = bytes.fromhex(rec.get("fp") or "")
            except ValueError:
                fp = b""
            self.dev, self.ino, self.offset, self.fp = dev, ino, off, fp
            if st is not None and (st.st_dev, st.st_ino) == (dev, ino):
                fd = _open(self.path)
                if fd is not None and _holds(fd, off, fp):
                    self._use(fd, off, fp)
                    return
                copy = self._find_copy(off, fp) if fd is not None else None
                if copy is not None:
                    log.info("tailed file was truncated while stopped; reading the rest "
                             "from its rotated copy first", extra={"path": self.path})
                    self._use(copy, off, fp, finishing=True)
                    self.queue.append(_Next(fd))
                    return
                _close(fd)
                log.warning("tailed file changed while stopped and its rest cannot be "
                            "found; reading it from the start", extra={"path": self.path})
            else:
                old = self._find_inode(dev, ino, off, fp)
                if old is not None:
                    log.info("tailed file was rotated while stopped; finishing the old "
                             "file first", extra={"path": self.path})
                    self._use(old, off, fp)
                    return
                log.warning("tailed file was rotated while stopped and the old file "
                            "cannot be found; reading the new file from the start",
                            extra={"path": self.path})
            self._open_path()
            return
        if st is None:
            return                      # waited for; read from its start when it appears
        fd = _open(self.path)
        if fd is None:
            return
        if self.start_from_end:
            size = os.fstat(fd).st_size
            self._use(fd, size, os.pread(fd, min(FP_LEN, size), max(0, size - FP_LEN)))
        else:
            self._use(fd, 0, b"")

    def _use(self, fd: int, offset: int, fp: bytes, finishing: bool = False) -> None:
        """Make ``fd`` the current file at ``offset``; records already taken are done."""
        if fd != self.fd:
            _close(self.fd)
        st = os.fstat(fd)
        self.fd, self.dev, self.ino = fd, st.st_dev, st.st_ino
        self.finishing = finishing
        self.offset = self.read_pos = offset
        self.fp = self.tail_fp = fp
        self.buf = b""
        self.at_eof = False
        self.reparse = False

    def _open_path(self) -> None:
        """Continue with the file the path names now, from its start (or wait for one)."""
        fd = _open(self.path)
        if fd is None:
            _close(self.fd)
            self.fd = None
            return
        self._use(fd, 0, b"")

    def close(self) -> None:
        _close(self.fd)
        self.fd = None
        for q in self.queue:
            _close(q.fd)
        self.queue = []

    def open_inodes(self) -> list[tuple]:
        out = [(self.dev, self.ino)] if self.fd is not None else []
        return out + [(q.dev, q.ino) for q in self.queue]

    # ------------------------------------------------------------------ records

    def has_ready(self) -> bool:
        return self.ri < len(self.ready)

    def take(self, n: int) -> list[bytes]:
        i = self.ri
        recs = self.ready[i:i + n]
        self.ri = j = i + len(recs)
        if j >= len(self.ready):
            self.offset = self.ready_end
            self.ready = []
            self.ri = 0
        elif isinstance(self.extra, int):
            self.offset += sum(map(len, recs)) + self.extra * len(recs)
        else:
            self.offset += sum(self.extra[i:j])
        o = self.offset - self.raw_base
        self.fp = self.raw[o - FP_LEN:o] if o >= FP_LEN else (self.raw_fp + self.raw[:o])[-FP_LEN:]
        return recs

    def position(self) -> dict | None:
        if self.ino is None:
            return None
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset, "fp": self.fp.hex()}

    def _parse(self, data: bytes, eof: bool) -> None:
        recs, extra, rest = self.splitter.split(data, eof)
        self.reparse = bool(rest) and not eof and self.splitter.lit is None
        if recs:
            self._set_ready(recs, extra, data, self.offset + len(data) - len(rest))
        self.buf = rest

    def _set_ready(self, recs, extra, raw, end) -> None:
        self.ready, self.ri, self.extra, self.ready_end = recs, 0, extra, end
        self.raw, self.raw_base, self.raw_fp = raw, self.offset, self.fp

    def _flush(self) -> bool:
        """Make the pending partial record a record of its own (True if there was one)."""
        if not self.buf:
            return False
        self._set_ready([self.buf], 0, self.buf, self.read_pos)
        self.buf = b""
        return True

    def _leave(self, action) -> None:
        """Run ``action`` (which leaves the current file) once every record of the file,
        the last one incomplete or not, has been taken (see ``poll``)."""
        self.pending = action

    # ------------------------------------------------------------------ polling

    def poll(self, now: float) -> bool:
        """Read or check the files; True if this should be polled again at once (records
        are ready or something changed), False when idle."""
        if self.pending is not None:
            # Leaving the file: records a regex delimiter held back, then the incomplete
            # last one, are returned before the file is left.
            if self.reparse:
                self._parse(self.buf, True)
                if self.ready:
                    return True
            if self._flush():
                return True
            action, self.pending = self.pending, None
            action()
            return True
        if self.fd is None:
            if _stat(self.path) is None:
                return False
            self._open_path()
            self.last_data = now
            return self.fd is not None
        if len(self.buf) > MAX_RECORD:
            self.metrics.add("oversize")
            self._flush()
            return True
        self.maybe_check(time.monotonic())
        if self.at_eof and self.tail_fp and not self.finishing:
            # Bytes before our read position changed: truncated (and maybe regrown).
            got = os.pread(self.fd, len(self.tail_fp), self.read_pos - len(self.tail_fp))
            if got != self.tail_fp:
                self._truncated(now)
                return True
        if self._read(now):
            return True
        return self._idle(now)

    def maybe_check(self, real: float) -> None:
        """Check for rotation every POLL seconds, also while records are ready: a follower
        behind its writer must see every file that takes the path's name before the next
        rotation moves it away."""
        if real >= self.next_check and self.fd is not None and self.pending is None:
            self.next_check = real + POLL
            self._check_rotation()

    def _read(self, now: float) -> bool:
        data = os.pread(self.fd, CHUNK, self.read_pos)
        if not data:
            self.at_eof = True
            if self.reparse:
                self._parse(self.buf, True)
                return bool(self.ready)
            return False
        n = len(data)
        self.metrics.add("bytes_in", n)
        self.read_pos += n
        self.tail_fp = data[-FP_LEN:] if n >= FP_LEN else (self.tail_fp + data)[-FP_LEN:]
        self.at_eof = n < CHUNK
        self.last_data = now
        self._parse(self.buf + data if self.buf else data, self.at_eof)
        return True

    def _check_rotation(self):
        """Queue the file the path names if it is a new one; watch the queued files for
        copy-and-truncate. Returns the path's stat (None if nothing is there)."""
        for i, q in enumerate(self.queue):
            if not q.finishing and not q.watch():
                self._queued_truncated(i)
                break
        st = _stat(self.path)
        if st is None:
            return None
        last = self.queue[-1] if self.queue else None
        ident = (st.st_dev, st.st_ino)
        if ident == ((last.dev, last.ino) if last else (self.dev, self.ino)):
            return st
        fd = _open(self.path)
        if fd is None:
            return None
        q = _Next(fd)
        if (q.dev, q.ino) in self.open_inodes():
            os.close(fd)
            return st
        self.queue.append(q)
        self.metrics.add("rotations")
        log.info("tailed file was rotated; finishing the old file first",
                 extra={"path": self.path})
        return st

    def _queued_truncated(self, i: int) -> None:
        """A queued file lost bytes before it was reached: read its copy first."""
        q = self.queue[i]
        self.metrics.add("truncations")
        copy = self._find_copy(len(q.head), q.head, min_size=q.size, exclude=(q.dev, q.ino))
        if copy is not None:
            self.queue.insert(i, _Next(copy, finishing=True))
            log.info("a rotated file was truncated before it was read; reading its copy "
                     "first", extra={"path": self.path})
        else:
            log.warning("a rotated file was truncated before it was read and no copy holds "
                        "its bytes; they are lost", extra={"path": self.path})
        q.size, q.head = 0, b""
        q.watch()

    def _idle(self, now: float) -> bool:
        """At the end of the current file: detect truncation and rotation."""
        if self.finishing:
            self._switch_next(now)
            return True
        st = self._check_rotation()
        if not self.queue:
            if st is not None:
                if (st.st_dev, st.st_ino) == (self.dev, self.ino) and \
                        st.st_size < self.read_pos:
                    self._truncated(now)
                    return True
                return False
            # Nothing at the path: follow a renamed file on; drop a deleted one.
            if os.fstat(self.fd).st_nlink == 0 and now - self.last_data >= IDLE_SWITCH:
                log.info("tailed file was deleted; waiting for it to reappear",
                         extra={"path": self.path})
                self._leave(self._open_path)
                return True
            return False
        new_has_data = os.fstat(self.queue[0].fd).st_size > 0
        # Drain again *after* seeing data in the new file: the writer wrote its last line
        # to the old file before its first line to the new one.
        if self._read(now):
            return True
        if new_has_data or now - self.last_data >= IDLE_SWITCH:
            self._switch_next(now)
            return True
        return False

    def _switch_next(self, now: float) -> None:
        def go():
            self.last_data = now
            if self.queue:
                q = self.queue.pop(0)
                self._use(q.fd, 0, b"", finishing=q.finishing)
            else:
                self._open_path()
        self._leave(go)

    def _truncated(self, now: float) -> None:
        self.metrics.add("truncations")
        copy = self._find_copy(self.read_pos, self.tail_fp)
        if copy is not None:
            log.info("tailed file was truncated; reading the rest from its rotated copy",
                     extra={"path": self.path})
            # Same bytes up to read_pos: keep buf and offsets, read on in the copy; the
            # truncated file comes next, from its start.
            self.queue.insert(0, _Next(self.fd))
            st = os.fstat(copy)
            self.fd, self.dev, self.ino = copy, st.st_dev, st.st_ino
            self.finishing = True
            self.at_eof = False
            self.last_data = now
            return
        log.warning("tailed file was truncated and no rotated copy holds its unread rest; "
                    "reading it from the start", extra={"path": self.path})

        def restart():
            self._use(self.fd, 0, b"")
        self._leave(restart)

    # ------------------------------------------------------------------ finding files

    def _candidates(self, prefix_only: bool):
        try:
            entries = list(os.scandir(self.dir or "."))
        except OSError:
            return []
        out = []
        for e in entries:
            if e.name == self.base:
                continue
            if prefix_only and (not e.name.startswith(self.base)
                                or e.name.lower().endswith(COMPRESSED)):
                continue
            out.append(e)
        return out

    def _find_inode(self, dev, ino, off: int, fp: bytes) -> int | None:
        """The file of this directory with inode ``(dev, ino)`` holding ``fp`` at ``off``."""
        for e in self._candidates(prefix_only=False):
            try:
                if e.inode() != ino or not e.is_file(follow_symlinks=False):
                    continue
                fd = _open(e.path)
                if fd is None:
                    continue
                if os.fstat(fd).st_dev == dev and _holds(fd, off, fp):
                    return fd
                os.close(fd)
            except OSError:
                continue
        return None

    def _find_copy(self, off: int, fp: bytes, min_size: int = 0,
                   exclude: tuple | None = None) -> int | None:
        """The newest rotated copy (named like the file, at least ``max(off, min_size)``
        bytes) holding ``fp`` just before ``off``."""
        if off == 0 or not fp:
            return None
        exclude = exclude or (self.dev, self.ino)
        best, best_mtime = None, None
        for e in self._candidates(prefix_only=True):
            try:
                if not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
                if st.st_size < max(off, min_size) or (st.st_dev, st.st_ino) == exclude:
                    continue
                fd = _open(e.path)
                if fd is None:
                    continue
                if not _holds(fd, off, fp) or (best is not None and st.st_mtime_ns <= best_mtime):
                    os.close(fd)
                    continue
                _close(best)
                best, best_mtime = fd, st.st_mtime_ns
            except OSError:
                continue
        return best


class _TailBase(PollingSource):
    """What tail, multitail and tailDir share: cursors read in turn."""

    def __init__(self) -> None:
        super().__init__()
        self._cursors: list[_Cursor] = []
        self._rr = 0

    def open(self, ctx: NodeContext) -> None:
        self._start(ctx)
        now = ctx.clock.monotonic()
        try:
            for c in self._cursors:
                c.start(ctx.store, now)
        except OSError as exc:
            self.close()
            raise SourceError(f"{self.spec_name}: cannot open: {exc}") from exc

    def _discover(self, now: float) -> None:
        """Add cursors for files that appeared (tailDir)."""

    def _gather(self) -> list[Event]:
        now = self.ctx.clock.monotonic()
        self._discover(now)
        cursors = self._cursors
        n = len(cursors)
        if not n:
            return []
        ts = self.ctx.clock.now_ms()
        base = time.monotonic_ns()
        out: list[Event] = []
        room = MAX_BATCH
        info, host = Priority.INFO, LOCAL_HOST
        start = self._rr = (self._rr + 1) % n
        real = time.monotonic()
        for k in range(n):
            c = cursors[(start + k) % n]
            if not c.has_ready():
                if real < c.idle_until:
                    continue    # checked moments ago: a busy file must not make idle ones spin
            else:
                try:
                    c.maybe_check(real)
                except OSError as exc:
                    self._error(c, exc)
            for _ in range(8):           # bounded: a hot file must not starve the others
                if c.has_ready():
                    break
                try:
                    if not c.poll(now):
                        c.idle_until = real + POLL / 2
                        break
                except OSError as exc:
                    self._error(c, exc)
                    c.idle_until = real + POLL / 2
                    break
            if not c.has_ready():
                continue
            recs = c.take(room)
            name, i0 = c.name, len(out)
            out.extend([Event(r, ts, base + i, info, host, {"tailSrcFile": name})
                        for i, r in enumerate(recs, i0)])
            room -= len(recs)
            if room <= 0:
                break
        if out:
            self.metrics.add("events_in", len(out))
        return out

    def _error(self, c: _Cursor, exc: OSError) -> None:
        self.metrics.add("errors")
        msg = f"{exc.strerror or exc}"
        if msg != c.last_error:
            c.last_error = msg
            log.warning("cannot read a tailed file", extra={"path": c.path, "error": msg})

    def checkpoint(self) -> dict:
        out = {}
        for c in self._cursors:
            pos = c.position()
            if pos is not None:
                out[c.key] = pos
        return out

    def _close_files(self) -> None:
        for c in self._cursors:
            c.close()


@source("tail")
class TailSource(_TailBase):
    """Follows a file like ``tail -F`` across rotations; remembers its offset across
    restarts."""

    def __init__(self, file: LiteralPath, startFromEnd: bool = False, delim: str = "\n",
                 delimMode: str = "exclude"):
        super().__init__()
        self.file = file
        self._cursors = [_Cursor(file, Splitter(delim, delimMode), startFromEnd, self.metrics)]

    @classmethod
    def check_args(cls, args) -> None:
        Splitter(args["delim"], args["delimMode"])


@source("multitail")
class MultiTailSource(_TailBase):
    """Several tails in one source (newline-delimited, from the start)."""

    def __init__(self, *files: LiteralPath):
        super().__init__()
        self.files = files
        split = Splitter("\n", "exclude")
        self._cursors = [_Cursor(f, split, False, self.metrics) for f in files]

    @classmethod
    def check_args(cls, args) -> None:
        files = args["files"]
        if not files:
            raise ValueError("multitail needs at least one file")
        if len(set(files)) != len(files):
            raise ValueError("a file is listed twice")


@source("tailDir")
class TailDirSource(_TailBase):
    """Follows every file of a directory whose name matches ``fileregex``, including files
    that appear later, down to ``recurseDepth`` levels of subdirectories."""

    def __init__(self, dir: LiteralPath, fileregex: FileRegex = ".*", startFromEnd: bool = False,
                 recurseDepth: Annotated[int, Ge(0)] = 0):
        super().__init__()
        self.matches = compile_fileregex(fileregex)
        self.dir = dir
        self.start_from_end = startFromEnd
        self.depth = recurseDepth
        self._split = Splitter("\n", "exclude")
        self._by_path: dict[str, _Cursor] = {}
        self._ignored: dict[str, int] = {}      # rotated copies: path -> inode when seen
        self._failed: dict[str, str] = {}       # unreadable files: path -> last error
        self._next_scan = 0.0

    def open(self, ctx: NodeContext) -> None:
        self._start(ctx)
        self._root = os.path.abspath(self.dir)
        self._cursors, self._by_path, self._ignored = [], {}, {}
        try:
            self._scan(ctx.clock.monotonic(), initial=True)
        except OSError as exc:
            self.close()
            raise SourceError(f"tailDir: cannot open {self.dir!r}: {exc}") from exc

    def _discover(self, now: float) -> None:
        # Drop followers whose file is gone for good (closed, nothing at the path).
        gone = [c for c in self._cursors
                if c.fd is None and not c.has_ready() and c.pending is None
                and _stat(c.path) is None]
        for c in gone:
            self._cursors.remove(c)
            del self._by_path[c.path]
        if now >= self._next_scan:
            self._scan(now, initial=False)

    def _walk(self, d: str, depth: int, found: dict) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    if depth > 0:
                        self._walk(e.path, depth - 1, found)
                elif e.is_file() and self.matches(e.name):
                    found[e.path] = e.inode()
            except OSError:
                continue

    def _scan(self, now: float, initial: bool) -> None:
        self._next_scan = now + SCAN_EVERY
        found: dict[str, int] = {}
        self._walk(self._root, self.depth, found)
        new = [p for p in found if p not in self._by_path
               and self._ignored.get(p) != found[p]]
        if not new:
            return
        names_by_dir: dict[str, set] = {}
        for p in list(found) + list(self._by_path):
            d, b = os.path.split(p)
            names_by_dir.setdefault(d, set()).add(b)
        # Files with a saved position first: a follower resuming an old rotated file opens
        # it, so it is then recognised as taken.
        store = self.ctx.store
        new.sort(key=lambda p: (store.get("tail:" + p) is None, p))
        for p in new:
            d, b = os.path.split(p)
            if self._is_rotated_copy(b, names_by_dir.get(d, ())) or self._inode_open(p):
                self._ignored[p] = found[p]
                continue
            self._ignored.pop(p, None)
            c = _Cursor(p, self._split, self.start_from_end and initial, self.metrics)
            try:
                c.start(store, now)
            except OSError as exc:      # unreadable for now: tried again at the next scan
                c.close()
                self.metrics.add("errors")
                msg = f"{exc.strerror or exc}"
                if self._failed.get(p) != msg:
                    self._failed[p] = msg
                    log.warning("tailDir cannot open a file", extra={"path": p, "error": msg})
                continue
            self._failed.pop(p, None)
            self._cursors.append(c)
            self._by_path[p] = c

    @staticmethod
    def _is_rotated_copy(name: str, siblings) -> bool:
        for s in siblings:
            if s != name and name.startswith(s) and ROTATED_SUFFIX.fullmatch(name[len(s):]):
                return True
        return False

    def _inode_open(self, path: str) -> bool:
        st = _stat(path)
        if st is None:
            return False
        ident = (st.st_dev, st.st_ino)
        for c in self._cursors:
            for fd in [c.fd] + [q.fd for q in c.queue]:
                if fd is not None:
                    try:
                        fst = os.fstat(fd)
                    except OSError:
                        continue
                    if (fst.st_dev, fst.st_ino) == ident:
                        return True
        return False
