"""Failover ``< primary ? backup ? ... >``: the first healthy branch takes each batch."""
from __future__ import annotations

import logging

from ..backoff import Backoff
from ..branches import Branch, close_branches
from ..checkpoint import Checkpoint, split_checkpoint
from ..component import Component, NodeContext, Sink
from ..errors import SinkError

log = logging.getLogger(__name__)


class FailoverSink(Sink):
    """Tries branches in order. A branch that fails to open or append is closed and skipped
    until its backoff expires (``initial`` seconds, doubling up to ``maximum``); a batch is
    never lost between branches: it goes to the next healthy one, or the append raises when
    none takes it.

    A checkpoint is committed once every open branch that took events since it was opened
    has made it durable (a backup keeps events after the primary is back). If a branch that
    took events fails to close, those events may be lost and every later checkpoint covers
    them, so from then on no checkpoint is committed (``checkpoints_dropped``): the source
    re-reads from the last committed position after a restart."""

    spec_name = "failover"

    def __init__(self, branches: list[Sink], initial: float = 1.0, maximum: float = 60.0):
        super().__init__()
        self.branches = [Branch(b, Backoff(initial, maximum)) for b in branches]
        self.initial = initial
        self.maximum = maximum
        self.current: Branch | None = None
        self.lost = False

    def children(self) -> list[Component]:
        return [b.sink for b in self.branches]

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        for br in self.branches:
            if self._try_open(br):
                self.current = br
                return
        raise SinkError("failover: no branch could be opened")

    def _fail(self, br: Branch) -> None:
        if br.opened:
            br.opened = False
            try:
                br.sink.close()
            except Exception as exc:
                if br.dirty:
                    self._lose(exc)
        br.dirty = False
        br.back_off(self.ctx.clock)
        self.metrics.add("failovers")

    def _lose(self, exc: Exception) -> None:
        if not self.lost:
            log.error("a failover branch holding events failed to close; no checkpoint is "
                      "committed until a restart re-reads them", extra={"error": str(exc)})
        self.lost = True
        self.metrics.add("errors")

    def _try_open(self, br: Branch) -> bool:
        opened = br.open_when_due(self.ctx)
        if isinstance(opened, Exception):
            self._fail(br)
            return False
        return opened

    def append(self, events) -> None:
        for br in self.branches:
            if not self._try_open(br):
                continue
            try:
                br.sink.append(events)
            except SinkError:
                self._fail(br)
                continue
            br.took()
            self.current = br
            self.metrics.add("events_in", len(events))
            return
        self.metrics.add("errors")
        raise SinkError(f"failover: all {len(self.branches)} branches failed")

    def when_durable(self, cp: Checkpoint) -> None:
        if self.lost:
            self.metrics.add("checkpoints_dropped")
            return
        holders = [br for br in self.branches if br.opened and br.dirty]
        if not holders:
            # every event before cp went to branches closed cleanly since: durable
            self.ctx.store.commit([cp])
        elif len(holders) == 1:
            holders[0].sink.when_durable(cp)
        else:
            for br, part in zip(holders, split_checkpoint(cp, len(holders))):
                br.sink.when_durable(part)

    def close(self) -> None:
        close_branches(self.branches, "failover")
