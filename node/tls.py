"""A node's event transport settings: TLS contexts and where event sources may listen.

One place turns the node's settings (``flume node --tls-cert/--tls-key/--tls-ca/
--tls-client-cert/--plaintext-events``, or the same keys of its TOML file) into a
:class:`Transport`, which every logical node hands its components (``ctx.transport``).
Specs carry no secrets: ``collectorSource(35853)`` and ``agentE2ESink("c1", 35853)`` speak
TLS because the node was started with a certificate, not because the spec says so.

Contracts:

* :func:`load` reads and checks every file at start: a file missing or unreadable, a
  certificate or CA bundle that is not PEM, a key that does not match its certificate,
  a client-certificate policy that needs a CA without one: :class:`TlsError` with a
  sentence naming the file (``flume node`` prints it and exits with status 2).
* TLS 1.2 at least, on both sides. The server side asks for a client certificate signed
  by ``--tls-ca`` (``require`` by default when a CA is given: mutual TLS; ``optional``;
  ``none``). The client side verifies the server's certificate against ``--tls-ca`` (the
  system's CAs without one) and checks that it names the host of the spec (a SAN
  ``IP:`` entry matches an address), and presents the node's certificate when it has one.
* A node with TLS serves and connects TLS only. Without TLS, event sources listen on
  127.0.0.1 unless the node is started with ``--plaintext-events`` (trusted networks:
  a WARNING at start says so); an explicit ``bind`` beyond loopback without either is
  refused when the source opens (:meth:`Transport.bind_address`), so the logical node
  goes ERROR with a sentence that says what to do. UDP sources cannot do TLS: they
  listen beyond loopback only with ``--plaintext-events``.
* :func:`server_handshake` runs a server-side handshake in the connection's own thread
  within a deadline for the whole handshake (not per byte); :func:`refusal` names why a
  handshake failed (``tls_handshake``, ``tls_plaintext``, ``tls_client_certificate``);
  :func:`client_error` turns a client's failure into a sentence for the logs.
"""
from __future__ import annotations

import ipaddress
import os
import select
import socket
import ssl
import time
from dataclasses import dataclass

from .errors import FlumeError, SourceError


def check_key_mode(key: str, error: type[Exception]) -> None:
    """``error`` with a sentence if the private key file ``key`` is accessible by users
    other than its owner and group (what a key shared with everyone protects: nothing)."""
    mode = os.stat(key).st_mode
    if mode & 0o007:
        raise error(f"the private key {key} is accessible by other users (mode "
                    f"{mode & 0o777:o}): chmod o-rwx it (0600 or 0640)")

CLIENT_CERT_POLICIES = ("require", "optional", "none")
_VERIFY = {"require": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
           "none": ssl.CERT_NONE}
MAX_PEM_BYTES = 1 << 20      # a certificate chain or CA bundle is a few kB; bounds a mistake
SYSLOG_TLS_PORT = 6514       # RFC 5425


class TlsError(FlumeError):
    """The node's TLS settings cannot be used; the message names the file and says why."""


@dataclass(frozen=True)
class Transport:
    """What a node's event sources and sinks use: ``server`` wraps accepted connections,
    ``client`` wraps outgoing ones (both None without TLS), ``tls`` tells whether the node
    was given TLS settings (then it serves and connects TLS only), ``plaintext`` whether
    plaintext listeners beyond loopback were opted into."""

    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None
    tls: bool = False
    plaintext: bool = False

    def bind_address(self, requested: str, what: str, *, tls_capable: bool = True) -> str:
        """The address a source listens on: ``requested``, or for "" the default (0.0.0.0
        with TLS or the plaintext opt-in, else 127.0.0.1). SourceError when the source
        would serve plaintext beyond loopback without ``--plaintext-events``, or TLS
        without a certificate."""
        secured = self.tls and tls_capable
        if self.tls and tls_capable and self.server is None:
            raise SourceError(f"{what}: this node has TLS settings but no certificate to "
                              f"serve with: start it with --tls-cert FILE and --tls-key FILE")
        if not requested:
            return "0.0.0.0" if secured or self.plaintext else "127.0.0.1"
        if secured or self.plaintext or is_loopback(requested):
            return requested
        how = ("give the node --tls-cert, --tls-key and --tls-ca (docs/security.md)"
               if tls_capable else f"{what} has no TLS (UDP, or plain HTTP)")
        raise SourceError(
            f"{what}: refusing to listen on {requested} without TLS: anyone reaching it "
            f"could send events; {how}, or on a trusted network start the node with "
            f"--plaintext-events (or listen on 127.0.0.1)")


