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
  and the replacement of state files; otherwise records are handed to the OS only (they
  survive the death of the process, not of the machine). A failed write keeps nothing (the
  segment is cut back, or sealed if even that fails) and raises :class:`LogError`.
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

import fcntl
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import fsync_dir

MAX_RECORD = 1 << 30           # a length above this is damage, not data
_TRAILER = struct.Struct(">II")


class LogError(OSError):
    """The log could not be opened or written (in use, disk full, I/O error...)."""


class LogInUse(LogError):
    """Another writer holds the log's directory."""


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
            # leave no partial record behind: the next append would follow garbage
            try:
                os.ftruncate(self.fd(seg), start)
            except OSError:
                seg.sealed = True
            raise LogError(f"cannot write {self.what} in {self.dir}: {exc}") from exc
        seg.size = start + total

    def remove(self, seg: Segment) -> None:
        """Close and delete ``seg`` (its records were consumed)."""
        self.segments.remove(seg)
        self.release(seg)
        seg.path.unlink(missing_ok=True)

    def write_state(self, name: str, text: str) -> None:
        """Replace state file ``name`` atomically (and durably if the log is durable)."""
        tmp = self.dir / f"{name}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)
        if self.durable:
            fsync_dir(self.dir)

    def close(self) -> None:
        """Close every segment and release the directory."""
        for seg in self.segments:
            self.release(seg)
        self.segments = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)        # releases the flock
            self._lock_fd = None
