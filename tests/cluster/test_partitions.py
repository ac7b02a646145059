"""Faults across hosts: a real cluster in network namespaces (tests/cluster/harness.py).

The fast scenario runs with the suite; the others are marked ``cluster_full`` and run by
``scripts/cluster-faults.sh``. Each prints its figures (events, duplicates, lost, time to
recover after the fault healed).
"""
from __future__ import annotations

import time

import pytest

from .harness import AGENTS, drained, duplicates, missing, wait_until

pytestmark = pytest.mark.timeout(180)


def report(name: str, c, recovery: float, **figures) -> None:
    events = sum(c.written.values())
    print(f"\nSCENARIO {name}: mode {c.mode}, events {events}, duplicates "
          f"{sum(duplicates(c).values())}, missing {sum(missing(c).values())}, recovery "
          f"{recovery:.1f} s, start {c.started_in:.1f} s "
          + " ".join(f"{k} {v}" for k, v in figures.items()))


def test_e2e_agent_cut_off_from_its_collectors_for_10s_exactly_once(make_cluster):
    """Agent a1's link goes down for 10 s while every agent writes: nothing of a1 reaches
    the collectors meanwhile; after the link is back every counter of every agent is in
    the final files exactly once, and no logical node is left in ERROR."""
    c = make_cluster("E2E")
    for a in AGENTS:
        c.write_counters(a, 3000, 8)     # ends during the cut: recovery is the backlog's
    wait_until(lambda: c.output().get("a1"), 30, "a1's first counters in the files")
    c.net.link_down("a1")
    time.sleep(3)            # what the collectors got before the cut is committed by now
    during = len(c.output().get("a1", []))
    written = c.written["a1"]
    time.sleep(7)            # the rest of the 10 s cut
    assert len(c.output().get("a1", [])) == during, "a1's events crossed a cut link"
    assert c.written["a1"] > written, "the writer stopped: the cut tested nothing"
    c.net.heal()
    healed = time.monotonic()
    wait_until(lambda: drained(c), 90, "every counter delivered and acknowledged")
    recovery = time.monotonic() - healed
    assert duplicates(c) == {a: 0 for a in AGENTS}
    assert missing(c) == {a: 0 for a in AGENTS}
    assert c.errors() == {}
    report("e2e-agent-link-down-10s", c, recovery)
