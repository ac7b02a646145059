"""``rpcSource(port)`` (= ``thriftSource``) and ``collectorSource([port=35853])``: the RPC
server agents and ``rpcSink``s send to.

Each received batch (``appendPacked``, ``appendBatch``, ``appendGroup``) is put in a bounded
queue that ``next_batch`` drains. A call is answered ``OK`` only once its events went
through the flow: taken by ``next_batch`` and appended to the sink (the driver calls
``checkpoint()`` -- or ``next_batch`` again -- after appending, which tells the source), so
a collector killed at any moment has written (to the OS) everything it answered OK for. If
the events are not taken within ``timeoutMs`` (the queue stays full: the flow is slower
than the senders) they are withdrawn and the answer is ``RETRY``: the sender pauses and
sends the same batch again -- backpressure; nothing is dropped silently. Calls waiting
for room in the queue are served in the order they came (node/sources/_batchqueue.py),
so many agents into one collector each get their turn. If the source
closes while the flow holds the events (and their append does not finish within 2 s) the
answer is ``RETRY`` too: a resend may then duplicate them, never lose them. A payload that does not decode, or
whose event count is wrong, is answered ``FAILED``. The original oneway one-event
``append`` cannot be refused: when the queue stays full it is dropped and counted in
``dropped``.

Batch ids and deadlines (node/rpc.py): a call carrying the caller's deadline
(``timeoutMs``) waits to be taken only until then (and never more than ``timeoutMs`` of
the source); past it the events are withdrawn and counted in ``expired`` -- the caller
gave up, and will resend. Events the flow took are written whatever the deadline. A call
carrying a batch id ``(sender, batch)`` goes through a :class:`node.rpc_window.BatchWindow`:
an id already written is answered OK without writing (``duplicate_batches``,
``duplicate_events``), a resend of an id still being written waits for that first outcome
until its own deadline (``joined``; RETRY if still writing then), and an id not written
(withdrawn, expired) is forgotten so its resend is written. The window holds at most
``maxBatchIds=16384`` ids, ``maxBatchIdsPerSender=256`` of one sender and
``maxBatchIdsPerPeer=4096`` from one address (whatever sender ids it makes up: it evicts
only its own); the oldest are forgotten first (``batch_ids_evicted``, and
``batch_ids_evicted_early`` for those its sender may still resend; ``batch_ids`` is how
many are held: 24 MB at most, node/rpc_window.py). A sender id over 256 characters is answered FAILED
(``refused_malformed``).

``appendGroup`` (end-to-end groups, docs/e2e.md): a ``collectorSource`` on a node with
ZooKeeper (``ctx.shared.commit_log``) hands every group to
``node.e2e.collector_group_handler(ctx, enqueue)``, which answers it; ``enqueue(events,
checkpoint_updates) -> bool`` puts the events in the queue, waits like any other call, and
returns True once the flow appended them, False if not (withdrawn: they never reach the
flow; or, rarely, the source closed while the flow held them). The ``checkpoint_updates`` of every batch come back, merged, from
:meth:`checkpoint` after ``next_batch`` returned its events: each ``checkpoint()`` call
returns the updates of the batches returned since the previous call (``{}`` if none).
Without ZooKeeper (or without ``node.e2e``), and always on an ``rpcSource``, a group is
only checked (CRC-32 of the payload) and then taken like ``appendPacked``: no
acknowledgement ever follows, so an agent in E2E mode will resend it after its timeout.

Listens on ``bind`` ("": 0.0.0.0 on a node with TLS or ``--plaintext-events``, else
127.0.0.1; beyond loopback without either is refused, :mod:`node.tls`), over TLS only on a
node with TLS (the handshake under ``messageTimeoutMs``); ``port=0`` picks a free port,
readable as ``.port`` after ``open``.

Bounds (:class:`node.rpc.RpcServer` says what each costs): ``maxConnections=512`` open at
once and ``maxConnectionsPerPeer=128`` from one address (past either, an idle connection
makes room; past the total with none idle, the slowest message of the address holding
the most slots, if it holds two more than the newcomer's; else the new one is closed),
``idleTimeoutMs=60000`` of silence between messages closes a connection, a message must
keep arriving at ``minBytesPerSecond=16384`` with ``messageTimeoutMs=30000`` of credit at
most (its first byte gives it that much, each byte adds 1/``minBytesPerSecond`` s),
``maxMessageBytes=16777216`` per message on the wire and per payload
once decompressed, ``maxBatchEvents=20000`` per call. A payload over a bound is answered
``FAILED`` with the reason; a message over a bound on the wire closes its connection. Every
refusal is counted (``refused``, ``refused_<reason>``: ``connections``,
``peer_connections``, ``evicted``, ``oversize``, ``decompressed``, ``bytes``, ``events``,
``malformed``, ``slow``, ``threads``) and logged at WARNING,
rate-limited. When the server can no longer accept connections (see
:class:`node.rpc.RpcServer`), ``next_batch`` raises :class:`SourceError` with the reason:
the logical node goes to ERROR, visibly. This project's senders split their batches to stay
under half of these defaults.
"""
from __future__ import annotations

