"""``exec("cmd"[, aggregate=false[, restart=false[, period=0]]])`` and its shorthands
``execStream("cmd")`` (= exec(cmd)) and ``execPeriodic("cmd", ms)``
(= exec(cmd, true, true, ms)).

The command is split like a shell would (``shlex.split``) but runs *without* a shell, in a
session of its own so that ``close`` can stop it and anything it started. Its standard
output becomes events: a line per event (the last line may lack its LF), or with
``aggregate`` the whole output of one run as one event carrying ``exec.exitcode``. Every
event carries ``execcmd``. Standard error is logged at DEBUG, never emitted.

Without ``restart`` the source is exhausted once the program has exited and its output is
read; with it, the program is run again ``period`` ms after each exit. A node runs exec
sources only when started with ``--allow-exec`` (``ctx.allow_exec``); otherwise ``open``
fails. ``close`` sends SIGTERM to the program's process group, then SIGKILL after a grace
period.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
from typing import Annotated

from annotated_types import Ge

from ..component import NodeContext
from ..errors import SourceError
from ..event import Event, events_from_lines
from ..registry import source
from ._batchqueue import BatchQueue, QueuedSource
from ..limits import Refusals
from ._lines import LineBuffer

log = logging.getLogger(__name__)

READ_SIZE = 1 << 16
MAX_AGGREGATE = 16 << 20   # the most of one run's output kept as one event (aggregate)
QUEUE_EVENTS = 10_000
GRACE_S = 3.0
DISABLED = "exec sources are disabled on this node; start it with --allow-exec"


def split_command(cmd: str) -> list[str]:
    """The argv of ``cmd``, split like a shell would; ValueError if it cannot be or is
    empty."""
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise ValueError(f"cannot split command {cmd!r}: {exc}") from None
    if not argv:
        raise ValueError("command must not be empty")
    return argv


Command = Annotated[str, split_command]


@source("exec")
class ExecSource(QueuedSource):
    """Runs a program (no shell); a line of its output per event, or all of it per run."""

    def __init__(self, cmd: Command, aggregate: bool = False, restart: bool = False,
                 period: Annotated[int, Ge(0)] = 0):
        super().__init__()
        self.argv = split_command(cmd)
        self.cmd = cmd
        self.aggregate = aggregate
        self.restart = restart
        self.period = period
        self._cmd_bytes = cmd.encode()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._queue: BatchQueue | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: SourceError | None = None
        self._refusals = Refusals(self.metrics, log, f"exec({cmd!r})")

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        if not ctx.allow_exec:
            raise SourceError(DISABLED)
        self._queue = BatchQueue(QUEUE_EVENTS)
        proc = self._spawn()
        t = threading.Thread(target=self._run, args=(proc,), name=f"exec:{self.argv[0]}",
                             daemon=True)
        self._threads.append(t)
        t.start()

    # ------------------------------------------------------------ the reader thread

    def _spawn(self) -> subprocess.Popen:
        with self._lock:
            if self._stop.is_set():
                raise SourceError("exec: closed")
            try:
                proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        bufsize=0, start_new_session=True)
            except OSError as exc:
                self.metrics.add("errors")
                raise SourceError(f"exec: cannot run {self.cmd!r}: "
                                  f"{exc.strerror or exc}") from exc
            self._proc = proc
        self.metrics.add("runs")
        t = threading.Thread(target=self._drain_stderr, args=(proc,),
                             name=f"exec-stderr:{proc.pid}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        log.debug("exec: started %r as pid %d", self.cmd, proc.pid)
        return proc

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.metrics.add("stderr_lines")
            log.debug("exec %r (pid %d) stderr: %s", self.cmd, proc.pid,
                      line.rstrip(b"\n").decode("utf-8", "replace"))
        proc.stderr.close()

    def _run(self, proc: subprocess.Popen) -> None:
        try:
            while True:
                ok = self._read_aggregate(proc) if self.aggregate else self._read_lines(proc)
                if not ok or self._stop.is_set():
                    return
                if not self.restart:
                    self._queue.finish()
                    return
                if self.period and self.ctx.clock.wait(self._stop, self.period / 1000):
                    return
                proc = self._spawn()
        except SourceError as exc:
            if not self._stop.is_set():
                self._error = exc
                log.warning("%s", exc)
            self._queue.finish()
        except Exception as exc:  # report rather than leave next_batch waiting forever
            self._error = SourceError(f"exec {self.cmd!r} failed: {exc}")
            log.exception("exec %r: reader failed", self.cmd)
            self._queue.finish()

    def _exited(self, proc: subprocess.Popen) -> int:
        rc = proc.wait()
        self.metrics.set("exitcode", rc)
        log.debug("exec: %r (pid %d) exited with %d", self.cmd, proc.pid, rc)
        return rc

    def _read_lines(self, proc: subprocess.Popen) -> bool:
        """Stream one run's lines into the queue; False if the queue was closed."""
        out, buf, cmd = proc.stdout, LineBuffer(), self._cmd_bytes
        while True:
            data = out.read(READ_SIZE)
            if not data:
                break
            self.metrics.add("bytes_in", len(data))
            lines = buf.feed(data)
            if buf.cuts:
                self._oversize(f"truncated {buf.take_cuts()} line(s) to {buf.max_line} "
                               f"bytes")
            if lines and not self._put_lines(lines, cmd):
                return False
        out.close()
        self._exited(proc)
        last = buf.finish()
        return not last or self._put_lines(last, cmd)

    def _oversize(self, detail: str) -> None:
        self._refusals.refuse("oversize", detail)

    def _put_lines(self, lines: list[bytes], cmd: bytes) -> bool:
        events = events_from_lines(lines)
        for e in events:
            e.attrs["execcmd"] = cmd
        return self._queue.put(events) is not None

    def _read_aggregate(self, proc: subprocess.Popen) -> bool:
        """One run's whole output as one event; False if the queue was closed."""
        chunks, kept, dropped = [], 0, 0
        while True:
            data = proc.stdout.read(READ_SIZE)
            if not data:
                break
            room = MAX_AGGREGATE - kept
            if len(data) > room:          # read on, so the program is not blocked
                dropped += len(data) - room
                data = data[:room]
            if data:
                chunks.append(data)
                kept += len(data)
        proc.stdout.close()
        body = b"".join(chunks)
        self.metrics.add("bytes_in", len(body) + dropped)
        if dropped:
            self._oversize(f"kept the first {MAX_AGGREGATE} bytes of one run's output, "
                           f"dropped {dropped}")
        rc = self._exited(proc)
        if self._stop.is_set():
            return False
        ev = Event(body, self.ctx.clock.now_ms(),
                   attrs={"exec.exitcode": str(rc).encode(), "execcmd": self._cmd_bytes})
        return self._queue.put([ev]) is not None

    # ------------------------------------------------------------ consumer side

    def next_batch(self, timeout: float) -> list[Event] | None:
        out = super().next_batch(timeout)
        if out is None and self._error is not None and not self._stop.is_set():
            raise self._error
        return out

    def close(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
            proc = self._proc
        super().close()
        if proc is not None:
            _terminate(proc, self.cmd)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(2)


def _terminate(proc: subprocess.Popen, cmd: str) -> None:
    """SIGTERM the program's process group, SIGKILL it after GRACE_S."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            log.warning("exec: %r (pid %d) ignored %s", cmd, proc.pid, sig.name)


@source("execStream")
class ExecStreamSource(ExecSource):
    """Runs a long-lived program; a line of its output per event (``exec(cmd)``)."""

    def __init__(self, cmd: Command):
        super().__init__(cmd)


@source("execPeriodic")
class ExecPeriodicSource(ExecSource):
    """Runs a program every ``ms`` after the previous run exits; its whole output is one
    event (``exec(cmd, true, true, ms)``)."""

    def __init__(self, cmd: Command, ms: Annotated[int, Ge(0)]):
        super().__init__(cmd, aggregate=True, restart=True, period=ms)
