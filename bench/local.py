#!/usr/bin/env python3
"""Local throughput: ``text("F") | null`` and ``text("F") | text("OUT")``.

Usage: bench/local.py [N] — writes N lines of 100 bytes (default 1,000,000), runs each flow
in-process through the real builder and driver, prints events/s.
Targets (issue 2): >= 500,000 events/s for null, >= 300,000 for text on 2 cores.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flume_og.node.logical_node import LogicalNode  # noqa: E402
from flume_og.node.spec import parse  # noqa: E402


def make_input_lines(path: Path, n: int) -> None:
    pad = b"x" * 90
    with open(path, "wb") as f:
        for start in range(0, n, 100_000):
            f.write(b"".join(b"%09d %s\n" % (i, pad) for i in range(start, min(n, start + 100_000))))


def run(spec_text: str, data: Path) -> float:
    d = parse(spec_text).definitions[0]
    node = LogicalNode(d.name, data)
    t0 = time.perf_counter()
    node.configure(d.source, d.sink)
    node.wait_done(600)
    dt = time.perf_counter() - t0
    if node.last_error:
        raise SystemExit(f"flow failed: {node.last_error}")
    return dt


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory(prefix="flume-bench-") as tmp:
        tmp = Path(tmp)
        src = tmp / "in.log"
        make_input_lines(src, n)
        out = tmp / "out.log"
        results = {}
        for label, spec in [
            ("text | null", f'b: text("{src}") | null'),
            ("text | text", f'b: text("{src}") | text("{out}")'),
        ]:
            dt = run(spec, tmp / "data")
            results[label] = n / dt
            print(f"{label:14s} {n:,} events in {dt:.2f} s = {n / dt:,.0f} events/s")
        lines = sum(1 for _ in open(out, "rb"))
        assert lines == n, f"output has {lines} lines, expected {n}"


if __name__ == "__main__":
    main()
