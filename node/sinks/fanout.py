"""Fan-out ``[ s1, s2, ... ]``: every event goes to every branch."""
from __future__ import annotations

from ..checkpoint import Checkpoint, split_checkpoint
from ..component import Component, NodeContext, Sink
from ..errors import SinkError
from ..event import Event, columns


def _mark_under_fanout(c: Component) -> None:
    """Tell every component of a branch that it sits under a fan-out: checkpoints reach
    it split, without E2E group keys (``collectorSink`` then refuses groups)."""
    c.under_fanout = True
    for k in c.children():
        _mark_under_fanout(k)


class FanOutSink(Sink):
    """Appends each batch to every branch, each branch getting its own copy of the events.
    If any branch fails the append raises (after every branch was tried), naming the failed
    branches. A checkpoint is committed only when every branch has made its share durable."""

    spec_name = "fanout"

    def __init__(self, branches: list[Sink]):
        super().__init__()
        self.branches = branches
        for b in branches:
            _mark_under_fanout(b)

    def children(self) -> list[Component]:
        return list(self.branches)

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        opened = []
        try:
            for b in self.branches:
                b.open(ctx)
                opened.append(b)
        except BaseException:
            for b in opened:
                b.close()
            raise

    def append(self, events) -> None:
        failed = []
        last = len(self.branches) - 1
        for i, b in enumerate(self.branches):
            # Each branch gets its own events (the last one the originals): decorators
            # change events in place (attributes, rolltag, body), and a branch may keep a
            # batch it was given, so branches must not see each other's changes.
            fast = columns(events)
            batch = events if i == last else fast.piece(0, len(fast)) if fast else [
                Event(e.body, e.timestamp, e.nanos, e.priority, e.host, dict(e.attrs))
                for e in events]
            try:
                b.append(batch)
            except SinkError as exc:
                failed.append((i, exc))
        self.metrics.add("events_in", len(events))
        if failed:
            self.metrics.add("errors", len(failed))
            detail = "; ".join(f"branch {i}: {exc}" for i, exc in failed)
            raise SinkError(f"fan-out: {len(failed)} of {len(self.branches)} branches failed: "
                            f"{detail}") from failed[0][1]

    def when_durable(self, cp: Checkpoint) -> None:
        for b, part in zip(self.branches, split_checkpoint(cp, len(self.branches))):
            b.when_durable(part)

    def close(self) -> None:
        errors = []
        for b in self.branches:
            try:
                b.close()
            except Exception as exc:  # close every branch, then report
                errors.append(exc)
        if errors:
            raise SinkError(f"fan-out close: {errors[0]}") from errors[0]
