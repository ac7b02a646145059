"""Bounds on untrusted input: counted refusals and rate-limited warnings.

Every input a socket, a file or ZooKeeper gives a node has a bound (bytes, events,
connections, depth, time). Past the bound the input is *refused*, and every refusal is

* counted in the component's metrics: ``refused`` (the total) and ``refused_<reason>``
  (one counter per reason, e.g. ``refused_oversize``, ``refused_connections``), so that
  the status page, ``/metrics`` and the master show them;
* logged as a sentence at WARNING, at most once per ``interval`` seconds per
  ``(logger, reason)``: the first refusal at once, then one summary line saying how many
  more were refused meanwhile. A flood of garbage never floods the log.

:class:`Refusals` does both; :class:`RateLimitedLog` is the log half alone (repeated
accept errors, EMFILE, reconnect warnings).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

DEFAULT_INTERVAL = 10.0   # seconds between two log lines about the same thing


class RateLimitedLog:
    """Logs each *key* at most once per ``interval`` seconds, with a count of the
    occurrences it kept quiet about. Thread-safe; ``clock`` returns monotonic seconds."""

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` ago;
        True if it was written."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._quiet[key] = self._quiet.get(key, 0) + 1
                return False
            self._last[key] = now
            quiet = self._quiet.pop(key, 0)
        if quiet:
            msg = f"{msg} ({quiet} more like this in the last {self.interval:g} s)"
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.WARNING, key, msg, *args)


class Refusals:
    """Counts refused input in ``metrics`` and warns about it, rate-limited.

    ``what`` names the refusing component in the log (``"collectorSource on port
    35853"``)."""

    def __init__(self, metrics, logger: logging.Logger, what: str,
                 interval: float = DEFAULT_INTERVAL):
        self.metrics = metrics
        self.what = what
        self._log = RateLimitedLog(logger, interval)

    def refuse(self, reason: str, detail: str = "", n: int = 1) -> None:
        """Count ``n`` refusals for ``reason`` (a short identifier) and warn."""
        self.metrics.add("refused", n)
        self.metrics.add(f"refused_{reason}", n)
        self._log.warning(reason, "%s refused input (%s)%s", self.what, reason,
                          f": {detail}" if detail else "")


def message_due(due: float | None, now: float, n: int, timeout: float | None,
                min_rate: int) -> float:
    """When a message in progress must have progressed, after ``n`` more bytes of it
    arrived at ``now``: ``due`` None (its first bytes) gives ``timeout`` seconds; each
    byte adds ``1/min_rate`` s (none for 0), never past ``now + timeout``. With
    ``timeout`` None it only ranks messages (slowest first), it cuts none."""
    if due is None:
        due = now + (timeout or 0.0)
    elif min_rate:
        due += n / min_rate
    return due if timeout is None else min(due, now + timeout)


class ConnectionSlots:
    """The connections a server holds: at most ``max_total`` at once and ``max_per_peer``
    from one address.

    :meth:`admit` past a bound makes room by evicting a connection:

    * past ``max_per_peer``: the connection of that address idle the longest --
      ``idle_since(conn)`` says since when a connection is idle (between two messages,
      nothing of the next one received), None while a message is in progress. When none
      of them is idle the new one is refused: an address never cuts off its own messages.
    * past ``max_total``: only an address holding at least two slots more than the
      newcomer's gives one up, the biggest holder first: its connection idle the longest
      (then the next such address's), else, when none of them is idle, its message in
      progress that is *slowest* -- the earliest ``progress_due(conn)``, the time by
      which it must progress (a message that began long ago and received little is due
      first). So a few addresses holding every slot cannot keep a new address out, while
      no address can take a slot -- idle or busy -- from one holding as few as itself: a
      legitimate sender's quiet connection is not closed by attackers spread over many
      addresses. The newcomer's own address's idle connection is the last resort (it
      takes nothing from anyone else). Otherwise the new one is refused. With ``idle_from_any`` (HTTP, where
      an idle connection is a kept-alive one its client re-opens at no loss), an idle
      connection of any address is closed first, the biggest holder's first.

    Not thread-safe: the caller serialises."""

    def __init__(self, max_total: int, max_per_peer: int,
                 idle_since: Callable[[object], float | None],
                 progress_due: Callable[[object], float] | None = None,
                 idle_from_any: bool = False):
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self._idle_from_any = idle_from_any
        self._idle_since = idle_since
        self._progress_due = progress_due
        self._peer: dict[object, str] = {}
        self._per_peer: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._peer)

    def held(self, peer: str) -> int:
        """How many slots ``peer`` holds."""
        return self._per_peer.get(peer, 0)

    def admit(self, conn, peer: str) -> tuple[str | None, tuple[object, str, bool] | None]:
        """Take ``conn`` from ``peer``: ``(None, evicted)``, where ``evicted`` is the
        ``(connection, its peer, whether a message was in progress)`` the caller must now
        close, or None; or ``(reason, None)`` if it is refused (``peer_connections``,
        ``connections``)."""
        evicted = None
        if self._per_peer.get(peer, 0) >= self.max_per_peer:
            evicted = self._evict_idle([peer])
            if evicted is None:
                return "peer_connections", None
        elif len(self._peer) >= self.max_total:
            evicted = self._evict_for(peer)
            if evicted is None:
                return "connections", None
        self._peer[conn] = peer
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return None, evicted

    def remove(self, conn) -> str | None:
        """``conn`` is gone: its peer, or None if it held no slot (already evicted)."""
        peer = self._peer.pop(conn, None)
        if peer is not None:
            left = self._per_peer[peer] - 1
            if left:
                self._per_peer[peer] = left
            else:
                del self._per_peer[peer]
        return peer

    def report(self, refusals: "Refusals", peer: str, refused: str | None,
               evicted: tuple[object, str, bool] | None) -> None:
        """Count and log, in ``refusals``, what :meth:`admit` decided for a connection
        from ``peer`` (the caller closes the connections)."""
        if evicted is not None:
            _, who, slow = evicted
            if slow:    # its unfinished message is discarded
                refusals.refuse("evicted_slow", f"closed the connection from {who} with "
                                f"the slowest unfinished message (discarded) to make room "
                                f"for one from {peer}")
            else:       # idle: nothing of a message is buffered, nothing is lost
                refusals.refuse("evicted", f"closed the connection from {who} idle the "
                                f"longest to make room for one from {peer}")
        if refused == "connections":
            refusals.refuse(refused, f"closed the one from {peer}: {self.max_total} "
                            f"connections are open already, none idle, and no address "
                            f"holds two more than {peer}")
        elif refused is not None:
            refusals.refuse(refused, f"closed the one from {peer}: {self.max_per_peer} "
                            f"connections from that address are open already, none idle")

    def _evict_for(self, newcomer: str) -> tuple[object, str, bool] | None:
        # only an address holding at least two slots more than the newcomer's gives one
        # up, biggest holder first: its longest idle connection, else its slowest message
        if self._idle_from_any:
            evicted = self._evict_idle(sorted(self._per_peer, key=self._per_peer.__getitem__,
                                              reverse=True))
            if evicted is not None:
                return evicted
        floor = self._per_peer.get(newcomer, 0) + 2
        order = sorted((p for p, n in self._per_peer.items() if n >= floor),
                       key=self._per_peer.__getitem__, reverse=True)
        # ... and an address may always give up its own idle connection
        evicted = self._evict_idle(order + [newcomer])
        if evicted is not None or self._progress_due is None or not order:
            return evicted
        slowest = min((c for c, p in self._peer.items() if p == order[0]),
                      key=self._progress_due)
        return slowest, self.remove(slowest), True

    def _evict_idle(self, peers: list[str]) -> tuple[object, str, bool] | None:
        """The connection idle the longest of the first address in ``peers`` that has
        an idle one."""
        best: dict[str, tuple[float, object]] = {}
        for conn, p in self._peer.items():
            idle = self._idle_since(conn)
            if idle is not None and (p not in best or idle < best[p][0]):
                best[p] = (idle, conn)
        for p in peers:
            if p in best:
                conn = best[p][1]
                return conn, self.remove(conn), False
        return None


__all__ = ["ConnectionSlots", "RateLimitedLog", "Refusals", "DEFAULT_INTERVAL",
           "message_due"]
