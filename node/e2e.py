"""End-to-end (E2E) mode: effectively-once delivery with ZooKeeper as the commit log.

The protocol is written down in ``docs/e2e.md``; this module holds both halves.

Agent side (used by ``ackedWriteAhead`` / ``agentE2ESink`` / ``agentE2EChain``):

* :class:`AckTracker` learns acknowledgements: it watches ``groups/<agent>`` (a committed
  group's znode *is* its acknowledgement), drops acknowledged groups from the WAL, raises
  ``watermark/<agent>`` to the lowest unacknowledged seq and deletes group znodes below it.
* :class:`GroupSender` sends the WAL's groups in seq order through a *transport*
  (``send_group(agent, seq, crc, payload, count) -> (status, message, endpoint)``, raising
  SinkError when no collector can be reached), resends a group unacknowledged
  ``retransmitMs`` after it was last sent, resends at once what was sent to a collector
  that then failed, and handles RETRY (the group is claimed by another collector) by
  watching that claim go away.

Collector side (used by ``collectorSource`` and ``collectorSink``):

* :func:`collector_group_handler` answers ``appendGroup``: agent id, CRC, payload and
  distinct-agent checks before ZooKeeper is asked anything, then ``claim_group`` (OK
  without writing when the group is committed already or this collector holds it; RETRY
  when another collector holds it), then the events go to the flow with the checkpoint
  key ``e2e:<agent>:<seq>``.
* :class:`Committer` is what ``collectorSink`` does at each roll: one transaction records
  the completed files and their groups (claims checked and deleted, ``groups/...`` and
  ``files/<collector>/<id>`` created), then the hidden files are renamed and the record
  deleted; a refused transaction discards the files. At start it rolls recorded commits
  forward and deletes hidden files of crashed runs.
"""
from __future__ import annotations

import hashlib
import heapq
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
import zlib
from collections import deque
from pathlib import Path
from typing import Callable

from zk.errors import CoordinationError

from .checkpoint import Checkpoint, fsync_dir
from .component import Metrics, NodeContext
from .errors import FlumeError, SinkError
from .codec import BatchTooLarge
from .limits import Refusals
from .rpc import Status, decode_payload

log = logging.getLogger(__name__)

NEEDS_ZK = ("end-to-end mode needs a node managed through ZooKeeper "
            "(flume node --zk or --master)")
KEY_PREFIX = "e2e:"
OK, RETRY, FAILED = Status.OK, Status.RETRY, Status.FAILED
COMMITTED = "committed"     # the message of an OK meaning "acknowledged already"
TAKEN_BY = "taken by "      # the message of an OK: "taken by <collector id>"


# ====================================================================== shared helpers

def group_key(agent: str, seq: int) -> str:
    """The checkpoint key carrying a group's identity from collectorSource to the sink."""
    return f"{KEY_PREFIX}{agent}:{seq}"


def parse_group_key(key: str) -> tuple[str, int] | None:
    if not key.startswith(KEY_PREFIX):
        return None
    agent, _, seq = key[len(KEY_PREFIX):].rpartition(":")
    try:
        return agent, int(seq)
    except ValueError:
        return None


def take_groups(checkpoints: list[Checkpoint]) -> list[tuple[str, int]]:
    """Remove the group keys from ``checkpoints`` (in place: what is left are ordinary
    positions for the local store) and return the groups, in order, without repeats."""
    out: dict[tuple[str, int], None] = {}
    for cp in checkpoints:
        upd = cp.updates
        if not upd:
            continue
        keys = [k for k in upd if k.startswith(KEY_PREFIX)]
        for k in keys:
            g = parse_group_key(k)
            if g is not None:
                out[g] = None
            del upd[k]
    return list(out)


def zk_store_of(ctx: NodeContext):
    """The node's ZooKeeper store; SinkError when the node runs without ZooKeeper."""
    store = ctx.shared.get("zk_store") if ctx.shared is not None else None
    if store is None:
        raise SinkError(NEEDS_ZK)
    return store


