"""The kazoo client with one retry policy, the ACL policy applied to every create, requests
bounded by the server's ``jute.maxbuffer``, and errors translated at the boundary."""
from __future__ import annotations

import logging

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import KazooException, ZookeeperError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from node.errors import FlumeError

from .server import JUTE_MAXBUFFER

log = logging.getLogger(__name__)

# Errors worth retrying are the ones kazoo's own retry treats as such (connection loss,
# operation timeout); everything else is a real answer and is not retried.
RETRY = dict(max_tries=-1, delay=0.05, backoff=2, max_delay=2.0, deadline=30.0,
             ignore_expire=True)


class ZkError(FlumeError):
    """ZooKeeper could not be reached or refused an operation."""


class ConflictError(ZkError):
    """A compare-and-set lost against a concurrent writer after every retry."""


class RequestTooLarge(ZkError, KazooException):
    """A request whose paths and data exceed what the server accepts (``jute.maxbuffer``);
    refused before it is sent. (Sent, the server would drop the connection, and the
    client would reconnect and send it again.) A KazooException too, so that callers
    translating kazoo's errors handle it."""


# what a request may carry in paths and data: jute.maxbuffer less room for the header,
# ACLs and lengths (a few hundred bytes)
MAX_REQUEST_BYTES = JUTE_MAXBUFFER - 4096


def request_bytes(request) -> int:
    """The bytes of paths and data in a kazoo request (a transaction: all of its
    operations)."""
    ops = getattr(request, "operations", None)
    if ops is not None:
        return sum(request_bytes(op) for op in ops)
    n = 0
    for attr in ("path", "data"):
        v = getattr(request, attr, None)
        if isinstance(v, str):
            n += len(v.encode())
        elif isinstance(v, (bytes, bytearray)):
            n += len(v)
    return n


class Client(KazooClient):
    """A KazooClient whose every create (``create``, ``create_async``, ``ensure_path``,
    ``makepath`` parents, transactions, kazoo's recipes) gets the ACL that ``acl_policy``
    (:class:`zk.acl.AclPolicy`) gives its path, whatever ACL the caller passed: a create
    cannot forget it. No policy: kazoo's default (``world:anyone``)."""

    acl_policy = None

    # every request, of every kind, is queued through this method
    def _call(self, request, async_object):
        size = request_bytes(request)
        if size > MAX_REQUEST_BYTES:
            async_object.set_exception(RequestTooLarge(
                f"a ZooKeeper request of {size} bytes of paths and data (at most "
                f"{MAX_REQUEST_BYTES}: jute.maxbuffer)"))
            return False
        return super()._call(request, async_object)

    # kazoo funnels every single create, parents included, through this method
    def _create_async_inner(self, path, value, acl, flags, trailing=False,
                            include_data=False):
        if self.acl_policy is not None:
            acl = self.acl_policy.acl(path)
        return super()._create_async_inner(path, value, acl, flags, trailing=trailing,
                                           include_data=include_data)

    def transaction(self) -> TransactionRequest:
        return _Transaction(self)


class _Transaction(TransactionRequest):
    def create(self, path, value=b"", acl=None, ephemeral=False, sequence=False):
        policy = self.client.acl_policy
        if policy is not None:
            acl = policy.acl(path)
        return super().create(path, value, acl, ephemeral, sequence)


if not hasattr(KazooClient, "_create_async_inner") or not hasattr(KazooClient, "_call"):
    raise ImportError("this kazoo has no KazooClient._create_async_inner or _call: "
                      "zk.client.Client cannot apply ACLs or bound requests")


def connect(hosts: str, timeout: float = 15.0, session_timeout: float = 10.0,
            read_only: bool = False, auth=None) -> Client:
    """A started client for ``hosts`` (``host:port,...[/chroot]``), authenticated with
    ``auth`` (a :class:`zk.acl.Credential`) if given."""
    client = Client(hosts=hosts, timeout=session_timeout,
                    connection_retry=dict(max_tries=-1, delay=0.1, backoff=2,
                                          max_delay=2.0),
                    command_retry=RETRY, read_only=read_only,
                    auth_data=[auth.auth_data] if auth is not None else None)
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
