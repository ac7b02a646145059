"""``diskFailover([maxMs=60000[, checkMs=1000]])``: spool to local disk when the inner sink
fails, replay in the background.

* While the spool is empty, an append goes straight to the inner sink. When that raises
  SinkError (or the inner sink could not be opened), the batch is written to the spool
  instead, and from then on every append goes to the spool too (so events keep their
  order) until the spool is empty again.
* A replay thread sends the spooled batches to the inner sink in order, one record at a
  time; after a failure it waits ``checkMs``, doubling up to ``maxMs``. A record is removed
  from the spool only once the inner sink took it.
* The spool lives in ``<node data>/dfo/<name>`` (``name="spool"``; a second diskFailover of
  the same logical node gets ``spool-2``...): segment files of length-prefixed,
  CRC-checked records, each record one batch in the :mod:`node.codec` encoding. Writes are
  flushed to the OS, not fsynced: nothing is lost while the process lives and its disk
  survives (a SIGKILL loses nothing; a power cut may). After a restart, what was left in
  the spool is replayed first. The replay position is kept in ``replay.pos``; a crash
  between a send and its position update resends that one record (at-least-once).
* A record that fails its checks (torn by a machine crash) is reported, counted in
  ``corrupt`` and the rest of its segment skipped; never replayed as garbage.
* ``when_durable``: a checkpoint is committed once its events were sent or spooled (the
  spool is durable enough for this mode); if every event since the previous checkpoint
  went straight to the inner sink, the inner sink decides.

An inner sink with ``append_encoded(data, count)`` (the agent collector chain) receives the
spooled encoding as it is, without decoding. Counters: ``events_out`` (sent directly),
``spooled``, ``replayed``, ``spool_bytes`` (waiting in the spool), ``send_errors``,
``corrupt``.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

from ..checkpoint import Checkpoint
from ..codec import decode_events, encode_events
from ..component import Decorator, NodeContext, Sink
from ..errors import SinkError
from ..event import Event
from ..registry import decorator
from .insistent_open import Backoff

log = logging.getLogger(__name__)

_REC = struct.Struct(">4sIII")       # magic, count, length, crc32(payload)
_MAGIC = b"DFO1"
SEGMENT_BYTES = 16 << 20             # start a new segment file past this size
_SEG_PREFIX, _SEG_SUFFIX = "seg-", ".dfo"
_POS_FILE = "replay.pos"
CLOSE_WAIT = 2.0                     # seconds close waits for a replay send to finish


class SpoolCorrupt(Exception):
    pass


class Spool:
    """An on-disk FIFO of encoded batches (see the module docstring). Not thread-safe:
    the owner serialises calls."""

    def __init__(self, directory: Path):
        self.dir = directory
        self._lock_file = None
        self._segments: list[int] = []   # segment numbers on disk, oldest first
        self._wfile = None               # the segment being written (the last one)
        self._wseg = -1
        self._wsize = 0
        self._rseg = -1                  # position of the next record to replay
        self._roff = 0
        self._rfile = None
        self._rfile_seg = -1
        self.pending_bytes = 0           # bytes in the spool not yet replayed
        self.pending_records = 0
        self.corrupt = 0

    # -------------------------------------------------------------- opening

    @staticmethod
    def claim(base: Path, name: str) -> tuple["Spool", Path]:
        """Lock the first free directory ``base/name``, ``base/name-2``, ... and open it."""
        k = 1
        while True:
            d = base / (name if k == 1 else f"{name}-{k}")
            d.mkdir(parents=True, exist_ok=True)
            f = open(d / "lock", "a+b")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                k += 1
                continue
            spool = Spool(d)
            spool._lock_file = f
            try:
                spool._load()
            except Exception:
                spool.close()
                raise
            return spool, d

    def _active(self, seg: int) -> bool:
        """True if ``seg`` is the segment being written (more records may come)."""
        return self._wfile is not None and seg == self._wseg

    def _seg_path(self, n: int) -> Path:
        return self.dir / f"{_SEG_PREFIX}{n:012d}{_SEG_SUFFIX}"

    def _load(self) -> None:
        segs = []
        for p in self.dir.iterdir():
            name = p.name
            if name.startswith(_SEG_PREFIX) and name.endswith(_SEG_SUFFIX):
                try:
                    segs.append(int(name[len(_SEG_PREFIX):-len(_SEG_SUFFIX)]))
                except ValueError:
                    continue
        segs.sort()
        rseg, roff = -1, 0
        try:
            pos = json.loads((self.dir / _POS_FILE).read_text())
            rseg, roff = int(pos["segment"]), int(pos["offset"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            pass
        for n in [s for s in segs if s < rseg]:   # fully replayed before the restart
            self._seg_path(n).unlink(missing_ok=True)
        segs = [s for s in segs if s >= rseg]
        self._segments = segs
        # appends after a restart go to a fresh segment (never after a possibly torn tail)
        self._wseg = segs[-1] if segs else -1
        if segs:
            if segs[0] != rseg:
                rseg, roff = segs[0], 0
            self._rseg, self._roff = rseg, roff
            self._count_pending()
            if self.pending_records == 0:
                self._reset()

    def _count_pending(self) -> None:
        """Scan the unreplayed records (headers only) to count them. A finished segment
        whose end is not a record boundary (torn by a crash) is reported and truncated
        there; a record whose checksum is wrong is caught by :meth:`peek`."""
        total = records = 0
        for n in self._segments:
            off = self._roff if n == self._rseg else 0
            path = self._seg_path(n)
            size = path.stat().st_size
            with open(path, "rb") as f:
                while off + _REC.size <= size:
                    f.seek(off)
                    magic, _count, length, _crc = _REC.unpack(f.read(_REC.size))
                    if magic != _MAGIC or off + _REC.size + length > size:
                        break
                    off += _REC.size + length
                    total += _REC.size + length
                    records += 1
            if off < size and not self._active(n):
                self.corrupt += 1
                log.error("diskFailover: %s is damaged at offset %d (%d bytes that are "
                          "not a whole record); truncated there", path, off, size - off)
                os.truncate(path, off)
        self.pending_bytes = total
        self.pending_records = records

    # -------------------------------------------------------------- writing

    @property
    def empty(self) -> bool:
        return self.pending_records == 0

    def write(self, data: bytes, count: int) -> None:
        """Append one record and flush it to the OS. OSError passes through."""
        if self._wfile is None or self._wsize >= SEGMENT_BYTES:
            self._rotate()
        rec = _REC.pack(_MAGIC, count, len(data), zlib.crc32(data)) + data
        self._wfile.write(rec)
        self._wfile.flush()
        self._wsize += len(rec)
        self.pending_bytes += len(rec)
        self.pending_records += 1

    def _rotate(self) -> None:
        if self._wfile is not None:
            self._wfile.close()
        n = self._wseg + 1
        f = open(self._seg_path(n), "ab")
        self._wfile, self._wseg, self._wsize = f, n, 0
        self._segments.append(n)
        if self._rseg < 0 or self.pending_records == 0:
            self._set_read(n, 0)

    # -------------------------------------------------------------- replaying

    def _set_read(self, seg: int, off: int) -> None:
        self._rseg, self._roff = seg, off

    def peek(self) -> tuple[bytes, int] | None:
        """The oldest unreplayed record ``(data, count)``, or None if there is none.
        A record failing its checksum is dropped; damaged framing drops the rest of its
        segment; both are reported and counted in ``corrupt``."""
        while self.pending_records > 0:
            path = self._seg_path(self._rseg)
            if self._rfile_seg != self._rseg:
                if self._rfile is not None:
                    self._rfile.close()
                self._rfile = open(path, "rb")
                self._rfile_seg = self._rseg
            f = self._rfile
            f.seek(self._roff)
            head = f.read(_REC.size)
            if len(head) == _REC.size:
                magic, count, length, crc = _REC.unpack(head)
                if magic == _MAGIC:
                    data = f.read(length)
                    if len(data) == length:
                        if zlib.crc32(data) == crc:
                            return data, count
                        # framing intact, payload damaged: drop just this record
                        self.corrupt += 1
                        log.error("diskFailover: record at offset %d of %s fails its "
                                  "checksum; %d events dropped", self._roff, path, count)
                        self.advance(length)
                        continue
            if not head and not self._active(self._rseg):
                self._next_segment()          # clean end of a finished segment
                continue
            # a torn or damaged record: skip the rest of this segment
            self.corrupt += 1
            log.error("diskFailover: corrupt record in %s at offset %d; skipping the rest "
                      "of that segment", path, self._roff)
            self._count_after_skip()
        return None

    def _count_after_skip(self) -> None:
        if self._active(self._rseg):
            # cannot write after garbage: close it, later writes start a new segment
            self._wfile.close()
            self._wfile = None
        self._next_segment()
        self._count_pending()

    def _next_segment(self) -> None:
        done = self._rseg
        self._segments = [s for s in self._segments if s != done]
        if self._rfile_seg == done and self._rfile is not None:
            self._rfile.close()
            self._rfile, self._rfile_seg = None, -1
        if not self._active(done):
            self._seg_path(done).unlink(missing_ok=True)
        if self._segments:
            self._set_read(self._segments[0], 0)
        else:
            self._set_read(-1, 0)
        self._save_pos()

    def advance(self, data_len: int) -> None:
        """Drop the record last returned by :meth:`peek` (it was delivered)."""
        size = _REC.size + data_len
        self._roff += size
        self.pending_bytes -= size
        self.pending_records -= 1
        if self.pending_records == 0:
            self._reset()
            return
        if (not self._active(self._rseg)
                and self._roff >= self._seg_path(self._rseg).stat().st_size):
            self._next_segment()
        else:
            self._save_pos()

    def _reset(self) -> None:
        """Everything was replayed: delete every segment and start afresh."""
        for f in (self._wfile, self._rfile):
            if f is not None:
                f.close()
        self._wfile = self._rfile = None
        self._rfile_seg = -1
        for n in self._segments:
            self._seg_path(n).unlink(missing_ok=True)
        self._segments = []
        self._wsize = 0
        self._set_read(-1, 0)
        self.pending_bytes = 0
        (self.dir / _POS_FILE).unlink(missing_ok=True)

    def _save_pos(self) -> None:
        tmp = self.dir / (_POS_FILE + ".tmp")
        tmp.write_text(json.dumps({"segment": self._rseg, "offset": self._roff}))
        os.replace(tmp, self.dir / _POS_FILE)

    def close(self) -> None:
        for f in (self._wfile, self._rfile, self._lock_file):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._wfile = self._rfile = self._lock_file = None
        self._rfile_seg = -1


@decorator("diskFailover")
class DiskFailoverDecorator(Decorator):
    """Sends to the inner sink; spools to disk when it fails and replays in the background
    (see the module docstring)."""

    def __init__(self, inner: Sink, maxMs: int = 60000, checkMs: int = 1000, *,
                 name: str = "spool"):
        super().__init__(inner)
        if checkMs <= 0 or maxMs <= 0:
            raise ValueError(f"maxMs and checkMs must be positive, got {maxMs} and {checkMs}")
        if maxMs < checkMs:
            raise ValueError(f"maxMs ({maxMs}) must not be below checkMs ({checkMs})")
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad spool name {name!r}")
        self.max_ms = maxMs
        self.check_ms = checkMs
        self.name = name
        self.spool: Spool | None = None
        self.spool_dir: Path | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._inner_open = False
        self._spooled_since_cp = False
        self._encoded = False

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        base = ctx.component_dir("dfo")
        try:
            self.spool, self.spool_dir = Spool.claim(base, self.name)
        except OSError as exc:
            raise SinkError(f"diskFailover: cannot open the spool under {base}: {exc}") from exc
        self._encoded = hasattr(self.inner, "append_encoded")
        self._spooled_since_cp = False
        self._update_bytes()
        if self.spool.corrupt:
            self.metrics.set("corrupt", self.spool.corrupt)
        if not self.spool.empty:
            log.info("diskFailover: %d bytes left in the spool %s are replayed first",
                     self.spool.pending_bytes, self.spool_dir)
        try:
            self.inner.open(ctx)
            self._inner_open = True
        except (SinkError, OSError) as exc:
            log.warning("diskFailover: inner sink did not open (%s); spooling until it "
                        "does", exc)
            self.metrics.add("send_errors")
            self._close_inner_quietly()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._replay_loop, daemon=True,
                                        name=f"dfo-replay-{ctx.logical_name}")
        self._thread.start()

    def _close_inner_quietly(self) -> None:
        try:
            self.inner.close()
        except Exception:
            pass

    def _update_bytes(self) -> None:
        self.metrics.set("spool_bytes", self.spool.pending_bytes)

    # -------------------------------------------------------------- appends

    def _send(self, events: list[Event] | None, data: bytes | None, count: int) -> None:
        if self._encoded:
            self.inner.append_encoded(data if data is not None else encode_events(events),
                                      count)
        else:
            self.inner.append(events if events is not None else decode_events(data))

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        n = len(events)
        self.metrics.add("events_in", n)
        with self._lock:
            data = None
            if self.spool.empty and self._inner_open:
                if self._encoded:
                    data = encode_events(events)
                try:
                    self._send(events, data, n)
                    self.metrics.add("events_out", n)
                    return
                except SinkError as exc:
                    self.metrics.add("send_errors")
                    log.warning("diskFailover: send failed, spooling to disk: %s", exc)
            if data is None:
                data = encode_events(events)
            try:
                self.spool.write(data, n)
            except OSError as exc:
                self.metrics.add("errors")
                raise SinkError(f"diskFailover: cannot write the spool: {exc}") from exc
            self._spooled_since_cp = True
            self.metrics.add("spooled", n)
            self._update_bytes()
        self._wake.set()

    def when_durable(self, cp: Checkpoint) -> None:
        with self._lock:
            direct = (self._inner_open and not self._spooled_since_cp
                      and self.spool.empty)
            self._spooled_since_cp = False
        if direct:
            self.inner.when_durable(cp)
        else:
            self.ctx.store.commit([cp])

    # -------------------------------------------------------------- replay

    def _replay_loop(self) -> None:
        clock = self.ctx.clock
        stop = self._stop
        backoff = Backoff(self.check_ms / 1000, self.max_ms / 1000)
        while not stop.is_set():
            with self._lock:
                empty = self.spool.empty
            if empty:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                ok = self._replay_one()
            except Exception as exc:  # the replay thread must survive anything
                log.warning("diskFailover: replay failed: %s", exc,
                            exc_info=not isinstance(exc, SinkError))
                ok = False
            if ok:
                backoff.reset()
            elif not stop.is_set():
                clock.wait(stop, backoff.next_delay())

    def _replay_one(self) -> bool:
        """Open the inner sink if needed and send the oldest record; True on success."""
        if not self._inner_open:
            try:
                self.inner.open(self.ctx)
            except (SinkError, OSError) as exc:
                with self._lock:
                    self.metrics.add("send_errors")
                log.debug("diskFailover: inner sink still does not open: %s", exc)
                self._close_inner_quietly()
                return False
            self._inner_open = True
            log.info("diskFailover: inner sink opened; replaying the spool")
        with self._lock:
            rec = self.spool.peek()
            self.metrics.set("corrupt", self.spool.corrupt)
            if rec is None:
                self._update_bytes()
                return True
        data, count = rec
        if self._stop.is_set():
            return False
        try:
            self._send(None, data, count)
        except SinkError as exc:
            with self._lock:
                self.metrics.add("send_errors")
            log.debug("diskFailover: replay send failed: %s", exc)
            return False
        with self._lock:
            self.spool.advance(len(data))
            self.metrics.add("replayed", count)
            self._update_bytes()
            if self.spool.empty:
                log.info("diskFailover: spool replayed completely")
        return True

    # -------------------------------------------------------------- closing

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # let a replay send in progress finish (a cut-off send is resent later, so
            # could arrive twice), but not for long
            thread.join(CLOSE_WAIT)
            interrupt = getattr(self.inner, "interrupt", None)
            if thread.is_alive() and interrupt is not None:
                interrupt()
            thread.join(30)
        spool, self.spool = self.spool, None
        if spool is not None:
            if not spool.empty:
                log.info("diskFailover: %d bytes stay in the spool %s until the next open",
                         spool.pending_bytes, self.spool_dir)
            spool.close()
            self.spool = _ClosedSpool()
        if self._inner_open:
            self._inner_open = False
            self.inner.close()


class _ClosedSpool:
    """Stands in after close so a late call fails cleanly."""

    empty = True
    pending_bytes = 0

    def write(self, data, count):
        raise OSError("the spool is closed")
