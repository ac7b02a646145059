"""Reading a source in tests, always with a deadline; committing its position."""
from __future__ import annotations

import time

from node.checkpoint import Checkpoint
from node.event import Event


def read_events(src, n: int, timeout: float = 5.0) -> list[Event]:
    """Events from ``src`` until ``n`` arrived or the deadline passed."""
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        batch = src.next_batch(0.05)
        if batch:
            out.extend(batch)
    return out


def read_n(src, n: int, timeout: float = 5.0) -> list[bytes]:
    """Bodies from ``src`` until ``n`` arrived or the deadline passed."""
    return [e.body for e in read_events(src, n, timeout)]


def poll_until(src, cond, timeout: float = 5.0) -> list[bytes]:
    """Keep polling ``src`` until ``cond()``; returns any bodies read meanwhile."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        batch = src.next_batch(0.05)
        if batch:
            out.extend(e.body for e in batch)
    return out


def read_quiet(src, seconds: float = 0.3) -> list[bytes]:
    """Everything ``src`` returns within ``seconds`` (to check that nothing more comes)."""
    return poll_until(src, lambda: False, seconds)


def commit(ctx, src) -> None:
    """Commit ``src``'s position as a durable sink would."""
    ctx.store.commit([Checkpoint(src.checkpoint())])
