"""zk/'s errors are not node's FlumeError (zk/ imports nothing from node/), yet the command
line still reports them as every error raised on purpose: one line, exit status 1."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_zk_error_is_a_one_line_message_not_a_traceback(tmp_path):
    # the managed ZooKeeper cannot run: zk.server.ZooKeeperUnavailable, raised at start
    env = {**os.environ, "ZOOKEEPER_HOME": str(tmp_path / "nowhere")}
    r = subprocess.run([sys.executable, "-m", "flume_og.master.cli", "master", "--data-dir",
                        str(tmp_path / "m"), "--http-port", "0"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "flume: no ZooKeeper jars under ZOOKEEPER_HOME" in r.stderr
    assert "Traceback" not in r.stderr
