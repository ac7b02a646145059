"""The one backoff policy (node/backoff.py): delays, cap, cumulative budget, reset."""
from __future__ import annotations

import pytest

from flume_og.node.backoff import Backoff, step
from flume_og.node.clock import Clock
from flume_og.node.component import Metrics
from flume_og.node.rpc import Status
from flume_og.node.sinks.rpc import deliver


def delays(b: Backoff, n: int) -> list:
    return [b.next_delay() for _ in range(n)]


def test_doubles_from_initial_up_to_maximum():
    assert delays(Backoff(1.0, 5.0), 5) == [1.0, 2.0, 4.0, 5.0, 5.0]


# The (initial, maximum) pairs of the call sites, with the delays they handed out before
# they shared this class: the same numbers after the change.
@pytest.mark.parametrize("initial, maximum, expected", [
    (0.05, 1.0, [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]),   # rpcSink, client, accept loops
    (0.1, 5.0, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]),  # FlumeLogHandler
    (1.0, 10.0, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]),       # agent chains
    (1.0, 60.0, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]),  # failover, balance
])
def test_call_site_sequences(initial, maximum, expected):
    assert delays(Backoff(initial, maximum), len(expected)) == expected


def test_step_is_the_same_rule_for_state_kept_elsewhere():
    # e.g. a wait kept per pending group: 0 (none yet), then doubling up to the cap
    waits, w = [], 0.0
    for _ in range(5):
        w = step(w, 0.25, 1.5)
        waits.append(w)
    assert waits == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert step(0, 3.0, 2.0) == 2.0 and step(1.0, 1.0, 30.0, multiplier=3) == 3.0


def test_reset_starts_again_from_initial():
    b = Backoff(1.0, 60.0)
    delays(b, 4)
    assert b.current == 8.0
    b.reset()
    assert b.current == 0.0
    assert delays(b, 2) == [1.0, 2.0]


def test_initial_above_maximum_is_cut_to_it():
    # insistentOpen(maxMs=500, initMs=1000) is accepted: every wait is 0.5 s
    assert delays(Backoff(1.0, 0.5), 3) == [0.5, 0.5, 0.5]


def test_cumulative_cuts_the_last_delay_then_gives_up():
    b = Backoff(1.0, 5.0, cumulative=10.0)
    assert delays(b, 6) == [1.0, 2.0, 4.0, 3.0, None, None]
    b.reset()                                    # the budget is whole again
    assert delays(b, 2) == [1.0, 2.0]
    assert Backoff(1.0, 5.0, cumulative=0.0).next_delay() is None


def test_multiplier():
    assert delays(Backoff(1.0, 20.0, multiplier=3), 4) == [1.0, 3.0, 9.0, 20.0]
    assert delays(Backoff(2.0, 20.0, multiplier=1), 3) == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("kwargs", [
    dict(initial=0, maximum=1.0), dict(initial=1.0, maximum=-1),
    dict(initial=1.0, maximum=2.0, cumulative=-0.5),
    dict(initial=1.0, maximum=2.0, multiplier=0.5),
])
def test_rejects_arguments_that_would_not_back_off(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


class RecordingClock(Clock):
    """Records each wait's length and returns at once (nothing is waited for)."""

    def __init__(self):
        self.waits: list[float] = []

    def wait(self, event, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


def test_rpc_sink_pauses_between_busy_answers_double_up_to_a_second(make_ctx):
    clock = RecordingClock()
    ctx = make_ctx(clock=clock)
    answers = [Status.RETRY] * 7 + [Status.OK]
    deliver(lambda: (answers.pop(0), ""), ctx, Metrics(), "test receiver")
    assert clock.waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    clock.waits.clear()                      # each batch starts again from 50 ms
    answers = [Status.RETRY, Status.OK]
    deliver(lambda: (answers.pop(0), ""), ctx, Metrics(), "test receiver")
    assert clock.waits == [0.05]
