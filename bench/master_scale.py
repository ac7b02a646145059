#!/usr/bin/env python3
"""Master scale: ``multiconfig`` of 1,000 logical nodes, then ``GET /api/status`` latency
with 1,000 nodes. Targets (issue 3): multiconfig <= 5 s; status p99 <= 50 ms.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (check_succeeded, multiconfig_spec, percentile,  # noqa: E402
                           running_master)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with running_master() as (_, _, url, _):
        spec = multiconfig_spec(n)
        with httpx.Client(base_url=url, timeout=120) as http:
            t0 = time.perf_counter()
            r = http.post("/api/commands", json={"command": "multiconfig", "args": [spec]})
            dt = time.perf_counter() - t0
            check_succeeded(r, "multiconfig")
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


if __name__ == "__main__":
    main()
