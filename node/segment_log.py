"""A durable log on local disk: a directory of numbered segment files of CRC-framed records,
one writer at a time. The E2E write-ahead log (:mod:`node.wal`) and diskFailover's spool
(:mod:`node.decorators.disk_failover`) are built on it; each owner keeps its record fields
(a :class:`Framing`), its bookkeeping of what was consumed, and its state files.

* **Directory.** ``open`` takes an exclusive ``flock`` on its ``lock`` file (:class:`LogInUse`
  if another writer holds it) and lists the segments ``seg-<number, digits wide><suffix>``,
  oldest first. Other files are left alone.
* **Records.** ``magic:4s  <the owner's fields>  length:u32  crc32(payload):u32  payload``,
  then, for the magics that have one, a trailer ``tlen:u32  crc32(tdata):u32  tdata``
  (big-endian). A length above :data:`MAX_RECORD` or past the end of the file is damage.
* **Writing.** Whole records with one ``writev``. A ``durable`` log makes them durable with
  one ``fdatasync`` before returning, and fsyncs the creation and the cutting of segments
  and the writes of state files; otherwise records are handed to the OS only (they
  survive the death of the process, not of the machine). A failed write keeps nothing: the
  segment is cut back at once to its last whole record (or sealed if even that fails), so
  no later open finds a torn record of ours, and it raises :class:`LogError` --
  :class:`DiskFull` when the disk has no space left (ENOSPC, EDQUOT).
* **Disk full is transient.** :class:`SpaceWait` retries a write that failed for want of
  space until space returns (the owner's sending, replay and acknowledgements remove
  segments meanwhile), reports the condition while it lasts, and keeps the
  ``disk_free_bytes`` gauge. State files need no new space once created (below).
* **State files** (a position, a next seq) are small records rewritten in place:
  :meth:`SegmentLog.write_state` alternates between two fixed-size slots of a file
  allocated when it is created (``magic:4s gen:u64 length:u32 crc32:u32 data``); the
  valid slot with the highest generation is the state, so a write torn by a crash leaves
  the previous one. Only a record too big for its slot (more than ``STATE_SLOT`` bytes at
  first) makes a new, bigger file (replaced atomically), which needs space; an owner
  that must rewrite a state file while the disk is full asks for ``room`` ahead, while
  it is writing anyway (:meth:`SegmentLog.state_room`). A file of the older format (the
  text alone) is read, and rewritten in this one when first read.
* **Torn-tail repair.** :meth:`SegmentLog.scan` reads a segment in order; the first record
  failing its framing, its checksums or the owner's check ends the segment: the rest is
  cut off on disk, counted (``corrupt``, ``truncated_bytes``) and logged -- a warning at
  the end of the newest segment (a crash while writing), an error anywhere else (disk
  corruption). Nothing past it is ever returned.
* **Rotation and removal.** Appends go to the newest segment until it is sealed or holds
  ``segment_bytes``, then to a new one. The owner removes a segment once it consumed it.
* **Open files.** A segment's file is opened when first needed; without ``keep_open``, a
  sealed segment's file is closed once scanned or sealed, so a long log holds two open
  (the one read and the one written).

Not thread-safe: the owner serialises calls.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from .backoff import step
from .checkpoint import fsync_dir
from .errors import Interrupted
from .limits import RateLimitedLog

MAX_RECORD = 1 << 30           # a length above this is damage, not data
_TRAILER = struct.Struct(">II")
_STATE_HEAD = struct.Struct(">4sQII")    # magic, generation, length, crc32(data)
_STATE_MAGIC = b"FST1"
STATE_SLOT = 4096              # bytes of each of a state file's two slots, at first
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
T = TypeVar("T")


class LogError(OSError):
    """The log could not be opened or written (in use, disk full, I/O error...)."""


class LogInUse(LogError):
    """Another writer holds the log's directory."""


class DiskFull(LogError):
    """A write found no space left on the log's disk; nothing of it was kept."""


def disk_full(exc: BaseException | None) -> bool:
    """``exc`` (or an error it was raised from) says the disk has no space left."""
    while exc is not None:
        if isinstance(exc, DiskFull) or (isinstance(exc, OSError)
                                         and exc.errno in _FULL_ERRNOS):
            return True
        exc = exc.__cause__
    return False


