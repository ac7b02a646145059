"""ManualClock.settle: how tests check that a timer did *not* act, without sleeping."""
from __future__ import annotations

import threading
import time

import pytest

from flume_og.node.clock import ManualClock
from tests.waiting import wait_until


def test_settle_waits_for_a_woken_thread_to_finish_acting_and_wait_again():
    clock, stop, acted = ManualClock(), threading.Event(), []

    def timer():
        while not stop.is_set():
            if not clock.wait(stop, 1.0):
                time.sleep(0.2)          # a slow (wrong or right) action after waking
                acted.append(clock.monotonic())
    t = threading.Thread(target=timer)
    t.start()
    try:
        clock.advance(0.5)
        clock.settle()
        assert acted == []               # woke, saw 0.5 < 1.0, waits again
        clock.advance(0.6)
        clock.settle()                   # returns only once the 0.2 s action is done
        assert acted == [pytest.approx(1.1)]
    finally:
        stop.set()
        clock.advance(10)
        t.join(5)


def test_settle_times_out_on_a_thread_that_never_waits_again():
    clock, release = ManualClock(), threading.Event()

    def once():
        clock.sleep(1.0)
        release.wait(5)                  # busy elsewhere, never back on the clock
    t = threading.Thread(target=once, name="stuck")
    t.start()
    wait_until(lambda: clock._waiters, 5, "the thread waiting on the clock")
    clock.advance(1.0)
    with pytest.raises(TimeoutError, match="stuck"):
        clock.settle(timeout=0.3)
    release.set()
    t.join(5)
    clock.settle()                       # it ended: nothing left to wait for


def test_settle_with_no_thread_waiting_returns_at_once():
    clock = ManualClock()
    clock.advance(3)
    clock.settle(timeout=0.01)
