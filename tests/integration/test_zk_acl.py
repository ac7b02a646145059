"""ZooKeeper ACLs with real master and node processes: the attack of issue 9 (a spec with
an exec source written straight into ZooKeeper) refused, a managed ZooKeeper protected by
default, nodes without the right credential refused, an open tree protected on restart."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest
from kazoo.exceptions import NoAuthError

from flume_og.zk.acl import read_auth_file
from flume_og.zk.client import connect

from .harness import NODE_CRED as NODE
from tests.conftest import free_port

from .harness import (ROOT, Master, Node, auth_file, auth_files, remove_protected,
                      wait_until)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def files(tmp_path):
    return auth_files(tmp_path)


@pytest.fixture
def cleanup(zk_server):
    """Removes the roots a test protected (only the master credential can); asked for
    before ``procs`` so that the processes stop first."""
    roots = []
    yield roots
    for root in roots:
        remove_protected(zk_server.connect_string, root)


def run_flow(m: Master, n: Node, out) -> None:
    r = m.command("config", n.name, "asciisynth(0, 20)", f'{{ delay(5) => text("{out}") }}')
    assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED", r.text
    wait_until(lambda: m.logical(n.name).get("state") == "ACTIVE" and out.exists()
               and n.counters(n.name).get("events_in", 0) > 0, 30, "the flow running")


def test_exec_spec_written_into_zookeeper_is_refused(tmp_path, zk_server, zk_root, files,
                                                     cleanup, procs):
    """Issue 9 case 10: an anonymous client wrote a logical node with an exec source and
    mapped it to a node started with --allow-exec. Now both writes are refused, also with
    the node credential, while master and node work under their credentials."""
    cleanup.append(zk_root)
    master_auth, node_auth = files
    m = Master(tmp_path, zk_server.connect_string, zk_root, auth_file=master_auth)
    procs.append(m)
    n = Node(tmp_path, zk_server.connect_string, zk_root, "p1", auth_file=node_auth,
             extra=("--allow-exec",))
    procs.append(n)
    wait_until(lambda: m.logical("p1"), 30, "p1 registered and mapped by the master")
    run_flow(m, n, tmp_path / "out.log")

    marker = tmp_path / "pwned"
    evil = ('{"source": "exec(\\"touch %s\\")", "sink": "null"}' % marker).encode()
    for who, cred in (("anonymous", None), ("node credential", NODE)):
        c = connect(zk_server.connect_string, auth=cred)
        try:
            with pytest.raises(NoAuthError):
                c.create(f"{zk_root}/logical/evil", evil)
            with pytest.raises(NoAuthError):
                c.set(f"{zk_root}/mappings/p1", b'["p1", "evil"]')
            with pytest.raises(NoAuthError):
                c.set(f"{zk_root}/logical/p1", evil)
        finally:
            c.stop()
            c.close()
    assert m.get("/api/mappings").json().get("p1") == ["p1"]
    assert "exec" not in m.logical("p1").get("source", "")
    assert not marker.exists()


def test_node_without_the_node_credential_is_refused(tmp_path, zk_server, zk_root, files,
                                                     cleanup, procs):
    cleanup.append(zk_root)
    m = Master(tmp_path, zk_server.connect_string, zk_root, auth_file=files[0])
    procs.append(m)
    n = Node(tmp_path, zk_server.connect_string, zk_root, "anon")
    assert n.p.wait(30) == 1
    assert "protected by ACLs; pass --zk-auth-file" in n.output()
    wrong = auth_file(tmp_path / "wrong.auth", "node=flume-node:not-the-node-password")
    n = Node(tmp_path, zk_server.connect_string, zk_root, "wrong", auth_file=wrong)
    assert n.p.wait(30) == 1
    assert "is not the node credential" in n.output()
    loose = auth_file(tmp_path / "loose.auth", NODE.line("node"))
    os.chmod(loose, 0o644)
    n = Node(tmp_path, zk_server.connect_string, zk_root, "loose", auth_file=loose)
    assert n.p.wait(30) == 2 and "chmod 600" in n.output()
    assert not any(m.logical(name) for name in ("anon", "wrong", "loose"))


def run_master(tmp_path, zk: str, root: str, *extra: str) -> subprocess.CompletedProcess:
    """A master process expected to refuse to start."""
    return subprocess.run([sys.executable, "-m", "flume_og.master.cli", "master", "--zk", zk,
                           "--zk-root", root, "--data-dir", str(tmp_path / "refused"),
                           "--http-port", str(free_port()), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_master_refuses_an_external_ensemble_without_credentials(tmp_path, zk_server,
                                                                 zk_root):
    r = run_master(tmp_path, zk_server.connect_string, zk_root)
    assert r.returncode == 2 and "--zk-auth-file" in r.stderr and "--zk-insecure" in r.stderr


def test_managed_zookeeper_is_protected_by_default(tmp_path, procs):
    """``flume master`` without --zk: generated credentials (0600 files), every znode
    protected, the node of run.sh (only --master) still works, and the managed ZooKeeper
    answers no four-letter word but ruok (and srvr, which ZooKeeper 3.8 always answers)."""
    m = Master(tmp_path, None, "/flume")
    procs.append(m)
    for name in ("zk-auth", "zk-auth-node"):
        assert (m.data_dir / name).stat().st_mode & 0o777 == 0o600
    creds = read_auth_file(m.data_dir / "zk-auth")
    node = creds["node"]
    assert m.get("/api/cluster").json()["zk_auth"] == f"{node.user}:{node.password}"
    n = Node(tmp_path, None, "/flume", "p1", extra=("--master", m.url))
    procs.append(n)
    wait_until(lambda: m.logical("p1"), 30, "p1 registered through the master's answer")
    run_flow(m, n, tmp_path / "out.log")

    zk = f"127.0.0.1:{m.zk_port}"
    anon = connect(zk)
    try:
        with pytest.raises(NoAuthError):
            anon.get_children("/flume")
        with pytest.raises(NoAuthError):
            anon.create("/flume/logical/evil", b"{}")
    finally:
        anon.stop()
        anon.close()
    nc = connect(zk, auth=creds["node"])
    try:
        with pytest.raises(NoAuthError):
            nc.set("/flume/mappings/p1", b'["evil"]')
    finally:
        nc.stop()
        nc.close()
    for word in (b"stat", b"cons", b"dump", b"envi", b"conf"):   # clients, paths, setup
        with socket.create_connection(("127.0.0.1", m.zk_port), timeout=5) as s:
            s.sendall(word)
            s.shutdown(socket.SHUT_WR)
            answer = s.recv(4096)
        assert b"not in the whitelist" in answer, (word, answer)

    # credentials lost: new ones are generated, and the master, super user of its managed
    # ZooKeeper, takes its tree back
    n.stop()
    m.stop()
    for name in ("zk-auth", "zk-auth-node"):
        (m.data_dir / name).unlink()
    m = Master(tmp_path, None, "/flume")
    procs.append(m)
    assert read_auth_file(m.data_dir / "zk-auth") != creds
    # the leader takes the tree back in its duties, which may end after /api/health answers
    wait_until(lambda: "set the ZooKeeper ACLs of" in m.output(), 30, "the tree taken back")
    assert m.get("/api/configs").json()


def test_open_tree_protected_when_a_master_starts_with_credentials(tmp_path, zk_server,
                                                                   files, cleanup, procs):
    root = f"/test-open-{uuid.uuid4().hex[:10]}"
    cleanup.append(root)
    m = Master(tmp_path, zk_server.connect_string, root, name="open")
    assert "WITHOUT ACLs" in m.output()
    r = m.command("config", "web1", "null", "null")
    assert r.json()["state"] == "SUCCEEDED", r.text
    m.stop()
    anon = connect(zk_server.connect_string)
    try:
        assert anon.get(f"{root}/logical/web1")[0]        # open: anyone reads it
        m = Master(tmp_path, zk_server.connect_string, root, name="acl",
                   auth_file=files[0])
        procs.append(m)
        assert "set the ZooKeeper ACLs of" in m.output()
        with pytest.raises(NoAuthError):
            anon.get(f"{root}/logical/web1")
        with pytest.raises(NoAuthError):
            anon.set(f"{root}/logical/web1", b"{}")
        assert m.get("/api/configs").status_code == 200
        r = run_master(tmp_path, zk_server.connect_string, root, "--zk-insecure")
        assert r.returncode == 1 and "protected by ACLs that do not name" in r.stderr
    finally:
        anon.stop()
        anon.close()


def test_master_with_a_token_hands_out_no_credential(tmp_path, procs):
    """A master with a token may be reachable from other hosts: it does not hand the node
    credential to whoever asks; a local node uses the file the master wrote."""
    token = tmp_path / "token"
    token.write_text("a-token-of-more-than-16-chars\n")
    m = Master(tmp_path, None, "/flume", token_file=token)
    procs.append(m)
    info = m.get("/api/cluster").json()
    assert info["acl"] is True and info["zk_auth"] is None
    n = Node(tmp_path, None, "/flume", "p1", extra=("--master", m.url))
    assert n.p.wait(30) == 2 and "pass --zk-auth-file" in n.output()
    n = Node(tmp_path, None, "/flume", "p2", extra=("--master", m.url),
             auth_file=m.data_dir / "zk-auth-node")
    procs.append(n)
    wait_until(lambda: m.logical("p2"), 30, "p2 registered with the file's credential")
