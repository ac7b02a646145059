"""Counters stay monotonic for the life of the process: rolls replace the inner sink and
reconfigurations replace the whole flow, and neither takes a counter back."""
from __future__ import annotations

import threading

import pytest

from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.metrics import components, summarize
from flume_og.node.sinks import collect
from flume_og.node.sources import memory
from flume_og.node.spec import parse_sink, parse_source
from tests.waiting import wait_until

ROLL = 'roll(50, checkmillis=10) { collect("mono") }'


def _counters(node: LogicalNode) -> dict:
    """Every counter of ``node`` by (path, name), with the logical node's summary."""
    st = node.status()
    out = {("logical", k): v for k, v in summarize(st).items()
           if k in ("events_in", "events_out", "bytes_in")}
    for path, rep in components(st):
        for k, v in (rep.get("metrics") or {}).items():
            if k in ("events_in", "rolls"):
                out[(path, k)] = v
    return out


@pytest.mark.parametrize("kind", ["roll", "collectorSink"])
def test_counters_never_decrease_across_rolls_and_a_reconfiguration(tmp_path, kind):
    collect.reset("mono")
    out = tmp_path / "out"
    sink = ROLL if kind == "roll" else f'collectorSink("{out}", "x-", 50)'
    written = ((lambda: len(collect.collected("mono"))) if kind == "roll" else
               (lambda: sum(f.read_bytes().count(b"\n") for f in out.rglob("x-*")
                            if f.is_file())))
    node = LogicalNode("n", tmp_path / "data")
    node.configure(parse_source('memory("mono")'), parse_sink(sink))
    seen: dict = {}
    drops: list = []
    stop = threading.Event()

    def watch():
        # scrape as fast as Prometheus never would, to catch a reset between two rolls
        while not stop.is_set():
            for key, v in _counters(node).items():
                if v < seen.get(key, 0):
                    drops.append((key, seen[key], v))
                seen[key] = max(v, seen.get(key, 0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for i in range(30):
            memory.push("mono", [b"x"] * 5)
            if i == 15:   # the same spec again: a new flow, new component objects
                node.configure(parse_source('memory("mono")'), parse_sink(sink))
                assert node.state is State.ACTIVE
            wait_until(lambda: node.status()["events_in"] == 5 * (i + 1), timeout=10)
            stop.wait(0.02)   # let a roll happen between batches
    finally:
        stop.set()
        watcher.join(5)
        node.stop(5)
    final = _counters(node)
    assert not drops, drops
    assert written() == 150
    assert final[("logical", "events_in")] == 150
    assert final[("logical", "events_out")] == 150
    if kind == "roll":
        assert final[("sink/roll/collect", "events_in")] == 150
    assert final[(f"sink/{kind}", "rolls")] >= 5     # several instances were replaced


def test_durations_are_histograms_kept_across_rolls_and_exported(tmp_path):
    """The WAL's write+fsync, the E2E acknowledgement and the roll's close are observed
    in histograms; the roll's inner histograms are carried like its counters."""
    from prometheus_client.parser import text_string_to_metric_families

    from flume_og.node.metrics import prometheus_text
    collect.reset("hist")
    node = LogicalNode("n", tmp_path)
    node.configure(parse_source('memory("hist")'),
                   parse_sink('roll(60000) { ackedWriteAhead(1000, 50) collect("hist") }'))
    roll = node._flow.sink
    for i in range(3):
        memory.push("hist", [b"x"] * 4)
        wait_until(lambda: len(collect.collected("hist")) == 4 * (i + 1), timeout=10)
        roll.roll_now()
    try:
        text = prometheus_text({"physical": "p", "logical": {"n": node.status()}})
    finally:
        node.stop(5)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("wal_sync_seconds", "ack_seconds", "roll_seconds"):
        fam = fams[f"flume_component_{name}"]
        assert fam.type == "histogram", name
        count = next(s.value for s in fam.samples if s.name.endswith("_count"))
        inf = next(s.value for s in fam.samples if s.labels.get("le") == "+Inf")
        assert count == inf > 0, name
    # three instances, each acknowledged 4 events in at least one group
    acks = fams["flume_component_ack_seconds"]
    assert next(s.value for s in acks.samples if s.name.endswith("_count")) >= 3
    assert next(s.value for s in fams["flume_component_roll_seconds"].samples
                if s.name.endswith("_count")) == 3


def test_a_retired_chain_shows_no_target_nor_collectors_down(tmp_path):
    """Once a flow stops, its reports keep their shape (for the carried counters) but not
    what only a running chain sees: the console would draw edges to a collector the node
    no longer reaches, or a collector as down."""
    from flume_og.node.metrics import hollow
    rep = {"name": "agentBEChain", "kind": "sink", "metrics": {"events_out": 5},
           "target": "h:1", "down": ["h:2"],
           "children": [{"name": "collectors", "kind": "sink", "metrics": {},
                         "target": "h:1", "down": ["h:2"]}]}
    out = hollow(rep)
    assert "target" not in out and "down" not in out
    assert "target" not in out["children"][0] and "down" not in out["children"][0]
    assert out["metrics"] == {} and out["name"] == "agentBEChain"
