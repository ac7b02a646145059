"""Agent sinks in best-effort and disk-failover mode (REFERENCE section 5):
``agentBESink(["host"[, port=35853]])``, ``agentDFOSink(...)`` and the chains
``agentBEChain("h1[:p1]", "h2[:p2]", ...)``, ``agentDFOChain(...)``.

All of them send to an ordered list of collectors (one for the ``*Sink`` forms), each batch
as one ``appendPacked`` call answered by the collector (so a broken connection is always
detected), encoded once whichever collector takes it:

* The first collector that is not backing off gets the batch. One that fails (connection,
  timeout, FAILED, or busy -- RETRY -- more than ``rpcSink.RETRY_LIMIT`` times in a row) is
  skipped for ``checkMs``, doubling up to ``maxMs``, then tried first again (the primary
  is preferred as soon as it is back).
* **BE**: when no collector takes a batch, it is dropped and every dropped event is counted
  in ``dropped``; the sink never raises. Collectors still backing off are not tried, so an
  outage costs no time per batch.
* **DFO**: the collector list sits under :mod:`diskFailover <node.decorators.disk_failover>`
  (``maxMs``, ``checkMs``): a batch no collector takes is spooled to disk and replayed in
  the background, in order; the replay tries every collector, backing off or not.

Options (OG's names): ``batchCount=n`` (> 1: appends are gathered until n events are
waiting, then sent as one call), ``batchMillis=ms`` (a partial gathering is sent at the
latest ``ms`` after its first event; 0 = only when n is reached or at close -- as OG),
``compression=true`` (or ``"gzip"``: each call's payload is gzip-compressed; the receiving
RPC source recognises it, the events arrive as they were). Unlike OG there are no batch
events on the wire: the collector needs no ``unbatch``/``gunzip``. ``timeoutMs`` bounds a
call (connect: at most 5 s).

Counters of the agent sink (summed from its parts after each append): ``events_in``,
``events_out`` (sent), ``bytes_out``, ``retries`` (RETRY answers), ``failovers``,
``dropped`` (BE), ``spooled``, ``replayed``, ``spool_bytes``, ``send_errors`` (DFO).
"""
from __future__ import annotations

import logging

from ..checkpoint import Checkpoint
from ..codec import encode_events
from ..component import Component, NodeContext, Sink
from ..decorators.batch import BatchDecorator
from ..decorators.disk_failover import DiskFailoverDecorator
from ..errors import SinkError
from ..event import Event
from ..registry import sink
from ..rpc import DEFAULT_PORT, RpcClient, gzip_payload
from .rpc import RETRY_LIMIT, deliver

log = logging.getLogger(__name__)

CHAIN_COUNTERS = ("events_out", "bytes_out", "retries", "failovers", "dropped")
DFO_COUNTERS = ("spooled", "replayed", "spool_bytes", "send_errors", "corrupt")


def collector_address(host: str, port: int) -> str:
    """The ``"host:port"`` text of a single-collector sink's arguments; ValueError."""
    if not 0 < port <= 65535:
        raise ValueError(f"port must be within 1..65535, got {port}")
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


class _Collector:
    __slots__ = ("client", "retry_at", "backoff")

    def __init__(self, client: RpcClient):
        self.client = client
        self.retry_at = 0.0
        self.backoff = 0.0


