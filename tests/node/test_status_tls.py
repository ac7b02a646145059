"""The node status page beyond loopback: over TLS, or in plain HTTP only when opted in
(the master's rule), with the scheme the console links by."""
from __future__ import annotations

import ssl
import time

import httpx
import pytest

from flume_og.node.http_server import tls_context
from flume_og.node.status_server import StatusServer, UnsafeBindError
from tests.tls_certs import issue


def status() -> dict:
    return {"physical": "p1", "host": "h", "pid": 1, "started": 0, "logical": {},
            "updated": int(time.time() * 1000)}


def test_plain_http_beyond_loopback_is_refused_unless_opted_in():
    with pytest.raises(UnsafeBindError, match="--http-tls-cert FILE --http-tls-key FILE"):
        StatusServer(status, "0.0.0.0", 0)
    s = StatusServer(status, "0.0.0.0", 0, insecure=True).start()
    try:
        assert s.scheme == "http"
        r = httpx.get(f"http://127.0.0.1:{s.port}/status.json", timeout=5)
        assert r.status_code == 200 and r.json()["physical"] == "p1"
    finally:
        s.stop()


def test_the_page_beyond_loopback_over_tls(tmp_path):
    pem, _ = issue(tmp_path)
    s = StatusServer(status, "0.0.0.0", 0, tls=tls_context(str(pem.cert),
                                                           str(pem.key))).start()
    try:
        assert s.scheme == "https" and s.url.startswith("https://")
        r = httpx.get(f"https://127.0.0.1:{s.port}/status.json", timeout=5,
                      verify=ssl.create_default_context(cafile=str(pem.ca)))
        assert r.status_code == 200 and r.json()["physical"] == "p1"
        with pytest.raises(httpx.HTTPError):       # no plain HTTP on that port
            httpx.get(f"http://127.0.0.1:{s.port}/status.json", timeout=5)
    finally:
        s.stop()
