#!/usr/bin/env python3
"""E2E onto object storage: ``bench/object_store.py [N] [--runs R]``.

One master (with its managed ZooKeeper), one collector node and one agent node as separate
processes, and an S3-protocol server as another (moto's standalone server, as in the
tests). The agent tails a file of N 100-byte lines through ``agentE2ESink``; the collector
writes ``collectorSink(..., rollMs=1000)`` (``--roll-ms``) to ``s3://bucket/...`` (multipart uploads
completed at commit; endpoint and credentials from the node's ``--storage-config``), then
the same pipeline writes local files. Prints, for each target, events/s from the agent's
configuration to the last line visible (a listing of the bucket / directory shows it in a
final object / file), objects (files) per second, and checks for loss and duplicates.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import free_port  # noqa: E402
from bench.pipeline import LINE, Bench, all_lines, make_input, output_bytes  # noqa: E402
from tests.s3server import S3Server  # noqa: E402


def run(b: Bench, tmp: Path, src: Path, n: int, target: str, s3=None, bucket=None,
        tag: str = "", roll_ms: int = 1000) -> tuple[float, int, int, int]:
    """(seconds, objects, lines, distinct lines) of one agent -> collector run."""
    cport = free_port()
    col, agent = f"collector{tag}", f"agent{tag}"
    extra = ["--storage-config", str(tmp / "storage.toml")] if s3 else []
    port = free_port()
    b.spawn(["node", "-n", col, "--master", b.url, "--data-dir",
                            str(tmp / "nodes"), "--http-port", str(port), *extra])
    b.config(col, f"collectorSource({cport})", f'collectorSink("{target}", "data-", {roll_ms})')
    b.wait_active(col)
    b.node(agent)
    t0 = time.perf_counter()
    b.config(agent, f'tail("{src}")', f'agentE2ESink("127.0.0.1", {cport})')
    want = n * LINE
    if s3 is not None:
        from flume_og.node.object_store import ObjectStore
        st = ObjectStore(bucket, s3.options())
        prefix = target.split(bucket + "/", 1)[1]

        def visible():
            objs = st.objects(prefix)
            return sum(size for _, size in objs.values()), len(objs)
    else:
        out = Path(target[len("file://"):])

        def visible():
            return output_bytes(out), sum(1 for f in out.rglob("*")
                                          if f.is_file() and not f.name.startswith("."))
    while True:
        got, objects = visible()
        if got >= want:
            break
        if time.perf_counter() - t0 > 900:
            raise SystemExit(f"gave up after 900 s ({got // LINE:,} of {n:,} lines)")
        time.sleep(0.05)
    dt = time.perf_counter() - t0
    if s3 is not None:
        lines = [ln for k in sorted(st.objects(prefix))
                 for ln in st.read(f"{bucket}/{k}").splitlines()]
    else:
        lines = all_lines(out)
    return dt, objects, len(lines), len(set(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=300_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--roll-ms", type=int, default=1000, help="the collector's rollMs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flume-s3bench-"))
    src = tmp / "in.log"
    make_input(src, args.n)
    s3 = S3Server(tmp / "moto")
    b = Bench(tmp)
    try:
        for r in range(args.runs):
            bucket = s3.new_bucket("bench")
            opts = s3.options()
            (tmp / "storage.toml").write_text(
                f'["s3://{bucket}"]\n' + "".join(f'{k} = "{v}"\n' if isinstance(v, str)
                                                 else f"{k} = {v}\n" for k, v in opts.items()))
            for kind in ("s3", "local"):
                target = (f"s3://{bucket}/out{r}" if kind == "s3"
                          else f"file://{tmp}/out-{kind}{r}")
                dt, objects, lines, distinct = run(
                    b, tmp, src, args.n, target, s3 if kind == "s3" else None, bucket,
                    tag=f"-{kind}{r}", roll_ms=args.roll_ms)
                print(f"{kind:5} (rollMs {args.roll_ms}): {args.n:,} events visible in {dt:.2f} s = "
                      f"{args.n / dt:,.0f} events/s, {objects} objects = "
                      f"{objects / dt:.2f} objects/s; lines {lines:,}, duplicates "
                      f"{lines - distinct}, missing {args.n - distinct}", flush=True)
    finally:
        b.close()
        s3.stop()


if __name__ == "__main__":
    main()