# Agent ids name znodes (commits/claims/<agent>, groups/<agent>, watermark/<agent>) and
# come from unauthenticated senders: a collector takes only ids of at most
# AGENT_ID_MAX_BYTES characters of AGENT_ID_CHARS -- hostnames, logical node names, uuids
# fit, and none of these characters is quoted in a znode name, so the znode name is the id.
AGENT_ID_MAX_BYTES = 128
AGENT_ID_CHARS = "A-Za-z0-9 and . _ : @ # ~ + = , -"
_AGENT_ID = re.compile(r"[A-Za-z0-9._:@#~+=,-]+")
MAX_AGENTS = 10_000     # distinct agent ids one collector takes groups from (maxAgents)


def agent_id_problem(agent: str) -> str | None:
    """Why ``agent`` is not an agent id a collector takes; None if it is one. Never quotes
    the id itself (it may be megabytes)."""
    if len(agent) > AGENT_ID_MAX_BYTES:
        return (f"an agent id of {len(agent)} characters (at most "
                f"{AGENT_ID_MAX_BYTES})")
    if not _AGENT_ID.fullmatch(agent) or agent in (".", ".."):
        return (f"agent id {agent!r} is not 1 to {AGENT_ID_MAX_BYTES} characters of "
                f"{AGENT_ID_CHARS} (and not . or ..)")
    return None


def fit_agent_id(name: str) -> str:
    """``name`` if it is a valid agent id, else a stable id that is: up to 100 of its
    valid characters, ``~`` and 16 hex digits of its SHA-256 (logical node names may hold
    any printable character and 200 of them)."""
    if agent_id_problem(name) is None:
        return name
    kept = "".join(_AGENT_ID.findall(name))[:100]
    return f"{kept}~{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def agent_id(ctx: NodeContext) -> str:
    """This agent's name in ZooKeeper: the logical node's name, ``name#k`` for the k-th
    E2E sink of the same flow (k >= 2, in opening order); made to fit by
    :func:`fit_agent_id` when that is not a valid agent id."""
    n = getattr(ctx, "_e2e_agents", 0) + 1
    ctx._e2e_agents = n
    return fit_agent_id(ctx.logical_name if n == 1 else f"{ctx.logical_name}#{n}")


def collector_id(ctx: NodeContext) -> str:
    """This collector's name in ZooKeeper: ``<physical node>-<logical node>``, stable
    across restarts (its commit records are rolled forward under it)."""
    phys = ctx.physical_name or ctx.shared.get("physical_name") or socket.gethostname()
    return f"{phys}-{ctx.logical_name}"


# ====================================================================== agent side

