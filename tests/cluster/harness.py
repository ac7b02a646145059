"""A real Flume cluster on one machine, each process a host of its own (tests/cluster/netns.py).

:class:`Cluster` starts, on the bridge ``10.213.0.0/24``:

* ``zk1``-``zk3`` (.11-.13): a ZooKeeper ensemble (QuorumPeerMain of Debian's jars, one
  ``zoo.cfg`` each, client port 2181);
* ``m1``, ``m2`` (.21, .22): masters on that ensemble, ACLs on (master and node
  credentials), REST API on their address, port 35871, with a write token;
* ``c1``, ``c2`` (.31, .32): nodes running collectors ``c1``/``c2`` of flow ``f``
  (``autoCollectorSource | collectorSink`` into ``<tmp>/out/<collector>``);
* ``a1``-``a3`` (.41-.43): nodes running agents ``a1``-``a3`` tailing
  ``<tmp>/src/<agent>.log`` into ``auto<Mode>Chain`` (the masters pick two collectors).

Every process runs ``ip netns exec <host> <python> -m flume_og.master.cli ...`` with its log in
``<tmp>/logs``; nodes are given ``--zk`` and ``--advertise <address>``, and event links
run over mutual TLS: a test CA (``<tmp>/pki``, tests/tls_certs.py) signs each node a
certificate naming its address and host name, given with ``--tls-cert/--tls-key/--tls-ca``
(collectors therefore listen on 0.0.0.0 and require the agents' certificates). Status pages
keep their loopback default and are read from inside the node's namespace.
:meth:`Cluster.close` stops everything and deletes the namespaces, whatever happened.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from flume_og.node.metrics import summarize
from tests import waiting
from tests.tls_certs import issue
from tests.integration.harness import MASTER_CRED, NODE_CRED, auth_file
from flume_og.zk.server import classpath

from .netns import Network

ROOT = Path(__file__).resolve().parents[2]
MASTER_PORT = 35871
STATUS_PORT = 35862
ZK_PORT = 2181
ROLES = {"zk1": 11, "zk2": 12, "zk3": 13, "m1": 21, "m2": 22, "c1": 31, "c2": 32,
         "a1": 41, "a2": 42, "a3": 43}
ZK_HOSTS = ("zk1", "zk2", "zk3")
MASTERS = ("m1", "m2")
COLLECTORS = ("c1", "c2")
AGENTS = ("a1", "a2", "a3")
FLOW = "f"


def wait_until(cond, timeout=30.0, what="condition", interval=0.05):
    """:func:`tests.waiting.wait_until`; an HTTP or socket error counts as "not yet"."""
    return waiting.wait_until(cond, timeout, what, interval,
                              ignore=(httpx.HTTPError, OSError, ValueError))


class Proc:
    """One process in a host's namespace, its output appended to ``log``."""

    def __init__(self, net: Network, host: str, argv: list[str], log: Path):
        self.host, self.argv, self.log, self.net = host, argv, log, net
        self.p: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as f:
            self.p = subprocess.Popen(self.net.command(self.host, self.argv), cwd=ROOT,
                                      stdout=f, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            self.p.send_signal(sig)

    def kill(self) -> None:
        if self.alive:
            self.p.send_signal(signal.SIGCONT)
            self.p.kill()
            self.p.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.alive:
            self.p.send_signal(signal.SIGCONT)    # a paused process cannot exit
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self, tail: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-tail:]


def flume(*args: str) -> list[str]:
    return [sys.executable, "-m", "flume_og.master.cli", "--log-level", "INFO", *args]