PLAINTEXT = Transport()


def is_loopback(address: str) -> bool:
    """True if ``address`` (an IP address or a name) means only this host's loopback."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _readable(path: str, what: str) -> str:
    """``path`` if it is a readable PEM file of reasonable size; TlsError otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if len(head) > MAX_PEM_BYTES:
        raise TlsError(f"the {what} {path} is larger than {MAX_PEM_BYTES} bytes: not a PEM "
                       f"file")
    if b"-----BEGIN " not in head:
        raise TlsError(f"the {what} {path} is not a PEM file (no -----BEGIN line)")
    return path


def _min_tls12(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsError(f"the key {key} does not match the certificate {cert}") from None
        raise TlsError(f"cannot use the certificate {cert} with the key {key} (not a PEM "
                       f"certificate and unencrypted PEM private key?): "
                       f"{exc.reason or exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise TlsError(f"the CA bundle {ca} holds no usable certificate: "
                       f"{exc.reason or exc}") from None


def load(cert: str | None = None, key: str | None = None, ca: str | None = None,
         client_cert: str | None = None, plaintext: bool = False) -> Transport:
    """The :class:`Transport` of these settings (all None: plaintext); TlsError with a
    sentence when they cannot be used. ``client_cert`` is the server side's policy
    (require/optional/none), by default ``require`` with a CA and ``none`` without."""
    if bool(cert) != bool(key):
        raise TlsError("--tls-cert and --tls-key go together: give both (the certificate "
                       "and its private key) or neither")
    if client_cert is not None and client_cert not in CLIENT_CERT_POLICIES:
        raise TlsError(f"--tls-client-cert must be one of {', '.join(CLIENT_CERT_POLICIES)}, "
                       f"got {client_cert!r}")
    if not (cert or ca):
        if client_cert is not None:
            raise TlsError("--tls-client-cert needs --tls-cert, --tls-key and --tls-ca")
        return Transport(plaintext=plaintext)
    policy = client_cert or ("require" if ca else "none")
    if policy != "none" and not ca:
        raise TlsError(f"--tls-client-cert {policy} needs --tls-ca FILE: the CA bundle "
                       f"that signs the client certificates")
    for path, what in ((cert, "certificate"), (key, "private key"), (ca, "CA bundle")):
        if path:
            _readable(path, what)
    if key:
        check_key_mode(key, TlsError)
    server = None
    if cert:
        server = _min_tls12(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        _load_chain(server, cert, key)
        server.verify_mode = _VERIFY[policy]
        if ca:
            _load_ca(server, ca)
    # verifies the server's certificate and name; the system's CAs without --tls-ca
    client = _min_tls12(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if ca:
        _load_ca(client, ca)
    else:
        client.load_default_certs()
    if cert:
        _load_chain(client, cert, key)
    return Transport(server=server, client=client, tls=True, plaintext=plaintext)


def from_args(args) -> Transport:
    """:func:`load` with a ``flume node`` command line's settings."""
    return load(args.tls_cert, args.tls_key, args.tls_ca, args.tls_client_cert,
                args.plaintext_events)


def describe(transport: Transport) -> str:
    """One line for the start-up log."""
    if not transport.tls:
        return ("event links in plaintext" + (
            ", sources listening beyond loopback (--plaintext-events: trusted networks "
            "only)" if transport.plaintext else ", sources on 127.0.0.1 only"))
    policy = {ssl.CERT_REQUIRED: "required", ssl.CERT_OPTIONAL: "optional",
              ssl.CERT_NONE: "not asked for"}
    server = transport.server
    return ("event links over TLS only (TLS 1.2+), client certificates " +
            (policy[server.verify_mode] if server is not None else
             "(no certificate: this node only sends)"))


def server_handshake(sock: ssl.SSLSocket, timeout: float) -> None:
    """Complete the server side of ``sock``'s handshake within ``timeout`` seconds in all,
    however the bytes trickle in; TimeoutError past it, ssl.SSLError / OSError if it fails.
    The socket's own timeout is restored."""
    before = sock.gettimeout()
    deadline = time.monotonic() + timeout
    sock.settimeout(0.0)
    try:
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                event = select.POLLIN
            except ssl.SSLWantWriteError:
                event = select.POLLOUT
            left = deadline - time.monotonic()
            poller = select.poll()
            poller.register(sock, event)
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError(f"no TLS handshake within {timeout:g} s")
    finally:
        sock.settimeout(before)


def ended(exc: BaseException) -> bool:
    """The peer closed or reset the connection during the handshake: a probe or a client
    giving up, not a refusal (a plaintext port does not count a connection closed
    before its first message either)."""
    return (isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError))
            or "UNEXPECTED_EOF" in str(exc))


def refusal(exc: BaseException) -> tuple[str, str]:
    """``(reason, why)`` of a failed server-side handshake, for ``Refusals.refuse``."""
    text = str(exc)
    if isinstance(exc, TimeoutError):
        return "tls_handshake", text
    if any(m in text for m in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
                               "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")):
        return "tls_plaintext", "spoke plaintext (or not TLS) to a TLS port"
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text or "CERTIFICATE_REQUIRED" in text:
        return "tls_client_certificate", "presented no client certificate (one is required)"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "tls_client_certificate", ("presented a client certificate not signed by "
                                          f"this node's CA ({getattr(exc, 'verify_message', '') or text})")
    return "tls_handshake", f"TLS handshake failed: {getattr(exc, 'reason', None) or text}"


