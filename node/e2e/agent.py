"""The agent half of end-to-end mode (docs/e2e.md, agent steps), used by
``ackedWriteAhead`` / ``agentE2ESink`` / ``agentE2EChain``; the write-ahead log itself is
``node/wal.py``.

* :class:`AckTracker` learns acknowledgements: it watches the agent's committed groups in
  the commit log (a committed group's znode *is* its acknowledgement), drops acknowledged
  groups from the WAL, raises the agent's watermark to the lowest unacknowledged seq and
  deletes the group znodes below it.
* :class:`GroupSender` sends the WAL's groups in seq order through a *transport*
  (``send_group(agent, seq, crc, payload, count) -> (status, message, endpoint)``, raising
  SinkError when no collector can be reached), resends a group unacknowledged
  ``retransmitMs`` after it was last sent, resends at once what was sent to a collector
  that then failed, and handles RETRY (the group is claimed by another collector) by
  watching that claim go away. Each group moves through :class:`SendState`.
* :class:`LocalTransport` and :class:`AckCheckpoint`: an ``ackedWriteAhead`` over an
  ordinary sink (no ZooKeeper), acknowledged when that sink made a group durable.
"""
from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections import deque
from typing import Callable

from ..backoff import Backoff, step
from ..checkpoint import Checkpoint
from ..component import Metrics
from ..errors import CommitLogError, FlumeError, SinkError
from ..metrics import Histogram
from ..rpc import decode_payload
from .protocol import COMMITTED, OK, RETRY, TAKEN_BY, SendState

log = logging.getLogger(__name__)


class AckTracker:
    """Learns which groups of ``agent`` are committed in ``commits`` (the node's
    node/commit_port.py; see the module docstring) and passes them to
    ``on_acked(seqs)``. Watch callbacks only enqueue; one thread works."""

    REFRESH = 10.0   # seconds between full re-reads, a safety net under the watch

    def __init__(self, commits, agent: str, wal, on_acked: Callable[[list[int]], None],
                 metrics: Metrics):
        self.commits = commits
        self.agent = agent
        self.wal = wal
        self.on_acked = on_acked
        self.metrics = metrics
        self.watermark = 0
        self.synced = False
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = None

    def sync(self) -> None:
        """Read the watermark and the committed groups; make sure the WAL never gives a
        seq at or below them (a lost WAL directory must not reuse committed seqs); drop
        what is acknowledged. CommitLogError when ZooKeeper does not answer."""
        try:
            w = self.commits.get_watermark(self.agent)
            committed = self.commits.list_groups(self.agent)
        except Exception as exc:
            raise CommitLogError(f"reading the acknowledgements of {self.agent}: {exc}") \
                from exc
        self.watermark = w
        self.wal.ensure_next_seq(max([w] + [s + 1 for s in committed]))
        acked = [s for s in self.wal.live_seqs() if s < w]
        acked += [s for s in committed if s >= w]
        self._ack(acked)
        self.synced = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"e2e-acks-{self.agent}")
        self._thread.start()
        self._start_watch()

    def _start_watch(self) -> None:
        try:
            self._watch = self.commits.watch_groups(self.agent, self._on_committed)
        except Exception as exc:   # ZooKeeper away: the refresh loop tries again
            log.warning("agent %s: cannot watch its acknowledgements yet: %s",
                        self.agent, exc)

    def _on_committed(self, seqs: list[int]):
        if self._stop.is_set():
            return False
        self._q.put(("committed", seqs))

    def ack_now(self, seqs: list[int]) -> None:
        """Groups known committed by other means (a collector answered "committed")."""
        self._q.put(("acked", seqs))

    def stop(self) -> None:
        self._stop.set()
        self._q.put(("stop",))
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(10)

    def _ack(self, seqs: list[int]) -> None:
        if seqs:
            self.on_acked(seqs)

    def _run(self) -> None:
        backoff = Backoff(0.5, 5.0)
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=self.REFRESH)
            except queue.Empty:
                item = ("refresh",)
            items = [item]
            while True:       # coalesce: only the latest list of committed groups matters
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if any(i[0] == "stop" for i in items):
                return
            committed = None
            explicit: list[int] = []
            refresh = False
            for i in items:
                if i[0] == "committed":
                    committed = i[1]
                elif i[0] == "acked":
                    explicit.extend(i[1])
                elif i[0] == "refresh":
                    refresh = True
            try:
                if not self.synced:
                    self.sync()
                if self._watch is None:
                    self._start_watch()
                if committed is None and (refresh or explicit):
                    committed = self.commits.list_groups(self.agent)
                self._process(committed or [], explicit)
                backoff.reset()
            except Exception as exc:
                self.metrics.add("ack_errors")
                log.warning("agent %s: processing acknowledgements failed (retrying): %s",
                            self.agent, exc)
                if explicit:
                    self._q.put(("acked", explicit))
                self._q.put(("refresh",))
                self._stop.wait(backoff.next_delay())

    def _process(self, committed: list[int], explicit: list[int]) -> None:
        seqs = set(committed)
        wal = self.wal
        newly = [s for s in seqs if wal.get(s) is not None]
        newly += [s for s in explicit if wal.get(s) is not None]
        self._ack(newly)
        low = wal.lowest_live()
        if low > self.watermark:
            self.watermark = self.commits.raise_watermark(self.agent, low)
            self.metrics.set("watermark", self.watermark)
        below = [s for s in seqs if s < self.watermark]
        if below:
            self.commits.delete_groups(self.agent, below)