class AckTracker:
    """Learns which groups of ``agent`` are committed (see the module docstring) and
    passes them to ``on_acked(seqs)``. kazoo callbacks only enqueue; one thread works."""

    REFRESH = 10.0   # seconds between full re-reads, a safety net under the watch

    def __init__(self, store, agent: str, wal, on_acked: Callable[[list[int]], None],
                 metrics: Metrics):
        self.store = store
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
        what is acknowledged. ZkError when ZooKeeper does not answer."""
        from zk.client import translate
        try:
            w = self.store.get_watermark(self.agent)
            committed = self.store.list_groups(self.agent)
        except Exception as exc:
            raise translate(exc, f"reading the acknowledgements of {self.agent}") from exc
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
        from kazoo.recipe.watchers import ChildrenWatch
        try:
            path = self.store.groups_path(self.agent)
            self._watch = ChildrenWatch(self.store.client, path, self._on_children)
        except Exception as exc:   # ZooKeeper away: the refresh loop tries again
            log.warning("agent %s: cannot watch its acknowledgements yet: %s",
                        self.agent, exc)

    def _on_children(self, children):
        if self._stop.is_set():
            return False
        self._q.put(("children", children))

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
        backoff = 0.5
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=self.REFRESH)
            except queue.Empty:
                item = ("refresh",)
            items = [item]
            while True:       # coalesce: only the latest children list matters
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if any(i[0] == "stop" for i in items):
                return
            children = None
            explicit: list[int] = []
            refresh = False
            for i in items:
                if i[0] == "children":
                    children = i[1]
                elif i[0] == "acked":
                    explicit.extend(i[1])
                elif i[0] == "refresh":
                    refresh = True
            try:
                if not self.synced:
                    self.sync()
                if self._watch is None:
                    self._start_watch()
                if children is None and (refresh or explicit):
                    children = [str(s) for s in self.store.list_groups(self.agent)]
                self._process(children or [], explicit)
                backoff = 0.5
            except Exception as exc:
                self.metrics.add("ack_errors")
                log.warning("agent %s: processing acknowledgements failed (retrying): %s",
                            self.agent, exc)
                if explicit:
                    self._q.put(("acked", explicit))
                self._q.put(("refresh",))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _process(self, children: list[str], explicit: list[int]) -> None:
        seqs = {int(c) for c in children if c.isdigit()}
        wal = self.wal
        newly = [s for s in seqs if wal.get(s) is not None]
        newly += [s for s in explicit if wal.get(s) is not None]
        self._ack(newly)
        low = wal.lowest_live()
        if low > self.watermark:
            self.watermark = self.store.raise_watermark(self.agent, low)
            self.metrics.set("watermark", self.watermark)
        below = [s for s in seqs if s < self.watermark]
        if below:
            self.store.delete_groups(self.agent, below)


class _Pending:
    __slots__ = ("seq", "count", "crc", "state", "endpoint", "gen", "sends", "probe_wait",
                 "fail_wait", "claimed_at", "sent_at")

    def __init__(self, seq: int, count: int, crc: int):
        self.seq, self.count, self.crc = seq, count, crc
        self.state = "new"        # new | sent | claimed | failed
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
                 group_committed: Callable[[int], bool] | None = None):
        self.agent = agent
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

    def add(self, groups) -> None:
        with self._cond:
            for g in groups:
                if g.seq not in self._pending:
                    self._pending[g.seq] = _Pending(g.seq, g.count, g.crc)
                    self._new.append(g.seq)
            self.metrics.set("acks_pending", len(self._pending))
            self._cond.notify_all()

    def acked(self, seqs) -> None:
        with self._cond:
            for s in seqs:
                self._pending.pop(s, None)
            self.metrics.set("acks_pending", len(self._pending))

    def endpoint_failed(self, endpoint: int) -> None:
        """A collector failed: what it took and did not commit yet is sent again now."""
        with self._cond:
            now = self.clock.monotonic()
            n = 0
            for p in self._pending.values():
                if p.state == "sent" and p.endpoint == endpoint:
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
            if p is not None and p.state == "new":
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
                          exc_info=not isinstance(exc, (FlumeError, CoordinationError)))
                with self._cond:
                    if p.seq in self._pending:
                        self._schedule(p, self.clock.monotonic() + self.check * 4)

    def _send(self, p: _Pending, lane: int = 0) -> None:
        clock = self.clock
        if p.state == "claimed" and self.claim_holder is not None:
            # Another collector holds it in a file not yet complete: wait until that
            # collector commits (the acknowledgement arrives) or loses the claim.
            try:
                holder = self.claim_holder(p.seq)
            except Exception:
                holder = ""
            held = holder is not None
            if holder and self._reclaimed(p, holder):
                held = False
            if held and clock.monotonic() - p.claimed_at < self.retransmit:
                with self._cond:
                    if p.seq in self._pending:
                        p.probe_wait = min(max(p.probe_wait * 2, self.PROBE_FIRST),
                                           self.PROBE_MAX)
                        self._schedule(p, clock.monotonic() + p.probe_wait)
                return
            p.claimed_at = clock.monotonic()   # sending again: the next wait starts now
        payload = self.wal.read(p.seq)
        if payload is None:
            return            # acknowledged meanwhile
        try:
            status, message, endpoint = self.transport.send_group(
                self.agent, p.seq, p.crc, payload, p.count, lane)
        except SinkError as exc:
            wait = max(0.05, min(getattr(exc, "retry_in", 0.0) or self.check, 1.0))
            with self._cond:
                if p.seq in self._pending:
                    if p.state == "new":
                        self._new.appendleft(p.seq)
                    else:
                        self._schedule(p, clock.monotonic())
                self._blocked_until = clock.monotonic() + wait
            self.metrics.add("send_errors")
            if not self._warned:
                self._warned = True
                log.warning("agent %s: no collector takes groups now (%s); they wait in "
                            "the WAL", self.agent, exc)
            return
        if self._warned:
            self._warned = False
            log.info("agent %s: a collector takes groups again", self.agent)
        now = clock.monotonic()
        if status == OK:
            self.metrics.add("groups_resent" if p.sends else "groups_sent")
            self.metrics.add("events_sent", p.count)
            p.sends += 1
            if message == COMMITTED:
                self.metrics.add("groups_found_committed")
                self.on_committed([p.seq])
                return
            with self._cond:
                if p.seq in self._pending:
                    p.state, p.endpoint, p.probe_wait, p.fail_wait = "sent", endpoint, 0, 0
                    p.sent_at = now
                    self._schedule(p, now + self.retransmit)
                if message.startswith(TAKEN_BY):
                    self._ids[endpoint] = message[len(TAKEN_BY):]
        elif status == RETRY:
            self.metrics.add("retries")
            with self._cond:
                if p.seq in self._pending:
                    if p.state != "claimed":
                        p.state, p.claimed_at = "claimed", now
                    p.probe_wait = self.PROBE_FIRST if self.claim_holder else \
                        min(max(p.probe_wait * 2, self.PROBE_FIRST), self.PROBE_MAX)
                    self._schedule(p, now + p.probe_wait)
        else:
            self.metrics.add("groups_refused")
            log.warning("agent %s: group %d refused by every collector: %s", self.agent,
                        p.seq, message)
            with self._cond:
                if p.seq in self._pending:
                    p.state = "failed"
                    p.fail_wait = min(max(p.fail_wait * 2, self.FAIL_FIRST),
                                      self.retransmit)
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
                if p.state == "sent" and now - p.sent_at >= self.WATCH:
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


# ====================================================================== collector side

class CollectorState:
    """What a collector's source and sink share (per logical node): the ZooKeeper store,
    the collector id, and the groups this collector holds claims on:
    ``held[(agent, seq)]`` is ``"claiming"``, ``"queued"`` (handed to the flow, its
    checkpoint key not yet at the sink) or ``"written"`` (the sink has it: in a file not
    yet committed)."""

    def __init__(self, store, cid: str):
        self.store = store
        self.collector_id = cid
        self.lock = threading.Lock()
        self.held: dict[tuple[str, int], str] = {}
        self.sinks = 0            # open E2E sinks of this logical node
        # the flow's source is a collectorSource: its events have no source position to
        # be read again from, so a crashed run's files without E2E groups are salvaged
        self.rpc_source = False
        # set by the collectorSource for each batch it returns (driver thread): True if
        # it holds E2E groups, False if not; None: not known (collectorSink then treats
        # it as possibly holding groups)
        self.batch_has_groups: bool | None = None
        self._after_sinks_left: list[Callable[[], None]] = []
        # every agent id this collector took a group from (for as long as the node runs):
        # each leaves persistent znodes, so their number is bounded (admit_agent)
        self.agents: set[str] = set()

    def admit_agent(self, agent: str, limit: int) -> bool:
        """True if groups of ``agent`` may be taken: known already, or one of the first
        ``limit`` distinct agents."""
        with self.lock:
            if agent in self.agents:
                return True
            if len(self.agents) >= limit:
                return False
            self.agents.add(agent)
            return True

    def when_sinks_left(self, action: Callable[[], None]) -> bool:
        """Run ``action`` once no E2E sink of this node is open any more (from the last
        one's close); False, without running it, if none is open now."""
        with self.lock:
            if self.sinks <= 0:
                return False
            self._after_sinks_left.append(action)
            return True

    def sink_left(self) -> None:
        """An E2E sink closed (or failed to open): count it out, then give up the claims
        of groups no sink will write, then run what waited for the last sink."""
        with self.lock:
            self.sinks -= 1
            actions = self._after_sinks_left if self.sinks <= 0 else []
            if actions:
                self._after_sinks_left = []
        self.release_queued()
        for action in actions:
            try:
                action()
            except Exception as exc:
                log.warning("collector %s: %s", self.collector_id, exc)

    def forget(self, groups) -> None:
        with self.lock:
            for g in groups:
                self.held.pop(g, None)

    def mark(self, groups, state: str) -> None:
        with self.lock:
            for g in groups:
                if g in self.held:
                    self.held[g] = state

    def any_queued(self) -> bool:
        """Some group is in the flow and its checkpoint has not reached the sink yet."""
        with self.lock:
            return any(st == "queued" for st in self.held.values())

    def release_queued(self) -> None:
        """Give up the claims of groups that never reached a file (the flow stopped)."""
        with self.lock:
            lost = [g for g, st in self.held.items() if st in ("queued", "claiming")]
            for g in lost:
                del self.held[g]
        if lost:
            try:
                self.store.release_claims(lost)
                log.info("collector %s released %d claims of groups it will not write",
                         self.collector_id, len(lost))
            except Exception as exc:
                log.warning("collector %s: releasing claims failed (they go with its "
                            "session): %s", self.collector_id, exc)


_STATES_LOCK = threading.Lock()


def collector_state(ctx: NodeContext) -> CollectorState:
    """The :class:`CollectorState` of ``ctx``'s logical node (created once)."""
    store = zk_store_of(ctx)
    with _STATES_LOCK:
        states = ctx.shared.setdefault("e2e_collectors", {})
        st = states.get(ctx.logical_name)
        if st is None or st.store is not store:
            st = states[ctx.logical_name] = CollectorState(store, collector_id(ctx))
        return st


class GroupHandler:
    """Answers ``appendGroup`` for a ``collectorSource`` (docs/e2e.md, collector step 1).

    Everything is checked before ZooKeeper is asked anything, so a call answered FAILED
    leaves no znode: the agent id (:func:`agent_id_problem`), the checksum, the payload
    (decoded within ``limits``: the source's ``(max_bytes, max_events)``), its event
    count, and the number of distinct agents (at most ``max_agents``; a group of one more
    agent is FAILED until the node restarts). Each refusal is counted and logged through
    ``refusals`` (the source's: ``refused_malformed``, ``refused_agents``,
    ``refused_bytes``/``refused_decompressed``/``refused_events``)."""

    def __init__(self, ctx: NodeContext, enqueue: Callable[[list, dict], bool]):
        self.ctx = ctx
        self.enqueue = enqueue
        self.limits: tuple[int | None, int | None] = (None, None)
        self.max_agents = MAX_AGENTS
        self.state = collector_state(ctx)
        self.metrics = Metrics()
        self.refusals = Refusals(self.metrics, log, f"collector {self.state.collector_id}")

    def _refuse(self, reason: str, message: str) -> tuple[int, str]:
        self.refusals.refuse(reason, message)
        return FAILED, message

    def append_group(self, agent: str, seq: int, checksum: int, payload: bytes,
                     count: int) -> tuple[int, str]:
        m = self.metrics
        problem = agent_id_problem(agent)
        if problem is not None:
            m.add("groups_corrupt")
            return self._refuse("malformed", f"group {seq} refused: {problem}")
        if zlib.crc32(payload) != checksum & 0xFFFFFFFF:
            m.add("groups_corrupt")
            return self._refuse("malformed", f"group {agent}:{seq}: checksum mismatch")
        st = self.state
        if st.sinks <= 0:
            return FAILED, ("this collector's flow has no end-to-end sink (collectorSink "
                            "directly under its source): it cannot acknowledge groups")
        try:
            events = decode_payload(payload, *self.limits)
        except BatchTooLarge as exc:
            m.add("groups_corrupt")
            return self._refuse(exc.reason, f"group {agent}:{seq}: batch too large: {exc}")
        except ValueError as exc:
            m.add("groups_corrupt")
            return self._refuse("malformed", f"group {agent}:{seq}: bad payload: {exc}")
        if len(events) != count:
            m.add("groups_corrupt")
            return self._refuse("malformed", f"group {agent}:{seq} holds {len(events)} "
                                             f"events, the call says {count}")
        if not st.admit_agent(agent, self.max_agents):
            return self._refuse("agents", f"group {agent}:{seq}: this collector takes "
                                          f"groups from {self.max_agents} distinct agents "
                                          f"at most (maxAgents)")
        key = (agent, seq)
        with st.lock:
            cur = st.held.get(key)
            if cur is None:
                st.held[key] = "claiming"
        if cur is not None:
            if cur == "claiming":
                return RETRY, f"group {agent}:{seq} is being taken"
            m.add("groups_duplicate")
            return OK, TAKEN_BY + st.collector_id   # ours already: in the flow or a file
        try:
            outcome = st.store.claim_group(agent, seq, st.collector_id)
        except Exception as exc:
            st.forget([key])
            m.add("zk_errors")
            return RETRY, f"ZooKeeper unavailable: {exc}"
        if outcome == "committed":
            st.forget([key])
            m.add("groups_committed_already")
            return OK, COMMITTED
        if outcome == "held":
            st.forget([key])
            m.add("groups_held_elsewhere")
            return RETRY, f"group {agent}:{seq} is held by another collector"
        st.mark([key], "queued")
        if not self.enqueue(events, {group_key(agent, seq): count}):
            st.forget([key])
            self._release([key])
            return RETRY, "collector busy: try again"
        m.add("groups_accepted")
        return OK, TAKEN_BY + st.collector_id

    def _release(self, groups) -> None:
        try:
            self.state.store.release_claims(groups)
        except Exception:
            pass    # it goes with the session, or a resend finds it ours

    def close(self) -> None:
        """The collectorSource closed: what it told the sink no longer holds (the next
        flow of this logical node may have another source)."""
        st = self.state
        st.rpc_source = False
        st.batch_has_groups = None


def collector_group_handler(ctx: NodeContext, enqueue) -> GroupHandler:
    """The ``appendGroup`` handler a ``collectorSource`` delegates to (ZooKeeper needed)."""
    handler = GroupHandler(ctx, enqueue)
    handler.state.rpc_source = True
    return handler


# ---------------------------------------------------------------------- commits

def file_url(f, path: str) -> str:
    """A dfs file's ``path`` as a URL (plain path for local files)."""
    if f.local:
        return path
    return f.fs.unstrip_protocol(path)


def _fs_of(url: str):
    from fsspec.core import url_to_fs
    return url_to_fs(url)


class HiddenJournal:
    """A local list of the hidden files a collector has open, so the hidden files of a
    crashed run are found at start. Append-only lines: ``+path`` (opened), ``~path``
    (opened, salvageable), ``!path`` (holds E2E groups: never salvage), ``-path`` (done).
    Each line is written before the data it describes."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def add(self, url: str, mark: str = "+") -> None:
        self._write(f"{mark}{url}\n")

    def mark(self, urls, mark: str) -> None:
        self._write("".join(f"{mark}{u}\n" for u in urls))

    def remove(self, urls) -> None:
        self._write("".join(f"-{u}\n" for u in urls))

    def _write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)

    def entries(self) -> dict[str, str]:
        """Hidden files not done: path -> mark (``+``, ``~`` or ``!``; ``!`` sticks)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        live: dict[str, str] = {}
        for line in lines:
            mark, url = line[:1], line[1:]
            if mark in "+~!" and mark and url:
                live[url] = "!" if live.get(url) == "!" else mark
            elif mark == "-":
                live.pop(url, None)
        return live

    def reset(self, keep=()) -> None:
        with self._lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(f"!{u}\n" for u in keep), encoding="utf-8")
            os.replace(tmp, self.path)


