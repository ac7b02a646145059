"""End-to-end agent sinks (docs/e2e.md):
``agentE2ESink(["host"[, port=35853]])`` (= ``agentSink``) and
``agentE2EChain("h1[:p1]", "h2[:p2]", ...)``.

Both are ``ackedWriteAhead`` over a collector chain that sends whole WAL groups with
``appendGroup``: every append is durable in the agent's write-ahead log before it returns,
groups are sent in the background to the first collector that takes them, and deleted
only once a collector committed them (learned through ZooKeeper). The node must run
under ZooKeeper (``flume node --zk`` or ``--master``); without it ``open`` fails.

Collector chain: the first collector not backing off is tried first; one that cannot be
reached is skipped for 1 s, doubling up to 10 s, then preferred again. What a failed
collector had taken and not yet committed is sent again at once to the next one (which
answers RETRY while the failed one still holds the groups' claims; the agent then waits
for the claims to go or the acknowledgements to come). When the failed collector's port
refuses connections (its process is gone, its ZooKeeper session not expired yet), the
agent deletes those claims itself and the groups move on at once.

Options: ``batchCount=n`` (gather appends into groups of at least n events; with
``batchMillis=ms`` a partial group is written at the latest ``ms`` after its first event),
``compression=true`` (gzip each group; a batch over ``node.rpc.SEND_BATCH_EVENTS`` events
or ``SEND_BATCH_BYTES`` encoded bytes becomes several groups), ``retransmitMs`` (resend a group unacknowledged
that long after it was sent; default 60000), ``maxMs``/``checkMs`` (the write-ahead log's,
see ``ackedWriteAhead``), ``timeoutMs`` (one call).
"""
from __future__ import annotations

import logging
import socket

from ..backoff import Backoff
from ..checkpoint import Checkpoint
from ..component import Component, NodeContext, Sink
from ..decorators.acked_write_ahead import AckedWriteAhead, Compress
from ..e2e import NEEDS_ZK
from ..errors import SinkError
from ..event import Event
from ..registry import NonNegative, PeerPort, Positive, sink
from ..rpc import DEFAULT_PORT, Status
from .agent import (BatchCount, CollectorEndpoint, CollectorText, _Gather,
                    check_collectors, collector_address, parse_address)

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 10.0
SEND_LANES = 3        # groups in flight at once (one connection to a collector each)
REFUSE_PROBE = 1.0    # seconds to tell whether a failed collector's port refuses connections


class GroupChain(Sink):
    """Sends E2E groups to an ordered list of collectors (``send_group``); the first that
    answers wins. ``on_endpoint_failed(index)`` is called when a collector fails."""

    spec_name = "collectors"

    def __init__(self, addresses: list[tuple[str, int]], timeout: float = 20.0,
                 lanes: int = SEND_LANES):
        super().__init__()
        self.addresses = addresses
        self.timeout = timeout
        self.lanes = lanes
        self.endpoints: list[CollectorEndpoint] = []
        self.current: int | None = None
        self.on_endpoint_failed = None

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.endpoints = [CollectorEndpoint(h, p, self.timeout, Backoff(BACKOFF_FIRST, BACKOFF_MAX),
                                            self.lanes, ctx.transport.client)
                          for h, p in self.addresses]

    def append(self, events: list[Event]) -> None:
        raise SinkError("the E2E collector chain only sends write-ahead-log groups")

    def report(self) -> dict:
        """Its counters, ``target`` (the collector, "host:port", that took the last group;
        None before the first or after it failed) and ``down`` (the collectors whose last
        attempt failed and that have taken nothing since): what the master's console
        draws, as for the BE and DFO chains."""
        out = super().report()
        endpoints, cur = list(self.endpoints), self.current
        out["target"] = endpoints[cur].address if cur is not None and cur < len(endpoints) \
            else None
        out["down"] = sorted(e.address for e in endpoints if e.retry_at)
        return out

    def send_group(self, agent: str, seq: int, crc: int, payload: bytes, count: int,
                   lane: int = 0):
        """``(status, message, index)`` from the first collector that answers; a FAILED
        answer tries the next one too. SinkError (with ``retry_in``) if none answers.
        ``lane``: which of the ``lanes`` connections to each collector to use (one per
        sending thread)."""
        now = self.ctx.clock.monotonic()
        ready = [i for i, e in enumerate(self.endpoints) if e.retry_at <= now]
        failed = None
        errors = []
        for i in ready:
            e = self.endpoints[i]
            try:
                status, message = e.clients[lane].append_group(agent, seq, crc, payload,
                                                               count)
            except SinkError as exc:
                errors.append(str(exc))
                self._failed(i, lane)
                continue
            e.took()
            if status == Status.FAILED:
                failed = (status, message, i)
                self.metrics.add("refusals")
                continue
            if self.current != i:
                if self.current is not None:
                    log.info("agent %s: now sending groups to collector %s", agent,
                             e.address)
                self.current = i
            if status == Status.OK:
                self.metrics.add("events_out", count)
                self.metrics.add("bytes_out", len(payload))
            return status, message, i
        if failed is not None:
            return failed
        self.metrics.add("errors")
        # raised without a local name: an exception held in this frame's locals would
        # make a cycle (exception -> traceback -> this frame -> exception) keeping the
        # payload alive until the cyclic GC, which the node runs rarely (node/cli.py): a
        # sender retrying while no collector answers piled up one payload per attempt
        raise self._unreachable(errors, now)

    def _unreachable(self, errors: list[str], now: float) -> SinkError:
        """The SinkError saying no collector took the group, with ``retry_in``: the
        seconds until the first collector's backoff ends."""
        exc = SinkError("no collector can be reached: " + ("; ".join(errors) if errors
                                                            else "all are backing off"))
        waits = [e.retry_at - now for e in self.endpoints]
        exc.retry_in = max(0.05, min(waits)) if waits else 1.0
        return exc

    def _failed(self, i: int, lane: int) -> None:
        e = self.endpoints[i]
        e.clients[lane].close()
        e.back_off(self.ctx.clock.monotonic())
        self.metrics.add("failovers")
        if self.current == i:
            self.current = None
        cb = self.on_endpoint_failed
        if cb is not None:
            cb(i)

    def refuses(self, i: int) -> bool:
        """Collector ``i``'s port refuses connections now (nothing listens: its process is
        gone). False when it accepts, or when that cannot be told (timeout)."""
        host, port = self.addresses[i]
        try:
            socket.create_connection((host, port), timeout=REFUSE_PROBE).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False

    def interrupt(self) -> None:
        self.close()

    def close(self) -> None:
        for e in self.endpoints:
            e.close()


