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


class BrokenS3:
    """A real HTTP server on a free loopback port that speaks just enough S3 to be a broken
    or hostile store, in a thread of the test process:

    * ``"hang"``: accepts connections, reads the request and never answers (a hung store);
    * ``"same-page"``: every listing answers a truncated page that names the same place
      to go on from, every time;
    * ``"endless"``: every listing answers a truncated page of ``per_page`` new entries
      with a new place to go on from, for ever (``per_page`` 0: empty pages).

    ``connections`` counts the connections accepted, ``requests`` the requests read."""

    def __init__(self, mode: str, per_page: int = 10):
        import threading
        self.mode, self.per_page = mode, per_page
        self.connections = self.requests = 0
        self._page = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.endpoint = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def options(self, **extra) -> dict:
        return dict({"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET,
                     "region": REGION}, **extra)

    def _serve(self) -> None:
        import threading
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read_request(self, f) -> str | None:
        line = f.readline()
        if not line:
            return None
        length = 0
        while (h := f.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = h.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length:
            f.read(length)
        with self._lock:
            self.requests += 1
        return line.decode("latin-1")

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        f = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                line = self._read_request(f)
                if line is None:
                    return
                if self.mode == "hang":
                    self._held.append(conn)       # answered never; closed at stop()
                    self._stop.wait()
                    return
                body = self._listing(line).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        finally:
            f.close()
            conn.close()

    def _listing(self, request_line: str) -> str:
        with self._lock:
            self._page += 1
            page = self._page
        n = page if self.mode == "endless" else 1
        keys = [f"k{n:08d}-{i:04d}" for i in range(self.per_page)]
        last = keys[-1] if keys else f"k{n:08d}"      # per_page 0: empty pages, new places
        ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
        if "uploads" in request_line:
            items = "".join(f"<Upload><Key>{k}</Key><UploadId>u-{k}</UploadId>"
                            f"<Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>"
                            for k in keys)
            return (f'<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult {ns}>'
                    f"<Bucket>b</Bucket><NextKeyMarker>{last}</NextKeyMarker>"
                    f"<NextUploadIdMarker>u-{last}</NextUploadIdMarker>"
                    f"<IsTruncated>true</IsTruncated>{items}</ListMultipartUploadsResult>")
        items = "".join(f"<Contents><Key>{k}</Key><ETag>&quot;e&quot;</ETag><Size>1</Size>"
                        f"</Contents>" for k in keys)
        return (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {ns}>'
                f"<Name>b</Name><IsTruncated>true</IsTruncated>"
                f"<NextContinuationToken>t{n}</NextContinuationToken>{items}"
                f"</ListBucketResult>")

    def stop(self) -> None:
        self._stop.set()
        for c in self._held:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._sock.close()
        self._thread.join(5)