def _exists(url: str) -> bool:
    if "://" not in url:
        return os.path.exists(url)
    fs, p = _fs_of(url)
    return fs.exists(p)


def _rename(src: str, dst: str) -> None:
    if "://" not in src:
        os.replace(src, dst)
        return
    fs, s = _fs_of(src)
    _, d = _fs_of(dst)
    fs.mv(s, d)


def _remove(url: str) -> None:
    try:
        if "://" not in url:
            os.unlink(url)
        else:
            fs, p = _fs_of(url)
            fs.rm(p)
    except FileNotFoundError:
        pass


def _final_of(hidden: str) -> tuple[str, str, str]:
    """(directory, base name, compression extension) of the final file a dfs hidden file
    ``dir/.NAME[.N].tmp`` was to become."""
    sep = "/" if "://" in hidden else os.sep
    d, _, name = hidden.rpartition(sep)
    name = name[1:-len(".tmp")] if name.startswith(".") and name.endswith(".tmp") else name
    for ext in (".gz", ".zst"):
        stem, e, n = name.rpartition(ext + ".")
        if e and n.isdigit():        # NAME.gz.1 -> the reserved hidden variant
            name = stem + ext
    ext = ".gz" if name.endswith(".gz") else ".zst" if name.endswith(".zst") else ""
    base = name[:len(name) - len(ext)] if ext else name
    return d, base, ext