@dataclass(slots=True, eq=False)
class Segment:
    """One segment file: ``fd`` (None while closed), ``size`` (bytes of whole records),
    ``created`` (monotonic time it was created or opened), ``sealed`` (no more appends),
    ``live`` (the owner's: keys of the records of it that it still needs)."""

    number: int
    path: Path
    fd: int | None
    size: int
    created: float
    sealed: bool = False
    live: set = field(default_factory=set)


@dataclass(slots=True)
class Record:
    """A record as read: where it starts, its whole ``size``, the owner's ``fields``, the
    payload's ``length`` and ``crc``, ``payload`` (None unless verified), ``trailer``."""

    magic: bytes
    fields: tuple
    offset: int
    size: int
    length: int
    crc: int
    payload: bytes | None
    trailer: bytes | None


class Framing:
    """A record format: the owner's header ``fields`` (a :mod:`struct` format between the
    magic and the length) and its ``magics`` (magic -> whether it has a trailer)."""

    def __init__(self, fields: str, magics: dict[bytes, bool]):
        self.head = struct.Struct(">4s" + fields + "II")
        self.magics = magics

    def pack(self, magic: bytes, fields: tuple, payload: bytes, trailer: bytes | None = None,
             crc: int | None = None) -> list[bytes]:
        """The buffers of one record (for ``writev``); ``crc``: the payload's, if known."""
        crc = zlib.crc32(payload) if crc is None else crc
        bufs = [self.head.pack(magic, *fields, len(payload), crc), payload]
        if trailer is not None:
            bufs += [_TRAILER.pack(len(trailer), zlib.crc32(trailer)), trailer]
        return bufs

    def read(self, fd: int, off: int, end: int, verify: bool = True
             ) -> tuple[Record | None, str | None]:
        """The record at ``off`` of a file whose records end at ``end``: ``(record, None)``;
        ``(None, reason)`` if its framing is damaged (no record after it can be found);
        ``(record, reason)`` if only its payload fails its checksum. Without ``verify``
        the payload is neither read nor checked."""
        head = os.pread(fd, self.head.size, off)
        if len(head) < self.head.size or off + self.head.size > end:
            return None, "torn record header"
        magic, *fields, length, crc = self.head.unpack(head)
        if magic not in self.magics:
            return None, "bad record magic"
        pos = off + self.head.size + length
        if length > MAX_RECORD or pos > end:
            return None, "record longer than the file (torn write)"
        trailer = None
        if self.magics[magic]:
            t = os.pread(fd, _TRAILER.size, pos)
            tlen, tcrc = _TRAILER.unpack(t) if len(t) == _TRAILER.size else (-1, 0)
            pos += _TRAILER.size + tlen
            if not 0 <= tlen <= MAX_RECORD or pos > end:
                return None, "record trailer torn (longer than the file)"
            trailer = os.pread(fd, tlen, pos - tlen)
            if zlib.crc32(trailer) != tcrc:
                return None, "record trailer checksum mismatch"
        payload = os.pread(fd, length, off + self.head.size) if verify else None
        rec = Record(magic, tuple(fields), off, pos - off, length, crc, payload, trailer)
        if verify and zlib.crc32(payload) != crc:
            return rec, "record checksum mismatch"
        return rec, None


