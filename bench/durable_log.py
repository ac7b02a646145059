#!/usr/bin/env python3
"""The two durable logs alone: ``bench/durable_log.py [N] [SIZE]``.

In a fresh temporary directory (on the disk of ``$TMPDIR``), with N records of SIZE bytes
(defaults 20,000 and 10,000):

* write-ahead log: N groups appended ten per call (one fdatasync per call), reopen (every
  record read back and checked), acknowledge every group (segments deleted);
* diskFailover spool: N writes, reopen (every record header scanned), then peek and
  advance through every record (the replay), which empties the spool.

Prints records/s for each phase. The pipeline benchmark (``bench/pipeline.py``) measures
the products end to end; this one isolates the logs' own cost.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flume_og.node.decorators.disk_failover import Spool  # noqa: E402
from flume_og.node.wal import WriteAheadLog  # noqa: E402


def timed(label: str, n: int, fn) -> None:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    print(f"  {label:<22} {n / dt:>12,.0f} records/s ({dt:.2f} s)", flush=True)


def bench_wal(d: Path, n: int, payload: bytes) -> None:
    w = WriteAheadLog(d)
    w.open()
    timed("wal append", n, lambda: [w.append([(payload, 10)] * 10) for _ in range(n // 10)])
    w.close()
    w = WriteAheadLog(d)
    live = []
    timed("wal reopen", n, lambda: live.extend(w.open()))
    assert len(live) == n // 10 * 10
    timed("wal ack", n, lambda: [w.ack([g.seq]) for g in live])
    w.close()


def bench_spool(d: Path, n: int, payload: bytes) -> None:
    s, _ = Spool.claim(d, "spool")
    timed("spool write", n, lambda: [s.write(payload, 10) for _ in range(n)])
    s.close()
    box = []
    timed("spool reopen", n, lambda: box.append(Spool.claim(d, "spool")[0]))
    s = box[0]
    assert s.pending_records == n

    def replay():
        while (rec := s.peek()) is not None:
            s.advance(len(rec[0]))
    timed("spool replay", n, replay)
    assert s.empty
    s.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    tmp = Path(tempfile.mkdtemp(prefix="flume-durable-log-"))
    try:
        print(f"{n:,} records of {size:,} bytes in {tmp}")
        bench_wal(tmp / "wal", n, payload)
        bench_spool(tmp / "dfo", n, payload)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