class _Pending:
    __slots__ = ("seq", "count", "crc", "state", "endpoint", "gen", "sends", "probe_wait",
                 "fail_wait", "claimed_at", "sent_at", "written_at", "added_at")

    def __init__(self, seq: int, count: int, crc: int):
        self.seq, self.count, self.crc = seq, count, crc
        self.written_at: float | None = None    # time.monotonic() when added fresh
        self.added_at = time.monotonic()        # fresh or recovered: the age shown
        self.state = SendState.NEW
        self.endpoint = -1
        self.gen = 0              # bumped at each reschedule: stale heap entries skip
        self.sends = 0
        self.probe_wait = 0.0
        self.fail_wait = 0.0
        self.claimed_at = 0.0
        self.sent_at = 0.0


class GroupSender:
    """Sends an agent's unacknowledged groups (see the module docstring) from ``lanes``
    threads, each using its own connections (``transport.send_group(..., lane)``).

    ``claim_holder(seq)`` tells which collector id holds a group's claim (None: nobody).
    ``reclaim(seq, holder) -> bool`` (optional) deletes the claim of a collector whose
    port now refuses connections (``transport.refuses``: its process is gone), so the
    group goes to the next collector at once instead of when that collector's ZooKeeper
    session expires. Collector ids are learned from OK answers
    (``"taken by <id>"``).

    A watchdog (every ``WATCH`` seconds, on lane 0) checks, for each collector, the oldest
    group it took more than ``WATCH`` seconds ago and has not committed: if that
    collector's port refuses connections, or the group's claim is gone while
    ``group_committed(seq)`` says it is not committed (the collector lost it: session
    expired, file discarded), everything that collector took is sent again now instead of
    after ``retransmitMs`` -- even when no new event comes to reveal the failure."""

    PROBE_FIRST, PROBE_MAX = 0.5, 5.0        # seconds between checks of a foreign claim
    WATCH = 5.0                              # seconds between the watchdog's checks
    FAIL_FIRST = 1.0                         # after FAILED from every collector

    def __init__(self, agent: str, wal, transport, clock, metrics: Metrics,
                 retransmit: float, check: float,
                 on_committed: Callable[[list[int]], None],
                 claim_holder: Callable[[int], str | None] | None = None, lanes: int = 1,
                 reclaim: Callable[[int, str], bool] | None = None,
                 group_committed: Callable[[int], bool] | None = None,
                 ack_seconds: Histogram | None = None):
        self.agent = agent
        # group added (written to the WAL) -> acknowledged, for the groups added fresh
        self.ack_seconds = ack_seconds if ack_seconds is not None else Histogram()
        self.reclaim = reclaim
        self.group_committed = group_committed
        self._watch_at = 0.0
        self._ids: dict[int, str] = {}        # endpoint -> collector id (from OK answers)
        self._refusing: dict[int, tuple[float, bool]] = {}   # probe results, cached
        self.lanes = max(1, lanes)
        self.wal = wal
        self.transport = transport
        self.clock = clock
        self.metrics = metrics
        self.retransmit = retransmit
        self.check = check
        self.on_committed = on_committed
        self.claim_holder = claim_holder
        self._cond = threading.Condition()
        self._pending: dict[int, _Pending] = {}
        self._new: deque[int] = deque()
        self._heap: list[tuple[float, int, int]] = []
        self._blocked_until = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._warned = False

    # -------------------------------------------------------------- inputs

    def add(self, groups, fresh: bool = True) -> None:
        """Send ``groups``; ``fresh``: they were just written (their acknowledgement's
        latency is observed in ``ack_seconds``)."""
        now = time.monotonic() if fresh else None
        with self._cond:
            for g in groups:
                if g.seq not in self._pending:
                    p = self._pending[g.seq] = _Pending(g.seq, g.count, g.crc)
                    p.written_at = now
                    self._new.append(g.seq)
            self.metrics.set("acks_pending", len(self._pending))
            self._cond.notify_all()

    def oldest_age(self) -> float:
        """Seconds the oldest group not yet acknowledged has waited since it was added
        (0 when none waits): groups are added in order, so it is the first pending."""
        with self._cond:
            for p in self._pending.values():
                return max(0.0, time.monotonic() - p.added_at)
        return 0.0

    def acked(self, seqs) -> None:
        now = time.monotonic()
        with self._cond:
            for s in seqs:
                p = self._pending.pop(s, None)
                if p is not None and p.written_at is not None:
                    self.ack_seconds.observe(now - p.written_at)
            self.metrics.set("acks_pending", len(self._pending))

    def endpoint_failed(self, endpoint: int) -> None:
        """A collector failed: what it took and did not commit yet is sent again now."""
        with self._cond:
            now = self.clock.monotonic()
            n = 0
            for p in self._pending.values():
                if p.state is SendState.SENT and p.endpoint == endpoint:
                    self._schedule(p, now)
                    n += 1
            if n:
                self.metrics.add("groups_requeued", n)
                self._cond.notify_all()

    # -------------------------------------------------------------- thread

    def start(self) -> None:
        for lane in range(self.lanes):
            t = threading.Thread(target=self._run, args=(lane,), daemon=True,
                                 name=f"e2e-send-{self.agent}-{lane}")
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        interrupt = getattr(self.transport, "interrupt", None)
        threads, self._threads = self._threads, []
        threads = [t for t in threads if t is not threading.current_thread()]
        deadline = time.monotonic() + 0.5
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads) and interrupt is not None:
            interrupt()
        for t in threads:
            t.join(30)

    def drain(self, timeout: float) -> bool:
        """Wait until every group was sent at least once (True), a collector cannot be
        reached, or ``timeout`` seconds passed (False). Used at close: the groups stay in
        the WAL until acknowledged anyway, but sent ones reach the output now."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if not any(s in self._pending for s in self._new):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self._blocked_until > self.clock.monotonic() or \
                        not self._threads:
                    return False
                self._cond.wait(min(left, 0.05))

    def _schedule(self, p: _Pending, when: float) -> None:
        p.gen += 1
        heapq.heappush(self._heap, (when, p.seq, p.gen))

    def _next(self) -> _Pending | None:
        """The next group to send, or None after waiting a little (lock held)."""
        now = self.clock.monotonic()
        if now < self._blocked_until:      # no collector could be reached just now
            self._cond.wait(min(self._blocked_until - now, self.check))
            return None
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, gen = heapq.heappop(heap)
            p = self._pending.get(seq)
            if p is not None and p.gen == gen:
                return p
        while self._new:
            p = self._pending.get(self._new.popleft())
            if p is not None and p.state is SendState.NEW:
                return p
        wait = self.check
        if heap:
            wait = min(wait, max(heap[0][0] - now, 0.001))
        self._cond.wait(wait)
        return None

    def _run(self, lane: int) -> None:
        while not self._stop.is_set():
            if lane == 0 and self.clock.monotonic() >= self._watch_at:
                self._watch_at = self.clock.monotonic() + self.WATCH
                try:
                    self._watch()
                except Exception as exc:     # a check that fails is made again later
                    log.debug("agent %s: watchdog check failed: %s", self.agent, exc)
            with self._cond:
                p = self._next()
            if p is None:
                continue
            try:
                self._send(p, lane)
            except Exception as exc:   # the thread must survive anything
                self.metrics.add("errors")
                log.error("agent %s: sending group %d failed: %s", self.agent, p.seq, exc,
                          exc_info=not isinstance(exc, FlumeError))
                with self._cond:
                    if p.seq in self._pending:
                        self._schedule(p, self.clock.monotonic() + self.check * 4)

    def _send(self, p: _Pending, lane: int = 0) -> None:
        """Send ``p`` once (unless another collector still holds it) and move it to the
        state the answer calls for (:class:`SendState`)."""
        if p.state is SendState.CLAIMED and self.claim_holder is not None:
            if self._claim_still_held(p):
                return
            p.claimed_at = self.clock.monotonic()   # sending again: the next wait starts now
        payload = self.wal.read(p.seq)
        if payload is None:
            return            # acknowledged meanwhile
        try:
            status, message, endpoint = self.transport.send_group(
                self.agent, p.seq, p.crc, payload, p.count, lane)
        except SinkError as exc:
            self._unreachable(p, exc)
            return
        if self._warned:
            self._warned = False
            log.info("agent %s: a collector takes groups again", self.agent)
        now = self.clock.monotonic()
        if status == OK:
            self._taken(p, message, endpoint, now)
        elif status == RETRY:
            self._held_elsewhere(p, now)
        else:
            self._refused(p, message, now)

    def _claim_still_held(self, p: _Pending) -> bool:
        """``p`` is CLAIMED: True, with its next check scheduled, while another collector
        holds it in a file not yet complete and ``retransmit`` has not passed since it
        was claimed (the agent waits until that collector commits -- the acknowledgement
        arrives -- or loses the claim). A holder that cannot be read counts as holding;
        a holder whose process is gone has its claim taken back (:meth:`_reclaimed`)."""
        try:
            holder = self.claim_holder(p.seq)
        except Exception:
            holder = ""
        held = holder is not None and not (holder and self._reclaimed(p, holder))
        if not held or self.clock.monotonic() - p.claimed_at >= self.retransmit:
            return False
        with self._cond:
            if p.seq in self._pending:
                p.probe_wait = step(p.probe_wait, self.PROBE_FIRST, self.PROBE_MAX)
                self._schedule(p, self.clock.monotonic() + p.probe_wait)
        return True

    def _unreachable(self, p: _Pending, exc: SinkError) -> None:
        """No collector could be reached: ``p`` goes first in line again (its state kept)
        and every lane waits ``exc.retry_in`` (at least 0.05 s, at most 1 s)."""
        clock = self.clock
        wait = max(0.05, min(getattr(exc, "retry_in", 0.0) or self.check, 1.0))
        with self._cond:
            if p.seq in self._pending:
                if p.state is SendState.NEW:
                    self._new.appendleft(p.seq)
                else:
                    self._schedule(p, clock.monotonic())
            self._blocked_until = clock.monotonic() + wait
        self.metrics.add("send_errors")
        if not self._warned:
            self._warned = True
            log.warning("agent %s: no collector takes groups now (%s); they wait in "
                        "the WAL", self.agent, exc)

    def _taken(self, p: _Pending, message: str, endpoint: int, now: float) -> None:
        """OK: acknowledged now if the collector found it committed; else SENT to
        ``endpoint``, sent again ``retransmit`` from now unless acknowledged."""
        self.metrics.add("groups_resent" if p.sends else "groups_sent")
        self.metrics.add("events_sent", p.count)
        p.sends += 1
        if message == COMMITTED:
            self.metrics.add("groups_found_committed")
            self.on_committed([p.seq])
            return
        with self._cond:
            if p.seq in self._pending:
                p.state, p.endpoint, p.probe_wait, p.fail_wait = \
                    SendState.SENT, endpoint, 0, 0
                p.sent_at = now
                self._schedule(p, now + self.retransmit)
            if message.startswith(TAKEN_BY):
                self._ids[endpoint] = message[len(TAKEN_BY):]

    def _held_elsewhere(self, p: _Pending, now: float) -> None:
        """RETRY: another collector holds ``p``; CLAIMED (since ``now`` if it was not
        already), checked again soon."""
        self.metrics.add("retries")
        with self._cond:
            if p.seq in self._pending:
                if p.state is not SendState.CLAIMED:
                    p.state, p.claimed_at = SendState.CLAIMED, now
                p.probe_wait = self.PROBE_FIRST if self.claim_holder else \
                    step(p.probe_wait, self.PROBE_FIRST, self.PROBE_MAX)
                self._schedule(p, now + p.probe_wait)

    def _refused(self, p: _Pending, message: str, now: float) -> None:
        """FAILED from every collector: FAILED, sent again after a wait doubling from
        ``FAIL_FIRST`` up to ``retransmit``."""
        self.metrics.add("groups_refused")
        log.warning("agent %s: group %d refused by every collector: %s", self.agent,
                    p.seq, message)
        with self._cond:
            if p.seq in self._pending:
                p.state = SendState.FAILED
                p.fail_wait = step(p.fail_wait, self.FAIL_FIRST, self.retransmit)
                self._schedule(p, now + p.fail_wait)

    def _refuses(self, e: int) -> bool:
        """Collector ``e``'s port refuses connections (probed at most every 0.5 s)."""
        refuses = getattr(self.transport, "refuses", None)
        if refuses is None:
            return False
        now = self.clock.monotonic()
        when, refused = self._refusing.get(e, (-1.0, False))
        if now - when > self.PROBE_FIRST:
            refused = bool(refuses(e))
            self._refusing[e] = (now, refused)
        return refused

    def _reclaimed(self, p: _Pending, holder: str) -> bool:
        """``holder`` claims ``p``: if it is a collector of the chain whose port now refuses
        connections (nothing listens: its process is gone), delete the claim. True if the
        group can be sent again now."""
        if self.reclaim is None:
            return False
        with self._cond:
            endpoints = [e for e, cid in self._ids.items() if cid == holder]
        if not endpoints or not self._refuses(endpoints[0]):
            return False
        try:
            gone = self.reclaim(p.seq, holder)
        except Exception as exc:
            log.debug("agent %s: cannot take back group %d: %s", self.agent, p.seq, exc)
            return False
        if gone:
            self.metrics.add("claims_reclaimed")
            log.info("agent %s: took back group %d from collector %s (its process is "
                     "gone)", self.agent, p.seq, holder)
        return gone

    def _watch(self) -> None:
        """The watchdog (see the class docstring)."""
        now = self.clock.monotonic()
        oldest: dict[int, _Pending] = {}
        with self._cond:
            for p in self._pending.values():
                if p.state is SendState.SENT and now - p.sent_at >= self.WATCH:
                    q = oldest.get(p.endpoint)
                    if q is None or p.seq < q.seq:
                        oldest[p.endpoint] = p
        for e, p in oldest.items():
            if self._refuses(e):
                why = "its port refuses connections"
            elif (self.claim_holder is not None and self.group_committed is not None
                  and self.claim_holder(p.seq) is None and p.seq in self._pending
                  and not self.group_committed(p.seq)):
                why = f"it no longer holds group {p.seq} and did not commit it"
            else:
                continue
            self.metrics.add("collectors_lost")
            log.warning("agent %s: collector %d lost what it took (%s); sending it again",
                        self.agent, e, why)
            self.endpoint_failed(e)


class AckCheckpoint(Checkpoint):
    """A checkpoint with nothing to record whose commit acknowledges a group (an
    ``ackedWriteAhead`` over an ordinary sink: acknowledged when that sink made it
    durable)."""

    __slots__ = ("seq", "callback")

    def __init__(self, seq: int, callback: Callable[[list[int]], None]):
        super().__init__({})
        self.seq = seq
        self.callback = callback

    def after_commit(self, store) -> None:
        self.callback([self.seq])


class LocalTransport:
    """Sends groups into an ordinary (inner) sink: decoded, appended, acknowledged once
    that sink commits the group's :class:`AckCheckpoint` (at-least-once: no ZooKeeper)."""

    def __init__(self, inner, on_durable: Callable[[list[int]], None]):
        self.inner = inner
        self.on_durable = on_durable

    def send_group(self, agent: str, seq: int, crc: int, payload: bytes, count: int,
                   lane: int = 0):
        events = decode_payload(payload)
        self.inner.append(events)
        self.inner.when_durable(AckCheckpoint(seq, self.on_durable))
        return OK, "", 0
