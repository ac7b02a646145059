"""A flow under attack in a process of its own, for the bounds of the decorators behind a
source (rpc_victim.py covers the source alone).

``python -m tests.node.flow_victim SOURCE SINK`` runs a logical node ``SOURCE | SINK``,
prints the source's port, then answers every line read on stdin with one JSON line: the
flow's component tree (``components``: metrics of the source and of every sink and
decorator), the node's state, and ``rss``/``hwm``/``threads`` as rpc_victim.py gives them.
"""
from __future__ import annotations

import json
import sys

from flume_og.node.logical_node import LogicalNode
from flume_og.node.spec import parse_sink, parse_source
from tests.node.rpc_victim import proc_status


def main() -> None:
    node = LogicalNode("victim", None)
    node.configure(parse_source(sys.argv[1]), parse_sink(sys.argv[2]))
    flow = node._flow
    print(flow.source.port if flow else 0, flush=True)
    for _ in sys.stdin:
        status = node.status()
        print(json.dumps({"components": status["components"], "state": status["state"],
                          "last_error": status["last_error"], **proc_status()}),
              flush=True)


if __name__ == "__main__":
    main()
