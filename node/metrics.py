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
  components may share one disk.

Nothing here does I/O; :func:`prometheus_text` renders the exposition format 0.0.4.
"""
from __future__ import annotations

import math
import re

MAIN = ("events_in", "bytes_in", "events_out", "bytes_out", "errors")
LEAST = ("disk_free_bytes",)
#: Component metrics that say how much there is now (they go down as well as up); every
#: other numeric component metric is a counter, monotonic for the life of the process.
GAUGES = frozenset({"acks_pending", "watermark", "wal_bytes", "wal_groups", "wal_events",
                    "spool_bytes", "disk_free_bytes", "batch_ids", "connections_open",
                    "count", "exitcode"})
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
        if not isinstance(metrics, dict):
            continue
        for k, v in metrics.items():
            if _number(v) and k not in GAUGES:
                into = carried.setdefault(p, {})
                into[k] = into.get(k, 0) + v


def carry(report: dict, carried: dict, path: str = "") -> dict:
    """A copy of ``report`` whose counters include the totals ``carried`` holds for the
    same paths (a counter the live component has not counted yet appears too)."""
    if not carried or not isinstance(report, dict):
        return report
    out = dict(report)
    extra = carried.get(path)
    if extra:
        metrics = dict(report.get("metrics") or {})
        for k, v in extra.items():
            metrics[k] = metrics.get(k, 0) + v
        out["metrics"] = metrics
    kids = report.get("children") or []
    if kids:
        out["children"] = [carry(c, carried, _child_path(path, i, c, len(kids)))
                           if isinstance(c, dict) else c for i, c in enumerate(kids)]
    return out


def hollow(report: dict) -> dict:
    """``report``'s tree without any metric: the shape a retired component leaves for
    :func:`carry` to fill with its carried counters."""
    out = {**report, "metrics": {}}
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
            elif k not in MAIN and _number(v):
                other[k] = other.get(k, 0) + v
    out.update(sorted(other.items()))
    return out


# ---------------------------------------------------------------- Prometheus

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(text: str) -> str:
    name = _NAME_BAD.sub("_", text)
    return name if name and not name[0].isdigit() else "_" + name


def _label(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _value(v) -> str:
    if isinstance(v, float) and not v.is_integer():
        return repr(v)
    return str(int(v))


def prometheus_text(status: dict) -> str:
    """The exposition text of a physical node's status (``logical`` maps names to
    ``LogicalNode.status()`` dicts carrying ``counters`` and ``components``)."""
    physical = status.get("physical", "")
    families: dict[str, tuple[str, str, list[str]]] = {}

    def add(name: str, kind: str, help_text: str, labels: dict, value) -> None:
        fam = families.setdefault(name, (kind, help_text, []))
        fam[2].append(f"{name}{_labels(labels)} {_value(value)}")

    add("flume_node_info", "gauge", "This physical node (always 1).",
        {"physical": physical, "host": status.get("host", "")}, 1)
    logical = status.get("logical") or {}
    for name in sorted(logical):
        st = logical[name]
        base = {"physical": physical, "logical": name}
        add("flume_logical_node_state", "gauge",
            "The state of each logical node: 1 for the state it is in.",
            {**base, "state": st.get("state", "")}, 1)
        if _number(st.get("version")):
            add("flume_logical_node_spec_version", "gauge",
                "The spec version each logical node runs.", base, st["version"])
        counters = st.get("counters") or summarize(st)
        for key in MAIN:
            add(f"flume_logical_{key}_total", "counter",
                f"{key.replace('_', ' ').capitalize()} of each logical node "
                f"(see node.metrics).", base, counters.get(key, 0))
        for path, rep in components(st):
            for key, v in sorted((rep.get("metrics") or {}).items()):
                if _number(v):
                    add(f"flume_component_{metric_name(key)}", "untyped",
                        f"Component counter {key}.",
                        {**base, "component": rep.get("name", "?"),
                         "kind": rep.get("kind", "?"), "path": path}, v)
    lines = []
    for name, (kind, help_text, samples) in families.items():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


__all__ = ["summarize", "components", "walk", "prometheus_text", "metric_name",
           "PROMETHEUS_CONTENT_TYPE", "MAIN"]
