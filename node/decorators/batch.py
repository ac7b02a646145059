"""``batch(n[, maxLatencyMs])`` packs events into batch events; ``unbatch`` unpacks them.

A batch event's body is the binary encoding of its events made by :mod:`node.codec`
(every field kept). The attribute ``batchSize`` (the count in ASCII decimal) marks a
batch event; it takes the timestamp, nanos and host of its first event.
"""
from __future__ import annotations

import logging
import threading
from typing import Annotated

from annotated_types import Ge

from ..checkpoint import Checkpoint
from ..codec import (MAX_BATCH_BYTES, MAX_BATCH_EVENTS, BatchTooLarge, decode_events,
                     encode_events)
from ..component import Decorator, NodeContext, Sink
from ..errors import SinkError
from ..event import Event, Priority
from ..limits import Refusals
from ..registry import AtLeast1, NonNegative, decorator

BatchBytes = Annotated[int, Ge(1024)]   # a bound on a batch's bytes: room for one event

log = logging.getLogger(__name__)

BATCH_ATTR = "batchSize"


def make_batch(events: list[Event]) -> Event:
    """One batch event holding ``events`` (non-empty)."""
    first = events[0]
    return Event(encode_events(events), first.timestamp, first.nanos, Priority.INFO,
                 first.host, {BATCH_ATTR: str(len(events)).encode()})


@decorator("batch")
class BatchDecorator(Decorator):
    """Packs every ``n`` events into one batch event; a partial batch is passed on at the
    latest ``maxLatencyMs`` (default 1000) after its first event arrived; 0 passes only
    full batches (a partial one waits for more events or the close).

    Appends are all-or-nothing: if the inner sink refuses the batches, the new events are
    not kept. A checkpoint is handed to the inner sink only once every event appended before
    it has been passed on."""

    def __init__(self, inner: Sink, n: AtLeast1, maxLatencyMs: NonNegative = 1000):
        super().__init__(inner)
        self.n = n
        self.max_latency = maxLatencyMs / 1000.0
        self._lock = threading.Lock()
        self._buf: list[Event] = []
        self._first_at = 0.0          # monotonic time the oldest buffered event arrived
        self._appended = 0            # events accepted so far
        self._passed = 0              # events passed on to the inner sink so far
        self._held: list[tuple[int, Checkpoint]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()  # set on stop and when a new partial batch starts
        self._timer: threading.Thread | None = None

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.inner.open(ctx)
        self._buf = []
        self._held = []
        self._appended = self._passed = 0
        if self.max_latency > 0:
            self._stop = threading.Event()
            self._wake = threading.Event()
            self._timer = threading.Thread(target=self._run_timer, name="batch-timer",
                                           daemon=True)
            self._timer.start()

    def _full(self, buf: list[Event]) -> int:
        """How many of the buffered events go on now: whole batches of ``n``."""
        return len(buf) // self.n * self.n

    def _packed(self, events: list[Event]) -> list[Event]:
        """What the inner sink is given for ``events``: a batch event per ``n``."""
        n = self.n
        return [make_batch(events[i:i + n]) for i in range(0, len(events), n)]

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            buf = self._buf + events if self._buf else list(events)
            count = self._full(buf)
            if count:
                out = self._packed(buf[:count])
                self.inner.append(out)  # raises: nothing of this call is kept
                self.metrics.add("events_out", len(out))
                del buf[:count]
            started = bool(buf) and (count > 0 or not self._buf)
            if started:
                # the oldest buffered event arrived now: restart the latency timer
                self._first_at = self.ctx.clock.monotonic()
            self._buf = buf
            self._appended += len(events)
            self._passed += count
            self.metrics.add("events_in", len(events))
            if self._held:
                self._release()
        if started:
            self._wake.set()

    def _flush(self) -> None:
        """Pass the partial batch on (lock held). Raises SinkError, keeping the buffer."""
        if self._buf:
            out = self._packed(self._buf)
            self.inner.append(out)
            self.metrics.add("events_out", len(out))
            self._passed += len(self._buf)
            self._buf = []
        self._release()

    def _release(self) -> None:
        held = self._held
        while held and held[0][0] <= self._passed:
            self.inner.when_durable(held.pop(0)[1])

    def _run_timer(self) -> None:
        clock = self.ctx.clock
        stop, wake = self._stop, self._wake
        while not stop.is_set():
            wake.clear()
            with self._lock:
                due = self._first_at + self.max_latency if self._buf else None
                now = clock.monotonic()
                if due is not None and now >= due:
                    try:
                        self._flush()
                        self.metrics.add("timeouts")
                        due = None
                    except Exception as exc:  # noqa: BLE001 - the timer must survive
                        # Keep the events; try again one latency period later.
                        self.metrics.add("errors")
                        log.warning("batch: flushing a partial batch failed: %s", exc)
                        self._first_at = now
                        due = now + self.max_latency
            wait = self.max_latency if due is None else max(due - now, 0.0)
            clock.wait(wake, wait)

    def when_durable(self, cp: Checkpoint) -> None:
        with self._lock:
            if self._passed >= self._appended and not self._held:
                self.inner.when_durable(cp)
            else:
                self._held.append((self._appended, cp))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.join()
        error = None
        with self._lock:
            try:
                self._flush()
            except SinkError as exc:
                # The events are lost to this sink; their checkpoints are dropped so the
                # source position is not recorded past them.
                error = exc
                self.metrics.add("errors")
                self.metrics.add("events_dropped", len(self._buf))
                self._buf = []
                self._held = []
        self.inner.close()
        if error is not None:
            raise SinkError(f"batch: could not pass the last batch on: {error}") from error


@decorator("unbatch")
class UnbatchDecorator(Decorator):
    """Unpacks batch events into their events; other events pass through unchanged.

    Bounds: a batch of more than ``maxEvents`` events (default 20,000) or ``maxBytes``
    bytes (default 16 MiB, the RPC defaults), or whose events would hold more attribute
    entries than :func:`node.codec.decode_events` allows for ``maxBytes``, is refused
    (``refused_events``, ``refused_bytes``, ``refused_attributes``) before any of its
    events is built, and a corrupt batch is refused as ``refused_malformed``; either is
    passed on as it is, so nothing is lost (a rate-limited warning says so). The events of
    one append are passed on in pieces of about ``maxEvents`` events (a piece is passed on
    as soon as it holds that many); if the inner sink fails on a later piece, the earlier
    pieces have already been passed on."""

    def __init__(self, inner: Sink, maxEvents: AtLeast1 = MAX_BATCH_EVENTS,
                 maxBytes: BatchBytes = MAX_BATCH_BYTES):
        super().__init__(inner)
        self.max_events = maxEvents
        self.max_bytes = maxBytes
        self.refusals = Refusals(self.metrics, log, "unbatch")

    def append(self, events: list[Event]) -> None:
        out: list[Event] = []
        passed = 0
        for e in events:
            if BATCH_ATTR in e.attrs:
                try:
                    out.extend(decode_events(e.body, self.max_events, self.max_bytes))
                except BatchTooLarge as exc:
                    self.refusals.refuse(exc.reason, f"passing on a batch event as it is: "
                                                     f"{exc}")
                    out.append(e)
                except ValueError as exc:
                    self.refusals.refuse("malformed", f"passing on a corrupt batch event "
                                                      f"as it is: {exc}")
                    out.append(e)
            else:
                out.append(e)
            if len(out) >= self.max_events:
                self.inner.append(out)
                passed += len(out)
                out = []
        self.metrics.add("events_in", len(events))
        if out:
            self.inner.append(out)
            passed += len(out)
        self.metrics.add("events_out", passed)
