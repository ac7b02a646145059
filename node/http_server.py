"""An HTTP server for an ASGI app: uvicorn (h11) with bounds on connections, time and log
lines. The master's REST API and console run on it, and so does the node's status page
(:mod:`node.status_server`, on a thread: :class:`node.http_thread.AsgiServerThread`).

:func:`server` runs an ASGI app on a socket from :func:`listening_socket` until
``server.should_exit``; one event loop serves every connection (no thread each):

* **connections**: at most ``max_connections`` open at once (fewer if the process's
  descriptors do not allow them: :func:`fit_to_descriptors`) and ``max_connections_per_peer``
  from one address (:class:`node.limits.ConnectionSlots`). Past either bound the
  connection that has waited longest for a request head (unfinished, or idle between two
  requests) -- of the same address for the per-address bound -- is closed to make room
  (``refused_evicted``); a connection whose head is complete (being served) is never
  closed so. When no connection waits for a head, the new one is answered 503 and closed
  at once (``refused_connections``, ``refused_peer_connections``). So slow heads, from one
  address or a few, never keep another client out (uvicorn's own ``limit_concurrency``
  keeps a refused connection until it sends a request and logs every refusal);
* **time**: a request's line and headers must arrive within ``header_timeout`` seconds of
  the connection (or of the first byte of a next request on a kept-alive connection),
  however slowly they trickle in (slowloris); a body may pause at most ``body_timeout``
  seconds between two reads; an idle kept-alive connection closes after ``keep_alive``;
* **headers**: at most ``MAX_HEADER_BYTES`` of request line and headers (h11's limit;
  past it uvicorn answers 400);
* **descriptors**: when accept() fails for want of file descriptors (EMFILE, ENFILE), the
  waiting connections are accepted with a reserved descriptor and closed at once, instead
  of asyncio's loop, which retries accept() ``backlog`` times per wake-up and logs each
  failure (100 % CPU and thousands of identical lines a second);
* **logs**: uvicorn's warnings (one per bad request) are rate-limited;
* **TLS** (``server(tls=...)``): the connection takes its slot at accept, and the
  handshake and the request head together must end within ``header_timeout``
  (``refused_handshake_timeout`` when the handshake is what did not end).

Every refusal is counted in ``metrics`` (``refused_connections``,
``refused_peer_connections``, ``refused_evicted``, ``refused_header_timeout``,
``refused_body_timeout``, ``refused_handshake_timeout``, ``refused_descriptors``) and logged, rate-limited.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import ssl
import time
from asyncio import sslproto
from dataclasses import dataclass, replace
from functools import partial

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from flume_og.node.errors import FlumeError
from flume_og.node.limits import ConnectionSlots, RateLimitedLog, Refusals
from flume_og.node.tls import check_key_mode

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
BACKLOG = 128           # also the number of accept() calls per wake-up of the loop
_SHED_PER_WAKEUP = 1024
RESERVED_FDS = 64       # descriptors kept for ZooKeeper, logs and files, not connections

_BUSY_BODY = b'{"message": "too many connections to this server; retry later"}\n'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
         b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


@dataclass
class HttpLimits:
    """The bounds of the module docstring (seconds, counts)."""
    max_connections: int = 256
    max_connections_per_peer: int = 64
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: float = 5.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with connection bounds (``slots``, shared by the server's
    connections; one event loop, so no lock) and header and body timeouts."""

    def __init__(self, *args, limits: HttpLimits, refusals: Refusals,
                 slots: ConnectionSlots, **kw):
        super().__init__(*args, **kw)
        self.limits = limits
        self.refusals = refusals
        self.slots = slots
        self._timer = None
        self._phase: str | None = None    # "headers" or "body" while a timer runs
        self.head_since: float | None = None   # waiting for a request head since; None: served
        self._raw = None                 # the connection's transport as admitted
        self.transport = None

    def admit(self, transport, plain: bool = True) -> bool:
        """Take a connection slot for the connection on ``transport`` (under TLS, the TCP
        one before the handshake: ``plain`` False) and start the head's clock; False if
        refused (the connection is closed, answered 503 if ``plain``)."""
        self._raw = transport
        self.head_since = time.monotonic()
        peer = (transport.get_extra_info("peername") or ("?",))[0]
        refused, evicted = self.slots.admit(self, peer)
        if evicted is not None:
            evicted[0].close()
            self.refusals.refuse("evicted", f"closed a connection from {evicted[1]} "
                                 f"waiting for a request head to make room for {peer}")
        if refused is not None:
            bound = (f"{self.limits.max_connections_per_peer} connections from {peer}"
                     if refused == "peer_connections"
                     else f"{self.limits.max_connections} connections")
            self.refusals.refuse(refused, f"{bound} are open already, every one being "
                                 f"served; answered 503")
            if plain:
                transport.write(_BUSY)
            transport.close()
            return False
        self._start("headers", self.limits.header_timeout)
        return True

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self._raw is None:            # plain HTTP; under TLS, admitted at accept
            self.admit(transport)

    def close(self) -> None:
        """Close the connection, whether its TLS handshake is over or not."""
        (self.transport or self._raw).close()

    def release(self) -> None:
        """The connection is gone: its clock stops, its slot is free (idempotent)."""
        self._stop()
        self.slots.remove(self)

    def connection_lost(self, exc) -> None:
        self.release()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            self.head_since = time.monotonic()   # kept alive: waits for the next head
        elif self.conn.their_state is h11.SEND_BODY:
            # answered without reading the whole body (a refusal): the rest may come for
            # body_timeout at most in all, however it trickles, then the slot is freed
            self._start("drain", self.limits.body_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._phase == "drain":
            if self.conn.their_state is not h11.IDLE:
                return
            self._stop()                 # the refused body is over: wait for a next head
            self.head_since = time.monotonic()
        state = self.conn.their_state
        if state is h11.IDLE:            # a request line or headers still incomplete
            if self._phase != "headers":
                self._start("headers", self.limits.header_timeout)
            return
        self.head_since = None           # a whole head: being served, never evicted
        if state is h11.SEND_BODY:     # each read restarts the body's clock
            self._start("body", self.limits.body_timeout)
        else:
            self._stop()

    def _start(self, phase: str, delay: float) -> None:
        self._stop()
        self._phase = phase
        self._timer = self.loop.call_later(delay, self._expired)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._phase = None

    def _expired(self) -> None:
        phase, self._timer, self._phase = self._phase, None, None
        if self.transport is None:       # the TLS handshake is not over
            if not self._raw.is_closing():
                self.refusals.refuse("handshake_timeout", f"a client did not finish its "
                                     f"TLS handshake within {self.limits.header_timeout:g} s")
                self._raw.abort()
            return
        if self.transport.is_closing():
            return
        if phase == "body" and self.flow.read_paused:   # the app is slow, not the client
            self._start("body", self.limits.body_timeout)
            return
        limit = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
        self.refusals.refuse("header_timeout" if phase == "headers" else "body_timeout",
                             f"a client sent its request {phase.replace('drain', 'body')} "
                             f"too slowly (more than {limit:g} s)")
        self.transport.close()


class TlsError(FlumeError):
    """A certificate, key or CA file cannot be used to serve TLS."""


def tls_context(certfile: str, keyfile: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 at least, Python's default ciphers) from PEM
    files: ``certfile`` (the certificate, then any intermediates), ``keyfile`` (its
    unencrypted private key) and, with ``client_ca``, the CA bundle every client must
    present a certificate from (mutual TLS). TlsError with a sentence otherwise."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        check_key_mode(keyfile, TlsError)
        ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use the certificate {certfile} with the key {keyfile}: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot use the client CA file {client_ca}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: str | None = None, cert: str | None = None,
                   key: str | None = None) -> ssl.SSLContext:
    """A client-side TLS context for the REST API (flumectl, a node asking a master):
    the system's CAs, or only those of ``ca``; with ``cert`` (and ``key``, else the key
    is in ``cert``) a client certificate for a master that asks for one. TlsError with a
    sentence if a file cannot be used."""
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use the CA file {ca}: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot use the client certificate {cert}"
                           f"{f' with the key {key}' if key else ''}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    return ctx


def tls_problem(exc: BaseException, url: str) -> str | None:
    """A sentence saying what is wrong when ``exc`` (from an HTTPS client) is a TLS
    failure talking to ``url``; None for any other failure."""
    while exc is not None and not isinstance(exc, ssl.SSLError):
        exc = exc.__cause__ or exc.__context__
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "mismatch" in str(exc.verify_message):
            return (f"the certificate of {url} does not name that address "
                    f"({exc.verify_message}): use the name or address its subjectAltName "
                    f"lists, or reissue it with this one")
        return (f"the certificate of {url} is not trusted here ({exc.verify_message}): "
                f"give the CA that signed it with --ca FILE (or $FLUME_CA)")
    if exc is not None:
        return (f"the TLS handshake with {url} failed ({exc.reason or exc}): is it an "
                f"HTTPS server, and does it want a client certificate (--cert, --key)?")
    return None


class _TlsConnection(sslproto.SSLProtocol):
    """asyncio's TLS layer around a :class:`GuardedH11Protocol` that takes its connection
    slot and starts the head's clock at accept, not after the handshake (asyncio's
    ``create_server(ssl=...)`` gives a handshake 60 s and tells the protocol nothing
    before it ends): a client that connects and never finishes its handshake holds a
    slot and is closed after ``header_timeout`` (``refused_handshake_timeout``)."""

    # asyncio reads into a 256 KiB buffer per connection, allocated at accept: 256 stalled
    # handshakes held 64 MiB, and glibc kept the freed heap (RSS 63 -> 159 MB). One TLS
    # record (16 KiB and its overhead) per read is as fast for requests this size.
    max_size = 16 * 1024 + 512

    def __init__(self, app: GuardedH11Protocol, context: ssl.SSLContext):
        # asyncio's own handshake timeout is a backstop: the head's clock fires first
        super().__init__(asyncio.get_running_loop(), app, context, None, server_side=True,
                         ssl_handshake_timeout=2 * app.limits.header_timeout + 1)
        self.guarded = app

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.guarded.admit(transport, plain=False)

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self.guarded.release()   # asyncio tells the protocol only after a handshake


def _tls_protocol(context: ssl.SSLContext, *args, **kw) -> _TlsConnection:
    return _TlsConnection(GuardedH11Protocol(*args, **kw), context)


class _ListeningSocket(socket.socket):
    """A listening socket whose accept() sheds connections when out of descriptors.

    Out of descriptors, the kernel keeps the pending connections and keeps the socket
    readable: asyncio would wake up and fail again at once. Instead, a reserved
    descriptor is released, the pending connections are accepted and closed (the clients
    see the connection closed), and the descriptor is reserved again; asyncio sees an
    empty queue."""

    refusals: Refusals

    def reserve(self) -> None:
        try:
            self._spare = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self._spare = None

    def accept(self):
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            self.refusals.refuse("descriptors", f"{exc.strerror}: closing new connections "
                                 f"until descriptors are free", self._shed())
            raise BlockingIOError(errno.EAGAIN, "out of descriptors") from None

    def _shed(self) -> int:
        spare, self._spare = getattr(self, "_spare", None), None
        if spare is not None:
            os.close(spare)
        shed = 0
        try:
            for _ in range(_SHED_PER_WAKEUP):
                fd, _ = self._accept()
                os.close(fd)
                shed += 1
        except OSError:   # the queue is empty (or still no descriptor: next wake-up)
            pass
        self.reserve()
        return max(shed, 1)

    def close(self) -> None:
        spare, self._spare = getattr(self, "_spare", None), None
        if spare is not None:
            os.close(spare)
        super().close()


def listening_socket(bind: str, port: int, refusals: Refusals,
                     backlog: int = BACKLOG) -> socket.socket:
    """A bound, listening socket for :func:`serve` (port 0: any free port)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = _ListeningSocket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    sock.refusals = refusals
    sock.reserve()
    return sock


class _RateLimitFilter(logging.Filter):
    """Passes a logger's WARNING records through a :class:`RateLimitedLog` (one line per
    message per interval, with a count of the others)."""

    def __init__(self, limiter: RateLimitedLog):
        super().__init__()
        self.limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        self.limiter.warning(str(record.msg), "%s", record.getMessage())
        return False


_uvicorn_filter = _RateLimitFilter(RateLimitedLog(logging.getLogger("uvicorn.warnings")))


def fit_to_descriptors(limits: HttpLimits) -> HttpLimits:
    """``limits`` with ``max_connections`` that fit this process's descriptors: the soft
    RLIMIT_NOFILE is raised toward the hard one when the connections need it, and
    ``max_connections`` is lowered (with a warning) when they still do not fit beside
    ``RESERVED_FDS`` descriptors for ZooKeeper, logs and files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limits.max_connections + BACKLOG + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft - RESERVED_FDS >= limits.max_connections:
        return limits
    cap = max(1, soft - RESERVED_FDS)
    log.warning("only %d file descriptors for this process: at most %d HTTP connections "
                "at once instead of %d (raise the limit with ulimit -n)", soft, cap,
                limits.max_connections)
    return replace(limits, max_connections=cap)


