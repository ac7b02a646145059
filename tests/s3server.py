"""A real S3-protocol server process for the object-store tests and benchmarks: moto's
standalone server (``python -m moto.server``), on a free loopback port, in its own
process (requests go over HTTP exactly as to S3)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.waiting import wait_until

KEY, SECRET, REGION = "testing-key", "testing-secret", "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """``S3Server(log_dir)``: serving at ``endpoint`` once the constructor returns;
    ``stop()`` ends the process."""

    def __init__(self, log_dir: Path):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_DEFAULT_REGION=REGION)
        with open(log_dir / "moto.log", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                 str(self.port)], stdout=err, stderr=err, env=env)
        wait_until(self._up, 30, "the S3 server to answer", ignore=(httpx.HTTPError,))

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"moto.server exited with {self.proc.returncode}")
        return httpx.get(self.endpoint + "/", timeout=2).status_code < 500

    def options(self) -> dict:
        """Storage settings (node/object_store.py) for this server."""
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET,
                "region": REGION, "part_size": 5 * 1024 * 1024}

    def new_bucket(self, prefix: str = "b") -> str:
        from flume_og.node.object_store import ObjectStore
        name = f"{prefix}-{uuid.uuid4().hex[:12]}".lower()
        ObjectStore(name, self.options()).client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
