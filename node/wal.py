"""The agent's write-ahead log: numbered groups of events, and the source position that
goes with them, durable before they are sent or committed.

Layout: a directory of segment files ``seg-<first seq>.wal`` (20 digits, so names sort in
seq order), a file ``meta.json`` and a ``lock`` file. A segment is a sequence of records::

    magic  seq:u64  count:u32  length:u32  crc32(payload):u32  payload  [trailer]
    trailer (magic FWAX and FWAP only): tlen:u32  crc32(tdata):u32  tdata

(big-endian). ``FWAL`` is a group; ``FWAX`` a group with a trailer carrying the source
position recorded with it (JSON ``{"n": position number, "p": checkpoint updates}``);
``FWAP`` a position alone (no events; its seq repeats the last group's). The payload is a
:mod:`node.codec` encoding, possibly gzip-compressed -- the log does not look inside it.

Guarantees:

* **Group commit.** :meth:`WriteAheadLog.append` writes its records with one ``write`` and
  makes them durable with one ``fdatasync`` before returning; a record is never exposed
  (read, sent) before that.
* **A group and its source position are one record**: a crash keeps both or neither, so a
  restarted agent neither loses the group nor reads its events from the source again.
  :attr:`position` is, after :meth:`open`, the newest position the log holds (from a
  record or from ``meta.json``); the agent gives it back to the checkpoint store before
  its source opens.
* **Read back on open.** Every record is checked (magic, lengths, seq order, CRCs). The
  first bad record ends its segment: the rest of that segment is cut off (``truncate``),
  reported in the log and in the metrics ``wal_corrupt``/``wal_truncated_bytes``, and never
  returned. After a crash that is the torn tail of the last segment; anywhere else it is
  disk corruption (logged as an error).
* **Deletion by acknowledgement.** :meth:`ack` forgets groups; a segment whose groups are
  all acknowledged is deleted (the segment being written is sealed first, so the next
  append starts a fresh one). Before a segment is deleted, ``meta.json`` records the next
  seq and the newest position (fsynced).
* **A seq is never reused**, even after every segment was deleted: on open, the next seq is
  past the records read, past every segment's first seq and past ``meta.json``. (The one
  exception is a torn record cut off on open: it was never durable, so never sent, and
  its seq is given again.) :meth:`ensure_next_seq` lets the caller push it further (the
  agent does, from the watermark ZooKeeper holds, should the directory have been lost).

Metrics (in the ``metrics`` dict given): ``wal_bytes``, ``wal_groups``, ``wal_events``
(live, not yet acknowledged), ``fsyncs``, ``wal_corrupt``, ``wal_truncated_bytes``.
Thread-safe; one writer per directory (an exclusive ``flock``).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"FWAL"            # a group
MAGIC_POS = b"FWAX"        # a group with a source position
MAGIC_MARK = b"FWAP"       # a source position alone
HEAD = struct.Struct(">4sQIII")
TRAILER = struct.Struct(">II")
MAX_RECORD = 1 << 30            # a length above this is corruption, not data
SEGMENT_BYTES = 64 << 20
_PREFIX, _SUFFIX = "seg-", ".wal"
META = "meta.json"


@dataclass(slots=True)
class Group:
    """One live record: where it is and what the sender needs to know about it."""

    seq: int
    count: int
    length: int
    crc: int
    segment: "_Segment"
    offset: int      # of the payload in the segment file
    size: int = 0    # of the whole record


class _Segment:
    __slots__ = ("path", "first_seq", "fd", "size", "live", "sealed", "created")

    def __init__(self, path: Path, first_seq: int, fd: int, size: int, created: float):
        self.path = path
        self.first_seq = first_seq
        self.fd = fd
        self.size = size
        self.live: set[int] = set()
        self.sealed = False
        self.created = created


class WalError(OSError):
    """The log could not be written (disk full, I/O error...)."""


def _segment_name(first_seq: int) -> str:
    return f"{_PREFIX}{first_seq:020d}{_SUFFIX}"


class WriteAheadLog:
    """A write-ahead log in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path | str, metrics: dict | None = None,
                 segment_bytes: int = SEGMENT_BYTES, clock=None):
        self.dir = Path(directory)
        self.metrics = metrics if metrics is not None else {}
        self.segment_bytes = segment_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._groups: dict[int, Group] = {}
        self._next_seq = 1
        self._stored_next = 0          # the next seq meta.json holds
        self._pos_no = 0               # number of the newest position
        self.position: dict | None = None
        self._events = 0
        self._bytes = 0
        self._opened = False
        self._lock_fd: int | None = None
        for k in ("wal_bytes", "wal_groups", "wal_events", "fsyncs", "wal_corrupt",
                  "wal_truncated_bytes"):
            self.metrics.setdefault(k, 0)

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        return self._clock.monotonic() if self._clock is not None else 0.0

    def _add(self, name: str, n: int) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + n

    def _gauges(self) -> None:
        self.metrics["wal_bytes"] = self._bytes
        self.metrics["wal_groups"] = len(self._groups)
        self.metrics["wal_events"] = self._events

    def _take_position(self, n: int, position) -> None:
        if n > self._pos_no:
            self._pos_no = n
            self.position = position

    # ------------------------------------------------------------------ open / read back

    def open(self) -> list[Group]:
        """Read the log back; returns the live groups in seq order (and sets
        :attr:`position`). A torn or corrupt record ends its segment and is cut off."""
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise WalError(f"the WAL in {self.dir} is in use by another writer")
            self._lock_fd = fd
            self._read_meta()
            next_seq = max(1, self._stored_next)
            names = sorted(p for p in self.dir.iterdir()
                           if p.name.startswith(_PREFIX) and p.name.endswith(_SUFFIX))
            last_seq = 0
            kept: list[_Segment] = []
            for i, path in enumerate(names):
                try:
                    first = int(path.name[len(_PREFIX):-len(_SUFFIX)])
                except ValueError:
                    log.warning("ignoring a file in the WAL directory",
                                extra={"file": str(path)})
                    continue
                next_seq = max(next_seq, first)
                seg, last_seq = self._read_segment(path, first, last_seq,
                                                   last=(i == len(names) - 1))
                next_seq = max(next_seq, last_seq + 1)
                kept.append(seg)
            self._next_seq = next_seq
            for i, seg in enumerate(kept):
                last = i == len(kept) - 1
                if seg.live or (last and seg.size == 0):
                    seg.sealed = not last
                    self._segments.append(seg)   # an empty last one keeps its first seq
                else:
                    self._drop_segment_file(seg)
            self._opened = True
            self._gauges()
            return [self._groups[s] for s in sorted(self._groups)]

    def _read_meta(self) -> None:
        for p in self.dir.glob(f"{META}.tmp"):
            p.unlink(missing_ok=True)
        try:
            meta = json.loads((self.dir / META).read_text())
            self._stored_next = int(meta.get("next_seq", 0))
            self._take_position(int(meta.get("pos_no", 0)), meta.get("position"))
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError):
            log.error("the WAL's meta.json is unreadable; deriving the next seq from the "
                      "segments", extra={"dir": str(self.dir)})

    def _read_segment(self, path: Path, first: int, last_seq: int, last: bool):
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        size = os.fstat(fd).st_size
        seg = _Segment(path, first, fd, size, self._now())
        off = 0
        bad = None
        with open(fd, "rb", closefd=False, buffering=0) as f:
            f.seek(0)
            while off < size:
                head = f.read(HEAD.size)
                if len(head) < HEAD.size:
                    bad = "torn record header"
                    break
                magic, seq, count, length, crc = HEAD.unpack(head)
                if magic not in (MAGIC, MAGIC_POS, MAGIC_MARK):
                    bad = "bad record magic"
                    break
                if length > MAX_RECORD or off + HEAD.size + length > size:
                    bad = "record longer than the file (torn write)"
                    break
                if magic == MAGIC_MARK:
                    if seq < last_seq or count or length:
                        bad = "position record out of order"
                        break
                elif seq <= last_seq or seq < first:
                    bad = f"record seq {seq} out of order"
                    break
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    bad = "record checksum mismatch"
                    break
                rec_len = HEAD.size + length
                position = None
                if magic != MAGIC:
                    t = f.read(TRAILER.size)
                    if len(t) < TRAILER.size:
                        bad = "torn record trailer"
                        break
                    tlen, tcrc = TRAILER.unpack(t)
                    if tlen > MAX_RECORD or off + rec_len + TRAILER.size + tlen > size:
                        bad = "record trailer longer than the file (torn write)"
                        break
                    tdata = f.read(tlen)
                    if zlib.crc32(tdata) != tcrc:
                        bad = "record trailer checksum mismatch"
                        break
                    try:
                        position = json.loads(tdata)
                    except ValueError:
                        bad = "record trailer unreadable"
                        break
                    rec_len += TRAILER.size + tlen
                    self._take_position(int(position.get("n", 0)), position.get("p"))
                if magic != MAGIC_MARK:
                    g = Group(seq, count, length, crc, seg, off + HEAD.size, rec_len)
                    self._groups[seq] = g
                    seg.live.add(seq)
                    self._events += count
                    self._bytes += rec_len
                    last_seq = seq
                off += rec_len
        if bad is not None:
            cut = size - off
            self._add("wal_corrupt", 1)
            self._add("wal_truncated_bytes", cut)
            msg = ("the WAL ends with a torn record (a crash while writing); it is cut off "
                   "and not replayed" if last else
                   "the WAL holds a corrupt record before its end (disk corruption); the "
                   "rest of that segment is cut off and lost")
            (log.warning if last else log.error)(
                msg, extra={"segment": str(path), "offset": off, "bytes_cut": cut,
                            "reason": bad})
            os.ftruncate(fd, off)
            os.fsync(fd)
            seg.size = off
        return seg, last_seq

    # ------------------------------------------------------------------ writing

    def _new_segment(self) -> _Segment:
        path = self.dir / _segment_name(self._next_seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        fsync_dir(self.dir)
        seg = _Segment(path, self._next_seq, fd, 0, self._now())
        self._segments.append(seg)
        return seg

    def _writable(self) -> _Segment:
        seg = self._segments[-1] if self._segments else None
        if seg is None or seg.sealed or seg.size >= self.segment_bytes:
            if seg is not None and not seg.sealed:
                seg.sealed = True
                if not seg.live:
                    self._delete_segment(seg)
            seg = self._new_segment()
        return seg

    def _trailer(self, position) -> tuple[bytes, int]:
        n = self._pos_no + 1
        data = json.dumps({"n": n, "p": position}, separators=(",", ":")).encode()
        return TRAILER.pack(len(data), zlib.crc32(data)) + data, n

    def _write(self, seg: _Segment, bufs: list, total: int) -> None:
        start = seg.size
        try:
            written = 0
            while written < total:
                n = os.writev(seg.fd, bufs) if written == 0 else \
                    os.write(seg.fd, b"".join(bufs)[written:])
                if n <= 0:
                    raise OSError("short write")
                written += n
            os.fdatasync(seg.fd)
        except OSError as exc:
            # leave no partial record behind: the next append would follow garbage
            try:
                os.ftruncate(seg.fd, start)
            except OSError:
                seg.sealed = True
            raise WalError(f"cannot write the WAL in {self.dir}: {exc}") from exc
        self._add("fsyncs", 1)
        seg.size = start + total

    def append(self, items: list[tuple[bytes, int]], position: dict | None = None
               ) -> list[Group]:
        """Write ``(payload, event count)`` records, one seq each (``position`` goes with
        the last one, in the same record), and make them durable with one fdatasync.
        Returns their groups. Raises :class:`WalError` (nothing of this call is kept) if
        the disk refuses."""
        if not items:
            return []
        with self._lock:
            if not self._opened:
                raise WalError("the WAL is not open")
            seg = self._writable()
            seq = self._next_seq
            bufs, out = [], []
            off = seg.size
            pos_no = 0
            for i, (payload, count) in enumerate(items):
                crc = zlib.crc32(payload)
                trailer = b""
                if position is not None and i == len(items) - 1:
                    trailer, pos_no = self._trailer(position)
                bufs.append(HEAD.pack(MAGIC_POS if trailer else MAGIC, seq, count,
                                      len(payload), crc))
                bufs.append(payload)
                if trailer:
                    bufs.append(trailer)
                size = HEAD.size + len(payload) + len(trailer)
                out.append(Group(seq, count, len(payload), crc, seg, off + HEAD.size, size))
                off += size
                seq += 1
            total = off - seg.size
            self._write(seg, bufs, total)
            self._next_seq = seq
            if pos_no:
                self._take_position(pos_no, position)
            for g in out:
                self._groups[g.seq] = g
                seg.live.add(g.seq)
                self._events += g.count
            self._bytes += total
            self._gauges()
            return out

    def write_position(self, position: dict) -> None:
        """Record a source position alone (its events are in groups written before)."""
        with self._lock:
            if not self._opened:
                raise WalError("the WAL is not open")
            seg = self._writable()
            trailer, n = self._trailer(position)
            head = HEAD.pack(MAGIC_MARK, self._next_seq - 1, 0, 0, 0)
            self._write(seg, [head, trailer], len(head) + len(trailer))
            self._take_position(n, position)

    def read(self, seq: int) -> bytes | None:
        """The payload of live group ``seq``, or None once it was acknowledged."""
        with self._lock:
            g = self._groups.get(seq)
            if g is None:
                return None
            data = os.pread(g.segment.fd, g.length, g.offset)
        if len(data) != g.length:
            raise WalError(f"the WAL segment {g.segment.path} is shorter than recorded")
        return data

    def get(self, seq: int) -> Group | None:
        with self._lock:
            return self._groups.get(seq)

    # ------------------------------------------------------------------ acknowledgement

    def ack(self, seqs) -> list[Group]:
        """Forget the live groups among ``seqs``; returns them. Segments left without a
        live group are deleted."""
        done = []
        with self._lock:
            emptied = []
            for s in seqs:
                g = self._groups.pop(s, None)
                if g is None:
                    continue
                done.append(g)
                g.segment.live.discard(s)
                self._events -= g.count
                self._bytes -= g.size
                if not g.segment.live:
                    emptied.append(g.segment)
            for seg in emptied:
                if seg in self._segments and not seg.live:
                    seg.sealed = True
                    self._delete_segment(seg)
            self._gauges()
        return done

    def _delete_segment(self, seg: _Segment) -> None:
        self._segments.remove(seg)
        self._drop_segment_file(seg)

    def _drop_segment_file(self, seg: _Segment) -> None:
        # Its records may hold the next seq's lower bound and the newest position:
        # meta.json takes them over first.
        self._write_meta()
        try:
            os.close(seg.fd)
        except OSError:
            pass
        try:
            seg.path.unlink()
        except FileNotFoundError:
            pass

    def _write_meta(self) -> None:
        tmp = self.dir / f"{META}.tmp"
        data = json.dumps({"next_seq": self._next_seq, "pos_no": self._pos_no,
                           "position": self.position}, separators=(",", ":"))
        with open(tmp, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / META)
        fsync_dir(self.dir)
        self._stored_next = self._next_seq

    def seal_older_than(self, age: float) -> None:
        """Seal the segment being written if it holds data and is older than ``age``
        seconds, so that it can be deleted once acknowledged (``maxMs``)."""
        with self._lock:
            seg = self._segments[-1] if self._segments else None
            if seg is not None and not seg.sealed and seg.size and \
                    self._now() - seg.created >= age:
                seg.sealed = True
                if not seg.live:
                    self._delete_segment(seg)

    # ------------------------------------------------------------------ queries

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def is_new(self) -> bool:
        """Nothing was ever written here (no group, no meta.json)."""
        return self._next_seq == 1 and self._stored_next == 0 and not self._groups

    def ensure_next_seq(self, n: int) -> None:
        """Never give a seq below ``n`` from now on (recorded durably)."""
        with self._lock:
            if n > self._next_seq:
                self._next_seq = n
                self._write_meta()

    def lowest_live(self) -> int:
        """The lowest seq not yet acknowledged (``next_seq`` if none)."""
        with self._lock:
            return min(self._groups) if self._groups else self._next_seq

    def live_seqs(self) -> list[int]:
        with self._lock:
            return sorted(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def close(self) -> None:
        with self._lock:
            for seg in self._segments:
                try:
                    os.close(seg.fd)
                except OSError:
                    pass
            self._segments = []
            self._groups = {}
            self._opened = False
            if self._lock_fd is not None:
                os.close(self._lock_fd)     # releases the flock
                self._lock_fd = None