def client_error(exc: BaseException, address: str) -> str:
    """A sentence saying why connecting to ``address`` over TLS failed."""
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the certificate of {address} cannot be trusted: "
                f"{exc.verify_message or text} (is it signed by the CA of --tls-ca, and does "
                f"it name the host of the spec in its subjectAltName?)")
    if "CERTIFICATE_REQUIRED" in text or ("HANDSHAKE_FAILURE" in text and "ALERT" in text):
        return (f"{address} requires a client certificate and this node has none: start "
                f"it with --tls-cert and --tls-key")
    if any(m in text for m in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN",
                               "DECRYPT_ERROR")):
        return (f"{address} refused this node's certificate: it is not signed by a CA "
                f"that {address} trusts")
    if "WRONG_VERSION_NUMBER" in text:
        return f"{address} does not speak TLS (a plaintext port?)"
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError)) or "EOF" in text:
        return (f"{address} closed the connection during the TLS handshake: it may not "
                f"serve TLS (a node without --tls-cert) or it refused this node")
    if isinstance(exc, TimeoutError):
        return f"{address} did not complete the TLS handshake in time"
    return f"TLS with {address} failed: {getattr(exc, 'reason', None) or text}"


def confirm_accepted(sock: ssl.SSLSocket, timeout: float) -> None:
    """Client side, after the handshake: under TLS 1.3 the server checks the client's
    certificate after the client has finished, and answers with session tickets or an
    alert. Wait for that answer (up to ``timeout``) so that a refused certificate fails
    the connect, with its reason, rather than the first call. ssl.SSLError if refused."""
    if sock.version() != "TLSv1.3":
        return          # TLS 1.2 checks the client's certificate within the handshake
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(timeout * 1000):
        return          # no ticket: nothing to learn; a refusal shows on the first call
    before = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        if sock.recv(1) == b"":
            raise ssl.SSLEOFError("the server closed the connection after the handshake")
        raise ssl.SSLError("the server sent data before any request")
    except ssl.SSLWantReadError:
        pass            # the tickets were read: accepted
    finally:
        sock.settimeout(before)


def hostname_of(host: str) -> str:
    """The name to check the server's certificate against: the spec's host as given (an
    IP address matches a SAN ``IP:`` entry)."""
    return host.strip("[]")

