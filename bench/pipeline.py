#!/usr/bin/env python3
"""Agent -> collector pipeline: ``bench/pipeline.py MODE N [--failover] [--backlog]``.

MODE is e2e, dfo or be. One master (with its managed ZooKeeper), one collector node and
one agent node run as separate processes. The agent tails a file of N 100-byte lines; the
collector writes raw files. Prints events/s from the agent's configuration (first line
read) to the last line durable in a final output file, the agent's and the collector's
peak RSS, and checks for loss and duplicates.

--backlog  then kills the collector and appends N more lines (``backlog COUNTER``) to the
           input at full rate; samples the agent's RSS, its write-ahead log (E2E) or spool
           (DFO) -- events and bytes, from its /status.json -- and its tail position until
           the whole input is read and all N events are on the agent's disk, then for
           --hold seconds more (default 30) with the collector still down. Then restarts
           the collector (same port, same output directory) and times the drain to every
           one of the 2N lines in a final file, sampling RSS meanwhile. Every line is
           checked: exactly once for E2E, at least once for DFO (duplicates reported). A
           lost line (or an E2E duplicate) makes the script exit non-zero. RSS: VmRSS
           min / max / last per phase, and the phase's peak (VmHWM, reset at the phase's
           start through /proc/PID/clear_refs).
--tmp DIR  where the run's directory goes (default /var/tmp; at N = 10,000,000 --backlog
           needs about 5 GB); it is removed after a run that passed unless --keep.
--failover also measures the failover time to a second collector (E2E chain): from the
           SIGKILL of the first collector to the second receiving events, and to every
           line written so far being final (including the groups the first collector
           held uncommitted when it died).
Targets (issue 4, N = 1,000,000): BE >= 150,000 events/s, E2E >= 100,000 events/s with no
loss and no duplicate, agent RSS <= 100 MB and flat while a backlog grows, failover <= 2 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
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


def rss_now_mb(pid: int, field: str = "VmRSS") -> float:
    """``field`` of /proc/PID/status in MB: VmRSS (all resident), RssAnon (anonymous
    memory: heaps and stacks, without the mapped files)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
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


def lines_of(n: int, word: bytes = b"counter", start: int = 0, chunk: int = 100_000):
    """Chunks of the lines ``WORD COUNTER xxx...`` for COUNTER in ``start``..``n - 1``,
    each LINE bytes (the counter %07d, or wider when ``n`` needs it)."""
    width = max(7, len(str(n - 1)))
    pad = b"x" * (LINE - 1 - len(word) - 1 - width - 1)
    fmt = word + b" %0" + str(width).encode() + b"d " + pad + b"\n"
    for s in range(start, n, chunk):
        yield b"".join(fmt % i for i in range(s, min(n, s + chunk)))


def make_input(path: Path, n: int, word: bytes = b"counter") -> None:
    with open(path, "wb") as f:
        for block in lines_of(n, word):
            f.write(block)


def final_files(out: Path) -> list[Path]:
    return [f for f in sorted(out.rglob("*")) if f.is_file() and not f.name.startswith(".")] \
        if out.exists() else []


def verify(out: Path, n: int, words=(b"counter",)) -> dict:
    """Counts each ``WORD COUNTER`` line of the final files in ``out`` (``n`` counters per
    word) without holding the lines: lost (never seen), dup (seen more than once, by how
    many extra copies), malformed lines, and the total."""
    index = {w: k for k, w in enumerate(words)}
    seen = bytearray(n * len(words))
    total = malformed = 0
    for f in final_files(out):
        with open(f, "rb") as fh:
            for line in fh:
                total += 1
                parts = line.split(b" ", 2)
                k = index.get(parts[0])
                try:
                    i = int(parts[1]) if k is not None else -1
                except (IndexError, ValueError):
                    i = -1
                if not 0 <= i < n:
                    malformed += 1
                    continue
                j = k * n + i
                if seen[j] < 255:
                    seen[j] += 1
    lost = seen.count(0)
    good = total - malformed
    return {"lines": total, "lost": lost, "dup": good - (len(seen) - lost),
            "malformed": malformed}


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


def report_loss(what: str, v: dict, exact: bool) -> bool:
    """Print what is wrong with a verification; True if it failed (a lost or malformed
    line, or, when ``exact``, a duplicate)."""
    bad = v["lost"] or v["malformed"] or (exact and v["dup"])
    if bad:
        print(f"{what}: LOST {v['lost']:,}, duplicates {v['dup']:,}, malformed "
              f"{v['malformed']:,} of {v['lines']:,} lines read", flush=True)
    return bool(bad)


