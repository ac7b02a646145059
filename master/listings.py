"""The master's listings: status, configs, mappings, flows and the command history, built
from the :class:`zk.cluster_view.ClusterView` and memoised per change of the view, so that
``status`` with thousands of nodes answers in about a millisecond when nothing changed.
While the view is not initialised, listings read ZooKeeper directly (and are not kept).
Every listing (and every command record shown) hides the passwords of URLs
(:func:`node.redact.redact`); ZooKeeper keeps them.

Node states in ``status``: what the node reports (HELLO, IDLE, CONFIGURING, ACTIVE,
CLOSING, ERROR) while its physical node is alive; HELLO while a live node has not reported
it yet; LOST when its physical node is not alive (its ephemeral znode is gone); UNMAPPED
for a configured logical node that no physical node runs; DECOMMISSIONED for one a live
physical node still reports though it is neither configured nor mapped any more (being
stopped).
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict

from flume_og.node.redact import redact_tree
from flume_og.zk.client import zk_errors
from flume_og.zk.cluster_view import ClusterState, ClusterView
from flume_og.zk.store import ConfigStore, LogicalConfig

from .errors import NotFound
from .translate import World, chains, flows


def placement(mappings: dict[str, list[str]]) -> dict[str, str]:
    """{logical: physical}: the same rule as translations, the first physical node in name
    order that maps a logical node runs it."""
    out: dict[str, str] = {}
    for p in sorted(mappings):
        for name in mappings[p]:
            out.setdefault(name, p)
    return out


def _counters(rep: dict) -> dict:
    """A logical node's counters as its physical node reported them in its status znode
    (see ``node.metrics.summarize``): the five main ones as fields, all of them under
    ``counters``, and the per-component tree under ``components`` (None when the node
    left it out)."""
    counters = rep.get("counters")
    counters = counters if isinstance(counters, dict) else {}
    out = {k: counters.get(k, rep.get(k)) for k in ("events_in", "bytes_in", "events_out",
                                                     "bytes_out", "errors")}
    out["counters"] = counters or None
    comps = rep.get("components")
    out["components"] = comps if isinstance(comps, dict) else None
    return out


def _to_json(obj) -> bytes:
    # ASCII-only output: a lone surrogate in a stored string must not break a response
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


def _config_row(cfg: LogicalConfig, physical: str | None) -> dict:
    return {"name": cfg.name, "flow": cfg.flow, "source": cfg.source, "sink": cfg.sink,
            "tsource": cfg.tsource, "tsink": cfg.tsink, "version": cfg.version,
            "refresh": cfg.refresh, "physical": physical}


class Listings:
    """The listings over one view (and the store, for the command history). Thread-safe."""

    def __init__(self, view: ClusterView, store: ConfigStore):
        self.view = view
        self.store = store
        self._memo: dict[str, tuple] = {}
        self._memo_lock = threading.Lock()

    def _memoised(self, key: str, build):
        """``(value, json bytes)`` of a listing, rebuilt only when the view changed."""
        if self.view.ready:
            gen = self.view.generation
            hit = self._memo.get(key)
            if hit is not None and hit[0] == gen:
                return hit[1], hit[2]
        state = self.view.snapshot()
        value = redact_tree(build(state))   # listings never show passwords
        raw = _to_json(value)
        if state.generation is not None:
            with self._memo_lock:
                self._memo[key] = (state.generation, value, raw)
        return value, raw

    # ------------------------------------------------------------ status
    def status(self) -> dict:
        """``{"logical": [row...], "physical": [row...]}``; see status_rows for fields."""
        return self._memoised("status", self._build_status)[0]

    def status_json(self) -> bytes:
        return self._memoised("status", self._build_status)[1]

    def _build_status(self, state: ClusterState) -> dict:
        return {"logical": _logical_rows(state), "physical": _physical_rows(state)}

    # ------------------------------------------------------------ configs, mappings, flows
    def configs(self) -> list[dict]:
        """Every config: entered and translated specs, flow, version, refresh, physical."""
        return self._memoised("configs", self._build_configs)[0]

    def configs_json(self) -> bytes:
        return self._memoised("configs", self._build_configs)[1]

    @staticmethod
    def _build_configs(state: ClusterState) -> list[dict]:
        where = placement(state.mappings)
        return [_config_row(state.logical[n], where.get(n)) for n in sorted(state.logical)]

    def config(self, name: str) -> dict:
        """One config (raises NotFound)."""
        state = self.view.snapshot()
        cfg = state.logical.get(name)
        if cfg is None:
            raise NotFound(f"{name} has no configuration")
        return redact_tree(_config_row(cfg, placement(state.mappings).get(name)))

    def mappings(self) -> dict[str, list[str]]:
        """``{physical: [logical...]}``."""
        return self._memoised("mappings", lambda s: {k: list(s.mappings[k])
                                                     for k in sorted(s.mappings)})[0]

    def flows(self) -> dict[str, dict]:
        """``{flow: {"agents", "collectors", "pool", "others", "chains"}}``: ``chains`` maps
        each auto-chain agent to its collectors, primary first."""
        return self._memoised("flows", self._build_flows)[0]

    def flows_json(self) -> bytes:
        return self._memoised("flows", self._build_flows)[1]

    @staticmethod
    def _build_flows(state: ClusterState) -> dict:
        world = World(configs=state.logical, mappings=state.mappings,
                      physicals=state.physical)
        out = flows(world)
        agent_chains = chains(world)
        for flow, info in out.items():
            info["chains"] = agent_chains.get(flow, {})
        return out

    # ------------------------------------------------------------ command history
    def commands(self, limit: int = 100) -> list[dict]:
        """The newest ``limit`` commands, newest first."""
        limit = max(1, min(int(limit), 1000))
        with zk_errors("cannot read the command history"):
            return [redact_tree(asdict(c)) for c in self.store.list_commands(limit)]

    def command(self, cmd_id: str) -> dict:
        if not isinstance(cmd_id, str) or not cmd_id.isdigit() or len(cmd_id) > 10:
            raise NotFound(f"no command {cmd_id}")
        with zk_errors(f"cannot read command {cmd_id}"):
            cmd = self.store.get_command(cmd_id)
        if cmd is None:
            raise NotFound(f"no command {cmd_id}")
        return redact_tree(asdict(cmd))


def _logical_rows(state: ClusterState) -> list[dict]:
    """A row per logical node configured, mapped or still reported by a live node."""
    logical, physical, status = state.logical, state.physical, state.status
    where = placement(state.mappings)
    rows = []
    for name in sorted(set(logical) | set(where)):
        cfg = logical.get(name)
        p = where.get(name)
        st = status.get(p) if p is not None else None
        st = st if isinstance(st, dict) else {}
        reports = st.get("logical")
        rep = reports.get(name) if isinstance(reports, dict) else None
        rep = rep if isinstance(rep, dict) else {}
        if p is None:
            state_name = "UNMAPPED"
        elif p not in physical:
            state_name = "LOST"
        else:
            state_name = str(rep.get("state") or "HELLO")
        info = physical.get(p) or {}
        rows.append({
            "name": name,
            "physical": p,
            "host": info.get("host") or st.get("host"),
            "state": state_name,
            "version": rep.get("version"),
            "config_version": cfg.version if cfg else None,
            "flow": cfg.flow if cfg else rep.get("flow"),
            "source": cfg.source if cfg else None,
            "sink": cfg.sink if cfg else None,
            "tsource": cfg.tsource if cfg else None,
            "tsink": cfg.tsink if cfg else None,
            "last_error": rep.get("last_error"),
            "retry_at": rep.get("retry_at"),     # a failed flow's next open (epoch ms)
            "retries": rep.get("retries"),
            "last_seen": st.get("updated"),
            **_counters(rep),
        })
    # still reported by a live physical node, but neither configured nor mapped
    # anywhere any more: decommissioned, its node has not stopped it yet
    known = set(logical) | set(where)
    for p in sorted(physical):
        st = status.get(p)
        reports = st.get("logical") if isinstance(st, dict) else None
        if not isinstance(reports, dict):
            continue
        for name in sorted(set(reports) - known):
            rep = reports[name] if isinstance(reports[name], dict) else {}
            known.add(name)
            rows.append({
                "name": name, "physical": p, "host": physical[p].get("host"),
                "state": "DECOMMISSIONED", "version": rep.get("version"),
                "config_version": None, "flow": rep.get("flow"), "source": None,
                "sink": None, "tsource": None, "tsink": None,
                "last_error": rep.get("last_error"), "last_seen": st.get("updated"),
                **_counters(rep)})
    rows.sort(key=lambda r: r["name"])
    return rows


def _physical_rows(state: ClusterState) -> list[dict]:
    """A row per physical node mapped, alive or reporting."""
    mappings, physical, status = state.mappings, state.physical, state.status
    rows = []
    for p in sorted(set(mappings) | set(physical) | set(status)):
        info = physical.get(p) or {}
        st = status.get(p) if isinstance(status.get(p), dict) else {}
        rows.append({
            "name": p,
            "alive": p in physical,
            "host": info.get("host") or st.get("host"),
            "pid": info.get("pid"),
            "http_port": info.get("http_port"),
            "http_scheme": info.get("http_scheme") or "http",
            "started": info.get("started"),
            "logical": list(mappings.get(p, [])),
            "last_seen": st.get("updated"),
        })
    return rows


def preview_chains(state: ClusterState, flow: str, names: list[str]) -> dict:
    """What moving the logical nodes ``names`` to ``flow`` would do, computed as the
    translations would (nothing is stored): ``{flow, nodes, unknown, chains: {agent:
    [collectors, primary first]} of every auto-chain agent of ``flow`` after the move,
    pool, changed: {agent: {"before": [...], "after": [...]}}`` for every agent (of any
    flow) whose chain the move changes."""
    from dataclasses import replace
    unknown = [n for n in names if n not in state.logical]
    configs = dict(state.logical)
    for n in names:
        if n in configs:
            configs[n] = replace(configs[n], flow=flow)
    before = chains(World(configs=state.logical, mappings=state.mappings,
                          physicals=state.physical))
    world = World(configs=configs, mappings=state.mappings, physicals=state.physical)
    after = chains(world)
    old = {a: c for f in before.values() for a, c in f.items()}
    new = {a: c for f in after.values() for a, c in f.items()}
    changed = {a: {"before": old.get(a), "after": new.get(a)}
               for a in sorted(set(old) | set(new)) if old.get(a) != new.get(a)}
    return {"flow": flow, "nodes": [n for n in names if n in state.logical],
            "unknown": unknown, "chains": after.get(flow, {}), "pool": world.pool(flow),
            "changed": changed}
