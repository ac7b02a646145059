"""Real master and node processes for integration tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from kazoo.exceptions import NoNodeError

from flume_og.node.metrics import summarize
from flume_og.zk.acl import Credential
from flume_og.zk.client import connect
from tests import waiting
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_until(cond, timeout=20.0, what="condition", interval=0.02):
    """:func:`tests.waiting.wait_until`, counting an HTTP or socket error as "not yet"
    (a process still starting)."""
    return waiting.wait_until(cond, timeout, what, interval,
                              ignore=(httpx.HTTPError, OSError))

MASTER_CRED = Credential("flume-master", "master-secret-0123456789")
NODE_CRED = Credential("flume-node", "node-secret-0123456789ab")


def auth_file(path: Path, *lines: str) -> Path:
    """An auth file (zk/acl.py) of ``lines``, readable by its owner only."""
    path.write_text("".join(line + "\n" for line in lines))
    os.chmod(path, 0o600)
    return path


def auth_files(tmp: Path) -> tuple[Path, Path]:
    """(a master's auth file, a node's) with MASTER_CRED and NODE_CRED."""
    return (auth_file(tmp / "master.auth", MASTER_CRED.line("master"),
                      NODE_CRED.line("node")),
            auth_file(tmp / "node.auth", NODE_CRED.line("node")))


def remove_protected(zk: str, root: str) -> None:
    """Delete a tree protected with MASTER_CRED (no other client may)."""
    c = connect(zk, auth=MASTER_CRED)
    try:
        c.delete(root, recursive=True)
    except NoNodeError:
        pass
    finally:
        c.stop()
        c.close()


class Proc:
    """A flume process whose output goes to a log file in the test's directory."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.args = args
        f = open(log, "ab")
        self.p = subprocess.Popen([sys.executable, "-m", "flume_og.master.cli", *args], cwd=ROOT,
                                  stdout=f, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})})
        f.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        return self.p.returncode


class Master(Proc):
    """A master on ZooKeeper ``zk`` (None: its own managed ZooKeeper on a free port);
    with ``auth_file`` it protects the tree with ACLs, else it runs with --zk-insecure."""

    def __init__(self, tmp: Path, zk: str | None, root: str, token_file: Path | None = None,
                 name: str = "m", auth_file: Path | None = None,
                 extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / f"master-{name}"
        args = ["--log-level", "INFO", "master", "--zk-root", root,
                "--http-port", str(self.port), "--data-dir", str(self.data_dir)]
        if zk is None:
            self.zk_port = free_port()
            args += ["--zk-port", str(self.zk_port)]
        else:
            args += ["--zk", zk]
        if auth_file:
            args += ["--zk-auth-file", str(auth_file)]
        elif zk is not None:
            args += ["--zk-insecure"]
        if token_file:
            args += ["--token-file", str(token_file)]
        super().__init__(args + list(extra), tmp / f"master-{name}.log")
        wait_until(lambda: httpx.get(self.url + "/api/health", timeout=2).status_code == 200,
                   60, f"master {name} up: {self.output()[-2000:]}")

    def get(self, path: str, **kw):
        return httpx.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, json=None, **kw):
        return httpx.post(self.url + path, json=json, timeout=30, **kw)

    def command(self, command: str, *args: str, **kw):
        return self.post("/api/commands", {"command": command, "args": list(args)}, **kw)

    def logical(self, name: str) -> dict:
        st = self.get("/api/status").json()
        rows = st.get("logical", st) if isinstance(st, dict) else st
        if isinstance(rows, dict):
            return rows.get(name) or {}
        return next((r for r in rows if r.get("name") == name), {})


class Node(Proc):
    """A node process; its own status page is on ``http_port``."""

    def __init__(self, tmp: Path, zk: str | None, root: str, name: str = "p1",
                 auth_file: Path | None = None, extra: tuple[str, ...] = ()):
        """``zk`` None: ``extra`` says where (``--master URL``)."""
        self.name = name
        self.http_port = free_port()
        args = ["--log-level", "INFO", "node", "-n", name, "--zk-root", root,
                "--data-dir", str(tmp / f"node-data-{name}"), "--http-port",
                str(self.http_port), *extra]
        if zk is not None:
            args += ["--zk", zk]
        if auth_file:
            args += ["--zk-auth-file", str(auth_file)]
        super().__init__(args, tmp / f"node-{name}.log")

    def counters(self, logical: str) -> dict:
        """``logical``'s counters, live from this node's own status page ({} before the
        node answers)."""
        try:
            st = httpx.get(f"http://127.0.0.1:{self.http_port}/status.json", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return {}
        row = (st.get("logical") or {}).get(logical) or {}
        return row.get("counters") or (summarize(row) if row else {})
