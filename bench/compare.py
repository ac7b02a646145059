#!/usr/bin/env python3
"""This project against rsyslog on the same job: ``bench/compare.py [N] [-k K]``.

The job (the shape of ``bench/peer/peer_rsyslog.sh``): an agent tails a complete input file
of N lines (``%012d`` counter, a space, 80 ``x``: 94 bytes with the newline), forwards them
over 127.0.0.1 to a collector, which writes them to files. Five runs per round, interleaved
(the box is shared: only figures of the same invocation compare):

  project BE   tail -> agentBESink  -> collectorSource -> collectorSink (rollMs 1000)
  rsyslog TCP  imfile -> omfwd TCP  -> imptcp -> omfile          (peer_rsyslog.sh N tcp)
  project E2E  tail -> agentE2ESink -> collectorSource -> collectorSink (fsync, exactly once)
  rsyslog RELP imfile -> omrelp     -> imrelp -> omfile (acks, no fsync) (peer_rsyslog.sh N relp)
  project local  tail -> collectorSink in one node (no network; no rsyslog counterpart)

K rounds; the best of K of each is reported. Timing, the same for both: T0 just before the
agent gets its job (collector listening, input complete; the project's agent process is
already up, its configuration is pushed at T0; rsyslog's agent daemon is started at T0),
T1 when the N-th line is in the collector's output (the project's files still hidden
count, as rsyslog's page-cache file does). The project's figure "final" is also given:
every line in a final (renamed; for E2E committed) file, which includes the last roll.

Every run is verified: each of the N lines exactly once in the output (E2E and BE: lost 0,
duplicated 0, no malformed line; the rsyslog script verifies its own). CPU seconds are
utime+stime from /proc/<pid>/stat of the agent and the collector process, counted from T0
to T1 for the project (its processes are started before T0: the interpreter's start-up is
left out) and since the daemon's start for rsyslog (the peer script's figures); peak RSS is
VmHWM of the project's agent and collector (the peer script does not report rsyslog's).
The exit status is 1 if any run failed its verification.

The peer script is vendored in bench/peer/ (a copy of the shared, tuned rsyslog job, kept
unchanged) so that the benchmark does not depend on a path outside the repository;
``--peer`` runs another copy. Nothing is installed here: without rsyslogd and its RELP
module the script says what to install and exits with status 2.

``--base DIR`` runs the nodes of another checkout too (DIR/.venv, e.g. ``git worktree add
DIR <commit>`` then ``scripts/setup.sh`` there) next to each project run, the two taking
turns at going first: before and after in one invocation ("base BE", "base E2E", ratios).

``--py-spy DIR`` records py-spy profiles (raw collapsed stacks) of the agent and the
collector (the node, for local) during each project run into DIR (py-spy must be on PATH or in the venv).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import check_succeeded, free_port, start, start_master, stop  # noqa: E402

HERE = Path(__file__).resolve().parent
PEER = HERE / "peer" / "peer_rsyslog.sh"
sys.path.insert(0, str(HERE / "peer"))
import benchlib  # noqa: E402  (the peer's own input generator and line format)

LINE_LEN = benchlib.LINE_LEN
SINKS = {"be": "agentBESink", "e2e": "agentE2ESink"}
MODES = {"be": "tcp", "e2e": "relp", "local": None}    # each project mode and its peer run
TCK = os.sysconf("SC_CLK_TCK")
RELP_MODULES = ("/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so",
                "/usr/lib/x86_64-linux-gnu/rsyslog/omrelp.so")


def cpu_s(pid: int) -> float:
    st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / TCK


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def output_files(out: Path):
    """(entry, inode, size) of every file under ``out`` now, hidden ones included; a file
    renamed or removed while walking is left out (found again under its new name)."""
    stack = [out]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                    continue
                yield e, e.inode(), e.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue


def output_state(out: Path) -> tuple[int, int]:
    """(bytes in all output files, hidden ones included; bytes in final files). Files are
    counted once per inode: a rename between two directory entries cannot count twice."""
    seen, total, final = set(), 0, 0
    for e, ino, size in output_files(out):
        if ino in seen:
            continue
        seen.add(ino)
        total += size
        if not e.name.startswith("."):
            final += size
    return total, final


def verify(out: Path, n: int) -> tuple[int, int, int, int]:
    """(lines, lost, duplicated, malformed) over the final files: each counter once."""
    seen = bytearray(n)
    lines = dup = bad = 0
    for f in sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")):
        with open(f, "rb") as fh:
            for line in fh:
                lines += 1
                if (len(line) != LINE_LEN or line[12:13] != b" "
                        or line[13:93] != benchlib.LINE_PAD):
                    bad += 1
                    continue
                try:
                    c = int(line[:12])
                except ValueError:
                    bad += 1
                    continue
                if not 0 <= c < n:
                    bad += 1
                elif seen[c]:
                    dup += 1
                else:
                    seen[c] = 1
    return lines, n - sum(seen), dup, bad


def py_spy() -> str | None:
    venv = Path(sys.executable).parent / "py-spy"
    return str(venv) if venv.exists() else shutil.which("py-spy")


class Project:
    """One master (with its managed ZooKeeper) for the whole invocation; a fresh collector
    and agent node process per run."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.log = open(tmp / "procs.log", "ab")
        self.master, self.url, _ = start_master(tmp, self.log)
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.runs = 0

    def node(self, name: str, root: Path | None = None) -> subprocess.Popen:
        """A node process of this checkout, or of the checkout ``root`` (its own .venv)."""
        args = ["node", "-n", name, "--master", self.url, "--data-dir",
                str(self.tmp / "nodes"), "--http-port", str(free_port())]
        if root is None:
            return start(args, self.log)
        return subprocess.Popen([str(root / ".venv" / "bin" / "python"), "-m",
                                 "flume_og.master.cli", "--log-level", "WARNING", *args],
                                cwd=root, stdout=self.log, stderr=subprocess.STDOUT)

    def config(self, name: str, source: str, sink: str) -> None:
        r = self.http.post("/api/commands", json={"command": "config",
                                                  "args": [name, source, sink]})
        check_succeeded(r, f"config {name}")

    def wait_active(self, name: str, procs, timeout: float = 60, physical=False) -> None:
        """Until the logical node ``name`` is ACTIVE (``physical``: until the physical node
        ``name`` is alive)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.http.get("/api/status").json()
            if physical and any(r["name"] == name and r["alive"] and r.get("pid")
                                for r in st["physical"]):
                return
            if any(r["name"] == name and r["state"] == "ACTIVE" for r in st["logical"]):
                return
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a node process died while waiting for {name}")
            time.sleep(0.02)
        raise SystemExit(f"{name} did not become ACTIVE")

    def run(self, mode: str, src: Path, n: int, spy_dir: Path | None,
            root: Path | None = None) -> dict:
        self.runs += 1
        tag = f"{mode}{self.runs}{'base' if root else ''}"
        out = self.tmp / f"out-{tag}"
        cname, aname = f"coll-{tag}", f"agent-{tag}"
        cport = free_port()
        collector = self.node(cname, root)
        agent = None
        spies: list[subprocess.Popen] = []
        sink = f'collectorSink("file://{out}", "data-", 1000)'
        try:
            if mode == "local":     # one process: tail | collectorSink, no network
                self.wait_active(cname, [collector], physical=True)
                agent = collector
            else:
                self.config(cname, f"collectorSource({cport})", sink)
                self.wait_active(cname, [collector])
                agent = self.node(aname, root)
                # the agent's process up (its own logical node idle) before the clock starts
                self.wait_active(aname, [agent, collector], physical=True)
            if spy_dir is not None:
                exe = py_spy()
                if exe is None:
                    raise SystemExit("--py-spy: py-spy not found (.venv/bin/pip install py-spy)")
                spy_dir.mkdir(parents=True, exist_ok=True)
                for who, p in (("agent", agent), ("collector", collector)):
                    spies.append(subprocess.Popen(
                        [exe, "record", "--pid", str(p.pid), "--rate", "250", "--format", "raw",
                         "--threads", "--nonblocking", "-o", str(spy_dir / f"{tag}-{who}.txt")],
                        stdout=subprocess.DEVNULL, stderr=self.log))
                time.sleep(1.0)     # py-spy attached before the clock starts
            cpu0 = {p.pid: cpu_s(p.pid) for p in (agent, collector)}
            t0 = time.perf_counter()
            if mode == "local":
                self.config(cname, f'tail("{src}")', sink)
            else:
                self.config(aname, f'tail("{src}")', f'{SINKS[mode]}("127.0.0.1", {cport})')
            target = n * LINE_LEN
            t1 = t_final = None
            deadline = t0 + 300
            while True:
                total, final = output_state(out)
                now = time.perf_counter()
                if t1 is None and total >= target:
                    t1 = now
                    cpu1 = {p.pid: cpu_s(p.pid) for p in (agent, collector)}
                if final >= target:
                    t_final = now
                    break
                if now > deadline or agent.poll() is not None or collector.poll() is not None:
                    break
                time.sleep(0.005)
            for s in spies:
                s.send_signal(signal.SIGINT)
            for s in spies:
                try:
                    s.wait(60)
                except subprocess.TimeoutExpired:
                    s.kill()
            if t1 is None:
                cpu1 = {p.pid: cpu_s(p.pid) for p in (agent, collector)}
            time.sleep(0.3)     # stragglers (duplicates) would show up in the check
            lines, lost, dup, bad = verify(out, n)
            res = {
                "mode": mode, "t": (t1 - t0) if t1 else None,
                "t_final": (t_final - t0) if t_final else None,
                "cpu_agent": cpu1[agent.pid] - cpu0[agent.pid],
                "cpu_coll": cpu1[collector.pid] - cpu0[collector.pid],
                "rss_agent": rss_peak_mb(agent.pid), "rss_coll": rss_peak_mb(collector.pid),
                "lines": lines, "lost": lost, "dup": dup, "bad": bad,
            }
            res["ok"] = t_final is not None and lines == n and lost == dup == bad == 0
            return res
        finally:
            for s in spies:
                if s.poll() is None:
                    s.kill()
            stop(agent, collector)
            shutil.rmtree(out, ignore_errors=True)

    def close(self) -> None:
        stop(self.master)


RATIOS = (("be", "tcp"), ("e2e", "tcp"), ("e2e", "relp"), ("local", "tcp"), ("be-base", "tcp"),
          ("e2e-base", "tcp"), ("e2e-base", "relp"), ("local-base", "tcp"), ("be", "be-base"),
          ("e2e", "e2e-base"), ("local", "local-base"))
RESULT = re.compile(r"^\S+ (\S+) (\d+) lines in ([\d.]+) s = (\d+) ev/s \(lost (\d+), dup (\d+)\)")
CPU = re.compile(r"cpu .* agent ([\d.]+) s, collector ([\d.]+) s")


def run_rsyslog(peer: Path, mode: str, n: int) -> dict:
    p = subprocess.run(["bash", str(peer), str(n), mode], capture_output=True, text=True,
                       timeout=400)
    res = {"mode": mode, "ok": False, "t": None, "cpu_agent": None, "cpu_coll": None,
           "text": p.stdout + p.stderr}
    for line in p.stdout.splitlines():
        if m := RESULT.match(line):
            res.update(t=float(m[3]), lost=int(m[5]), dup=int(m[6]))
        if m := CPU.search(line):
            res.update(cpu_agent=float(m[1]), cpu_coll=float(m[2]))
    res["ok"] = p.returncode == 0 and res["t"] is not None
    return res


def missing_rsyslog() -> list[str]:
    missing = []
    if shutil.which("rsyslogd") is None and not Path("/usr/sbin/rsyslogd").exists():
        missing.append("rsyslog")
    if not all(Path(m).exists() for m in RELP_MODULES):
        missing.append("rsyslog-relp")
    return missing


def fmt_run(name: str, r: dict, n: int) -> str:
    if r["t"] is None:
        return f"  {name:13s} FAILED"
    s = f"  {name:13s} {n / r['t']:>10,.0f} ev/s ({r['t']:.2f} s)"
    if r.get("t_final"):
        s += f", final {n / r['t_final']:>9,.0f} ev/s"
    if r.get("mode") == "local":
        s += (f"; cpu s per 1M ev: {r['cpu_coll'] * 1e6 / n:.2f}; "
              f"peak RSS {r['rss_coll']:.0f} MB")
    elif r.get("cpu_agent") is not None:
        s += (f"; cpu s per 1M ev: agent {r['cpu_agent'] * 1e6 / n:.2f}, "
              f"collector {r['cpu_coll'] * 1e6 / n:.2f}")
    if "rss_agent" in r and r.get("mode") != "local":
        s += f"; peak RSS agent {r['rss_agent']:.0f} MB, collector {r['rss_coll']:.0f} MB"
    if "lost" in r:
        s += f"; lost {r['lost']}, dup {r['dup']}"
    if r.get("bad"):
        s += f", malformed {r['bad']}"
    if not r["ok"]:
        s += "  <-- NOT OK"
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=1_000_000)
    ap.add_argument("-k", type=int, default=2, help="rounds (best of K)")
    ap.add_argument("--only", choices=list(MODES),
                    help="only this run (be: BE and rsyslog TCP; e2e: E2E and rsyslog RELP; "
                         "local: tail | collectorSink in one node)")
    ap.add_argument("--peer", type=Path, default=PEER, help="peer_rsyslog.sh to run")
    ap.add_argument("--py-spy", dest="spy", type=Path, help="profile the project's runs (agent and collector "
                         "processes; with --only, that mode's) into DIR")
    ap.add_argument("--base", type=Path,
                    help="another checkout (with its .venv, e.g. a git worktree of an older "
                         "commit) whose nodes run too, interleaved: before/after in one run")
    args = ap.parse_args()
    if missing := missing_rsyslog():
        print(f"rsyslog is missing: install it with `apt-get install -y {' '.join(missing)}` "
              f"(Debian; the daemon need not run as a service)", file=sys.stderr)
        return 2
    pairs = list(MODES.items())
    if args.only:
        pairs = [p for p in pairs if p[0] == args.only]
    tmp = Path(tempfile.mkdtemp(prefix="flume-compare-"))
    src = tmp / "input.log"
    benchlib.gen(str(src), args.n)
    with open("/proc/loadavg") as f:
        load0 = f.read().split()[:3]
    print(f"N = {args.n:,}, {args.k} round(s), load average {' '.join(load0)}, "
          f"{os.cpu_count()} cores", flush=True)
    results: dict[str, list[dict]] = {}
    proj = Project(tmp)
    try:
        for rnd in range(1, args.k + 1):
            for mode, peer_mode in pairs:
                # with --base, the two checkouts take turns at going first (the box's load
                # drifts within a round)
                order = [None, args.base.resolve()] if args.base else [None]
                if rnd % 2:
                    order.reverse()
                for root in order:
                    r = proj.run(mode, src, args.n, None if root else args.spy, root)
                    key, label = (mode + "-base", "base") if root else (mode, "project")
                    results.setdefault(key, []).append(r)
                    print(f"round {rnd}: " + fmt_run(f"{label} {mode.upper()}", r,
                                                     args.n).strip(), flush=True)
                if peer_mode is None:
                    continue
                r = run_rsyslog(args.peer, peer_mode, args.n)
                results.setdefault(peer_mode, []).append(r)
                print(f"round {rnd}: " + fmt_run(f"rsyslog {peer_mode.upper()}", r, args.n).strip(),
                      flush=True)
                if not r["ok"]:
                    print("  " + r["text"].strip().replace("\n", "\n  "), flush=True)
    finally:
        proj.close()
        shutil.rmtree(tmp, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[:3]
    best = {}
    for k, rs in results.items():
        ok = [r for r in rs if r["ok"]]
        best[k] = min(ok, key=lambda r: r["t"]) if ok else None
    print(f"\nbest of {args.k} (load average at the end {' '.join(load1)}):")
    names = {"be": "project BE", "tcp": "rsyslog TCP", "e2e": "project E2E",
             "relp": "rsyslog RELP", "be-base": "base BE", "e2e-base": "base E2E",
             "local": "project local", "local-base": "base local"}
    for k in ("be-base", "be", "tcp", "e2e-base", "e2e", "relp", "local-base", "local"):
        if k in best:
            print(fmt_run(names[k], best[k], args.n) if best[k] else f"  {names[k]:13s} no good run")

    def rate(k, final=False):
        r = best.get(k)
        if not r:
            return None
        t = r.get("t_final") if final else r["t"]
        return args.n / t if t else None

    print("ratios (events/s over events/s):")
    for a, b in RATIOS:
        ra, rb, raf, rbf = rate(a), rate(b), rate(a, True), rate(b, True)
        if ra and rb:
            final = f"final files: {raf / (rbf or rb):.2f}" if raf else "final: -"
            print(f"  {names[a]} / {names[b]}: {ra / rb:.2f}  ({final})")
    # The same pairs within each round (runs minutes apart at most): less exposed to the
    # box's load drifting between rounds than the best-of-K figures above.
    print(f"ratios within each round (median of {args.k}; each round's in brackets):")
    for a, b in RATIOS:
        if a not in results or b not in results:
            continue
        rs = [ra["t"] and rb["t"] and rb["t"] / ra["t"]
              for ra, rb in zip(results[a], results[b]) if ra["ok"] and rb["ok"]]
        rs = [x for x in rs if x]
        if rs:
            print(f"  {names[a]} / {names[b]}: {statistics.median(rs):.2f}  "
                  f"[{', '.join(f'{x:.2f}' for x in rs)}]")
    failed = [r for rs in results.values() for r in rs if not r["ok"]]
    if failed:
        print(f"{len(failed)} run(s) NOT OK (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
