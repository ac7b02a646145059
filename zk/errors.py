"""The base of every error zk/ raises on purpose.

zk/ is below node/ and master/ and imports nothing from them, so its errors do not derive
from ``node.errors.FlumeError``: the handlers of node/ and master/ that catch "an error this
project raised on purpose" catch ``(FlumeError, CoordinationError)``.
"""
from __future__ import annotations


class CoordinationError(Exception):
    """Base of every error zk/ raises on purpose: ZooKeeper failed or refused
    (``zk.client.ZkError``), an auth file is wrong (``zk.acl.AuthFileError``), the managed
    server cannot run (``zk.server.ZooKeeperUnavailable``)."""
