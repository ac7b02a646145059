"""The kazoo client with one retry policy and errors translated at the boundary."""
from __future__ import annotations

import logging

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, ZookeeperError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from node.errors import FlumeError

log = logging.getLogger(__name__)

# Errors worth retrying are the ones kazoo's own retry treats as such (connection loss,
# operation timeout); everything else is a real answer and is not retried.
RETRY = dict(max_tries=-1, delay=0.05, backoff=2, max_delay=2.0, deadline=30.0,
             ignore_expire=True)


class ZkError(FlumeError):
    """ZooKeeper could not be reached or refused an operation."""


class ConflictError(ZkError):
    """A compare-and-set lost against a concurrent writer after every retry."""


def connect(hosts: str, timeout: float = 15.0, session_timeout: float = 10.0,
            read_only: bool = False) -> KazooClient:
    """A started KazooClient for ``hosts`` (``host:port,...[/chroot]``)."""
    client = KazooClient(hosts=hosts, timeout=session_timeout,
                         connection_retry=dict(max_tries=-1, delay=0.1, backoff=2,
                                               max_delay=2.0),
                         command_retry=RETRY, read_only=read_only)
    try:
        client.start(timeout=timeout)
    except KazooTimeoutError as exc:
        client.stop()
        client.close()
        raise ZkError(f"cannot reach ZooKeeper at {hosts} within {timeout:.0f} s") from exc
    return client


def retrying(client: KazooClient) -> KazooRetry:
    """The one retry policy, bound to ``client``."""
    return KazooRetry(**RETRY)


def translate(exc: Exception, what: str) -> ZkError:
    if isinstance(exc, (KazooException, ZookeeperError, KazooTimeoutError)):
        return ZkError(f"{what}: {type(exc).__name__} {exc}".rstrip())
    return ZkError(f"{what}: {exc}")
