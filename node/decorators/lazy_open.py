"""``lazyOpen``: opens the inner sink at its first append, not when the flow starts."""
from __future__ import annotations

from ..checkpoint import Checkpoint
from ..component import Decorator, NodeContext
from ..event import Event
from ..registry import decorator


@decorator("lazyOpen")
class LazyOpenDecorator(Decorator):
    """Defers ``inner.open`` to the first append (an open failure surfaces there as a
    SinkError). Checkpoints before that first append commit at once: no event is pending."""

    opened = False

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.opened = False

    def append(self, events: list[Event]) -> None:
        if not self.opened:
            try:
                self.inner.open(self.ctx)
            except BaseException:
                self.inner.close()
                raise
            self.opened = True
            self.metrics.add("opens")
        self.inner.append(events)

    def when_durable(self, cp: Checkpoint) -> None:
        if self.opened:
            self.inner.when_durable(cp)
        else:
            self.ctx.store.commit([cp])

    def close(self) -> None:
        if self.opened:
            self.opened = False
            self.inner.close()