def server(app, sock: socket.socket, limits: HttpLimits, refusals: Refusals,
           tls: ssl.SSLContext | None = None):
    """A ``uvicorn.Server`` for ``app`` on ``sock`` (from :func:`listening_socket`),
    serving HTTPS with ``tls`` (:func:`tls_context`) if given; run it with
    ``server.run(sockets=[sock])``. Under TLS the bounds hold from the TCP accept: the
    handshake and the request head together must end within ``header_timeout``."""
    import uvicorn
    logging.getLogger("uvicorn.error").addFilter(_uvicorn_filter)   # idempotent
    slots = ConnectionSlots(limits.max_connections, limits.max_connections_per_peer,
                            lambda conn: conn.head_since, idle_from_any=True)
    # TLS is layered here rather than by uvicorn's ssl_certfile (asyncio's create_server
    # ssl=): see _TlsConnection
    protocol = partial(_tls_protocol, tls) if tls is not None else GuardedH11Protocol
    config = uvicorn.Config(
        app, log_level="warning", access_log=False,
        loop="asyncio",     # accept() must go through _ListeningSocket (uvloop's does not)
        http=partial(protocol, limits=limits, refusals=refusals, slots=slots),
        timeout_keep_alive=limits.keep_alive, backlog=BACKLOG,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES, ws="none")
    return uvicorn.Server(config)


__all__ = ["HttpLimits", "GuardedH11Protocol", "listening_socket", "server", "tls_context",
           "client_context", "tls_problem", "TlsError",
           "fit_to_descriptors",
           "MAX_HEADER_BYTES"]
