#!/usr/bin/env python3
"""Agent -> collector pipeline: ``bench/pipeline.py MODE N [--failover] [--backlog]``.

MODE is e2e, dfo or be. One master (with its managed ZooKeeper), one collector node and
one agent node run as separate processes. The agent tails a file of N 100-byte lines; the
collector writes raw files. Prints events/s from the agent's configuration (first line
read) to the last line durable in a final output file, the agent's and the collector's
peak RSS, and checks for loss and duplicates.

--backlog  also measures the agent's RSS while a backlog grows on disk (collector down).
--failover also measures the failover time to a second collector (E2E chain): from the
           SIGKILL of the first collector to the second receiving events, and to every
           line written so far being final (including the groups the first collector
           held uncommitted when it died).
Targets (issue 4, N = 1,000,000): BE >= 150,000 events/s, E2E >= 100,000 events/s with no
loss and no duplicate, agent RSS <= 100 MB and flat while a backlog grows, failover <= 2 s.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import check_succeeded, free_port, start, start_master  # noqa: E402

SINKS = {"e2e": "agentE2ESink", "dfo": "agentDFOSink", "be": "agentBESink"}
LINE = 101  # 100 bytes and the newline


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_now_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def output_bytes(out: Path) -> int:
    total = 0
    if out.exists():
        for f in out.rglob("*"):
            if f.is_file() and not f.name.startswith("."):
                total += f.stat().st_size
    return total


def all_lines(out: Path) -> list[bytes]:
    lines = []
    for f in sorted(out.rglob("*")) if out.exists() else []:
        if f.is_file() and not f.name.startswith("."):
            lines.extend(f.read_bytes().splitlines())
    return lines


def final_lines(out: Path) -> int:
    return len(all_lines(out))


def make_input(path: Path, n: int) -> None:
    pad = b"x" * (LINE - 17)     # "counter %07d " is 16 bytes, then the newline
    with open(path, "wb") as f:
        for s in range(0, n, 100_000):
            f.write(b"".join(b"counter %07d %s\n" % (i, pad) for i in range(s, min(n, s + 100_000))))


class Bench:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.log = open(tmp / "procs.log", "ab")
        self.master, self.url, _ = start_master(tmp, self.log)
        self.procs: list[subprocess.Popen] = [self.master]
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def spawn(self, args) -> subprocess.Popen:
        p = start(args, self.log)
        self.procs.append(p)
        return p

    def node(self, name: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        p = self.spawn(["node", "-n", name, "--master", self.url, "--data-dir",
                        str(self.tmp / "nodes"), "--http-port", str(port)])
        return p, port

    def config(self, name: str, source: str, sink: str) -> None:
        r = self.http.post("/api/commands", json={"command": "config",
                                                  "args": [name, source, sink]})
        check_succeeded(r, f"config {name}")

    def wait_active(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.http.get("/api/status").json()["logical"]
            if any(r["name"] == name and r["state"] == "ACTIVE" for r in rows):
                return
            time.sleep(0.05)
        raise SystemExit(f"{name} did not become ACTIVE")

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def node_events_in(port: int) -> int:
    try:
        st = httpx.get(f"http://127.0.0.1:{port}/status.json", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return -1
    return sum((r.get("events_in") or 0) for r in st.get("logical", {}).values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=sorted(SINKS))
    ap.add_argument("n", type=int, nargs="?", default=1_000_000)
    ap.add_argument("--failover", action="store_true")
    ap.add_argument("--backlog", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flume-pipeline-"))
    src, out = tmp / "in.log", tmp / "out"
    make_input(src, args.n)
    b = Bench(tmp)
    try:
        cport = free_port()
        collector, _ = b.node("collector")
        b.config("collector", f"collectorSource({cport})",
                 f'collectorSink("file://{out}", "data-", 1000)')
        b.wait_active("collector")
        agent, _ = b.node("agent")
        t0 = time.perf_counter()
        b.config("agent", f'tail("{src}")', f'{SINKS[args.mode]}("127.0.0.1", {cport})')
        target = args.n * LINE
        last_report = t0
        while output_bytes(out) < target:
            time.sleep(0.05)
            if time.perf_counter() - last_report > 10:
                last_report = time.perf_counter()
                print(f"  ... {output_bytes(out) // LINE:,} of {args.n:,} lines durable",
                      flush=True)
            if time.perf_counter() - t0 > 900:
                raise SystemExit("gave up after 900 s")
        dt = time.perf_counter() - t0
        lines = all_lines(out)
        dups = len(lines) - len(set(lines))
        if len(set(lines)) != args.n:
            print(f"LOSS: {args.n - len(set(lines)):,} of {args.n:,} lines are missing",
                  flush=True)
        print(f"{args.mode}: {args.n:,} events durable in {dt:.2f} s = {args.n / dt:,.0f} "
              f"events/s; lines {len(lines):,}, duplicates {dups}; peak RSS agent "
              f"{rss_peak_mb(agent.pid):.0f} MB, collector {rss_peak_mb(collector.pid):.0f} MB",
              flush=True)

        if args.backlog:
            collector.kill()
            collector.wait()
            more = tmp / "more.log"
            make_input(more, args.n)
            samples = []
            with open(src, "ab") as f_out, open(more, "rb") as f_in:
                while chunk := f_in.read(4 << 20):
                    f_out.write(chunk)
                    f_out.flush()
                    samples.append(rss_now_mb(agent.pid))
                    time.sleep(0.2)
            for _ in range(20):
                time.sleep(0.5)
                samples.append(rss_now_mb(agent.pid))
            print(f"backlog of {args.n:,} more events with the collector down: agent RSS "
                  f"min {min(samples):.0f} MB, max {max(samples):.0f} MB", flush=True)

        if args.failover:
            c1port, c2port = free_port(), free_port()
            out2 = tmp / "out2"
            c1, _ = b.node("c1")
            c2, c2http = b.node("c2")
            for name, port in (("c1", c1port), ("c2", c2port)):
                b.config(name, f"collectorSource({port})",
                         f'collectorSink("file://{out2}", "data-", 1000)')
                b.wait_active(name)
            src2 = tmp / "in2.log"
            src2.touch()
            b.config("agent", f'tail("{src2}")',
                     f'agentE2EChain("127.0.0.1:{c1port}", "127.0.0.1:{c2port}")')
            b.wait_active("agent")
            # a steady stream, so c1 holds groups in a file not yet committed when killed
            written = [0]
            stop = threading.Event()

            def writer():
                with open(src2, "ab", buffering=0) as f:
                    while not stop.is_set():
                        f.write(b"".join(b"failover %d\n" % (written[0] + i)
                                         for i in range(20)))
                        written[0] += 20
                        time.sleep(0.01)
            t = threading.Thread(target=writer, daemon=True)
            t.start()
            time.sleep(1.5)
            base = node_events_in(c2http)
            c1.kill()
            killed = time.perf_counter()
            while node_events_in(c2http) <= base:
                time.sleep(0.01)
                if time.perf_counter() - killed > 60:
                    raise SystemExit("no failover within 60 s")
            receiving = time.perf_counter() - killed
            time.sleep(max(0.0, 1.0 - receiving))
            stop.set()
            t.join()
            while final_lines(out2) < written[0]:
                time.sleep(0.02)
                if time.perf_counter() - killed > 120:
                    raise SystemExit(f"only {final_lines(out2):,} of {written[0]:,} lines "
                                     f"final 120 s after the kill")
            every = time.perf_counter() - killed
            dups = final_lines(out2) - len(set(all_lines(out2)))
            print(f"failover: the second collector received events {receiving:.2f} s after "
                  f"the first was killed; all {written[0]:,} lines (those the first held "
                  f"uncommitted included) were final {every:.2f} s after the kill "
                  f"(rollMs 1000), {dups} duplicates", flush=True)
    finally:
        b.close()


if __name__ == "__main__":
    main()
