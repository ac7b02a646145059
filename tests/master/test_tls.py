"""The master's REST API over TLS, against real ``flume master`` processes: flumectl with
and without the CA, client certificates, the refusal of plain HTTP beyond loopback and its
opt-in, and the HTTP bounds holding over TLS (a handshake that never ends)."""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from flume_og.master import flumectl
from tests.conftest import free_port
from tests.integration.harness import ROOT, Proc, wait_until
from tests.sockets import closed_by_peer
from tests.tls_certs import issue

pytestmark = pytest.mark.timeout(90)

TOKEN = "tls-token-0123456789abcdef"


class TlsMaster(Proc):
    """A master process serving HTTPS with ``pem``; ``url`` once it answers."""

    def __init__(self, tmp, zk: str, pem, *extra: str, client: ssl.SSLContext | None = None):
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        (tmp / "token").write_text(TOKEN)
        super().__init__(["--log-level", "INFO", "master", "--zk", zk, "--zk-insecure",
                          "--zk-root", f"/test-tls-{uuid.uuid4().hex[:10]}",
                          "--http-port", str(self.port), "--data-dir", str(tmp / "m"),
                          "--token-file", str(tmp / "token"), "--tls-cert", str(pem.cert),
                          "--tls-key", str(pem.key), *extra], tmp / "master.log")
        self.client = client or ssl.create_default_context(cafile=str(pem.ca))
        wait_until(lambda: self.get("/api/health").status_code == 200, 30,
                   f"master up: {self.output()[-2000:]}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, verify=self.client, timeout=5)

    def refused(self) -> dict:
        return self.get("/api/health").json()["refused"]


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    return issue(tmp_path_factory.mktemp("certs"))[0]


@pytest.fixture(scope="module")
def master(zk_server, tmp_path_factory, pem):
    m = TlsMaster(tmp_path_factory.mktemp("tls-master"), zk_server.connect_string, pem,
                  "--header-timeout", "1")
    yield m
    m.stop()


def test_flumectl_speaks_https_with_the_ca(master, pem, capsys, monkeypatch):
    assert flumectl.main(["--master", master.url, "--ca", str(pem.ca), "--token-file",
                          str(master.log.parent / "token"), "map", "h1", "n1"]) == 0
    monkeypatch.setenv("FLUME_CA", str(pem.ca))      # the same through the environment
    capsys.readouterr()
    assert flumectl.main(["--master", master.url, "mappings"]) == 0
    out = capsys.readouterr().out
    assert "h1" in out and "n1" in out


def test_flumectl_without_the_ca_says_the_certificate_is_not_trusted(master, capsys,
                                                                     monkeypatch):
    monkeypatch.delenv("FLUME_CA", raising=False)
    t0 = time.monotonic()
    assert flumectl.main(["--master", master.url, "--timeout", "10", "status"]) == 1
    err = capsys.readouterr().err
    assert time.monotonic() - t0 < 5
    assert f"the certificate of {master.url} is not trusted here" in err, err
    assert "--ca FILE" in err


def test_flumectl_with_another_ca_is_refused_too(master, tmp_path, capsys):
    other = issue(tmp_path / "other")[0]
    assert flumectl.main(["--master", master.url, "--ca", str(other.ca), "status"]) == 1
    assert "is not trusted here" in capsys.readouterr().err


def test_plain_http_to_the_tls_port_gets_no_answer(master):
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{master.port}/api/health", timeout=5)


def test_a_client_that_never_handshakes_is_closed_within_the_header_timeout(master):
    before = master.refused().get("refused_handshake_timeout", 0)
    t0 = time.monotonic()
    silent = socket.create_connection(("127.0.0.1", master.port))
    partial = socket.create_connection(("127.0.0.1", master.port))
    partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # a ClientHello's start
    try:
        assert closed_by_peer(silent, 5) and closed_by_peer(partial, 5)
        assert time.monotonic() - t0 < 3          # header timeout 1 s (asyncio's own: 60 s)
    finally:
        silent.close()
        partial.close()
    assert master.refused()["refused_handshake_timeout"] >= before + 2


def test_a_slow_head_after_the_handshake_is_cut_at_the_same_deadline(master, pem):
    before = master.refused().get("refused_header_timeout", 0)
    ctx = ssl.create_default_context(cafile=str(pem.ca))
    t0 = time.monotonic()
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", master.port)),
                         server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        s.settimeout(5)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    assert time.monotonic() - t0 < 3
    assert master.refused()["refused_header_timeout"] >= before + 1


def test_a_master_asking_for_client_certificates(zk_server, tmp_path, capsys):
    pem, ca = issue(tmp_path / "certs")
    client = issue(tmp_path / "client", "flumectl.example", ca=ca, prefix="client")[0]
    ctx = ssl.create_default_context(cafile=str(pem.ca))
    ctx.load_cert_chain(str(client.cert), str(client.key))
    # the server's CA signs the clients' certificates too here
    m = TlsMaster(tmp_path, zk_server.connect_string, pem, "--tls-client-ca", str(pem.ca),
                  client=ctx)
    try:
        assert flumectl.main(["--master", m.url, "--ca", str(pem.ca), "--cert",
                              str(client.cert), "--key", str(client.key), "status"]) == 0
        capsys.readouterr()
        assert flumectl.main(["--master", m.url, "--ca", str(pem.ca), "status"]) == 1
        err = capsys.readouterr().err
        assert "give yours with --cert FILE --key FILE" in err, err
        # a node asking this master where ZooKeeper is presents its certificate too
        from flume_og.node.cli import UsageError, zk_from_master
        zk = zk_from_master(m.url, str(pem.ca), str(client.cert), str(client.key))[0]
        assert zk == zk_server.connect_string
        with pytest.raises(UsageError, match="--master-cert FILE --master-key FILE"):
            zk_from_master(m.url, str(pem.ca))
    finally:
        m.stop()


def master_process(tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "token").write_text(TOKEN)
    return subprocess.run([sys.executable, "-m", "flume_og.master.cli", "master",
                           "--data-dir", str(tmp_path / "m"), "--token-file",
                           str(tmp_path / "token"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_plain_http_beyond_loopback_is_refused_with_what_to_do(zk_server, tmp_path):
    r = master_process(tmp_path, "--zk", zk_server.connect_string, "--zk-insecure",
                       "--bind", "0.0.0.0", "--http-port", "0")
    assert r.returncode == 2, r.stderr
    assert "refusing to serve plain HTTP on 0.0.0.0" in r.stderr
    assert "--tls-cert FILE --tls-key FILE" in r.stderr and "--insecure-http" in r.stderr


def test_insecure_http_is_the_opt_in_for_a_trusted_network(zk_server, tmp_path):
    port = free_port()
    (tmp_path / "token").write_text(TOKEN)
    m = Proc(["master", "--zk", zk_server.connect_string, "--zk-insecure", "--zk-root",
              f"/test-tls-{uuid.uuid4().hex[:10]}", "--data-dir", str(tmp_path / "m"),
              "--token-file", str(tmp_path / "token"), "--bind", "0.0.0.0",
              "--http-port", str(port), "--insecure-http"], tmp_path / "master.log")
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/api/health",
                                     timeout=2).status_code == 200, 30, "master up")
    finally:
        m.stop()


def test_tls_settings_come_from_the_config_file_and_bad_files_are_named(zk_server,
                                                                          tmp_path, pem):
    (tmp_path / "master.toml").write_text(
        f'tls-cert = "{pem.cert}"\ntls-key = "{tmp_path / "missing.key"}"\n')
    r = master_process(tmp_path, "--zk", zk_server.connect_string, "--zk-insecure",
                       "--config-file", str(tmp_path / "master.toml"))
    assert r.returncode == 2, r.stderr
    assert f"cannot use the certificate {pem.cert} with the key" in r.stderr
    assert "missing.key" in r.stderr


def test_a_master_key_other_users_can_read_is_refused(zk_server, tmp_path, pem):
    import shutil
    key = tmp_path / "open.key"
    shutil.copy(pem.key, key)
    key.chmod(0o644)
    r = master_process(tmp_path, "--zk", zk_server.connect_string, "--zk-insecure",
                       "--tls-cert", str(pem.cert), "--tls-key", str(key))
    assert r.returncode == 2, r.stderr
    assert "is accessible by other users (mode 644)" in r.stderr
