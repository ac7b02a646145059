"""Translations: the master rewrites the components that only make sense with a view of the
whole cluster into concrete ones a node can run.

* ``logicalSource``       -> ``rpcSource(PORT)``, PORT allocated on the node's physical node
  (left untranslated while the node is mapped nowhere);
* ``autoCollectorSource`` -> ``collectorSource(PORT)``, PORT allocated the same way;
* ``logicalSink("x")``    -> ``rpcSink("HOST", PORT)`` to where ``x`` runs, or
  ``fail("logicalSink x: x is not running anywhere")``;
* ``autoE2EChain`` / ``autoDFOChain`` / ``autoBEChain`` -> ``agentE2EChain("h1:p1", ...)`` /
  ``agentDFOChain(...)`` / ``agentBEChain(...)`` over up to three collectors of the agent's
  flow, or ``fail("no collectors in flow F")``.

Sinks may sit anywhere in a sink tree (decorators, fan-outs, failovers, rolls, ``let``).

Every master computes the same translation from the same ZooKeeper state: all input is in
the store (configs, mappings, live physical nodes, allocated ports) and the collector chains
come from a consistent-hash ring keyed by md5 of names, never by Python's ``hash()``. A
collector's ring points depend only on its own name, so adding one moves only the agents
whose walk meets it first, and removing one changes only the chains that held it.

Writes are compare-and-set on the config version (:meth:`ConfigStore.set_translation`): a
translation computed from an old version is never stored.
"""
from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache

from flume_og.node.errors import SpecError
from flume_og.node.components import master_only
from flume_og.node.spec import (Call, Decorated, Failover, FanOut, Let, Lit, SinkNode, format_sink,
                                format_source, parse_sink, parse_source, sink_components)
from flume_og.zk.client import ConflictError
from flume_og.zk.store import ConfigStore, LogicalConfig

log = logging.getLogger(__name__)

CHAIN_LENGTH = 3          # collectors per auto chain (primary and two backups)
VIRTUAL_NODES = 64        # ring points per collector: spreads agents evenly
CAS_ROUNDS = 5            # passes over configs whose compare-and-set lost
DEFAULT_COLLECTOR_PORT = 35853

COLLECTOR_SOURCE = "autoCollectorSource"
LOGICAL_SINK = "logicalSink"
# What to translate comes from the components marked master_only (node/sources/logical.py,
# node/sinks/logical.py): name -> the component the master puts in its place.
SOURCE_TRANSLATIONS = {n: cls.translation for n, cls in master_only("source").items()}
SINK_TRANSLATIONS = {n: cls.translation for n, cls in master_only("sink").items()}
CHAIN_TRANSLATIONS = {n: t for n, t in SINK_TRANSLATIONS.items() if n != LOGICAL_SINK}
# sources whose port a logicalSink may target when the target spells it out itself
_EXPLICIT_RPC_SOURCES = {"rpcSource": None, "thriftSource": None,
                         "collectorSource": DEFAULT_COLLECTOR_PORT}

_SOURCE_MARKERS = tuple(SOURCE_TRANSLATIONS)
_SINK_MARKERS = tuple(SINK_TRANSLATIONS)
_CHAIN_MARKERS = tuple(CHAIN_TRANSLATIONS)


# ---------------------------------------------------------------- parsing (cached)

def _mentions(text: str, markers: tuple) -> bool:
    """A cheap pre-check: a spec without any marker needs no parsing."""
    return any(m in text for m in markers)


@lru_cache(maxsize=8192)
def _parse_source(text: str) -> Call | None:
    try:
        return parse_source(text)
    except SpecError:
        return None


@lru_cache(maxsize=8192)
def _parse_sink(text: str) -> SinkNode | None:
    # trees are frozen dataclasses: sharing one between callers is safe
    try:
        return parse_sink(text)
    except SpecError:
        return None


def source_name(text: str) -> str | None:
    """The component name of an entered source text (None if it does not parse)."""
    call = _parse_source(text)
    return call.name if call is not None else None


