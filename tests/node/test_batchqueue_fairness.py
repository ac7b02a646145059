"""Fairness of BatchQueue between producers (the fan-in of many agents into one collector:
each RPC connection thread is a producer blocking in ``put`` while the queue is full)."""
from __future__ import annotations

import threading
from collections import Counter

from flume_og.node.event import Event
from flume_og.node.sources._batchqueue import BatchQueue

from tests.waiting import wait_until

PRODUCERS = 16
BATCH = 500
ROUNDS = 40


def _producer(q: BatchQueue, k: int, stop: threading.Event) -> None:
    """Like an RPC call: put a batch, wait until the flow took it, send the next."""
    batch = [Event(str(k).encode())] * BATCH
    while not stop.is_set():
        seq = q.put(batch, 10)
        if seq is None:
            return
        q.wait_taken(seq, 10)


def test_blocked_producers_are_served_in_turn():
    """16 producers against a queue that holds two of their batches: each gets its turn,
    in the order it came to wait -- none is starved, none served more than its share.
    Without the order (every waiter woken, the first to run wins; a producer back from
    its last batch takes the room before those waiting), shares over 640 batches ranged
    from about 0.5 to 1.6 of the mean."""
    q = BatchQueue(capacity=2 * BATCH, max_batch=BATCH)
    stop = threading.Event()
    threads = [threading.Thread(target=_producer, args=(q, k, stop), daemon=True)
               for k in range(PRODUCERS)]
    for t in threads:
        t.start()
    counts: Counter = Counter()
    try:
        # every producer up and waiting before counting starts
        wait_until(lambda: len(q) >= 2 * BATCH, what="the queue full")
        for _ in range(PRODUCERS * ROUNDS):
            out = q.get(10)
            assert out
            counts[int(out[0].body)] += len(out)
    finally:
        stop.set()
        q.close()
        for t in threads:
            t.join(10)
    mean = sum(counts.values()) / PRODUCERS
    shares = {k: counts[k] / mean for k in range(PRODUCERS)}
    assert all(abs(s - 1) <= 0.2 for s in shares.values()), shares


def test_a_waiter_that_gives_up_does_not_hold_up_the_others():
    """A put that times out leaves its place in line: the next waiter gets the room."""
    q = BatchQueue(capacity=10, max_batch=10)
    assert q.put([Event(b"a")] * 10) is not None          # full
    assert q.put([Event(b"b")] * 10, timeout=0.05) is None  # waits, then gives up
    got = []
    t = threading.Thread(target=lambda: got.append(q.put([Event(b"c")] * 10, timeout=10)))
    t.start()
    wait_until(lambda: q._waiters, what="c waiting")
    assert q.get(1)[0].body == b"a"
    t.join(10)
    assert got and got[0] is not None
    assert q.get(1)[0].body == b"c"


def test_close_wakes_every_waiter():
    q = BatchQueue(capacity=10, max_batch=10)
    q.put([Event(b"a")] * 10)
    results = []
    threads = [threading.Thread(target=lambda: results.append(q.put([Event(b"b")] * 5)))
               for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(q._waiters) == 4, what="4 waiters")
    q.close()
    for t in threads:
        t.join(10)
    assert results == [None] * 4
