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
