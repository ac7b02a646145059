"""Translations of logical sources and sinks and auto chains, on a real ZooKeeper."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from flume_og.master.translate import (HashRing, World, chains, flows, retranslate,
                                       translate_config)
from flume_og.node.errors import SinkError, SourceError
from flume_og.node.builder import build_sink, build_source, validate_parts
from flume_og.node.spec import parse_sink, parse_source
from flume_og.zk.store import ConfigStore, LogicalConfig

ROOT = Path(__file__).resolve().parents[2]
FIRST_PORT = 35853


def config(store, name, source="null", sink="null", flow="f"):
    store.put_logical(LogicalConfig(name, source, sink, flow))


def run_on(store, physical, *logicals, host=None):
    """A live physical node (ephemeral on the test's session) running ``logicals``."""
    store.register_physical(physical, {"host": host or f"host-{physical}"})
    for name in logicals:
        store.map(physical, name)


def translated(store, name):
    cfg = store.get_logical(name)
    return cfg.tsource, cfg.tsink


def add_collector(store, name, flow="f"):
    config(store, name, "autoCollectorSource", 'collectorSink("/tmp/x", "p")', flow)
    run_on(store, f"p-{name}", name)


# ---------------------------------------------------------------- the registered components

@pytest.mark.parametrize("text", ["logicalSource", "autoCollectorSource"])
def test_untranslated_sources_validate_but_refuse_to_open(text, ctx):
    validate_parts(parse_source(text), None)
    src = build_source(parse_source(text))
    with pytest.raises(SourceError, match=f"{text} must be translated by a master"):
        src.open(ctx)
    src.close()


@pytest.mark.parametrize("text", ['logicalSink("n1")', "autoE2EChain", "autoDFOChain",
                                  "autoBEChain"])
def test_untranslated_sinks_validate_but_refuse_to_open(text, ctx):
    validate_parts(None, parse_sink(text))
    sink = build_sink(parse_sink(text))
    with pytest.raises(SinkError, match="must be translated by a master; run this spec"):
        sink.open(ctx)
    sink.close()


def test_logical_sink_needs_its_argument():
    with pytest.raises(Exception, match="logicalSink"):
        validate_parts(None, parse_sink("logicalSink"))


# ---------------------------------------------------------------- sources

def test_logical_source_gets_an_rpc_source_on_an_allocated_port(store):
    config(store, "a", "logicalSource")
    config(store, "b", "logicalSource")
    config(store, "unmapped", "logicalSource")
    run_on(store, "p1", "a", "b")
    assert retranslate(store) == 2
    ports = {translated(store, "a")[0], translated(store, "b")[0]}
    assert ports == {f"rpcSource({FIRST_PORT})", f"rpcSource({FIRST_PORT + 1})"}
    assert translated(store, "a")[1] is None
    assert translated(store, "unmapped") == (None, None)
    # the allocation is remembered: the same port on every run
    before = translated(store, "a")
    assert retranslate(store) == 0
    assert translated(store, "a") == before


def test_two_physical_nodes_on_one_host_get_different_ports(store):
    """Two collector processes on one host (two physical nodes with the same registered
    host) cannot both listen on the first port; nodes on other hosts may reuse it."""
    for name in ("c1", "c2", "c3"):
        config(store, name, "autoCollectorSource", 'collectorSink("/d", "p")')
    run_on(store, "p1", "c1", host="10.0.0.7")
    run_on(store, "p2", "c2", host="10.0.0.7")
    run_on(store, "p3", "c3", host="10.0.0.8")
    retranslate(store)
    assert {translated(store, "c1")[0], translated(store, "c2")[0]} == {
        f"collectorSource({FIRST_PORT})", f"collectorSource({FIRST_PORT + 1})"}
    assert translated(store, "c3")[0] == f"collectorSource({FIRST_PORT})"


def test_auto_collector_source_gets_a_collector_source(store):
    config(store, "c", "autoCollectorSource", 'collectorSink("/d", "p")')
    run_on(store, "p1", "c")
    retranslate(store)
    assert translated(store, "c") == (f"collectorSource({FIRST_PORT})", None)


def test_plain_specs_are_left_alone(store):
    config(store, "plain", 'text("/etc/hosts")', 'console')
    run_on(store, "p1", "plain")
    assert retranslate(store) == 0
    assert translated(store, "plain") == (None, None)


# ---------------------------------------------------------------- logicalSink

def test_logical_sink_points_at_where_the_target_runs(store):
    config(store, "target", "logicalSource")
    config(store, "sender", "null", 'logicalSink("target")')
    run_on(store, "p1", "target", host="10.0.0.7")
    retranslate(store)
    port = store.port_of("p1", "target")
    assert translated(store, "target")[0] == f"rpcSource({port})"
    assert translated(store, "sender") == (None, f'rpcSink("10.0.0.7", {port})')


def test_logical_sink_to_an_explicit_rpc_source_or_a_non_rpc_node(store):
    config(store, "rpc", "rpcSource(4444)")
    config(store, "col", "collectorSource")
    config(store, "tail", 'text("/x")')
    run_on(store, "p1", "rpc", "col", "tail", host="h1")
    for target in ("rpc", "col", "tail"):
        config(store, f"to-{target}", "null", f'logicalSink("{target}")')
    retranslate(store)
    assert translated(store, "to-rpc")[1] == 'rpcSink("h1", 4444)'
    assert translated(store, "to-col")[1] == f'rpcSink("h1", {FIRST_PORT})'
    assert translated(store, "to-tail")[1] == (
        'fail("logicalSink tail: tail does not receive over RPC (its source is text; '
        'use logicalSource)")')


@pytest.mark.parametrize("case", ["unknown", "unmapped", "dead"])
def test_logical_sink_to_a_node_not_running_fails(store, case):
    if case != "unknown":
        config(store, "x", "logicalSource")
    if case == "dead":
        store.map("p-gone", "x")   # mapped, but no live physical node p-gone
    config(store, "sender", "null", 'logicalSink("x")')
    retranslate(store)
    assert translated(store, "sender")[1] == 'fail("logicalSink x: x is not running anywhere")'


def test_logical_sink_follows_its_target_when_it_comes_up(store):
    config(store, "x", "logicalSource")
    config(store, "sender", "null", 'logicalSink("x")')
    retranslate(store)
    assert translated(store, "sender")[1].startswith("fail(")
    run_on(store, "p2", "x", host="h2")
    assert retranslate(store, ["x"]) == 2   # dependents: the sender follows
    assert translated(store, "sender")[1] == f'rpcSink("h2", {store.port_of("p2", "x")})'


# ---------------------------------------------------------------- auto chains

@pytest.mark.parametrize("auto,agent", [("autoE2EChain", "agentE2EChain"),
                                        ("autoDFOChain", "agentDFOChain"),
                                        ("autoBEChain", "agentBEChain")])
def test_auto_chain_expands_to_three_collectors_of_the_flow(store, auto, agent):
    for c in ("c1", "c2", "c3", "c4"):
        add_collector(store, c)
    config(store, "agent", 'text("/x")', auto)
    retranslate(store)
    world = World.load(store)
    chain = world.chain("agent")
    assert len(chain) == 3 and len(set(chain)) == 3
    endpoints = [f"host-p-{c}:{store.port_of(f'p-{c}', c)}" for c in chain]
    assert translated(store, "agent") == (
        None, f"{agent}(" + ", ".join(f'"{e}"' for e in endpoints) + ")")
    assert chains(world) == {"f": {"agent": chain}}


def test_short_pool_gives_a_short_chain_and_no_pool_fails(store):
    config(store, "agent", "null", "autoBEChain", flow="lonely")
    retranslate(store)
    assert translated(store, "agent")[1] == 'fail("no collectors in flow lonely")'
    # a configured collector that runs nowhere is not in the pool
    config(store, "c1", "autoCollectorSource", "null", flow="lonely")
    retranslate(store)
    assert translated(store, "agent")[1] == 'fail("no collectors in flow lonely")'
    run_on(store, "pc", "c1", host="hc")
    retranslate(store)
    assert translated(store, "agent")[1] == f'agentBEChain("hc:{FIRST_PORT}")'


def test_chains_stay_within_the_flow(store):
    for c in ("a1", "a2", "a3"):
        add_collector(store, c, flow="A")
    for c in ("b1", "b2"):
        add_collector(store, c, flow="B")
    for i in range(20):
        config(store, f"agentA{i}", "null", "autoE2EChain", flow="A")
        config(store, f"agentB{i}", "null", "autoDFOChain", flow="B")
    retranslate(store)
    got = chains(World.load(store))
    assert set(got) == {"A", "B"}
    assert all(set(ch) == {"a1", "a2", "a3"} for ch in got["A"].values())
    assert all(set(ch) == {"b1", "b2"} for ch in got["B"].values())
    b_ports = {f"host-p-{c}:{store.port_of(f'p-{c}', c)}" for c in ("b1", "b2")}
    for i in range(20):
        tsink = translated(store, f"agentB{i}")[1]
        assert tsink.startswith("agentDFOChain(")
        assert {s.strip(' "') for s in tsink[len("agentDFOChain("):-1].split(",")} == b_ports


def test_a_tiered_collector_never_chains_to_itself(store):
    for c in ("c1", "c2"):
        add_collector(store, c)
    config(store, "tier", "autoCollectorSource", "autoBEChain")
    run_on(store, "pt", "tier", host="ht")
    retranslate(store)
    tsource, tsink = translated(store, "tier")
    assert tsource == f"collectorSource({FIRST_PORT})"
    assert "ht:" not in tsink and tsink.count(":") == 2
    assert "tier" not in chains(World.load(store))["f"]["tier"]
    assert "tier" in World.load(store).chain("c1")   # but others may chain to it


def test_nested_components_are_translated_in_place(store):
    add_collector(store, "c1")
    config(store, "target", "logicalSource")
    run_on(store, "pt", "target", host="ht")
    sinks = {
        "deco": "{ batch(10) => gzip => autoBEChain }",
        "fan": '[ console, < autoE2EChain ? logicalSink("target") > ]',
        "roll": "roll(1000) { autoDFOChain }",
        "let": "let x := autoBEChain in [ x, x ]",
        "shadow": "let autoBEChain := console in autoBEChain",
    }
    for name, sink in sinks.items():
        config(store, name, "null", sink)
    retranslate(store)
    c1 = f'"host-p-c1:{FIRST_PORT}"'
    tport = store.port_of("pt", "target")
    assert translated(store, "deco")[1] == f"{{ batch(10) => gzip => agentBEChain({c1}) }}"
    assert translated(store, "fan")[1] == (
        f'[ console, < agentE2EChain({c1}) ? rpcSink("ht", {tport}) > ]')
    assert translated(store, "roll")[1] == f"roll(1000) {{ agentDFOChain({c1}) }}"
    assert translated(store, "let")[1] == f"let x := agentBEChain({c1}) in [ x, x ]"
    # a let-bound name is a reference, not the component of the same name
    assert translated(store, "shadow") == (None, None)
    for name in ("deco", "fan", "roll", "let"):
        parse_sink(translated(store, name)[1])   # still a valid spec


# ---------------------------------------------------------------- consistent hashing

def _agents(store, n=100):
    store.put_many([LogicalConfig(f"agent{i:03d}", "null", "autoE2EChain", "f")
                    for i in range(n)])


def _assert_insertion_only(before, after, new):
    """Every chain that changed now holds ``new``; the old collectors keep their order."""
    changed = 0
    for agent, old in before.items():
        cur = after[agent]
        if cur == old:
            continue
        changed += 1
        assert new in cur, (agent, old, cur)
        rest = [c for c in cur if c != new]
        assert rest == old[:len(rest)], (agent, old, cur)   # one left the tail, none moved
    return changed


def test_adding_collectors_moves_only_a_minority_of_assignments(store):
    for c in ("c1", "c2", "c3"):
        add_collector(store, c)
    _agents(store)
    retranslate(store)
    for new in ("c4", "c5"):
        before = chains(World.load(store))["f"]
        add_collector(store, new)
        written = retranslate(store)
        after = chains(World.load(store))["f"]
        changed = _assert_insertion_only(before, after, new)
        primaries = sum(before[a][0] != after[a][0] for a in before)
        # a chain of 3 out of n collectors holds the new one with probability 3/n (any
        # balanced scheme must give it that share); each change swaps one member only, so
        # assignments moved = changed / (3 * 100), and primaries moved ~ 1/n
        assert 0 < changed < 100
        assert 0 < primaries < 40, primaries
        assert changed / 300 < 0.34
        assert all(after[a][0] == new for a in before if before[a][0] != after[a][0])
        assert written == changed + 1           # the changed agents and the new collector
    # every collector of the pool got a fair share of primaries
    share = Counter(ch[0] for ch in after.values())
    assert set(share) == {"c1", "c2", "c3", "c4", "c5"}
    assert min(share.values()) >= 5


@pytest.mark.parametrize("how", ["unconfig", "unmap", "dies"])
def test_removing_a_collector_changes_only_chains_that_held_it(store, how):
    for c in ("c1", "c2", "c3", "c4", "c5"):
        add_collector(store, c)
    _agents(store, 60)
    retranslate(store)
    before = chains(World.load(store))["f"]
    if how == "unconfig":
        store.delete_logical("c3")
    elif how == "unmap":
        store.unmap("p-c3", "c3")
    else:
        store.zk.delete(store.physical_path("p-c3"))   # its ephemeral znode went away
    retranslate(store)
    after = chains(World.load(store))["f"]
    holders = {a for a, ch in before.items() if "c3" in ch}
    assert 0 < len(holders) < 60
    for agent, old in before.items():
        if agent not in holders:
            assert after[agent] == old
        else:
            kept = [c for c in old if c != "c3"]
            assert "c3" not in after[agent] and after[agent][:len(kept)] == kept
    c3_endpoint = f"host-p-c3:{FIRST_PORT}"
    assert not any(c3_endpoint in (translated(store, a)[1] or "") for a in before)


def test_ring_is_the_same_in_another_process():
    names = [f"collector-{i}" for i in range(7)]
    agents = [f"agent-{i}" for i in range(50)]
    ring = HashRing(names)
    here = {a: ring.walk(a, 3) for a in agents}
    code = ("import json, sys; from master.translate import HashRing; "
            f"r = HashRing({names!r}); "
            f"print(json.dumps({{a: r.walk(a, 3) for a in {agents!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={"PYTHONHASHSEED": "12345"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == here


def test_flows_view(store):
    add_collector(store, "c1")
    config(store, "c2", "autoCollectorSource", "null")   # configured, runs nowhere
    config(store, "agent", "null", "{ batch(5) => autoBEChain }")
    config(store, "other", "null", "console")
    config(store, "elsewhere", "null", "console", flow="g")
    world = World.load(store)
    assert flows(world) == {
        "f": {"agents": ["agent"], "collectors": ["c1", "c2"], "pool": ["c1"],
              "others": ["other"]},
        "g": {"agents": [], "collectors": [], "pool": [], "others": ["elsewhere"]},
    }
    assert chains(world) == {"f": {"agent": ["c1"]}}


# ---------------------------------------------------------------- storing

def _expected(store):
    world = World.load(store)
    return {n: translate_config(c, world, store) for n, c in world.configs.items()}


def _stored(store):
    return {n: (c.tsource, c.tsink) for n, c in store.list_logical().items()}


def test_retranslate_is_idempotent_and_resets_dropped_translations(store):
    for c in ("c1", "c2"):
        add_collector(store, c)
    config(store, "agent", "null", "autoBEChain")
    assert retranslate(store) == 3
    assert retranslate(store) == 0
    # a node no longer translated loses a translation left from before
    config(store, "agent", "null", "console")
    cfg = store.get_logical("agent")
    assert store.set_translation("agent", None, 'agentBEChain("gone:1")', cfg.version)
    assert retranslate(store, ["agent"]) == 1
    assert translated(store, "agent") == (None, None)
    assert retranslate(store) == 0


def test_a_config_changed_after_the_snapshot_is_never_stored_stale(store):
    for c in ("c1", "c2", "c3"):
        add_collector(store, c)
    for i in range(10):
        config(store, f"agent{i}", "null", "autoBEChain")
    stale = World.load(store)
    # between the snapshot and the writes: an agent changes mode, a collector leaves
    config(store, "agent0", "null", "autoE2EChain")
    config(store, "c2", "null", "console")
    # first pass: c1, c3 and agents 1-9 written (stale chains), agent0 and c2 lose their
    # compare-and-set; from a fresh snapshot: agent0, and agents 1-9 again without c2
    assert retranslate(store, world=stale) == 2 + 9 + 1 + 9
    assert translated(store, "agent0")[1].startswith("agentE2EChain(")
    assert _stored(store) == _expected(store)
    c2_endpoint = f"host-p-c2:{FIRST_PORT}"
    assert not any(c2_endpoint in (ts or "") for _, ts in _stored(store).values())
    assert retranslate(store) == 0


def test_a_stale_snapshot_is_corrected_by_the_next_run(store):
    for c in ("c1", "c2", "c3"):
        add_collector(store, c)
    for i in range(10):
        config(store, f"agent{i}", "null", "autoDFOChain")
    retranslate(store)
    stale = World.load(store)
    config(store, "c1", "null", "console")
    store.delete_logical("agent3")
    config(store, "agent4", "null", 'logicalSink("c2")')
    retranslate(store, world=stale)   # computed from the old world: must not raise
    retranslate(store)
    assert _stored(store) == _expected(store)
    assert translated(store, "agent4")[1] == f'rpcSink("host-p-c2", {FIRST_PORT})'
    assert retranslate(store) == 0


class _CountingClient:
    """The real kazoo client, counting the reads the translator makes."""

    def __init__(self, zk):
        self._zk = zk
        self.reads = Counter()

    def __getattr__(self, name):
        attr = getattr(self._zk, name)
        if name in ("get", "get_children", "exists"):
            def counted(*args, **kwargs):
                self.reads[name] += 1
                return attr(*args, **kwargs)
            return counted
        return attr


def test_retranslate_reads_each_znode_a_few_times_not_once_per_node(zk_client, zk_root):
    setup = ConfigStore(zk_client, zk_root)
    setup.ensure_layout()
    try:
        for c in range(5):
            add_collector(setup, f"c{c}")
        n = 500   # the bound is linear: 1,000 behaves the same, twice as slow
        cfgs = [LogicalConfig(f"agent{i:04d}", "null", "{ batch(10) => autoE2EChain }", "f")
                for i in range(n - 100)]
        cfgs += [LogicalConfig(f"plain{i:04d}", "null", "console", "f") for i in range(100)]
        setup.put_many(cfgs)
        counting = _CountingClient(zk_client)
        store = ConfigStore(counting, zk_root)
        started = time.monotonic()
        assert retranslate(store) == n - 100 + 5
        first = sum(counting.reads.values())
        counting.reads.clear()
        assert retranslate(store) == 0
        second = sum(counting.reads.values())
        elapsed = time.monotonic() - started
        # a snapshot is about one read per znode; each write adds one read (the CAS)
        assert second < n + 50, counting.reads
        assert first < 2 * n + 100
        assert elapsed < 30
    finally:
        setup.remove_tree()
