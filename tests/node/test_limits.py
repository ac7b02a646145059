"""Counted, rate-limited refusals (node/limits.py)."""
import logging

from node.component import Metrics
from node.limits import RateLimitedLog, Refusals


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