class CollectorChain(Sink):
    """Sends each batch to the first collector that takes it (see the module docstring).

    ``drop``: when none takes it, count ``dropped`` and return (BE) instead of raising
    SinkError. ``last_resort``: when every collector not backing off failed, try the ones
    backing off too (DFO's replay). ``open`` never fails: connections are made on use."""

    spec_name = "collectors"

    def __init__(self, addresses: list[tuple[str, int]], *, compress: bool = False,
                 timeout: float = 20.0, initial: float = 1.0, maximum: float = 10.0,
                 drop: bool = False, last_resort: bool = False):
        super().__init__()
        self.addresses = addresses
        self.compress = compress
        self.timeout = timeout
        self.initial = initial
        self.maximum = maximum
        self.drop = drop
        self.last_resort = last_resort
        self.retry_limit = RETRY_LIMIT
        self.collectors: list[_Collector] = []
        self.current: str | None = None
        self._dropping = False

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.collectors = [_Collector(RpcClient(h, p, self.timeout,
                                                connect_timeout=min(self.timeout, 5.0)))
                           for h, p in self.addresses]

    def append(self, events: list[Event]) -> None:
        if events:
            self.append_encoded(encode_events(events), len(events))

    def append_encoded(self, data: bytes, count: int) -> None:
        """Send one batch already in the codec encoding (what diskFailover spools)."""
        payload = gzip_payload(data) if self.compress else data
        now = self.ctx.clock.monotonic()
        ready = [c for c in self.collectors if c.retry_at <= now]
        if self.last_resort:
            ready += [c for c in self.collectors if c.retry_at > now]
        errors = []
        for c in ready:
            client = c.client
            try:
                deliver(lambda: client.append_payload(payload, count), self.ctx,
                        self.metrics, f"collector {client.address}", self.retry_limit)
            except SinkError as exc:
                errors.append(str(exc))
                self._failed(c)
                continue
            c.backoff = c.retry_at = 0.0
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
        self.metrics.add("errors")
        why = "; ".join(errors) if errors else "every collector is backing off"
        if self.drop:
            self.metrics.add("dropped", count)
            if not self._dropping:
                self._dropping = True
                log.warning("agent (best effort): dropping events, no collector takes "
                            "them: %s", why)
            return
        raise SinkError(f"no collector of {len(self.collectors)} took the batch: {why}")

    def _failed(self, c: _Collector) -> None:
        c.client.close()
        c.backoff = self.initial if c.backoff == 0 else min(c.backoff * 2, self.maximum)
        c.retry_at = self.ctx.clock.monotonic() + c.backoff
        self.metrics.add("failovers")

    def interrupt(self) -> None:
        """Make a call in progress fail at once (another thread is closing)."""
        for c in self.collectors:
            c.client.close()

    def close(self) -> None:
        for c in self.collectors:
            c.client.close()


class _Gather(BatchDecorator):
    """``batchCount``/``batchMillis``: gathers appends into calls of at least ``n`` events
    (the batch decorator's buffering, timer and checkpoint holding, without batch events).
    """

    spec_name = "gather"

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            buf = self._buf + events if self._buf else list(events)
            started = False
            if len(buf) >= self.n:
                self.inner.append(buf)    # raises: nothing of this call is kept
                self.metrics.add("events_out", len(buf))
                self._passed += len(buf)
                buf = []
            elif not self._buf:
                started = True
                self._first_at = self.ctx.clock.monotonic()
            self._buf = buf
            self._appended += len(events)
            self.metrics.add("events_in", len(events))
            if self._held:
                self._release()
        if started:
            self._wake.set()

    def _flush(self) -> None:
        if self._buf:
            self.inner.append(self._buf)
            self.metrics.add("events_out", len(self._buf))
            self._passed += len(self._buf)
            self._buf = []
        self._release()


