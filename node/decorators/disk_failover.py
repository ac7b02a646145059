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
  the same logical node gets ``spool-2``...): a :mod:`node.segment_log` of segment files
  ``seg-<n>.dfo`` (12 digits) of CRC-checked records ``DFO1 count:u32 length:u32
  crc32:u32 payload``, each one batch in the :mod:`node.codec` encoding. Writes are
  handed to the OS, not fsynced: nothing is lost while the process lives and its disk
  survives (a SIGKILL loses nothing; a power cut may). After a restart, what was left in
  the spool is replayed first. The replay position is kept in ``replay.pos``, a state
  file of the segment log rewritten in place (created at open, it needs no new space
  later); a crash between a send and its position update resends that one record
  (at-least-once). A disk already full at open is no error: ``replay.pos`` is then
  created by the first write to the spool (which waits for space); until it exists a
  restart replays the spool from the start of its oldest segment (at-least-once).
* **Disk full** is transient: an append that finds no space waits
  (:class:`node.segment_log.SpaceWait`), holding its source back, while the replay goes
  on and removes what it sent; the logical node says "disk full" meanwhile and the
  append goes on by itself once there is space. A write cut short by the full disk is
  cut back at once. ``disk_free_bytes`` is the free space of the spool's disk.
* A record whose framing is damaged (torn by a machine crash) is reported, counted in
  ``corrupt`` and the rest of its segment cut off (at open) or skipped (while replaying);
  a record whose framing is intact but whose payload fails its checksum is dropped alone.
  Neither is ever replayed as garbage.
* **Unknown outcome** (a call that timed out: the receiver may have written the batch;
  :class:`~node.errors.DeliveryUnknown`): the record is *parked* -- moved to the end of the
  spool, kept for a resend with its batch id -- and the others go on without it, so one
  batch waiting for a hung receiver does not hold the flow: while the spool holds only
  parked records, appends go straight to the inner sink again, and a parked record is
  resent only when nothing else waits (else it is moved to the end again). Parked
  records therefore leave the spool out of order. Which records are parked is kept in
  memory: after a restart they are ordinary records again.
* While batches are spooled because the inner sink fails, the logical node shows it
  (``spooling: <reason>``, in ``conditions`` and ``last_error``, its state staying ACTIVE;
  ``spooling: n batch(es) parked ...`` while only parked records wait); the condition
  ends when the spool is empty.
* ``when_durable``: a checkpoint is committed once its events were sent or spooled (the
  spool is durable enough for this mode); if every event since the previous checkpoint
  went straight to the inner sink, the inner sink decides.

An inner sink with ``append_encoded(data, count)`` (the agent collector chain) receives the
spooled encoding as it is, without decoding. Counters: ``events_out`` (sent directly),
``spooled``, ``replayed``, ``spool_bytes`` (waiting in the spool), ``send_errors``,
``corrupt``, ``disk_full`` (appends that had to wait for space), ``disk_free_bytes``.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Annotated

from ..backoff import Backoff
from ..checkpoint import Checkpoint
from ..codec import decode_events, encode_events
from ..component import Decorator, NodeContext, Sink
from ..errors import DeliveryUnknown, SinkError
from ..event import Event
from ..limits import RateLimitedLog
from ..registry import Positive, decorator
from ..rpc import batch_digest
from ..segment_log import Framing, LogInUse, SegmentLog, SpaceWait, disk_full

log = logging.getLogger(__name__)
_send_failed = RateLimitedLog(log)

_MAGIC = b"DFO1"
FRAMING = Framing("I", {_MAGIC: False})   # magic, count, length, crc32(payload)
SEGMENT_BYTES = 16 << 20             # start a new segment file past this size
_POS_FILE = "replay.pos"
CLOSE_WAIT = 2.0                     # seconds close waits for a replay send to finish
REPLAY_TIMEOUT_FACTOR = 8            # a replay waits at most this x the inner timeout


