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


__all__ = ["RateLimitedLog", "Refusals", "DEFAULT_INTERVAL"]
