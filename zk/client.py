"""The kazoo client with one retry policy, the ACL policy applied to every create, a size
bound on every request (``MAX_PATH_BYTES``, ``MAX_REQUEST_BYTES``), and errors translated
at the boundary."""
from __future__ import annotations

import logging
import socket
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass

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


@dataclass(frozen=True)
class TlsSettings:
    """ZooKeeper over TLS (a ``secureClientPort`` of ZooKeeper 3.5+ with Netty): servers
    are checked against ``ca`` (a PEM bundle; None: the system's CAs) and must name the
    host they are reached by; ``cert`` and ``key`` (PEM) are this client's certificate,
    for an ensemble that asks for one (``ssl.clientAuth=need``)."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self):
        if bool(self.cert) != bool(self.key):
            raise TlsSettingsError("--zk-tls-cert and --zk-tls-key go together")

    def context(self) -> ssl.SSLContext:
        """The client context kazoo builds from these settings (see :meth:`kazoo_args`);
        TlsSettingsError with a sentence when a file cannot be used."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca)
            if self.cert:
                ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (self.ca, self.cert, self.key) if f)
            raise TlsSettingsError(f"cannot use the ZooKeeper TLS files {files}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
        return ctx

    def kazoo_args(self) -> dict:
        return dict(use_ssl=True, ca=self.ca, certfile=self.cert, keyfile=self.key,
                    verify_certs=True, check_hostname=True)


class TlsSettingsError(CoordinationError):
    """ZooKeeper TLS settings that cannot be used (files missing or unreadable)."""


HANDSHAKE_SECONDS = 5.0


def check_tls(hosts: str, tls: TlsSettings, timeout: float = HANDSHAKE_SECONDS) -> None:
    """Shake hands with the servers of ``hosts`` until one succeeds; ZkError with a
    sentence at the first that answers with a TLS failure (a certificate not trusted or
    not naming the host, a plaintext port, a client certificate wanted). kazoo retries
    such a failure silently until its connect timeout; this says at once what is wrong.
    Unreachable servers are left to the client's own retries."""
    ctx = tls.context()
    for server in hosts.split("/", 1)[0].split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as raw:
                with ctx.wrap_socket(raw, server_hostname=host):   # the handshake
                    return
        except ssl.SSLCertVerificationError as exc:
            raise ZkError(f"the certificate of ZooKeeper at {host}:{port} is not trusted "
                          f"here ({exc.verify_message}): give the CA that signed it with "
                          f"--zk-tls-ca FILE, and a certificate that names {host}") from None
        except ssl.SSLError as exc:
            raise ZkError(f"the TLS handshake with ZooKeeper at {host}:{port} failed "
                          f"({exc.reason or exc}): is it its secureClientPort, and does it "
                          f"want a client certificate (--zk-tls-cert, --zk-tls-key)?") from None
        except (OSError, ValueError):
            continue


def _serves_tls(hosts: str) -> bool:
    """Whether the first server of ``hosts`` answers a TLS handshake (checking nothing of
    its certificate): why a plaintext client got no session."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    host, _, port = hosts.split("/", 1)[0].split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2) as raw:
            with ctx.wrap_socket(raw):
                return True
    except (OSError, ValueError):
        return False


def connect(hosts: str, timeout: float = 15.0, session_timeout: float = 10.0,
            read_only: bool = False, auth=None, tls: TlsSettings | None = None) -> Client:
    """A started client for ``hosts`` (``host:port,...[/chroot]``), authenticated with
    ``auth`` (a :class:`zk.acl.Credential`) if given, over TLS with ``tls``
    (:func:`check_tls` first: a TLS failure is a ZkError within seconds, not a hang)."""
    if tls is not None:
        check_tls(hosts, tls, min(timeout, HANDSHAKE_SECONDS))
    client = Client(hosts=hosts, timeout=session_timeout,
                    connection_retry=dict(max_tries=-1, delay=0.1, backoff=2,
                                          max_delay=2.0),
                    command_retry=command_retry(), read_only=read_only,
                    auth_data=[auth.auth_data] if auth is not None else None,
                    **(tls.kazoo_args() if tls is not None else {}))
    try:
        client.start(timeout=timeout)
    except KazooTimeoutError as exc:
        client.stop()
        client.close()
        hint = ("" if tls is not None or not _serves_tls(hosts) else
                ": it serves TLS on that port; give --zk-tls-ca FILE (the CA of its "
                "certificate)")
        raise ZkError(f"cannot reach ZooKeeper at {hosts}{' over TLS' if tls else ''} "
                      f"within {timeout:.0f} s{hint}") from exc
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


KAZOO_ERRORS = (KazooException, ZookeeperError, KazooTimeoutError)
_AS_ZK: dict[type, type] = {}


def as_zk_error(exc: Exception) -> ZkError:
    """``exc``, raised by kazoo, as a :class:`ZkError` (:class:`AccessDenied` for
    NoAuthError) that is still an instance of its kazoo class: code inside zk/ that
    catches NoNodeError or BadVersionError keeps working, and callers outside zk/ catch
    ZkError without knowing kazoo. A ZkError is returned unchanged."""
    if isinstance(exc, ZkError):
        return exc
    cls = type(exc)
    kind = _AS_ZK.get(cls)
    if kind is None:
        base = AccessDenied if isinstance(exc, NoAuthError) else ZkError
        kind = _AS_ZK.setdefault(cls, type(cls.__name__, (base, cls),
                                           {"__module__": __name__}))
    return kind(f"{cls.__name__} {exc}".rstrip())


def translate(exc: Exception, what: str) -> ZkError:
    if isinstance(exc, KAZOO_ERRORS):
        kind = AccessDenied if isinstance(exc, NoAuthError) else ZkError
        said = str(exc) if isinstance(exc, ZkError) else f"{type(exc).__name__} {exc}".rstrip()
        return kind(f"{what}: {said}")
    return ZkError(f"{what}: {exc}")


@contextmanager
def zk_errors(what: str):
    """Raises what kazoo raises inside as :class:`ZkError` ("``what``: ConnectionLoss
    ...", :class:`AccessDenied` for NoAuthError), the kazoo exception as its
    ``__cause__`` (one :func:`as_zk_error` made gains ``what`` the same way); any other
    ZkError passes unchanged. Callers outside zk/ then handle ZooKeeper's failures without
    knowing kazoo."""
    try:
        yield
    except KAZOO_ERRORS as exc:
        raise translate(exc, what) from exc
