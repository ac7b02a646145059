"""A branch of a failover ``< a ? b >`` or a ``balance`` fan-out: its sink, its state and
its backoff. Shared by :mod:`node.sinks.failover` and :mod:`node.decorators.balance`."""
from __future__ import annotations

from .backoff import Backoff
from .clock import Clock
from .component import Sink
from .errors import SinkError


class Branch:
    """A branch of a failover or ``balance``: its sink, whether it is open, when it may be
    tried again after a failure, and whether it took events not yet known to be durable
    (``dirty``: since it was opened for a failover, since the last checkpoint for
    ``balance``)."""

    __slots__ = ("sink", "index", "opened", "retry_at", "backoff", "dirty")

    def __init__(self, sink: Sink, backoff: Backoff, index: int = 0):
        self.sink = sink
        self.index = index
        self.opened = False
        self.retry_at = 0.0
        self.backoff = backoff
        self.dirty = False

    def waiting(self, clock: Clock) -> bool:
        """True while the backoff after its last failure runs."""
        return bool(self.retry_at) and clock.monotonic() < self.retry_at

    def back_off(self, clock: Clock) -> None:
        """After a failure: wait the next delay of its backoff."""
        self.retry_at = clock.monotonic() + self.backoff.next_delay()

    def open_when_due(self, ctx) -> bool | Exception:
        """Open the branch's sink unless it is open already (True) or its backoff runs
        (False). An open that fails closes what it left behind, quietly, and returns the
        error: the caller counts it and backs the branch off."""
        if self.opened:
            return True
        if self.waiting(ctx.clock):
            return False
        try:
            self.sink.open(ctx)
        except Exception as exc:
            try:
                self.sink.close()
            except Exception:  # noqa: BLE001 - the open error is the one to report
                pass
            return exc
        self.opened = True
        self.dirty = False
        return True

    def took(self) -> None:
        """After an accepted append: it holds events, and its backoff is over."""
        self.dirty = True
        self.backoff.reset()
        self.retry_at = 0.0


def close_branches(branches: list[Branch], what: str) -> None:
    """Close every open branch; then, if any close failed, SinkError (``what``: the
    construct's name) with the first failure."""
    errors = []
    for br in branches:
        if br.opened:
            br.opened = False
            try:
                br.sink.close()
            except Exception as exc:  # close every branch, then report
                errors.append(exc)
            br.dirty = False
    if errors:
        raise SinkError(f"{what} close: {errors[0]}") from errors[0]
