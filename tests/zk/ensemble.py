"""A real three-server ZooKeeper ensemble on loopback, for tests of leader elections."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.conftest import free_port
from tests.waiting import wait_until
from flume_og.zk.server import classpath


def _srvr(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"srvr")
            s.shutdown(socket.SHUT_WR)
            return s.recv(4096).decode(errors="replace")
    except OSError:
        return ""


class Ensemble:
    """Three QuorumPeerMain processes under ``base`` (ticks of 200 ms, so an election
    takes well under a second); :meth:`kill_leader` SIGKILLs the current leader."""

    def __init__(self, base: Path, size: int = 3):
        self.base = Path(base)
        self.client_ports = [free_port() for _ in range(size)]
        peers = [(free_port(), free_port()) for _ in range(size)]
        servers = "".join(f"server.{i + 1}=127.0.0.1:{q}:{e}\n"
                          for i, (q, e) in enumerate(peers))
        self.procs: list[subprocess.Popen | None] = []
        for i, port in enumerate(self.client_ports):
            d = self.base / f"zk{i + 1}"
            (d / "data").mkdir(parents=True, exist_ok=True)
            (d / "data" / "myid").write_text(f"{i + 1}\n")
            (d / "zoo.cfg").write_text(
                f"tickTime=200\ninitLimit=20\nsyncLimit=5\ndataDir={d / 'data'}\n"
                f"clientPort={port}\nclientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\n"
                "maxClientCnxns=0\nminSessionTimeout=1000\n" + servers)
            log = open(d / "zookeeper.log", "ab")
            self.procs.append(subprocess.Popen(
                [shutil.which("java"), "-Xmx128m",
                 "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                 "-cp", classpath(), "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                 str(d / "zoo.cfg")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True))
            log.close()
        wait_until(lambda: self.leader() is not None, 60, "the ensemble elected a leader")

    @property
    def connect_string(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.client_ports)

    def mode(self, i: int) -> str | None:
        for line in _srvr(self.client_ports[i]).splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def leader(self) -> int | None:
        """The index of the server that leads, with a follower behind it, or None."""
        modes = [self.mode(i) if self.procs[i] else None for i in range(len(self.procs))]
        if "leader" in modes and "follower" in modes:
            return modes.index("leader")
        return None

    def kill_leader(self) -> int:
        i = self.leader()
        assert i is not None, "no leader to kill"
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)
        self.procs[i] = None
        return i

    def stop(self) -> None:
        for p in self.procs:
            if p is not None:
                p.kill()
                p.wait(10)
