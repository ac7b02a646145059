#!/usr/bin/env python3
"""Event latency, agent -> collector: ``bench/latency.py [--modes be,dfo,e2e] [--seconds S]``.

One master (with its managed ZooKeeper), one collector node and one agent node run as
separate processes. A writer appends counter lines stamped with the time of their append
to a file the agent tails; a reader follows the collector's output and takes each line's
latency as the time it became readable minus its stamp (the reader polls every 5 ms).
For each mode the pipeline's maximum rate is measured first (a burst of lines written at
once, timed to the last line readable), then the writer runs at 1 %, 10 % and 80 % of it
for S seconds each (default 8), and p50/p99/max latency are printed per load.

Output: BE and DFO write with ``text`` at the collector (readable once appended); E2E
writes with ``collectorSink`` (rollMs 1000) and a line counts once it is in a final,
committed file. Targets (issue 13): BE/DFO p99 <= 1 s at 80 % load; E2E p99 <= roll
period + 1 s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import free_port, percentile  # noqa: E402
from bench.pipeline import SINKS, Bench  # noqa: E402

ROLL_MS = 1000
BURST = 100_000
PAD = b"x" * 60


class Reader:
    """Follows the output: one text file (BE, DFO) or the final files of a collectorSink
    directory (E2E, hidden files skipped). Records (seq, latency s) per line."""

    def __init__(self, out: Path, final_files: bool):
        self.out, self.final_files = out, final_files
        self.offsets: dict[Path, int] = {}
        self.rest: dict[Path, bytes] = {}
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _files(self) -> list[Path]:
        if not self.final_files:
            return [self.out] if self.out.exists() else []
        if not self.out.exists():
            return []
        return sorted(f for f in self.out.rglob("*")
                      if f.is_file() and not f.name.startswith("."))

    def _run(self) -> None:
        while not self._stop.is_set():
            for f in self._files():
                off = self.offsets.get(f, 0)
                with open(f, "rb") as fh:
                    fh.seek(off)
                    data = fh.read()
                if not data:
                    continue
                now = time.time()
                self.offsets[f] = off + len(data)
                data = self.rest.pop(f, b"") + data
                lines = data.split(b"\n")
                if lines[-1]:
                    self.rest[f] = lines[-1]
                for line in lines[:-1]:
                    parts = line.split(b" ")
                    if len(parts) >= 3 and parts[0] == b"lat":
                        self.seen.setdefault(int(parts[1]), now - int(parts[2]) / 1e9)
            time.sleep(0.005)

    def wait_for(self, seqs: range, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s in self.seen for s in (seqs[-1], seqs[0])) and \
                    sum(1 for s in seqs if s in self.seen) == len(seqs):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Writer:
    """Appends stamped lines ``lat <seq> <time_ns> <pad>`` to ``path``."""

    def __init__(self, path: Path):
        self.f = open(path, "ab", buffering=0)
        self.seq = 0

    def burst(self, n: int) -> range:
        first = self.seq
        now = time.time_ns()
        self.f.write(b"".join(b"lat %d %d %s\n" % (first + i, now, PAD) for i in range(n)))
        self.seq += n
        return range(first, self.seq)

    def steady(self, rate: float, seconds: float) -> range:
        """``rate`` lines/s for ``seconds``, in appends every 10 ms."""
        first = self.seq
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(rate * elapsed) + first
            if due > self.seq:
                now = time.time_ns()
                self.f.write(b"".join(b"lat %d %d %s\n" % (s, now, PAD)
                                      for s in range(self.seq, due)))
                self.seq = due
            time.sleep(0.01)
        return range(first, self.seq)


def run_mode(b: Bench, tmp: Path, mode: str, seconds: float) -> None:
    cport = free_port()
    out = tmp / f"out-{mode}"
    cname, aname = f"collector-{mode}", f"agent-{mode}"
    b.node(cname)
    if mode == "e2e":
        sink = f'collectorSink("file://{out}", "data-", {ROLL_MS})'
    else:
        sink = f'text("{out}")'
    b.config(cname, f"collectorSource({cport})", sink)
    b.wait_active(cname)
    src = tmp / f"in-{mode}.log"
    src.touch()
    b.node(aname)
    b.config(aname, f'tail("{src}")', f'{SINKS[mode]}("127.0.0.1", {cport})')
    b.wait_active(aname)
    reader = Reader(out, final_files=(mode == "e2e"))
    writer = Writer(src)
    try:
        warm = writer.burst(1000)
        if not reader.wait_for(warm, 60):
            raise SystemExit(f"{mode}: the first lines never arrived")
        burst = writer.burst(BURST)
        t0 = time.monotonic()
        if not reader.wait_for(burst, 300):
            raise SystemExit(f"{mode}: the burst did not arrive within 300 s")
        max_rate = BURST / (time.monotonic() - t0)
        print(f"{mode}: maximum rate {max_rate:,.0f} lines/s (burst of {BURST:,})",
              flush=True)
        for share in (0.01, 0.10, 0.80):
            seqs = writer.steady(max_rate * share, seconds)
            complete = reader.wait_for(seqs, 60)
            lat = [reader.seen[s] for s in seqs if s in reader.seen]
            missing = len(seqs) - len(lat)
            if not lat:
                print(f"  {share:4.0%} load: no line arrived", flush=True)
                continue
            print(f"  {share:4.0%} load ({max_rate * share:,.0f} lines/s, {len(seqs):,} "
                  f"lines): p50 {percentile(lat, 50) * 1000:,.0f} ms, p99 "
                  f"{percentile(lat, 99) * 1000:,.0f} ms, max {max(lat) * 1000:,.0f} ms"
                  + ("" if complete else f"; {missing:,} lines missing after 60 s"),
                  flush=True)
    finally:
        reader.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="be,dfo,e2e")
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flume-latency-"))
    b = Bench(tmp)
    try:
        for mode in args.modes.split(","):
            run_mode(b, tmp, mode.strip(), args.seconds)
    finally:
        b.close()


if __name__ == "__main__":
    main()
