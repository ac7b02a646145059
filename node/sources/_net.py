"""Small socket servers shared by the network sources (syslog, netcat), and
:class:`ServerSource`, the base of every network source.

Each server runs one thread that turns what it receives into events and puts them in a
:class:`BatchQueue` bounded by events and by bytes. What a server accepts, and what it does
past each bound (every refusal is counted in the source's metrics as ``refused`` and
``refused_<reason>`` and logged at WARNING at most every 10 s, see :mod:`node.limits`):

* **Queue full.** TCP: the thread blocks in ``put``, stops reading, and the senders' TCP
  windows fill up -- backpressure, nothing is dropped. UDP cannot push back: the datagrams
  are dropped (``refused_queue_full``). Datagrams the kernel dropped because the socket's
  buffer was full are read from the socket where Linux reports them (``SO_RXQ_OVFL``) and
  shown as ``kernel_dropped`` (the socket's total).
* **Events.** Framers cut the byte stream into events of at most ``max_event_bytes``
  (each source says how it treats a longer one); a connection's unfinished event is
  therefore never buffered past that bound.
* **Connections.** At most ``max_connections`` at once, and ``max_connections_per_peer``
  from one address (a quarter of the total by default). Past the per-address cap the
  connection of that address idle the longest -- between two messages, no unfinished
  event buffered -- is closed to make room (``refused_evicted``), and with none idle the
  new one is closed at once (``refused_peer_connections``). Past the total, an idle
  connection of the address holding the most slots makes room (``refused_evicted``);
  with none idle anywhere, the slowest unfinished event of that address is discarded and
  its connection closed (``refused_evicted_slow``) if it holds at least two slots more
  than the newcomer's address, else the new one is closed (``refused_connections``): a
  few addresses cannot keep a new one out (:class:`node.limits.ConnectionSlots`).
* **Time.** A connection that sends nothing for ``idle_timeout`` seconds is closed
  (``refused_idle``). An unfinished event must keep arriving at ``min_rate`` bytes per
  second: its first byte gives it ``message_timeout`` seconds, every byte of it received
  adds ``1/min_rate`` s, but never to more than ``message_timeout`` s ahead (a burst
  cannot buy a long silence). When that time runs out the connection is closed and the
  event discarded (``refused_slow``): a byte now and then is cut ``message_timeout`` s
  after the event began, while a link of any speed above ``min_rate`` is never cut (one
  below it is cut after ``message_timeout / (1 - speed/min_rate)`` s). ``min_rate=0``
  makes ``message_timeout`` a fixed deadline from the first byte. Time the server spends
  blocked on a full queue counts toward neither.
* **TLS** (a node with TLS, :mod:`node.tls`): each accepted connection shakes hands in the
  selector thread without blocking it; the whole handshake must be done within
  ``message_timeout`` (else ``idle_timeout``, else 30 s) of the accept, however slowly its
  bytes come, else the connection is closed (``refused_tls_handshake``); a client speaking
  plaintext (``refused_tls_plaintext``) or without an acceptable certificate
  (``refused_tls_client_certificate``) is closed at once. Slots are held as for any
  connection (a handshaking one counts as idle, so it is the first to make room).
* **Failure.** If the server thread fails (a bug), the server closes its port and every
  connection and keeps the reason in ``failure``; the source's ``next_batch`` then raises
  :class:`SourceError`, which puts its logical node in ERROR with that reason: never a
  silently dead port.
* **Accept errors** (no file descriptor left: EMFILE, ENFILE; or no memory): the server
  stops accepting for a while (50 ms, doubling up to 1 s while it keeps failing) instead of
  spinning on a listening socket that stays readable, counts ``accept_errors`` and warns at
  most every 10 s. Connections waiting in the backlog are accepted once descriptors free up.

``stop()`` is prompt: it wakes the thread through a socket pair, closes every socket and
joins the thread; the owner closes the queue first so a thread blocked in ``put`` returns.
"""
from __future__ import annotations

