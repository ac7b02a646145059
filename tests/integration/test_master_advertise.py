"""A master whose nodes live on other hosts hands out a ZooKeeper address they can reach,
or refuses to start with what to do."""
from __future__ import annotations

import subprocess
import sys

from .harness import ROOT, Master


def test_a_master_beyond_loopback_with_a_loopback_zookeeper_is_refused(tmp_path):
    token = tmp_path / "token"
    token.write_text("t" * 40 + "\n")
    r = subprocess.run([sys.executable, "-m", "flume_og.master.cli", "master", "--data-dir",
                        str(tmp_path / "m"), "--http-port", "0", "--bind", "0.0.0.0",
                        "--token-file", str(token)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "--zk-bind 0.0.0.0 --advertise HOST" in r.stderr and "--zk" in r.stderr


def test_the_managed_zookeeper_is_handed_out_under_the_advertised_name(tmp_path):
    m = Master(tmp_path, None, "/flume", extra=("--zk-bind", "0.0.0.0",
                                                "--advertise", "zk.example.net"))
    try:
        answer = m.get("/api/cluster").json()
        assert answer["zk"] == f"zk.example.net:{m.zk_port}"
    finally:
        m.stop()