def salvage(hidden: str) -> str:
    """Make the hidden file of a crashed run final, cut after its last complete line
    (line formats; gzip and zstd streams are decoded as far as they go and written
    again). Returns the final path."""
    d, base, ext = _final_of(hidden)
    sep = "/" if "://" in hidden else os.sep
    final, n = f"{d}{sep}{base}{ext}", 0
    while _exists(final):
        n += 1
        final = f"{d}{sep}{base}.{n}{ext}"
    if "://" in hidden:
        fs, hp = _fs_of(hidden)
        data = fs.cat_file(hp)
    else:
        with open(hidden, "rb") as f:
            data = f.read()
    if ext == ".gz":
        plain = zlib.decompressobj(31).decompress(data)
    elif ext == ".zst":
        import zstandard
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    else:
        plain = data
    plain = plain[:plain.rfind(b"\n") + 1]
    if ext == ".gz":
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        out = c.compress(plain) + c.flush()
    elif ext == ".zst":
        import zstandard
        out = zstandard.ZstdCompressor(level=3).compress(plain)
    else:
        out = plain
    # Each step leaves the hidden file with the same events, so a crash here and a second
    # salvage at the next start give the same final file.
    if "://" in hidden:
        if out is not data:
            fs.pipe_file(hp, out)
        _rename(hidden, final)
        return final
    if out is not data:
        if ext:
            tmp = hidden + ".salvage"
            with open(tmp, "wb") as f:
                f.write(out)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, hidden)
        else:
            with open(hidden, "r+b") as f:
                f.truncate(len(out))
                os.fsync(f.fileno())
    os.replace(hidden, final)
    fsync_dir(Path(d or "."))
    return final


