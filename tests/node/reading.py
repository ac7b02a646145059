"""Reading a source in tests, always with a deadline (by :func:`tests.waiting.wait_until`);
committing its position."""
from __future__ import annotations

import time
from contextlib import suppress

from flume_og.node.checkpoint import Checkpoint
from flume_og.node.event import Event
from tests.waiting import wait_until


def read_events(src, n: int, timeout: float = 5.0) -> list[Event]:
    """Events from ``src`` until ``n`` arrived or the deadline passed."""
    out: list[Event] = []

    def enough() -> bool:
        if len(out) < n:
            out.extend(src.next_batch(0.05) or [])
        return len(out) >= n
    # on a timeout the caller's comparison of what came with what it expected says more
    with suppress(AssertionError):
        wait_until(enough, timeout, f"{n} events", interval=0)
    return out


def read_n(src, n: int, timeout: float = 5.0) -> list[bytes]:
    """Bodies from ``src`` until ``n`` arrived or the deadline passed."""
    return [e.body for e in read_events(src, n, timeout)]


def poll_until(src, cond, timeout: float = 5.0, what: str = "condition") -> list[bytes]:
    """Keep polling ``src`` until ``cond()``; returns any bodies read meanwhile.
    AssertionError naming ``what`` if ``cond()`` still fails after ``timeout`` seconds."""
    out: list[bytes] = []

    def done() -> bool:
        if cond():
            return True
        out.extend(e.body for e in src.next_batch(0.05) or [])
        return False
    wait_until(done, timeout, what, interval=0)
    return out


def read_quiet(src, seconds: float = 0.3) -> list[bytes]:
    """Everything ``src`` returns within ``seconds`` (to check that nothing more comes)."""
    end = time.monotonic() + seconds
    return poll_until(src, lambda: time.monotonic() >= end, seconds + 5, "the quiet window")


def commit(ctx, src) -> None:
    """Commit ``src``'s position as a durable sink would."""
    ctx.store.commit([Checkpoint(src.checkpoint())])
