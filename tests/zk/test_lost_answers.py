"""ZooKeeper answers lost with the connection, through a real proxy and a real server: a
write applied whose answer was lost is not applied twice by its retry, and an operation
waiting on a connection that does not come back fails within its bound."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from tests.zk.cutting_proxy import CuttingProxy
from flume_og.zk.client import ZkError, connect
from flume_og.zk.store import ConfigStore, LogicalConfig, _Retrying


@pytest.fixture
def proxied(zk_server, zk_root):
    proxy = CuttingProxy(int(zk_server.connect_string.rsplit(":", 1)[1]))
    client = connect(f"127.0.0.1:{proxy.port}")
    store = ConfigStore(client, zk_root)
    store.ensure_layout()
    yield proxy, store
    proxy.close()
    client.stop()
    client.close()
    cleanup = connect(zk_server.connect_string)
    ConfigStore(cleanup, zk_root).remove_tree()
    cleanup.stop()
    cleanup.close()


def test_a_refresh_whose_answer_was_lost_is_counted_once(proxied):
    proxy, store = proxied
    store.put_logical(LogicalConfig(name="agent", source="null", sink="null"))
    before = store.get_logical("agent")
    proxy.armed = 60                    # the next write: applied, its answer lost
    stored = store.update_logical("agent", lambda old: replace(old, refresh=old.refresh + 1))
    after = store.get_logical("agent")
    assert proxy.cuts == 1
    assert after.refresh == before.refresh + 1          # before the fix: + 2
    assert after.version == before.version + 1 == stored.version


def test_an_operation_on_a_connection_that_does_not_come_back_fails_in_its_bound(
        proxied, monkeypatch):
    proxy, store = proxied
    monkeypatch.setattr(_Retrying, "ANSWER_TIMEOUT", 1.0, raising=False)
    proxy.refuse = True
    proxy.cut_all()                     # connection gone, and no reconnect possible
    started = time.monotonic()
    with pytest.raises(ZkError, match="did not answer|ConnectionLoss|closed"):
        store.update_logical("agent", lambda old: LogicalConfig(name="agent"))
    # before: blocked without end (kazoo queues the request while reconnecting)
    assert time.monotonic() - started < 45
