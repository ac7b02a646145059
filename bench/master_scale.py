#!/usr/bin/env python3
"""Master scale: ``multiconfig`` of 1,000 logical nodes, then ``GET /api/status`` latency
with 1,000 nodes. Targets (issue 3): multiconfig <= 5 s; status p99 <= 50 ms.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.push_latency import free_port, percentile, start, wait_http  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    tmp = Path(tempfile.mkdtemp(prefix="flume-bench-"))
    zk_port, http_port = free_port(), free_port()
    log = open(tmp / "procs.log", "ab")
    master = start(["master", "--zk-port", str(zk_port), "--http-port", str(http_port),
                    "--data-dir", str(tmp / "master")], log)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_http(url + "/api/health")
        spec = "".join(f'agent{i:04d} : tail("/var/log/app{i}.log") | '
                       f'{{ batch(100) => gzip => text("/srv/out/{i}.log") }} ;\n'
                       for i in range(n))
        with httpx.Client(base_url=url, timeout=120) as http:
            t0 = time.perf_counter()
            r = http.post("/api/commands", json={"command": "multiconfig", "args": [spec]})
            dt = time.perf_counter() - t0
            if r.status_code != 200 or r.json().get("state") != "SUCCEEDED":
                raise SystemExit(f"multiconfig failed: {r.status_code} {r.text[:500]}")
            print(f"multiconfig of {n} logical nodes: {dt:.2f} s")
            for _ in range(20):
                http.get("/api/status")
            times = []
            for _ in range(300):
                t0 = time.perf_counter()
                r = http.get("/api/status")
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200
            body = r.json()
            rows = body.get("logical", body)
            print(f"GET /api/status with {len(rows)} logical nodes: p50 "
                  f"{percentile(times, 50):.1f} ms, p99 {percentile(times, 99):.1f} ms")
    finally:
        master.terminate()
        try:
            master.wait(20)
        except subprocess.TimeoutExpired:
            master.kill()


if __name__ == "__main__":
    main()