class Spool:
    """An on-disk FIFO of encoded batches (see the module docstring) on a
    :mod:`node.segment_log` directory that is not fsynced. Not thread-safe: the owner
    serialises calls."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.log = SegmentLog(directory, FRAMING, what="the diskFailover spool",
                              suffix=".dfo", digits=12, durable=False,
                              segment_bytes=SEGMENT_BYTES, keep_open=False, log=log)
        self._read = None                # the segment of the next record to replay
        self._roff = 0                   # and its offset there
        self.pending_bytes = 0           # bytes in the spool not yet replayed
        self.pending_records = 0
        self.corrupt = 0
        self.corrupt_state = 0           # replay.pos found corrupt at open
        self._pos_missing = False        # replay.pos not created yet (the disk was full)

    # -------------------------------------------------------------- opening

    @staticmethod
    def claim(base: Path, name: str) -> tuple["Spool", Path]:
        """Lock the first free directory ``base/name``, ``base/name-2``, ... and open it."""
        k = 1
        while True:
            spool = Spool(base / (name if k == 1 else f"{name}-{k}"))
            try:
                spool._load()
            except LogInUse:
                k += 1
                continue
            except Exception:
                spool.close()
                raise
            return spool, spool.dir

    def _load(self) -> None:
        segs = self.log.open()
        rseg, roff = -1, 0
        text = self.log.read_state(_POS_FILE)
        if text is not None:
            try:
                pos = json.loads(text)
                rseg, roff = pos["segment"], pos["offset"]
                # whole numbers only (int() would take "7", 7.5, true; Infinity overflows)
                if not all(isinstance(v, int) and not isinstance(v, bool)
                           for v in (rseg, roff)) or rseg < -1 or roff < 0:
                    raise TypeError(f"segment {rseg!r} and offset {roff!r} are not a "
                                    f"replay position")
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                # corrupt: replay every segment from its start (duplicates, no loss)
                rseg, roff = -1, 0
                self.corrupt_state += 1
                log.error("diskFailover: %s is corrupt (%s); replaying the spool from its "
                          "start", _POS_FILE, exc,
                          extra={"file": str(self.dir / _POS_FILE), "error": str(exc)})
        self._pos_missing = text is None
        if text is None:
            self._save_pos()     # allocated now: rewriting it later needs no new space
        # a new segment numbered below the recorded position would be taken for one
        # replayed already at the next open (replay.pos can outlive its segments)
        self.log.next_number = max(self.log.next_number, rseg + 1)
        for seg in segs:
            seg.sealed = True     # appends after a restart go to a fresh segment
            if seg.number < rseg:
                self.log.remove(seg)              # fully replayed before the restart
        if self.log.segments:
            first = self.log.segments[0]
            self._read, self._roff = first, roff if first.number == rseg else 0
            self._count_pending()
            if self.pending_records == 0:
                self._reset()

    def _count_pending(self) -> None:
        """Scan the unreplayed records (headers only) to count them. A segment whose
        framing is damaged (torn by a crash) is cut off there and reported; a record whose
        checksum is wrong is caught by :meth:`peek`."""
        before, segs = self.log.corrupt, self.log.segments
        counts = [self.log.scan(seg, start=self._roff if seg is self._read else 0,
                                verify=False, last=i == len(segs) - 1)
                  for i, seg in enumerate(segs)]
        self.corrupt += self.log.corrupt - before
        self.pending_records = sum(n for n, _ in counts)
        self.pending_bytes = sum(b for _, b in counts)

    # -------------------------------------------------------------- writing

    @property
    def empty(self) -> bool:
        return self.pending_records == 0

    def write(self, data: bytes, count: int) -> None:
        """Append one record, handed to the OS. OSError passes through
        (:class:`~node.segment_log.DiskFull` when the disk is full); nothing of a failed
        write is kept."""
        if self._pos_missing:
            self._save_pos(must=True)
        seg = self.log.writable()
        if seg.size == 0 and (self._read is None or self.pending_records == 0):
            self._read, self._roff = seg, 0
        rec = FRAMING.pack(_MAGIC, (count,), data)
        size = FRAMING.head.size + len(data)
        self.log.write(seg, rec, size)
        self.pending_bytes += size
        self.pending_records += 1

    # -------------------------------------------------------------- replaying

    def peek(self) -> tuple[bytes, int] | None:
        """The oldest unreplayed record ``(data, count)``, or None if there is none.
        A record failing its checksum is dropped; damaged framing drops the rest of its
        segment; both are reported and counted in ``corrupt``."""
        while self.pending_records > 0:
            seg, off = self._read, self._roff
            if off >= seg.size and seg.sealed:
                self._next_segment()          # clean end of a finished segment
                continue
            rec, bad = FRAMING.read(self.log.fd(seg), off, seg.size)
            if bad is None:
                return rec.payload, rec.fields[0]
            self.corrupt += 1
            if rec is not None:
                # framing intact, payload damaged: drop just this record
                log.error("diskFailover: record at offset %d of %s fails its checksum; %d "
                          "events dropped", off, seg.path, rec.fields[0],
                          extra={"segment": str(seg.path), "offset": off,
                                 "bytes_lost": rec.size, "events_lost": rec.fields[0]})
                self.advance(rec.length)
                continue
            # the framing is gone, so the records (and events) in the rest are unknown
            log.error("diskFailover: corrupt record in %s at offset %d (%s); skipping the "
                      "rest of that segment", seg.path, off, bad,
                      extra={"segment": str(seg.path), "offset": off,
                             "bytes_lost": seg.size - off, "reason": bad})
            seg.sealed = True     # cannot write after garbage: later writes start anew
            self._next_segment()
            self._count_pending()
        return None

    def _next_segment(self) -> None:
        self.log.remove(self._read)
        segs = self.log.segments
        self._read, self._roff = (segs[0] if segs else None), 0
        self._save_pos()

    def advance(self, data_len: int) -> None:
        """Drop the record last returned by :meth:`peek` (it was delivered)."""
        size = FRAMING.head.size + data_len
        self._roff += size
        self.pending_bytes -= size
        self.pending_records -= 1
        if self.pending_records == 0:
            self._reset()
        elif self._read.sealed and self._roff >= self._read.size:
            self._next_segment()
        else:
            self._save_pos()

    def _reset(self) -> None:
        """Everything was replayed: delete every segment and start afresh."""
        for seg in list(self.log.segments):
            self.log.remove(seg)
        self._read, self._roff = None, 0
        self.pending_bytes = 0
        self._save_pos()

    def _save_pos(self, must: bool = False) -> None:
        """Record the replay position. While ``replay.pos`` is missing and the disk full,
        it is left for later unless ``must`` (DiskFull then)."""
        number = self._read.number if self._read is not None else -1
        try:
            self.log.write_state(_POS_FILE, json.dumps({"segment": number,
                                                        "offset": self._roff}))
        except OSError as exc:
            if must or not (self._pos_missing and disk_full(exc)):
                raise
            return
        self._pos_missing = False

    def close(self) -> None:
        self.log.close()
        self._read = None


def check_spool_name(name: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad spool name {name!r}")


@decorator("diskFailover")
class DiskFailoverDecorator(Decorator):
    """Sends to the inner sink; spools to disk when it fails and replays in the background
    (see the module docstring)."""

    def __init__(self, inner: Sink, maxMs: Positive = 60000, checkMs: Positive = 1000, *,
                 name: Annotated[str, check_spool_name] = "spool"):
        super().__init__(inner)
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
        self._space: SpaceWait | None = None
        # records of the spool moved to its end after an unknown outcome, by digest
        self._parked: Counter[bytes] = Counter()
        self._moved = 0                # parked records moved to the end in a row
        self._spooling = None          # reports the "spooling" condition

    @classmethod
    def check_args(cls, args) -> None:
        if args["maxMs"] < args["checkMs"]:
            raise ValueError(f"maxMs ({args['maxMs']}) must not be below checkMs "
                             f"({args['checkMs']})")

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        base = ctx.component_dir("dfo")
        try:
            self.spool, self.spool_dir = Spool.claim(base, self.name)
        except OSError as exc:
            raise SinkError(f"diskFailover: cannot open the spool under {base}: {exc}") from exc
        self._encoded = hasattr(self.inner, "append_encoded")
        self._spooled_since_cp = False
        self._space = SpaceWait(self.spool.log, self.metrics,
                                ctx.conditions.reporter(f"diskFailover {self.spool_dir.name}"),
                                ctx.clock)
        self._space.gauge()
        self._parked = Counter()
        self._spooling = ctx.conditions.reporter(f"diskFailover {self.spool_dir.name} "
                                                 f"spooling")
        self._update_bytes()
        if self.spool.corrupt:
            self.metrics.set("corrupt", self.spool.corrupt)
        if self.spool.corrupt_state:
            self.metrics.set("corrupt_state", self.spool.corrupt_state)
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

    def _direct(self) -> bool:
        """Under the lock: may an append go straight to the inner sink? Yes when the
        spool holds nothing but parked records (their order is given up already)."""
        return self._inner_open and self.spool.pending_records <= sum(self._parked.values())

    def _park(self, data: bytes) -> None:
        """Under the lock: count the record of ``data`` as parked."""
        self._parked[batch_digest(data)] += 1

    def _unpark(self, data: bytes) -> None:
        """Under the lock: the record of ``data`` left the spool (if it was parked)."""
        key = batch_digest(data)
        if self._parked[key] > 1:
            self._parked[key] -= 1
        else:
            del self._parked[key]        # (a Counter ignores a missing key)
        if self.spool.empty:
            self._parked.clear()         # (one dropped as corrupt is not counted twice)

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.ctx.stop_event.is_set()

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        n = len(events)
        self.metrics.add("events_in", n)
        encoded: list[bytes | None] = [None]     # encoded once, when first needed
        # while the disk is full this waits (the source with it) and tries again: the
        # replay frees space, or empties the spool so that the batch is sent directly
        self._space.call(lambda: self._take(events, n, encoded), self._stopping)
        self._wake.set()

    def _take(self, events: list[Event], n: int, encoded: list) -> None:
        """Send the batch directly if nothing waits in the spool, else spool it. OSError
        for want of space passes through (nothing was kept); SinkError otherwise."""
        unknown = False
        with self._lock:
            if self._direct():
                if self._encoded and encoded[0] is None:
                    encoded[0] = encode_events(events)
                try:
                    self._send(events, encoded[0], n)
                    self.metrics.add("events_out", n)
                    self._spooling(None if self.spool.empty else
                                   f"spooling: {self.spool.pending_records} batch(es) parked, "
                                   f"their outcome at a receiver unknown; the others are "
                                   f"sent")
                    return
                except SinkError as exc:
                    unknown = isinstance(exc, DeliveryUnknown)
                    self.metrics.add("send_errors")
                    self._spooling(f"spooling: {exc}")
                    _send_failed.warning("send", "diskFailover: send failed, spooling to "
                                         "disk: %s", exc)
            if encoded[0] is None:
                encoded[0] = encode_events(events)
            try:
                self.spool.write(encoded[0], n)
            except OSError as exc:
                self._update_bytes()
                if disk_full(exc):
                    raise
                self.metrics.add("errors")
                raise SinkError(f"diskFailover: cannot write the spool: {exc}") from exc
            if unknown:
                self._park(encoded[0])
            self._spooled_since_cp = True
            self.metrics.add("spooled", n)
            self._update_bytes()

    def when_durable(self, cp: Checkpoint) -> None:
        with self._lock:
            direct = not self._spooled_since_cp and self._direct()
            self._spooled_since_cp = False
        # the checkpoint file shares the spool's disk: its write waits for space like an
        # append (an inner sink refused by the full disk did not commit: it is asked again)
        commit = ((lambda: self.inner.when_durable(cp)) if direct
                  else (lambda: self.ctx.store.commit([cp])))
        self._space.call(commit, self._stopping)

    # -------------------------------------------------------------- replay

    def _replay_loop(self) -> None:
        """Replays the spool until closed. After a failure it waits ``checkMs`` doubling
        to ``maxMs``, and warns (rate-limited). After a call whose outcome is unknown (a
        timeout: the receiver may be writing it still), the record is resent -- with the
        same batch id, so that a receiver that took it answers without writing it again
        -- waiting twice as long for the answer each time, up to
        ``REPLAY_TIMEOUT_FACTOR`` times the inner sink's timeout; back to that timeout
        after a success. (Not in smaller pieces: a piece would be a new batch to the
        receiver, and written again if the whole one was.)"""
        clock = self.ctx.clock
        stop = self._stop
        backoff = Backoff(self.check_ms / 1000, self.max_ms / 1000)
        quiet = RateLimitedLog(log)
        base = getattr(self.inner, "timeout", None) if self._encoded else None
        timeout = base
        while not stop.is_set():
            self._space.gauge()
            with self._lock:
                empty = self.spool.empty
            if empty:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                ok = self._replay_one(timeout)
            except _Parked:
                continue                     # moved to the end: the next one at once
            except DeliveryUnknown as exc:
                if base is not None:
                    timeout = min(timeout * 2, base * REPLAY_TIMEOUT_FACTOR)
                quiet.warning("replay", "diskFailover: replay of %s got no answer (%s); "
                              "resending it with the same id%s", self.spool_dir, exc,
                              f", waiting {timeout:g} s" if timeout else "")
                ok = False
            except SinkError as exc:
                self._spooling(f"spooling: {exc}")
                quiet.warning("replay", "diskFailover: replay of %s failed: %s",
                              self.spool_dir, exc)
                ok = False
            except Exception as exc:  # the replay thread must survive anything
                log.warning("diskFailover: replay failed: %s", exc, exc_info=True)
                ok = False
            if ok:
                backoff.reset()
                timeout = base
            elif not stop.is_set():
                clock.wait(stop, backoff.next_delay())

    def _replay_one(self, timeout: float | None = None) -> bool:
        """Open the inner sink if needed and send the oldest record (waiting ``timeout``
        seconds for the answer of an ``append_encoded`` inner sink; None: its own); True
        once sent (or nothing is left), False if stopping; SinkError if not sent."""
        if not self._inner_open:
            try:
                self.inner.open(self.ctx)
            except (SinkError, OSError) as exc:
                with self._lock:
                    self.metrics.add("send_errors")
                self._close_inner_quietly()
                raise SinkError(f"the inner sink does not open: {exc}") from exc
            self._inner_open = True
            log.info("diskFailover: inner sink opened; replaying the spool")
        with self._lock:
            rec = self.spool.peek()
            self.metrics.set("corrupt", self.spool.corrupt)
            if rec is None:
                self._update_bytes()
                return True
            data, count = rec
            # others wait behind it: they go first -- once around the spool at most (two
            # records of the same bytes look parked both when one is)
            if (self._parked[batch_digest(data)] and not self._direct()
                    and self._moved < self.spool.pending_records
                    and self._move_to_end(data, count)):
                self._moved += 1
                raise _Parked()
            self._moved = 0
        if self._stop.is_set():
            return False
        try:
            if self._encoded and timeout is not None:
                self.inner.append_encoded(data, count, timeout=timeout, resend=True)
            else:
                self._send(None, data, count)
        except SinkError as exc:
            with self._lock:
                self.metrics.add("send_errors")
                if isinstance(exc, DeliveryUnknown):
                    first = not self._parked[batch_digest(data)]
                    if first:
                        self._park(data)
                    # the next record gets its turn: at once after a first unknown
                    # outcome if it is not parked, else after the backoff
                    if self.spool.pending_records > 1 and self._move_to_end(data, count) \
                            and first and not self._direct():
                        raise _Parked() from exc
            raise
        with self._lock:
            self.spool.advance(len(data))
            self._unpark(data)
            self.metrics.add("replayed", count)
            self._update_bytes()
            if self.spool.empty:
                self._spooling(None)
                log.info("diskFailover: spool replayed completely")
        return True

    def _move_to_end(self, data: bytes, count: int) -> bool:
        """Under the lock: the head record ``data`` (parked) is written again at the end
        of the spool, then dropped from the head -- a crash between the two leaves it
        twice in the spool (at-least-once). False if a full disk left it where it is."""
        try:
            self.spool.write(data, count)
        except OSError as exc:
            log.warning("diskFailover: cannot move a parked record to the end of %s (%s); "
                        "it stays first", self.spool_dir, exc)
            return False
        self.spool.advance(len(data))
        self._update_bytes()
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


class _Parked(Exception):
    """The replay moved the head record to the end of the spool: go on at once."""


class _ClosedSpool:
    """Stands in after close so a late call fails cleanly."""

    empty = True
    pending_bytes = 0

    def write(self, data, count):
        raise OSError("the spool is closed")
