"""``rpcSink(["host"[, port=35853]])`` (= ``thriftSink``): sends each batch to an RPC source.

Each append is one call: ``appendPacked`` (the batch codec, one binary field; default) or,
with ``packed=false``, ``appendBatch`` (a ``ThriftFlumeEvent`` struct per event, what any
Thrift client can produce). The call returns only when the receiver answered:

* ``OK`` -- the receiver's flow took the events: the append returns (and a checkpoint
  passed afterwards is committed at once);
* ``RETRY`` -- the receiver is busy: the same batch is sent again after a short pause
  (50 ms doubling to 1 s), up to ``RETRY_LIMIT`` times, then SinkError;
* ``FAILED``, a broken connection or a timeout (``timeoutMs``) -- SinkError, so that
  failover, ``stubbornAppend``, ``diskFailover``... react. The next call reconnects.

A batch over the receivers' default bounds (``node.rpc.SEND_BATCH_EVENTS`` events,
``SEND_BATCH_BYTES`` encoded bytes; ``SEND_STRUCT_BATCH_BYTES`` with ``packed=false``) is
sent as several calls, in order.

Each call carries a batch id and its deadline (``timeoutMs``; node/rpc.py): a batch resent
after a failure -- by ``stubbornAppend``, ``diskFailover``... -- keeps its id, so a
receiver that took the first call answers the resend without writing it twice.

``open`` connects (SinkError if the receiver is not there). Counters: ``events_out``,
``bytes_out`` (payload bytes), ``retries`` (RETRY answers), ``errors``.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from .. import rpc
from ..backoff import step
from ..codec import encode_events, split_events
from ..component import Metrics, NodeContext, Sink
from ..errors import SinkError
from ..event import Event
from ..registry import NonEmpty, PeerPort, Positive, sink
from ..rpc import DEFAULT_PORT, BatchIds, RpcClient, Status

log = logging.getLogger(__name__)

RETRY_LIMIT = 10          # RETRY answers in a row before giving up on a batch
RETRY_INITIAL = 0.05      # seconds before the first resend after RETRY
RETRY_MAX = 1.0


def deliver(call: Callable[[], tuple[int, str]], ctx: NodeContext, metrics: Metrics,
            what: str, retry_limit: int = RETRY_LIMIT) -> None:
    """Run ``call`` (one RPC returning ``(status, message)``) until it answers OK.

    RETRY answers are retried after a pause (50 ms doubling to 1 s) up to ``retry_limit``
    times; FAILED, too many RETRYs, or the node stopping raise SinkError. A SinkError from
    ``call`` itself (transport failure) passes through."""
    delay = 0.0     # a local, not a Backoff: this runs for every batch
    retries = 0
    while True:
        status, message = call()
        if status == Status.OK:
            return
        if status != Status.RETRY:
            raise SinkError(f"{what} refused the batch ({Status.NAMES.get(status, status)}): "
                            f"{message}")
        metrics.add("retries")
        retries += 1
        if retries > retry_limit:
            raise SinkError(f"{what} still busy after {retry_limit} retries: {message}")
        delay = step(delay, RETRY_INITIAL, RETRY_MAX)
        if ctx.clock.wait(ctx.stop_event, delay):
            raise SinkError(f"{what}: node stopping while the receiver was busy")


@sink("rpcSink", aliases=("thriftSink",))
class RpcSink(Sink):
    """Sends each batch to ``host:port`` and waits for the receiver's answer."""

    def __init__(self, host: NonEmpty = "localhost", port: PeerPort = DEFAULT_PORT, *,
                 packed: bool = True, timeoutMs: Positive = 20_000):
        super().__init__()
        self.host = host
        self.port = port
        self.packed = packed
        self.timeoutMs = timeoutMs
        self.retry_limit = RETRY_LIMIT
        self.client: RpcClient | None = None
        self.ids: BatchIds | None = None     # kept across reopening: resends keep their id

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        if self.ids is None:
            self.ids = BatchIds(ctx.logical_name)
        timeout = self.timeoutMs / 1000
        self.client = RpcClient(self.host, self.port, timeout,
                                connect_timeout=min(timeout, 5.0), tls=ctx.transport.client)
        try:
            self.client.connect()
        except SinkError:
            self.metrics.add("errors")
            raise

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        limit = rpc.SEND_BATCH_BYTES if self.packed else rpc.SEND_STRUCT_BATCH_BYTES
        pieces = split_events(events, rpc.SEND_BATCH_EVENTS, limit)
        if len(pieces) == 1:
            self._send(events)
            return
        # a batch sent in pieces: when a piece fails, its resend (the same events again:
        # a DFO replay, insistentAppend) skips the pieces the receiver answered OK --
        # written already, they would be new batches to it and written twice
        ids = self.ids
        whole = encode_events(events) if ids.pieces_pending else None
        taken = ids.pieces_taken(whole) if whole is not None else set()
        kept = bool(taken)
        try:
            for i, piece in enumerate(pieces):
                if i not in taken:
                    self._send(piece)
                    taken.add(i)
        except SinkError:
            ids.keep_pieces(whole if whole is not None else encode_events(events), taken)
            raise
        if kept:
            ids.keep_pieces(whole, set())

    def _send(self, events: list[Event]) -> None:
        client, ids = self.client, self.ids
        # the batch's bytes name it for its id; the struct form encodes them only when
        # an id is kept for a resend (then a resend of these events gets that id)
        data = encode_events(events) if self.packed or ids.pending else None
        batch = ids.take(data) if data is not None else ids.take(b"")
        if self.packed:
            size = len(data)

            def call():
                return client.append_payload(data, len(events), batch)
        else:
            size = sum([len(e.body) for e in events])

            def call():
                return client.append_batch(events, batch)
        start = time.monotonic()
        try:
            deliver(call, self.ctx, self.metrics, f"rpcSink {self.address}",
                    self.retry_limit)
        except SinkError:
            self.metrics.add("errors")
            ids.unsettled(data if data is not None else encode_events(events), batch)
            raise
        if data is not None:
            ids.settle(data)
        self.histogram("batch_send_seconds").observe(time.monotonic() - start)
        self.metrics.add("events_out", len(events))
        self.metrics.add("bytes_out", size)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
