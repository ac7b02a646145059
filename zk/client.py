"""The kazoo client with one retry policy, the ACL policy applied to every create, a size
bound on every request (``MAX_PATH_BYTES``, ``MAX_REQUEST_BYTES``), and errors translated
at the boundary."""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager

from kazoo.client import KazooClient, KazooState, TransactionRequest
from kazoo.exceptions import (BadArgumentsError, KazooException, NoAuthError,
                              SessionMovedError, ZookeeperError)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from .errors import CoordinationError


log = logging.getLogger(__name__)

# Errors worth retrying are the ones kazoo's own retry treats as such (connection loss,
# operation timeout, an expired session), and a session moved to another server (a request
# sent through the old one while the client reconnected, e.g. during a leader election:
# ZooKeeper refused it without applying it). Everything else is a real answer
# (BadVersion, NodeExists...) and is not retried.
RETRY = dict(max_tries=-1, delay=0.05, backoff=2, max_delay=2.0, deadline=30.0,
             ignore_expire=True)


def command_retry() -> KazooRetry:
    """The retry policy of every znode operation (``client.retry``), as said above."""
    retry = KazooRetry(**RETRY)
    retry.retry_exceptions += (SessionMovedError,)
    return retry


class ZkError(CoordinationError):
    """ZooKeeper could not be reached or refused an operation."""


class ConflictError(ZkError):
    """A compare-and-set lost against a concurrent writer after every retry."""


class AccessDenied(ZkError):
    """ZooKeeper refused an operation: the ACL of the znode shuts this client out
    (kazoo's NoAuthError)."""


# ZooKeeper drops the connection (and with it every request in flight, and watches)
# when a request is longer than its jute.maxbuffer (1 MiB - 1 by default), and keeps
# every znode name and value in its heap. So no request leaves this client that comes
# near that: a path longer than MAX_PATH_BYTES, or a request (a transaction with all its
# operations) longer than MAX_REQUEST_BYTES once serialized, fails at once with
# RequestTooLargeError -- a ZookeeperError (BadArgumentsError), so every caller handles
# it as the refusal it is, and it is never retried.
MAX_PATH_BYTES = 4096
MAX_REQUEST_BYTES = 768 * 1024


class RequestTooLargeError(ZkError, BadArgumentsError):
    """A request this client refused to send to ZooKeeper because of its size."""


def request_problem(request) -> str | None:
    """Why ``request`` (a kazoo protocol request) must not be sent; None if it may."""
    for op in getattr(request, "operations", None) or (request,):
        path = getattr(op, "path", None)
        n = len(path.encode("utf-8", "surrogatepass")) if isinstance(path, str) else 0
        if n > MAX_PATH_BYTES:
            return f"a znode path of {n} bytes (at most {MAX_PATH_BYTES}): {path[:80]!r}..."
    try:
        size = len(request.serialize())
    except Exception:
        return None          # not ours to judge: the connection reports it as before
    if size > MAX_REQUEST_BYTES:
        return (f"a {type(request).__name__.lower()} request of {size} bytes (at most "
                f"{MAX_REQUEST_BYTES}, far below ZooKeeper's jute.maxbuffer)")
    return None


class Client(KazooClient):
    """A KazooClient whose every create (``create``, ``create_async``, ``ensure_path``,
    ``makepath`` parents, transactions, kazoo's recipes) gets the ACL that ``acl_policy``
    (:class:`zk.acl.AclPolicy`) gives its path, whatever ACL the caller passed: a create
    cannot forget it. No policy: kazoo's default (``world:anyone``)."""

    acl_policy = None

    # kazoo funnels every single create, parents included, through this method
    def _create_async_inner(self, path, value, acl, flags, trailing=False,
                            include_data=False):
        if self.acl_policy is not None:
            acl = self.acl_policy.acl(path)
        return super()._create_async_inner(path, value, acl, flags, trailing=trailing,
                                           include_data=include_data)

    def transaction(self) -> TransactionRequest:
        return _Transaction(self)

    # and every request, transactions included, through this one
    def _call(self, request, async_object):
        problem = request_problem(request)
        if problem is not None:
            async_object.set_exception(RequestTooLargeError(
                f"refused to send ZooKeeper {problem}"))
            return False
        return super()._call(request, async_object)


class _Transaction(TransactionRequest):
    def create(self, path, value=b"", acl=None, ephemeral=False, sequence=False):
        policy = self.client.acl_policy
        if policy is not None:
            acl = policy.acl(path)
        return super().create(path, value, acl, ephemeral, sequence)


if not hasattr(KazooClient, "_create_async_inner") or not hasattr(KazooClient, "_call"):
    raise ImportError("this kazoo has no KazooClient._create_async_inner or _call: "
                      "zk.client.Client cannot apply ACLs and size bounds")


def connect(hosts: str, timeout: float = 15.0, session_timeout: float = 10.0,
            read_only: bool = False, auth=None) -> Client:
    """A started client for ``hosts`` (``host:port,...[/chroot]``), authenticated with
    ``auth`` (a :class:`zk.acl.Credential`) if given."""
    client = Client(hosts=hosts, timeout=session_timeout,
                    connection_retry=dict(max_tries=-1, delay=0.1, backoff=2,
                                          max_delay=2.0),
                    command_retry=command_retry(), read_only=read_only,
                    auth_data=[auth.auth_data] if auth is not None else None)
    try:
        client.start(timeout=timeout)
    except KazooTimeoutError as exc:
        client.stop()
        client.close()
        raise ZkError(f"cannot reach ZooKeeper at {hosts} within {timeout:.0f} s") from exc
    return client


def wait_connected(client: KazooClient, timeout: float) -> bool:
    """True once ``client`` is connected, after ``timeout`` seconds at most: a client
    whose server died reconnects to another within about a second (an ensemble's leader
    election takes ~0.5 s), so a caller that would fail at once rides that out."""
    if client.connected or timeout <= 0:
        return client.connected
    up = threading.Event()

    def listener(state) -> None:
        if state == KazooState.CONNECTED:
            up.set()
    client.add_listener(listener)
    try:
        return client.connected or up.wait(timeout) or client.connected
    finally:
        client.remove_listener(listener)


def translate(exc: Exception, what: str) -> ZkError:
    if isinstance(exc, (KazooException, ZookeeperError, KazooTimeoutError)):
        kind = AccessDenied if isinstance(exc, NoAuthError) else ZkError
        return kind(f"{what}: {type(exc).__name__} {exc}".rstrip())
    return ZkError(f"{what}: {exc}")


@contextmanager
def zk_errors(what: str):
    """Raises what kazoo raises inside as :class:`ZkError` ("``what``: ConnectionLoss
    ...", :class:`AccessDenied` for NoAuthError), the kazoo exception as its
    ``__cause__``; a ZkError passes unchanged. Callers
    outside zk/ then handle ZooKeeper's failures without knowing kazoo."""
    try:
        yield
    except ZkError:
        raise
    except (KazooException, ZookeeperError, KazooTimeoutError) as exc:
        raise translate(exc, what) from exc
