"""Base classes and contracts of every source, sink and decorator.

Events move in batches: a source returns a batch, the driver appends it to the sink tree,
and the sink tree passes batches down. A batch is a ``list[Event]`` or a
:class:`node.event.Batch` -- the usual batch (one host, priority and set of attributes)
kept as columns, which reads as the list of its events wherever a component iterates or
indexes it. Per-event Python objects are what make a Python data path slow: components
on the hot path read a fast batch's columns (``node.event.columns``, ``set_attr``,
``body_bytes``) and make no event; any other component just reads events, which are then
made once, lazily. What a component may rely on: a batch is a read-only sequence (treat
it as given: ``list(batch)`` for a list of your own; never ``isinstance(batch, list)``);
changing an event you read is kept; a fast batch's columns are only read, and one
attribute for every event is set with ``set_attr``. tests/node/test_batch_contract.py
runs every registered decorator and sink over both forms: a new one needs a case there.

Contracts, which every component keeps:

* Constructors do no I/O and check nothing themselves: the checks on arguments are
  declared (bounds next to each parameter, ``check_args`` across parameters; see
  :mod:`node.registry`), so the master validates a spec without building it, and the
  builder runs the same checks before building. ``open`` does the I/O.
* ``append`` is never called before ``open`` or after ``close``; ``close`` may be called
  after a failed ``open`` and must then do nothing harmful; ``close`` is idempotent.
* ``append`` either accepts the whole batch or raises :class:`SinkError`.
* ``when_durable(cp)``: the sink promises to pass ``cp`` to ``ctx.store.commit`` once every
  event appended before the call is durable in its final place (a leaf writing a plain file:
  flushed; a leaf writing a hidden file renamed on close: renamed; a network sink: sent and
  acknowledged). A sink that loses events before that point (failure) may drop ``cp``:
  the next checkpoint carries the cumulative position, so nothing is lost.
* Every component keeps counters in ``self.metrics`` (events and bytes in and out, errors).
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .clock import SYSTEM_CLOCK, Clock
from .event import Event
from .metrics import Histogram, own_report
from .tls import PLAINTEXT, Transport

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, CheckpointStore


class Metrics(dict):
    """Counters of one component: a dict of name -> number."""

    def add(self, name: str, n: int = 1) -> None:
        self[name] = self.get(name, 0) + n

    def set(self, name: str, value) -> None:
        self[name] = value


@dataclass
class NodeShared:
    """What the logical nodes of one physical node share. ``commit_log`` is the E2E
    commit log (a ``node.commit_port.CommitLogPort``; typed loosely because components
    never import what imports ``zk``), None when the node runs without ZooKeeper;
    ``physical_name`` names the node in ZooKeeper; ``chokes`` holds the choke limiters by id (node/decorators/choke.py);
    ``e2e_collectors`` the E2E collector state by logical node (node/e2e/collector.py);
    ``agent_sinks`` what an agent sink keeps across reconfigurations, by logical node and
    rank (node/sinks/agent.py); ``storage`` the node's storage settings (endpoints and
    credentials of object stores by URL prefix, never in a spec: node/object_store.py)."""

    commit_log: Any = None
    physical_name: str = ""
    chokes: dict = field(default_factory=dict)
    e2e_collectors: dict = field(default_factory=dict)
    agent_sinks: dict = field(default_factory=dict)
    storage: Any = None     # node.object_store.StorageConfig: endpoints, credentials by URL


class Conditions:
    """Transient conditions of a running flow that components report while they last (a
    full disk holding the source back): ``set(key, text)`` when one begins, ``set(key,
    None)`` when it ends. The logical node shows them in its status (``last_error``,
    ``conditions``) while its state stays ACTIVE; they clear by themselves. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts: dict[str, str] = {}

    def set(self, key: str, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._texts.pop(key, None)
            else:
                self._texts[key] = text

    def reporter(self, key: str) -> Callable[[str | None], None]:
        """``set`` bound to ``key``."""
        return lambda text: self.set(key, text)

    def texts(self) -> list[str]:
        with self._lock:
            return [self._texts[k] for k in sorted(self._texts)]

    def clear(self) -> None:
        with self._lock:
            self._texts.clear()


@dataclass
class NodeContext:
    """What a running component may use: its logical node's identity, private data
    directory, clock, checkpoint store, the physical node's shared state, and where to
    report transient conditions (``conditions``). ``e2e_agents`` counts the E2E sinks the
    flow opened (node.e2e.agent_id names the k-th one), ``agent_sinks`` its agent sinks
    (node/sinks/agent.py)."""

    logical_name: str
    data_dir: Path
    store: "CheckpointStore"
    clock: Clock = SYSTEM_CLOCK
    physical_name: str = ""
    allow_exec: bool = True
    shared: NodeShared = field(default_factory=NodeShared)
    stop_event: threading.Event = field(default_factory=threading.Event)
    conditions: Conditions = field(default_factory=Conditions)
    e2e_agents: int = 0
    source_replays: bool = True     # the flow's Source.replays (a sink's recovery reads it)
    transport: Transport = PLAINTEXT     # the node's TLS settings (node.tls)
    agent_sinks: int = 0

    def component_dir(self, *parts: str) -> Path:
        """A directory private to one component of this logical node (created)."""
        p = self.data_dir.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p


class Component:
    """Common part: the registered name (set by the registry) and counters."""

    kind = "component"
    spec_name = "?"
    # Only a master's translation makes it runnable (logicalSink, auto*Chain, logicalSource,
    # autoCollectorSource): a node holds a config naming one until the translation comes.
    # ``translation`` is the component the master puts in its place.
    master_only = False
    translation: str | None = None

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.histograms: dict[str, Histogram] = {}

    def histogram(self, name: str) -> Histogram:
        """The duration histogram ``name`` (seconds, ``node.metrics.LATENCY_BUCKETS``),
        made on first use; reported with the counters."""
        h = self.histograms.get(name)
        return h if h is not None else self.histograms.setdefault(name, Histogram())

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        """Check the rules across this component's spec arguments (``args``: every
        parameter by name, converted, defaults included, each already through the checks
        declared next to it); ValueError with a readable message. Pure: no I/O, no
        component built. The builder calls it when validating and before building."""

    def children(self) -> list["Component"]:
        """Inner components, for status reports."""
        return []

    def report(self) -> dict:
        """A tree of this component's counters and its children's."""
        out = own_report(self.spec_name, self.kind, self.metrics, self.histograms)
        kids = [c.report() for c in self.children()]
        if kids:
            out["children"] = kids
        return out


class Source(Component):
    """A source of events.

    ``next_batch(timeout)`` blocks up to ``timeout`` seconds and returns a list of events
    (possibly empty when nothing arrived), or ``None`` once the source is exhausted for good
    (a ``text`` file read to its end). ``close`` may be called from another thread to stop a
    source and must make a blocked ``next_batch`` return promptly.

    ``checkpoint()`` returns the position to record once every event returned so far is
    durable: a dict of store keys to JSON values (``{}`` for sources with no position).

    ``replays``: after a crash, the source gives again every event it gave after its last
    committed position (tail, spoolDir, text), so a sink may drop what it wrote after its
    last commit without losing anything. False (network sources): what the source took is
    gone from its sender once answered, and a sink must keep everything it wrote.
    """

    kind = "source"
    replays = False

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def next_batch(self, timeout: float) -> list[Event] | None:
        raise NotImplementedError

    def checkpoint(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class Sink(Component):
    """A sink of events. See the module docstring for the contract."""

    kind = "sink"
    ctx: NodeContext

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def append(self, events: list[Event]) -> None:
        raise NotImplementedError

    def when_durable(self, cp: "Checkpoint") -> None:
        """Default for sinks that hold nothing back: appended means durable."""
        self.ctx.store.commit([cp])

    def close(self) -> None:
        pass


# A decorator that holds events on purpose (delay, choke) passes them on in pieces of at
# most this many seconds of holding, so an event of a large batch never waits for the
# whole batch (the latency bound of docs/reliability.md).
PIECE_SECONDS = 0.1


class Decorator(Sink):
    """A sink wrapping one inner sink; by default everything passes straight through."""

    kind = "decorator"

    def __init__(self, inner: Sink):
        super().__init__()
        self.inner = inner

    def children(self) -> list[Component]:
        return [self.inner]

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.inner.open(ctx)

    def append(self, events: list[Event]) -> None:
        self.inner.append(events)

    def when_durable(self, cp: "Checkpoint") -> None:
        self.inner.when_durable(cp)

    def close(self) -> None:
        self.inner.close()


SinkFactory = Callable[[], Sink]
"""Builds a fresh, unopened instance of a sink subtree (what ``roll`` re-creates)."""
