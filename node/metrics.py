"""Counters of logical nodes: summaries of component reports and the Prometheus text format.

A logical node's ``components`` report (``Component.report()``: ``{name, kind, metrics,
children}``, one tree for the source and one for the sink) is summarised into the
counters the master and the consoles show:

* ``events_in`` / ``bytes_in``: what the driver took from the source;
* ``events_out`` / ``bytes_out``: what the leaf sinks (sinks without children) wrote —
  a leaf's own ``events_out`` when it counts one (a network sink: sent), else its
  ``events_in``; so a fan-out to two files counts every event twice, as it wrote it twice;
* ``errors``: the sum over every component;
* every other numeric counter (WAL and spool sizes, acknowledgements pending and done,
  rolls...) summed by name over the components -- but a gauge of what is left
  (:data:`LEAST`, the free bytes of a data directory's disk) is the least of them, as the
  components may share one disk, and an age (:data:`MOST`, ``oldest_unacked_seconds``) the
  greatest.

Nothing here does I/O but the process metrics (``/proc``); the exposition format 0.0.4
is rendered by ``prometheus_client`` from collectors (:class:`NodeCollector`) over these
counters. Counters never go down (:func:`fold`, :func:`carry`); docs/metrics.md lists
every metric.
"""
from __future__ import annotations

import bisect
import math
import platform
import re
import threading
import time
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version as dist_version

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

MAIN = ("events_in", "bytes_in", "events_out", "bytes_out", "errors")
LEAST = ("disk_free_bytes",)
#: Gauges whose summary is the greatest of them (an age: the oldest wait of any component).
MOST = ("oldest_unacked_seconds",)
#: Component metrics that say how much there is now (they go down as well as up); every
#: other numeric component metric is a counter, monotonic for the life of the process.
GAUGES = frozenset({"acks_pending", "oldest_unacked_seconds", "watermark", "wal_bytes",
                    "wal_groups", "wal_events",
                    "spool_bytes", "disk_free_bytes", "batch_ids", "connections_open",
                    "count", "exitcode", "unknown_pending"})
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


#: Upper bounds (seconds) of the buckets of every duration histogram: 1 ms to 1 min.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)


class Histogram:
    """Durations in seconds counted in the fixed buckets :data:`LATENCY_BUCKETS` (and one
    past the last): fixed memory whatever is observed. Thread-safe."""

    def __init__(self):
        self._counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(LATENCY_BUCKETS, seconds)   # the first bound >= seconds
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    @contextmanager
    def time(self):
        """Observe how long the ``with`` block took (also when it raised)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.observe(time.monotonic() - start)

    def snapshot(self) -> dict:
        """``{"counts": [per bucket, the last past every bound], "sum": seconds}``."""
        with self._lock:
            return {"counts": list(self._counts), "sum": self._sum}


def _merged(a: dict | None, b: dict) -> dict:
    """Two histogram snapshots added (``a`` may be None)."""
    if not a:
        return {"counts": list(b["counts"]), "sum": b["sum"]}
    return {"counts": [x + y for x, y in zip(a["counts"], b["counts"])],
            "sum": a["sum"] + b["sum"]}


def _histograms(rep: dict) -> dict:
    """The well-formed histogram snapshots of a component report."""
    hists = rep.get("histograms")
    if not isinstance(hists, dict):
        return {}
    return {k: v for k, v in hists.items() if isinstance(v, dict)
            and isinstance(v.get("counts"), list) and len(v["counts"]) ==
            len(LATENCY_BUCKETS) + 1 and all(_number(c) for c in v["counts"])
            and _number(v.get("sum"))}


def own_report(name: str, kind: str, metrics: dict, histograms: dict) -> dict:
    """A component report without children: ``{name, kind, metrics}`` and, when it has
    any, ``histograms`` (snapshots by name)."""
    out = {"name": name, "kind": kind, "metrics": dict(metrics)}
    if histograms:
        out["histograms"] = {k: h.snapshot() for k, h in list(histograms.items())}
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _child_path(path: str, i: int, child: dict, siblings: int) -> str:
    seg = str(child.get("name", "?"))
    return f"{path}/{i}.{seg}" if siblings > 1 else f"{path}/{seg}"


def walk(report: dict | None, path: str):
    """``(path, component report)`` for ``report`` and every descendant, depth first.
    A child's path segment is its name, prefixed by its index among several siblings."""
    if not isinstance(report, dict):
        return
    yield path, report
    kids = report.get("children") or []
    for i, child in enumerate(kids):
        if isinstance(child, dict):
            yield from walk(child, _child_path(path, i, child, len(kids)))


# ---------------------------------------------------------------- carried totals
# A component object lives as long as its flow or its roll period, but its counters must
# not go back to zero with it (Prometheus' rate() would read a reset). Whoever replaces
# component objects (a roll, a logical node's reconfiguration) folds the counters of the
# ones it retires into ``carried`` ({path: {counter: total}}) and reports the live ones
# with :func:`carry`, so a counter at one path only ever grows.

