"""zk/client.py against a real ZooKeeper: requests past jute.maxbuffer are refused before
they are sent (review case 1a: a 3 MiB agent id made ZooKeeper drop the connection, again
and again)."""
from __future__ import annotations

import pytest
from kazoo.protocol.states import KazooState

from flume_og.zk.client import MAX_REQUEST_BYTES, RequestTooLargeError, ZkError
from flume_og.zk.store import ConfigStore


def test_oversized_requests_refused_without_losing_the_connection(zk_client, zk_root):
    states = []
    zk_client.add_listener(states.append)
    session = zk_client.client_id
    huge = "a" * (MAX_REQUEST_BYTES + 1)
    zk_client.ensure_path(zk_root)
    for op in (lambda: zk_client.create(f"{zk_root}/{huge}", b""),
               lambda: zk_client.create(f"{zk_root}/x", huge.encode()),
               lambda: zk_client.exists(f"{zk_root}/{huge}"),
               lambda: zk_client.get(f"{zk_root}/{huge}"),
               lambda: zk_client.ensure_path(f"{zk_root}/{huge}")):
        with pytest.raises(RequestTooLargeError):
            op()
    tx = zk_client.transaction()
    for i in range(3):
        tx.create(f"{zk_root}/t{i}", b"a" * (MAX_REQUEST_BYTES // 2))
    with pytest.raises(RequestTooLargeError):
        tx.commit()
    # the store's pipelined E2E claim: a ZkError at once, not a retry loop
    store = ConfigStore(zk_client, zk_root)
    with pytest.raises(ZkError):
        store.commits.claim_group("/" * (MAX_REQUEST_BYTES // 3 + 1), 1, "c")
    # what fits still goes through, on the same session that never left CONNECTED
    zk_client.create(f"{zk_root}/ok", b"a" * (MAX_REQUEST_BYTES - len(zk_root) - 200))
    assert len(zk_client.get(f"{zk_root}/ok")[0]) > 780_000
    assert zk_client.client_id == session and zk_client.state == KazooState.CONNECTED
    assert states == []
    zk_client.delete(zk_root, recursive=True)


def test_zk_errors_translates_kazoo_exceptions_and_keeps_its_own():
    from kazoo.exceptions import ConnectionLoss, NoNodeError
    from flume_og.zk.client import ConflictError, zk_errors
    with pytest.raises(ZkError, match="^reading x: NoNodeError") as got:
        with zk_errors("reading x"):
            raise NoNodeError()
    assert isinstance(got.value.__cause__, NoNodeError)
    with pytest.raises(ConflictError):          # already ours: passes unchanged
        with zk_errors("writing x"):
            raise ConflictError("lost")
    with pytest.raises(ValueError):             # not ZooKeeper's: not touched
        with zk_errors("x"):
            raise ValueError()
    assert not isinstance(ConnectionLoss(), ZkError)


def test_wait_connected_is_true_at_once_when_connected_and_false_after_its_bound(zk_client):
    import time
    from flume_og.zk.client import Client, wait_connected
    assert wait_connected(zk_client, 0.0) and wait_connected(zk_client, 5.0)
    idle = Client(hosts="127.0.0.1:1")      # never started: never connected
    t = time.monotonic()
    assert not wait_connected(idle, 0.3)
    assert 0.25 <= time.monotonic() - t < 2.0
    assert not idle.state_listeners          # the waiter's listener is gone


def test_operations_are_retried_on_a_moved_session_never_on_a_real_answer(zk_client):
    from kazoo.exceptions import BadVersionError, SessionMovedError
    calls = []

    def moved_once():
        calls.append(1)
        if len(calls) == 1:
            raise SessionMovedError()
        return "done"
    assert zk_client.retry(moved_once) == "done" and len(calls) == 2

    def conflict():
        calls.append(2)
        raise BadVersionError()
    with pytest.raises(BadVersionError):
        zk_client.retry(conflict)
    assert calls.count(2) == 1


def test_the_store_raises_zk_errors_that_zk_code_still_reads_as_kazoo_ones(zk_server, zk_root):
    """Callers outside zk/ catch ZkError (never a kazoo class), and the handlers inside
    zk/ that catch NoNodeError keep working."""
    from kazoo.exceptions import NoNodeError

    from flume_og.zk.client import ZkError, connect, zk_errors
    from flume_og.zk.errors import CoordinationError
    from flume_og.zk.store import ConfigStore
    client = connect(zk_server.connect_string)
    store = ConfigStore(client, zk_root)
    try:
        with pytest.raises(NoNodeError) as info:
            store.zk.get(f"{zk_root}/nothing-here")
        assert isinstance(info.value, ZkError) and "NoNodeError" in str(info.value)
        with pytest.raises(ZkError, match=r"^reading it: NoNodeError$"):
            with zk_errors("reading it"):
                store.zk.get(f"{zk_root}/nothing-here")
        client.stop()           # no session: every public call fails as a zk error
        for call in (store.list_logical, store.list_mappings,
                     lambda: store.commits.get_watermark("a"),
                     lambda: store.commits.list_groups("a")):
            with pytest.raises(CoordinationError):
                call()
    finally:
        client.stop()
        client.close()
