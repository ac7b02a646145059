"""Agent sinks in best-effort and disk-failover mode (README.md, reliability modes):
``agentBESink(["host"[, port=35853]])``, ``agentDFOSink(...)`` and the chains
``agentBEChain("h1[:p1]", "h2[:p2]", ...)``, ``agentDFOChain(...)``.

All of them send to an ordered list of collectors (one for the ``*Sink`` forms), each batch
as one ``appendPacked`` call answered by the collector (so a broken connection is always
detected), encoded once whichever collector takes it:

* The first collector that is not backing off gets the batch. One that fails (connection,
  timeout, FAILED, or busy -- RETRY -- more than ``rpcSink.RETRY_LIMIT`` times in a row) is
  skipped for ``checkMs``, doubling up to ``maxMs``, then tried first again (the primary
  is preferred as soon as it is back).
* **BE**: when no collector takes a batch it is dropped, and counted: in ``dropped`` when
  no collector can have it (the connection could not be made, the collector answered
  FAILED or stayed busy), in ``unknown`` when a call failed after its request was sent
  (a timeout: the collector may have written it). The identity: events lost =
  ``dropped``; ``unknown`` = delivered or lost; ``events_in`` = ``events_out`` +
  ``dropped`` + ``unknown`` once every lane is idle. The sink never raises. Collectors
  still backing off are not tried, so an outage costs no time per batch -- but before
  dropping because every collector is backing off, one is probed (a connection of at
  most 1 s, one at a time, at most every 50 ms: ``probes``), so a collector that came
  back takes the backlog at once instead of after its backoff. Up to ``lanes`` batches
  (default 3) are in flight at once, each lane a thread with its own connection to each
  collector: ``append`` returns as soon as a lane took the batch (it blocks while every
  lane is busy), and a checkpoint is committed once every batch appended before it was
  sent or dropped. Batches may therefore reach the collector out of order; ``lanes=1``
  keeps the order.
* **DFO**: the collector list sits under :mod:`diskFailover <node.decorators.disk_failover>`
  (``maxMs``, ``checkMs``): a batch no collector takes is spooled to disk and replayed in
  the background, in order; the replay tries every collector, backing off or not. A
  batch whose call timed out keeps its id when it is replayed (and the replay waits
  longer each time, up to 8 times ``timeoutMs``), so a collector that wrote it, or is
  still writing it, answers without writing it again: effectively once, short of a
  collector restart between writing and answering. Such a batch is resent to that
  collector only (up to ``UNKNOWN_PIN_SECONDS``, see :class:`CollectorChain`), since
  another one would write it too. A batch sent in pieces (over the bounds below) whose
  later piece failed is resent without the pieces a collector already answered OK.

Options (OG's names): ``batchCount=n`` (> 1: appends are gathered until n events are
waiting, then sent as one call), ``batchMillis=ms`` (a partial gathering is sent at the
latest ``ms`` after its first event; 0 = only when n is reached or at close -- as OG),
``compression=true`` (or ``"gzip"``: each call's payload is gzip-compressed; the receiving
RPC source recognises it, the events arrive as they were). A batch over
``node.rpc.SEND_BATCH_EVENTS`` (10,000) events or ``SEND_BATCH_BYTES`` (8 MiB encoded) is
sent as several calls, so that a receiver with default bounds takes every call. Unlike OG there are no batch
events on the wire: the collector needs no ``unbatch``/``gunzip``. ``timeoutMs`` bounds a
call (connect: at most 5 s).

Every call carries a batch id and the caller's deadline (node/rpc.py). Counters of the
agent sink (summed from its parts after each append): ``events_in``, ``events_out``
(sent), ``bytes_out``, ``retries`` (RETRY answers), ``failovers``, ``dropped``,
``unknown``, ``probes`` (BE), ``spooled``, ``replayed`` (events replayed from the spool),
``spool_bytes``, ``send_errors`` (DFO).

Reconfiguration: the k-th agent sink of a logical node keeps its sender id, the ids of its
unsettled batches (with where their outcome is unknown) and its counters when the node is
configured again -- with any agent sink, e.g. a DFO chain that an auto chain changed when a
collector failed -- since the spool it replays is the same: a collector that wrote a batch
before the change recognises its replay after it. They are kept in the physical node's
memory (``NodeShared.agent_sinks``), not on disk: a restart of the node starts a new sender
(as the collectors' windows are in memory too, a restarted collector would not know the
old ids either); a batch whose outcome was unknown at the restart may be written twice.
"""
from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Annotated