class _E2EAgentSink(Sink):
    """Common part of the E2E agent sinks: argument checks and the inner tree."""

    def __init__(self, addresses: list[str], batchCount: int, batchMillis: int,
                 compression: bool | str, maxMs: int, checkMs: int, timeoutMs: int,
                 retransmitMs: int):
        super().__init__()
        self.addresses = [parse_address(a) for a in addresses]
        self.chain = GroupChain(self.addresses, timeoutMs / 1000)
        self.wal = AckedWriteAhead(self.chain, maxMs, checkMs, retransmitMs=retransmitMs,
                                   compression=compression)
        self.tree: Sink = self.wal     # its groups stay under the receivers' bounds
        if batchCount > 1:
            self.tree = _Gather(self.tree, batchCount, batchMillis)

    @classmethod
    def check_args(cls, args) -> None:
        check_collectors(args)

    def children(self) -> list[Component]:
        return [self.tree]

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        if ctx.shared.commit_log is None:
            raise SinkError(NEEDS_ZK)
        self.tree.open(ctx)

    def append(self, events: list[Event]) -> None:
        self.metrics.add("events_in", len(events))
        self.tree.append(events)

    def when_durable(self, cp: Checkpoint) -> None:
        self.tree.when_durable(cp)

    def close(self) -> None:
        self.tree.close()


@sink("agentE2ESink", aliases=("agentSink",))
class AgentE2ESink(_E2EAgentSink):
    """End-to-end to one collector: write-ahead log, resend until acknowledged,
    effectively once."""

    def __init__(self, host: str = "localhost", port: PeerPort = DEFAULT_PORT, *,
                 batchCount: BatchCount = 1, batchMillis: NonNegative = 0,
                 compression: Compress = False, maxMs: Positive = 10_000,
                 checkMs: Positive = 250, timeoutMs: Positive = 20_000,
                 retransmitMs: Positive = 60_000):
        super().__init__([collector_address(host, port)], batchCount, batchMillis,
                         compression, maxMs, checkMs, timeoutMs, retransmitMs)


@sink("agentE2EChain")
class AgentE2EChain(_E2EAgentSink):
    """End-to-end over an ordered failover list of collectors ``"host[:port]"``."""

    def __init__(self, *collectors: CollectorText, batchCount: BatchCount = 1,
                 batchMillis: NonNegative = 0, compression: Compress = False,
                 maxMs: Positive = 10_000, checkMs: Positive = 250,
                 timeoutMs: Positive = 20_000, retransmitMs: Positive = 60_000):
        super().__init__(list(collectors), batchCount, batchMillis, compression, maxMs,
                         checkMs, timeoutMs, retransmitMs)
