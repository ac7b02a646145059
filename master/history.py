"""History kept by the master: the counters it already receives (the status listing,
:mod:`master.listings`) sampled every ``interval`` seconds into a bounded ring per logical
node, and the recent errors of each node.

Every master samples on its own (any master serves any request); two browsers asking the
same master see the same numbers, and a page loaded now gets its charts full at once.

Memory, stated: one shared ring of ``samples`` sample times (8 bytes each) and, per logical
node, ``samples x len(FIELDS)`` 32-bit floats -- with the defaults (720 samples: 1 hour at
5 s; 8 fields) 23,040 bytes per logical node, about 23 MB for 1,000 logical nodes -- plus
at most ``MAX_ERRORS`` recent errors per node (each message cut to ``MAX_ERROR_TEXT``
characters: at most about 10 KB per node). A node that no longer appears in the status
listing is forgotten. At most ``max_nodes`` nodes are kept (``DEFAULT_MAX_NODES``, 5,000:
about 115 MB): the names in a listing come partly from what physical nodes report, and a
buggy or hostile node reporting a hundred thousand made-up logical nodes (a 1 MB status
znode) must not cost the master gigabytes; configured nodes are taken first, the others
beyond the bound are left out (counted in ``untracked``), as is a name longer than a node
name may be (``MAX_NAME``); a state is kept cut to ``MAX_STATE_TEXT`` characters.

Each sample holds per node, as floats (NaN: no reading):

* ``events_in``, ``events_out``, ``bytes_in``, ``bytes_out``, ``errors``: rates per second,
  the counter's increase over the increase of the node's own report time (``last_seen``),
  so they do not depend on when the master samples; a counter that went down (the flow
  restarted) gives no rate for that interval; a node whose report has not changed for
  ``STALE_S`` of the master's own clock (dead, unreachable) gives NaN -- measured on the
  master's clock, not by comparing it with the node's, so a node whose clock is off by
  minutes still gets its rates, and a dead one loses them after ``STALE_S`` whatever its
  clock said;
* ``backlog_bytes`` (WAL plus spool bytes), ``acks_pending``: gauges as last reported;
* ``failovers``: failovers per second.

Recent errors: a new ``last_error`` of a node (or a state of ERROR or LOST it entered) is
kept with the time seen and the component it names (the text before the first ``:``).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from array import array
from collections import deque
from typing import Callable

from .validation import MAX_NAME

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
DEFAULT_SAMPLES = 720          # 1 hour at 5 s
MAX_ERRORS = 20
MAX_ERROR_TEXT = 500
MAX_STATE_TEXT = 40            # node states are short words (ACTIVE, DECOMMISSIONED)
STALE_S = 15.0                 # a report older than this gives no rate (nodes report every 2 s)
DEFAULT_MAX_NODES = 5000       # logical nodes kept at most (23 KB each with the defaults)

RATES = ("events_in", "events_out", "bytes_in", "bytes_out", "errors", "failovers")
GAUGES = ("backlog_bytes", "acks_pending")
FIELDS = ("events_in", "events_out", "bytes_in", "bytes_out", "errors", "backlog_bytes",
          "acks_pending", "failovers")
_IDX = {f: i for i, f in enumerate(FIELDS)}
NAN = float("nan")


def bytes_per_node(samples: int = DEFAULT_SAMPLES) -> int:
    """The ring's memory per logical node (32-bit floats)."""
    return samples * len(FIELDS) * array("f").itemsize


def _counter(row: dict, key: str):
    v = row.get(key)
    if v is None:
        v = (row.get("counters") or {}).get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _gauge(row: dict, *keys: str) -> float:
    counters = row.get("counters") or {}
    total, seen = 0.0, False
    for k in keys:
        v = counters.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            total += v
            seen = True
    return total if seen else NAN


def component_of(message: str) -> str:
    """The component an error text names: ``collectorSource: cannot bind...`` ->
    ``collectorSource``; "" when it names none."""
    head, sep, _ = message.partition(":")
    head = head.strip()
    if sep and head and len(head) <= 60 and " " not in head.strip("()"):
        return head
    return ""


class _Node:
    __slots__ = ("values", "t", "changed_at", "counters", "rates", "errors", "last_error",
                 "state")

    def __init__(self, samples: int):
        self.values = array("f", [NAN]) * (samples * len(FIELDS))
        self.t: int | None = None          # last_seen of the last reading used for rates
        self.changed_at: float | None = None  # the master's clock (ms) when t last changed
        self.counters: dict[str, float] = {}
        self.rates: dict[str, float] = {}
        self.errors: deque = deque(maxlen=MAX_ERRORS)
        self.last_error: str | None = None
        self.state: str | None = None


