"""Shared fixtures: a NodeContext with a private data directory and a real checkpoint store."""
from __future__ import annotations

import pytest

from node.checkpoint import CheckpointStore
from node.component import NodeContext


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
    """One real ZooKeeper server for the whole test session (Debian's zookeeper package)."""
    from zk.server import ManagedZooKeeper
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
    from zk.client import connect
    client = connect(zk_server.connect_string)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def store(zk_client, zk_root):
    from zk.store import ConfigStore
    s = ConfigStore(zk_client, zk_root)
    s.ensure_layout()
    yield s
    s.remove_tree()
