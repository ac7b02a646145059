"""``null`` drops every event; ``fail("msg")`` always fails (tests, failover drills)."""
from __future__ import annotations

from ..component import NodeContext, Sink
from ..errors import SinkError
from ..registry import sink


@sink("null")
class NullSink(Sink):
    """Drops every event (counted in ``events_in``)."""

    def append(self, events) -> None:
        self.metrics.add("events_in", len(events))


@sink("fail")
class FailSink(Sink):
    """Fails to open with ``msg``, and fails every append should it be reached anyway."""

    def __init__(self, msg: str = "fail sink"):
        super().__init__()
        self.msg = msg

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.metrics.add("errors")
        raise SinkError(self.msg)

    def append(self, events) -> None:
        self.metrics.add("errors")
        raise SinkError(self.msg)
