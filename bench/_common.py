"""What the benchmark scripts share: free ports, the master and node processes, the
multiconfig of many logical nodes, percentiles."""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, log) -> subprocess.Popen:
    """``master.cli ARGS`` (``master ...`` or ``node ...``) as a process logging to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "flume_og.master.cli", "--log-level", "WARNING",
                             *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def start_master(tmp: Path, log) -> tuple[subprocess.Popen, str, int]:
    """A master with its own managed ZooKeeper on free ports, its data in ``tmp/master``,
    once it answers: (process, base URL, ZooKeeper port). Stopped again if it does not."""
    zk_port, http_port = free_port(), free_port()
    master = start(["master", "--zk-port", str(zk_port), "--http-port", str(http_port),
                    "--data-dir", str(tmp / "master")], log)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_http(url + "/api/health")
    except BaseException:
        stop(master)
        raise
    return master, url, zk_port


@contextmanager
def running_master():
    """A master (see :func:`start_master`) in a fresh temporary directory, stopped at the
    end: yields (directory, process log file, base URL, ZooKeeper port)."""
    tmp = Path(tempfile.mkdtemp(prefix="flume-bench-"))
    log = open(tmp / "procs.log", "ab")
    master, url, zk_port = start_master(tmp, log)
    try:
        yield tmp, log, url, zk_port
    finally:
        stop(master)


def stop(*procs: subprocess.Popen | None, timeout: float = 20) -> None:
    """Terminate each process in turn, killing it if it is still there after ``timeout``."""
    for p in procs:
        if p is None:
            continue
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def multiconfig_spec(n: int) -> str:
    """A ``multiconfig`` of ``n`` logical nodes ``agent0000``..., each a tail into a file."""
    return "".join(f'agent{i:04d} : tail("/var/log/app{i}.log") | '
                   f'{{ batch(100) => gzip => text("/srv/out/{i}.log") }} ;\n'
                   for i in range(n))


def check_succeeded(r: httpx.Response, what: str) -> None:
    """Exit with the answer unless the command ``what`` succeeded."""
    if r.status_code != 200 or r.json().get("state") != "SUCCEEDED":
        raise SystemExit(f"{what} failed: {r.status_code} {r.text[:500]}")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
