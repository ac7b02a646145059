"""ConfigStore's parsing of what it reads: a znode written by anyone never breaks a reader."""
from __future__ import annotations

import pytest

from flume_og.zk.store import ConfigStore


@pytest.mark.parametrize("raw", [b"", b"not json", b'"source sink"', b"[1, 2]", b"7"])
def test_a_logical_znode_that_is_not_a_json_object_gives_the_defaults(raw):
    cfg = ConfigStore.parse_logical("n", raw, 3)
    assert (cfg.name, cfg.source, cfg.sink, cfg.version) == ("n", "null", "null", 3)


def test_a_logical_znode_keeps_the_keys_it_knows():
    cfg = ConfigStore.parse_logical("n", b'{"source": "memory(\\"a\\")", "x": 1}', 0)
    assert cfg.source == 'memory("a")' and cfg.sink == "null"


def test_an_update_that_loses_every_compare_and_set_raises(store, zk_server, zk_root):
    """Another writer changes the config between each read and write of ours (here: from
    inside the change itself, through a second client). Before: after the last lost try,
    update_logical returned None ("unchanged"), so `config` said unchanged and `refresh`
    said the node had no configuration."""
    from flume_og.zk.client import ConflictError, connect
    from flume_og.zk.store import CAS_TRIES, LogicalConfig
    other_client = connect(zk_server.connect_string)
    try:
        other = ConfigStore(other_client, zk_root)
        store.put_logical(LogicalConfig("n1", "null", "null"))
        calls = []

        def change(old):
            calls.append(old.version)
            other.put_logical(LogicalConfig("n1", "null", f'console("{len(calls)}")'))
            return LogicalConfig(**{**old.data(), "name": "n1", "refresh": old.refresh + 1})

        with pytest.raises(ConflictError, match="too many concurrent writers"):
            store.update_logical("n1", change)
        assert len(calls) == CAS_TRIES
    finally:
        other_client.stop()
        other_client.close()
