"""``choke("id")``: a rate limit shared by every choke with that id on the physical node.

The limiters live in the physical node's shared state (``ctx.shared.chokes``), so the
chokes of several logical nodes draw from one budget. The master sets a limit with
``setChokeLimit PHYSICAL ID KBPS``, which the node applies with :func:`set_choke_limit`.
Until then a choke lets everything through. Only body bytes count (as in OG); a KB is
1000 bytes.
"""
from __future__ import annotations

import threading

from ..component import PIECE_SECONDS, Decorator, NodeContext, NodeShared, Sink
from ..event import Event
from ..registry import NonEmpty, decorator

BURST_SECONDS = 0.1  # a bucket holds this much of its rate, so short bursts pass at once


class ChokeLimiter:
    """A token bucket in bytes. ``reserve`` takes the tokens at once (going into debt if
    needed) and says how long the caller must wait, so concurrent chokes share the rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rate: float | None = None  # bytes per second; None = unlimited
        self.tokens = 0.0
        self.last: float | None = None

    def set_limit(self, kbps: float | None) -> None:
        with self._lock:
            self.rate = None if kbps is None else kbps * 1000.0
            self.last = None

    def reserve(self, nbytes: int, now: float) -> float:
        """Take ``nbytes`` tokens; the seconds to wait before sending them."""
        with self._lock:
            rate = self.rate
            if rate is None:
                return 0.0
            burst = rate * BURST_SECONDS
            if self.last is None:
                self.tokens = burst
            else:
                self.tokens = min(burst, self.tokens + (now - self.last) * rate)
            self.last = now
            self.tokens -= nbytes
            return 0.0 if self.tokens >= 0 else -self.tokens / rate


def get_limiter(shared: NodeShared, choke_id: str) -> ChokeLimiter:
    """The limiter of ``choke_id`` in a physical node's shared state (created unlimited)."""
    chokes = shared.chokes
    limiter = chokes.get(choke_id)
    if limiter is None:
        limiter = chokes.setdefault(choke_id, ChokeLimiter())
    return limiter


def set_choke_limit(shared: NodeShared, choke_id: str, kbps: float | None) -> None:
    """Limit the chokes ``choke_id`` of a physical node to ``kbps`` KB/s together; None
    removes the limit. Takes effect for running chokes at their next append."""
    if kbps is not None and kbps <= 0:
        raise ValueError(f"a choke limit must be positive, got {kbps}")
    get_limiter(shared, choke_id).set_limit(kbps)


@decorator("choke")
class ChokeDecorator(Decorator):
    """Delays appends so that all chokes named ``id`` on this physical node together pass
    at most their limit of body bytes per second. A stopping node is not held back."""

    def __init__(self, inner: Sink, id: NonEmpty):  # noqa: A002 - the spec keyword is "id"
        super().__init__(inner)
        self.choke_id = id

    def open(self, ctx: NodeContext) -> None:
        self.limiter = get_limiter(ctx.shared, self.choke_id)
        super().open(ctx)

    def append(self, events: list[Event]) -> None:
        """Passes ``events`` on in pieces of at most :data:`PIECE_SECONDS` of the limit's
        bytes (one event at least), each after its wait: an event of a large batch is not
        held for the whole batch."""
        rate = self.limiter.rate
        if rate is None:
            self._pass(events, sum([len(e.body) for e in events]))
            return
        budget = rate * PIECE_SECONDS
        piece: list[Event] = []
        size = 0
        for e in events:
            n = len(e.body)
            if piece and size + n > budget:
                self._pass(piece, size)
                piece, size = [], 0
            piece.append(e)
            size += n
        if piece:
            self._pass(piece, size)

    def _pass(self, events: list[Event], nbytes: int) -> None:
        clock = self.ctx.clock
        wait = self.limiter.reserve(nbytes, clock.monotonic())
        if wait > 0:
            self.metrics.add("throttled_ms", int(wait * 1000))
            clock.wait(self.ctx.stop_event, wait)
        self.metrics.add("bytes_in", nbytes)
        self.inner.append(events)
