"""Sources the master translates: ``logicalSource`` and ``autoCollectorSource``.

They are registered so that ``flume check`` and the master validate specs using them with
the same registry as everything else. A node only ever runs the master's translation
(``rpcSource(PORT)`` / ``collectorSource(PORT)``); opening the untranslated source is an
error that says so.
"""
from __future__ import annotations

from ..component import NodeContext, Source
from ..errors import SourceError
from ..event import Event
from ..registry import source


class _Untranslated(Source):
    master_only = True

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        raise SourceError(f"{self.spec_name} must be translated by a master; "
                          f"run this spec through flume master")

    def next_batch(self, timeout: float) -> list[Event] | None:
        raise SourceError(f"{self.spec_name} must be translated by a master; "
                          f"run this spec through flume master")


@source("logicalSource")
class LogicalSource(_Untranslated):
    """Receives from ``logicalSink``s; the master translates it to an RPC source on a port
    it assigns."""

    translation = "rpcSource"

    def __init__(self):
        super().__init__()


@source("autoCollectorSource")
class AutoCollectorSource(_Untranslated):
    """Joins its flow's collector pool; the master translates it to ``collectorSource``
    on a port it assigns."""

    translation = "collectorSource"

    def __init__(self):
        super().__init__()
