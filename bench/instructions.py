#!/usr/bin/env python3
"""Instructions per event of the data path's hot functions, counted by valgrind.

``bench/instructions.py [--events N] [--python PY]`` runs each case under ``valgrind
--tool=cachegrind --cache-sim=no`` twice, making 0 and then 10 calls on the same batch, and
prints (instructions of the 10 calls - those of none) / (10 x N): start-up, imports and the
batch's construction cancel out; the garbage collector is off during the calls (its
cost follows the size of the heap, not the call). Unlike a rate, the figure does not move with the load of
a shared machine. ``--python`` runs another checkout's interpreter (its ``.venv``), for a
before/after comparison; cases that checkout cannot run (no ``node.event.Batch``) say so.

The batch: N events of 94-byte bodies (the ``bench/compare.py`` line) from one file, one
host, one priority, attributes ``tailSrcFile`` (and ``rolltag`` where the collector has
stamped it), timestamps over one second. "events" cases give a list of events, "batch"
cases the same events as a fast ``Batch`` (what the tail source and ``decode_events`` give
now). Needs valgrind (``apt-get install -y valgrind``).
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TS = 1_764_806_400_000
FILE = {"tailSrcFile": b"/var/log/app.log"}
TAG = b"20261204-120000000+0000.1"

CASES = {
    "encode_events (events)": "encode-events",
    "encode_events (batch)": "encode-batch",
    "decode_events": "decode",
    "batch_bytes (events)": "weigh-events",
    "batch_bytes (batch)": "weigh-batch",
    "Escaper.group (events)": "group-events",
    "Escaper.group (batch)": "group-batch",
    "RawFormat.encode (events)": "raw-events",
    "RawFormat.encode (batch)": "raw-batch",
    "tail's batch of lines (events)": "lines-events",
    "tail's batch of lines (batch)": "lines-batch",
}


def bodies(n: int) -> list[bytes]:
    return [b"%012d %s" % (i, b"x" * 80) for i in range(n)]


def events(n: int, tagged: bool = False):
    from flume_og.node.event import LOCAL_HOST, Event, Priority
    attrs = {**FILE, "rolltag": TAG} if tagged else FILE
    return [Event(b, TS + i * 1000 // n, 7_000 + i, Priority.INFO, LOCAL_HOST, dict(attrs))
            for i, b in enumerate(bodies(n))]


def batch(n: int, tagged: bool = False):
    from flume_og.node import codec
    b = codec.decode_events(codec.encode_events(events(n, tagged)))
    if type(b) is list:
        raise SystemExit(3)          # this checkout has no Batch
    return b


def inner(case: str, calls: int, made: int, n: int) -> None:
    """The measured process: set up ``case`` (``made`` batches, whatever ``calls``), then
    make ``calls`` calls."""
    from flume_og.node import codec
    from flume_og.node.escapes import Escaper
    from flume_og.node.formats import RawFormat
    from flume_og.node.sources._batchqueue import batch_bytes
    kind, _, form = case.rpartition("-")
    if case == "decode":
        data = codec.encode_events(events(n))
        work = [lambda: codec.decode_events(data)]
    elif kind == "lines":
        from flume_og.node import event as ev
        lines = bodies(n)
        if form == "batch":
            if not hasattr(ev, "lines_batch"):
                raise SystemExit(3)
            work = [lambda: ev.lines_batch(lines, dict(FILE))]
        else:
            work = [lambda: [ev.Event(r, TS, 7_000 + i, ev.Priority.INFO, ev.LOCAL_HOST,
                                      dict(FILE)) for i, r in enumerate(lines)]]
    else:
        make = batch if form == "batch" else events
        tagged = kind in ("group", "raw")
        # a fresh batch per call: a batch read as events is no longer columns
        items = [make(n, tagged) for _ in range(made)]
        esc = Escaper("/logs/%Y-%m-%d/data-%{rolltag}-%{host}", utc=True, path=True)
        fn = {"encode": codec.encode_events, "weigh": batch_bytes, "group": esc.group,
              "raw": RawFormat().encode}[kind]
        work = [lambda b=b: fn(b) for b in items]
    gc.collect()
    gc.disable()    # a collection's cost follows the heap, not the call: left out
    for k in range(calls):
        work[k % len(work)]()


def count(python: str, case: str, calls: int, made: int, n: int) -> int | None:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    p = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                        "--cachegrind-out-file=/dev/null", python, __file__, "--inner", case,
                        str(calls), str(made), str(n)], capture_output=True, text=True, env=env,
                       cwd=ROOT)
    if p.returncode == 3:
        return None
    m = re.search(r"I\s+refs:\s+([\d,]+)", p.stderr)
    if p.returncode != 0 or not m:
        raise SystemExit(f"{case}: valgrind failed:\n{p.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        sys.path.insert(0, str(ROOT))
        inner(sys.argv[2], *map(int, sys.argv[3:6]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=4096, help="events per batch (4096)")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter to measure (another checkout's .venv/bin/python)")
    ap.add_argument("--calls", type=int, default=10, help="calls measured per case (10)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is missing: apt-get install -y valgrind", file=sys.stderr)
        return 2
    print(f"instructions per event, {args.events} events per batch, {args.python}")
    for label, case in CASES.items():
        none = count(args.python, case, 0, args.calls, args.events)
        some = count(args.python, case, args.calls, args.calls, args.events)
        if none is None or some is None:
            print(f"  {label:32s} (not in this checkout)", flush=True)
            continue
        print(f"  {label:32s} {(some - none) / (args.calls * args.events):8,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