def map_sink(node: SinkNode, fn: Callable[[Call], SinkNode | None],
             env: frozenset = frozenset()) -> SinkNode:
    """Rebuild ``node`` with every leaf component ``c`` replaced by ``fn(c)`` (None keeps
    it). Returns ``node`` itself when nothing was replaced."""
    if isinstance(node, Call):
        if not node.args and not node.kwargs and node.name in env:
            return node
        new = fn(node)
        return node if new is None else new
    if isinstance(node, Decorated):
        inner = map_sink(node.inner, fn, env)
        return node if inner is node.inner else replace(node, inner=inner)
    if isinstance(node, (FanOut, Failover)):
        branches = tuple(map_sink(b, fn, env) for b in node.branches)
        if all(a is b for a, b in zip(branches, node.branches)):
            return node
        return replace(node, branches=branches)
    if isinstance(node, Let):
        value = map_sink(node.value, fn, env)
        body = map_sink(node.body, fn, env | {node.name})
        if value is node.value and body is node.body:
            return node
        return replace(node, value=value, body=body)
    raise TypeError(f"not a sink node: {node!r}")


def uses_auto_chain(cfg: LogicalConfig) -> bool:
    """True if ``cfg``'s entered sink has an ``auto*Chain`` anywhere (it is an agent)."""
    if not _mentions(cfg.sink, _CHAIN_MARKERS):
        return False
    tree = _parse_sink(cfg.sink)
    return tree is not None and any(c.name in CHAIN_TRANSLATIONS
                                    for c in sink_components(tree))


def is_collector(cfg: LogicalConfig) -> bool:
    """True if ``cfg``'s entered source is ``autoCollectorSource``."""
    return COLLECTOR_SOURCE in cfg.source and source_name(cfg.source) == COLLECTOR_SOURCE


# ---------------------------------------------------------------- consistent hashing

def _hash(key: str) -> int:
    # md5 is stable across processes and machines (Python's hash() is salted per process)
    return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[:8], "big")


class HashRing:
    """A consistent-hash ring of collector names with ``vnodes`` points each."""

    def __init__(self, names: Iterable[str], vnodes: int = VIRTUAL_NODES):
        points = sorted((_hash(f"{name}#{i}"), name) for name in set(names)
                        for i in range(vnodes))
        self._keys = [p[0] for p in points]
        self._names = [p[1] for p in points]
        self.members = frozenset(self._names)

    def walk(self, key: str, n: int = CHAIN_LENGTH, exclude: str | None = None) -> list[str]:
        """Up to ``n`` distinct names met walking clockwise from ``key``'s point."""
        total = len(self._keys)
        want = min(n, len(self.members) - (exclude in self.members))
        out: list[str] = []
        if total == 0 or want <= 0:
            return out
        start = bisect.bisect_right(self._keys, _hash(key))
        for j in range(total):
            name = self._names[(start + j) % total]
            if name != exclude and name not in out:
                out.append(name)
                if len(out) == want:
                    break
        return out


# ---------------------------------------------------------------- the world snapshot

