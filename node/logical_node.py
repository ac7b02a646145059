"""The logical node driver: runs one ``source | sink`` flow on a thread.

States: HELLO (created), CONFIGURING (building and opening a flow),
ACTIVE (moving events), CLOSING (closing a flow), IDLE (no flow, or the source is
exhausted and everything was written), ERROR (the flow failed; ``last_error`` says why),
LOST and DECOMMISSIONED are set by the master's view, never by the driver. While ACTIVE,
``last_error`` shows the transient conditions the flow's components report
(:class:`~node.component.Conditions`, e.g. "disk full: ..."), and is empty again once
they are over.

Guarantees:

* ``configure`` replaces a running flow cleanly: the old source is stopped, the old sink
  closed (buffered events written, files closed and renamed) before the new one opens.
* After every batch the driver passes the source's position down the sink tree; the sinks
  commit it once the batch is durable, so a restarted node resumes where the output ends.
* A spec that does not build raises :class:`SpecError` and leaves the running flow as it was.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from pathlib import Path

from flume_og.zk.errors import CoordinationError

from .checkpoint import Checkpoint, CheckpointStore
from .clock import SYSTEM_CLOCK, Clock
from .component import Conditions, NodeContext, NodeShared, Sink, Source
from .errors import FlumeError, Interrupted
from .event import body_bytes
from .metrics import carry, fold, hollow
from .builder import build_sink, build_source
from .spec import Call, SinkNode, format_sink, format_source
from .tls import PLAINTEXT, Transport

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25


class State(str, enum.Enum):
    HELLO = "HELLO"
    IDLE = "IDLE"
    CONFIGURING = "CONFIGURING"
    ACTIVE = "ACTIVE"
    CLOSING = "CLOSING"
    ERROR = "ERROR"
    LOST = "LOST"
    DECOMMISSIONED = "DECOMMISSIONED"


class _Flow:
    """One running source->sink pair and its driver thread."""

    def __init__(self, node: "LogicalNode", source: Source, sink: Sink, ctx: NodeContext):
        self.node = node
        self.source = source
        self.sink = sink
        self.ctx = ctx
        self.stop_requested = threading.Event()
        self.finished = threading.Event()
        self.exhausted = False
        self.thread = threading.Thread(target=self._run, name=f"driver-{node.name}",
                                       daemon=True)

    def _run(self) -> None:
        node, source, sink = self.node, self.source, self.sink
        error: BaseException | None = None
        try:
            while not self.stop_requested.is_set():
                batch = source.next_batch(POLL_SECONDS)
                if batch is None:
                    self.exhausted = True
                    break
                if not batch:
                    continue
                n = len(batch)
                node.events_in += n
                node.bytes_in += body_bytes(batch)
                sink.append(batch)
                position = source.checkpoint()
                if position:
                    sink.when_durable(Checkpoint(position))
        except Exception as exc:  # the flow failed: report it, close what can be closed
            error = self._failure(exc)
            if error is not None:
                log.error("logical node %s failed: %s", node.name, exc,
                          exc_info=not isinstance(exc, (FlumeError, CoordinationError)))
        finally:
            node._set_state(State.CLOSING)
            for closer in (source.close, sink.close):
                try:
                    closer()
                except Exception as exc:
                    if self._failure(exc) is not None:
                        error = error or exc
                        log.error("logical node %s: close failed: %s", node.name, exc)
            node.conditions.clear()
            if error is not None:
                node._fail(error)
            else:
                node._set_state(State.IDLE)
            self.finished.set()

    def _failure(self, exc: Exception) -> Exception | None:
        """``exc``, unless it is a sink giving up a wait because the flow stops."""
        if isinstance(exc, Interrupted) and self.stop_requested.is_set():
            log.info("logical node %s stops: %s", self.node.name, exc)
            return None
        return exc

    def stop(self, timeout: float | None) -> bool:
        self.stop_requested.set()
        self.ctx.stop_event.set()
        try:
            self.source.close()  # unblocks next_batch; the driver thread closes the sink
        except Exception as exc:
            log.warning("logical node %s: source close failed: %s", self.node.name, exc)
        return self.finished.wait(timeout)


class LogicalNode:
    """One logical node: its current spec, state, counters and running flow."""

    def __init__(self, name: str, data_root: Path | None, clock: Clock = SYSTEM_CLOCK,
                 physical_name: str = "", allow_exec: bool = False,
                 shared: dict | None = None, transport: Transport = PLAINTEXT):
        self.name = name
        self.transport = transport      # the node's TLS settings, for every flow
        self.data_root = Path(data_root) if data_root is not None else None
        self.clock = clock
        self.physical_name = physical_name
        self.allow_exec = allow_exec
        self.shared = shared if shared is not None else NodeShared()
        self.state = State.HELLO
        self.version: int | None = None
        self.source_text = ""
        self.sink_text = ""
        self._error: str | None = None
        self.conditions = Conditions()
        self.events_in = 0
        self.bytes_in = 0
        self._flow: _Flow | None = None
        self._lock = threading.RLock()
        # the counters of the flows a reconfiguration replaced, by component path
        # (node.metrics.fold): status() adds them, so no counter goes down when the spec
        # changes; one entry per component path this node ever ran
        self._carried: dict = {}
        self._shape: dict | None = None      # the last retired flow's reports, hollow
        self._report_lock = threading.Lock()
        self._store: CheckpointStore | None = None
        self.state_changed = threading.Condition()

    # -- state ------------------------------------------------------------------
    def _set_state(self, state: State) -> None:
        with self.state_changed:
            before, self.state = self.state, state
            self.state_changed.notify_all()
        if before is state:
            return
        names = {"physical": self.physical_name, "logical": self.name}
        if state is State.ERROR:
            log.error("logical node %s: %s -> ERROR: %s", self.name, before.value,
                      self.last_error, extra=names)
        else:
            log.info("logical node %s: %s -> %s", self.name, before.value, state.value,
                     extra=names)

    @property
    def last_error(self) -> str | None:
        """Why the flow failed (ERROR), else the transient conditions it reports now."""
        return self._error or "; ".join(self.conditions.texts()) or None

    @last_error.setter
    def last_error(self, text: str | None) -> None:
        self._error = text

    def _fail(self, exc: BaseException) -> None:
        self.mark_failed(str(exc) or type(exc).__name__)

    def mark_failed(self, reason: str) -> None:
        """ERROR with ``reason``: what its physical node does when it cannot even give it
        a flow (a spec it cannot read, a failure outside the flow)."""
        self.last_error = reason
        self._set_state(State.ERROR)

    def wait_for(self, states: set, timeout: float) -> bool:
        """Wait until the node is in one of ``states``; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.state_changed:
            while self.state not in states:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.state_changed.wait(left)
        return True

    @property
    def done(self) -> bool:
        """The flow ran to its end: the source was exhausted and the sink closed."""
        flow = self._flow
        return flow is not None and flow.finished.is_set() and flow.exhausted

    def store(self) -> CheckpointStore:
        if self._store is None:
            if self.data_root is None:
                self._store = CheckpointStore.in_memory()
            else:
                self._store = CheckpointStore(self.data_root / self.name / "checkpoint.json")
        return self._store

    # -- control ----------------------------------------------------------------
    def configure(self, source: Call, sink: SinkNode, version: int | None = None) -> None:
        """Build the new flow (SpecError leaves the old one running), stop the old flow
        cleanly, then open and start the new one. Failures from there on (the data
        directory, opening the sink or the source) put the node in ERROR with the reason."""
        with self._lock:
            new_source = build_source(source)
            new_sink = build_sink(sink)
            self._stop_flow(None)
            self._retire_flow()
            self.source_text = format_source(source)
            self.sink_text = format_sink(sink)
            self.version = version
            self.last_error = None
            self.conditions.clear()
            self._set_state(State.CONFIGURING)
            data_dir = (self.data_root / self.name) if self.data_root else Path(".")
            try:
                if self.data_root:
                    data_dir.mkdir(parents=True, exist_ok=True)
                ctx = NodeContext(logical_name=self.name, data_dir=data_dir,
                                  store=self.store(), clock=self.clock,
                                  physical_name=self.physical_name,
                                  allow_exec=self.allow_exec, shared=self.shared,
                                  conditions=self.conditions, transport=self.transport,
                                  source_replays=new_source.replays)
            except Exception as exc:
                self._open_failed("its data directory", FlumeError(
                    f"cannot prepare the data directory {data_dir}: {exc}"))
                return
            try:
                new_sink.open(ctx)
            except Exception as exc:
                self._close_quietly(new_sink)
                self._open_failed("its sink", exc)
                return
            try:
                new_source.open(ctx)
            except Exception as exc:
                self._close_quietly(new_source)
                self._close_quietly(new_sink)
                self._open_failed("its source", exc)
                return
            self._flow = _Flow(self, new_source, new_sink, ctx)
            self._set_state(State.ACTIVE)
            self._flow.thread.start()
            log.info("logical node %s is active: %s | %s", self.name, self.source_text,
                     self.sink_text)

    def _open_failed(self, what: str, exc: BaseException) -> None:
        """ERROR with ``exc`` (logged with it by :meth:`_set_state`, not only shown on
        the master); ``what`` could not be opened."""
        log.debug("logical node %s cannot open %s", self.name, what)
        self._fail(exc)

    @staticmethod
    def _close_quietly(component) -> None:
        try:
            component.close()
        except Exception:
            pass

    def _retire_flow(self) -> None:
        """Carry the counters of the stopped flow and drop it (one step for status())."""
        flow = self._flow
        if flow is None:
            return
        with self._report_lock:
            reports = self._reports(flow)
            for root, rep in reports.items():
                fold(self._carried, rep, f"{root}/{rep.get('name', '?')}")
            # until a new flow runs (or if none opens), status() shows the carried counts
            self._shape = {root: hollow(rep) for root, rep in reports.items()}
            self._flow = None

    @staticmethod
    def _reports(flow: _Flow) -> dict:
        return {"source": flow.source.report(), "sink": flow.sink.report()}

    def _stop_flow(self, timeout: float | None) -> bool:
        flow = self._flow
        if flow is None or flow.finished.is_set():
            return True
        return flow.stop(timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the flow, writing what is buffered; True when it has closed."""
        with self._lock:
            return self._stop_flow(timeout)

    def unconfigure(self) -> None:
        with self._lock:
            self._stop_flow(None)
            self.source_text = self.sink_text = ""
            self.version = None
            self._set_state(State.IDLE)

    def wait_done(self, timeout: float | None = None) -> bool:
        flow = self._flow
        return flow is None or flow.finished.wait(timeout)

    def status(self) -> dict:
        """The node's state and counters; component counters include those of the flows
        it ran before (see ``_carried``)."""
        with self._report_lock:
            flow = self._flow
            reports = self._reports(flow) if flow else self._shape
            comps = ({root: carry(rep, self._carried, f"{root}/{rep.get('name', '?')}")
                      for root, rep in reports.items()} if reports else None)
        return {
            "name": self.name,
            "state": self.state.value,
            "version": self.version,
            "source": self.source_text,
            "sink": self.sink_text,
            "last_error": self.last_error,
            "conditions": self.conditions.texts(),
            "checkpoint_corrupt": bool(self._store is not None and self._store.corrupt),
            "events_in": self.events_in,
            "bytes_in": self.bytes_in,
            "components": comps,
        }
