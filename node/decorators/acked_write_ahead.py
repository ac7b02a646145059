"""``ackedWriteAhead([maxMs=10000[, checkMs=250]], retransmitMs=60000, compression=false)``:
the agent half of end-to-end mode (docs/e2e.md).

* Each batch becomes one group of the write-ahead log (:mod:`node.wal`), written with one
  fsync together with the source position the driver passes right after it
  (``when_durable``) -- one record, so a crash keeps both or neither, and a restarted
  agent neither loses the batch nor reads it again from its source. The position is then
  committed to the checkpoint store at once; at open, the newest position the log holds
  is given back to the store before the source opens. A batch whose position does not
  come within ``PENDING_GRACE`` seconds (a source without positions) is written alone.
* Sender threads send the groups in seq order to the inner sink, resend a group
  unacknowledged ``retransmitMs`` after it was last sent, and a group is deleted from the
  log only once it is acknowledged. A restarted agent reads its log back and resends what
  is not acknowledged. ``close`` sends what was never sent (up to ``DRAIN_SECONDS``);
  what is not acknowledged stays in the log for the next open.
* **Inner sink with groups** (``agentE2ESink``/``agentE2EChain``'s collector chain, which
  has ``send_group``): groups go to collectors with ``appendGroup`` and acknowledgements
  come through ZooKeeper (:class:`node.e2e.AckTracker`): effectively once. The node must
  run under ZooKeeper, else ``open`` fails.
* **Any other inner sink**: each group is decoded and appended, and acknowledged once the
  inner sink commits a checkpoint passed after it (``when_durable``): at-least-once (a
  crash between the inner sink's commit and the log's deletion resends a group).
* ``maxMs``: the log segment being written is closed after that long so that its file is
  deleted once its groups are acknowledged. ``checkMs``: how often the sender looks for
  groups to resend.
* ``compression``: gzip each group's payload (``true``/``"gzip"``).
* **Disk full** is transient: a write of the log (or of the checkpoint file beside it)
  that finds no space waits (:class:`node.segment_log.SpaceWait`), holding the source
  back, while the senders go on and acknowledgements delete segments -- which needs no
  new space (the log's ``meta.json`` is rewritten in place); the logical node says
  "disk full" meanwhile and the flow goes on by itself once there is space. A disk
  already full at open is no error either: the first write waits the same way.

The log lives in ``<node data>/e2e/<agent>`` (``agent``: the logical node's name, with
``#k`` for the k-th E2E sink of the flow, fitted to the agent id bounds by
:func:`node.e2e.fit_agent_id`). Counters: ``events_in``, ``groups_written``, the
log's ``wal_bytes``/``wal_groups``/``wal_events``/``fsyncs``/``wal_corrupt``,
``groups_sent``, ``groups_resent``, ``events_sent``, ``retries`` (RETRY: claimed by
another collector), ``groups_requeued`` (sent again after their collector failed),
``groups_acked``, ``events_acked``, ``acks_pending``, ``oldest_unacked_seconds`` (the age
of the oldest group not yet acknowledged, as of the report), ``watermark``, ``send_errors``,
``disk_full`` (writes that had to wait for space), ``disk_free_bytes``.
"""
from __future__ import annotations

import logging
import threading
from typing import Annotated
from urllib.parse import quote

from ..checkpoint import Checkpoint
from ..codec import encode_events, split_events
from ..component import Decorator, NodeContext, Sink
from ..e2e import AckTracker, GroupSender, LocalTransport, agent_id, commit_log_of
from ..errors import Interrupted, SinkError
from ..registry import Positive, decorator
from .. import rpc
from ..rpc import gzip_payload
from ..segment_log import SpaceWait, disk_full
from ..wal import WalError, WriteAheadLog

log = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0    # at close, how long to wait for unsent groups to be sent once
PENDING_GRACE = 0.1    # seconds a batch waits for its position before it is written alone


def compression_flag(value: bool | str) -> bool:
    """Whether ``compression`` (true/false, or "gzip", "true", "false", "none", "") asks
    for gzip; ValueError for another name."""
    if isinstance(value, str):
        v = value.lower()
        if v not in ("gzip", "true", "false", "none", ""):
            raise ValueError(f"unknown compression {value!r}; only gzip is supported")
        return v in ("gzip", "true")
    return bool(value)


Compress = Annotated[bool | str, compression_flag]   # declared check (node/registry.py)

