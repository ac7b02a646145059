"""``roll(rollmillis[, checkmillis]{, trigger=time|size(bytes)}) { sink }``.

A roll owns a series of instances of its inner sink: on each trigger it closes the current
instance (which makes its output final and commits its checkpoints) and opens a fresh one.
Every event is stamped with the attribute ``rolltag`` naming the roll it belongs to, so an
inner ``escapedCustomDfs("dir", "file-%{rolltag}")`` writes one file per roll.

Decisions (where OG was vague):

* ``trigger=time`` (the default) rolls every ``rollmillis``. ``trigger=size(n)`` rolls once
  ``n`` bytes of event bodies went to the current instance, *or* every ``rollmillis``
  (OG's size trigger was "size or time" too), so a slow stream still gets its files
  finished. Size is checked after each batch: a roll never splits a batch, so a file may
  exceed ``n`` by up to one batch.
* A trigger thread checks every ``checkmillis`` (on ``ctx.clock``), so an idle file is
  closed on time even when no event arrives. ``append`` checks the time trigger too, so the
  batch that arrives after the deadline already goes to the new instance.
* A roll of an instance that received no event since it was opened does not close and
  reopen it (that would only make empty files); it only starts a new period and tag.
* Appends, rolls and checkpoints hold one lock: ``append`` is never called on an instance
  being closed.
* If closing an instance fails, its events may be lost, and every later checkpoint is
  cumulative (it covers those events too). So from then on this roll commits no checkpoint
  at all (counted in ``checkpoints_dropped``): after a restart the source re-reads from the
  last position committed before the failure. Output is then at least once (what was
  written after the failure is written again), never lossy. Data keeps flowing to a new
  instance meanwhile; the failure shows in ``rollfails``/``errors`` and the log.
* If opening a new instance fails, the roll retries at every trigger check and every
  append; ``append`` raises :class:`SinkError` while there is no open instance.
* The counters of an instance outlive it: when it is closed they are carried
  (:func:`node.metrics.fold`) and the roll reports its live instance -- or, between two,
  the shape of the last one -- with them added (:func:`node.metrics.carry`), so a counter
  of the inner sink never goes down at a roll and ``rate()`` over it is right.
* ``rolltag`` is stamped by the roll on every event (whatever tag the event came with), so
  a file name built from it holds no sender's text; the dfs sinks encode it all the same.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from ..checkpoint import Checkpoint
from ..component import Component, NodeContext, Sink, SinkFactory
from ..errors import SinkError
from ..event import body_bytes, set_attr
from ..metrics import carry, fold, hollow, own_report
from ..registry import Positive, decorator
from ..spec import Func, Lit

log = logging.getLogger(__name__)

ROLLTAG = "rolltag"


class Slot:
    """A place of a roll where instances come and go (the inner sink; collectorSink's
    plain files). It reports the live instance, else the one being closed, else the
    ``shape`` of the last one (or the one given), with the counters of every closed
    instance added (:func:`node.metrics.carry`). The roll's report lock guards it."""

    def __init__(self, shape: dict | None = None):
        self.carried: dict = {}
        self.shape = shape
        self.closing: Sink | None = None

    def report(self, live: Sink | None) -> dict | None:
        inst = live or self.closing
        rep = inst.report() if inst is not None else self.shape
        return carry(rep, self.carried, "") if rep is not None else None

    def retired(self, rep: dict) -> None:
        """The closing instance, whose last report is ``rep``, is closed."""
        fold(self.carried, rep, "")
        self.shape = hollow(rep)
        self.closing = None


class Trigger:
    """When a roll happens: ``time`` (every rollmillis) or ``size(bytes)`` (after that many
    body bytes, or every rollmillis, whichever comes first)."""

    spec_type_name = "trigger"
    __slots__ = ("kind", "size")

    def __init__(self, kind: str = "time", size: int | None = None):
        if kind not in ("time", "size"):
            raise ValueError(f"unknown trigger {kind!r}; use time or size(bytes)")
        if kind == "size" and (not isinstance(size, int) or size <= 0):
            raise ValueError("size(bytes) needs a positive int number of bytes")
        self.kind = kind
        self.size = size if kind == "size" else None

    @classmethod
    def from_spec(cls, value) -> "Trigger":
        if isinstance(value, Lit) and value.kind == "string" and value.value == "time":
            return cls("time")
        if isinstance(value, Func) and not value.kwargs:
            if value.name == "time" and not value.args:
                return cls("time")
            if value.name == "size":
                if (len(value.args) == 1 and isinstance(value.args[0], Lit)
                        and value.args[0].kind == "int"):
                    return cls("size", value.args[0].value)
                raise ValueError("size trigger takes one int argument: size(bytes)")
        raise ValueError("trigger must be time or size(bytes)")

    def __eq__(self, other) -> bool:
        return (isinstance(other, Trigger) and self.kind == other.kind
                and self.size == other.size)

    def __repr__(self) -> str:
        return "time" if self.kind == "time" else f"size({self.size})"


