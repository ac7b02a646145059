"""A network source in a process of its own, for the tests that attack it and measure it.

``python -m tests.node.net_victim DIR 'SOURCE SPEC' [NOFILE]`` opens the source (with
``RLIMIT_NOFILE`` lowered to ``NOFILE`` when given), then plays a sink that is stalled
while ``DIR/stall`` exists and takes every batch otherwise. Every 0.1 s it rewrites
``DIR/status.json``: the port, events and body bytes taken, and the source's metrics. Logs
go to stderr. The status file stays open from the start, so the process can report even
when it has no file descriptor left.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

from flume_og.node.checkpoint import CheckpointStore
from flume_og.node.component import NodeContext
from flume_og.node.builder import build_source
from flume_og.node.spec import parse_source


def main() -> None:
    d, spec = Path(sys.argv[1]), sys.argv[2]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (d / "data").mkdir(exist_ok=True)
    ctx = NodeContext("victim", d / "data", CheckpointStore(d / "data" / "cp.json"))
    status_fd = os.open(d / "status.json", os.O_RDWR | os.O_CREAT, 0o644)
    stall = d / "stall"
    src = build_source(parse_source(spec))
    if len(sys.argv) > 3:
        n = int(sys.argv[3])
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    src.open(ctx)
    events = body_bytes = 0
    last = 0.0
    while True:
        if stall.exists():
            time.sleep(0.02)
        else:
            batch = src.next_batch(0.02) or []
            events += len(batch)
            body_bytes += sum(len(e.body) for e in batch)
        now = time.monotonic()
        if now - last >= 0.1:
            last = now
            doc = json.dumps({"port": src.port, "events": events, "body_bytes": body_bytes,
                              "metrics": dict(src.metrics)}).encode()
            os.ftruncate(status_fd, 0)
            os.pwrite(status_fd, doc, 0)


if __name__ == "__main__":
    main()
