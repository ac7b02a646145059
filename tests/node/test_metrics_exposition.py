"""/metrics of a node's status page: typed families, units, process and build metrics, a
registry per server; ``promtool check metrics`` accepts it."""
from __future__ import annotations

import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flume_og.node.metrics import GAUGES, Histogram, prometheus_text, version
from flume_og.node.status_server import StatusServer
from tests.node.test_status_server import status_fixture

pytestmark = pytest.mark.timeout(60)

HISTOGRAMS = ("batch_send_seconds", "ack_seconds", "wal_sync_seconds", "roll_seconds")


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape(server: StatusServer) -> str:
    r = httpx.get(server.url + "metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


def with_gauges() -> dict:
    """The fixture with gauges, a time in ms and every histogram the product observes."""
    st = status_fixture()
    comp = st["logical"]["web"]["components"]["sink"]["children"][1]["children"][0]
    comp["metrics"].update({"acks_pending": 3, "watermark": 17, "throttled_ms": 1500,
                            "refused": 2})
    h = Histogram()
    for seconds in (0.0005, 0.003, 0.003, 2.0, 100.0):
        h.observe(seconds)
    comp["histograms"] = {name: h.snapshot() for name in HISTOGRAMS}
    return st


def test_every_family_is_typed_counters_end_in_total_and_gauges_are_gauges():
    fams = families(prometheus_text(with_gauges()))
    assert fams, "no family at all"
    for name, fam in fams.items():
        assert fam.type in ("counter", "gauge", "histogram"), (name, fam.type)
        for s in fam.samples:
            if fam.type == "counter":
                assert s.name.endswith("_total"), s.name
    for g in ("acks_pending", "watermark", "wal_bytes"):
        assert fams[f"flume_component_{g}"].type == "gauge"
    assert fams["flume_component_events_in"].type == "counter"
    assert fams["flume_component_refused"].type == "counter"
    # a time in milliseconds is exported in seconds, under a name that says so
    assert "flume_component_throttled_ms" not in fams
    [s] = fams["flume_component_throttled_seconds"].samples
    assert s.name == "flume_component_throttled_seconds_total" and s.value == 1.5


def test_histograms_have_cumulative_buckets_sum_and_count():
    fams = families(prometheus_text(with_gauges()))
    for name in HISTOGRAMS:
        fam = fams[f"flume_component_{name}"]
        assert fam.type == "histogram"
        buckets = {s.labels["le"]: s.value for s in fam.samples if s.name.endswith("_bucket")}
        assert buckets["0.001"] == 1 and buckets["0.005"] == 3 and buckets["2.5"] == 4
        assert buckets["60.0"] == 4 and buckets["+Inf"] == 5
        [count] = [s.value for s in fam.samples if s.name.endswith("_count")]
        [total] = [s.value for s in fam.samples if s.name.endswith("_sum")]
        assert count == 5 and total == pytest.approx(102.0065)


def test_a_component_counter_is_never_exported_as_a_gauge_nor_the_reverse():
    fams = families(prometheus_text(with_gauges()))
    for name, fam in fams.items():
        if name.startswith("flume_component_") and fam.type != "histogram":
            key = name[len("flume_component_"):]
            assert (fam.type == "gauge") == (key in GAUGES), name


def test_the_page_serves_process_and_build_metrics_from_a_registry_of_its_own():
    a = StatusServer(lambda: {**status_fixture(), "physical": "pa"}, port=0).start()
    b = StatusServer(lambda: {**status_fixture(), "physical": "pb"}, port=0).start()
    try:
        fa, fb = families(scrape(a)), families(scrape(b))
    finally:
        a.stop()
        b.stop()
    [info] = fa["flume_build_info"].samples
    assert info.labels["version"] == version() != "unknown" and info.value == 1
    assert fa["process_resident_memory_bytes"].samples[0].value > 1_000_000
    assert fa["process_cpu_seconds"].type == "counter"
    # two nodes in one process: each page shows its own node only
    assert {s.labels["physical"] for s in fa["flume_node_info"].samples} == {"pa"}
    assert {s.labels["physical"] for s in fb["flume_node_info"].samples} == {"pb"}


def test_promtool_accepts_the_exposition():
    s = StatusServer(lambda: with_gauges(), port=0).start()
    try:
        text = scrape(s)
    finally:
        s.stop()
    out = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out


def test_docs_list_every_gauge_and_family():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    for g in GAUGES:
        assert f"`{g}`" in doc, g
    for name in families(prometheus_text(with_gauges())):
        if name.startswith("flume_component_"):
            key = name[len("flume_component_"):]
            assert f"`{key}`" in doc, name
        else:
            assert name in doc, name