from annotated_types import Ge, Interval

from ..backoff import Backoff
from ..checkpoint import Checkpoint
from ..codec import decode_events, encode_events, split_events
from ..component import Component, NodeContext, Sink
from ..decorators.acked_write_ahead import Compress, compression_flag
from ..decorators.batch import BatchDecorator
from ..decorators.disk_failover import DiskFailoverDecorator
from ..errors import DeliveryUnknown, SinkError
from ..event import Event
from ..metrics import own_report
from ..registry import NonNegative, PeerPort, Positive, sink
from .. import rpc
from ..rpc import DEFAULT_PORT, BatchIds, RpcClient, gzip_payload
from .rpc import RETRY_LIMIT, deliver

log = logging.getLogger(__name__)

CHAIN_COUNTERS = ("events_out", "bytes_out", "retries", "failovers", "dropped", "unknown",
                  "probes", "unknown_released")
BE_LANES = 3        # batches in flight at once in best-effort mode
PROBE_EVERY = 0.05  # seconds between two probes of a collector backing off (BE)
PROBE_TIMEOUT = 1.0  # seconds a probe's connection may take
# seconds a batch whose outcome at a collector is unknown is sent to that collector only
# (it waits alone, parked in the spool: the others flow to the other collectors)
UNKNOWN_PIN_SECONDS = 600.0
# seconds a collector that left a call unanswered gets no new batches, doubling each
# time it does so again up to AVOID_MAX_SECONDS, ended by an answer
AVOID_SECONDS = 30.0
AVOID_MAX_SECONDS = 240.0
CLOSE_GRACE = 5.0   # seconds BE's close waits for batches in flight before cutting them
DFO_COUNTERS = ("spooled", "replayed", "spool_bytes", "send_errors", "corrupt", "disk_full",
                "disk_free_bytes")


