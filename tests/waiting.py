"""The one way tests wait: poll a condition until it holds or a deadline passes."""
from __future__ import annotations

import time


def wait_until(cond, timeout: float = 20.0, what: str = "condition",
               interval: float = 0.01, ignore: tuple = ()):
    """Call ``cond`` every ``interval`` seconds until it returns something truthy, and
    return that; AssertionError naming ``what`` (and the last value) after ``timeout``
    seconds. Exceptions of the types in ``ignore`` count as "not yet"."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
        except ignore as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
        time.sleep(interval)
