#!/usr/bin/env python3
"""Push latency: from a config request returning to the node reporting the new version
ACTIVE, over N changes (default 200).

Starts a real master (with its managed ZooKeeper on a free port) and a real node as
separate processes; the node's report is read from ZooKeeper with a watch, so the figure
has no polling granularity. Target (issue 3): p50 <= 100 ms, p99 <= 500 ms.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (check_succeeded, free_port, percentile, start,  # noqa: E402
                           start_master, stop)
from flume_og.zk.acl import read_auth_file  # noqa: E402
from flume_og.zk.client import connect  # noqa: E402
from flume_og.zk.store import ConfigStore, _loads  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    tmp = Path(tempfile.mkdtemp(prefix="flume-bench-"))
    log = open(tmp / "procs.log", "ab")
    master, url, zk_port = start_master(tmp, log)
    node = None
    try:
        node = start(["node", "-n", "bench1", "--master", url, "--data-dir",
                      str(tmp / "node"), "--http-port", str(free_port())], log)
        # the managed ZooKeeper is protected: read it with the master's credential
        creds = read_auth_file(tmp / "master" / "zk-auth")
        client = connect(f"127.0.0.1:{zk_port}", auth=creds["master"])
        store = ConfigStore(client, "/flume")
        reported: dict[int, float] = {}
        cond = threading.Condition()

        def on_status(data, stat, event=None):
            st = (_loads(data) or {}).get("logical", {}).get("bench1", {}) if data else {}
            if st.get("state") == "ACTIVE" and st.get("version") is not None:
                with cond:
                    reported.setdefault(st["version"], time.perf_counter())
                    cond.notify_all()

        client.DataWatch(store.status_path("bench1"), on_status)
        latencies = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in range(n + 5):
                r = http.post("/api/commands", json={
                    "command": "config",
                    "args": ["bench1", "null", f'{{ value("i", "{i}") => null }}']})
                returned = time.perf_counter()
                check_succeeded(r, "config")
                version = store.get_logical("bench1").version
                with cond:
                    ok = cond.wait_for(lambda: version in reported, timeout=30)
                if not ok:
                    raise SystemExit(f"version {version} never reported ACTIVE")
                if i >= 5:  # the first few warm up the node and the master
                    latencies.append(max(0.0, reported[version] - returned) * 1000)
        client.stop()
        print(f"push latency over {len(latencies)} changes: "
              f"p50 {percentile(latencies, 50):.1f} ms, p90 {percentile(latencies, 90):.1f} ms, "
              f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms, "
              f"mean {statistics.mean(latencies):.1f} ms")
    finally:
        stop(node, master)


if __name__ == "__main__":
    main()