import logging
import threading
import time
import zlib
from typing import Annotated

from annotated_types import Ge

from ..codec import BatchTooLarge
from ..component import NodeContext
from ..e2e import AGENT_IDLE_MS, MAX_AGENTS, MAX_NEW_AGENTS_PER_MINUTE
from ..errors import SourceError
from ..event import Event
from ..limits import Refusals
from ..registry import AtLeast1, NonNegative, Positive, source
from ..rpc import (DEFAULT_PORT, IDLE_TIMEOUT, MAX_BATCH_EVENTS, MAX_CONNECTIONS,
                   MAX_CONNECTIONS_PER_PEER, MAX_MESSAGE_BYTES, MESSAGE_TIMEOUT,
                   MIN_BYTES_PER_SECOND, NO_CALL_INFO, CallInfo, LockedCounter, RpcServer,
                   Status, clip, current_call, current_peer, decode_payload, from_thrift,
                   result)
from ..rpc_window import (BUSY, CONFLICT, DUPLICATE, MAX_IDS, MAX_IDS_PER_PEER,
                          MAX_IDS_PER_SENDER, MAX_SENDER_CHARS, BatchWindow)
from ._batchqueue import BatchQueue
from ._net import Port, ServerSource

MessageBytes = Annotated[int, Ge(1024)]   # room for a message's framing and headers

log = logging.getLogger(__name__)

QUEUE_EVENTS = 20_000
MAX_BATCH = 10_000
CLOSE_GRACE = 2.0     # seconds a call waits, after close, for the flow's last append
# A call waiting on its caller's deadline answers this much before it, so that the
# caller reads a definite RETRY instead of timing out on an outcome it cannot know: a
# tenth of the caller's timeout, for the answer's way back and a busy receiver, within
# these bounds (seconds).
ANSWER_MARGIN = (0.05, 1.0)


def answer_by(call: CallInfo) -> float | None:
    """When a call waiting on its caller's deadline answers (monotonic), None without one."""
    if call.deadline is None:
        return None
    least, most = ANSWER_MARGIN
    return call.deadline - min(most, max(least, call.timeout / 10))

_local = threading.local()


class _TaggedQueue(BatchQueue):
    """A BatchQueue that also knows which taken batches the flow has *done* with (the
    consumer calls :meth:`mark_done` once it appended what it took), and remembers
    checkpoint updates per batch, recorded atomically with the batch's sequence number (so
    no consumer can take a batch before its tag is known)."""

    def __init__(self, capacity: int, max_batch: int):
        super().__init__(capacity, max_batch)
        self._tags: list[tuple[int, dict]] = []
        self._tagged: set[int] = set()   # sequence numbers of the tagged batches
        self.last_tagged = False         # the batches the last ``get`` returned had tags
        self._done = 0          # every batch up to this sequence number was appended
        self._closed_at = 0.0

    def mark_done(self) -> None:
        """Everything taken so far went through the flow's sink."""
        with self._cond:
            if self._done < self._taken:
                self._done = self._taken
                self._cond.notify_all()

    def wait_done(self, seq: int, grace: float) -> bool:
        """Wait until batch ``seq`` (already taken) is done; after ``close``, wait at most
        ``grace`` seconds more (the flow may be finishing its last append). False if it
        was not done."""
        with self._cond:
            while self._done < seq:
                if self._closed:
                    left = self._closed_at + grace - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                else:
                    self._cond.wait(1.0)
            return True

    def _append(self, events, nbytes):
        seq = super()._append(events, nbytes)
        tag = getattr(_local, "tag", None)
        if tag:
            self._tags.append((seq, tag))
            self._tagged.add(seq)
        return seq

    def _joinable(self, first: int, seq: int) -> bool:
        """Tagged and untagged batches are never merged into one ``get``: a consumer can
        tell batches holding E2E groups from the others (:attr:`last_tagged`)."""
        return (first in self._tagged) == (seq in self._tagged)

    def get(self, timeout: float, cancelled=None):
        out = super().get(timeout, cancelled)
        if out:
            with self._cond:
                self.last_tagged = self._taken in self._tagged
        return out

    def withdraw(self, seq: int) -> bool:
        gone = super().withdraw(seq)
        if gone:
            with self._cond:
                self._tags = [t for t in self._tags if t[0] != seq]
                self._tagged.discard(seq)
        return gone

    def taken_tags(self) -> dict:
        """Merged tags of every batch handed to a consumer and not reported before."""
        with self._cond:
            taken = self._taken
            out: dict = {}
            n = 0
            for seq, tag in self._tags:
                if seq > taken:
                    break
                out.update(tag)
                self._tagged.discard(seq)
                n += 1
            del self._tags[:n]
            return out

    def close(self) -> None:
        with self._cond:
            self._closed_at = time.monotonic()
        super().close()
        with self._cond:
            self._tags = []
            self._tagged.clear()