def node_status(port: int) -> dict | None:
    """The one logical node's ``counters`` from a node's /status.json, and its source's
    ``bytes_in`` as ``tail_bytes``; None if the node does not answer."""
    try:
        st = httpx.get(f"http://127.0.0.1:{port}/status.json", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None
    for row in st.get("logical", {}).values():
        c = dict(row.get("counters") or {})
        src = (row.get("components") or {}).get("source") or {}
        c["tail_bytes"] = (src.get("metrics") or {}).get("bytes_in", 0)
        return c
    return None


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0), so that the next
    reading is the peak of what follows."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Sampler:
    """Samples, every ``every`` seconds in a thread: the agent's VmRSS, its metrics (how
    many events and bytes its write-ahead log or spool holds, how far its tail has read)
    and the size of its data directory."""

    def __init__(self, mode: str, pid: int, port: int, data_dir: Path, every: float = 0.2):
        self.mode, self.pid, self.port, self.data_dir, self.every = mode, pid, port, data_dir, every
        self.rows: list[dict] = []
        self.last: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.perf_counter()

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def sample(self) -> dict:
        st = node_status(self.port) or {}
        if self.mode == "e2e":
            events, nbytes = st.get("wal_events", 0), st.get("wal_bytes", 0)
        else:
            events = st.get("spooled", 0) - st.get("replayed", 0)
            nbytes = st.get("spool_bytes", 0)
        row = {"t": time.perf_counter() - self.t0, "rss": rss_now_mb(self.pid),
               "anon": rss_now_mb(self.pid, "RssAnon"),
               "disk_events": events, "disk_bytes": nbytes,
               "dir_bytes": dir_bytes(self.data_dir), "tail_bytes": st.get("tail_bytes", 0),
               "status": st}
        self.rows.append({k: v for k, v in row.items() if k != "status"})
        self.last = row
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.sample()

    def rss(self) -> str:
        xs = [r["rss"] for r in self.rows]
        return (f"RSS min {min(xs):.0f} MB, max {max(xs):.0f} MB, last {xs[-1]:.0f} MB "
                f"(anonymous {self.rows[-1]['anon']:.0f} MB), peak (VmHWM) "
                f"{rss_peak_mb(self.pid):.0f} MB")

    def grew(self) -> str:
        """RSS (anonymous) at a quarter, half and the end of the phase: does it grow with
        the backlog?"""
        rows = self.rows
        at = [rows[len(rows) // 4], rows[len(rows) // 2], rows[-1]]
        return "RSS (anonymous) at 25 % / 50 % / 100 % of the phase " + " / ".join(
            f"{r['rss']:.0f} ({r['anon']:.0f})" for r in at) + " MB"


def backlog(b: Bench, mode: str, n: int, agent, aport: int, collector, src: Path,
            out: Path, hold: float = 30, timeout: float = 3600) -> bool:
    """Kill the collector; append ``n`` lines ``backlog COUNTER`` to the agent's input as
    fast as the disk takes them; sample the agent until its tail has read the whole file
    and its write-ahead log (E2E) or spool (DFO) holds the ``n`` events, and ``hold``
    seconds more (RSS while the agent keeps retrying; the figures of the whole phase
    include them). Then start the
    collector again (same port, same output directory) and time the drain to every one of
    the 2n lines in a final file, checking each exactly once (E2E) or at least once (DFO).
    True if a line was lost (or duplicated, for E2E)."""
    collector.kill()
    collector.wait()
    data_dir = b.tmp / "nodes" / "node" / "agent"
    before = node_status(aport) or {}
    base_disk = before.get("wal_events", 0) if mode == "e2e" else \
        before.get("spooled", 0) - before.get("replayed", 0)
    reset_peak(agent.pid)
    smp = Sampler(mode, agent.pid, aport, data_dir).start()
    t0 = time.perf_counter()
    with open(src, "ab") as f:
        for block in lines_of(n, b"backlog"):
            f.write(block)
    appended = time.perf_counter() - t0
    size = src.stat().st_size
    print(f"backlog: {n:,} lines appended in {appended:.1f} s with the collector down",
          flush=True)
    last_print = time.perf_counter()
    while True:
        row = smp.last or smp.sample()
        if row["tail_bytes"] >= size and row["disk_events"] - base_disk >= n:
            break
        if time.perf_counter() - last_print > 15:
            last_print = time.perf_counter()
            print(f"  ... tail at {row['tail_bytes'] / size:.0%} of the input, "
                  f"{row['disk_events']:,} events ({row['disk_bytes'] / 1e6:,.0f} MB) on "
                  f"disk, RSS {row['rss']:.0f} MB", flush=True)
        if time.perf_counter() - t0 > timeout:
            smp.stop()
            print(f"backlog: GAVE UP after {timeout:.0f} s: {row}", flush=True)
            return True
        time.sleep(0.2)
    took = time.perf_counter() - t0
    if hold > 0:
        # the collector stays down a while longer: the agent retries all along
        at = len(smp.rows)
        time.sleep(hold)
        kept = smp.rows[at:]
        print(f"backlog: held {hold:.0f} s more with the collector down: agent RSS "
              f"(anonymous) {kept[0]['rss']:.0f} ({kept[0]['anon']:.0f}) -> "
              f"{kept[-1]['rss']:.0f} ({kept[-1]['anon']:.0f}) MB, max "
              f"{max(r['rss'] for r in kept):.0f} MB", flush=True)
    row = smp.stop()
    print(f"backlog: agent had all {n:,} events on disk {took:.1f} s after the first append "
          f"({n / took:,.0f} events/s): {row['disk_events']:,} events, "
          f"{row['disk_bytes']:,} bytes in its {'write-ahead log' if mode == 'e2e' else 'spool'}"
          f" ({row['dir_bytes']:,} bytes in its data directory); agent {smp.rss()}; "
          f"{smp.grew()}", flush=True)

    reset_peak(agent.pid)
    drain = Sampler(mode, agent.pid, aport, data_dir).start()
    t1 = time.perf_counter()
    collector, _ = b.node("collector")
    target = 2 * n * LINE
    last_print = time.perf_counter()
    while output_bytes(out) < target:
        time.sleep(0.1)
        if time.perf_counter() - last_print > 15:
            last_print = time.perf_counter()
            row = drain.last
            print(f"  ... {output_bytes(out) // LINE:,} of {2 * n:,} lines final, "
                  f"{row.get('disk_events', 0):,} events on the agent's disk, RSS "
                  f"{row.get('rss', 0):.0f} MB", flush=True)
        if time.perf_counter() - t1 > timeout:
            break
    drained = time.perf_counter() - t1
    v = verify(out, n, (b"counter", b"backlog"))
    if v["lost"]:
        # DFO may have written a duplicate in place of a line still on its way: wait for
        # the agent's disk to empty and the last roll, then count again
        settle = time.perf_counter()
        while (drain.last.get("disk_events", 1) > 0 and time.perf_counter() - settle < 120):
            time.sleep(0.5)
        time.sleep(2.5)
        v = verify(out, n, (b"counter", b"backlog"))
        drained = time.perf_counter() - t1
    row = drain.stop()
    print(f"drain: collector restarted; all {2 * n:,} lines final {drained:.1f} s later "
          f"({n / drained:,.0f} backlog events/s); lines {v['lines']:,}, duplicates "
          f"{v['dup']:,}, lost {v['lost']:,}, malformed {v['malformed']}; agent "
          f"{drain.rss()}; {row['disk_events']:,} events left on the agent's disk; "
          f"{drain.grew()}; collector peak RSS {rss_peak_mb(collector.pid):.0f} MB", flush=True)
    return report_loss("drain", v, exact=mode == "e2e")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=sorted(SINKS))
    ap.add_argument("n", type=int, nargs="?", default=1_000_000)
    ap.add_argument("--failover", action="store_true")
    ap.add_argument("--backlog", action="store_true")
    ap.add_argument("--hold", type=float, default=30,
                    help="--backlog: seconds the collector stays down after the agent has "
                         "the whole backlog on disk (default 30)")
    ap.add_argument("--tmp", default="/var/tmp",
                    help="where the run's directory goes (--backlog at 10,000,000 needs "
                         "about 5 GB: input, output and the agent's log)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run's directory (it is removed after a run that passed)")
    args = ap.parse_args()
    if args.backlog and args.mode == "be":
        ap.error("--backlog needs a mode that keeps events on disk (e2e or dfo)")
    tmp = Path(tempfile.mkdtemp(prefix="flume-pipeline-", dir=args.tmp))
    print(f"run directory {tmp}", flush=True)
    src, out = tmp / "in.log", tmp / "out"
    make_input(src, args.n)
    b = Bench(tmp)
    failed = False
    try:
        cport = free_port()
        collector, _ = b.node("collector")
        b.config("collector", f"collectorSource({cport})",
                 f'collectorSink("file://{out}", "data-", 1000)')
        b.wait_active("collector")
        agent, aport = b.node("agent")
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
        v = verify(out, args.n)
        failed = report_loss("first pass", v, exact=args.mode == "e2e")
        print(f"{args.mode}: {args.n:,} events durable in {dt:.2f} s = {args.n / dt:,.0f} "
              f"events/s; lines {v['lines']:,}, duplicates {v['dup']}, lost {v['lost']}; "
              f"peak RSS agent {rss_peak_mb(agent.pid):.0f} MB, collector "
              f"{rss_peak_mb(collector.pid):.0f} MB", flush=True)

        if args.backlog:
            failed |= backlog(b, args.mode, args.n, agent, aport, collector, src, out,
                              hold=args.hold)

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
    if failed:
        raise SystemExit(f"lines lost or duplicated (the files are kept in {tmp})")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