@dataclass
class World:
    """A snapshot of what translations depend on: configs, mappings and live physical
    nodes. Derived indexes (placement, collector pools, rings) are built once; allocated
    ports are read once per physical node and cached."""

    configs: dict[str, LogicalConfig]
    mappings: dict[str, list[str]]
    physicals: dict[str, dict]
    placement: dict[str, str] = field(init=False)
    _ports: dict[str, dict[str, int]] = field(init=False, default_factory=dict)
    _rings: dict[str, HashRing] = field(init=False, default_factory=dict)
    _collectors: dict[str, list[str]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # a logical node mapped to several physical nodes runs on the first in name order
        # (the master's status listing places it by the same rule)
        self.placement = {}
        for physical in sorted(self.mappings):
            for logical in self.mappings[physical]:
                self.placement.setdefault(logical, physical)

    @classmethod
    def load(cls, store: ConfigStore) -> "World":
        """Read the snapshot: one pass over configs, mappings and live physical nodes."""
        return cls(configs=store.list_logical(), mappings=store.list_mappings(),
                   physicals=store.list_physical())

    # ------------------------------------------------------------ placement
    def is_running(self, logical: str) -> bool:
        """Mapped to a physical node that is alive (its ephemeral znode exists)."""
        physical = self.placement.get(logical)
        return physical is not None and physical in self.physicals

    def host_of(self, logical: str) -> str | None:
        """The host of the live physical node running ``logical`` (None if not running)."""
        physical = self.placement.get(logical)
        if physical is None or physical not in self.physicals:
            return None
        return str(self.physicals[physical].get("host") or physical)

    def port(self, store: ConfigStore, logical: str) -> int | None:
        """The port allocated to ``logical`` on its physical node (allocated on first use);
        None while it is mapped nowhere."""
        physical = self.placement.get(logical)
        if physical is None:
            return None
        port = self._ports_on(store, physical).get(logical)
        if port is None:
            port = store.allocate_port(physical, logical,
                                       avoid=self._ports_beside(store, physical))
            self._ports[physical][logical] = port
        return port

    def _ports_on(self, store: ConfigStore, physical: str) -> dict[str, int]:
        ports = self._ports.get(physical)
        if ports is None:
            ports = self._ports[physical] = store.ports_of(physical)
        return ports

    def _ports_beside(self, store: ConfigStore, physical: str) -> set[int]:
        """The ports handed out to the other live physical nodes on ``physical``'s host:
        two node processes on one host cannot both listen on one port."""
        host = (self.physicals.get(physical) or {}).get("host")
        if not host:
            return set()
        return {port for other, info in self.physicals.items()
                if other != physical and info.get("host") == host
                for port in self._ports_on(store, other).values()}

    # ------------------------------------------------------------ flows
    def flow_members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name in sorted(self.configs):
            out.setdefault(self.configs[name].flow, []).append(name)
        return out

    def collectors(self, flow: str) -> list[str]:
        """Every ``autoCollectorSource`` node of ``flow`` (running or not), sorted."""
        if self._collectors is None:
            self._collectors = {}
            for name in sorted(self.configs):
                cfg = self.configs[name]
                if is_collector(cfg):
                    self._collectors.setdefault(cfg.flow, []).append(name)
        return self._collectors.get(flow, [])

    def pool(self, flow: str) -> list[str]:
        """The collectors of ``flow`` that are running: what chains are made of."""
        return [c for c in self.collectors(flow) if self.is_running(c)]

    def ring(self, flow: str) -> HashRing:
        ring = self._rings.get(flow)
        if ring is None:
            ring = self._rings[flow] = HashRing(self.pool(flow))
        return ring

    def chain(self, agent: str, flow: str | None = None) -> list[str]:
        """The collectors (names) of ``agent``'s chain, primary first; never itself."""
        if flow is None:
            flow = self.configs[agent].flow
        return self.ring(flow).walk(agent, CHAIN_LENGTH, exclude=agent)


# ---------------------------------------------------------------- translating one config

def _call(name: str, *args) -> Call:
    return Call(name, tuple(Lit(a, "int" if isinstance(a, int) else "string")
                            for a in args))


def _fail(message: str) -> Call:
    return _call("fail", message)


def _explicit_port(call: Call) -> int | None:
    """The port an explicitly written RPC source listens on, if it can be read."""
    if call.args and isinstance(call.args[0], Lit) and call.args[0].kind == "int":
        return call.args[0].value
    for key, value in call.kwargs:
        if key == "port" and isinstance(value, Lit) and value.kind == "int":
            return value.value
    return _EXPLICIT_RPC_SOURCES.get(call.name)


def _logical_sink(call: Call, world: World, store: ConfigStore) -> SinkNode:
    target = call.args[0].value if call.args and isinstance(call.args[0], Lit) else None
    if target is None:
        target = dict(call.kwargs).get("logicalNode")
        target = target.value if isinstance(target, Lit) else None
    if not isinstance(target, str):
        return _fail("logicalSink: the target logical node must be a string")
    tcfg = world.configs.get(target)
    if tcfg is None or not world.is_running(target):
        return _fail(f"logicalSink {target}: {target} is not running anywhere")
    source = _parse_source(tcfg.source)
    if source is not None and source.name in SOURCE_TRANSLATIONS:
        port = world.port(store, target)
    elif source is not None and source.name in _EXPLICIT_RPC_SOURCES:
        port = _explicit_port(source)
    else:
        port = None
    if port is None:
        what = source.name if source is not None else "unreadable"
        return _fail(f"logicalSink {target}: {target} does not receive over RPC "
                     f"(its source is {what}; use logicalSource)")
    return _call(SINK_TRANSLATIONS[LOGICAL_SINK], world.host_of(target), port)


def _auto_chain(call: Call, cfg: LogicalConfig, world: World,
                store: ConfigStore) -> SinkNode:
    chain = world.chain(cfg.name, cfg.flow)
    if not chain:
        return _fail(f"no collectors in flow {cfg.flow}")
    return _call(CHAIN_TRANSLATIONS[call.name],
                 *(f"{world.host_of(c)}:{world.port(store, c)}" for c in chain))


def translate_config(cfg: LogicalConfig, world: World,
                     store: ConfigStore) -> tuple[str | None, str | None]:
    """The translated ``(source, sink)`` texts of ``cfg``; None for a half that needs no
    translation (the node runs it as entered). Allocates ports on first use."""
    tsource = None
    if _mentions(cfg.source, _SOURCE_MARKERS):
        call = _parse_source(cfg.source)
        if call is not None and call.name in SOURCE_TRANSLATIONS:
            port = world.port(store, cfg.name)
            if port is not None:
                tsource = format_source(_call(SOURCE_TRANSLATIONS[call.name], port))
    tsink = None
    if _mentions(cfg.sink, _SINK_MARKERS):
        tree = _parse_sink(cfg.sink)
        if tree is not None:
            def one(call: Call) -> SinkNode | None:
                if call.name == LOGICAL_SINK:
                    return _logical_sink(call, world, store)
                if call.name in CHAIN_TRANSLATIONS:
                    return _auto_chain(call, cfg, world, store)
                return None
            new = map_sink(tree, one)
            if new is not tree:
                tsink = format_sink(new)
    return tsource, tsink


# ---------------------------------------------------------------- storing translations

def _targets(world: World, names: Iterable[str] | None, dependents: bool) -> list[str]:
    if names is None:
        return sorted(world.configs)
    wanted = set(names)
    if dependents:
        # any node may be (or may have been) a collector or a logicalSink target, and a
        # previous config is not known here: recompute every node whose sink depends on
        # other nodes. Cheap: parses are cached and only changed translations are written.
        wanted.update(n for n, c in world.configs.items() if _mentions(c.sink, _SINK_MARKERS))
    return sorted(n for n in wanted if n in world.configs)


def retranslate(store: ConfigStore, names: Iterable[str] | None = None, *,
                dependents: bool = True, world: World | None = None) -> int:
    """Recompute the translations of ``names`` (every node when None) and store those that
    changed; returns how many were written.

    With ``dependents`` (the default) the nodes whose translation depends on other nodes
    (``auto*Chain`` agents, ``logicalSink`` users) are recomputed too, so a change to a
    collector or a logicalSink target reaches them. ``world`` may be a snapshot already
    loaded. A write whose compare-and-set lost (the config changed meanwhile) is retried
    from a fresh snapshot; raises ConflictError if it keeps losing."""
    if names is not None:
        names = list(names)
    world = world or World.load(store)
    todo = _targets(world, names, dependents)
    changed = 0
    for _ in range(CAS_ROUNDS):
        lost = []
        for name in todo:
            cfg = world.configs.get(name)
            if cfg is None:
                continue
            tsource, tsink = translate_config(cfg, world, store)
            if (tsource, tsink) == (cfg.tsource, cfg.tsink):
                continue
            if store.set_translation(name, tsource, tsink, expected_version=cfg.version):
                changed += 1
            else:
                lost.append(name)
        if not lost:
            if changed:
                log.info("stored %d changed translation(s)", changed)
            return changed
        # the configs changed since the snapshot, and so may what depends on them
        world = World.load(store)
        todo = _targets(world, lost, dependents)
    raise ConflictError(f"could not store translations of {', '.join(lost[:5])}: "
                        f"their configs keep changing")


# ---------------------------------------------------------------- views for the UI and API

def chains(world: World) -> dict[str, dict[str, list[str]]]:
    """``{flow: {agent: [collector names, primary first]}}`` for every auto-chain agent."""
    out: dict[str, dict[str, list[str]]] = {}
    for name in sorted(world.configs):
        cfg = world.configs[name]
        if uses_auto_chain(cfg):
            out.setdefault(cfg.flow, {})[name] = world.chain(name, cfg.flow)
    return out


def flows(world: World) -> dict[str, dict[str, list[str]]]:
    """``{flow: {"agents", "collectors", "pool", "others"}}``: agents use an auto chain
    anywhere in their sink, collectors have ``autoCollectorSource`` (``pool``: those
    running), others are the rest of the flow's nodes. A tiered node may be both."""
    out = {}
    for flow, members in world.flow_members().items():
        agents = [n for n in members if uses_auto_chain(world.configs[n])]
        collectors = world.collectors(flow)
        both = set(agents) | set(collectors)
        out[flow] = {"agents": agents, "collectors": list(collectors),
                     "pool": world.pool(flow),
                     "others": [n for n in members if n not in both]}
    return out


__all__ = ["World", "HashRing", "translate_config", "retranslate", "chains", "flows",
           "uses_auto_chain", "is_collector", "sink_components", "map_sink", "CHAIN_LENGTH",
           "VIRTUAL_NODES"]
