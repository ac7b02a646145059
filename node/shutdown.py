"""How a process stops on SIGTERM and SIGINT, without deadlocks.

A signal handler runs in the main thread between two bytecodes, possibly while that thread
holds a lock (inside ``Event.wait``, a logging call, a queue): a handler that takes a lock
itself (``Event.set``, ``logging``) can deadlock the process. Here the handler takes none:
it records the signal and writes one byte to a pipe (``os.write`` takes no Python lock);
the main thread waits on that pipe.

* The first signal asks for a clean stop: :meth:`StopSignals.wait` returns True.
* Signals within :data:`SAME_REQUEST_SECONDS` of the first are the same request (a
  terminal's Ctrl-C reaches a script and its children, and the script then sends SIGTERM
  to them: two signals a millisecond apart).
* A later one forces the exit at once: a sentence on stderr and ``os._exit(128 + signal)``
  (what a second Ctrl-C does in most daemons). Data stays safe (write-ahead logs, spools,
  committed offsets); only the clean close of open files is skipped.
* Once stopped (:meth:`StopSignals.restore` after a request), the handler stays, and at the
  interpreter's exit the signals are ignored: a storm's tail must not turn a clean exit
  into a death by signal.
"""
from __future__ import annotations

import atexit
import os
import select
import signal
import time

SAME_REQUEST_SECONDS = 1.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """SIGTERM/SIGINT handlers that set a flag and wake :meth:`wait` (module docstring).
    Install in the main thread; :meth:`restore` puts the previous handlers back."""

    def __init__(self, name: str = "flume", requested: bool = False) -> None:
        """``requested``: the process is stopping already (a later signal forces)."""
        self.name = name
        self.signum: int | None = signal.SIGTERM if requested else None   # the first one
        self._first_at = time.monotonic()
        self._r, self._w = os.pipe()      # _w None once restored
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._old = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def _handle(self, signum, _frame) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
        elif now - self._first_at > SAME_REQUEST_SECONDS:
            os.write(2, f"{self.name}: {signal.Signals(signum).name} again: exiting at once, "
                        f"without closing files\n".encode())
            os._exit(128 + signum)
        if self._w is None:
            return          # restored while stopping: nothing waits any more
        try:
            os.write(self._w, b"s")
        except OSError:
            pass            # the pipe is full: the main thread has been woken already

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a stop request; True once one came."""
        if self.signum is None:
            try:
                select.select([self._r], [], [], timeout)
            except InterruptedError:
                pass
            try:
                os.read(self._r, 512)
            except BlockingIOError:
                pass
        return self.signum is not None

    def restore(self) -> None:
        """Close the pipe and put the previous handlers back, unless a stop was requested:
        the process is then on its way out, and a signal of the same request still
        arriving (a storm of SIGTERMs behind a Ctrl-C) must not kill it with its clean
        exit code lost; a later one still forces the exit."""
        r, w = self._r, self._w
        self._w = None
        if self.requested:
            # at interpreter exit Python puts the default handlers back (a signal then
            # kills): ignore these signals from then on instead
            atexit.register(_ignore_stop_signals)
        else:
            for s, h in self._old.items():
                signal.signal(s, h)
        os.close(r)
        os.close(w)


def _ignore_stop_signals() -> None:
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