import logging
import selectors
import socket
import ssl
import struct
import sys
import threading
import time
from typing import Annotated, Callable, Protocol

from annotated_types import Interval

from ..backoff import Backoff
from ..component import Metrics, NodeContext
from ..errors import SourceError
from ..event import Event
from ..limits import ConnectionSlots, RateLimitedLog, Refusals, message_due
from ..tls import ended as tls_ended
from ..tls import refusal as tls_refusal
from ._batchqueue import DEFAULT_MAX_BYTES, BatchQueue, QueuedSource

log = logging.getLogger(__name__)

RECV_SIZE = 1 << 16
UDP_BURST = 512       # datagrams read per wake-up before handing a batch over...
UDP_BURST_BYTES = 1 << 20   # ...or this many bytes: the most a queue takes past its bound
ACCEPT_BURST = 64     # connections accepted per wake-up, so reading is not starved
ACCEPT_PAUSE = 0.05   # first pause after a failed accept; doubles up to ACCEPT_PAUSE_MAX
ACCEPT_PAUSE_MAX = 1.0
IDLE_CHECK = 1.0      # seconds between two looks for idle connections

DEFAULT_MAX_EVENT_BYTES = 32 << 10
DEFAULT_MAX_CONNECTIONS = 256
# a quarter of the total: relays and NATs send from one address, and past the total the
# biggest holder gives up a slot anyway (see ConnectionSlots)
DEFAULT_MAX_CONNECTIONS_PER_PEER = DEFAULT_MAX_CONNECTIONS // 4
DEFAULT_IDLE_TIMEOUT_MS = 600_000
DEFAULT_MESSAGE_TIMEOUT_MS = 30_000      # an unfinished event's credit of time, at most
DEFAULT_MIN_BYTES_PER_SECOND = 16_384    # ...and what each received byte adds to it

# Linux: ancillary data on each datagram with the socket's count of dropped datagrams
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40 if sys.platform.startswith("linux") else None)


class Framer(Protocol):
    """Turns one connection's byte stream into events."""

    def feed(self, data: bytes) -> list[Event]: ...

    def eof(self) -> list[Event]: ...

    @property
    def pending(self) -> bool:
        """Part of an event has arrived (or a truncated one is being discarded)."""


# The checks the network sources declare on their arguments (see node/registry.py).
Port = Annotated[int, Interval(ge=0, le=65535)]   # 0: any free port, read back once bound


def idle_seconds(idle_timeout_ms: int) -> float | None:
    """A timeout in ms in seconds; None for 0 (never)."""
    return idle_timeout_ms / 1000 if idle_timeout_ms else None