class Cluster:
    """The cluster of the module docstring, under ``tmp``; ``mode`` is E2E, DFO or BE."""

    def __init__(self, tmp: Path, mode: str = "E2E", prefix: str = "flc"):
        self.tmp, self.mode = Path(tmp), mode
        self.procs: dict[str, Proc] = {}
        self.writers: dict[str, threading.Thread] = {}
        self.written: dict[str, int] = {}
        self.retried = 0                       # commands tried again (see command)
        for d in ("logs", "src", "out", "data"):
            (self.tmp / d).mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(16)
        (self.tmp / "token").write_text(self.token + "\n")
        os.chmod(self.tmp / "token", 0o600)
        self.master_auth = auth_file(self.tmp / "master.auth", MASTER_CRED.line("master"),
                                     NODE_CRED.line("node"))
        self.node_auth = auth_file(self.tmp / "node.auth", NODE_CRED.line("node"))
        self.ca = None                         # made with the first node's certificate
        self.net = Network(prefix)
        try:
            for host, n in ROLES.items():
                self.net.add_host(host, n)
        except BaseException:
            self.net.destroy()
            raise
        self.zk_connect = ",".join(f"{self.addr(h)}:{ZK_PORT}" for h in ZK_HOSTS)

    def addr(self, host: str) -> str:
        return self.net.hosts[host]

    # ------------------------------------------------------------ starting
    def start(self) -> "Cluster":
        """Ensemble, masters, collectors, agents; returns once every agent is ACTIVE."""
        t0 = time.monotonic()
        for h in ZK_HOSTS:
            self.start_zk(h)
        wait_until(lambda: self.zk_leader() is not None, 90,
                   "the ensemble elected a leader")
        for h in MASTERS:
            self.start_master(h)
        for h in MASTERS:
            wait_until(lambda: self.master_get(h, "/api/health").status_code == 200, 90,
                       f"master {h} up: {self.procs[h].output()}")
        for h in COLLECTORS + AGENTS:
            self.start_node(h)
        for c in COLLECTORS:
            self.config(c, "autoCollectorSource",
                        f'collectorSink("file://{self.tmp / "out" / c}", "data-", 1000)')
        for a in AGENTS:
            (self.tmp / "src" / f"{a}.log").touch()
            self.config(a, f'tail("{self.tmp / "src" / f"{a}.log"}")',
                        f"auto{self.mode}Chain")
        for name in COLLECTORS + AGENTS:
            self.wait_active(name, 90)
        self.started_in = time.monotonic() - t0
        return self

    def start_zk(self, host: str) -> Proc:
        d = self.tmp / host
        (d / "data").mkdir(parents=True, exist_ok=True)
        (d / "data" / "myid").write_text(f"{ZK_HOSTS.index(host) + 1}\n")
        servers = "".join(f"server.{i + 1}={self.addr(h)}:2888:3888\n"
                          for i, h in enumerate(ZK_HOSTS))
        (d / "zoo.cfg").write_text(
            f"tickTime=500\ninitLimit=20\nsyncLimit=4\ndataDir={d / 'data'}\n"
            f"clientPort={ZK_PORT}\nclientPortAddress={self.addr(host)}\n"
            "admin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\n"
            "maxClientCnxns=0\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n"
            + servers)
        self.procs[host] = Proc(self.net, host, [
            shutil.which("java"), "-Xmx96m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath(),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(d / "zoo.cfg")],
            self.tmp / "logs" / f"{host}.log")
        return self.procs[host]

    def start_master(self, host: str) -> Proc:
        self.procs[host] = Proc(self.net, host, flume(
            "master", "--zk", self.zk_connect, "--zk-auth-file", str(self.master_auth),
            "--bind", self.addr(host), "--http-port", str(MASTER_PORT),
            "--token-file", str(self.tmp / "token"),
            # the namespaces' bridge is the harness's own network: plain HTTP is opted in
            # (TLS of the REST API has its own tests, tests/master/test_tls.py)
            "--insecure-http",
            "--data-dir", str(self.tmp / "data" / host)), self.tmp / "logs" / f"{host}.log")
        return self.procs[host]

    def start_node(self, host: str) -> Proc:
        # a folder per node: issue() rewrites the CA's file, which a starting node reads
        pem, self.ca = issue(self.tmp / "pki" / host, self.addr(host), host, ca=self.ca,
                             prefix=host)
        self.procs[host] = Proc(self.net, host, flume(
            "node", "-n", host, "--zk", self.zk_connect, "--zk-auth-file",
            str(self.node_auth), "--advertise", self.addr(host), "--tls-cert", str(pem.cert),
            "--tls-key", str(pem.key), "--tls-ca", str(pem.ca),
            "--http-port", str(STATUS_PORT), "--data-dir", str(self.tmp / "data" / host)),
            self.tmp / "logs" / f"{host}.log")
        return self.procs[host]

    def restart(self, host: str) -> Proc:
        """Start ``host``'s process again (after a kill), same arguments."""
        self.procs[host].start()
        return self.procs[host]

    # ------------------------------------------------------------ ZooKeeper
    def zk_mode(self, host: str) -> str | None:
        """leader, follower, or None (down, or not serving)."""
        try:
            with self.net.inside(), socket.create_connection(
                    (self.addr(host), ZK_PORT), timeout=1) as s:
                s.sendall(b"srvr")
                s.shutdown(socket.SHUT_WR)
                text = s.recv(4096).decode(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def zk_leader(self) -> str | None:
        """The leading server, once a follower follows it."""
        modes = {h: self.zk_mode(h) for h in ZK_HOSTS}
        if "follower" in modes.values():
            return next((h for h, m in modes.items() if m == "leader"), None)
        return None

    # ------------------------------------------------------------ masters
    def _url(self, host: str, path: str) -> str:
        return f"http://{self.addr(host)}:{MASTER_PORT}{path}"

    def master_get(self, host: str, path: str) -> httpx.Response:
        with self.net.inside():
            return httpx.get(self._url(host, path), timeout=10)

    def command(self, command: str, *args: str, master: str = "m1",
                retry_for: float = 0.0) -> dict:
        """Run a master command; SUCCEEDED or AssertionError. With ``retry_for``, an
        answer 503 (the master is not connected to ZooKeeper) or no answer is tried again
        for that many seconds, as an operator would; ``self.retried`` counts those."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                with self.net.inside():
                    r = httpx.post(self._url(master, "/api/commands"),
                                   json={"command": command, "args": list(args)},
                                   timeout=30,
                                   headers={"Authorization": f"Bearer {self.token}"})
            except httpx.HTTPError:
                if time.monotonic() >= deadline:
                    raise
            else:
                if r.status_code != 503 or time.monotonic() >= deadline:
                    break
            self.retried += 1
            time.sleep(0.5)     # pacing of the retries, not a wait for a state
        assert r.status_code == 200 and r.json().get("state") == "SUCCEEDED", r.text
        return r.json()

    def config(self, name: str, source: str, sink: str, master: str = "m1") -> None:
        self.command("config", name, FLOW, source, sink, master=master)

    def status(self, master: str = "m1") -> dict:
        """``{logical name: row}`` of the master's /api/status."""
        r = self.master_get(master, "/api/status")
        if r.status_code != 200:
            raise httpx.HTTPStatusError(f"{master}: {r.status_code} {r.text[:300]}",
                                        request=r.request, response=r)
        st = r.json()
        rows = st.get("logical", st) if isinstance(st, dict) else st
        if isinstance(rows, dict):
            return rows
        return {r["name"]: r for r in rows}

    def wait_active(self, name: str, timeout: float = 60, master: str = "m1") -> None:
        wait_until(lambda: self.status(master).get(name, {}).get("state") == "ACTIVE",
                   timeout, f"{name} ACTIVE: {self.procs.get(name) and self.procs[name].output()}")

    # ------------------------------------------------------------ nodes
    def node_status(self, host: str) -> dict:
        """The node's own status page, read inside its namespace ({} when it does not
        answer)."""
        try:
            with self.net.inside(host):
                return httpx.get(f"http://127.0.0.1:{STATUS_PORT}/status.json",
                                 timeout=5).json()
        except (httpx.HTTPError, ValueError, OSError):
            return {}

    def counters(self, host: str, logical: str | None = None) -> dict:
        row = (self.node_status(host).get("logical") or {}).get(logical or host) or {}
        return row.get("counters") or (summarize(row) if row else {})

    # ------------------------------------------------------------ data
    def write_counters(self, agent: str, n: int, seconds: float) -> threading.Thread:
        """Append ``<agent> <i>`` for i < n to the agent's file, evenly over ``seconds``
        (chunks every 0.1 s), from a thread."""
        path = self.tmp / "src" / f"{agent}.log"
        chunks = max(1, int(seconds / 0.1))

        def run() -> None:
            with open(path, "ab", buffering=0) as f:
                for k in range(chunks):
                    lo, hi = n * k // chunks, n * (k + 1) // chunks
                    f.write(b"".join(b"%s %07d\n" % (agent.encode(), i)
                                     for i in range(lo, hi)))
                    self.written[agent] = hi
                    time.sleep(0.1)     # the writer's pace: lines keep coming during the fault

        t = threading.Thread(target=run, daemon=True, name=f"writer-{agent}")
        t.start()
        self.writers[agent] = t
        return t

    def output(self) -> dict[str, list[int]]:
        """Every counter in the collectors' final files (hidden files excluded), per
        agent, in file order."""
        seen: dict[str, list[int]] = {}
        for f in sorted((self.tmp / "out").rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                for line in f.read_bytes().splitlines():
                    agent, _, i = line.partition(b" ")
                    seen.setdefault(agent.decode(), []).append(int(i))
        return seen

    def errors(self) -> dict[str, str]:
        """Logical nodes in ERROR at either master, with their last error (each master
        is given 30 s to answer: one cut off from ZooKeeper answers 503 until it has a
        session again)."""
        out = {}
        for m in MASTERS:
            if self.procs[m].alive:
                rows = wait_until(lambda: self.status(m), 30, f"master {m} answering")
                for name, row in rows.items():
                    if row.get("state") == "ERROR":
                        out[name] = row.get("last_error") or row.get("error") or ""
        return out

    # ------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop every process (agents first, ZooKeeper last), delete the namespaces."""
        try:
            order = list(AGENTS) + list(COLLECTORS) + list(MASTERS) + list(ZK_HOSTS)
            for host in order:
                if host in self.procs:
                    self.procs[host].stop()
        finally:
            self.net.destroy()

    def summary(self) -> str:
        return json.dumps({h: p.alive for h, p in self.procs.items()})


# ---------------------------------------------------------------- checks

def drained(c: Cluster, agents=AGENTS) -> bool:
    """Every counter written by ``agents`` is in the final files and no agent holds a
    group or event to send (E2E: WAL empty; DFO: spool empty)."""
    out = c.output()
    for a in agents:
        if len(set(out.get(a, []))) < c.written.get(a, 0):
            return False
        counters = c.counters(a)
        if not counters or counters.get("wal_groups", 0) or counters.get("spool_bytes", 0):
            return False
    return True


def best_effort(c: Cluster, agent: str) -> dict:
    """The agent's counters ``{dropped, unknown, whole}``. ``whole``: they account for
    every line written (``events_in`` = ``events_out`` + ``dropped`` + ``unknown`` =
    the lines written). A restarted flow keeps its sink's counts (they are carried by
    component path, docs/metrics.md); they do not add up once the sink's spec took
    another shape (other paths) while ``events_in`` goes on."""
    k = c.counters(agent)
    d, u, n = k.get("dropped", 0), k.get("unknown", 0), k.get("events_in", 0)
    return {"dropped": d, "unknown": u,
            "whole": n == k.get("events_out", 0) + d + u == c.written[agent]}


def settled_output(c: Cluster, agent: str | None = None, seconds: float = 2.0) -> int:
    """Wait until the counters in the final files (of ``agent``, or all) stop growing
    for ``seconds`` (the collectors roll files every second); their number."""
    seen: list[int] = []
    polls = int(seconds / 0.1)

    def stable():
        out = c.output()
        seen.append(len(out.get(agent, [])) if agent else sum(map(len, out.values())))
        return len(seen) > polls and seen[-polls - 1] == seen[-1] and (seen[-1],)

    return wait_until(stable, 60, "the final files to stop growing", interval=0.1)[0]


def duplicates(c: Cluster) -> dict[str, int]:
    """Per agent, counters found more than once in the final files (extra copies)."""
    return {a: len(v) - len(set(v)) for a, v in c.output().items()}


def missing(c: Cluster) -> dict[str, int]:
    """Per agent, counters written and found in no final file."""
    out = c.output()
    return {a: n - len(set(out.get(a, [])) & set(range(n))) for a, n in c.written.items()}
