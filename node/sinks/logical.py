"""Sinks the master translates: ``logicalSink("node")`` and the ``auto*Chain`` family.

Registered so that specs using them validate everywhere; a node only runs the master's
translation (``rpcSink("host", port)``, ``agentE2EChain("h1:p1", ...)``...). Opening the
untranslated sink is an error that says so.
"""
from __future__ import annotations

from ..component import NodeContext, Sink
from ..errors import SinkError
from ..registry import NonEmpty, sink


class _Untranslated(Sink):
    master_only = True

    def _error(self) -> SinkError:
        return SinkError(f"{self.spec_name} must be translated by a master; "
                         f"run this spec through flume master")

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        raise self._error()

    def append(self, events) -> None:
        raise self._error()


@sink("logicalSink")
class LogicalSink(_Untranslated):
    """Sends to wherever logical node ``logicalNode`` runs; the master translates it to an
    RPC sink to that node's ``logicalSource``."""

    translation = "rpcSink"

    def __init__(self, logicalNode: NonEmpty):
        super().__init__()
        self.logicalNode = logicalNode


@sink("autoE2EChain")
class AutoE2EChain(_Untranslated):
    """End-to-end mode over the flow's collectors; the master expands it to
    ``agentE2EChain`` over up to three collectors chosen by consistent hashing."""

    translation = "agentE2EChain"

    def __init__(self):
        super().__init__()


@sink("autoDFOChain")
class AutoDFOChain(_Untranslated):
    """Disk-failover mode over the flow's collectors; the master expands it to
    ``agentDFOChain``."""

    translation = "agentDFOChain"

    def __init__(self):
        super().__init__()


@sink("autoBEChain")
class AutoBEChain(_Untranslated):
    """Best-effort mode over the flow's collectors; the master expands it to
    ``agentBEChain``."""

    translation = "agentBEChain"

    def __init__(self):
        super().__init__()
