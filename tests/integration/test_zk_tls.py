"""ZooKeeper over TLS only, with real processes: a ZooKeeper serving its secureClientPort
alone (an external ensemble, and a master's managed one), masters and nodes reaching it
with --zk-tls-ca and the ACL credentials of #6, and clients without the CA failing with a
sentence within seconds."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest

from flume_og.zk.client import TlsSettings, ZkError, connect
from flume_og.zk.server import ManagedZooKeeper, ServerTls, ruok
from tests.conftest import free_port
from tests.tls_certs import issue

from .harness import ROOT, Master, Node, Proc, auth_files, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return issue(tmp_path_factory.mktemp("zk-certs"))[0]


@pytest.fixture(scope="module")
def tls_zk(tmp_path_factory, certs):
    """A ZooKeeper serving TLS only (no plaintext port), as an external ensemble."""
    z = ManagedZooKeeper(tmp_path_factory.mktemp("zk-tls"), port=free_port(),
                         tls=ServerTls(str(certs.cert), str(certs.key)))
    z.start(60)
    yield z
    z.stop()


class HttpsMaster(Proc):
    def __init__(self, tmp, certs, *args: str):
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = str(certs.ca)
        super().__init__(["--log-level", "INFO", "master", "--http-port", str(self.port),
                          "--data-dir", str(tmp / "master"), "--tls-cert", str(certs.cert),
                          "--tls-key", str(certs.key), *args], tmp / "master.log")
        wait_until(lambda: self.get("/api/health").status_code == 200, 90,
                   f"master up: {self.output()[-2000:]}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, verify=_ctx(self.ca), timeout=10)

    def command(self, *args: str) -> dict:
        r = httpx.post(self.url + "/api/commands", json={"command": args[0],
                       "args": list(args[1:])}, verify=_ctx(self.ca), timeout=30)
        return r.json()

    logical = Master.logical       # reads through self.get: over https here

    def state(self, name: str) -> str | None:
        return self.logical(name).get("state")


def _ctx(ca: str):
    import ssl
    return ssl.create_default_context(cafile=ca)


def test_the_ensemble_serves_tls_only(tls_zk, certs):
    assert not ruok("127.0.0.1", tls_zk.port)            # no plaintext answer
    assert ruok("127.0.0.1", tls_zk.port, tls=True)
    c = connect(tls_zk.connect_string, tls=TlsSettings(ca=str(certs.ca)))
    try:
        assert "zookeeper" in c.get_children("/")
    finally:
        c.stop()
        c.close()


def test_a_client_without_the_ca_fails_with_a_sentence(tls_zk, tmp_path):
    other = issue(tmp_path / "other")[0]
    for tls in (TlsSettings(), TlsSettings(ca=str(other.ca))):
        t0 = time.monotonic()
        with pytest.raises(ZkError, match="is not trusted here .* --zk-tls-ca FILE"):
            connect(tls_zk.connect_string, timeout=10, tls=tls)
        assert time.monotonic() - t0 < 3
    t0 = time.monotonic()          # a plaintext client: kazoo's timeout, then why
    with pytest.raises(ZkError, match="it serves TLS on that port; give --zk-tls-ca"):
        connect(tls_zk.connect_string, timeout=3)
    assert time.monotonic() - t0 < 8


def test_a_master_without_the_ca_exits_with_a_sentence(tls_zk, tmp_path):
    master_auth, _ = auth_files(tmp_path)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "flume_og.master.cli", "master", "--zk",
                        tls_zk.connect_string, "--zk-auth-file", str(master_auth),
                        "--zk-tls-ca", str(issue(tmp_path / "other")[0].ca),
                        "--http-port", str(free_port()), "--data-dir", str(tmp_path / "m")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "the certificate of ZooKeeper at" in r.stderr and "--zk-tls-ca" in r.stderr
    assert time.monotonic() - t0 < 30


def test_master_and_node_on_a_tls_ensemble_with_acls(tls_zk, certs, tmp_path):
    master_auth, node_auth = auth_files(tmp_path)
    root = f"/tls-{uuid.uuid4().hex[:8]}"
    m = HttpsMaster(tmp_path, certs, "--zk", tls_zk.connect_string, "--zk-root", root,
                    "--zk-auth-file", str(master_auth), "--zk-tls-ca", str(certs.ca))
    n = Node(tmp_path, tls_zk.connect_string, root, "p1", auth_file=node_auth,
             extra=("--zk-tls-ca", str(certs.ca)))
    try:
        wait_until(lambda: m.state("p1") is not None, 60, f"node registered: "
                   f"{n.output()[-2000:]}")
        out = tmp_path / "out.log"
        assert m.command("config", "p1", "asciisynth(0, 20)",
                         f'text("{out}")')["state"] == "SUCCEEDED"
        wait_until(lambda: out.exists() and out.read_text().count("\n") >= 1, 60,
                   f"the config ran on the node: {n.output()[-2000:]}")
    finally:
        n.stop()
        m.stop()


def test_a_managed_zookeeper_serves_tls_to_nodes_that_ask_the_master(certs, tmp_path):
    zk_port = free_port()
    m = HttpsMaster(tmp_path, certs, "--zk-port", str(zk_port), "--zk-tls-ca",
                    str(certs.ca))
    n = None
    try:
        assert m.get("/api/cluster").json()["zk_tls"] is True
        assert not ruok("127.0.0.1", zk_port) and ruok("127.0.0.1", zk_port, tls=True)
        n = Node(tmp_path, None, "/flume", "p2",
                 extra=("--master", m.url, "--master-ca", str(certs.ca), "--zk-tls-ca",
                        str(certs.ca)))
        wait_until(lambda: m.state("p2") is not None, 60,
                   f"node registered: {n.output()[-2000:]}")
        assert m.command("config", "p2", "asciisynth(0)", "null")["state"] == "SUCCEEDED"
        wait_until(lambda: m.state("p2") == "ACTIVE", 60, "the config reached the node")
    finally:
        if n is not None:
            n.stop()
        m.stop()
