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
``{"tail:<abs path>": {"dev", "ino", "head_len", "head", "offset", "fp", "mtime"}}``: the
file (device and inode, and ``head``, a digest of its first ``head_len`` bytes: up to
``HEAD_LEN`` = 256 bytes already read; fewer while the file is shorter, and then only those
are compared), the position just after the last event returned, ``fp`` (hex of the bytes
just before it) and the file's modification time. On ``open``:

* the saved file is looked for at the path and among its rotated files (``name.1``,
  ``name-3``, ``name-20261203``, ``name.2026-12-03``, ..., see :mod:`._rotation`): the same
  device, inode and first bytes, holding ``fp`` before the offset. A file with a reused
  inode but other first bytes is not it. Failing that, a copy (same first bytes, holding
  ``fp``: copy and truncate) or the inode under another name of the directory;
* it is read from the offset, then every rotated file after it in rotation order, each
  from its start, then the live file. So a node stopped over any number of rotations reads
  each line once, as long as the files are still there under rotated names;
* if the saved file is gone, every rotated file written after the saved position (by
  modification time) is read from its start, then the live file (with a warning);
* compressed rotated files written after the saved position are not read: counted as
  ``refused_compressed`` and logged. Only the ``MAX_ROTATED`` = 100 newest rotated files are
  considered; older ones that would have been read are counted as
  ``refused_rotated_over_limit`` and logged.

``startFromEnd`` applies only when there is no saved position. A file that does not exist
yet is waited for (logged once) and read from its start. Without a saved position, where
reading starts is committed to the store (one write per open or tailDir scan) before a
record of the file is returned, so a crash before the first checkpoint resends from there.

Rotated files are looked for next to the path and, for a symbolic link, next to the file it
resolves to at the time.

While running, when a new file takes the path's name, the rotated files that took it and
were rotated again since the last check (every ``POLL`` seconds) are read first, in order.

Limits: a copy-and-truncate of a file the follower has not reached yet, while it lags
behind, loses what the copy took away unless the copy is still there. Rotated names other
than the usual suffixes of the same name (``app-20261203.log`` for ``app.log``, another
directory than the file's or its link target's) are not found after a restart.

``tailDir`` follows every file of a directory whose name matches ``fileregex`` (a full
match), including files that appear later (scanned every ``SCAN_EVERY`` seconds), down to
``recurseDepth`` levels of subdirectories. A file named like a rotated copy of a followed
file (``<name>.<digits>``, ``<name>-<date>``, optionally compressed), or whose inode a
follower has open, is not followed itself: its lines were read under the live name. A
followed file rotated away while the node was stopped, with nothing at its name yet, is
followed again under its name (its rotated files finished from the saved position). A
missing directory is logged once and waited for. Idle files are checked at most
``IDLE_CHECKS`` times a second in all (each every ``max(POLL / 2, files / IDLE_CHECKS)`` s).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import stat as stat_mod
import time
from typing import Annotated

from annotated_types import Ge