def fold(carried: dict, report: dict | None, path: str = "") -> None:
    """Add the counters (not the :data:`GAUGES`) of ``report`` and its descendants into
    ``carried``, by path (see :func:`walk`) under ``path``."""
    for p, rep in walk(report, path):
        metrics = rep.get("metrics") or {}
        if isinstance(metrics, dict):
            for k, v in metrics.items():
                if _number(v) and k not in GAUGES:
                    into = carried.setdefault(p, {})
                    into[k] = into.get(k, 0) + v
        for k, snap in _histograms(rep).items():
            into = carried.setdefault(p, {})
            into[k] = _merged(into.get(k), snap)


def carry(report: dict, carried: dict, path: str = "") -> dict:
    """A copy of ``report`` whose counters and histograms include the totals ``carried``
    holds for the same paths (one the live component has not counted yet appears too)."""
    if not carried or not isinstance(report, dict):
        return report
    out = dict(report)
    extra = carried.get(path)
    if extra:
        metrics = dict(report.get("metrics") or {})
        hists = _histograms(report)
        for k, v in extra.items():
            if isinstance(v, dict):
                hists[k] = _merged(v, hists[k]) if k in hists else v
            else:
                metrics[k] = metrics.get(k, 0) + v
        out["metrics"] = metrics
        if hists:
            out["histograms"] = hists
    kids = report.get("children") or []
    if kids:
        out["children"] = [carry(c, carried, _child_path(path, i, c, len(kids)))
                           if isinstance(c, dict) else c for i, c in enumerate(kids)]
    return out


def hollow(report: dict) -> dict:
    """``report``'s tree without any metric: the shape a retired component leaves for
    :func:`carry` to fill with its carried counters."""
    out = {**report, "metrics": {}}
    out.pop("histograms", None)
    # what a running chain sees now (the collector it reaches, those it finds down): a
    # retired one reaches nothing, and the console must not draw it
    out.pop("target", None)
    out.pop("down", None)
    if report.get("children"):
        out["children"] = [hollow(c) for c in report["children"] if isinstance(c, dict)]
    return out


def components(status: dict) -> list[tuple[str, dict]]:
    """Every component of a logical node's status, as ``(path, report)``; the roots are
    ``source/NAME`` and ``sink/NAME``."""
    comps = status.get("components")
    if not isinstance(comps, dict):
        return []
    out = []
    for root in ("source", "sink"):
        rep = comps.get(root)
        if isinstance(rep, dict):
            out.extend(walk(rep, f"{root}/{rep.get('name', '?')}"))
    return out


def summarize(status: dict) -> dict:
    """The counters of one logical node (see the module docstring) from its status
    (``LogicalNode.status()``)."""
    out = {"events_in": int(status.get("events_in") or 0),
           "bytes_in": int(status.get("bytes_in") or 0),
           "events_out": 0, "bytes_out": 0, "errors": 0}
    other: dict[str, float] = {}
    for path, rep in components(status):
        metrics = rep.get("metrics") or {}
        if not isinstance(metrics, dict):
            continue
        out["errors"] += metrics.get("errors", 0) if _number(metrics.get("errors")) else 0
        if path.startswith("sink/") and rep.get("kind") == "sink" and not rep.get("children"):
            sent = metrics.get("events_out")
            written = sent if _number(sent) else metrics.get("events_in")
            out["events_out"] += written if _number(written) else 0
            nbytes = metrics.get("bytes_out")
            out["bytes_out"] += nbytes if _number(nbytes) else 0
        for k, v in metrics.items():
            if k in LEAST and _number(v):
                other[k] = min(other.get(k, v), v)
            elif k in MOST and _number(v):
                other[k] = max(other.get(k, v), v)
            elif k not in MAIN and _number(v):
                other[k] = other.get(k, 0) + v
    out.update(sorted(other.items()))
    return out


# ---------------------------------------------------------------- Prometheus
# Rendered by prometheus_client from collectors that read the counters when scraped; a
# registry per server (never the library's global one), so nodes sharing a process keep
# their metrics apart.

#: Component metrics whose unit is not the base unit: name -> (exported name, factor).
_UNITS = {"throttled_ms": ("throttled_seconds", 0.001)}
_COMPONENT_LABELS = ["physical", "logical", "component", "kind", "path"]
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(text: str) -> str:
    name = _NAME_BAD.sub("_", text)
    return name if name and not name[0].isdigit() else "_" + name


def version() -> str:
    """This installation's version (``flume --version``), "unknown" outside one."""
    try:
        return dist_version("flume-og")
    except PackageNotFoundError:
        return "unknown"


class BuildCollector:
    """``flume_build_info{version, python}``: always 1."""

    def collect(self):
        fam = GaugeMetricFamily("flume_build_info", "The version of Flume this process runs "
                                "(always 1).", labels=["version", "python"])
        fam.add_metric([version(), platform.python_version()], 1)
        yield fam