def _family(bind: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in bind else socket.AF_INET


def _bind(kind: int, bind: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(_family(bind), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
    except OSError as exc:
        sock.close()
        raise SourceError(f"{what}: cannot bind {bind}:{port}: {exc.strerror or exc}") from exc
    return sock


class _Server:
    def __init__(self, name: str, queue: BatchQueue, metrics: Metrics, refusals: Refusals):
        self.name = name
        self.queue = queue
        self.metrics = metrics
        self.refusals = refusals
        self.port = 0
        self.failure: str | None = None   # why the thread ended, if it failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    def _start(self, target) -> None:
        self._thread = threading.Thread(target=self._guard, args=(target,),
                                        name=f"{self.name}:{self.port}", daemon=True)
        self._thread.start()

    def _guard(self, target) -> None:
        try:
            target()
        except Exception as exc:  # a server thread must not die silently
            if not self._stop.is_set():
                log.exception("%s server on port %d failed", self.name, self.port)
                self._fail(f"the server thread failed: {type(exc).__name__}: {exc}")

    def _fail(self, reason: str) -> None:
        """The thread ends: close the port and every connection (senders see refusals
        and fail over instead of hanging), keep ``reason`` in ``failure`` and wake the
        source, whose ``next_batch`` raises it."""
        self.failure = reason
        self.metrics.add("errors")
        for key in list(self._sel.get_map().values()):
            if key.data is not None:          # not the wake-up socket
                try:
                    self._sel.unregister(key.fileobj)
                    key.fileobj.close()
                except (OSError, KeyError, ValueError):
                    pass   # closed already (the failure may be about that very socket)
        self.queue.wake()

    def stop(self) -> None:
        """Stop serving and close every socket; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
        self._sel.close()
        self._wake_w.close()


HANDSHAKE_TIMEOUT = 30.0     # seconds for a TLS handshake when no message timeout is set


class _Conn:
    __slots__ = ("sock", "framer", "peer", "last", "due", "handshake_due")

    def __init__(self, sock: socket.socket, framer: Framer, peer: str, last: float):
        self.sock, self.framer, self.peer, self.last = sock, framer, peer, last
        self.due: float | None = None   # when its unfinished event must have progressed
        self.handshake_due: float | None = None   # TLS: when the handshake must be done


class TcpServer(_Server):
    """Accepts connections on ``bind:port``; ``make_framer(peer_host)`` per connection.
    Bounds: ``max_connections`` open at once and ``max_connections_per_peer`` from one
    address, ``idle_timeout`` seconds without data, an unfinished event arriving at
    ``min_rate`` bytes/s with ``message_timeout`` seconds of credit at most (None: never
    cut), and the accept back-off (see the module docstring)."""

    def __init__(self, name: str, bind: str, port: int,
                 make_framer: Callable[[str], Framer], queue: BatchQueue, metrics: Metrics,
                 refusals: Refusals, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT_MS / 1000, *,
                 max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER,
                 message_timeout: float | None = DEFAULT_MESSAGE_TIMEOUT_MS / 1000,
                 min_rate: int = DEFAULT_MIN_BYTES_PER_SECOND,
                 tls: ssl.SSLContext | None = None):
        super().__init__(name, queue, metrics, refusals)
        self.bind, self.port = bind, port
        self.tls = tls
        self.handshake_timeout = message_timeout or idle_timeout or HANDSHAKE_TIMEOUT
        self.make_framer = make_framer
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.min_rate = min_rate
        self._listener: socket.socket | None = None
        self._conns: dict[socket.socket, _Conn] = {}
        self._slots = ConnectionSlots(max_connections, max_connections_per_peer,
                                      self._idle_since, lambda s: self._conns[s].due)
        self._timeouts = [t for t in (idle_timeout, message_timeout,
                                      self.handshake_timeout if tls else None)
                          if t is not None]
        self._accept_backoff = Backoff(ACCEPT_PAUSE, ACCEPT_PAUSE_MAX)  # after failed accepts
        self._accept_at: float | None = None   # when to accept again (None: accepting)
        self._accept_log = RateLimitedLog(log)
        self._stalled = 0.0            # seconds spent blocked on a full queue
        self._next_idle_check = 0.0

    def start(self) -> None:
        try:
            sock = _bind(socket.SOCK_STREAM, self.bind, self.port, self.name)
        except SourceError:
            self.stop()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, "listen")
        self._start(self._run)

    def _active_now(self) -> float:
        """A clock that stands still while the thread is blocked on a full queue: idle
        time is measured on it, so backpressure never closes a connection."""
        return time.monotonic() - self._stalled

    def _run(self) -> None:
        while not self._stop.is_set() and self._step():
            pass

    def _step(self) -> bool:
        """One wake-up: read, then accept, then close late connections; False when the
        thread must end (stop(), or the queue closed)."""
        listening = False
        for key, _ in self._sel.select(self._select_timeout()):
            if key.data is None:              # woken by stop()
                return False
            if key.data == "listen":
                listening = True
            elif key.data.sock not in self._conns:
                continue                      # closed earlier in this batch
            elif not self._read(key.data):
                return False                  # queue closed: the source is closing
        # accepting last: what this batch read is taken before a connection is evicted
        if listening:
            self._accept(self._listener)
        return self._housekeeping()

    def _select_timeout(self) -> float | None:
        waits = []
        if self._accept_at is not None:
            waits.append(self._accept_at - time.monotonic())
        if self._timeouts and self._conns:
            waits.append(self._next_idle_check - time.monotonic())
        return max(0.0, min(waits)) if waits else None

    def _handshake(self, c: _Conn) -> bool:
        """Advance ``c``'s TLS handshake; True once done (``c`` may then hold data)."""
        try:
            c.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (OSError, ValueError) as exc:
            if not tls_ended(exc):
                reason, why = tls_refusal(exc)
                self.refusals.refuse(reason, f"{c.peer}: {why}; connection closed")
            self._close(c)
            return False
        c.handshake_due = None
        return True

    def _recv(self, sock: socket.socket) -> bytes:
        """What ``sock`` has (b"" at its end); BlockingIOError if nothing yet. On TLS, a
        record read only in part stays inside the ssl object, where the selector cannot
        see it: take it all now."""
        try:
            data = sock.recv(RECV_SIZE)
            while data and self.tls is not None and sock.pending():
                data += sock.recv(sock.pending())
            return data
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None
        except OSError:
            return b""

    def _read(self, c: _Conn) -> bool:
        """Read what ``c`` sent and queue its events; False once the queue is closed."""
        if c.handshake_due is not None and not self._handshake(c):
            return True
        try:
            data = self._recv(c.sock)
        except BlockingIOError:
            return True
        if data:
            self.metrics.add("bytes_in", len(data))
            c.last = now = self._active_now()
            framer = c.framer
            events = framer.feed(data)
            if not framer.pending:
                c.due = None
            else:
                if events:                        # an event began in this piece
                    c.due = None
                c.due = message_due(c.due, now, len(data), self.message_timeout,
                                    self.min_rate)
        else:
            events = c.framer.eof()
            self._close(c)
        return self._put(events)

    def _put(self, events: list[Event]) -> bool:
        if not events:
            return True
        start = time.monotonic()
        seq = self.queue.put(events)
        self._stalled += time.monotonic() - start
        return seq is not None

    def _close(self, c: _Conn) -> None:
        """Close ``c``; a no-op if it is closed already."""
        if self._conns.pop(c.sock, None) is None:
            return
        self._sel.unregister(c.sock)
        c.sock.close()
        self._slots.remove(c.sock)
        self.metrics.add("connections_open", -1)

    def _idle_since(self, sock: socket.socket) -> float | None:
        c = self._conns[sock]
        return c.last if c.due is None else None

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays readable, so retrying
                # at once would spin; pause accepting and let the backlog wait
                self._pause_accepting(exc)
                return
            peer = addr[0]
            if self.tls is not None:       # no I/O: the handshake advances in _read
                conn.setblocking(False)
                conn = self.tls.wrap_socket(conn, server_side=True,
                                            do_handshake_on_connect=False)
            refused, evicted = self._slots.admit(conn, peer)
            if evicted is not None:
                self._close(self._conns[evicted[0]])
            self._slots.report(self.refusals, peer, refused, evicted)
            if refused is not None:
                conn.close()
                continue
            conn.setblocking(False)
            c = _Conn(conn, self.make_framer(peer), peer, self._active_now())
            if self.tls is not None:
                c.handshake_due = time.monotonic() + self.handshake_timeout
            self._conns[conn] = c
            self._sel.register(conn, selectors.EVENT_READ, c)
            self.metrics.add("connections")
            self.metrics.add("connections_open")
            log.debug("%s on port %d: connection from %s", self.name, self.port, addr)
        self._accept_backoff.reset()

    def _pause_accepting(self, exc: OSError) -> None:
        pause = self._accept_backoff.next_delay()
        self._accept_at = time.monotonic() + pause
        self._sel.unregister(self._listener)
        self.metrics.add("accept_errors")
        self._accept_log.warning(
            "accept", "%s on port %d cannot accept connections (%s); pausing accepts for "
            "%g s, with %d connections open", self.name, self.port, exc.strerror or exc,
            pause, len(self._conns))

    def _housekeeping(self) -> bool:
        """Resume accepting after a pause; close slow and idle connections. False once
        the queue is closed."""
        now = time.monotonic()
        if self._accept_at is not None and now >= self._accept_at:
            self._accept_at = None
            self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        if not self._timeouts or now < self._next_idle_check:
            return True
        self._next_idle_check = now + min(IDLE_CHECK, *self._timeouts)
        for c in [c for c in self._conns.values()
                  if c.handshake_due is not None and c.handshake_due < now]:
            self.refusals.refuse("tls_handshake", f"{c.peer}: no TLS handshake within "
                                 f"{self.handshake_timeout:g} s; connection closed")
            self._close(c)
        active = self._active_now()
        if self.message_timeout is not None:
            for c in [c for c in self._conns.values() if c.due is not None and c.due < active]:
                self.refusals.refuse("slow", f"closed the connection from {c.peer}: an event "
                                     f"arriving slower than {self.min_rate} bytes/s for "
                                     f"{self.message_timeout:g} s (discarded)")
                self._close(c)
        if self.idle_timeout is None:
            return True
        cutoff = active - self.idle_timeout
        for c in [c for c in self._conns.values() if c.last < cutoff]:
            self.refusals.refuse("idle", f"closed the connection from {c.peer}, idle for "
                                 f"{self.idle_timeout:g} s")
            events = c.framer.eof()
            self._close(c)
            if not self._put(events):
                return False
        return True


class UdpServer(_Server):
    """Receives datagrams on ``bind:port``; ``parse(datagrams, peers)`` makes the events.
    A datagram longer than ``max_event_bytes`` is truncated to it (``refused_oversize``)."""

    def __init__(self, name: str, bind: str, port: int,
                 parse: Callable[[list[bytes], list[str]], list[Event]],
                 queue: BatchQueue, metrics: Metrics, refusals: Refusals,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        super().__init__(name, queue, metrics, refusals)
        self.bind, self.port = bind, port
        self.parse = parse
        self.max_event_bytes = max_event_bytes
        self._ancsize = 0

    def start(self) -> None:
        try:
            sock = _bind(socket.SOCK_DGRAM, self.bind, self.port, self.name)
        except SourceError:
            self.stop()
            raise
        try:  # a larger kernel buffer absorbs bursts while the consumer is busy
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
        if SO_RXQ_OVFL is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                self._ancsize = socket.CMSG_SPACE(4)
            except OSError:
                pass       # not offered here: kernel drops stay invisible
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sel.register(sock, selectors.EVENT_READ, "udp")
        self._start(self._run)

    def _run(self) -> None:
        limit = self.max_event_bytes
        while not self._stop.is_set():
            for key, _ in self._sel.select():
                if key.data is None:
                    return
                sock = key.fileobj
                datagrams: list[bytes] = []
                peers: list[str] = []
                kernel_dropped = None
                burst_bytes = 0
                for _ in range(UDP_BURST):
                    if burst_bytes >= UDP_BURST_BYTES:
                        break
                    try:
                        data, anc, _flags, addr = sock.recvmsg(RECV_SIZE, self._ancsize)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # e.g. ICMP-reported errors; the socket stays usable
                    for level, kind, value in anc:
                        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                            kernel_dropped = struct.unpack("=I", value[:4])[0]
                    if len(data) > limit:
                        self.refusals.refuse("oversize", f"truncated a datagram of {len(data)} "
                                             f"bytes from {addr[0]} to {limit}")
                        data = data[:limit]
                    datagrams.append(data)
                    peers.append(addr[0])
                    burst_bytes += len(data)
                if kernel_dropped is not None:
                    self.metrics.set("kernel_dropped", kernel_dropped)
                if not datagrams:
                    continue
                self.metrics.add("bytes_in", burst_bytes)
                events = self.parse(datagrams, peers)
                if not self.queue.offer(events):
                    if self.queue.closed:
                        return
                    self.refusals.refuse("queue_full", "the queue is full: dropped "
                                         "datagrams (UDP cannot push back)", len(events))


class ServerSource(QueuedSource):
    """A source fed by a server through a :class:`BatchQueue` of at most ``queue_events``
    events and ``max_queue_bytes`` bytes: subclasses say which server in ``_make_server``
    (one of the above, or any object with ``start()``, ``stop()`` and ``port``, and declare
    :data:`Port` and the other checks on their arguments); the port read back after
    binding (port 0 works), ``refusals`` (counted in this source's metrics),
    ``next_batch`` and a prompt ``close`` are common."""

    queue_events = 10_000

    def __init__(self, port: int, bind: str, *, max_queue_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__()
        self.port = port
        self.bind = bind
        self.max_queue_bytes = max_queue_bytes
        self._queue: BatchQueue | None = None
        self._server = None
        self.refusals = Refusals(self.metrics, logging.getLogger(type(self).__module__),
                                 self.spec_name)

    def _make_server(self):
        raise NotImplementedError

    def _keep_tcp_limits(self, maxConnections: int, maxConnectionsPerPeer: int,
                         idleTimeoutMs: int, messageTimeoutMs: int,
                         minBytesPerSecond: int) -> None:
        """Keep the connection limits a TCP source declares (its spec arguments, checked
        already) for :meth:`_tcp_server`."""
        self._idle = idle_seconds(idleTimeoutMs)
        self._message = idle_seconds(messageTimeoutMs)
        self.maxConnections = maxConnections
        self.maxConnectionsPerPeer = maxConnectionsPerPeer
        self.idleTimeoutMs = idleTimeoutMs
        self.messageTimeoutMs = messageTimeoutMs
        self.minBytesPerSecond = minBytesPerSecond

    def _tcp_server(self, kind: str, framer: Callable[[str], "Framer"]) -> "TcpServer":
        """A :class:`TcpServer` with the limits kept by :meth:`_keep_tcp_limits`, a
        ``framer(peer)`` per connection."""
        return TcpServer(kind, self.bind, self.port, framer, self._queue, self.metrics,
                         self.refusals, self.maxConnections, self._idle,
                         max_connections_per_peer=self.maxConnectionsPerPeer,
                         message_timeout=self._message, min_rate=self.minBytesPerSecond,
                         tls=self.ctx.transport.server)

    def next_batch(self, timeout: float) -> list[Event] | None:
        """As :meth:`QueuedSource.next_batch`; SourceError once the server has failed
        (its logical node goes to ERROR with the reason)."""
        server = self._server

        def failed() -> bool:
            return getattr(server, "failure", None) is not None
        if self._queue is None:
            return None
        out = self._queue.get(timeout, cancelled=failed)
        if not out and failed():
            raise SourceError(f"{self.spec_name} on port {self.port} stopped serving: "
                              f"{server.failure}")
        if out:
            self.metrics.add("events_in", len(out))
        return out

    tls_capable = True     # serves TLS on a node with TLS (False: plaintext only)

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.bind = ctx.transport.bind_address(self.bind, self.spec_name,
                                               tls_capable=self.tls_capable)
        self._queue = BatchQueue(self.queue_events, max_bytes=self.max_queue_bytes)
        self._server = self._make_server()
        self._server.start()
        self.port = self._server.port
        self.refusals.what = f"{self.spec_name} on port {self.port}"

    def close(self) -> None:
        super().close()
        server, self._server = self._server, None
        if server is not None:
            server.stop()
