"""The master's ``/metrics``: a prometheus_client collector over what the master sees.

* ``flume_master_zookeeper_session_state{state}``: 1 for the session's state
  (CONNECTED, SUSPENDED, LOST), 0 for the others;
* ``flume_master_zookeeper_disconnections_total``: times that connection was lost;
* ``flume_master_logical_nodes{state}``: logical nodes by state as ``status`` shows them
  (every state of ``node.logical_node.State`` and UNMAPPED, 0 when none);
* ``flume_master_physical_nodes{alive}``: physical nodes mapped, alive or reporting;
* ``flume_master_commands{state}``: the commands kept in the history (the newest
  ``zk.store.COMMANDS_KEPT``) by state;
* ``flume_cluster_<counter>_total`` for the five main node counters
  (``node.metrics.MAIN``): the sum over every logical node the master has seen, from the
  counters nodes report to ZooKeeper. A node that restarts starts its counters at zero and
  a node that goes away stops reporting; the master carries what each one had counted
  (:class:`ClusterTotals`), so the totals never go down while the master runs;
* ``flume_master_refused_total{reason}``: requests and connections its API refused;
* the process and build metrics (``node.metrics.registry``).

What ZooKeeper cannot answer (the session is away) is left out of a scrape; the session
state and the process metrics are always there. Reading the command history costs one
listing of the commands folder per scrape plus one read per command not yet finished (a
finished command's state is kept, for at most the commands kept).
"""
from __future__ import annotations

import logging
import threading
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from flume_og.node.limits import RateLimitedLog
from flume_og.node.logical_node import State
from flume_og.node.metrics import MAIN, registry
from flume_og.zk.client import ZkError

log = logging.getLogger(__name__)

SESSION_STATES = ("CONNECTED", "SUSPENDED", "LOST")
NODE_STATES = tuple(s.value for s in State) + ("UNMAPPED",)
COMMAND_STATES = ("QUEUED", "EXECING", "SUCCEEDED", "FAILED")
FINAL = frozenset({"SUCCEEDED", "FAILED"})


class ClusterTotals:
    """Cluster totals of node counters that never go down. ``update(rows)`` takes the
    logical rows of ``status``; a counter of one (physical, logical) that went back (its
    node restarted) adds what it had counted to a carried base. One entry per logical node
    ever seen. Not thread-safe: the collector holds its lock."""

    def __init__(self):
        self._last: dict[tuple, int] = {}
        self._base: dict[tuple, int] = {}

    def update(self, rows: list[dict]) -> dict[str, int]:
        for row in rows:
            for key in MAIN:
                v = row.get(key)
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    continue
                k = (row.get("physical"), row.get("name"), key)
                last = self._last.get(k, 0)
                if v < last:
                    self._base[k] = self._base.get(k, 0) + last
                self._last[k] = v
        out = dict.fromkeys(MAIN, 0)
        for k, v in self._last.items():
            out[k[2]] += v + self._base.get(k, 0)
        return out


class MasterCollector:
    """The families of the module docstring for ``service`` (a ``MasterService``);
    ``refusals`` is the API's refusal counters."""

    def __init__(self, service, refusals: dict):
        self.service = service
        self.refusals = refusals
        self.totals = ClusterTotals()
        self._final: dict[str, str] = {}      # finished commands' states, by id
        self._lock = threading.Lock()         # scrapes may overlap
        self._errors = RateLimitedLog(log)

    def collect(self):
        store = self.service.store
        fams = []
        session = GaugeMetricFamily("flume_master_zookeeper_session_state",
                                    "The master's ZooKeeper session: 1 for the state it is in.",
                                    labels=["state"])
        now = store.session_state()
        for s in SESSION_STATES:
            session.add_metric([s], 1 if s == now else 0)
        fams.append(session)
        fams.append(CounterMetricFamily(
            "flume_master_zookeeper_disconnections", "Times the master's ZooKeeper "
            "connection was lost (SUSPENDED or LOST), recovered or not.",
            value=store.disconnections))
        with self._lock:
            for part in (self._nodes, self._commands):
                try:
                    fams.extend(part())
                except ZkError as exc:  # ZooKeeper away: the rest of the scrape stands
                    self._errors.warning(part.__name__, "the master's metrics leave out "
                                         "%s: %s", part.__name__.strip("_"), exc)
        refused = CounterMetricFamily("flume_master_refused", "Requests and connections "
                                      "the master's API refused, by reason.",
                                      labels=["reason"])
        for k, v in sorted(dict(self.refusals).items()):
            if k.startswith("refused_"):
                refused.add_metric([k[len("refused_"):]], v)
        fams.append(refused)
        return fams

    def _nodes(self) -> list:
        status = self.service.status()
        rows = status.get("logical") or []
        by_state = Counter(str(r.get("state")) for r in rows)
        nodes = GaugeMetricFamily("flume_master_logical_nodes", "Logical nodes by state.",
                                  labels=["state"])
        for s in sorted(set(NODE_STATES) | set(by_state)):
            nodes.add_metric([s], by_state.get(s, 0))
        alive = Counter(bool(r.get("alive")) for r in status.get("physical") or [])
        physical = GaugeMetricFamily("flume_master_physical_nodes", "Physical nodes mapped, "
                                     "alive or reporting, by whether they are alive.",
                                     labels=["alive"])
        for a in (True, False):
            physical.add_metric([str(a).lower()], alive.get(a, 0))
        fams = [nodes, physical]
        for key, total in self.totals.update(rows).items():
            fam = CounterMetricFamily(f"flume_cluster_{key}", f"{key.replace('_', ' ')} "
                                      f"of every logical node, as they report them.")
            fam.add_metric([], total)
            fams.append(fam)
        return fams

    def _commands(self) -> list:
        store = self.service.store
        states = {}
        for cid in store.command_ids():
            state = self._final.get(cid)
            if state is None:
                cmd = store.get_command(cid)
                if cmd is None:
                    continue
                state = cmd.state
            states[cid] = state
        self._final = {c: s for c, s in states.items() if s in FINAL}
        by_state = Counter(states.values())
        fam = GaugeMetricFamily("flume_master_commands", "Commands in the history (the "
                                "newest ones kept) by state.", labels=["state"])
        for s in sorted(set(COMMAND_STATES) | set(by_state)):
            fam.add_metric([s], by_state.get(s, 0))
        return [fam]


def master_registry(service, refusals: dict):
    """The master's registry (its own, never prometheus_client's global one)."""
    return registry(MasterCollector(service, refusals))
