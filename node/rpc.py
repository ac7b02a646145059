"""The event transport: the Thrift IDL, a threaded RPC server and a reconnecting client.

The IDL (``thrift/flume.thrift``, shipped as package data of ``flume_og.thrift``) is loaded once
per process with thriftpy2 as the module ``flume_thrift`` (:func:`idl`). The client uses
thriftpy2's Cython binary protocol and buffered transport when they are built (the pure
Python ones otherwise; the bytes on the wire are the same); the server reads requests with
its own bounded reader (:mod:`node.rpc_wire`).

* :class:`RpcServer` ``(bind, port, handler)`` serves ``ThriftFlumeEventServer``: a thread
  accepts connections and each connection gets its own thread. ``handler`` has the IDL's
  method names; an exception escaping one of the ``AppendResult`` methods is answered as
  ``FAILED`` with its message (the connection stays usable). ``port=0`` picks a free port,
  readable as ``.port`` after :meth:`RpcServer.start`; :meth:`RpcServer.stop` closes the
  listener and every connection at once.

  Bounds (every refusal is counted, ``refused_<reason>``, and warned about, rate-limited:
  :mod:`node.limits`):

  - ``max_connections`` (512) open at once, at most ``max_connections_per_peer`` (128,
    a quarter) of them from one address. Past the per-address cap, that address's
    connection idle -- between two messages -- the longest makes room (``evicted``),
    else the new one is closed as soon as it is accepted (``peer_connections``). Past
    the total, an idle connection of the address holding the most slots makes room
    (``evicted``); with none idle, that address's slowest message in progress (the
    earliest deadline, below) is cut off (``evicted_slow``) if the address holds at
    least two slots more than the newcomer's, else the new one is closed
    (``connections``): a few addresses holding every slot cannot keep a new one out
    (:class:`node.limits.ConnectionSlots`). Threads therefore never exceed
    ``max_connections`` plus one, plus evicted ones on their way out.
  - ``idle_timeout`` (60 s): a connection silent that long between messages is closed
    (``idle_closed``); one that stops that long in the middle of a message is refused
    (``slow``).
  - ``message_timeout`` (30 s) and ``min_bytes_per_second`` (16,384): a message must keep
    arriving at that rate. Its first byte gives it ``message_timeout`` seconds, each byte
    received adds ``1/min_bytes_per_second`` s, never more than ``message_timeout`` s
    ahead; when that runs out it is refused (``slow``). A byte now and then is cut
    ``message_timeout`` s after the message began and a burst cannot buy more than that
    of silence, while a link above the rate is never cut, whatever the message's size
    (an 8 MiB batch at 90 kB/s takes 93 s); a link below it is cut after
    ``message_timeout / (1 - speed/rate)`` s.
  - ``max_message_bytes`` (16 MiB) per message. Requests are read by
    :mod:`node.rpc_wire`, not thriftpy2: every announced length is checked against what
    is left of the budget before anything is read or allocated, and bytes are held only
    as they arrive. ``appendBatch`` and ``append`` get an eighth of it (they are made of
    structs and map entries, one Python object each); ``max_batch_events`` (20,000)
    event structs per message. Past a bound (``oversize``, ``events``), or on what does
    not parse as a message of the IDL (``malformed``), the connection is closed: the rest
    of the message cannot be skipped safely.
  - Method names: at most ``wire.MAX_NAME_BYTES`` (64) bytes, checked before the name is
    read (``malformed``); an unknown one is answered with a ``TApplicationException``.
    Names shown in answers and logs are cut to ``SHOWN_CHARS`` (200) characters, and an
    answer's message to ``ANSWER_CHARS`` (1,000). A oneway ``append`` without its event
    is counted (``malformed``) and ignored.
  - Memory and time: a message in progress holds at most about twice its bytes (one
    buffer per string, filled as the bytes arrive however small the pieces, then the
    string), and the long strings of all connections together at most
    ``INFLIGHT_MESSAGES`` (16) x ``max_message_bytes`` (256 MiB by default): a string
    that does not fit waits for room, up to ``idle_timeout``, then its connection
    is closed (``busy``); an ``appendBatch`` of 2 MiB of tiny structs or map
    entries about 15 times that; a decoded payload its events (~200 bytes each, at most
    20,000). Every element of a container takes at least a byte, so the work a message
    causes is bounded by its size. An idle connection costs a thread and a socket.
  - TLS (``tls``, the node's server context, :mod:`node.tls`): accepted connections are
    wrapped without I/O and shake hands in their own thread, within ``message_timeout``
    (else ``idle_timeout``) in all however slowly the bytes come (``tls_handshake``); a
    plaintext client (``tls_plaintext``, answered with a ``TApplicationException`` saying
    so) and a missing or foreign client certificate (``tls_client_certificate``) are
    refused. A handshaking connection holds a slot and counts as idle.
  - Accepting: when ``accept`` fails (EMFILE, ENFILE...) or a connection's thread cannot
    be started, the connection is refused and the loop backs off (0.05 s doubling to
    1 s, warnings rate-limited). After ``ACCEPT_GIVE_UP`` (10 s) of failures without a
    single success -- or if the loop itself fails -- the server gives up: it closes its
    port, sets ``failure`` (the reason), counts ``accept_failed`` and calls
    ``on_failure``; the RPC source then fails, which puts its logical node in ERROR
    with that reason. It is never silently dead.

* :class:`RpcClient` ``(host, port, timeout)`` connects lazily and reconnects on the next
  call after any failure. Every call either returns ``(status, message)`` or raises
  :class:`SinkError` when the connection cannot be made (nothing was sent), or
  :class:`~node.errors.DeliveryUnknown` when the call fails after that (timeout, broken
  connection, an answer it cannot read): the receiver may have taken that batch.

* **Batch ids and deadlines** (the IDL's optional fields of ``appendPacked`` and
  ``appendBatch``; a receiver or sender that predates them ignores them). Each batch call
  carries ``timeoutMs`` -- how long the caller waits for the answer once it has sent the
  request -- and, from this project's senders, an id ``(sender, batch)``
  (:class:`BatchIds`: a resend of the same bytes after a failure keeps the id). The
  receiver counts the deadline from when the request has arrived whole (handlers read it
  with :func:`current_call`), drops what its flow has not taken by then (``expired``)
  and answers a resent id from a window (:mod:`node.rpc_window`): OK without writing if
  it was written, after the first outcome if it is being written. So a batch resent
  after a timeout or a cut is written once while the receiver remembers its id --
  effectively once, short of a receiver restart between writing and answering.

Payloads of ``appendPacked`` / ``appendGroup`` are :mod:`node.codec` encodings, optionally
gzip-compressed as a whole (``agent*Sink(compression=true)``): :func:`decode_payload`
recognises the gzip magic, so no IDL field marks compression, and stops inflating one byte
past its bound (a compression bomb costs the receiver that bound, nothing more).

This project's senders keep every call under half the receivers' default bounds
(``SEND_BATCH_EVENTS``, ``SEND_BATCH_BYTES``, ``SEND_STRUCT_BATCH_BYTES``), splitting larger
batches with :func:`node.codec.split_events`.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import logging
import secrets
import select
import socket
import ssl
import threading
import time
import zlib
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Callable, NamedTuple

import thriftpy2
from thriftpy2.thrift import TClient

from . import rpc_wire as wire
from . import tls as tlsmod
from .backoff import Backoff
from .codec import (MAX_BATCH_BYTES, MAX_BATCH_EVENTS, BatchTooLarge, decode_events,
                    encode_events)
from .component import Metrics
from .errors import DeliveryUnknown, SinkError, SourceError
from .event import Event, Priority
from .limits import ConnectionSlots, RateLimitedLog, Refusals

try:  # the Cython protocol and transport are several times faster
    from thriftpy2.protocol import TCyBinaryProtocolFactory as _ProtoFactory
    from thriftpy2.transport import TCyBufferedTransportFactory as _TransFactory
except ImportError:  # pragma: no cover - pure Python build of thriftpy2
    from thriftpy2.protocol import TBinaryProtocolFactory as _ProtoFactory
    from thriftpy2.transport import TBufferedTransportFactory as _TransFactory
from thriftpy2.transport import TSocket

log = logging.getLogger(__name__)

IDL_MODULE = "flume_thrift"
DEFAULT_PORT = 35853
DEFAULT_TIMEOUT = 20.0   # seconds a call may take before the client gives up on it

# The server's bounds (rpcSource/collectorSource arguments default to these).
MAX_CONNECTIONS = 512           # connections open at once
# ...from one address: agents behind a NAT share one (each opens up to 3 connections, so
# about 42 agents), and past the total the biggest holder gives up a slot anyway
MAX_CONNECTIONS_PER_PEER = MAX_CONNECTIONS // 4
IDLE_TIMEOUT = 60.0             # seconds a connection may stay silent between messages
MESSAGE_TIMEOUT = 30.0          # a message's credit of time, at most...
MIN_BYTES_PER_SECOND = 16_384   # ...and what each byte of it adds: 1/this s
MAX_MESSAGE_BYTES = MAX_BATCH_BYTES   # one message on the wire, and one payload decompressed
# MAX_BATCH_EVENTS (from codec): events in one call
STRUCT_SHARE = 8                # appendBatch/append get MAX_MESSAGE_BYTES // STRUCT_SHARE
INFLIGHT_MESSAGES = 16          # long strings held at once: this many maximal messages
ACCEPT_GIVE_UP = 10.0           # seconds of failed accepts (no success) before failing
ACCEPT_PAUSE_FIRST = 0.05       # seconds after a failed accept; doubling up to the next
ACCEPT_PAUSE_MAX = 1.0
SHOWN_CHARS = 200               # of a name from the wire, in answers and logs
UNSETTLED_IDS = 1024            # batch ids a sender keeps for resends (BatchIds)
ANSWER_CHARS = 1000             # of an answer's message

# What this project's senders keep every call under: half the receiver's defaults.
SEND_BATCH_EVENTS = MAX_BATCH_EVENTS // 2
SEND_BATCH_BYTES = MAX_MESSAGE_BYTES // 2                     # appendPacked/appendGroup
SEND_STRUCT_BATCH_BYTES = MAX_MESSAGE_BYTES // STRUCT_SHARE // 2   # appendBatch

_idl = None
_idl_lock = threading.Lock()
_serving = threading.local()     # .peer, .call: what a server thread is answering


def current_peer() -> str:
    """The sender's address of the call a ``ThriftServer`` thread is answering ("" in
    any other thread): for bounds per address in the handlers."""
    return getattr(_serving, "peer", "")


class CallInfo(NamedTuple):
    """What an ``appendPacked`` / ``appendBatch`` call says of itself besides its events
    (the IDL's optional fields): the batch id ``(sender, batch)`` -- ``sender`` "" and
    ``batch`` None when the caller gave none -- and ``deadline``, the monotonic time at
    which the caller gives up (its ``timeoutMs`` counted from when the request had
    arrived whole), None without one."""

    sender: str = ""
    batch: int | None = None
    deadline: float | None = None
    timeout: float = 0.0     # the caller's timeoutMs, in seconds


NO_CALL_INFO = CallInfo()


def current_call() -> CallInfo:
    """The :class:`CallInfo` of the ``appendPacked`` / ``appendBatch`` call a server
    thread is answering (``NO_CALL_INFO`` in any other case)."""
    return getattr(_serving, "call", None) or NO_CALL_INFO


_PRIORITIES = tuple(Priority)
_GZIP_MAGIC = b"\x1f\x8b"


def idl_path() -> Path:
    """Where the IDL is: the installed ``flume_og.thrift`` package data, else the repository."""
    try:
        p = importlib.resources.files("flume_og.thrift") / "flume.thrift"
        if p.is_file():
            return Path(str(p))
    except Exception:  # not installed, or a namespace package importlib cannot read
        pass
    return Path(__file__).resolve().parent.parent / "thrift" / "flume.thrift"


def idl():
    """The loaded IDL module ``flume_thrift`` (loaded once per process)."""
    global _idl
    if _idl is None:
        with _idl_lock:
            if _idl is None:
                _idl = thriftpy2.load(str(idl_path()), module_name=IDL_MODULE)
    return _idl


class Status:
    """The ``Status`` enum of the IDL, as plain ints."""

    OK = 0
    RETRY = 1
    FAILED = 2
    NAMES = {0: "OK", 1: "RETRY", 2: "FAILED"}


def result(status: int, message: str = ""):
    """An ``AppendResult`` to answer a call with."""
    return idl().AppendResult(status=status, message=message)


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters (saying how long it was): what a sender chose,
    shown in an answer or a log line, never costs more than that."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


# ---------------------------------------------------------------- conversions

def to_thrift(events: list[Event]) -> list:
    """Events -> ``ThriftFlumeEvent`` structs (every field kept)."""
    T = idl().ThriftFlumeEvent
    return [T(timestamp=e.timestamp, priority=int(e.priority), body=e.body, nanos=e.nanos,
              host=e.host, fieldss=e.attrs) for e in events]


def from_thrift(tevents: list) -> list[Event]:
    """``ThriftFlumeEvent`` structs -> events; missing fields get neutral values."""
    prios = _PRIORITIES
    return [Event(t.body or b"", t.timestamp or 0, t.nanos or 0,
                  prios[t.priority] if t.priority is not None and 0 <= t.priority < 6
                  else Priority.INFO,
                  t.host or "", dict(t.fieldss) if t.fieldss else {}) for t in tevents]


def encode_payload(events: list[Event], compress: bool = False) -> bytes:
    """The ``appendPacked`` payload of ``events``; gzip-compressed with ``compress``."""
    data = encode_events(events)
    if compress:
        data = gzip_payload(data)
    return data


def gzip_payload(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def decode_payload(data: bytes, max_bytes: int | None = None,
                   max_events: int | None = None) -> list[Event]:
    """Inverse of :func:`encode_payload` (plain or gzip); ValueError if it is not one,
    :class:`BatchTooLarge` if it holds more than ``max_bytes`` (after decompression: the
    inflater stops one byte past the bound, so a compression bomb costs at most that) or
    more than ``max_events`` events."""
    if data[:2] == _GZIP_MAGIC:
        inflater = zlib.decompressobj(31)
        try:
            data = inflater.decompress(data, max_bytes + 1 if max_bytes else 0)
        except zlib.error as exc:
            raise ValueError(f"corrupt compressed payload: {exc}") from None
        if max_bytes and len(data) > max_bytes:
            raise BatchTooLarge("decompressed", f"payload inflates to more than "
                                                f"{max_bytes} bytes")
        if not inflater.eof:
            raise ValueError("corrupt compressed payload: truncated")
    elif max_bytes and len(data) > max_bytes:
        raise BatchTooLarge("bytes", f"payload of {len(data)} bytes, more than the "
                                     f"{max_bytes} allowed")
    return decode_events(data, max_events, max_bytes)


# ---------------------------------------------------------------- server

class _Dispatch:
    """Calls the user handler; an exception in an AppendResult method becomes FAILED.
    Warnings are rate-limited: a sender can cause one per call."""

    def __init__(self, handler, refusals: Refusals):
        self._h = handler
        self._refusals = refusals
        self._quiet = RateLimitedLog(log)

    def append(self, evt) -> None:
        if evt is None:
            self._refusals.refuse("malformed", "a one-event append without its event")
            return
        try:
            self._h.append(evt)
        except Exception as exc:  # oneway: nobody to answer
            self._quiet.warning("append", "rpc: one-event append failed: %s",
                                clip(str(exc)))
            log.debug("rpc: one-event append failed", exc_info=True)

    def _guard(self, name, *args):
        try:
            return getattr(self._h, name)(*args)
        except Exception as exc:
            why = clip(f"{type(exc).__name__}: {exc}")
            self._quiet.warning(name, "rpc: %s failed: %s", name, why)
            log.debug("rpc: %s failed", name, exc_info=True)
            return result(Status.FAILED, why)

    def _identified(self, name, sender, batch, timeout_ms, *args):
        """Run ``name(*args)`` with its :class:`CallInfo` readable by :func:`current_call`
        (a handler written before the ids keeps its signature)."""
        deadline = (time.monotonic() + timeout_ms / 1000) if timeout_ms and timeout_ms > 0 \
            else None
        _serving.call = CallInfo(sender or "", batch if sender else None, deadline,
                                 (timeout_ms or 0) / 1000)
        try:
            return self._guard(name, *args)
        finally:
            _serving.call = None

    def appendBatch(self, events, sender=None, batch=None, timeoutMs=None):
        return self._identified("appendBatch", sender, batch, timeoutMs, events or [])

    def appendPacked(self, payload, count, sender=None, batch=None, timeoutMs=None):
        return self._identified("appendPacked", sender, batch, timeoutMs, payload or b"",
                                count or 0)

    def appendGroup(self, agent, seq, checksum, payload, count):
        return self._guard("appendGroup", agent or "", seq or 0, checksum or 0,
                           payload or b"", count or 0)

    def close(self) -> None:
        close = getattr(self._h, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                log.debug("rpc: close call failed: %s", exc)


class LockedCounter:
    """``add(name, n)`` into a :class:`~node.component.Metrics` under a lock: connection
    threads count concurrently."""

    def __init__(self, metrics, lock: threading.Lock | None = None):
        self.metrics = metrics
        self.lock = lock or threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.metrics.add(name, n)

    def set(self, name: str, value) -> None:
        with self.lock:
            self.metrics.set(name, value)


class RpcServer:
    """Threaded ``ThriftFlumeEventServer`` on ``bind:port`` (see the module docstring).

    Bounds: ``max_connections`` open at once and ``max_connections_per_peer`` from one
    address (past either, the longest idle connection is closed to make room, else the new
    one), ``idle_timeout`` seconds a connection may send nothing between messages,
    ``message_timeout`` seconds of credit for a message arriving at
    ``min_bytes_per_second``,
    ``max_message_bytes`` and ``max_batch_events`` per message. ``metrics`` (an object
    with ``add``) receives the counters, ``on_failure(reason)`` is called once if it can
    accept no more."""

    def __init__(self, bind: str, port: int, handler, name: str = "rpc", *,
                 max_connections: int = MAX_CONNECTIONS,
                 max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER,
                 idle_timeout: float = IDLE_TIMEOUT,
                 message_timeout: float = MESSAGE_TIMEOUT,
                 min_bytes_per_second: int = MIN_BYTES_PER_SECOND,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 max_batch_events: int = MAX_BATCH_EVENTS, metrics=None,
                 on_failure: Callable[[str], None] | None = None,
                 tls: ssl.SSLContext | None = None):
        self.bind = bind
        self.tls = tls
        self.port = port
        self.name = name
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.min_bytes_per_second = min_bytes_per_second
        self.max_message_bytes = max_message_bytes
        self.max_batch_events = max_batch_events
        self.metrics = metrics if metrics is not None else LockedCounter(Metrics())
        self.on_failure = on_failure
        self.failure: str | None = None
        self._refusals = Refusals(self.metrics, log, name)
        self._quiet = RateLimitedLog(log)
        self._dispatch = _Dispatch(handler, self._refusals)
        self._inflight = wire.ByteBudget(INFLIGHT_MESSAGES * max_message_bytes, idle_timeout)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        # connection -> (its thread, its reader); _slots: which hold a slot, per address
        self._conns: dict[socket.socket, tuple[threading.Thread, wire.Reader]] = {}
        self._slots = ConnectionSlots(max_connections, max_connections_per_peer,
                                      lambda conn: self._conns[conn][1].idle_since,
                                      lambda conn: self._conns[conn][1].deadline or 0.0)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._trouble_since: float | None = None
        self._backoff = Backoff(ACCEPT_PAUSE_FIRST, ACCEPT_PAUSE_MAX)
        self.connections = 0

    def start(self) -> None:
        """Bind and start serving; SourceError if the address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.bind, self.port))
            sock.listen(1024)      # a burst of agents reconnecting at once
        except OSError as exc:
            sock.close()
            raise SourceError(f"{self.name}: cannot bind {self.bind}:{self.port}: "
                              f"{exc.strerror or exc}") from exc
        self.port = sock.getsockname()[1]
        self._refusals.what = f"{self.name} on port {self.port}"
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_guard, args=(sock,),
                                        name=f"{self.name}:{self.port}", daemon=True)
        self._thread.start()

    def _accept_guard(self, sock: socket.socket) -> None:
        try:
            self._accept_loop(sock)
        except Exception as exc:  # a bug: never a silently dead server
            if not self._stopped.is_set():
                log.exception("%s on port %d: the accept loop failed", self.name, self.port)
                self._fail(f"the accept loop failed: {type(exc).__name__}: {exc}")

    def _accept_loop(self, sock: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                conn, addr = sock.accept()
            except OSError as exc:
                if self._stopped.is_set():
                    return
                # EMFILE, ENFILE, ENOBUFS...: connections stay in the backlog meanwhile
                self.metrics.add("accept_errors")
                self._quiet.warning("accept", "%s on port %d cannot accept connections: "
                                    "%s", self.name, self.port, exc.strerror or exc)
                if not self._trouble(f"accept failed: {exc.strerror or exc}"):
                    return
                continue
            peer = addr[0]
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                # no I/O here: the handshake runs in the connection's thread (_serve)
                conn = self.tls.wrap_socket(conn, server_side=True,
                                            do_handshake_on_connect=False)
            reader = wire.Reader(conn, self.max_batch_events, idl().ThriftFlumeEvent,
                                 self._inflight, idle_timeout=self.idle_timeout,
                                 message_timeout=self.message_timeout,
                                 min_rate=self.min_bytes_per_second)
            t = threading.Thread(target=self._serve, args=(conn, peer, reader), daemon=True,
                                 name=f"{self.name}:{self.port}:{addr[1]}")
            with self._lock:
                if self._stopped.is_set():
                    conn.close()
                    return
                refused, evicted = self._slots.admit(conn, peer)
                if refused is None:
                    self._conns[conn] = (t, reader)
                    self.connections += 1
                if evicted is not None:
                    self._conns.pop(evicted[0], None)
            if evicted is not None:     # its thread sees the end of the stream and exits
                _shutdown(evicted[0], socket.SHUT_RDWR)
            self._slots.report(self._refusals, peer, refused, evicted)
            if refused is not None:
                conn.close()
                continue
            try:
                t.start()
            except RuntimeError as exc:     # "can't start new thread": pids/memory limit
                with self._lock:
                    self._forget(conn)
                conn.close()
                self._refusals.refuse("threads", f"{addr[0]}: cannot start a thread: {exc}")
                if not self._trouble(f"cannot start a thread for a connection: {exc}"):
                    return
                continue
            self.metrics.add("connections")
            self._trouble_since = None
            self._backoff.reset()

    def _forget(self, conn: socket.socket) -> None:
        """Under the lock: ``conn`` is gone (a no-op if it was evicted)."""
        self._conns.pop(conn, None)
        self._slots.remove(conn)

    def _trouble(self, reason: str) -> bool:
        """Accepting failed: back off (0.05 s doubling to 1 s) and True; after
        ``ACCEPT_GIVE_UP`` seconds without one success, fail and False."""
        now = time.monotonic()
        if self._trouble_since is None:
            self._trouble_since = now
        elif now - self._trouble_since >= ACCEPT_GIVE_UP:
            self._fail(f"{reason} (for {now - self._trouble_since:.0f} s)")
            return False
        self._stopped.wait(self._backoff.next_delay())
        return True

    def _fail(self, reason: str) -> None:
        """Give up: stop accepting (clients see the port refuse and fail over), keep the
        reason in ``failure``, count it, tell ``on_failure``."""
        if self.failure is not None:
            return
        self.failure = reason
        log.error("%s on port %d stops accepting connections: %s", self.name, self.port,
                  reason)
        self.metrics.add("errors")
        self.metrics.add("accept_failed")
        sock, self._listener = self._listener, None
        if sock is not None:
            sock.close()
        if self.on_failure is not None:
            self.on_failure(reason)

    def _handshake(self, conn: ssl.SSLSocket, peer: str) -> bool:
        """The TLS handshake, within the time a message gets (``message_timeout``, else
        ``idle_timeout``) however slowly it trickles in; False (refused, counted) if it
        fails or stalls."""
        timeout = self.message_timeout or self.idle_timeout or MESSAGE_TIMEOUT
        try:
            tlsmod.server_handshake(conn, timeout)
            return True
        except (OSError, ValueError) as exc:   # ssl.SSLError, TimeoutError, reset, EOF
            with self._lock:
                evicted = conn not in self._conns      # counted as evicted already
            if self._stopped.is_set() or evicted or tlsmod.ended(exc):
                log.debug("%s on port %d: %s left during the TLS handshake: %s",
                          self.name, self.port, peer, exc)
                return False
            reason, why = tlsmod.refusal(exc)
            self._refusals.refuse(reason, f"{peer}: {why}; connection closed")
            if reason == "tls_plaintext":
                _answer_in_plaintext(conn)
            return False

    def _serve(self, conn: socket.socket, peer: str, reader: wire.Reader) -> None:
        dispatch = self._dispatch
        _serving.peer = peer
        try:
            if self.tls is not None and not self._handshake(conn, peer):
                return
            while not self._stopped.is_set():
                reader.begin(self.max_message_bytes)
                api = ""
                api, mtype, seqid = reader.message_begin()
                method = wire.METHODS.get(api)
                if method is None:
                    reader.skip(wire.T_STRUCT, 0)
                    reader.end_message()
                    conn.sendall(wire.exception_reply(api, seqid, 1, f"unknown method {api}"))
                    continue
                spec, names, of_structs = method
                if of_structs:
                    reader.narrow(self.max_message_bytes // STRUCT_SHARE, api)
                args = reader.fields(spec)
                reader.end_message()
                answer = getattr(dispatch, api)(*(args.get(n) for n in names))
                if mtype == wire.ONEWAY:
                    continue
                if answer is None:
                    conn.sendall(wire.void_reply(api, seqid))
                else:
                    conn.sendall(wire.reply(api, seqid, answer.status,
                                            clip(answer.message or "", ANSWER_CHARS)))
        except wire.Refused as exc:
            self._refusals.refuse(exc.reason, f"{peer}: {api or 'a'} message: {exc}; "
                                              f"connection closed")
        except TimeoutError:
            if reader.started:
                late = reader.deadline is not None and time.monotonic() >= reader.deadline
                self._refusals.refuse("slow", f"{peer}: {api or 'a'} message " + (
                    f"arriving slower than {self.min_bytes_per_second} bytes/s for "
                    f"{self.message_timeout:g} s" if late else
                    f"incomplete after {self.idle_timeout:g} s of silence"))
            else:
                self.metrics.add("idle_closed")
        except (wire.Closed, OSError) as exc:  # EOF, reset, shut down
            if not self._stopped.is_set():
                log.debug("%s on port %d: connection ended: %s", self.name, self.port, exc)
        except Exception:       # a bug: this connection ends, the server goes on
            self.metrics.add("errors")
            log.exception("%s on port %d: serving %s failed", self.name, self.port, peer)
        finally:
            reader.release()
            with self._lock:
                self._forget(conn)
            try:
                conn.close()
            except OSError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, join the threads; idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        sock, self._listener = self._listener, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # wakes a blocked accept() on Linux
            except OSError:
                pass
            sock.close()
        with self._lock:
            conns = list(self._conns.items())
        # Shut the reading side only: idle connections see EOF at once, while a call in
        # progress can still write its answer (RETRY from a closing source) before ending.
        for conn, _ in conns:
            _shutdown(conn, socket.SHUT_RD)
        me = threading.current_thread()
        deadline = time.monotonic() + timeout
        for t in [self._thread, *(t for _, (t, _r) in conns)]:
            if t is not None and t is not me and t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        for conn, (t, _r) in conns:
            if t.is_alive():           # still stuck: cut it off completely
                _shutdown(conn, socket.SHUT_RDWR)


PLAINTEXT_REFUSAL = ("this port speaks TLS only: start the sending node with --tls-cert, "
                     "--tls-key and --tls-ca (docs/security.md)")


def _answer_in_plaintext(conn: socket.socket) -> None:
    """A plaintext Thrift client reached a TLS port: answer its call with a
    ``TApplicationException`` that says so (its sender logs that sentence instead of
    "connection reset"), written on the bare socket, then end the connection gracefully
    (a close with unread input would reset it and could discard the answer)."""
    try:
        socket.socket.settimeout(conn, 1.0)
        socket.socket.sendall(conn, wire.exception_reply("", 0, 6, PLAINTEXT_REFUSAL))
        socket.socket.shutdown(conn, socket.SHUT_WR)
        until = time.monotonic() + 1.0             # until the client closes, 1 s at most
        while socket.socket.recv(conn, 65536) and time.monotonic() < until:
            pass
    except OSError:
        pass


def _shutdown(conn: socket.socket, how: int) -> None:
    """Shut ``conn`` down at the TCP level from another thread. On a TLS socket,
    ``SSLSocket.shutdown`` would also drop its TLS state, so that an answer still being
    written would leave in plaintext; ``socket.socket.shutdown`` only shuts the socket."""
    try:
        socket.socket.shutdown(conn, how)
    except OSError:
        pass


# ---------------------------------------------------------------- client

class RpcClient:
    """A connection to one ``ThriftFlumeEventServer``; thread-safe (calls are serialised).

    ``timeout`` (seconds) bounds connecting and each call. Any failure closes the
    connection and raises :class:`SinkError`; the next call connects again. A connection
    the receiver closed while it was idle is noticed before a call and replaced (no
    error). With ``tls`` (the node's client context, :mod:`node.tls`) it connects over
    TLS only, checking that the receiver's certificate names ``host``; a TLS failure is a
    SinkError whose message says why (refused certificate, untrusted server...)."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float | None = None, tls: ssl.SSLContext | None = None):
        self.host = host
        self.tls = tls
        self.port = port
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._lock = threading.Lock()
        self._client: TClient | None = None
        self._trans = None
        self._sock: TSocket | None = None
        self.connects = 0
        self.stale_reconnects = 0
        self._closing = False    # close() gave up waiting for a call in progress

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _connect(self, timeout: float | None = None) -> TClient:
        connect = self.connect_timeout if timeout is None else timeout
        kind = TSocket if self.tls is None else _TlsSocket
        sock = kind(self.host, self.port, socket_timeout=self.timeout * 1000,
                    connect_timeout=connect * 1000)
        if self.tls is not None:
            sock.context = self.tls
        trans = _TransFactory().get_transport(sock)
        try:
            trans.open()
        except (ssl.SSLError, _TlsFailed) as exc:
            raise SinkError(f"rpc: cannot connect to {self.address}: "
                            f"{tlsmod.client_error(exc.__cause__ or exc, self.address)}") from exc
        except Exception as exc:
            raise SinkError(f"rpc: cannot connect to {self.address}: {exc}") from exc
        self._sock, self._trans = sock, trans
        self._client = TClient(idl().ThriftFlumeEventServer,
                               _ProtoFactory().get_protocol(trans))
        self.connects += 1
        return self._client

    def _drop(self) -> None:
        trans, self._trans, self._client, self._sock = self._trans, None, None, None
        if trans is not None:
            try:
                trans.close()
            except Exception:
                pass

    def _peer_closed(self) -> bool:
        """The idle connection is readable: the peer closed it (EOF), or sent what no
        call asked for. Either way it is not usable."""
        raw = getattr(self._sock, "sock", None)
        if raw is None:
            return True
        poller = select.poll()
        poller.register(raw, select.POLLIN | select.POLLERR | select.POLLHUP)
        if not poller.poll(0):
            return False
        if not isinstance(raw, ssl.SSLSocket):
            return True
        # TLS 1.3 session tickets may arrive after the handshake: readable, yet usable
        raw.settimeout(0.0)
        try:
            raw.recv(1)
            return True
        except ssl.SSLWantReadError:
            return False
        except OSError:
            return True
        finally:
            raw.settimeout(self._sock.socket_timeout)

    def _call(self, name: str, *args, timeout: float | None = None):
        """Call ``name``; ``timeout`` (seconds) replaces the client's for this call.
        SinkError if the connection cannot be made (nothing was sent),
        :class:`~node.errors.DeliveryUnknown` if the call fails after that."""
        with self._lock:
            if self._client is not None and self._peer_closed():
                # a receiver closes connections idle for long (its idleTimeoutMs):
                # reconnect before sending instead of failing the call
                self._drop()
                self.stale_reconnects += 1
            client = self._client or self._connect()
            other = timeout is not None and timeout != self.timeout
            try:
                if other:
                    self._sock.set_timeout(timeout * 1000)
                answer = getattr(client, name)(*args)
                if other:
                    self._sock.set_timeout(self.timeout * 1000)
                return answer
            except Exception as exc:
                self._drop()
                raise DeliveryUnknown(f"rpc {name} to {self.address} failed: "
                                      f"{exc or type(exc).__name__}") from exc
            finally:
                if self._closing:
                    self._closing = False
                    self._drop()

    def connect(self, timeout: float | None = None) -> None:
        """Connect now if not connected (SinkError if that fails); ``timeout`` (seconds)
        instead of the client's connect timeout."""
        with self._lock:
            if self._client is None:
                self._connect(timeout)

    def _answer(self, name: str, *args, timeout: float | None = None) -> tuple[int, str]:
        r = self._call(name, *args, timeout=timeout)
        if r is None or r.status is None:
            with self._lock:
                self._drop()
            raise DeliveryUnknown(f"rpc {name} to {self.address}: empty answer")
        return r.status, r.message or ""

    def _identity(self, batch: "BatchId | None", timeout: float | None) -> tuple:
        """The optional fields of a batch call: sender, batch number, the deadline."""
        ms = int((self.timeout if timeout is None else timeout) * 1000)
        if batch is None:
            return None, None, ms
        return batch.sender, batch.number, ms

    def append_packed(self, events: list[Event], compress: bool = False) -> tuple[int, str]:
        """Send ``events`` as one codec payload (``appendPacked``)."""
        return self.append_payload(encode_payload(events, compress), len(events))

    def append_payload(self, payload: bytes, count: int, batch: "BatchId | None" = None,
                       timeout: float | None = None) -> tuple[int, str]:
        """Send an already encoded payload of ``count`` events (``appendPacked``), with
        its ``batch`` id if given; ``timeout`` (seconds) instead of the client's. The
        call carries its deadline (``timeoutMs``) either way."""
        return self._answer("appendPacked", payload, count,
                            *self._identity(batch, timeout), timeout=timeout)

    def append_batch(self, events: list[Event], batch: "BatchId | None" = None,
                     timeout: float | None = None) -> tuple[int, str]:
        """Send ``events`` as a list of ``ThriftFlumeEvent`` structs (``appendBatch``)."""
        return self._answer("appendBatch", to_thrift(events),
                            *self._identity(batch, timeout), timeout=timeout)

    def append_group(self, agent: str, seq: int, checksum: int, payload: bytes,
                     count: int) -> tuple[int, str]:
        """Send one E2E group (``appendGroup``)."""
        return self._answer("appendGroup", agent, seq, checksum, payload, count)

    def append_one(self, event: Event) -> None:
        """The original oneway one-event ``append`` (no outcome, no flow control)."""
        self._call("append", to_thrift([event])[0])

    def close(self, timeout: float | None = None) -> None:
        """Close the connection. Safe from another thread: a call in progress fails
        (SinkError) at once instead of waiting for its timeout. A connect in progress
        cannot be cut short: ``close`` waits for it at most ``timeout`` seconds (None:
        as long as it takes), then leaves it to close itself when it ends."""
        sock = self._sock
        raw = getattr(sock, "sock", None) if sock is not None else None
        if raw is not None:
            _shutdown(raw, socket.SHUT_RDWR)
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._closing = True     # the call in progress drops its connection
            return
        try:
            self._drop()
        finally:
            self._lock.release()


class _TlsFailed(Exception):
    """The TCP connection was made but TLS failed (the cause says how)."""


class _TlsSocket(TSocket):
    """thriftpy2's client socket over TLS: connects, shakes hands within the connect
    timeout (the certificate checked against ``context`` and the host), and under TLS 1.3
    waits for the receiver to accept this node's certificate (:func:`node.tls.confirm_accepted`)."""

    context: ssl.SSLContext

    def open(self):
        raw = socket.create_connection((self.host, self.port), self.connect_timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock = self.context.wrap_socket(raw, server_hostname=tlsmod.hostname_of(
                    self.host))
                tlsmod.confirm_accepted(sock, self.connect_timeout or DEFAULT_TIMEOUT)
            except (OSError, ValueError) as exc:
                raise _TlsFailed(str(exc)) from exc
        except BaseException:
            raw.close()
            raise
        sock.settimeout(self.socket_timeout)
        self.sock = sock


# ---------------------------------------------------------------- batch ids

class BatchId(NamedTuple):
    """The id of one batch call: the sender instance and the batch's number."""

    sender: str
    number: int


def batch_digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class BatchIds:
    """A sender's batch ids (the IDL's ``sender`` and ``batch``; the receiver side is
    :mod:`node.rpc_window`).

    ``sender`` names this sender instance: host and ``name`` (64 characters of each at
    most) and a random part, so two instances never share ids. Numbers count from 1.
    :meth:`take` gives a batch, known by its encoded bytes, a new id -- unless a call of
    the same bytes failed (:meth:`unsettled`) and none answered OK since
    (:meth:`settle`): then the same id again, so that the receiver recognises the resend
    (a DFO replay, a retry) of a batch it took or is still writing. A failure whose
    outcome is unknown may name the receiver it happened at (:meth:`pinned`): the resend
    goes there, since another receiver does not know the id. At most ``limit``
    unsettled batches are remembered (a 16-byte digest each), the oldest forgotten first.
    Bytes are hashed only after a failure and while some batch is unsettled.
    Thread-safe."""

    def __init__(self, name: str, limit: int = UNSETTLED_IDS):
        self.sender = f"{socket.gethostname()[:64]}/{name[:64]}/{secrets.token_hex(8)}"
        self.limit = limit
        self._next = 0
        # digest -> (number, receiver whose outcome is unknown or None, since when)
        self._unsettled: OrderedDict[bytes, tuple[int, str | None, float]] = OrderedDict()
        self._unknown_at: Counter[str] = Counter()   # receiver -> its unknown batches
        # digest of a batch sent in pieces whose call failed -> the pieces answered OK
        self._pieces: OrderedDict[bytes, frozenset[int]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, data: bytes) -> BatchId:
        with self._lock:
            if self._unsettled:
                kept = self._unsettled.get(batch_digest(data))
                if kept is not None:
                    return BatchId(self.sender, kept[0])
            self._next += 1
            return BatchId(self.sender, self._next)

    def unsettled(self, data: bytes, batch: BatchId, at: str | None = None,
                  since: float = 0.0) -> None:
        """A call of ``batch`` (of bytes ``data``) failed, maybe after the receiver took
        it: keep its id for the resend; ``at``: the receiver where its outcome is unknown
        (since ``since``, monotonic), None if no receiver can have it."""
        key = batch_digest(data)
        with self._lock:
            self._forget(self._unsettled.pop(key, None))
            self._unsettled[key] = (batch.number, at, since)
            if at is not None:
                self._unknown_at[at] += 1
            while len(self._unsettled) > self.limit:
                self._forget(self._unsettled.popitem(last=False)[1])

    def _forget(self, kept) -> None:
        """Under the lock: ``kept`` (an entry of ``_unsettled`` or None) is gone."""
        if kept is not None and kept[1] is not None:
            self._unknown_at[kept[1]] -= 1
            if self._unknown_at[kept[1]] <= 0:
                del self._unknown_at[kept[1]]

    def settle(self, data: bytes) -> None:
        """A call of ``data`` was answered OK: its id is done with."""
        if self._unsettled:
            key = batch_digest(data)
            with self._lock:
                self._forget(self._unsettled.pop(key, None))

    def unknown_at(self) -> set[str]:
        """The receivers where some call's outcome is still unknown (its batch pinned
        there): a sender avoids them for new batches until they answer."""
        with self._lock:
            return set(self._unknown_at)

    def pieces_taken(self, data: bytes) -> set[int]:
        """The pieces (their numbers, from 0) of a batch sent in several calls that a
        receiver answered OK before a later piece failed (:meth:`keep_pieces`): its resend
        skips them, since they were written (sent again, they would be new batches to the
        receiver, and written twice)."""
        if not self._pieces:
            return set()
        with self._lock:
            return set(self._pieces.get(batch_digest(data), ()))

    @property
    def pieces_pending(self) -> bool:
        """Are the taken pieces of some batch kept for its resend?"""
        return bool(self._pieces)

    def keep_pieces(self, data: bytes, taken: set[int]) -> None:
        """Remember ``taken`` for the resend of ``data`` (nothing: forget it). At most
        ``limit`` batches are remembered, the oldest forgotten first."""
        key = batch_digest(data)
        with self._lock:
            self._pieces.pop(key, None)
            if taken:
                self._pieces[key] = frozenset(taken)
                while len(self._pieces) > self.limit:
                    self._pieces.popitem(last=False)

    def unknown_count(self) -> int:
        """How many batches wait to be asked again at the receiver where their outcome is
        unknown."""
        with self._lock:
            return sum(self._unknown_at.values())

    def pinned(self, data: bytes) -> tuple[str, float] | None:
        """``(receiver, since)`` where a call of ``data`` has an unknown outcome, or None."""
        if not self._unsettled:
            return None
        with self._lock:
            kept = self._unsettled.get(batch_digest(data))
        return (kept[1], kept[2]) if kept is not None and kept[1] is not None else None

    @property
    def pending(self) -> int:
        """How many batches keep their id for a resend."""
        return len(self._unsettled)