@decorator("ackedWriteAhead")
class AckedWriteAhead(Decorator):
    """Writes every batch to a durable write-ahead log first, then sends it to the inner
    sink in the background until it is acknowledged (see the module docstring)."""

    def report(self) -> dict:
        sender = self.sender
        if sender is not None:
            self.metrics.set("oldest_unacked_seconds", round(sender.oldest_age(), 3))
        return super().report()

    def __init__(self, inner: Sink, maxMs: Positive = 10_000, checkMs: Positive = 250, *,
                 retransmitMs: Positive = 60_000, compression: Compress = False):
        super().__init__(inner)
        self.maxMs = maxMs
        self.checkMs = checkMs
        self.retransmitMs = retransmitMs
        self.compress = compression_flag(compression)
        self.agent = ""
        self.wal: WriteAheadLog | None = None
        self.tracker: AckTracker | None = None
        self.sender: GroupSender | None = None
        self._maint: threading.Thread | None = None
        self._stop = threading.Event()
        self._opened = False
        self._wlock = threading.Lock()
        self._pending: tuple | None = None     # (payload, count, since): awaits its position
        self._space: SpaceWait | None = None

    @property
    def group_mode(self) -> bool:
        """The inner sink takes groups itself (collectors and ZooKeeper acknowledgements)."""
        return hasattr(self.inner, "send_group")

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        commits = commit_log_of(ctx) if self.group_mode else None
        self.agent = agent_id(ctx)
        wal_dir = ctx.component_dir("e2e", quote(self.agent, safe="#-_.~@+"))
        self.wal = WriteAheadLog(wal_dir, self.metrics, clock=ctx.clock,
                                 sync_seconds=self.histogram("wal_sync_seconds"))
        try:
            live = self.wal.open()
        except OSError as exc:
            raise SinkError(f"ackedWriteAhead: cannot open the write-ahead log in "
                            f"{wal_dir}: {exc}") from exc
        if live:
            log.info("agent %s resumes with %d unacknowledged groups (%d events) from its "
                     "write-ahead log", self.agent, len(live), sum(g.count for g in live))
        brand_new = self.wal.is_new
        self._pending = None
        self._space = SpaceWait(self.wal.log, self.metrics,
                                ctx.conditions.reporter(f"ackedWriteAhead {self.agent}"),
                                ctx.clock)
        self._space.gauge()
        if self.wal.position:
            # the newest position the log holds; the store may have missed it (a crash
            # between the log write and the store commit)
            try:
                ctx.store.commit([Checkpoint(dict(self.wal.position))])
            except OSError as exc:
                if not disk_full(exc):
                    raise
                # the store took the position in memory, which the source reads at its
                # open; the log keeps it for a later open: nothing is read twice
                log.warning("agent %s: the checkpoint file cannot be written (the disk is "
                            "full); the position is taken from the write-ahead log",
                            self.agent)
        self._stop = threading.Event()
        try:
            if commits is not None:
                self.tracker = AckTracker(commits, self.agent, self.wal, self._acked,
                                          self.metrics)
                try:
                    self.tracker.sync()
                except Exception as exc:
                    if brand_new:
                        # a new log must learn the seqs already used before giving any
                        raise SinkError(f"ackedWriteAhead: cannot read {self.agent}'s "
                                        f"acknowledgements from ZooKeeper: {exc}") from exc
                    log.warning("agent %s: ZooKeeper unavailable at start (%s); "
                                "acknowledgements will be read when it answers",
                                self.agent, exc)
                transport = self.inner
                claim_holder = (lambda seq, c=commits, a=self.agent: c.claim_holder(a, seq))
                reclaim = (lambda seq, holder, c=commits, a=self.agent:
                           c.reclaim_group(a, seq, holder))
                committed = (lambda seq, c=commits, a=self.agent: c.group_committed(a, seq))
            else:
                transport = LocalTransport(self.inner, self._acked)
                claim_holder = reclaim = committed = None
            self.inner.open(ctx)
            if hasattr(self.inner, "on_endpoint_failed"):
                self.inner.on_endpoint_failed = self._endpoint_failed
            self.sender = GroupSender(
                self.agent, self.wal, transport, ctx.clock, self.metrics,
                self.retransmitMs / 1000, self.checkMs / 1000,
                on_committed=self._committed, claim_holder=claim_holder,
                lanes=getattr(self.inner, "lanes", 1) if commits is not None else 1,
                reclaim=reclaim, group_committed=committed,
                ack_seconds=self.histogram("ack_seconds"))
            # written before this open, at a time unknown: not in ack_seconds
            self.sender.add((g for g in (self.wal.get(s) for s in self.wal.live_seqs())
                             if g is not None), fresh=False)
        except Exception:
            self.wal.close()
            raise
        if self.tracker is not None:
            self.tracker.start()
        self.sender.start()
        self._maint = threading.Thread(target=self._maintain, daemon=True,
                                       name=f"e2e-wal-{self.agent}")
        self._maint.start()
        self._opened = True

    # ------------------------------------------------------------------ callbacks

    def _acked(self, seqs: list[int]) -> None:
        wal, sender = self.wal, self.sender
        if wal is None:
            return
        done = wal.ack(seqs)
        if sender is not None:
            sender.acked([g.seq for g in done])
        if done:
            self.metrics.add("groups_acked", len(done))
            self.metrics.add("events_acked", sum(g.count for g in done))

    def _committed(self, seqs: list[int]) -> None:
        if self.tracker is not None:
            self.tracker.ack_now(seqs)
        else:
            self._acked(seqs)

    def _endpoint_failed(self, endpoint: int) -> None:
        if self.sender is not None:
            self.sender.endpoint_failed(endpoint)

    def _maintain(self) -> None:
        wait, period = self.ctx.clock.wait, min(self.checkMs / 1000, PENDING_GRACE / 2)
        while not wait(self._stop, period):
            try:
                with self._wlock:
                    p = self._pending
                    if p is not None and \
                            self.ctx.clock.monotonic() - p[2] >= PENDING_GRACE:
                        self._flush(None)      # waits while the disk is full
                self.wal.seal_older_than(self.maxMs / 1000)
                self._space.gauge()
            except Interrupted:
                pass                       # closing: close writes what is pending
            except Exception as exc:
                log.warning("agent %s: write-ahead log maintenance failed: %s",
                            self.agent, exc)

    # ------------------------------------------------------------------ data path

    def append(self, events) -> None:
        if not events:
            return
        data = encode_events(events)
        if len(events) > 1 and (len(events) > rpc.SEND_BATCH_EVENTS
                                or len(data) > rpc.SEND_BATCH_BYTES):
            # a group is what a collector takes whole: keep each under the receivers'
            # default bounds (checked on the encoding, so the common case costs nothing)
            for piece in split_events(events, rpc.SEND_BATCH_EVENTS, rpc.SEND_BATCH_BYTES):
                self.append(piece)
            return
        if self.compress:
            data = gzip_payload(data)
        with self._wlock:
            if self._pending is not None:
                self._flush(None)      # the previous batch had no position
            self._pending = (data, len(events), self.ctx.clock.monotonic())
        self.metrics.add("events_in", len(events))

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.ctx.stop_event.is_set()

    def _write(self, write, wait: bool = True):
        """``write()`` to the log; while the disk is full it waits for space (``wait``),
        else the error goes up. SinkError when the log refuses for another reason."""
        try:
            if wait:
                return self._space.call(write, self._stopping)
            return write()
        except WalError as exc:
            if not disk_full(exc):
                self.metrics.add("errors")
            raise SinkError(f"ackedWriteAhead: {exc}") from exc

    def _flush(self, position: dict | None, wait: bool = True) -> None:
        """Write the pending batch (with ``position``) as one group. Lock held."""
        data, count, _ = self._pending
        groups = self._write(lambda: self.wal.append([(data, count)], position), wait)
        self._pending = None
        self.metrics.add("groups_written", len(groups))
        self.sender.add(groups)

    def when_durable(self, cp: Checkpoint) -> None:
        position = cp.updates or None
        with self._wlock:
            if self._pending is not None:
                self._flush(position)
            elif position is not None:
                self._write(lambda: self.wal.write_position(position))
        # Everything appended is in the log with this position: the source may move on.
        # (The checkpoint file shares the log's disk: it waits for space like the log.)
        self._space.call(lambda: self.ctx.store.commit([cp]), self._stopping)

    def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        error = None
        self._stop.set()       # first: a maintenance write waiting for space gives up
        with self._wlock:
            if self._pending is not None:
                try:
                    self._flush(None, wait=False)
                except SinkError as exc:
                    if disk_full(exc):
                        # not taken, its position not committed: the source gives it again
                        exc = Interrupted(f"ackedWriteAhead: the last batch is not written "
                                          f"(the disk is full): {exc}")
                    error = exc
        if self.sender is not None:
            self.sender.drain(DRAIN_SECONDS)
            self.sender.stop()
        if self._maint is not None:
            self._maint.join(5)
        try:
            self.inner.close()     # an ordinary inner sink commits (acknowledges) here
        finally:
            if self.tracker is not None:
                self.tracker.stop()
            if self.wal is not None:
                self.wal.close()
        if error is not None:
            raise error
