"""``balance([policy], key="%{host}") [ s1, s2, ... ]``: load balancing over branches.

Each batch goes to one branch: the next one (``roundRobin``), a random one (``random``), or,
with ``hash``, the events of a batch are grouped by the branch their expanded ``key``
hashes to (CRC-32, stable across processes), so events with one key keep going to one
branch while it is healthy.
"""
from __future__ import annotations

import logging
import random
import zlib
from typing import Annotated

from ..backoff import Backoff
from ..checkpoint import Checkpoint, split_checkpoint
from ..component import Component, NodeContext, Sink
from ..errors import SinkError
from ..escapes import Escaper
from ..event import Event
from ..registry import decorator
from ..branches import Branch, close_branches

log = logging.getLogger(__name__)

POLICIES = ("roundRobin", "random", "hash")
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of "
                         + ", ".join(f'"{p}"' for p in POLICIES))


@decorator("balance")
class BalanceSink(Sink):
    """Sends each batch (with ``hash``: each group of events) to one branch. A branch that
    fails to open or append is closed and skipped, then retried after a backoff (1 s,
    doubling up to 60 s); the batch goes to the next healthy branch, and the append raises
    SinkError only when no branch takes it.

    A checkpoint is split over every open branch and committed once all made their share
    durable. A checkpoint is dropped (the next one carries the position) when a branch that
    took events since the previous checkpoint failed in between.

    With ``hash``, if one group is delivered and another finds no branch, the append raises
    after part of the batch was delivered: a retry repeats those events."""

    def __init__(self, branches: list[Sink],
                 policy: Annotated[str, check_policy] = "roundRobin",
                 key: Annotated[str, Escaper] = "%{host}"):
        super().__init__()
        if not branches:   # a fan-out in a spec has branches; this guards Python callers
            raise ValueError("balance needs at least one branch")
        self.branches = [Branch(b, Backoff(INITIAL_BACKOFF, MAX_BACKOFF), i)
                         for i, b in enumerate(branches)]
        self.policy = policy
        self.key = key
        # "%{host}" (the default) is read directly: no expansion per event
        self.escaper = Escaper(key) if key != "%{host}" else None
        self.random = random.Random()
        self._next = 0
        self._lost = False  # a dirty branch failed since the last checkpoint

    def children(self) -> list[Component]:
        return [b.sink for b in self.branches]

    # ------------------------------------------------------------- branch health

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._lost = False
        for br in self.branches:
            br.opened, br.retry_at, br.dirty = False, 0.0, False
            br.backoff.reset()
            self._usable(br)
        if not any(br.opened for br in self.branches):
            raise SinkError(f"balance: none of the {len(self.branches)} branches opened")

    def _fail(self, br: Branch, exc: BaseException) -> None:
        if br.dirty:
            self._lost = True
            br.dirty = False
        if br.opened:
            br.opened = False
            try:
                br.sink.close()
            except Exception as close_exc:  # noqa: BLE001 - already failing
                log.debug("balance: closing failed branch %d: %s", br.index, close_exc)
        br.back_off(self.ctx.clock)
        self.metrics.add("branch_failures")
        log.warning("balance: branch %d failed (%s); retrying it in %.0f s",
                    br.index, exc, br.backoff.current)

    def _usable(self, br: Branch) -> bool:
        opened = br.open_when_due(self.ctx)
        if isinstance(opened, Exception):
            self._fail(br, opened)
            return False
        return opened

    # ------------------------------------------------------------- data path

    def _deliver(self, events: list[Event], start: int) -> int:
        """Append ``events`` to the first healthy branch from ``start`` on; its index."""
        n = len(self.branches)
        for j in range(n):
            br = self.branches[(start + j) % n]
            if not self._usable(br):
                continue
            try:
                br.sink.append(events)
            except SinkError as exc:
                self._fail(br, exc)
                continue
            br.took()
            return br.index
        self.metrics.add("errors")
        raise SinkError(f"balance: all {n} branches failed")

    def append(self, events: list[Event]) -> None:
        if not events:
            return
        n = len(self.branches)
        self.metrics.add("events_in", len(events))
        if self.policy == "hash" and n > 1:
            keys = ([e.host for e in events] if self.escaper is None
                    else self.escaper.expand_all(events))
            slot = {k: zlib.crc32(k.encode()) % n for k in set(keys)}
            if len(set(slot.values())) == 1:
                self._deliver(events, slot[keys[0]])
                return
            groups: list[list[Event]] = [[] for _ in range(n)]
            for e, k in zip(events, keys):
                groups[slot[k]].append(e)
            for i, group in enumerate(groups):
                if group:
                    self._deliver(group, i)
            return
        start = self.random.randrange(n) if self.policy == "random" else self._next
        self._next = (self._deliver(events, start) + 1) % n

    def when_durable(self, cp: Checkpoint) -> None:
        if self._lost:
            self._lost = False
            for br in self.branches:
                br.dirty = False
            self.metrics.add("checkpoints_dropped")
            log.warning("balance: a branch failed before its events were durable; "
                        "this checkpoint is not recorded")
            return
        opened = [br for br in self.branches if br.opened]
        for br in self.branches:
            br.dirty = False
        if not opened:
            # No branch holds events since the last checkpoint (a failed one sets _lost).
            self.ctx.store.commit([cp])
            return
        for br, part in zip(opened, split_checkpoint(cp, len(opened))):
            br.sink.when_durable(part)

    def close(self) -> None:
        close_branches(self.branches, "balance")