class History:
    """Rings of samples per logical node, fed by :meth:`sample` (a status listing), or
    every ``interval`` seconds by a thread of its own (:meth:`start`) calling ``read``.
    Thread-safe."""

    def __init__(self, read: Callable[[], dict] | None = None,
                 interval: float = DEFAULT_INTERVAL, samples: int = DEFAULT_SAMPLES,
                 clock: Callable[[], float] = time.time, max_nodes: int = DEFAULT_MAX_NODES):
        self.read = read
        self.max_nodes = int(max_nodes)
        self.untracked = 0          # nodes of the last listing left out (beyond max_nodes)
        self.interval = float(interval)
        self.samples = int(samples)
        self.clock = clock
        self.times = array("d", [NAN]) * self.samples   # epoch ms of each slot
        self.tick = 0                                    # slots written so far
        self.nodes: dict[str, _Node] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ sampling
    def start(self) -> "History":
        self._thread = threading.Thread(target=self._run, name="history", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample(self.read())
            except Exception as exc:  # ZooKeeper away: no sample this time
                log.debug("history: no sample: %s", exc)
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def sample(self, status: dict, now_ms: float | None = None) -> None:
        """One sample of every logical node of a status listing (``/api/status``)."""
        now_ms = self.clock() * 1000 if now_ms is None else now_ms
        rows = status.get("logical") or []
        with self._lock:
            slot = self.tick % self.samples
            self.times[slot] = now_ms
            base = slot * len(FIELDS)
            # configured nodes first: they are the ones kept when the bound is reached
            keep: dict[str, dict] = {}
            refused = 0
            for row in sorted(rows, key=lambda r: r.get("config_version") is None):
                name = row.get("name")
                if not isinstance(name, str) or len(name) > MAX_NAME:
                    refused += 1          # no node has such a name: a report's junk
                elif name not in keep:
                    keep[name] = row
            names = list(keep)
            self.untracked = refused + max(0, len(names) - self.max_nodes)
            keep = {n: keep[n] for n in names[:self.max_nodes]}
            for name in [n for n in self.nodes if n not in keep]:
                del self.nodes[name]
            for name, row in keep.items():
                node = self.nodes.get(name)
                if node is None:
                    node = self.nodes[name] = _Node(self.samples)
                self._errors(node, row, now_ms)
                self._rates(node, row, now_ms)
                vals = node.values
                for f in RATES:
                    vals[base + _IDX[f]] = node.rates.get(f, NAN)
                vals[base + _IDX["backlog_bytes"]] = _gauge(row, "wal_bytes", "spool_bytes")
                vals[base + _IDX["acks_pending"]] = _gauge(row, "acks_pending")
            self.tick += 1

    @staticmethod
    def _rates(node: _Node, row: dict, now_ms: float) -> None:
        t = row.get("last_seen")
        if not isinstance(t, (int, float)):
            node.rates, node.t, node.changed_at = {}, None, None   # never reported: no rate
            return
        if t == node.t and node.changed_at is not None \
                and now_ms - node.changed_at > STALE_S * 1000:
            node.rates = {}          # no new report for STALE_S (master's clock): dead
            return
        if t != node.t:
            node.changed_at = now_ms
        counters = {f: _counter(row, f) for f in RATES}
        if node.t is not None and t > node.t:
            dt = (t - node.t) / 1000
            rates = {}
            for f, v in counters.items():
                before = node.counters.get(f)
                if v is not None and before is not None and v >= before:
                    rates[f] = (v - before) / dt
            node.rates = rates
        elif node.t is None or t < node.t:
            node.rates = {}
        # t == node.t: the same reading again, the rates stand
        if node.t is None or t != node.t:
            node.t = t
            node.counters = {f: v for f, v in counters.items() if v is not None}

    @staticmethod
    def _errors(node: _Node, row: dict, now_ms: float) -> None:
        err = row.get("last_error")
        state = row.get("state")
        state = state[:MAX_STATE_TEXT] if isinstance(state, str) else None
        if isinstance(err, str) and err and err != node.last_error:
            text = err[:MAX_ERROR_TEXT]
            node.errors.append({"t": int(now_ms), "component": component_of(text),
                                "message": text, "state": state})
        elif state in ("ERROR", "LOST") and state != node.state and not err:
            node.errors.append({"t": int(now_ms), "component": "", "state": state,
                                "message": "node lost (its physical node is gone)"
                                if state == "LOST" else "flow failed"})
        node.last_error = err if isinstance(err, str) else None
        node.state = state

    # ------------------------------------------------------------ reading
    def _order(self) -> list[int]:
        """The slots written, oldest first."""
        n = min(self.tick, self.samples)
        start = self.tick - n
        return [(start + i) % self.samples for i in range(n)]

    @staticmethod
    def _num(v: float):
        return None if math.isnan(v) else round(v, 3)

    def series(self, names: list[str]) -> dict:
        """``{interval, samples, fields, t: [epoch ms...], nodes: {name: {field: [...],
        errors: [...]}}}`` (oldest first; null where there was no reading). Unknown names
        are left out. The rings are copied under the lock (a memcpy each) and the answer
        built outside it: 200 nodes of an hour take about a second to build, and
        sampling must not wait for that."""
        with self._lock:
            order = self._order()
            times = [int(self.times[s]) for s in order]
            rings = [(name, array("f", self.nodes[name].values), list(self.nodes[name].errors))
                     for name in dict.fromkeys(names) if name in self.nodes]
        out = {"interval": self.interval, "samples": self.samples, "fields": list(FIELDS),
               "t": times, "nodes": {}}
        k = len(FIELDS)
        for name, vals, errors in rings:
            entry = {f: [self._num(vals[s * k + i]) for s in order]
                     for i, f in enumerate(FIELDS)}
            entry["recent_errors"] = errors[::-1]
            out["nodes"][name] = entry
        return out

    def latest(self) -> dict:
        """The last sample of every node: ``{t, interval, nodes: {name: {field: value}}}``
        (what the topology labels show)."""
        with self._lock:
            if self.tick == 0:
                return {"t": None, "interval": self.interval, "nodes": {}, "untracked": 0}
            slot = (self.tick - 1) % self.samples
            k = len(FIELDS)
            nodes = {}
            for name, node in self.nodes.items():
                vals = node.values
                nodes[name] = {f: self._num(vals[slot * k + i]) for i, f in enumerate(FIELDS)}
                nodes[name]["error_count"] = len(node.errors)
            return {"t": int(self.times[slot]), "interval": self.interval, "nodes": nodes,
                    "untracked": self.untracked}

    def errors(self, names: list[str] | None = None) -> dict[str, list[dict]]:
        """``{name: [{t, component, message, state}...]}``, newest first."""
        with self._lock:
            pick = self.nodes if names is None else {n: self.nodes[n] for n in names
                                                     if n in self.nodes}
            return {n: list(node.errors)[::-1] for n, node in pick.items() if node.errors}

    def flow(self, agents: list[str], collectors: list[str]) -> dict:
        """A flow end to end: ``in`` (events/s in at its agents), ``committed`` (events/s
        written by its collectors), ``gap`` (in - committed), ``backlog_bytes`` and
        ``acks_pending`` (summed over the agents), per sample; null where no member had a
        reading. Built outside the lock from copies of the rings, as :meth:`series`."""
        with self._lock:
            order = self._order()
            times = [int(self.times[s]) for s in order]
            a_rings = [array("f", self.nodes[n].values) for n in agents if n in self.nodes]
            c_rings = [array("f", self.nodes[n].values) for n in collectors if n in self.nodes]
        k = len(FIELDS)

        def total(rings, field):
            i = _IDX[field]
            out = []
            for s in order:
                acc, seen = 0.0, False
                for vals in rings:
                    v = vals[s * k + i]
                    if not math.isnan(v):
                        acc += v
                        seen = True
                out.append(round(acc, 3) if seen else None)
            return out
        ins = total(a_rings, "events_in")
        committed = total(c_rings, "events_out")
        gap = [None if a is None or b is None else round(a - b, 3)
               for a, b in zip(ins, committed)]
        return {"interval": self.interval, "t": times,
                "agents": list(agents), "collectors": list(collectors),
                "in": ins, "committed": committed, "gap": gap,
                "backlog_bytes": total(a_rings, "backlog_bytes"),
                "acks_pending": total(a_rings, "acks_pending"),
                "failovers": total(a_rings, "failovers")}


__all__ = ["History", "FIELDS", "bytes_per_node", "component_of", "DEFAULT_INTERVAL",
           "DEFAULT_SAMPLES", "MAX_ERRORS"]
