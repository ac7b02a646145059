"""A master stops cleanly, its managed ZooKeeper with it, when signals arrive back to back
(a terminal's Ctrl-C and a script's SIGTERM), and a later signal forces the exit."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_signals_back_to_back_stop_the_master_and_its_zookeeper(tmp_path):
    zk_port, http_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flume_og.master.cli", "master",
                             "--zk-port", str(zk_port), "--http-port", str(http_port),
                             "--data-dir", str(tmp_path / "master")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{http_port}/api/health",
                                     timeout=2).status_code == 200, 60,
                   "the master answering", ignore=(httpx.HTTPError,))
        assert listening(zk_port)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.001)      # the spacing of the two signals under test
        for _ in range(20):
            os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read().decode()[-2000:]
        assert "exiting at once" not in proc.stderr.read().decode()
        wait_until(lambda: not listening(zk_port), 20, "the managed ZooKeeper gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