class _AgentSink(Sink):
    """Common part: argument checks, the inner tree, summary counters."""

    mode = "?"

    def __init__(self, addresses: list[str], batchCount: int, batchMillis: int,
                 compression: bool | str, maxMs: int, checkMs: int, timeoutMs: int):
        super().__init__()
        if not addresses:
            raise ValueError("at least one collector is needed")
        self.addresses = [parse_address(a) for a in addresses]
        if batchCount < 1:
            raise ValueError(f"batchCount must be at least 1, got {batchCount}")
        if batchMillis < 0:
            raise ValueError(f"batchMillis must not be negative, got {batchMillis}")
        if isinstance(compression, str):
            if compression.lower() not in ("gzip", "true", "false", "none", ""):
                raise ValueError(f"unknown compression {compression!r}; only gzip is "
                                 f"supported")
            compression = compression.lower() in ("gzip", "true")
        if checkMs <= 0 or maxMs < checkMs:
            raise ValueError(f"need 0 < checkMs <= maxMs, got checkMs={checkMs}, "
                             f"maxMs={maxMs}")
        if timeoutMs <= 0:
            raise ValueError(f"timeoutMs must be > 0, got {timeoutMs}")
        self.batch_count = batchCount
        self.batch_millis = batchMillis
        self.compress = bool(compression)
        self.max_ms = maxMs
        self.check_ms = checkMs
        self.timeout_ms = timeoutMs
        self.chain = CollectorChain(self.addresses, compress=self.compress,
                                    timeout=timeoutMs / 1000, initial=checkMs / 1000,
                                    maximum=maxMs / 1000, drop=self.mode == "BE",
                                    last_resort=self.mode == "DFO")
        self.tree: Sink = self._build(self.chain)
        if batchCount > 1:
            self.tree = _Gather(self.tree, batchCount, batchMillis)

    def _build(self, chain: Sink) -> Sink:
        return chain

    def children(self) -> list[Component]:
        return [self.tree]

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.tree.open(ctx)

    def append(self, events: list[Event]) -> None:
        self.metrics.add("events_in", len(events))
        try:
            self.tree.append(events)
        finally:
            self._summarise()

    def _summarise(self) -> None:
        m = self.metrics
        for k in CHAIN_COUNTERS:
            m[k] = self.chain.metrics.get(k, 0)
        dfo = getattr(self, "dfo", None)
        if dfo is not None:
            for k in DFO_COUNTERS:
                m[k] = dfo.metrics.get(k, 0)

    def report(self) -> dict:
        """One component from the operator's view: the chain's and spool's counters are
        summarised here, so the inner parts are not reported again (no double count)."""
        self._summarise()
        return {"name": self.spec_name, "kind": self.kind, "metrics": dict(self.metrics)}

    def when_durable(self, cp: Checkpoint) -> None:
        self.tree.when_durable(cp)

    def close(self) -> None:
        try:
            self.tree.close()
        finally:
            self._summarise()


class _BE(_AgentSink):
    mode = "BE"


class _DFO(_AgentSink):
    mode = "DFO"

    def _build(self, chain: Sink) -> Sink:
        self.dfo = DiskFailoverDecorator(chain, self.max_ms, self.check_ms, name="agent")
        return self.dfo


@sink("agentBESink")
class AgentBESink(_BE):
    """Best effort to one collector: drops (and counts) what it cannot send."""

    def __init__(self, host: str = "localhost", port: int = DEFAULT_PORT, *,
                 batchCount: int = 1, batchMillis: int = 0, compression: bool | str = False,
                 maxMs: int = 10_000, checkMs: int = 1000, timeoutMs: int = 20_000):
        super().__init__([collector_address(host, port)], batchCount, batchMillis,
                         compression, maxMs, checkMs, timeoutMs)


@sink("agentBEChain")
class AgentBEChain(_BE):
    """Best effort over an ordered list of collectors ``"host[:port]"``."""

    def __init__(self, *collectors: str, batchCount: int = 1, batchMillis: int = 0,
                 compression: bool | str = False, maxMs: int = 10_000, checkMs: int = 1000,
                 timeoutMs: int = 20_000):
        super().__init__(list(collectors), batchCount, batchMillis, compression, maxMs,
                         checkMs, timeoutMs)


@sink("agentDFOSink")
class AgentDFOSink(_DFO):
    """Disk failover to one collector: spools what it cannot send, replays it later."""

    def __init__(self, host: str = "localhost", port: int = DEFAULT_PORT, *,
                 batchCount: int = 1, batchMillis: int = 0, compression: bool | str = False,
                 maxMs: int = 10_000, checkMs: int = 1000, timeoutMs: int = 20_000):
        super().__init__([collector_address(host, port)], batchCount, batchMillis,
                         compression, maxMs, checkMs, timeoutMs)


@sink("agentDFOChain")
class AgentDFOChain(_DFO):
    """Disk failover over an ordered list of collectors ``"host[:port]"``."""

    def __init__(self, *collectors: str, batchCount: int = 1, batchMillis: int = 0,
                 compression: bool | str = False, maxMs: int = 10_000, checkMs: int = 1000,
                 timeoutMs: int = 20_000):
        super().__init__(list(collectors), batchCount, batchMillis, compression, maxMs,
                         checkMs, timeoutMs)