class _Handler:
    """The ThriftFlumeEventServer handler of one source."""

    def __init__(self, src: "RpcSource"):
        self.src = src

    def append(self, tevent) -> None:
        src = self.src
        events = from_thrift([tevent])
        if src._queue.put(events, src.timeoutMs / 1000) is None:
            src._count("dropped")

    def appendBatch(self, tevents):
        src = self.src
        call = current_call()
        if src._bad_sender(call):
            return result(Status.FAILED, f"sender id over {MAX_SENDER_CHARS} characters")
        events = from_thrift(tevents)
        src._count("bytes_in", sum([len(e.body) for e in events]))
        crc = 0
        if call.batch is not None:
            for e in events:
                crc = zlib.crc32(e.body, crc)
        return src._answer(events, call, (len(events), crc))

    def appendPacked(self, payload: bytes, count: int):
        src = self.src
        call = current_call()
        src._count("bytes_in", len(payload))
        if src._bad_sender(call):
            return result(Status.FAILED, f"sender id over {MAX_SENDER_CHARS} characters")
        if count > src.maxBatchEvents:
            src._count("failed")
            src._refusals.refuse("events", f"a batch of {count} events")
            return result(Status.FAILED, f"batch of {count} events, more than the "
                                         f"{src.maxBatchEvents} allowed")
        try:
            events = decode_payload(payload, src.maxMessageBytes, src.maxBatchEvents)
        except BatchTooLarge as exc:
            src._count("failed")
            src._refusals.refuse(exc.reason, str(exc))
            return result(Status.FAILED, f"batch too large: {exc}")
        except ValueError as exc:
            src._count("failed")
            src._refusals.refuse("malformed", f"bad payload: {exc}")
            return result(Status.FAILED, f"bad payload: {exc}")
        if len(events) != count:
            src._count("failed")
            src._refusals.refuse("malformed", f"payload of {len(events)} events, the call "
                                              f"says {count}")
            return result(Status.FAILED, f"payload holds {len(events)} events, "
                                         f"the call says {count}")
        fingerprint = (count, zlib.crc32(payload)) if call.batch is not None else None
        return src._answer(events, call, fingerprint)

    def appendGroup(self, agent: str, seq: int, checksum: int, payload: bytes, count: int):
        src = self.src
        src._count("groups_in")
        if count > src.maxBatchEvents:
            src._count("failed")
            src._refusals.refuse("events", f"group {clip(agent)}:{seq} of {count} events")
            return result(Status.FAILED, f"group of {count} events, more than the "
                                         f"{src.maxBatchEvents} allowed")
        groups = src._groups
        if groups is not None:
            status, message = groups.append_group(agent, seq, checksum, payload, count,
                                                  current_peer())
            if status == Status.RETRY:
                src._count("retries")
            return result(status, message)
        if zlib.crc32(payload) != checksum & 0xFFFFFFFF:
            src._count("failed")
            src._refusals.refuse("malformed", f"group {clip(agent)}:{seq}: checksum "
                                              f"mismatch")
            return result(Status.FAILED, f"group {clip(agent)}:{seq}: checksum mismatch")
        return self.appendPacked(payload, count)

    def close(self) -> None:
        pass


