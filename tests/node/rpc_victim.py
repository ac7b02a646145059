"""A receiver under attack, in a process of its own (RSS and thread counts of the tests
are this process's alone).

``python -m tests.node.rpc_victim SOURCE [GIVE_UP]`` runs a logical node ``SOURCE | null``
(``node.rpc.ACCEPT_GIVE_UP`` set to ``GIVE_UP`` seconds when given), prints the source's
port, then answers every line read on stdin with one JSON line: the source's metrics, the
node's state and last error, ``rss`` and ``hwm`` (VmRSS, VmHWM in kB) and ``threads``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from flume_og.node import rpc
from flume_og.node.logical_node import LogicalNode
from flume_og.node.spec import parse_sink, parse_source


def proc_status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return {"rss": out["VmRSS"], "hwm": out["VmHWM"], "threads": out["Threads"]}


def main() -> None:
    if len(sys.argv) > 2:
        rpc.ACCEPT_GIVE_UP = float(sys.argv[2])
    node = LogicalNode("victim", None)
    node.configure(parse_source(sys.argv[1]), parse_sink("null"))
    flow = node._flow
    print(flow.source.port if flow else 0, flush=True)
    for _ in sys.stdin:
        status = node.status()
        src = (status["components"] or {}).get("source", {})
        print(json.dumps({"metrics": src.get("metrics", {}), "state": status["state"],
                          "last_error": status["last_error"], **proc_status()}),
              flush=True)


if __name__ == "__main__":
    main()
