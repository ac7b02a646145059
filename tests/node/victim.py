"""Drives :mod:`tests.node.net_victim`: a network source in its own process, whose memory,
CPU time and log the tests measure while they attack it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Victim:
    """``Victim(dir, spec, nofile=None, stalled=False)``: the process is running and its
    source listening (``port``) once the constructor returns; ``stop()`` kills it."""

    def __init__(self, d: Path, spec: str, nofile: int | None = None, stalled: bool = False):
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        if stalled:
            (d / "stall").touch()
        self.stderr = d / "stderr.log"
        args = [sys.executable, "-m", "tests.node.net_victim", str(d), spec]
        if nofile is not None:
            args.append(str(nofile))
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(args, cwd=REPO, stderr=err)
        self.port = wait_until(lambda: self.status().get("port"), 20, "the victim's port")

    def status(self) -> dict:
        try:
            return json.loads((self.dir / "status.json").read_bytes())
        except (OSError, ValueError):
            return {}

    def metric(self, name: str) -> int:
        return self.status().get("metrics", {}).get(name, 0)

    def memory_kb(self, field: str = "VmRSS") -> int:
        """``VmRSS`` (now) or ``VmHWM`` (peak) of the process, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.proc.pid}")

    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK    # utime + stime

    def log_lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()

    def release(self) -> None:
        """The sink takes events from now on."""
        (self.dir / "stall").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