class Committer:
    """A collectorSink's commit protocol (docs/e2e.md, collector steps 2-4). With
    ``state`` None (no ZooKeeper) only the hidden-file journal is kept."""

    def __init__(self, ctx: NodeContext, state: CollectorState | None, metrics: Metrics):
        self.ctx = ctx
        self.state = state
        self.metrics = metrics
        self.journal = HiddenJournal(ctx.component_dir("collector") / "hidden-files")
        self.unresolved: dict[str, tuple] = {}   # file id -> (pairs, groups, checkpoints)
        self.records_left: list[str] = []        # applied, renamed, record not deleted

    # -------------------------------------------------------------- start

    def recover(self) -> None:
        """Roll forward this collector's recorded commits, then delete the hidden files of
        crashed runs that no record names."""
        protected: set[str] = set()
        if self.state is not None:
            st = self.state
            try:
                records = st.store.file_records(st.collector_id)
            except Exception as exc:
                raise SinkError(f"collectorSink: cannot read the commit records of "
                                f"{st.collector_id} from ZooKeeper: {exc}") from exc
            for fid, rec in records.items():
                pairs = [tuple(p) for p in rec.get("files", [])]
                if self._finish_renames(pairs, fid, recovering=True):
                    try:
                        st.store.delete_file_record(st.collector_id, fid)
                    except Exception as exc:
                        log.warning("collector %s: cannot delete commit record %s yet: %s",
                                    st.collector_id, fid, exc)
                else:
                    protected.update(h for h, _ in pairs)
        orphans = {u: m for u, m in self.journal.entries().items() if u not in protected}
        removed = salvaged = 0
        for u, mark in orphans.items():
            try:
                if not _exists(u):
                    continue
                if mark == "~":
                    final = salvage(u)
                    salvaged += 1
                    log.info("collectorSink salvaged the events of a crashed run (no E2E "
                             "group among them)", extra={"file": final})
                else:
                    _remove(u)
                    removed += 1
            except Exception as exc:
                protected.add(u)
                log.warning("collectorSink: cannot clean up the hidden file %s of a crashed "
                            "run: %s", u, exc)
        if removed:
            self.metrics.add("orphans_removed", removed)
            log.info("collectorSink removed %d incomplete hidden files of a crashed run",
                     removed)
        if salvaged:
            self.metrics.add("files_salvaged", salvaged)
        self.journal.reset(keep=[u for u in protected])

    def _finish_renames(self, pairs: list[tuple[str, str]], fid: str,
                        recovering: bool = False) -> bool:
        """Rename every recorded hidden file still there; True once all are final."""
        ok = True
        for hidden, final in pairs:
            try:
                if _exists(final):
                    continue
                if _exists(hidden):
                    _rename(hidden, final)
                    if recovering:
                        self.metrics.add("rolled_forward")
                        log.info("collectorSink rolled a recorded commit forward",
                                 extra={"final": final})
                    if "://" not in final:
                        fsync_dir(Path(os.path.dirname(final) or "."))
                else:
                    self.metrics.add("errors")
                    log.error("collectorSink: a committed file is missing (neither %s nor "
                              "%s exists); its events are lost", hidden, final)
            except Exception as exc:
                ok = False
                self.metrics.add("errors")
                log.error("collectorSink: cannot finish recorded commit %s (%s -> %s): %s",
                          fid, hidden, final, exc)
        return ok

    # -------------------------------------------------------------- each roll

    def commit(self, files: list, finals: list[str], pending: list[Checkpoint],
               groups: list[tuple[str, int]]) -> bool:
        """Make ``files`` (completed, fsynced hidden files) final under ``finals`` with
        their ``groups`` committed, then commit ``pending`` (positions only now) locally.
        False when the commit was refused and the files discarded. Never raises for a
        refused or undecided commit (the agents resend what is not acknowledged)."""
        self.resolve()
        st = self.state
        pairs = [(file_url(f, f.hidden), file_url(f, fin)) for f, fin in zip(files, finals)]
        fid = f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}"
        record = {"files": pairs, "groups": len(groups), "events": sum(f.events for f in files)}
        try:
            applied, why = st.store.commit_groups(st.collector_id, fid, record, groups,
                                                  f"{st.collector_id}/{fid}".encode())
        except Exception as exc:
            self.metrics.add("commits_undecided")
            self.unresolved[fid] = (pairs, groups, pending)
            log.error("collector %s: the outcome of a commit is unknown (ZooKeeper: %s); "
                      "its files stay hidden until it is known", st.collector_id, exc)
            return False
        if not applied:
            self._discard(pairs, groups, why)
            return False
        self._after_applied(fid, pairs, groups, pending)
        return True

    def _after_applied(self, fid: str, pairs, groups, pending) -> None:
        st = self.state
        if self._finish_renames(pairs, fid):
            try:
                st.store.delete_file_record(st.collector_id, fid)
            except Exception:
                self.records_left.append(fid)
        else:
            self.records_left.append(fid)
        st.forget(groups)
        self.journal.remove([h for h, _ in pairs])
        self.metrics.add("files_committed", len(pairs))
        self.metrics.add("groups_committed", len(groups))
        self.ctx.store.commit(pending)

    def _discard(self, pairs, groups, why: str) -> None:
        st = self.state
        for hidden, _ in pairs:
            try:
                _remove(hidden)
            except Exception as exc:
                log.warning("collectorSink: cannot delete discarded file %s: %s", hidden, exc)
        self.journal.remove([h for h, _ in pairs])
        st.forget(groups)
        try:
            st.store.release_claims(groups)
        except Exception:
            pass
        self.metrics.add("files_discarded", len(pairs))
        self.metrics.add("groups_rejected", len(groups))
        log.warning("collector %s discarded a file instead of committing it (%s); the "
                    "agents send its %d groups again", st.collector_id, why, len(groups))

    def resolve(self) -> None:
        """Decide commits whose outcome was unknown, finish leftover record deletions."""
        st = self.state
        if st is None:
            return
        for fid in list(self.unresolved):
            pairs, groups, pending = self.unresolved[fid]
            try:
                applied = st.store.zk.exists(st.store.e2e_path(
                    "files", st.collector_id, fid)) is not None
            except Exception:
                return        # still no ZooKeeper
            del self.unresolved[fid]
            if applied:
                self._after_applied(fid, pairs, groups, pending)
            else:
                self._discard(pairs, groups, "the commit did not happen")
        for fid in list(self.records_left):
            try:
                st.store.delete_file_record(st.collector_id, fid)
                self.records_left.remove(fid)
            except Exception:
                return

    def commit_late(self, groups: list[tuple[str, int]]) -> None:
        """Record groups whose events went to a file already made final without them (their
        checkpoint came after the roll): not atomic with the file, so a crash right here
        could duplicate them. Logged; counted in ``late_commits``."""
        st = self.state
        self.metrics.add("late_commits", len(groups))
        log.warning("collector %s: %d groups reached a file before their checkpoint; "
                    "committing them after the file", st.collector_id, len(groups))
        try:
            applied, why = st.store.commit_groups(st.collector_id, None, None, groups,
                                                  f"{st.collector_id}/late".encode())
        except Exception as exc:
            applied, why = False, str(exc)
        st.forget(groups)
        if not applied:
            self.metrics.add("errors")
            log.error("collector %s: late groups could not be committed (%s); they may "
                      "be written twice", st.collector_id, why)
