"""Shared fixtures: a NodeContext with a private data directory and a real checkpoint store."""
from __future__ import annotations

import pytest

from flume_og.node.checkpoint import CheckpointStore
from flume_og.node.component import NodeContext


@pytest.fixture
def make_ctx(tmp_path):
    """``make_ctx(name="n1", clock=None)`` -> a NodeContext whose data dir is under tmp_path."""
    def make(name: str = "n1", clock=None, **kw) -> NodeContext:
        d = tmp_path / "data" / name
        d.mkdir(parents=True, exist_ok=True)
        ctx = NodeContext(logical_name=name, data_dir=d,
                          store=CheckpointStore(d / "checkpoint.json"), **kw)
        if clock is not None:
            ctx.clock = clock
        return ctx
    return make


@pytest.fixture
def ctx(make_ctx):
    return make_ctx()


# ---------------------------------------------------------------- ZooKeeper

import socket
import uuid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory):
    """One real ZooKeeper server for the whole test session (Debian's zookeeper package);
    under pytest-xdist one per worker, each worker's session being its own."""
    from flume_og.zk.server import ManagedZooKeeper
    server = ManagedZooKeeper(tmp_path_factory.mktemp("zookeeper"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def zk_root():
    """A root path of this test's own, so tests never see each other's znodes."""
    return f"/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def zk_client(zk_server):
    from flume_og.zk.client import connect
    client = connect(zk_server.connect_string)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def store(zk_client, zk_root):
    from flume_og.zk.store import ConfigStore
    s = ConfigStore(zk_client, zk_root)
    s.ensure_layout()
    yield s
    s.remove_tree()


from flume_og.zk.acl import AclPolicy, Credential  # noqa: E402


class AclTree:
    """A tree made by a master with credentials (``MASTER``, ``NODE``), as a master and a
    node process make it: ``client(auth)`` makes a client closed at the end, ``m`` is the
    master's client (policy set), ``master`` its store, ``n`` the node's client with the
    policy learnt from the root."""

    MASTER = Credential("flume-master", "m" * 8 + "-master-secret-0123")
    NODE = Credential("flume-node", "n" * 8 + "-node-secret-01234")
    CREDS = {"master": MASTER, "node": NODE}

    def __init__(self, zk_server, zk_root):
        from flume_og.zk.store import ConfigStore
        self.connect_string, self.root, self.made = zk_server.connect_string, zk_root, []
        self.m = self.client(self.MASTER)
        self.m.acl_policy = AclPolicy.for_master(zk_root, self.CREDS)
        self.master = ConfigStore(self.m, zk_root)
        self.master.ensure_layout()
        self.m.acl_policy.publish(self.m)
        self.n = self.client(self.NODE)
        self.n.acl_policy = AclPolicy.learn(self.n, zk_root, self.NODE)

    def client(self, auth=None):
        from flume_og.zk.client import connect
        c = connect(self.connect_string, auth=auth)
        self.made.append(c)
        return c

    def close(self) -> None:
        for c in self.made:
            c.stop()
            c.close()


@pytest.fixture
def acl_tree(zk_server, zk_root):
    tree = AclTree(zk_server, zk_root)
    yield tree
    tree.close()


# ---------------------------------------------------------------- S3-protocol server

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3-protocol server process (moto's), one per test module."""
    from tests.s3server import S3Server
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