class SegmentLog:
    """The segments of ``directory`` (see the module docstring). ``what`` names the log in
    messages ("the WAL"), ``log`` is the owner's logger, ``clock`` gives ``monotonic``."""

    def __init__(self, directory: Path | str, framing: Framing, *, what: str, suffix: str,
                 digits: int, durable: bool, segment_bytes: int, log: logging.Logger,
                 keep_open: bool = True, clock=None):
        self.dir = Path(directory)
        self.framing, self.what, self.log = framing, what, log
        self.suffix, self.digits = suffix, digits
        self.durable, self.segment_bytes, self.keep_open = durable, segment_bytes, keep_open
        self._clock = clock
        self.segments: list[Segment] = []
        self.next_number = 0           # a created segment gets at least this number
        self.corrupt = 0               # records that ended their segment (cut off)
        self.truncated_bytes = 0
        self._lock_fd: int | None = None
        self._states: dict[str, list] = {}   # name -> [fd, slot bytes, newest generation]
        self.freed = threading.Event()       # set whenever a segment is removed

    def now(self) -> float:
        return self._clock.monotonic() if self._clock is not None else time.monotonic()

    def open(self) -> list[Segment]:
        """Lock the directory and list its segments (unsealed, closed), oldest first."""
        self.corrupt = self.truncated_bytes = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise LogInUse(f"{self.what} in {self.dir} is in use by another writer")
        self._lock_fd = fd
        found = []
        for p in self.dir.glob(f"seg-*{self.suffix}"):
            try:
                found.append((int(p.name[4:-len(self.suffix)]), p))
            except ValueError:
                self.log.warning("ignoring %s in the directory of %s: not a segment", p,
                                 self.what, extra={"file": str(p)})
        for number, path in sorted(found):
            self.segments.append(Segment(number, path, None, path.stat().st_size, self.now()))
            self.next_number = number + 1
        return list(self.segments)

    def fd(self, seg: Segment) -> int:
        """``seg``'s file descriptor, opened if it is closed."""
        if seg.fd is None:
            seg.fd = os.open(seg.path, os.O_RDWR | os.O_APPEND)
        return seg.fd

    def release(self, seg: Segment) -> None:
        """Close ``seg``'s file until it is needed again."""
        fd, seg.fd = seg.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def scan(self, seg: Segment, accept=None, start: int = 0, verify: bool = True,
             last: bool = False) -> tuple[int, int]:
        """Read ``seg``'s records from ``start`` in order, giving each to ``accept`` (which
        returns a reason to refuse it, or None); returns the records and bytes accepted.
        The first damaged or refused record and the rest are cut off and reported
        (``last``: ``seg`` is the newest segment, where damage at the end is a torn write)."""
        fd, off, records = self.fd(seg), start, 0
        while off < seg.size:
            rec, bad = self.framing.read(fd, off, seg.size, verify)
            if bad is None and accept is not None:
                bad = accept(rec)
            if bad is not None:
                self._cut(seg, off, bad, last)
                break
            off += rec.size
            records += 1
        if seg.sealed and not self.keep_open:
            self.release(seg)
        return records, off - start

    def _cut(self, seg: Segment, off: int, reason: str, last: bool) -> None:
        cut = seg.size - off
        self.corrupt += 1
        self.truncated_bytes += cut
        msg = ("%s ends with a torn record (a crash while writing): the last %d bytes of %s, "
               "from offset %d, are cut off and not replayed (%s)" if last else
               "%s holds a corrupt record before its end (disk corruption): the %d bytes of %s "
               "from offset %d on are cut off and lost (%s)")
        (self.log.warning if last else self.log.error)(
            msg, self.what, cut, seg.path, off, reason,
            extra={"segment": str(seg.path), "offset": off, "bytes_cut": cut, "reason": reason})
        os.ftruncate(seg.fd, off)
        if self.durable:
            os.fsync(seg.fd)
        seg.size = off

    def writable(self, number: int | None = None) -> Segment:
        """The segment to append to: the newest, unless it is sealed or full; then that is
        sealed and a new one is created, numbered ``number`` (default :attr:`next_number`)."""
        seg = self.segments[-1] if self.segments else None
        if seg is not None and not seg.sealed and seg.size < self.segment_bytes:
            return seg
        if seg is not None:
            seg.sealed = True
            if not self.keep_open:
                self.release(seg)
        n = self.next_number if number is None else number
        path = self.dir / f"seg-{n:0{self.digits}d}{self.suffix}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        if self.durable:
            fsync_dir(self.dir)
        seg = Segment(n, path, fd, 0, self.now())
        self.segments.append(seg)
        self.next_number = max(self.next_number, n + 1)
        return seg

    def write(self, seg: Segment, bufs: list[bytes], total: int) -> None:
        """Append ``bufs`` (whole records, ``total`` bytes) to ``seg`` with one write (and
        one fdatasync if durable). On failure nothing is kept; raises :class:`LogError`."""
        start = seg.size
        try:
            fd = self.fd(seg)
            written = os.writev(fd, bufs)
            while written < total:      # a short write: the rest with plain writes
                n = os.write(fd, b"".join(bufs)[written:])
                if n <= 0:
                    raise OSError("short write")
                written += n
            if self.durable:
                os.fdatasync(fd)
        except OSError as exc:
            # leave no partial record behind: the next append would follow garbage, and
            # the next open would report our own torn write as damage
            try:
                os.ftruncate(self.fd(seg), start)
            except OSError:
                seg.sealed = True
            error = DiskFull if disk_full(exc) else LogError
            raise error(f"cannot write {self.what} in {self.dir}: {exc}") from exc
        seg.size = start + total

    def remove(self, seg: Segment) -> None:
        """Close and delete ``seg`` (its records were consumed)."""
        self.segments.remove(seg)
        self.release(seg)
        seg.path.unlink(missing_ok=True)
        self.freed.set()

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use on the directory's disk."""
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    # ---------------------------------------------------------------- state files

    def read_state(self, name: str) -> str | None:
        """The text last written to state file ``name``, None if it has none. A file of
        an older version (the text alone, replaced whole) is read as it is."""
        try:
            fd = os.open(self.dir / name, os.O_RDWR)
        except FileNotFoundError:
            return None
        self._close_state(name)
        raw = b""
        while chunk := os.pread(fd, 1 << 16, len(raw)):
            raw += chunk
        if not raw.startswith(_STATE_MAGIC):
            # the older format (the text alone, replaced whole): rewritten in this one now,
            # while there is likely space, else at its next write
            self._states[name] = [fd, 0, 0]
            text = raw.decode("utf-8", "replace") if raw else None
            if text is not None:
                try:
                    self._new_state(name, raw)
                except OSError:
                    pass
            return text
        slot = len(raw) // 2
        best = None
        for start in (0, slot):
            if start + _STATE_HEAD.size > len(raw):
                continue
            magic, gen, length, crc = _STATE_HEAD.unpack_from(raw, start)
            data = raw[start + _STATE_HEAD.size:start + _STATE_HEAD.size + length]
            if magic == _STATE_MAGIC and _STATE_HEAD.size + length <= slot and \
                    zlib.crc32(data) == crc and (best is None or gen > best[0]):
                best = (gen, data)
        self._states[name] = [fd, slot, best[0] if best else 0]
        return best[1].decode("utf-8", "replace") if best else None

    def _state(self, name: str) -> list | None:
        st = self._states.get(name)
        if st is None and (self.dir / name).exists():
            self.read_state(name)
            st = self._states[name]
        return st

    def state_room(self, name: str) -> int:
        """Bytes of text state file ``name`` can take in place (0 if it does not exist)."""
        st = self._state(name)
        return max(0, st[1] - _STATE_HEAD.size) if st is not None else 0

    def write_state(self, name: str, text: str, room: int = 0) -> None:
        """Write ``text`` to state file ``name`` (durably if the log is durable): in place,
        needing no new space, once the file exists with a slot big enough for it and for
        ``room`` bytes of text; else a new file is made with such slots (which needs
        space: :class:`DiskFull` if there is none, and the old file stays as it was)."""
        data = text.encode()
        st = self._state(name)
        if st is None or _STATE_HEAD.size + max(len(data), room) > st[1]:
            try:
                self._new_state(name, data, room)
            except OSError as exc:
                error = DiskFull if disk_full(exc) else LogError
                raise error(f"cannot write {name} of {self.what} in {self.dir}: "
                            f"{exc}") from exc
            return
        fd, slot, gen = st
        os.pwrite(fd, _STATE_HEAD.pack(_STATE_MAGIC, gen + 1, len(data), zlib.crc32(data))
                  + data, (gen % 2) * slot)       # generation g lives in slot (g-1) % 2
        if self.durable:
            os.fdatasync(fd)
        st[2] = gen + 1

    def _new_state(self, name: str, data: bytes, room: int = 0) -> None:
        """Create state file ``name`` holding ``data``, both slots allocated (written) and
        big enough for ``room`` bytes of text."""
        slot = STATE_SLOT
        while _STATE_HEAD.size + max(len(data), room) > slot:
            slot *= 2
        tmp = self.dir / f"{name}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            rec = _STATE_HEAD.pack(_STATE_MAGIC, 1, len(data), zlib.crc32(data)) + data
            image = rec.ljust(2 * slot, b"\0")
            written = 0
            while written < len(image):     # a nearly full disk may take part of it only
                written += os.write(fd, image[written:])    # then ENOSPC on the next
            if self.durable:
                os.fsync(fd)
            os.replace(tmp, self.dir / name)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        if self.durable:
            fsync_dir(self.dir)
        self._close_state(name)
        self._states[name] = [fd, slot, 1]

    def _close_state(self, name: str) -> None:
        st = self._states.pop(name, None)
        if st is not None:
            os.close(st[0])

    def close(self) -> None:
        """Close every segment and state file and release the directory."""
        for seg in self.segments:
            self.release(seg)
        self.segments = []
        for name in list(self._states):
            self._close_state(name)
        if self._lock_fd is not None:
            os.close(self._lock_fd)        # releases the flock
            self._lock_fd = None


