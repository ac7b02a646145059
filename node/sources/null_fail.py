"""``null`` (never produces anything, never ends) and ``fail("msg")`` (never opens)."""
from __future__ import annotations

import threading

from ..component import NodeContext, Source
from ..errors import SourceError
from ..event import Event
from ..registry import source


@source("null")
class NullSource(Source):
    """Produces nothing and is never exhausted: ``next_batch`` waits out its timeout."""

    def __init__(self):
        super().__init__()
        self._closed = threading.Event()

    def next_batch(self, timeout: float) -> list[Event] | None:
        if self._closed.wait(timeout):
            return None
        return []

    def close(self) -> None:
        self._closed.set()


@source("fail")
class FailSource(Source):
    """Always fails to open, with ``msg``."""

    def __init__(self, msg: str = "fail source: always fails"):
        super().__init__()
        self.msg = msg

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        raise SourceError(self.msg)

    def next_batch(self, timeout: float) -> list[Event] | None:
        raise SourceError(self.msg)