class _Tagger:
    """Roll tags: ``yyyyMMdd-HHmmssSSS+0000.<nanos>.<pid>``, sortable by time and unique per
    roll within the process (the nanos part never repeats)."""

    def __init__(self) -> None:
        self.last_nanos = 0

    def new_tag(self, now_ms: int) -> bytes:
        nanos = max(time.monotonic_ns(), self.last_nanos + 1)
        self.last_nanos = nanos
        secs, ms = divmod(now_ms, 1000)
        date = time.strftime("%Y%m%d-%H%M%S", time.gmtime(secs))
        return f"{date}{ms:03d}+0000.{nanos:012d}.{os.getpid():08d}".encode()


@decorator("roll")
class RollSink(Sink):
    """Closes and reopens a fresh instance of the inner sink every ``rollmillis`` (or on a
    size trigger), stamping ``rolltag`` on each event; closes idle files on time. A
    checkpoint is committed when the instance holding its events closes."""

    def __init__(self, inner_factory: SinkFactory, rollmillis: Positive,
                 checkmillis: Positive = 250, trigger: Trigger | None = None):
        super().__init__()
        self.inner_factory = inner_factory
        self.rollmillis = rollmillis
        self.checkmillis = checkmillis
        self.trigger = trigger or Trigger("time")
        self._size_limit = self.trigger.size
        self._lock = threading.RLock()
        self._tagger = _Tagger()
        self._current: Sink | None = None
        self._inner = Slot()
        # a report sees either an instance being closed or its carried counters, never
        # both: Slot.retiring/retired and report() hold it
        self._report_lock = threading.Lock()
        self._cur_events = 0
        self._cur_bytes = 0
        self._period_start = 0.0
        self._tag = b""
        self._lost = False          # an instance with events failed to close
        self._open_failing = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ introspection

    def children(self) -> list[Component]:
        cur = self._current
        return [cur] if cur is not None else []

    def report(self) -> dict:
        """The roll's counters and its inner sink's, counted over every instance."""
        out = own_report(self.spec_name, self.kind, self.metrics, self.histograms)
        with self._report_lock:
            kids = [slot.report(live) for slot, live in self._slots()]
        kids = [k for k in kids if k is not None]
        if kids:
            out["children"] = kids
        return out

    def _slots(self) -> list[tuple["Slot", Sink | None]]:
        """Each slot with its live instance (subclasses add theirs)."""
        return [(self._inner, self._current)]

    def _retiring(self, slot: "Slot", inst: Sink) -> None:
        """``inst`` of ``slot`` is about to close: reported until :meth:`_retired`. Call
        before the attribute holding it drops it."""
        with self._report_lock:
            slot.closing = inst

    def _retired(self, slot: "Slot", inst: Sink) -> None:
        """``inst`` of ``slot`` is closed: carry its counters."""
        rep = inst.report()
        with self._report_lock:
            slot.retired(rep)

    @property
    def current_tag(self) -> bytes:
        """The tag stamped on events appended now."""
        return self._tag

    def on_inner_closed(self, tag: bytes, durable: bool) -> None:
        """Called (under the roll's lock) after an instance that received events was closed:
        ``durable`` is False when its close failed. Subclasses (``collector``) hook here."""

    # ------------------------------------------------------------------ lifecycle

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        with self._lock:
            self._start_period()
            self._open_inner(initial=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"roll-trigger-{ctx.logical_name}")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join()
        with self._lock:
            cur = self._current
            if cur is None:
                return
            self._retiring(self._inner, cur)
            self._current = None
            had_events = self._cur_events > 0
            self._cur_events = self._cur_bytes = 0
            try:
                cur.close()
            except Exception as exc:
                self._close_failed(exc, had_events)
                raise SinkError(f"roll: closing the last instance failed: {exc}") from exc
            finally:
                self._retired(self._inner, cur)
            if had_events:
                self.metrics.add("rolls")
                self.on_inner_closed(self._tag, True)

    # ------------------------------------------------------------------ data path

    def append(self, events) -> None:
        with self._lock:
            if self._current is not None and self._time_due():
                self._roll()
            if self._current is None:
                self._open_inner()
                if self._current is None:
                    self.metrics.add("errors")
                    raise SinkError("roll: no open instance of the inner sink "
                                    "(opening it failed)")
            set_attr(events, ROLLTAG, self._tag)
            n = len(events)
            # counted first: an append that fails half way still leaves data to finish
            self._cur_events += n
            self._current.append(events)
            self.metrics.add("events_in", n)
            if self._size_limit is not None:
                self._cur_bytes += body_bytes(events)
                if self._cur_bytes >= self._size_limit:
                    self._roll()

    def when_durable(self, cp: Checkpoint) -> None:
        with self._lock:
            if self._lost:
                # A lost instance's events precede cp; committing cp would skip them.
                self.metrics.add("checkpoints_dropped")
                return
            if self._current is None or self._cur_events == 0:
                # Every event before cp is in instances already closed successfully.
                self.ctx.store.commit([cp])
            else:
                self._current.when_durable(cp)

    # ------------------------------------------------------------------ rolling

    def _time_due(self) -> bool:
        return (self.ctx.clock.monotonic() - self._period_start) * 1000 >= self.rollmillis

    def _start_period(self) -> None:
        self._period_start = self.ctx.clock.monotonic()
        self._tag = self._tagger.new_tag(self.ctx.clock.now_ms())
        self._cur_events = 0
        self._cur_bytes = 0

    def _open_inner(self, initial: bool = False) -> None:
        """Open a fresh instance. On the initial open a failure raises; later ones leave
        ``_current`` None to be retried."""
        inst = None
        try:
            inst = self.inner_factory()
            inst.open(self.ctx)
        except Exception as exc:
            if inst is not None:
                try:
                    inst.close()
                except Exception:
                    pass
            if initial:
                self.metrics.add("errors")
                if isinstance(exc, SinkError):
                    raise
                raise SinkError(f"roll: opening the inner sink failed: {exc}") from exc
            if not self._open_failing:
                log.warning("roll could not open a new instance of its inner sink; "
                            "retrying", extra={"node": self.ctx.logical_name,
                                               "error": str(exc)})
            self._open_failing = True
            self.metrics.add("openfails")
            return
        if self._open_failing:
            log.info("roll opened its inner sink again", extra={"node": self.ctx.logical_name})
        self._open_failing = False
        self._current = inst

    def _close_failed(self, exc: Exception, had_events: bool) -> None:
        self.metrics.add("rollfails")
        self.metrics.add("errors")
        if had_events:
            self._lost = True
            log.error("roll could not close an instance of its inner sink; its events are "
                      "not committed and will be re-read after a restart",
                      extra={"node": self.ctx.logical_name, "error": str(exc)})
            self.on_inner_closed(self._tag, False)
        else:
            log.warning("roll could not close an empty instance of its inner sink",
                        extra={"node": self.ctx.logical_name, "error": str(exc)})

    def _roll(self) -> None:
        """Close the current instance (if it got events) and open a fresh one. Lock held."""
        cur = self._current
        if cur is not None and self._cur_events == 0:
            self._start_period()   # nothing to finish: keep the instance, avoid empty files
            return
        if cur is not None:
            self._retiring(self._inner, cur)
            self._current = None
            try:
                with self.histogram("roll_seconds").time():
                    cur.close()
            except Exception as exc:
                self._close_failed(exc, True)
            else:
                self.metrics.add("rolls")
                self.on_inner_closed(self._tag, True)
            finally:
                self._retired(self._inner, cur)
        self._start_period()
        self._open_inner()

    def roll_now(self) -> None:
        """Roll at once (tests, administrative flush)."""
        with self._lock:
            if getattr(self, "ctx", None) is not None and not self._stop.is_set():
                self._roll()

    def _check(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            if self._current is None:
                self._start_period()
                self._open_inner()
            elif self._time_due():
                self._roll()

    def _run(self) -> None:
        stop, wait, period = self._stop, self.ctx.clock.wait, self.checkmillis / 1000
        while not wait(stop, period):
            try:
                self._check()
            except Exception:  # the thread must survive a bug in an inner sink
                self.metrics.add("errors")
                log.exception("roll trigger check failed", extra={"node": self.ctx.logical_name})