@source("rpcSource", aliases=("thriftSource",))
class RpcSource(ServerSource):
    """RPC server receiving event batches; answers each call once the flow appended its
    events, RETRY when they are not taken within ``timeoutMs`` or the caller's deadline
    (``expired``); a resent batch id is answered without writing it twice (within
    ``maxBatchIds`` / ``maxBatchIdsPerSender`` / ``maxBatchIdsPerPeer`` remembered ids).
    At most ``maxConnections`` connections (``maxConnectionsPerPeer`` from one address), each
    closed after ``idleTimeoutMs`` of silence between messages or when a message arrives
    slower than ``minBytesPerSecond`` for ``messageTimeoutMs``; a message over ``maxMessageBytes`` or
    ``maxBatchEvents`` is refused."""

    queue_events = QUEUE_EVENTS

    @classmethod
    def check_args(cls, args) -> None:
        if args["maxBatchIds"] < args["maxBatchIdsPerSender"]:
            raise ValueError(f"maxBatchIds ({args['maxBatchIds']}) must be at least "
                             f"maxBatchIdsPerSender ({args['maxBatchIdsPerSender']})")

    def __init__(self, port: Port, *, bind: str = "", timeoutMs: Positive = 5000,
                 maxConnections: AtLeast1 = MAX_CONNECTIONS,
                 maxConnectionsPerPeer: AtLeast1 = MAX_CONNECTIONS_PER_PEER,
                 idleTimeoutMs: AtLeast1 = int(IDLE_TIMEOUT * 1000),
                 messageTimeoutMs: AtLeast1 = int(MESSAGE_TIMEOUT * 1000),
                 minBytesPerSecond: NonNegative = MIN_BYTES_PER_SECOND,
                 maxMessageBytes: MessageBytes = MAX_MESSAGE_BYTES,
                 maxBatchEvents: AtLeast1 = MAX_BATCH_EVENTS,
                 maxBatchIds: AtLeast1 = MAX_IDS,
                 maxBatchIdsPerSender: AtLeast1 = MAX_IDS_PER_SENDER,
                 maxBatchIdsPerPeer: AtLeast1 = MAX_IDS_PER_PEER):
        super().__init__(port, bind)
        self.timeoutMs = timeoutMs
        self.maxConnections = maxConnections
        self.maxConnectionsPerPeer = maxConnectionsPerPeer
        self.idleTimeoutMs = idleTimeoutMs
        self.messageTimeoutMs = messageTimeoutMs
        self.minBytesPerSecond = minBytesPerSecond
        self.maxMessageBytes = maxMessageBytes
        self.maxBatchEvents = maxBatchEvents
        self.maxBatchIds = maxBatchIds
        self.maxBatchIdsPerSender = maxBatchIdsPerSender
        self.maxBatchIdsPerPeer = maxBatchIdsPerPeer
        self._window: BatchWindow | None = None
        self._queue: _TaggedQueue | None = None
        self._server: RpcServer | None = None
        self._stop_deferred = False   # the server stops when the E2E sink has closed
        self._groups = None
        self._mlock = threading.Lock()   # connection threads count concurrently
        self._counter = LockedCounter(self.metrics, self._mlock)
        self._refusals = Refusals(self._counter, log, self.spec_name)

    def _count(self, name: str, n: int = 1) -> None:
        self._counter.add(name, n)

    def open(self, ctx: NodeContext) -> None:
        # not ServerSource.open: a tagged queue, and the group handler made before the server
        self.ctx = ctx
        self.bind = ctx.transport.bind_address(self.bind, self.spec_name)
        self._queue = _TaggedQueue(self.queue_events, MAX_BATCH)
        self._window = BatchWindow(self._counter, self.maxBatchIdsPerSender,
                                   self.maxBatchIds, per_peer=self.maxBatchIdsPerPeer)
        self._groups = self._group_handler(ctx)
        server = RpcServer(self.bind, self.port, _Handler(self), name=self.spec_name,
                           max_connections=self.maxConnections,
                           max_connections_per_peer=self.maxConnectionsPerPeer,
                           idle_timeout=self.idleTimeoutMs / 1000,
                           message_timeout=self.messageTimeoutMs / 1000,
                           min_bytes_per_second=self.minBytesPerSecond,
                           max_message_bytes=self.maxMessageBytes,
                           max_batch_events=self.maxBatchEvents, metrics=self._counter,
                           on_failure=lambda reason: self._queue.wake(),
                           tls=ctx.transport.server)
        server.start()
        self._server = server
        self.port = server.port
        self._refusals.what = f"{self.spec_name} on port {self.port}"
        log.info("%s listening on %s:%d", self.spec_name, self.bind, self.port)

    def _group_handler(self, ctx: NodeContext):
        return None

    def _enqueue(self, events: list[Event], checkpoint_updates: dict | None = None) -> bool:
        """Hand ``events`` to the flow; True once its sink took them, False if they were
        withdrawn or the outcome is unknown (see the module docstring)."""
        return self._take(events, None, checkpoint_updates) is None

    def _take(self, events: list[Event], deadline: float | None = None,
              checkpoint_updates: dict | None = None) -> str | None:
        """Hand ``events`` to the flow: None once its sink took them, else why not.
        They wait to be taken ``timeoutMs`` at most, and never past the caller's
        ``deadline`` (monotonic seconds): then they are withdrawn (``expired``, the
        caller gave up) -- once taken they are written whatever the deadline."""
        q = self._queue
        if q is None:
            return "source is closing"
        if not events:
            return None
        now = time.monotonic()
        until = now + self.timeoutMs / 1000
        callers = deadline is not None and deadline < until
        if callers:
            until = deadline
        seq = None
        if until > now:
            _local.tag = checkpoint_updates
            try:
                seq = q.put(events, until - now)
            finally:
                _local.tag = None
        if seq is None or (not q.wait_taken(seq, max(0.0, until - time.monotonic()))
                           and q.withdraw(seq)):
            if q.closed:
                why = "source is closing"
            elif callers:
                self._count("expired", len(events))
                return "the caller's deadline passed before the flow took the batch"
            else:
                why = "queue full: try again"
            self._count("refused", len(events))
            return why
        # taken: the flow is appending them; answer once that is done
        if q.wait_done(seq, CLOSE_GRACE):
            return None
        self._count("unknown", len(events))
        return "source is closing"

    def _bad_sender(self, call: CallInfo) -> bool:
        """A sender id over the bound: refused (counted, warned)."""
        if len(call.sender) <= MAX_SENDER_CHARS:
            return False
        self._count("failed")
        self._refusals.refuse("malformed", f"a sender id of {len(call.sender)} characters")
        return True

    def _answer(self, events: list[Event], call: CallInfo = NO_CALL_INFO,
                fingerprint=None):
        """Take ``events`` into the flow and answer. A call with a batch id goes through
        the window (node.rpc_window): a batch already taken is answered OK without being
        written again, a resend of one being written waits for that first outcome."""
        window, claim = self._window, None
        deadline = answer_by(call)
        if call.batch is not None and window is not None:
            until = deadline if deadline is not None else \
                time.monotonic() + self.timeoutMs / 1000
            claim = window.claim(call.sender, call.batch, fingerprint, len(events), until,
                                 current_peer())
            if claim is DUPLICATE:
                self._counter.set("batch_ids", window.size)
                return result(Status.OK, "already taken")
            if claim is BUSY:
                self._count("retries")
                return result(Status.RETRY, "an earlier call of this batch is still being "
                                            "written")
            if claim is CONFLICT:
                claim = None
        why = "source is closing"
        try:
            why = self._take(events, deadline)
        finally:
            if claim is not None:
                window.finish(claim, why is None)
                self._counter.set("batch_ids", window.size)
        if why is None:
            self._count("batches_in")
            return result(Status.OK)
        self._count("retries")
        return result(Status.RETRY, why)

    def next_batch(self, timeout: float) -> list[Event] | None:
        q = self._queue
        if q is None:
            return None
        q.mark_done()       # the driver asks for more only after appending what it took
        server = self._server
        out = q.get(timeout, cancelled=lambda: server is not None and
                     server.failure is not None)
        if not out and server is not None and server.failure is not None:
            # the flow fails: its logical node goes to ERROR with this reason
            raise SourceError(f"{self.spec_name} on port {self.port} cannot accept "
                              f"connections: {server.failure}")
        if out:
            self._count("events_in", len(out))
            groups = self._groups
            if groups is not None:    # tells collectorSink where this batch may go
                groups.state.batch_has_groups = q.last_tagged
        return out

    def checkpoint(self) -> dict:
        q = self._queue
        if q is None:
            return {}
        q.mark_done()       # the driver asks after appending the batch
        return q.taken_tags()

    def _stop_server(self) -> None:
        self._stop_deferred = False
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def close(self) -> None:
        # Closing the queue answers RETRY at once to the calls whose events were not
        # taken; calls whose events the flow holds wait up to CLOSE_GRACE for its append.
        if self._queue is not None:
            self._queue.close()
        groups, self._groups = self._groups, None
        # An E2E collector keeps its port open (answering RETRY) until its sink has made
        # its last commit: a port refusing connections tells agents the collector is gone
        # and they take back its claims (docs/e2e.md).
        state = getattr(groups, "state", None)
        if self._stop_deferred:
            pass                        # a second close: the sink's close stops it
        elif state is not None and state.when_sinks_left(self._stop_server):
            self._stop_deferred = True
        else:
            self._stop_server()
        close = getattr(groups, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                log.warning("%s: closing the E2E group handler failed: %s",
                            self.spec_name, exc)


@source("collectorSource")
class CollectorSource(RpcSource):
    """The collector's RPC server; with ZooKeeper, E2E groups go through ``node.e2e``.
    Agents are bounded (``node.e2e.collector.AgentTable``): at most ``maxAgents`` live
    agent ids (with a group held, or one taken within ``agentIdleMs``; more are answered
    FAILED, ``refused_agents``), and at most ``maxNewAgentsPerMinute`` ids not live yet
    per sender address per minute (FAILED, ``refused_new_agents``)."""

    def __init__(self, port: Port = DEFAULT_PORT, *, bind: str = "",
                 timeoutMs: Positive = 5000, maxConnections: AtLeast1 = MAX_CONNECTIONS,
                 maxConnectionsPerPeer: AtLeast1 = MAX_CONNECTIONS_PER_PEER,
                 idleTimeoutMs: AtLeast1 = int(IDLE_TIMEOUT * 1000),
                 messageTimeoutMs: AtLeast1 = int(MESSAGE_TIMEOUT * 1000),
                 minBytesPerSecond: NonNegative = MIN_BYTES_PER_SECOND,
                 maxMessageBytes: MessageBytes = MAX_MESSAGE_BYTES,
                 maxBatchEvents: AtLeast1 = MAX_BATCH_EVENTS,
                 maxBatchIds: AtLeast1 = MAX_IDS,
                 maxBatchIdsPerSender: AtLeast1 = MAX_IDS_PER_SENDER,
                 maxBatchIdsPerPeer: AtLeast1 = MAX_IDS_PER_PEER,
                 maxAgents: AtLeast1 = MAX_AGENTS, agentIdleMs: AtLeast1 = AGENT_IDLE_MS,
                 maxNewAgentsPerMinute: AtLeast1 = MAX_NEW_AGENTS_PER_MINUTE):
        super().__init__(port, bind=bind, timeoutMs=timeoutMs,
                         maxConnections=maxConnections,
                         maxConnectionsPerPeer=maxConnectionsPerPeer,
                         idleTimeoutMs=idleTimeoutMs, messageTimeoutMs=messageTimeoutMs,
                         minBytesPerSecond=minBytesPerSecond,
                         maxMessageBytes=maxMessageBytes, maxBatchEvents=maxBatchEvents,
                         maxBatchIds=maxBatchIds,
                         maxBatchIdsPerSender=maxBatchIdsPerSender,
                         maxBatchIdsPerPeer=maxBatchIdsPerPeer)
        self.maxAgents = maxAgents
        self.agentIdleMs = agentIdleMs
        self.maxNewAgentsPerMinute = maxNewAgentsPerMinute

    def _group_handler(self, ctx: NodeContext):
        if ctx.shared.commit_log is None:
            return None
        try:
            from .. import e2e
            make, limits = e2e.collector_group_handler, e2e.AgentLimits
        except (ImportError, AttributeError) as exc:
            log.warning("collectorSource: E2E groups are taken without acknowledgement "
                        "(node.e2e is not available: %s)", exc)
            return None
        handler = make(ctx, self._enqueue)
        handler.limits = (self.maxMessageBytes, self.maxBatchEvents)
        handler.agent_limits = limits(
            self.maxAgents, self.agentIdleMs / 1000, self.maxNewAgentsPerMinute)
        handler.refusals = self._refusals
        return handler