from ..component import NodeContext
from ..errors import SourceError
from ..event import LOCAL_HOST, Batch, Event, Priority
from ..limits import Refusals
from ..regexes import compile_bytes
from ..registry import LiteralPath, source
from ._files import FileRegex, PollingSource, compile_fileregex
from ._rotation import (COMPRESSED, GAPS, HEAD_LEN, MAX_ROTATED, ROTATED_SUFFIX, WALK,
                        Rotated, head_matches, head_of, in_rotation_order, listed_inodes,
                        rotated_files)

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
IDLE_CHECKS = 10_000     # idle files checked per second at most, over all files of a source


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
    """A descriptor of the regular file at ``path``, or None (nothing there, or not a
    regular file). Opened without blocking: a FIFO put under a followed name cannot hang
    the source waiting for a writer; a socket, which cannot be opened, is passed over too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENODEV):
            return None                 # a socket (or a device without a driver)
        raise
    try:
        if stat_mod.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
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


_TRAILING_NUMBER = re.compile(r"\d+$")


class _Reopener:
    """Opens listed rotated files again, each by the inode it was listed with, wherever a
    rotation renamed it since. A numbered file only moves up (``.3`` to ``.4``): the next
    numbers are tried in turn, each an ``open``. Otherwise (or if that fails) the file is
    looked up in a new listing of names and inodes (no ``stat``), at most ``RELISTS``
    listings for all the files of one use: a rotation storm makes a use cost a few opens
    and listings, never a listing per file or a pause."""

    RELISTS = 8

    def __init__(self, places: list[tuple[str, str]]):
        self.places = places
        self.left = self.RELISTS
        self.where: dict[int, str] = {}

    def _relist(self) -> None:
        self.left -= 1
        self.where = {}
        for d, b in self.places:
            self.where.update(listed_inodes(d, b))

    @staticmethod
    def _at(path: str, it: Rotated) -> tuple[int | None, bool]:
        """``(fd, True)`` if ``path`` holds ``it``; ``(None, whether something is there)``."""
        fd = _open(path)
        if fd is None:
            return None, os.path.lexists(path)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (it.dev, it.ino) or \
                (it.mtime_ns == 0 and st.st_ino == it.ino):
            return fd, True             # (a file not seen since listed: its device unknown)
        os.close(fd)
        return None, True

    def _shifted(self, it: Rotated) -> int | None:
        """``it``, numbered, found under a higher number than the one it was listed with
        (numbers tried upwards, as ``rotated_files`` walks them)."""
        m = _TRAILING_NUMBER.search(it.path)
        if m is None or it.compressed or it.rank[0] != 0:
            return None
        stem, digits, gaps = it.path[:m.start()], m.group(), 0
        width = len(digits) if digits.startswith("0") else 0
        for j in range(int(digits) + 1, int(digits) + 1 + WALK):
            fd, there = self._at(f"{stem}{j:0{width}d}", it)
            if fd is not None:
                return fd
            gaps = 0 if there else gaps + 1
            if gaps >= GAPS:
                return None
        return None

    def open(self, it: Rotated) -> int | None:
        fd, _ = self._at(self.where.get(it.ino, it.path), it)
        if fd is None:
            fd = self._shifted(it)
        while fd is None and self.left > 0:
            self._relist()
            path = self.where.get(it.ino)
            if path is None:
                return None             # gone (deleted, or renamed out of the names)
            fd, _ = self._at(path, it)
        return fd


class _Next:
    """A file to read after the current one, from its start. ``size`` and ``head`` (its
    first bytes) as last seen tell when it is copied and truncated before it is reached;
    ``finishing``: a static copy, left as soon as it is read to its end."""

    __slots__ = ("fd", "dev", "ino", "size", "head", "finishing", "live")

    def __init__(self, fd: int, finishing: bool = False):
        st = os.fstat(fd)
        self.fd, self.dev, self.ino = fd, st.st_dev, st.st_ino
        self.size, self.head, self.finishing = 0, b"", finishing
        self.live = True                # named by the followed path when queued
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
    if not whole(rec.get("head_len", 0) or 0):
        return f"the head length {rec.get('head_len')!r} is not a whole number of bytes"
    head = rec.get("head")
    if head is not None and not isinstance(head, str):
        return f"the head digest {head!r} is not a string"
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


QUIET_LISTINGS = 3       # listings of the rotated files tried for one without a rotation


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
        self.head_len, self.head = 0, ""  # the file's identity: digest of its first bytes
        self.mtime = None               # the file's modification time when last saved
        self.refusals = Refusals(metrics, log, f"tail of {path}")
        self.reported: set[tuple] = set()   # skipped rotated files already counted
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
        self.unsaved = False            # no saved position yet: record where reading starts
        self.start_pos: dict | None = None  # that start, once a file is open, to record
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
        self.start_pos = None
        self.unsaved = not (isinstance(rec, dict) and "ino" in rec)
        if not self.unsaved:
            self._resume(rec)
            return
        fd = _open(self.path)
        if fd is None:
            log.info("tailed file does not exist yet; waiting for it to appear",
                     extra={"path": self.path})
            return                      # read from its start when it appears
        if self.start_from_end:
            size = os.fstat(fd).st_size
            self._use(fd, size, os.pread(fd, min(FP_LEN, size), max(0, size - FP_LEN)))
        else:
            self._use(fd, 0, b"")
        self._note_start()

    def _note_start(self) -> None:
        """Without a saved position, keep where reading starts (the source records it
        before it returns a record of the file): after a crash before the first checkpoint,
        a sink that cut back its output (``text``) gets the lines again from there, instead
        of a fresh start (at the end, or at a new live file) that never resends them."""
        if self.unsaved and self.start_pos is None:
            self.start_pos = self.position()

    def take_start(self) -> dict | None:
        """The start position to record now (once), or None."""
        pos, self.start_pos = self.start_pos, None
        if pos is not None:
            self.unsaved = False
        return pos

    def _resume(self, rec: dict) -> None:
        """Resume at a saved position: find the saved file (the live one, a rotated one, or
        a copy), then queue every file that took the path's name after it, oldest first."""
        dev, ino, off = rec.get("dev"), rec["ino"], int(rec.get("offset", 0))
        try:
            fp = bytes.fromhex(rec.get("fp") or "")
        except ValueError:
            fp = b""
        head_len, head = int(rec.get("head_len", 0) or 0), str(rec.get("head") or "")
        saved_mtime = rec.get("mtime") if isinstance(rec.get("mtime"), int) else None
        self.dev, self.ino, self.offset, self.fp = dev, ino, off, fp
        self.head_len, self.head = head_len, head
        files = self._rotated()
        window = [r for r in files if not r.compressed][-MAX_ROTATED:]
        items = window + [None]         # None: the live file, at the path
        i, fd, copy = self._find_saved(items, dev, ino, off, fp, head_len, head)
        if fd is None:
            # moved under another name of the directory, or copied under a name the
            # rotated names do not cover (copy and truncate)
            fd = self._find_inode(dev, ino, off, fp)
            if fd is None:
                fd = self._find_copy(off, fp, exclude=(dev, ino))
                if fd is not None and not head_matches(fd, head_len, head):
                    os.close(fd)
                    fd = None
                copy = fd is not None
        copied_unread = []
        if fd is not None and i == len(items) - 1 and off == 0 and saved_mtime is not None:
            # Nothing of the live file read yet: a copy and truncate since leaves no bytes
            # to recognise the copy by; a rotated file written after the save is one.
            copied_unread = [r for r in window if r.mtime_ns > saved_mtime
                             and (r.dev, r.ino) != (dev, ino)]
        # Only rotated files are queued here, never the live file: a writer may rotate
        # again between the listing and now, and the files rotated meanwhile would fall
        # between the listed ones and the live one. The live file is queued by the
        # rotation check, with every file rotated after the last one queued (as while
        # running).
        if copied_unread:
            os.close(fd)
            fd, ref, ident = None, saved_mtime, None
            later = copied_unread
        elif fd is not None:
            st = os.fstat(fd)
            ref, ident = st.st_mtime_ns, (st.st_dev, st.st_ino)
            later = items[i + 1:-1] if i is not None else \
                [r for r in window if r.mtime_ns >= ref]
        else:
            # Not found: every file written since the position was saved is unread.
            ref, ident = saved_mtime, None
            later = [r for r in window if ref is not None and r.mtime_ns >= ref]
        self._report_skipped(files, window, ref, ident)
        chain, rotated_after = self._open_chain(later, ident)
        finishing = copy
        if fd is None and not chain:
            live = _open(self.path)
            if live is not None:
                chain = [_Next(live)]
        if fd is None:
            if not chain:
                log.warning("the file of the saved position cannot be found and the "
                            "tailed file does not exist yet; waiting for it to appear",
                            extra={"path": self.path})
                return
            if copied_unread:
                log.info("tailed file was copied and truncated while stopped before any "
                         "of it was read; reading its copy first", extra={"path": self.path})
            else:
                log.warning("the file of the saved position cannot be found (deleted, "
                            "compressed or overwritten); reading the %d file(s) written "
                            "since from their start", len(chain), extra={"path": self.path})
            first = chain.pop(0)
            rotated_after -= not first.live
            fd, off, fp, finishing = first.fd, 0, b"", first.finishing
        elif copy:
            log.info("tailed file was truncated while stopped; reading the rest from its "
                     "rotated copy first", extra={"path": self.path})
        elif chain:
            log.info("tailed file was rotated while stopped; finishing the old file and "
                     "the %d file(s) after it first", len(chain), extra={"path": self.path})
        # A rotated file older than another rotated file is complete: left at its end.
        self._use(fd, off, fp, finishing=finishing or rotated_after > 0)
        self.queue = chain

    def _find_saved(self, items: list[Rotated | None], dev, ino, off: int, fp: bytes,
                    head_len: int, head: str) -> tuple[int | None, int | None, bool]:
        """``(index in items, fd, is_copy)`` of the saved file among rotated files and the
        live one (``None``): the file with its device, inode and first bytes holding ``fp``
        before ``off``; else the newest other file with the same first bytes holding it (a
        copy). ``(None, None, False)`` if none."""
        reopen = _Reopener(self._places())
        for copy in (False, True):
            if copy and (off == 0 or not fp):
                break               # nothing read: no content to recognise a copy by
            for i in range(len(items) - 1, -1, -1):
                it = items[i]
                if it is not None and ((it.dev, it.ino) == (dev, ino)) == copy:
                    continue
                fd = self._open_item(it, reopen)
                if fd is None:
                    continue
                try:
                    st = os.fstat(fd)
                    if ((st.st_dev, st.st_ino) == (dev, ino)) != copy and \
                            head_matches(fd, head_len, head) and _holds(fd, off, fp):
                        return i, fd, copy
                except OSError:
                    pass
                os.close(fd)
        return None, None, False

    def _open_item(self, it: Rotated | None, reopen: "_Reopener | None" = None) -> int | None:
        """The live file (``None``), or the rotated file ``it``: found again by its inode
        if a rotation renamed it since it was listed (None if it is gone). ``reopen``
        shares its listings between the files of one chain."""
        if it is None:
            return _open(self.path)
        return (reopen or _Reopener(self._places())).open(it)

    def _open_chain(self, items: list[Rotated | None], skip) -> tuple[list["_Next"], int]:
        """The files of ``items`` (oldest first; None: the live file) opened as queued
        files, but the one ``skip`` names and files gone meanwhile; and how many of them
        are rotated files. Every rotated file but the newest is complete (``finishing``)."""
        out: list[_Next] = []
        seen = {skip}
        reopen = _Reopener(self._places())
        for it in items:
            fd = self._open_item(it, reopen)
            if fd is None:
                continue
            q = _Next(fd)
            if (q.dev, q.ino) in seen or not stat_mod.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                continue
            seen.add((q.dev, q.ino))
            q.live = it is None
            out.append(q)
        rotated = [q for q in out if not q.live]
        for q in rotated[:-1]:
            q.finishing = True
        return out, len(rotated)

    def _report_skipped(self, files: list[Rotated], window: list[Rotated], ref, ident) -> None:
        """Count and log the rotated files written after ``ref`` (a modification time)
        that are not read: compressed ones, and those past the ``MAX_ROTATED`` newest."""
        if ref is None:
            return
        for r in files:
            if r.mtime_ns < ref or (r.dev, r.ino) == ident or (r.dev, r.ino) in self.reported:
                continue
            if r.compressed:
                self.refusals.refuse("compressed", f"{r.path} is compressed; its unread "
                                     "lines are skipped (compressed rotations are not read)")
            elif r not in window:
                self.refusals.refuse("rotated_over_limit", f"{r.path} is older than the "
                                     f"{MAX_ROTATED} newest rotated files; it is skipped")
            else:
                continue
            if len(self.reported) >= MAX_ROTATED:
                self.reported.clear()
            self.reported.add((r.dev, r.ino))

    def _use(self, fd: int, offset: int, fp: bytes, finishing: bool = False) -> None:
        """Make ``fd`` the current file at ``offset``; records already taken are done."""
        if fd != self.fd:
            _close(self.fd)
        st = os.fstat(fd)
        self.fd, self.dev, self.ino = fd, st.st_dev, st.st_ino
        self.finishing = finishing
        self.offset = self.read_pos = offset
        self.fp = self.tail_fp = fp
        self.head_len, self.head = head_of(fd, min(HEAD_LEN, offset)) if offset else (0, "")
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
        """The saved position: the file (device, inode, ``head``: digest of its first
        ``head_len`` bytes, at most HEAD_LEN, all taken already), the offset after the
        last record taken, the bytes before it (``fp``) and the file's modification time
        (what tells, after a restart, which rotated files were written since)."""
        if self.ino is None:
            return None
        if self.fd is not None:
            try:
                want = min(HEAD_LEN, self.offset)
                # only from a file still holding what was read (not truncated meanwhile)
                if self.head_len < want and _holds(self.fd, self.offset, self.fp):
                    self.head_len, self.head = head_of(self.fd, want)
                self.mtime = os.fstat(self.fd).st_mtime_ns
            except OSError:
                pass
        pos = {"dev": self.dev, "ino": self.ino, "offset": self.offset, "fp": self.fp.hex(),
               "head_len": self.head_len, "head": self.head}
        if self.mtime is not None:
            pos["mtime"] = self.mtime
        return pos

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
            if self.fd is not None:
                self._note_start()
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
        try:
            self._queue_missed(q)
        except OSError:
            os.close(fd)                # looked at again at the next check, not leaked
            raise
        self.queue.append(q)
        self.metrics.add("rotations")
        log.info("tailed file was rotated; finishing the old file first",
                 extra={"path": self.path})
        return st

    def _queue_missed(self, new_file: "_Next") -> None:
        """Before the file ``new_file`` now at the path: queue the rotated files that took
        the path's name and were rotated again between two checks (never seen at the path):
        those after the last known file in rotation order (or, if it is no longer under a
        rotated name, written after it or in the same tick of the file system's clock: a
        file written in the same few milliseconds is read again rather than lost).

        The listing's order holds for the files rotated before it began, which the missed
        ones are (the new file was at the path before it). A file rotated from the path
        during it may be met out of order (met at .1, then two rotations, then a newer one
        met at .2), so it is listed again, up to ``QUIET_LISTINGS`` times, until one sees
        no rotation from the path: then the order holds for every file, and the new file's
        place ends the missed ones. If every listing saw one, the files after the new one
        are told by their modification time, later than its last write (a file written in
        the same tick is read before it, not lost; one rotated before it but written after
        its last write, by a writer that reopens late, is missed then)."""
        new = (new_file.dev, new_file.ino)
        last = self.queue[-1] if self.queue else None
        ident = (last.dev, last.ino) if last else (self.dev, self.ino)
        for _ in range(QUIET_LISTINGS):
            before = _stat(self.path)
            window = [r for r in self._rotated()
                      if not r.compressed][-MAX_ROTATED:]
            st = _stat(self.path)
            # nothing at the path before and after (a writer that creates it late): the
            # new file was rotated before the listing began, nothing from the path since
            quiet = (before is None and st is None) or (
                before is not None and st is not None
                and (before.st_dev, before.st_ino) == (st.st_dev, st.st_ino))
            if quiet:
                break
        at = next((k for k, r in enumerate(window) if (r.dev, r.ino) == ident), None)
        try:
            ref = os.fstat(last.fd if last else self.fd).st_mtime_ns
            newest = os.fstat(new_file.fd).st_mtime_ns      # read after the listing
        except OSError:
            return
        # No rotation from the live name during the listing: every file listed had its
        # number when the walk began, so the order holds for all, the new file's too.
        upto = len(window)
        if quiet:
            upto = next((k for k, r in enumerate(window) if (r.dev, r.ino) == new), upto)
        if at is not None:
            later = window[at + 1:upto]
        else:
            later = [r for r in window[:upto] if r.mtime_ns >= ref]
        if not quiet and (st is None or (st.st_dev, st.st_ino) != new):
            # rotated during every listing: the files after it may be listed before it.
            # Told by modification time, a file rotated before it but written after its
            # last write (a writer that reopens late, the new file still empty) is missed.
            later = [r for r in later if r.mtime_ns <= newest]
        known = set(self.open_inodes()) | {new}
        missed = [r for r in later if (r.dev, r.ino) not in known]
        # Compressed files are not counted here: while running, a compressed rotated file
        # is almost always one whose lines were read through the descriptor held open.
        if not missed:
            return
        chain, _ = self._open_chain(missed, new)
        for q in chain:
            q.finishing, q.live = True, False   # rotated twice: complete
        self.queue.extend(chain)
        self.metrics.add("rotations", len(chain))
        log.info("tailed file was rotated %d more time(s) between two checks; reading the "
                 "file(s) in between first", len(chain), extra={"path": self.path})

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
            if not self.queue:
                # a finished file with nothing queued (a copy, or the last rotated file
                # read after a restart): the file at the path, after the files rotated
                # since the last check
                self._check_rotation()
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

    def _places(self) -> list[tuple[str, str]]:
        """``(directory, name)`` where the file's rotated files are: next to the path, and,
        when the path is a symbolic link, next to the file it resolves to now (where a
        writer's rotation renames it)."""
        here = (self.dir, self.base)
        real = os.path.split(os.path.realpath(self.path))
        return [here] if real == here else [here, real]

    def _rotated(self) -> list[Rotated]:
        """The rotated files of every place (see ``_places``), oldest first."""
        places = self._places()
        if len(places) == 1:
            return rotated_files(*places[0])
        seen: set[tuple] = set()
        out = []
        for d, b in places:
            for r in rotated_files(d, b):
                if (r.dev, r.ino) not in seen:
                    seen.add((r.dev, r.ino))
                    out.append(r)
        return in_rotation_order(out)

    def _candidates(self, prefix_only: bool):
        out = []
        for d, base in self._places():
            try:
                entries = list(os.scandir(d or "."))
            except OSError:
                continue
            for e in entries:
                # compressed files are never read (their bytes are not the lines)
                if e.name == base or e.name.lower().endswith(COMPRESSED):
                    continue
                if prefix_only and not e.name.startswith(base):
                    continue
                out.append(e)
        return out

    def _find_inode(self, dev, ino, off: int, fp: bytes) -> int | None:
        """The file of this directory with inode ``(dev, ino)``, the saved first bytes and
        ``fp`` at ``off``."""
        for e in self._candidates(prefix_only=False):
            try:
                if e.inode() != ino or not e.is_file(follow_symlinks=False):
                    continue
                fd = _open(e.path)
                if fd is None:
                    continue
                if os.fstat(fd).st_dev == dev and _holds(fd, off, fp) and \
                        head_matches(fd, self.head_len, self.head):
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

    replays = True      # from the committed offsets

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
        self._record_starts(self._cursors)

    def _record_starts(self, cursors) -> None:
        """Record, in one store commit, where the followers without a saved position
        started reading (see ``_Cursor._note_start``). A failed write (disk full) is logged:
        the store keeps the positions in memory and the next checkpoint writes them."""
        updates = {}
        for c in cursors:
            if c.start_pos is not None:
                updates[c.key] = c.take_start()
        if not updates:
            return
        try:
            self.ctx.store.commit([], updates=updates)
        except OSError as exc:
            self.metrics.add("errors")
            log.warning("cannot record where %d tailed file(s) start; a crash before the "
                        "first checkpoint may skip their first lines", len(updates),
                        extra={"error": str(exc.strerror or exc)})

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
        pieces: list[tuple[bytes, list[bytes]]] = []    # (file name, records) in order
        room = MAX_BATCH
        info, host = Priority.INFO, LOCAL_HOST
        start = self._rr = (self._rr + 1) % n
        real = time.monotonic()
        # An idle file is looked at again after POLL / 2, or later when there are so many
        # files that checking each that often would keep a core busy doing nothing.
        idle_gap = max(POLL / 2, n / IDLE_CHECKS)
        starts: list[_Cursor] = []      # files opened just now: their start is recorded
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
                        c.idle_until = real + idle_gap
                        break
                except OSError as exc:
                    self._error(c, exc)
                    c.idle_until = real + idle_gap
                    break
            if c.start_pos is not None:
                starts.append(c)
            if not c.has_ready():
                continue
            recs = c.take(room)
            pieces.append((c.name, recs))
            room -= len(recs)
            if room <= 0:
                break
        if starts:
            self._record_starts(starts)     # before their records are given
        if len(pieces) == 1:
            # The usual call (one busy file): a fast batch, no per-event object.
            name, recs = pieces[0]
            out: "Batch | list[Event]" = Batch(recs, [ts] * len(recs),
                                               range(base, base + len(recs)), info, host,
                                               {"tailSrcFile": name})
        else:
            out = []
            for name, recs in pieces:
                i0 = len(out)
                out.extend([Event(r, ts, base + i, info, host, {"tailSrcFile": name})
                            for i, r in enumerate(recs, i0)])
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
        with self._lock:                # positions look at the open files: not mid-close
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
        self._missing = False                   # the directory was missing at the last scan

    def open(self, ctx: NodeContext) -> None:
        self._start(ctx)
        self._root = os.path.abspath(self.dir)
        self._cursors, self._by_path, self._ignored = [], {}, {}
        self._missing = False
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
        if not os.path.isdir(self._root):
            if not self._missing:               # said once per absence
                self._missing = True
                log.info("tailed directory does not exist yet; waiting for it to appear",
                         extra={"path": self._root})
        else:
            self._missing = False
        found: dict[str, int | None] = {}
        self._walk(self._root, self.depth, found)
        if initial:
            self._add_rotated_away(found)
        new = [p for p in found if p not in self._by_path
               and self._ignored.get(p, -1) != found[p]]
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
        added: list[_Cursor] = []
        # the files the followers have open, as they recorded them (no fstat per file)
        taken = {i for c in self._cursors for i in c.open_inodes()}
        for p in new:
            d, b = os.path.split(p)
            if self._is_rotated_copy(b, names_by_dir.get(d, set())) or \
                    self._inode_open(p, taken):
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
            added.append(c)
            taken.update(c.open_inodes())
        self._record_starts(added)

    def _add_rotated_away(self, found: dict) -> None:
        """Followed files rotated away while stopped, nothing at their name yet: followed
        again (inode None), so that their rotated files are finished from the saved
        position rather than followed as new files from their start."""
        for key in self.ctx.store.keys():
            if not key.startswith("tail:"):
                continue
            p = key[len("tail:"):]
            rel = os.path.relpath(p, self._root)
            d, b = os.path.split(p)
            if (p in found or rel.startswith("..") or rel.count(os.sep) > self.depth
                    or not self.matches(b) or _stat(p) is not None):
                continue
            if any(not r.compressed for r in rotated_files(d, b)):
                found[p] = None

    @staticmethod
    def _is_rotated_copy(name: str, siblings: set) -> bool:
        """True if ``name`` is a sibling's name and a rotated suffix. A suffix starts with
        ``.`` or ``-``: only those places are tried, so the cost grows with the name's
        length, not with the number of files of the directory."""
        for i, ch in enumerate(name):
            if ch in ".-" and i and name[:i] in siblings and ROTATED_SUFFIX.fullmatch(name, i):
                return True
        return False

    @staticmethod
    def _inode_open(path: str, open_inodes: set) -> bool:
        st = _stat(path)
        return st is not None and (st.st_dev, st.st_ino) in open_inodes
