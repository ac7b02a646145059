"""``let name := sink in ...``: one sink instance used from several places of a tree."""
from __future__ import annotations

import threading

from ..component import Component, NodeContext, Sink


class SharedSink:
    """Holds the shared instance; each use in the body gets a :class:`SharedRef`. The
    instance is opened by the first reference opened and closed by the last one closed."""

    def __init__(self, target: Sink):
        self.target = target
        self.lock = threading.Lock()
        self.open_refs = 0

    def reference(self) -> "SharedRef":
        return SharedRef(self)


class SharedRef(Sink):
    spec_name = "let"

    def __init__(self, shared: SharedSink):
        super().__init__()
        self.shared = shared
        self.is_open = False

    def children(self) -> list[Component]:
        return [self.shared.target]

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        with self.shared.lock:
            if self.shared.open_refs == 0:
                self.shared.target.open(ctx)
            self.shared.open_refs += 1
            self.is_open = True

    def append(self, events) -> None:
        with self.shared.lock:
            self.shared.target.append(events)

    def when_durable(self, cp) -> None:
        with self.shared.lock:
            self.shared.target.when_durable(cp)

    def close(self) -> None:
        with self.shared.lock:
            if not self.is_open:
                return
            self.is_open = False
            self.shared.open_refs -= 1
            if self.shared.open_refs == 0:
                self.shared.target.close()
