"""What an RPC receiver remembers of the batches it took, by id, so that a resent batch is
acknowledged without being written twice.

A sender may identify each ``appendPacked`` / ``appendBatch`` call by ``(sender, batch)``
(the IDL's optional fields). A call without an id is taken as before. With one,
:meth:`BatchWindow.claim` decides:

* the id is new: the caller writes the batch (a :class:`Claim`), then tells the outcome
  with :meth:`BatchWindow.finish` -- taken (written: remembered as *done*) or not
  (withdrawn, expired, refused: forgotten, so that a resend is written);
* the id is *done*: ``DUPLICATE`` -- answer OK without writing (``duplicate_batches``,
  ``duplicate_events``);
* the id is being written by an earlier call (the sender gave up on it and resent): the
  resend waits for that first outcome (``joined``) until its own deadline -- then
  ``DUPLICATE`` if it was written, a new claim if it was not, ``BUSY`` if it is still
  being written at the deadline (the sender resends the same id again later);
* the same id with other contents (count or checksum differ: a sender's bug) is not
  trusted to be the same batch: ``CONFLICT`` (``batch_id_conflicts``), the caller writes
  it without the window.

Bounds: at most ``per_sender`` ids of one sender (its oldest is forgotten first),
``per_peer`` ids from one peer address, whatever sender ids it uses (its own oldest is
forgotten first: sender ids are the caller's choice, so a peer making up thousands of
them evicts only its own ids), and ``total`` ids in all (the oldest id of the peer holding
the most is forgotten first). Every forgotten id is counted (``batch_ids_evicted``), and
in ``batch_ids_evicted_early`` when it was taken less than ``EARLY_SECONDS`` before: its
sender may still resend it (a DFO replay after a timeout), and that resend is written
again. An id forgotten is a window that can no longer recognise that batch: its resend is
written again (at-least-once, as without ids). So the window covers a sender's timeout
as long as the receiver takes fewer than ``total`` / timeout new batches a second from the
addresses that do not reach ``per_peer``: 16,384 / 20 s = about 820 calls a second for the
default 20 s timeout; past that rate even legitimate fan-in evicts ids early.

An id costs about 260 bytes (a dictionary slot, an int key, a small object, its place in
its peer's order), a sender its id (at most ``MAX_SENDER_CHARS`` characters, checked by
the caller) and a dictionary, about 700 bytes more, a peer address an ordered dictionary,
about 600 bytes: 256 ids of one sender take 66 kB, the worst case -- 16,384 ids from as
many senders with 256-character ids and as many addresses -- 24 MB (measured with
tracemalloc; 15 MB without the per-address order, under which a collector's RSS grew
17 MB under 40,000 such calls and stayed there under 80,000). The
window lives in memory: a receiver that restarts has forgotten everything (a batch it
wrote before answering and is resent after the restart is written twice).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

MAX_IDS = 16_384           # batch ids remembered by one receiver
MAX_IDS_PER_SENDER = 256   # ...of which one sender may hold
MAX_IDS_PER_PEER = 4096    # ...and one peer address, whatever sender ids it uses
# an id evicted younger than this may still be resent: a sender resends a batch of
# unknown outcome to this receiver alone for 10 minutes (node.sinks.agent's
# UNKNOWN_PIN_SECONDS), then still with the same id when no other receiver takes it
EARLY_SECONDS = 600.0
MAX_SENDER_CHARS = 256     # a sender id longer than this is refused (ours are < 150)

DUPLICATE = "duplicate"
BUSY = "busy"
CONFLICT = "conflict"


class _Entry:
    __slots__ = ("fingerprint", "done", "peer", "at")

    def __init__(self, fingerprint, peer: str, at: float):
        self.fingerprint = fingerprint
        self.done = False
        self.peer = peer
        self.at = at


class Claim:
    """The right to write one batch; hand it back to :meth:`BatchWindow.finish`."""

    __slots__ = ("sender", "batch", "entry")

    def __init__(self, sender: str, batch: int, entry: _Entry):
        self.sender = sender
        self.batch = batch
        self.entry = entry


class BatchWindow:
    """Batch ids per sender, bounded (see the module docstring). Thread-safe: connection
    threads claim and finish concurrently. ``metrics`` has ``add(name, n)``."""

    def __init__(self, metrics, per_sender: int = MAX_IDS_PER_SENDER, total: int = MAX_IDS,
                 clock: Callable[[], float] = time.monotonic,
                 per_peer: int = MAX_IDS_PER_PEER):
        if per_sender < 1 or total < per_sender:
            raise ValueError(f"need 1 <= per_sender <= total, got {per_sender}, {total}")
        if per_peer < 1:
            raise ValueError(f"need 1 <= per_peer, got {per_peer}")
        self.metrics = metrics
        self.per_sender = per_sender
        self.per_peer = per_peer
        self.total = total
        self.clock = clock
        self.size = 0
        self._senders: dict[str, OrderedDict[int, _Entry]] = {}   # its ids, oldest first
        # peer -> its (sender, batch) ids, oldest first; and the peers by how many they hold
        self._peers: dict[str, OrderedDict[tuple[str, int], None]] = {}
        self._by_count: dict[int, set[str]] = {}
        self._most = 0                   # the most ids a peer holds (or more: see _busiest)
        self._cond = threading.Condition()

    def claim(self, sender: str, batch: int, fingerprint, count: int,
              until: float, peer: str = "") -> Claim | str:
        """A :class:`Claim` to write batch ``(sender, batch)`` sent from address ``peer``,
        or ``DUPLICATE``, ``BUSY`` or ``CONFLICT``. Waits until ``until`` (monotonic
        seconds) at most, and only while an earlier call is writing the same batch.
        ``count`` is its events (counted)."""
        joined = False
        with self._cond:
            while True:
                ids = self._senders.get(sender)
                entry = ids.get(batch) if ids is not None else None
                if entry is None:
                    return Claim(sender, batch, self._add(sender, batch, fingerprint, peer))
                if entry.fingerprint != fingerprint:
                    self.metrics.add("batch_id_conflicts")
                    return CONFLICT
                if entry.done:
                    self.metrics.add("duplicate_batches")
                    self.metrics.add("duplicate_events", count)
                    return DUPLICATE
                if not joined:
                    joined = True
                    self.metrics.add("joined")
                left = until - self.clock()
                if left <= 0:
                    return BUSY
                self._cond.wait(left)

    def finish(self, claim: Claim, taken: bool) -> None:
        """The batch of ``claim`` was written (``taken``: remembered as done) or not
        (forgotten: a resend is written). Wakes the resends waiting for it."""
        with self._cond:
            if taken:
                claim.entry.done = True
            else:
                ids = self._senders.get(claim.sender)
                if ids is not None and ids.get(claim.batch) is claim.entry:
                    self._remove(claim.sender, ids, claim.batch)
            self._cond.notify_all()

    def _add(self, sender: str, batch: int, fingerprint, peer: str) -> _Entry:
        """Under the lock: a new entry, making room within the bounds."""
        ids = self._senders.get(sender)
        held = self._peers.get(peer)
        if ids is not None and len(ids) >= self.per_sender:
            self._evict(sender, next(iter(ids)))
        elif held is not None and len(held) >= self.per_peer:
            self._evict(*next(iter(held)))
        elif self.size >= self.total:
            self._evict(*next(iter(self._peers[self._busiest()])))
        ids = self._senders.setdefault(sender, OrderedDict())
        entry = ids[batch] = _Entry(fingerprint, peer, self.clock())
        held = self._peers.setdefault(peer, OrderedDict())
        self._recount(peer, len(held), len(held) + 1)
        held[(sender, batch)] = None
        self.size += 1
        return entry

    def _busiest(self) -> str:
        """Under the lock: a peer holding the most ids (there is one: size > 0)."""
        while not self._by_count.get(self._most):
            self._most -= 1
        return next(iter(self._by_count[self._most]))

    def _recount(self, peer: str, before: int, after: int) -> None:
        """Under the lock: ``peer`` now holds ``after`` ids instead of ``before``."""
        if before:
            peers = self._by_count[before]
            peers.discard(peer)
            if not peers:
                del self._by_count[before]
        if after:
            self._by_count.setdefault(after, set()).add(peer)
            self._most = max(self._most, after)

    def _evict(self, sender: str, batch: int) -> None:
        entry = self._senders[sender][batch]
        if self.clock() - entry.at < EARLY_SECONDS:
            self.metrics.add("batch_ids_evicted_early")
        self._remove(sender, self._senders[sender], batch)
        self.metrics.add("batch_ids_evicted")

    def _remove(self, sender: str, ids: OrderedDict, batch: int) -> None:
        peer = ids.pop(batch).peer
        self.size -= 1
        if not ids and self._senders.get(sender) is ids:
            del self._senders[sender]
        held = self._peers[peer]
        del held[(sender, batch)]
        self._recount(peer, len(held) + 1, len(held))
        if not held:
            del self._peers[peer]

    @property
    def senders(self) -> int:
        return len(self._senders)