def registry(*collectors):
    """A new ``CollectorRegistry`` with the process (``process_*``) and build metrics and
    ``collectors``."""
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    reg.register(BuildCollector())
    for c in collectors:
        reg.register(c)
    return reg


def exposition(reg) -> bytes:
    """The text format 0.0.4 (:data:`PROMETHEUS_CONTENT_TYPE`) of registry ``reg``."""
    return generate_latest(reg)


class _Families:
    """Metric families by name, made on first use."""

    def __init__(self):
        self.by_name: dict = {}

    def counter(self, name: str, help_text: str, labels: list[str]):
        return self._get(CounterMetricFamily, name, help_text, labels)

    def gauge(self, name: str, help_text: str, labels: list[str]):
        return self._get(GaugeMetricFamily, name, help_text, labels)

    def histogram(self, name: str, help_text: str, labels: list[str]):
        return self._get(HistogramMetricFamily, name, help_text, labels)

    def _get(self, cls, name, help_text, labels):
        fam = self.by_name.get(name)
        if fam is None:
            fam = self.by_name[name] = cls(name, help_text, labels=labels)
        return fam


def node_families(status: dict) -> list:
    """The metric families of a physical node's status (``logical`` maps names to
    ``LogicalNode.status()`` dicts carrying ``counters`` and ``components``; the status
    page's refusals in ``status_page``). Counters are named ``*_total``; the component
    metrics in :data:`GAUGES` are gauges; times are in seconds."""
    physical = str(status.get("physical", ""))
    fams = _Families()
    fams.gauge("flume_node_info", "This physical node (always 1).",
               ["physical", "host"]).add_metric([physical, str(status.get("host", ""))], 1)
    logical = status.get("logical") or {}
    for name in sorted(logical):
        st = logical[name]
        base = [physical, str(name)]
        fams.gauge("flume_logical_node_state", "The state of each logical node: 1 for the "
                   "state it is in.", ["physical", "logical", "state"]).add_metric(
            base + [str(st.get("state", ""))], 1)
        if _number(st.get("version")):
            fams.gauge("flume_logical_node_spec_version", "The spec version each logical "
                       "node runs.", ["physical", "logical"]).add_metric(base, st["version"])
        counters = st.get("counters") or summarize(st)
        for key in MAIN:
            fams.counter(f"flume_logical_{key}", f"{key.replace('_', ' ').capitalize()} "
                         f"of each logical node (see docs/metrics.md).",
                         ["physical", "logical"]).add_metric(base, counters.get(key, 0))
        for path, rep in components(st):
            labels = base + [str(rep.get("name", "?")), str(rep.get("kind", "?")), path]
            for key, v in sorted((rep.get("metrics") or {}).items()):
                if not _number(v):
                    continue
                exported, factor = _UNITS.get(key, (key, 1))
                mname = f"flume_component_{metric_name(exported)}"
                if key in GAUGES:
                    fam = fams.gauge(mname, f"Component gauge {key}.", _COMPONENT_LABELS)
                else:
                    fam = fams.counter(mname, f"Component counter {key}.", _COMPONENT_LABELS)
                fam.add_metric(labels, v * factor)
            for key, snap in sorted(_histograms(rep).items()):
                fam = fams.histogram(f"flume_component_{metric_name(key)}",
                                     f"Component histogram {key}.", _COMPONENT_LABELS)
                cum, buckets = 0, []
                for bound, n in zip(LATENCY_BUCKETS + (math.inf,), snap["counts"]):
                    cum += n
                    buckets.append(("+Inf" if bound == math.inf else repr(bound), cum))
                fam.add_metric(labels, buckets, snap["sum"])
    refused = {k[len("refused_"):]: v for k, v in (status.get("status_page") or {}).items()
               if k.startswith("refused_")}
    if refused:
        fam = fams.counter("flume_status_page_refused", "Connections and requests the status "
                           "page refused, by reason.", ["physical", "reason"])
        for reason, v in sorted(refused.items()):
            fam.add_metric([physical, reason], v)
    return list(fams.by_name.values())


class NodeCollector:
    """A prometheus_client collector over ``status()`` (a physical node's status, read once
    per scrape): :func:`node_families`."""

    def __init__(self, status):
        self.status = status

    def collect(self):
        return node_families(self.status())


def prometheus_text(status: dict) -> str:
    """The exposition text of a physical node's ``status`` (:func:`node_families`), without
    the process and build metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(lambda: status))
    return exposition(reg).decode()


__all__ = ["Histogram", "LATENCY_BUCKETS", "own_report", "summarize", "components", "walk", "fold", "carry", "hollow", "node_families",
           "NodeCollector", "BuildCollector", "registry", "exposition", "prometheus_text",
           "metric_name", "version", "PROMETHEUS_CONTENT_TYPE", "MAIN", "GAUGES"]