def collector_address(host: str, port: int) -> str:
    """The ``"host:port"`` text of a single-collector sink's arguments."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``"host"``, ``"host:port"`` or ``"[v6addr]:port"`` -> (host, port); ValueError."""
    text = text.strip()
    if not text:
        raise ValueError("empty collector address")
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad collector address {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad collector address {text!r}")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = _port(p, text)
    if not host:
        raise ValueError(f"bad collector address {text!r}: no host")
    return host, port


def _port(p: str, text: str) -> int:
    try:
        port = int(p)
    except ValueError:
        raise ValueError(f"bad port in collector address {text!r}") from None
    if not 0 < port <= 65535:
        raise ValueError(f"port out of range in collector address {text!r}")
    return port


# The checks the agent sinks declare on their arguments (see node/registry.py).
CollectorText = Annotated[str, parse_address]    # one of a chain's collectors
BatchCount = Annotated[int, Ge(1)]
Lanes = Annotated[int, Interval(ge=1, le=16)]


def check_collectors(args) -> None:
    """The rule across an agent sink's collector arguments: a chain names at least one
    collector; a single sink's host and port make an address."""
    if "collectors" in args:
        if not args["collectors"]:
            raise ValueError("at least one collector is needed")
    else:
        parse_address(collector_address(args["host"], args["port"]))


class CollectorEndpoint:
    """One collector of an agent's list: a connection per sending lane, and the backoff
    state the lanes share (the E2E chain uses it too)."""

    __slots__ = ("clients", "retry_at", "backoff", "probed_at", "probing", "avoid_until",
                 "avoid")

    def __init__(self, host: str, port: int, timeout: float, backoff: Backoff,
                 lanes: int = 1, tls: ssl.SSLContext | None = None):
        self.clients = [RpcClient(host, port, timeout, connect_timeout=min(timeout, 5.0),
                                  tls=tls) for _ in range(lanes)]
        self.retry_at = 0.0
        self.backoff = backoff
        self.probed_at = float("-inf")   # when a probe last began (BE, backing off)
        self.probing = False
        # after a call without answer (not BE): no new batches until then
        self.avoid_until = 0.0
        self.avoid = Backoff(AVOID_SECONDS, AVOID_MAX_SECONDS)

    @property
    def address(self) -> str:
        return self.clients[0].address

    def back_off(self, now: float) -> None:
        """After a failure: skip it for the next delay of its backoff."""
        self.retry_at = now + self.backoff.next_delay()

    def took(self) -> None:
        """It answered: no backoff, nothing to avoid."""
        self.backoff.reset()
        self.retry_at = 0.0
        self.avoid.reset()
        self.avoid_until = 0.0

    def unanswered(self, now: float) -> None:
        """A call got no answer (it may hang): no new batches for the next delay of its
        avoidance (``AVOID_SECONDS``, doubling up to ``AVOID_MAX_SECONDS``)."""
        self.avoid_until = now + self.avoid.next_delay()

    def close(self) -> None:
        for client in self.clients:
            client.close()


class CollectorChain(Sink):
    """Sends each batch to the first collector that takes it (see the module docstring).

    ``drop``: when none takes it, count it and return (BE) instead of raising SinkError
    -- ``dropped`` when no collector can have taken it, ``unknown`` when a call failed
    after its request was sent (a timeout: the collector may have written it); when
    every collector is backing off, one is probed first (below). Otherwise the batch's
    id is kept for its resend (:class:`node.rpc.BatchIds`) and SinkError raised --
    :class:`~node.errors.DeliveryUnknown` if a call's outcome is unknown.
    ``last_resort``: when every collector not backing off failed, try the ones backing
    off too (DFO's replay). ``open`` never fails: connections are made on use.
    ``lanes``: how many threads may call :meth:`append_encoded` at once, each with its own
    ``lane`` number (and so its own connections); the backoff state is shared.

    Probes (BE): before a batch is dropped because every collector is backing off, a
    lane tries to connect to one (``PROBE_TIMEOUT`` at most; one probe at a time per
    collector, ``PROBE_EVERY`` apart; counted in ``probes``); if it connects the batch
    is sent there. A collector that comes back is used within ``PROBE_EVERY`` instead
    of after the rest of its backoff, so a backlog sent meanwhile is not dropped.

    Unknown outcomes (not BE): a call that failed after its request was sent (a timeout,
    a link cut while the collector wrote) is not tried on another collector, and its
    resend (a DFO replay) goes to that same collector for ``UNKNOWN_PIN_SECONDS``: only
    it knows the batch's id, so it answers "already taken" if it wrote it, where another
    collector would write it a second time. Past that bound (a collector gone for good),
    or as soon as that collector refuses connections (it stopped: its window is gone), the
    batch goes to any collector, and may then be written twice. BE sends on to the
    next collector at once: delivery first, a duplicate possible.

    Such a collector (one holding a batch of unknown outcome, or one that left a call
    unanswered less than ``AVOID_SECONDS`` ago -- doubling each time it does so
    again, up to ``AVOID_MAX_SECONDS``, back to nothing once it answers) gets no new
    batch: they go to the other collectors at once, so a hung collector costs one call's
    timeout, not a stall of the flow. Only a ``resend`` (DFO's replay) tries it when no
    other collector took the batch, and only the pinned batch waits for it. When every
    collector is avoided, a new batch fails at once (DFO spools it)."""

    spec_name = "collectors"

    def __init__(self, addresses: list[tuple[str, int]], *, compress: bool = False,
                 timeout: float = 20.0, initial: float = 1.0, maximum: float = 10.0,
                 drop: bool = False, last_resort: bool = False, lanes: int = 1):
        super().__init__()
        self.addresses = addresses
        self.compress = compress
        self.timeout = timeout
        self.initial = initial
        self.maximum = maximum
        self.drop = drop
        self.last_resort = last_resort
        self.lanes = max(1, lanes)
        self.retry_limit = RETRY_LIMIT
        self.collectors: list[CollectorEndpoint] = []
        self.ids: BatchIds | None = None     # kept across reopening: resends keep their id
        self.current: str | None = None
        self._dropping = False
        self._cut = False                # interrupted: calls fail at once from now on
        self._lock = threading.Lock()    # backoff state and counters, shared by lanes

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._cut = False
        if self.ids is None:
            self.ids = BatchIds(ctx.logical_name)
        self.collectors = [CollectorEndpoint(h, p, self.timeout,
                                             Backoff(self.initial, self.maximum), self.lanes,
                                             ctx.transport.client)
                           for h, p in self.addresses]

    def append(self, events: list[Event]) -> None:
        if events:
            self.append_encoded(encode_events(events), len(events))

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.metrics.add(name, n)

    def append_encoded(self, data: bytes, count: int, lane: int = 0,
                       timeout: float | None = None, resend: bool = False) -> None:
        """Send one batch already in the codec encoding (what diskFailover spools) on
        connection ``lane``, each call waiting ``timeout`` seconds (default: the chain's)
        for its answer; one over the senders' bounds (a spool written before them) is
        sent in pieces. ``resend``: a replay, which may try avoided collectors last."""
        if count > 1 and (count > rpc.SEND_BATCH_EVENTS or len(data) > rpc.SEND_BATCH_BYTES):
            # (one event alone over the bound is sent as it is: the receiver decides)
            pieces = split_events(decode_events(data), rpc.SEND_BATCH_EVENTS,
                                  rpc.SEND_BATCH_BYTES)
            # a resend (the whole batch, spooled when a piece failed) skips the pieces a
            # collector took already: they were written
            taken = self.ids.pieces_taken(data)
            kept = bool(taken)
            try:
                for i, piece in enumerate(pieces):
                    if i not in taken:
                        self.append_encoded(encode_events(piece), len(piece), lane, timeout,
                                            resend)
                        taken.add(i)
            except SinkError:
                self.ids.keep_pieces(data, taken)
                raise
            if kept:
                self.ids.keep_pieces(data, set())
            return
        payload = gzip_payload(data) if self.compress else data
        batch = self.ids.take(data)
        now = self.ctx.clock.monotonic()
        pin = None if self.drop else self.ids.pinned(data)
        held = [c for c in self.collectors if pin is not None and c.address == pin[0]
                and now - pin[1] < UNKNOWN_PIN_SECONDS]
        if pin is not None and not held:
            # waited its bound (or its collector left the list): any collector now
            self._released(count, f"it waited {now - pin[1]:.0f} s for collector {pin[0]} "
                                  f"(where its outcome is unknown)", logging.WARNING)
        avoided: list[CollectorEndpoint] = []
        if held:        # its outcome there is unknown: ask there again, and only there
            ready = [c for c in held if c.retry_at <= now or self.last_resort]
        else:
            pin = None
            candidates = self.collectors
            if not self.drop:       # no new batch for a collector that may hang
                unknown_at = self.ids.unknown_at()
                avoided = [c for c in self.collectors
                           if c.address in unknown_at or c.avoid_until > now]
                candidates = [c for c in self.collectors if c not in avoided]
            ready = [c for c in candidates if c.retry_at <= now]
            if self.last_resort:
                ready += [c for c in candidates if c.retry_at > now]
                if resend:
                    ready += avoided
            elif not ready and self.drop:
                ready = self._probe(lane)
        errors = []
        unknown = pin is not None
        unknown_at = pin[0] if pin is not None else None
        counters = _LockedCounters(self)
        for c in ready:
            client = c.clients[lane]

            def call():
                if self._cut:
                    raise SinkError("agent sink closing: call cut")
                return client.append_payload(payload, count, batch, timeout)
            start = time.monotonic()
            try:
                deliver(call, self.ctx, counters, f"collector {client.address}",
                        self.retry_limit)
            except SinkError as exc:
                errors.append(str(exc))
                self._failed(c, lane)
                if isinstance(exc, DeliveryUnknown):
                    unknown = True
                    if not self.drop:
                        with self._lock:
                            c.unanswered(self.ctx.clock.monotonic())
                        unknown_at = c.address
                        break      # another collector would write it twice if this one did
                elif held and _refused(exc):
                    # nothing listens there: the collector stopped, and its window (in
                    # memory) with it -- waiting for it no longer saves a duplicate
                    self._released(count, f"collector {c.address} refuses connections "
                                          f"(it stopped, and its memory of batch ids with "
                                          f"it)", logging.INFO)
                    self.ids.unsettled(data, batch)
                    return self.append_encoded(data, count, lane, timeout, resend)
                continue
            self.ids.settle(data)
            self.histogram("batch_send_seconds").observe(time.monotonic() - start)
            with self._lock:
                c.took()
                if self.current != client.address:
                    if self.current is not None:
                        log.info("agent: now sending to collector %s", client.address)
                    self.current = client.address
                if self._dropping:
                    self._dropping = False
                    log.info("agent: collector %s reachable again", client.address)
                self.metrics.add("events_out", count)
                self.metrics.add("bytes_out", len(payload))
            return
        why = "; ".join(errors) if errors else (
            f"waiting to ask collector {unknown_at} again (the batch's outcome there is "
            f"unknown)" if unknown_at else
            f"collector {', '.join(c.address for c in avoided)} left a call unanswered "
            f"(no new batches for it meanwhile)" if avoided else
            "every collector is backing off")
        with self._lock:
            self.metrics.add("errors")
            if self.drop:
                # the identity: lost = dropped; unknown = delivered or lost
                self.metrics.add("unknown" if unknown else "dropped", count)
                if not self._dropping:
                    self._dropping = True
                    log.warning("agent (best effort): dropping events, no collector takes "
                                "them: %s", why)
                return
        since = pin[1] if pin is not None and pin[0] == unknown_at else now
        self.ids.unsettled(data, batch, unknown_at, since)
        error = DeliveryUnknown if unknown else SinkError
        raise error(f"no collector of {len(self.collectors)} took the batch: {why}")

    def _released(self, count: int, why: str, level: int) -> None:
        """A batch whose outcome at a collector is unknown stops waiting for it and goes
        to any collector (where it may be written a second time): said and counted in
        ``unknown_released``."""
        self._count("unknown_released")
        log.log(level, "agent: a batch of %d event(s) whose outcome is unknown goes to any "
                "collector now, where it may be written a second time: %s", count, why)

    def _probe(self, lane: int) -> list[CollectorEndpoint]:
        """Every collector is backing off (BE): connect to the first one not probed
        within ``PROBE_EVERY`` on this lane's connection; ``[it]`` if that worked."""
        for c in self.collectors:
            with self._lock:
                now = self.ctx.clock.monotonic()
                if c.probing or now - c.probed_at < PROBE_EVERY:
                    continue
                c.probing, c.probed_at = True, now
                self.metrics.add("probes")
            client = c.clients[lane]
            try:
                client.connect(min(client.connect_timeout, PROBE_TIMEOUT))
                return [c]
            except SinkError:
                continue
            finally:
                c.probing = False
        return []

    def _failed(self, c: CollectorEndpoint, lane: int) -> None:
        c.clients[lane].close()
        with self._lock:
            now = self.ctx.clock.monotonic()
            if c.retry_at > now:
                return      # another lane found it down meanwhile: one backoff step
            c.back_off(now)
            self.metrics.add("failovers")

    def interrupt(self) -> None:
        """Make calls in progress, and every later call, fail at once (another thread is
        closing); ``open`` undoes it."""
        self._cut = True
        self.close()

    def close(self) -> None:
        for c in self.collectors:
            c.close()


def _refused(exc: BaseException) -> bool:
    """Was ``exc`` caused by a refused connection (nothing listening)?"""
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class _LockedCounters:
    """What :func:`deliver` counts into, for a chain whose lanes count concurrently."""

    def __init__(self, chain: CollectorChain):
        self.chain = chain

    def add(self, name: str, n: int = 1) -> None:
        self.chain._count(name, n)


class _Lanes(Sink):
    """BE's pipelining (see the module docstring): ``append`` hands each batch to one of
    ``lanes`` sender threads and returns; checkpoints are committed in order, each once
    every batch appended before it was sent or dropped. Never raises (BE).

    The commits (a file write each) are made outside the lock ``append`` takes: ready
    checkpoints join ``_ready`` in order under the lock, and whoever holds ``_committing``
    commits everything ready at that moment in one store commit, so a later commit never
    overwrites a newer position with an older one, and neither the flow nor the other
    senders wait for a slow write."""

    spec_name = "lanes"

    def __init__(self, chain: CollectorChain):
        super().__init__()
        self.chain = chain
        self._queue: queue.Queue = queue.Queue(maxsize=chain.lanes)
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._last = 0              # sequence number of the newest appended batch
        self._done_upto = 0         # every batch up to this one was sent or dropped
        self._done: set[int] = set()
        self._held: list[tuple[int, Checkpoint]] = []
        self._ready: list[Checkpoint] = []      # to commit, in order
        self._committing = threading.Lock()

    def children(self) -> list[Component]:
        return [self.chain]

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.chain.open(ctx)
        for lane in range(self.chain.lanes):
            t = threading.Thread(target=self._run, args=(lane,), daemon=True,
                                 name=f"be-send-{ctx.logical_name}-{lane}")
            t.start()
            self._threads.append(t)

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        with self._cond:
            self._last += 1
            seq = self._last
        self._queue.put((seq, events))

    def _run(self, lane: int) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            seq, events = item
            try:
                self.chain.append_encoded(encode_events(events), len(events), lane)
            except Exception as exc:     # BE drops; a bug must not stop the lane
                self.chain._count("dropped", len(events))
                log.error("agent (best effort): batch dropped: %s", exc)
            try:
                self._finished(seq)
            except Exception as exc:    # a position not written: read again after a restart
                self.chain._count("errors")
                log.error("agent (best effort): cannot record a position: %s", exc)

    def _finished(self, seq: int) -> None:
        with self._cond:
            self._done.add(seq)
            while self._done_upto + 1 in self._done:
                self._done_upto += 1
                self._done.discard(self._done_upto)
            n = 0
            while n < len(self._held) and self._held[n][0] <= self._done_upto:
                n += 1
            self._ready += [cp for _, cp in self._held[:n]]
            del self._held[:n]
            self._cond.notify_all()
        self._commit_ready()

    def _commit_ready(self) -> None:
        """Commit, in order, every checkpoint ready now (see the class docstring). A
        thread finding another one committing leaves its checkpoints to it: that one looks
        again once it is done, so no sender waits for another's file write."""
        while self._ready:
            if not self._committing.acquire(blocking=False):
                return
            try:
                with self._cond:
                    ready, self._ready = self._ready, []
                if ready:
                    self.ctx.store.commit(ready)
            finally:
                self._committing.release()
            with self._cond:
                self._cond.notify_all()     # wait_sent: the commits are done

    def when_durable(self, cp: Checkpoint) -> None:
        with self._cond:
            if self._done_upto >= self._last and not self._held:
                self._ready.append(cp)
            else:
                self._held.append((self._last, cp))
        self._commit_ready()

    def wait_sent(self, timeout: float = 30.0) -> bool:
        """Wait until every batch appended so far was sent or dropped, and the checkpoints
        that were waiting for them are committed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done_upto >= self._last
                                       and not self._ready and not self._committing.locked(),
                                       timeout)

    def interrupt(self) -> None:
        self.chain.interrupt()

    def close(self) -> None:
        """Sends (or drops) what was appended, then stops the lanes. Calls still hanging
        after ``CLOSE_GRACE`` seconds are cut: their batches count as ``unknown`` (the
        request was sent), the ones not sent yet as ``dropped``."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + CLOSE_GRACE
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self.chain.interrupt()
            for t in self._threads:
                t.join()
        self._threads = []
        self.chain.close()


class _Gather(BatchDecorator):
    """``batchCount``/``batchMillis``: gathers appends into calls of at least ``n`` events
    (the batch decorator's buffering, timer and checkpoint holding, without batch events).
    """

    spec_name = "gather"

    def _full(self, buf: list[Event]) -> int:
        return len(buf) if len(buf) >= self.n else 0    # all of it, once there are n

    def _packed(self, events: list[Event]) -> list[Event]:
        return list(events)                                # the events themselves


class AgentState:
    """What the k-th agent sink of a logical node keeps across reconfigurations (see the
    module docstring): its :class:`BatchIds` and its counters, as last summarised."""

    __slots__ = ("ids", "counters")

    def __init__(self, ids: BatchIds):
        self.ids = ids
        self.counters: dict[str, int] = {}


def agent_state(ctx: NodeContext) -> AgentState:
    """The state of the next agent sink this flow opens (made on first use)."""
    ctx.agent_sinks += 1
    key = (ctx.logical_name, ctx.agent_sinks)
    state = ctx.shared.agent_sinks.get(key)
    if state is None:
        state = ctx.shared.agent_sinks[key] = AgentState(BatchIds(ctx.logical_name))
    return state


# counters telling a state, not a history: not carried across a reconfiguration
GAUGES = ("spool_bytes", "disk_free_bytes", "corrupt", "unknown_pending")


class _AgentSink(Sink):
    """Common part: argument checks, the inner tree, summary counters (carried across
    reconfigurations of the logical node, see :class:`AgentState`)."""

    mode = "?"

    def __init__(self, addresses: list[str], batchCount: int, batchMillis: int,
                 compression: bool | str, maxMs: int, checkMs: int, timeoutMs: int,
                 lanes: int = 1):
        super().__init__()
        self.addresses = [parse_address(a) for a in addresses]
        self.batch_count = batchCount
        self.batch_millis = batchMillis
        self.compress = compression_flag(compression)
        self.max_ms = maxMs
        self.check_ms = checkMs
        self.timeout_ms = timeoutMs
        self.chain = CollectorChain(self.addresses, compress=self.compress,
                                    timeout=timeoutMs / 1000, initial=checkMs / 1000,
                                    maximum=maxMs / 1000, drop=self.mode == "BE",
                                    last_resort=self.mode == "DFO", lanes=lanes)
        self.state: AgentState | None = None    # made at open
        self._base: dict[str, int] = {}          # the counters carried from before
        self.tree: Sink = self._build(self.chain)   # append_encoded keeps the bounds
        if batchCount > 1:
            self.tree = _Gather(self.tree, batchCount, batchMillis)

    @classmethod
    def check_args(cls, args) -> None:
        check_collectors(args)
        if args["checkMs"] <= 0 or args["maxMs"] < args["checkMs"]:
            raise ValueError(f"need 0 < checkMs <= maxMs, got checkMs={args['checkMs']}, "
                             f"maxMs={args['maxMs']}")

    def _build(self, chain: Sink) -> Sink:
        return chain

    def children(self) -> list[Component]:
        return [self.tree]

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.state = agent_state(ctx)
        self.chain.ids = self.state.ids
        self._base = dict(self.state.counters)
        self.metrics.set("events_in", self._base.get("events_in", 0))
        self.tree.open(ctx)
        self._summarise()

    def append(self, events: list[Event]) -> None:
        self.metrics.add("events_in", len(events))
        try:
            self.tree.append(events)
        finally:
            self._summarise()

    def _summarise(self) -> None:
        m, base = self.metrics, self._base
        for k in CHAIN_COUNTERS:
            m[k] = base.get(k, 0) + self.chain.metrics.get(k, 0)
        dfo = getattr(self, "dfo", None)
        if dfo is not None:
            for k in DFO_COUNTERS:
                m[k] = (0 if k in GAUGES else base.get(k, 0)) + dfo.metrics.get(k, 0)
        if not self.chain.drop and self.chain.ids is not None:
            m["unknown_pending"] = self.chain.ids.unknown_count()
        if self.state is not None:
            self.state.counters = {k: v for k, v in m.items() if k not in GAUGES}

    def report(self) -> dict:
        """One component from the operator's view: the chain's and spool's counters are
        summarised here, so the inner parts are not reported again (no double count)."""
        self._summarise()
        out = own_report(self.spec_name, self.kind, self.metrics, self.chain.histograms)
        # the collector ("host:port") the last batch reached: the master's console draws
        # the edge it takes now (None before the first batch)
        out["target"] = self.chain.current
        # the collectors ("host:port") whose last attempt failed and that have not taken a
        # batch since: the console shows a collector every agent finds down at once,
        # without waiting for its own reports to go silent
        out["down"] = sorted(c.address for c in list(self.chain.collectors) if c.retry_at)
        return out

    def when_durable(self, cp: Checkpoint) -> None:
        self.tree.when_durable(cp)

    def wait_sent(self, timeout: float = 30.0) -> bool:
        """Wait until every batch appended so far was sent, dropped or spooled."""
        lanes = getattr(self, "lanes", None)
        done = lanes.wait_sent(timeout) if lanes is not None else True
        self._summarise()
        return done

    def close(self) -> None:
        try:
            self.tree.close()
        finally:
            self._summarise()


class _BE(_AgentSink):
    mode = "BE"

    def _build(self, chain: Sink) -> Sink:
        self.lanes = _Lanes(chain)
        return self.lanes


class _DFO(_AgentSink):
    mode = "DFO"

    def _build(self, chain: Sink) -> Sink:
        self.dfo = DiskFailoverDecorator(chain, self.max_ms, self.check_ms, name="agent")
        return self.dfo


@sink("agentBESink")
class AgentBESink(_BE):
    """Best effort to one collector: drops what it cannot send and counts it --
    ``dropped`` (surely lost) or ``unknown`` (the call timed out: delivered or lost)."""

    def __init__(self, host: str = "localhost", port: PeerPort = DEFAULT_PORT, *,
                 batchCount: BatchCount = 1, batchMillis: NonNegative = 0,
                 compression: Compress = False, maxMs: int = 10_000, checkMs: int = 1000,
                 timeoutMs: Positive = 20_000, lanes: Lanes = BE_LANES):
        super().__init__([collector_address(host, port)], batchCount, batchMillis,
                         compression, maxMs, checkMs, timeoutMs, lanes)


@sink("agentBEChain")
class AgentBEChain(_BE):
    """Best effort over an ordered list of collectors ``"host[:port]"``; counts
    ``dropped`` (surely lost) and ``unknown`` (delivered or lost) apart."""

    def __init__(self, *collectors: CollectorText, batchCount: BatchCount = 1,
                 batchMillis: NonNegative = 0, compression: Compress = False,
                 maxMs: int = 10_000, checkMs: int = 1000, timeoutMs: Positive = 20_000,
                 lanes: Lanes = BE_LANES):
        super().__init__(list(collectors), batchCount, batchMillis, compression, maxMs,
                         checkMs, timeoutMs, lanes)


@sink("agentDFOSink")
class AgentDFOSink(_DFO):
    """Disk failover to one collector: spools what it cannot send, replays it later
    with its batch id (a collector that wrote it does not write it again)."""

    def __init__(self, host: str = "localhost", port: PeerPort = DEFAULT_PORT, *,
                 batchCount: BatchCount = 1, batchMillis: NonNegative = 0,
                 compression: Compress = False, maxMs: int = 10_000, checkMs: int = 1000,
                 timeoutMs: Positive = 20_000):
        super().__init__([collector_address(host, port)], batchCount, batchMillis,
                         compression, maxMs, checkMs, timeoutMs)


@sink("agentDFOChain")
class AgentDFOChain(_DFO):
    """Disk failover over an ordered list of collectors ``"host[:port]"``."""

    def __init__(self, *collectors: CollectorText, batchCount: BatchCount = 1,
                 batchMillis: NonNegative = 0, compression: Compress = False,
                 maxMs: int = 10_000, checkMs: int = 1000, timeoutMs: Positive = 20_000):
        super().__init__(list(collectors), batchCount, batchMillis, compression, maxMs,
                         checkMs, timeoutMs)
