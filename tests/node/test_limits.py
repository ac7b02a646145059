"""Counted, rate-limited refusals (node/limits.py)."""
import logging

import pytest

from flume_og.node.component import Metrics
from flume_og.node.limits import ConnectionSlots, RateLimitedLog, Refusals, message_due


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_rate_limited_log_says_how_many_it_kept_quiet(caplog):
    clock = _Clock()
    rl = RateLimitedLog(logging.getLogger("t.limits"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.limits"):
        assert rl.warning("k", "accept failed: %s", "EMFILE")
        for _ in range(1000):
            assert not rl.warning("k", "accept failed: %s", "EMFILE")
        assert rl.warning("other", "different thing")
        clock.t = 10.5
        assert rl.warning("k", "accept failed: %s", "EMFILE")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["accept failed: EMFILE", "different thing",
                    "accept failed: EMFILE (1000 more like this in the last 10 s)"]


def test_refusals_count_every_refusal_and_log_once(caplog):
    m = Metrics()
    r = Refusals(m, logging.getLogger("t.refuse"), "src on port 1")
    with caplog.at_level(logging.WARNING, logger="t.refuse"):
        for _ in range(50):
            r.refuse("oversize", "a 9 MiB message, limit 8 MiB")
        r.refuse("connections", n=3)
    assert m["refused"] == 53
    assert m["refused_oversize"] == 50 and m["refused_connections"] == 3
    assert len(caplog.records) == 2
    assert "src on port 1 refused input (oversize): a 9 MiB" in caplog.records[0].getMessage()


def _cut_at(speed: float, size: int, timeout: float = 30.0, rate: int = 16384,
            step: float = 0.1) -> float | None:
    """When a message of ``size`` bytes sent at ``speed`` bytes/s is cut (None: never)."""
    now, got, due = 0.0, 0, None
    while got < size:
        now += step
        if due is not None and now > due:
            return now
        n = min(size - got, int(speed * step))
        due = message_due(due, now, n, timeout, rate)
        got += n
    return None


def test_message_due_lets_a_slow_link_through_and_cuts_a_trickle():
    """The fixed 30 s deadline cut a 3 MiB batch at 90 kB/s (and any 8 MiB batch under
    280 kB/s). With 16 kB/s and 30 s of credit: 8 MiB at 90 kB/s (93 s) goes through, a
    byte every 5 s is cut at 30 s, a link at 10 kB/s after 30 / (1 - 10/16.4) = 77 s."""
    assert _cut_at(90_000, 8 << 20) is None
    due = None
    for t in range(0, 30, 5):                                # a byte every 5 s
        due = message_due(due, float(t), 1, 30.0, 16384)
    assert 30 < due < 30.001
    assert _cut_at(10_000, 8 << 20) == pytest.approx(30 / (1 - 10_000 / 16384), abs=1)
    due = message_due(None, 0.0, 1 << 20, 30.0, 16384)      # a 1 MiB burst, then silence
    assert message_due(due, 0.0, 1 << 20, 30.0, 16384) == 30.0


def test_connection_slots_take_from_the_biggest_holder_only_when_it_holds_two_more():
    idle = {}
    due = {}
    slots = ConnectionSlots(4, 3, idle.get, due.__getitem__)
    for conn, peer, d in (("a1", "a", 5.0), ("a2", "a", 1.0), ("b1", "b", 0.5),
                          ("a3", "a", 3.0)):
        assert slots.admit(conn, peer) == (None, None)
        due[conn] = d
    # full, nobody idle: "a" holds 3, a newcomer 0: a's earliest due goes (not b1's)
    assert slots.admit("c1", "c") == (None, ("a2", "a", True))
    due["c1"] = 9.0
    # "a" holds 2 now, "b" 1: "b" may not take from "a" (2 < 1 + 2)
    assert slots.admit("b2", "b") == ("connections", None)
    idle["b1"] = 7.0               # idle, but "c" holds as few as "b": b1 stays
    assert slots.admit("c2", "c") == ("connections", None)
    idle["a1"] = 8.0               # an idle one of an address holding 2 more goes first
    assert slots.admit("d1", "d") == (None, ("a1", "a", False))
    assert slots.held("a") == 1 and slots.held("b") == 1 and len(slots) == 4


def test_connection_slots_for_http_close_an_idle_connection_of_any_address():
    idle = {"b1": 7.0}
    slots = ConnectionSlots(2, 2, idle.get, idle_from_any=True)
    assert slots.admit("a1", "a") == (None, None)
    assert slots.admit("b1", "b") == (None, None)
    assert slots.admit("c1", "c") == (None, ("b1", "b", False))
