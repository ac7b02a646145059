"""The agent's write-ahead log: numbered groups of events, and the source position that
goes with them, durable before they are sent or committed.

Layout: a durable :mod:`node.segment_log` (fdatasync per append) of segment files
``seg-<first seq>.wal`` (20 digits, so names sort in seq order), with ``meta.json``. Each
record's fields are ``seq:u64 count:u32``: ``FWAL`` is a group; ``FWAX`` a group with a
trailer carrying the source position recorded with it (JSON ``{"n": position number, "p":
checkpoint updates}``); ``FWAP`` a position alone (no payload; its seq repeats the last
group's). The payload is a :mod:`node.codec` encoding, possibly gzip-compressed -- the log
does not look inside it.

Guarantees:

* **Group commit.** :meth:`WriteAheadLog.append` writes its records with one ``write`` and
  makes them durable with one ``fdatasync`` before returning; a record is never exposed
  (read, sent) before that.
* **A group and its source position are one record**: a crash keeps both or neither, so a
  restarted agent neither loses the group nor reads its events from the source again.
  :attr:`position` is, after :meth:`open`, the newest position the log holds (from a
  record or from ``meta.json``); the agent gives it back to the checkpoint store before
  its source opens.
* **Read back on open.** Every record is checked (framing, CRCs, seq order); the first bad
  one ends its segment, which is cut off there as :mod:`node.segment_log` says (a torn tail
  after a crash, else disk corruption), counted in ``wal_corrupt``/``wal_truncated_bytes``
  and never returned.
* **Deletion by acknowledgement.** :meth:`ack` forgets groups; a segment whose groups are
  all acknowledged is deleted (the segment being written is sealed first, so the next
  append starts a fresh one). Before a segment is deleted, ``meta.json`` records the next
  seq and the newest position (fsynced), rewritten in place (a state file of the segment
  log): deleting segments needs no new space, so acknowledgements free a full disk. For
  that, ``meta.json`` exists and has room for a record's position before the record is
  written: an append whose position outgrows it grows it first (with room to spare),
  which needs space -- :class:`~node.segment_log.DiskFull` like the record itself
  (nothing written). A deletion that fails all the same (an I/O error; a log written by
  an older version, whose ``meta.json`` is too small, on a full disk) keeps the segment
  due: every later :meth:`ack` and :meth:`trim` tries again.
* **A full disk at open** is no error: reading the log back needs no space. Should
  ``meta.json`` be missing and the disk full, it is created by the first append (which
  waits for space like any write).
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

import json
import logging
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from .limits import RateLimitedLog
from .metrics import Histogram
from .segment_log import Framing, LogError, Segment, SegmentLog, disk_full

log = logging.getLogger(__name__)
_quiet = RateLimitedLog(log)

MAGIC = b"FWAL"            # a group
MAGIC_POS = b"FWAX"        # a group with a source position
MAGIC_MARK = b"FWAP"       # a source position alone
FRAMING = Framing("QI", {MAGIC: False, MAGIC_POS: True, MAGIC_MARK: True})   # seq, count
HEAD = FRAMING.head
SEGMENT_BYTES = 64 << 20
META = "meta.json"
# meta.json beside a record's trailer ({"n":..,"p":position}): its other keys and two
# numbers of up to 20 digits
META_OVERHEAD = 80

WalError = LogError        # the log could not be opened or written (in use, disk full...)


@dataclass(slots=True)
class Group:
    """One live record: where it is and what the sender needs to know about it."""

    seq: int
    count: int
    length: int
    crc: int
    segment: Segment   # whose ``live`` holds the seqs of its groups not acknowledged
    offset: int        # of the payload in the segment file
    size: int          # of the whole record


class WriteAheadLog:
    """A write-ahead log in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path | str, metrics: dict | None = None,
                 segment_bytes: int = SEGMENT_BYTES, clock=None,
                 sync_seconds: Histogram | None = None):
        """``sync_seconds``: where the time of each durable write (write and fsync) is
        observed."""
        self.dir = Path(directory)
        self.metrics = metrics if metrics is not None else {}
        self.sync_seconds = sync_seconds if sync_seconds is not None else Histogram()
        self.log = SegmentLog(self.dir, FRAMING, what="the WAL", suffix=".wal", digits=20,
                              durable=True, segment_bytes=segment_bytes, log=log,
                              clock=clock)
        self._lock = threading.RLock()
        self._groups: dict[int, Group] = {}
        self._next_seq = 1
        self._stored_next = 0          # the next seq meta.json holds
        self._had_meta = False         # meta.json existed at open
        self._meta_missing = False     # not yet created (the disk was full at open)
        self._due: list[Segment] = []  # emptied segments whose deletion is to be done
        self._seg_pos: dict[int, int] = {}   # segment number -> newest position number in it
        self._meta_pos = 0             # the position number meta.json holds
        self._pos_no = 0               # number of the newest position
        self.position: dict | None = None
        self._events = 0
        self._bytes = 0
        self._opened = False
        for k in ("wal_bytes", "wal_groups", "wal_events", "fsyncs", "wal_corrupt",
                  "wal_truncated_bytes"):
            self.metrics.setdefault(k, 0)

    # ------------------------------------------------------------------ helpers

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
            self._groups, self._events, self._bytes = {}, 0, 0
            self._pos_no, self.position, self._stored_next, self._due = 0, None, 0, []
            self._seg_pos, self._meta_pos = {}, 0
            try:
                return self._open()
            except BaseException:
                self.log.close()
                raise

    def _open(self) -> list[Group]:
        segments = self.log.open()
        self._read_meta()
        next_seq = max(1, self._stored_next)
        last_seq = 0
        for i, seg in enumerate(segments):
            next_seq = max(next_seq, seg.number)
            last_seq = self._read_segment(seg, last_seq, last=(i == len(segments) - 1))
            next_seq = max(next_seq, last_seq + 1)
        self._add("wal_corrupt", self.log.corrupt)
        self._add("wal_truncated_bytes", self.log.truncated_bytes)
        self._next_seq = next_seq
        self._meta_missing = not self._had_meta
        room = self._room(self.position)
        if self._meta_missing or room > self.log.state_room(META):
            # allocated now: rewriting it needs no new space
            try:
                self._write_meta(room)
            except LogError as exc:
                if not disk_full(exc):
                    raise
                log.warning("the WAL in %s: %s cannot be written yet (the disk is "
                            "full); the next append waits for space to write it", self.dir,
                            META, extra={"dir": str(self.dir)})
        for i, seg in enumerate(segments):
            last = i == len(segments) - 1
            if seg.live or (last and seg.size == 0):
                seg.sealed = not last     # an empty last one keeps its first seq
            else:
                self._due.append(seg)
        self.trim()
        self._opened = True
        self._gauges()
        return [self._groups[s] for s in sorted(self._groups)]

    def _read_meta(self) -> None:
        (self.dir / f"{META}.tmp").unlink(missing_ok=True)     # a creation cut short
        text = self.log.read_state(META)
        self._had_meta = text is not None
        if text is None:
            return
        try:
            meta = json.loads(text)
            next_seq, pos_no = meta.get("next_seq", 0), meta.get("pos_no", 0)
            # whole numbers only: int() of a float, a bool or a numeric string would pass
            # for one, and Infinity raises OverflowError
            for name, v in (("next_seq", next_seq), ("pos_no", pos_no)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise TypeError(f"{name} is {v!r}, not a whole number")
            if not isinstance(meta.get("position"), (dict, type(None))):
                raise TypeError("the position is not an object")
            self._stored_next, self._meta_pos = next_seq, pos_no
            self._take_position(self._meta_pos, meta.get("position"))
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            self._stored_next = self._meta_pos = self._pos_no = 0
            self.position = None
            self._add("corrupt_state", 1)
            log.error("the WAL's %s is unreadable (corrupt: %s); deriving the next seq and "
                      "the position from the segments", META, exc,
                      extra={"file": str(self.dir / META), "error": str(exc)})

    def _read_segment(self, seg: Segment, last_seq: int, last: bool) -> int:
        """Take the groups and positions of ``seg``; returns the last seq read."""
        def accept(rec) -> str | None:
            nonlocal last_seq
            seq, count = rec.fields
            if rec.magic == MAGIC_MARK:
                if seq < last_seq or count or rec.length:
                    return "position record out of order"
            elif seq <= last_seq or seq < seg.number:
                return f"record seq {seq} out of order"
            if rec.trailer is not None:
                try:
                    position = json.loads(rec.trailer)
                    self._take_position(int(position.get("n", 0)), position.get("p"))
                    self._seg_pos[seg.number] = int(position.get("n", 0))
                except (ValueError, TypeError, AttributeError, OverflowError):
                    return "record trailer unreadable"
            if rec.magic != MAGIC_MARK:
                self._groups[seq] = Group(seq, count, rec.length, rec.crc, seg,
                                          rec.offset + HEAD.size, rec.size)
                seg.live.add(seq)
                self._events += count
                self._bytes += rec.size
                last_seq = seq
            return None
        self.log.scan(seg, accept, last=last)
        return last_seq

    # ------------------------------------------------------------------ writing

    def _writable(self, room: int = 0) -> Segment:
        """The segment to append a record to whose position takes ``room`` bytes;
        ``meta.json`` is made ready for it first (DiskFull: nothing was written)."""
        if self._meta_missing or room > self.log.state_room(META):
            self._write_meta(room)
        prev = self.log.segments[-1] if self.log.segments else None
        seg = self.log.writable(self._next_seq)
        if prev is not None and prev is not seg and not prev.live:
            self._due.append(prev)        # sealed holding positions only
            self.trim()
        return seg

    @staticmethod
    def _room(position) -> int:
        """Bytes ``meta.json`` needs to hold ``position``."""
        return len(json.dumps(position, separators=(",", ":"))) + META_OVERHEAD

    def _trailer(self, position) -> tuple[bytes, int]:
        n = self._pos_no + 1
        return json.dumps({"n": n, "p": position}, separators=(",", ":")).encode(), n

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
            seg = self._writable(0 if position is None else self._room(position))
            seq = self._next_seq
            bufs, out = [], []
            off = seg.size
            pos_no = 0
            for i, (payload, count) in enumerate(items):
                trailer = None
                if position is not None and i == len(items) - 1:
                    trailer, pos_no = self._trailer(position)
                crc = zlib.crc32(payload)
                rec = FRAMING.pack(MAGIC if trailer is None else MAGIC_POS, (seq, count),
                                   payload, trailer, crc)
                size = sum(map(len, rec))
                bufs += rec
                out.append(Group(seq, count, len(payload), crc, seg, off + HEAD.size, size))
                off += size
                seq += 1
            total = off - seg.size
            with self.sync_seconds.time():
                self.log.write(seg, bufs, total)
            self._add("fsyncs", 1)
            self._next_seq = seq
            if pos_no:
                self._take_position(pos_no, position)
                self._seg_pos[seg.number] = pos_no
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
            seg = self._writable(self._room(position))
            trailer, n = self._trailer(position)
            rec = FRAMING.pack(MAGIC_MARK, (self._next_seq - 1, 0), b"", trailer)
            with self.sync_seconds.time():
                self.log.write(seg, rec, sum(map(len, rec)))
            self._add("fsyncs", 1)
            self._take_position(n, position)
            self._seg_pos[seg.number] = n

    def read(self, seq: int) -> bytes | None:
        """The payload of live group ``seq``, or None once it was acknowledged."""
        with self._lock:
            g = self._groups.get(seq)
            if g is None:
                return None
            data = os.pread(self.log.fd(g.segment), g.length, g.offset)
        if len(data) != g.length:
            raise WalError(f"the WAL segment {g.segment.path} is shorter than recorded")
        return data

    def get(self, seq: int) -> Group | None:
        with self._lock:
            return self._groups.get(seq)

    # ------------------------------------------------------------------ acknowledgement

    def ack(self, seqs) -> list[Group]:
        """Forget the live groups among ``seqs``; returns them. Segments left without a
        live group are deleted (see :meth:`trim`: a failure to delete is not raised)."""
        done = []
        with self._lock:
            for s in seqs:
                g = self._groups.pop(s, None)
                if g is None:
                    continue
                done.append(g)
                g.segment.live.discard(s)
                self._events -= g.count
                self._bytes -= g.size
                if not g.segment.live:
                    g.segment.sealed = True      # the next append starts a new one
                    self._due.append(g.segment)
            self.trim()
            self._gauges()
        return done

    def trim(self) -> bool:
        """Delete the segments due (emptied by acknowledgements, or holding positions
        only); True if none is left. Their records may hold the next seq's lower bound and
        the newest position: ``meta.json`` takes them over first. On failure the segments
        stay due (a warning, at most every 10 s) for the next call."""
        with self._lock:
            due = [s for s in dict.fromkeys(self._due)
                   if s in self.log.segments and not s.live]
            self._due = due
            if not due:
                return True
            try:
                try:
                    self._write_meta()
                except LogError as exc:
                    if not disk_full(exc):
                        raise
                    self._trim_without_meta()
                    raise
                while self._due:
                    self._remove(self._due[0])
            except OSError as exc:
                _quiet.warning("trim", "the WAL in %s cannot delete %d acknowledged "
                               "segments yet (%s); trying again later", self.dir,
                               len(self._due), exc)
                return False
            return True

    def _trim_without_meta(self) -> None:
        """``meta.json`` cannot be written (it must grow, or be created, and the disk is
        full): delete the due segments that need it not. The newest segment stays, and
        keeps the seq bound of those before it (its number, even empty, is past their
        seqs); the segment holding the newest position stays, unless ``meta.json`` holds
        it. The space freed lets ``meta.json`` grow at the next try."""
        keep = {self.log.segments[-1]}
        if self._meta_pos < self._pos_no:
            holder = [s for s in self.log.segments
                      if self._seg_pos.get(s.number, 0) >= self._pos_no]
            if not holder:
                return
            keep.add(holder[0])
        for seg in [s for s in self._due if s not in keep]:
            self._remove(seg)

    def _remove(self, seg: Segment) -> None:
        self.log.remove(seg)
        self._due.remove(seg)
        self._seg_pos.pop(seg.number, None)

    def _write_meta(self, room: int = 0) -> None:
        self.log.write_state(META, json.dumps(
            {"next_seq": self._next_seq, "pos_no": self._pos_no, "position": self.position},
            separators=(",", ":")), room)
        self._stored_next, self._meta_pos = self._next_seq, self._pos_no
        self._meta_missing = False

    def seal_older_than(self, age: float) -> None:
        """Seal the segment being written if it holds data and is older than ``age``
        seconds, so that it can be deleted once acknowledged (``maxMs``); then
        :meth:`trim` (the owner calls this periodically: a failed deletion is retried)."""
        with self._lock:
            seg = self.log.segments[-1] if self.log.segments else None
            if seg is not None and not seg.sealed and seg.size and \
                    self.log.now() - seg.created >= age:
                seg.sealed = True
                if not seg.live:
                    self._due.append(seg)
            self.trim()

    # ------------------------------------------------------------------ queries

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def is_new(self) -> bool:
        """Nothing was ever written here (no group, no meta.json)."""
        return self._next_seq == 1 and not self._had_meta and not self._groups

    def ensure_next_seq(self, n: int) -> None:
        """Never give a seq below ``n`` from now on (recorded durably)."""
        with self._lock:
            if n > self._next_seq:
                self._next_seq = n
                try:
                    self._write_meta()
                except LogError as exc:
                    # only a missing meta.json needs space: the first append writes it,
                    # before any seq is given
                    if not (self._meta_missing and disk_full(exc)):
                        raise

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
            self.log.close()
            self._groups = {}
            self._opened = False