class SpaceWait:
    """Backpressure while the disk under ``log`` is full (see the module docstring).

    :meth:`call` runs a write; while it fails for want of space it reports the condition
    (``report(text)``, ``report(None)`` once it is over: the logical node shows it),
    counts it (``disk_full``: times a write had to wait), logs it (at most every 10 s,
    however often the disk fills and empties), and tries again
    when the owner removed a segment or after a wait doubling from ``FIRST`` to ``MOST``
    seconds -- until the write succeeds or ``stopping()`` says the flow stops
    (:class:`~node.errors.Interrupted`: nothing of the write was kept). The caller's
    thread, and so the source behind it, waits meanwhile; other threads (sending,
    replaying, acknowledging) go on and free space. :meth:`gauge` keeps
    ``disk_free_bytes`` in ``metrics``, read at most every ``GAUGE_EVERY`` seconds."""

    FIRST, MOST = 0.05, 1.0
    GAUGE_EVERY = 1.0

    def __init__(self, log: SegmentLog, metrics, report: Callable[[str | None], None],
                 clock, until: str = "sending frees space"):
        # ``log``: a SegmentLog, or anything with its ``freed``, ``what``, ``dir``,
        # ``log`` and ``free_bytes()``; ``until``: what the wait ends with, for the message
        self.seglog, self.metrics, self.report, self.clock = log, metrics, report, clock
        self.until = until
        self._log = RateLimitedLog(log.log)
        self._gauge_at: float | None = None

    def gauge(self, force: bool = False) -> int | None:
        """Read the free bytes into ``disk_free_bytes`` (unless read less than
        ``GAUGE_EVERY`` ago); None if the disk cannot be asked."""
        now = self.clock.monotonic()
        if not force and self._gauge_at is not None and \
                now - self._gauge_at < self.GAUGE_EVERY:
            return self.metrics.get("disk_free_bytes")
        self._gauge_at = now
        try:
            free = self.seglog.free_bytes()
        except OSError:
            return None
        self.metrics["disk_free_bytes"] = free
        return free

    def call(self, write: Callable[[], T], stopping: Callable[[], bool]) -> T:
        """``write()``, again and again while the disk is full (see the class docstring)."""
        since = None
        delay = 0.0
        while True:
            self.seglog.freed.clear()     # before the write: a removal during it counts
            try:
                result = write()
            except Exception as exc:    # OSError, or an error raised from one
                if not disk_full(exc):
                    raise
                if since is None:
                    since = self.clock.monotonic()
                    self._full(exc)
                if stopping():
                    raise Interrupted(f"{self.seglog.what} in {self.seglog.dir} could not be "
                                      f"written: the disk is full and the flow stops") from exc
                delay = step(delay, self.FIRST, self.MOST)
                self.clock.wait(self.seglog.freed, delay)
                continue
            if since is not None:
                self.gauge(force=True)
                self.report(None)
                self._log.log(logging.INFO, "space", "%s in %s: the disk has space again "
                              "after %.1f s; the flow goes on", self.seglog.what,
                              self.seglog.dir, self.clock.monotonic() - since)
            return result

    def _full(self, exc: OSError) -> None:
        free = self.gauge(force=True)
        self.metrics["disk_full"] = self.metrics.get("disk_full", 0) + 1
        self.report(f"disk full: {self.seglog.what} in {self.seglog.dir} cannot grow "
                    f"({free} bytes free); the source waits until {self.until}")
        self._log.warning("full", "%s in %s: the disk is full (%s); the source waits until "
                          "%s", self.seglog.what, self.seglog.dir, exc, self.until)
