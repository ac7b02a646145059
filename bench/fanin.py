#!/usr/bin/env python3
"""Fan-in: many agents into one collector, and into two behind ``autoBEChain``.

``bench/fanin.py [-m LINES_PER_AGENT] [-a AGENTS] [--parts base,fanin,chain]``

Real processes, one master (with its managed ZooKeeper) for the whole invocation, every
node a process of its own (bench/compare.py's ``Project``). Input lines are the peer's
(bench/peer/benchlib.py: a ``%012d`` counter, a space, 80 ``x``: 94 bytes). Agent k of a
part tails its own complete file holding the counters k*M .. k*M+M-1 (M = lines per
agent), so every output line tells which agent sent it. Parts, in this order:

  base   1 agent -> 1 collector, A*M lines (the same total as fanin):
         tail("in") | agentBESink("127.0.0.1", port)  ->
         collectorSource(port) | collectorSink("file://out", "data-", 1000)
  fanin  A agents -> 1 collector, the same flows, every agent's input appearing at T0
  chain  2A agents -> 2 collectors: collectors 'autoCollectorSource' | collectorSink(...),
         agents tail(...) | autoBEChain (the master expands it to agentBEChain over the
         flow's running collectors, spread by its consistent-hash ring). The master
         gives the two collectors, both on this host, different ports.

T0: every node process is up (interpreter start-up left out), collectors and agents are
ACTIVE, each agent tailing a path that does not exist yet; at T0 every complete input is
hard-linked into its path (the tail reads a file that appears from its start), so all
agents start within the tail's poll interval of each other. T1: the last line is in a
collector's output (hidden files count, as in compare.py). Rates are lines / (T1 - T0);
the fan-in parts are also given as a ratio to the base part of the same invocation (the
box has 2 shared cores: compare within a run).

Fairness: every ``--interval`` seconds the collectors' output files (hidden ones included;
read incrementally, by inode, so a roll's rename does not count twice) are read and each
agent's delivered lines counted. A window counts from the first
sample at which every agent has delivered a line (the start-up is given apart: each
agent's first line) while every agent still has lines left (none has delivered all M at
the window's end). For each window: each agent's delivered lines relative to the mean of
the agents (share 1.00 = its fair part), min and max share, how many windows have an
agent outside 1 +- --tolerance (0.20), and the starved agents (0 lines in a window); the
same over windows 2 and 4 times as long (from the same samples). Overall shares are over
all windows together. Also: when each agent's first and last line arrived (its finish
time), and for ``chain`` each collector's share of the events and how many agents have
it first in their chain.

Verification after every part: the final files (renamed at the roll) hold each counter
0 .. total-1 exactly once: lost 0, duplicated 0, no malformed line; the exit status is 1
otherwise (or when a part does not finish within --timeout). CPU: utime+stime of the
collector process(es) from T0 to T1 per 1M events; peak RSS: VmHWM of each collector.
Temporary directories and every process are removed at the end, whatever happens.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import free_port, stop  # noqa: E402
from bench.compare import (LINE_LEN, Project, cpu_s, output_files, output_state, rss_peak_mb,  # noqa: E402
                           verify)

PAD = "x" * 80


def gen_range(path: Path, start: int, m: int) -> None:
    chunk = 50_000
    with open(path, "w") as f:
        for s in range(start, start + m, chunk):
            f.write("".join(f"{i:012d} {PAD}\n" for i in range(s, min(start + m, s + chunk))))


class Reader:
    """Reads the collectors' output directories incrementally and counts delivered lines
    per agent (counter // M) and per collector. Files are followed by inode (a hidden file
    renamed at the roll keeps its inode and its offset)."""

    def __init__(self, outs: list[Path], m: int, agents: int):
        self.outs, self.m, self.agents = outs, m, agents
        self.pos: dict[int, int] = {}
        self.per_agent = [0] * agents
        self.per_coll = [0] * len(outs)
        self.first: list[float | None] = [None] * agents
        self.done: list[float | None] = [None] * agents
        self.odd = 0    # lines read that are not one of the input's (verify says more)

    def _count_lines(self, data: bytes, counts: Counter) -> None:
        for line in data.split(b"\n")[:-1]:
            try:
                counts[int(line[:12]) // self.m] += 1
            except ValueError:
                self.odd += 1

    def scan(self, now: float) -> None:
        for ci, out in enumerate(self.outs):
            for e, ino, size in output_files(out):
                pos = self.pos.get(ino, 0)
                if size <= pos:
                    continue
                try:
                    with open(e.path, "rb") as fh:
                        fh.seek(pos)
                        data = fh.read(size - pos)
                except FileNotFoundError:
                    continue    # renamed meanwhile: found again under its new name
                end = data.rfind(b"\n") + 1
                if end == 0:
                    continue
                self.pos[ino] = pos + end
                self._count(ci, data[:end], now)

    def _count(self, ci: int, data: bytes, now: float) -> None:
        m = self.m
        counts: Counter = Counter()
        if len(data) % LINE_LEN == 0 and data.count(b"\n") == len(data) // LINE_LEN:
            # every line parsed, in C-level maps (a third of a second per million lines
            # of the CPU the pipeline runs on)
            heads = [data[i:i + 12] for i in range(0, len(data), LINE_LEN)]
            try:
                counts.update(map(m.__rfloordiv__, map(int, heads)))
            except ValueError:
                counts.clear()
                self._count_lines(data, counts)
        else:
            self._count_lines(data, counts)
        n_ag = self.agents
        for k, c in counts.items():
            if not 0 <= k < n_ag:
                self.odd += c
                continue
            self.per_agent[k] += c
            self.per_coll[ci] += c
            if self.first[k] is None:
                self.first[k] = now
            if self.done[k] is None and self.per_agent[k] >= m:
                self.done[k] = now


def push_all(proj: Project, configs: list[tuple[str, str, str]]) -> None:
    """Push every configuration at once (one thread each): every agent starts at T0."""
    errors: list[BaseException] = []

    def one(c):
        try:
            proj.config(*c)
        except BaseException as exc:    # SystemExit from check_succeeded
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(c,)) for c in configs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"config failed: {errors[0]}")


def run_part(proj: Project, part: str, tmp: Path, m: int, agents: int, colls: int,
             interval: float, timeout: float, inputs: list[Path],
             root: Path | None = None) -> dict:
    """One part: ``colls`` collectors, ``agents`` agents (base: 1 agent with inputs[0]
    holding every line); ``root``: the node processes of that checkout."""
    proj.runs += 1
    tag = f"{part}{proj.runs}{'base' if root else ''}"
    out_root = tmp / f"out-{tag}"
    outs = [out_root / f"c{i}" for i in range(colls)]
    total = m * agents if part != "base" else m
    procs: list = []
    cnames = [f"coll-{tag}-{i}" for i in range(colls)]
    anames = [f"agent-{tag}-{k:02d}" for k in range(agents)]
    try:
        collectors = [proj.node(c, root) for c in cnames]
        procs += collectors
        ports = []
        if part == "chain":
            for c in cnames:
                proj.wait_active(c, procs, physical=True)
        for c, out in zip(cnames, outs):
            sink = f'collectorSink("file://{out}", "data-", 1000)'
            if part == "chain":
                proj.config(c, "autoCollectorSource", sink)
            else:
                ports.append(free_port())
                proj.config(c, f"collectorSource({ports[-1]})", sink)
        for c in cnames:
            try:
                proj.wait_active(c, procs, timeout=120)
            except SystemExit as exc:
                rows = [r for r in proj.http.get("/api/status").json()["logical"]
                        if r["name"] == c]
                raise SystemExit(f"{exc}: {rows[0] if rows else 'no status'}") from None
        agent_procs = [proj.node(a, root) for a in anames]
        procs += agent_procs
        for a in anames:
            proj.wait_active(a, procs, timeout=120, physical=True)
        if part == "chain":
            sinks = ["autoBEChain"] * agents
        else:
            sinks = [f'agentBESink("127.0.0.1", {ports[0]})'] * agents
        # Each agent tails a file that is not there yet (the tail waits for it and reads
        # it from its start when it appears); T0 is when every input is linked into place
        # at once. Pushing the configurations at T0 instead spread the agents' starts over
        # up to 4.5 s (32 agents: the master translates each auto chain, each node picks
        # its configuration up), so that the first agents were done before the last began.
        live = tmp / f"live-{tag}"
        live.mkdir()
        paths = [live / inp.name for inp in inputs]
        push_all(proj, [(a, f'tail("{p}")', s) for a, p, s in zip(anames, paths, sinks)])
        for a in anames:
            proj.wait_active(a, procs, timeout=120)
        reader = Reader(outs, m if part != "base" else total, agents)
        cpu0 = [cpu_s(p.pid) for p in collectors]
        t0 = time.perf_counter()
        for inp, p in zip(inputs, paths):
            os.link(inp, p)
        t1 = t_final = None
        why = None
        samples = [(0.0, [0] * agents)]     # (t, per-agent delivered) every interval
        next_sample = t0 + interval
        deadline = t0 + timeout
        cpu1 = None
        while True:
            time.sleep(0.05)
            now = time.perf_counter()
            reader.scan(now - t0)
            if now >= next_sample:
                samples.append((now - t0, list(reader.per_agent)))
                # never a window shorter than the interval (this script short of CPU)
                next_sample = max(next_sample + interval, now + interval * 0.9)
            if t1 is None and sum(reader.per_agent) + reader.odd >= total:
                t1 = now
                cpu1 = [cpu_s(p.pid) for p in collectors]
            if t1 is not None:
                if sum(output_state(o)[1] for o in outs) >= total * LINE_LEN:
                    t_final = now
                    break
            dead = [(n, p.returncode) for n, p in zip(cnames + anames, procs)
                    if p.poll() is not None]
            if dead or now > deadline:
                why = (f"process(es) exited: {dead}" if dead
                       else f"not done after --timeout {timeout:.0f} s")
                break
        if cpu1 is None:
            cpu1 = [cpu_s(p.pid) for p in collectors]
        time.sleep(0.3)     # stragglers (duplicates) would show up in the check
        lines, lost, dup, bad = verify(out_root, total)
        res = {
            "part": part, "root": root, "agents": agents, "colls": colls, "m": m, "total": total,
            "t": (t1 - t0) if t1 else None, "t_final": (t_final - t0) if t_final else None,
            "cpu_coll": [b - a for a, b in zip(cpu0, cpu1)],
            "rss_coll": [rss_peak_mb(p.pid) for p in collectors],
            "lines": lines, "lost": lost, "dup": dup, "bad": bad,
            "per_coll": list(reader.per_coll), "first": reader.first, "done": reader.done,
            "samples": samples, "why": why,
        }
        res["ok"] = t_final is not None and lines == total and lost == dup == bad == 0
        if part == "chain":
            res["primary"] = primaries(proj, anames, cnames)
        return res
    finally:
        stop(*procs)
        shutil.rmtree(out_root, ignore_errors=True)
        shutil.rmtree(tmp / f"live-{tag}", ignore_errors=True)


def primaries(proj: Project, anames: list[str], cnames: list[str]) -> list[int]:
    """How many agents have each collector first in their chain (the master's /api/flows)."""
    counts = [0] * len(cnames)
    for flow in proj.http.get("/api/flows").json().values():
        for a, chain in (flow.get("chains") or {}).items():
            if a in anames and chain and chain[0] in cnames:
                counts[cnames.index(chain[0])] += 1
    return counts


def fairness(samples: list[tuple[float, list[int]]], m: int, tol: float) -> dict:
    """Windows between consecutive samples while every agent had lines left."""
    windows = []
    for (ta, a), (tb, b) in zip(samples, samples[1:]):
        if max(b) >= m:
            break
        if min(a) == 0:
            continue    # an agent's first line not there yet: start-up, reported apart
        d = [y - x for x, y in zip(a, b)]
        mean = sum(d) / len(d)
        shares = [x / mean for x in d]
        windows.append({"t": (ta, tb), "shares": shares, "deltas": d,
                        "starved": [k for k, x in enumerate(d) if x == 0],
                        "outside": [k for k, s in enumerate(shares) if abs(s - 1) > tol]})
    overall = None
    if windows:
        start = next(s for t, s in samples if t == windows[0]["t"][0])
        end = next(s for t, s in samples if t == windows[-1]["t"][1])
        d = [y - x for x, y in zip(start, end)]
        mean = sum(d) / len(d)
        overall = [x / mean for x in d]
    return {"windows": windows, "overall": overall}


def report(r: dict, base: dict | None, tol: float, verbose: bool) -> None:
    name = {"base": "1 agent -> 1 collector", "fanin": f"{r['agents']} agents -> 1 collector",
            "chain": f"{r['agents']} agents -> {r['colls']} collectors (autoBEChain)"}[r["part"]]
    if r["root"]:
        name += f" [nodes of {r['root']}]"
    print(f"\n== {name}: {r['total']:,} lines")
    if r["t"] is None:
        print(f"  did not finish: {r['why']}" + ("" if r["ok"] else "  <-- NOT OK"))
    else:
        rate = r["total"] / r["t"]
        s = f"  rate {rate:,.0f} ev/s ({r['t']:.2f} s to the last line"
        if r["t_final"]:
            s += f"; {r['t_final']:.2f} s to every line in a final file"
        s += ")"
        if base and base.get("t"):
            s += f"; {rate / (base['total'] / base['t']):.2f} x the 1-agent rate"
        print(s)
    cpu = sum(r["cpu_coll"])
    print(f"  collector(s): cpu {cpu:.1f} s = {cpu * 1e6 / r['total']:.2f} s per 1M ev "
          f"({', '.join(f'{c:.1f}' for c in r['cpu_coll'])}); peak RSS "
          f"{', '.join(f'{x:.0f}' for x in r['rss_coll'])} MB")
    if r["colls"] > 1:
        tot = sum(r["per_coll"]) or 1
        print("  per collector: " + ", ".join(
            f"c{i} {c:,} ({100 * c / tot:.1f} %)" for i, c in enumerate(r["per_coll"]))
              + "; agents with it first in their chain: "
              + ", ".join(f"c{i} {n}" for i, n in enumerate(r.get("primary", []))))
    print(f"  verify: {r['lines']:,} lines, lost {r['lost']}, dup {r['dup']}, "
          f"malformed {r['bad']}" + ("" if r["ok"] else "  <-- NOT OK"))
    if r["part"] == "base":
        return
    fa = fairness(r["samples"], r["m"], tol)
    r["fair"] = fa
    ws = fa["windows"]
    if not ws:
        print("  fairness: no window while every agent had lines left (raise -m)")
    else:
        bad_w = [w for w in ws if w["outside"]]
        starved = [w for w in ws if w["starved"]]
        lo = min(min(w["shares"]) for w in ws)
        hi = max(max(w["shares"]) for w in ws)
        print(f"  fairness over {len(ws)} windows of about "
              f"{statistics.median(w['t'][1] - w['t'][0] for w in ws):.1f} s "
              f"({ws[0]['t'][0]:.1f}-{ws[-1]['t'][1]:.1f} s): share of the mean per agent "
              f"and window min {lo:.2f}, max {hi:.2f}; windows with an agent outside "
              f"1 +- {tol:.2f}: {len(bad_w)}; windows with a starved agent (0 lines): "
              f"{len(starved)}")
        for step in (2, 4):     # the same samples, windows 2 and 4 times as long
            wl = fairness(r["samples"][::step], r["m"], tol)["windows"]
            if wl:
                span = step * statistics.median(w["t"][1] - w["t"][0] for w in ws)
                print(f"  windows of about {span:.0f} s ({len(wl)}): "
                      f"share min {min(min(w['shares']) for w in wl):.2f}, max "
                      f"{max(max(w['shares']) for w in wl):.2f}; windows with an agent "
                      f"outside 1 +- {tol:.2f}: {sum(1 for w in wl if w['outside'])}")
        ov = fa["overall"]
        print(f"  overall share {ws[0]['t'][0]:.1f}-{ws[-1]['t'][1]:.1f} s: min {min(ov):.2f}, max "
              f"{max(ov):.2f}, stdev {statistics.pstdev(ov):.3f}; agents outside "
              f"1 +- {tol:.2f}: {sum(abs(s - 1) > tol for s in ov)}")
        if verbose:
            for w in ws:
                print(f"    {w['t'][0]:5.1f}-{w['t'][1]:5.1f} s  min {min(w['shares']):.2f} "
                      f"max {max(w['shares']):.2f}  mean {statistics.mean(w['deltas']):,.0f}"
                      f" lines/agent" + (f"  starved {w['starved']}" if w["starved"] else ""))
            print("    overall shares: " + " ".join(f"{s:.2f}" for s in ov))
    first = [x for x in r["first"] if x is not None]
    done = [x for x in r["done"] if x is not None]
    if first:
        print(f"  first line per agent: {min(first):.2f}-{max(first):.2f} s after T0")
    if done:
        print(f"  agents finished: {len(done)}/{r['agents']}; at {min(done):.2f} s (first) "
              f"median {statistics.median(done):.2f} s, {max(done):.2f} s (last); last / "
              f"first = {max(done) / min(done):.2f}")
        if verbose:
            print("    finish s per agent: " + " ".join(
                f"{x:.1f}" if x is not None else "-" for x in r["done"]))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--lines", type=int, default=250_000,
                    help="lines per agent (default 250,000: 10-30 s per part on 2 cores)")
    ap.add_argument("-a", "--agents", type=int, default=16,
                    help="agents into one collector (default 16; the chain part has twice)")
    ap.add_argument("--parts", default="base,fanin,chain",
                    help="comma-separated parts to run, in this order (default all: "
                         "base,fanin,chain)")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="fairness window in seconds (default 1.0)")
    ap.add_argument("--tolerance", type=float, default=0.20,
                    help="fairness target: every agent's share within 1 +- this (0.20)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per part at most")
    ap.add_argument("--base", type=Path, metavar="DIR",
                    help="also run the fanin and chain parts with the nodes of the checkout "
                         "DIR (its own .venv; e.g. git worktree add DIR COMMIT, then "
                         "scripts/setup.sh there), each right after this checkout's: "
                         "before and after in one invocation")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print every window and each agent's share and finish time")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for p in parts:
        if p not in ("base", "fanin", "chain"):
            ap.error(f"unknown part {p!r}")
    m, a = args.lines, args.agents
    tmp = Path(tempfile.mkdtemp(prefix="flume-fanin-"))
    proj = None
    results = []
    try:
        most = 2 * a if "chain" in parts else a
        print(f"fan-in: {m:,} lines per agent, {a} agents (chain: {2 * a} agents, 2 "
              f"collectors), parts {','.join(parts)}; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        inputs = [tmp / f"in-{k:02d}.log" for k in range(most)]
        for k, p in enumerate(inputs):
            gen_range(p, k * m, m)
        base_in = tmp / "in-base.log"
        if "base" in parts:
            gen_range(base_in, 0, m * a)
        proj = Project(tmp)
        base = None
        for part in parts:
            if part == "base":
                base = run_part(proj, "base", tmp, m * a, 1, 1, args.interval, args.timeout,
                                [base_in])
                results.append(base)
                report(base, None, args.tolerance, args.verbose)
                continue
            ag, co = (a, 1) if part == "fanin" else (2 * a, 2)
            for root in [None, args.base] if args.base else [None]:
                r = run_part(proj, part, tmp, m, ag, co, args.interval, args.timeout,
                             inputs[:ag], root)
                results.append(r)
                report(r, base, args.tolerance, args.verbose)
                sys.stdout.flush()
        byname = {r["part"]: r for r in results if not r["root"]}
        if "fanin" in byname and "chain" in byname and byname["fanin"]["t"] and \
                byname["chain"]["t"]:
            f, c = byname["fanin"], byname["chain"]
            print(f"\nchain / fanin: {c['agents']} vs {f['agents']} agents, rate ratio "
                  f"{(c['total'] / c['t']) / (f['total'] / f['t']):.2f}")
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(f"this script's own cpu (reading the outputs, generating inputs): "
              f"{ru.ru_utime + ru.ru_stime:.1f} s")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if proj is not None:
            proj.close()
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r for r in results if not r["ok"]]
    if failed:
        print(f"{len(failed)} part(s) NOT OK")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
