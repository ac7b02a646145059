"""Small socket servers shared by the network sources (syslog, netcat), and
:class:`ServerSource`, the base of every network source.

Each server runs one thread that turns what it receives into events and puts them in a
:class:`BatchQueue`. TCP uses a selector for every connection on that one thread: while the
queue is full the thread blocks in ``put``, stops reading, and the senders' TCP windows fill
up -- that is the backpressure. UDP cannot push back, so a full queue drops the datagrams and
counts them in ``dropped``.

``stop()`` is prompt: it wakes the thread through a socket pair, closes every socket and
joins the thread; the owner closes the queue first so a thread blocked in ``put`` returns.
"""
from __future__ import annotations

import logging
import selectors
import socket
import threading
from typing import Callable, Protocol

from ..component import Metrics, NodeContext
from ..errors import SourceError
from ..event import Event
from ._batchqueue import BatchQueue, QueuedSource

log = logging.getLogger(__name__)

RECV_SIZE = 1 << 16
UDP_BURST = 512      # datagrams read per wake-up before handing a batch over


class Framer(Protocol):
    """Turns one connection's byte stream into events."""

    def feed(self, data: bytes) -> list[Event]: ...

    def eof(self) -> list[Event]: ...


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
    def __init__(self, name: str, queue: BatchQueue, metrics: Metrics):
        self.name = name
        self.queue = queue
        self.metrics = metrics
        self.port = 0
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
        except Exception:  # a server thread must not die silently
            if not self._stop.is_set():
                log.exception("%s server on port %d failed", self.name, self.port)
                self.metrics.add("errors")

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


class TcpServer(_Server):
    """Accepts connections on ``bind:port``; ``make_framer(peer_host)`` per connection."""

    def __init__(self, name: str, bind: str, port: int,
                 make_framer: Callable[[str], Framer], queue: BatchQueue, metrics: Metrics):
        super().__init__(name, queue, metrics)
        self.bind, self.port = bind, port
        self.make_framer = make_framer

    def start(self) -> None:
        try:
            sock = _bind(socket.SOCK_STREAM, self.bind, self.port, self.name)
        except SourceError:
            self.stop()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sel.register(sock, selectors.EVENT_READ, "listen")
        self._start(self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select():
                if key.data is None:          # woken by stop()
                    return
                if key.data == "listen":
                    self._accept(key.fileobj)
                    continue
                conn, framer = key.fileobj, key.data
                try:
                    data = conn.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self.metrics.add("bytes_in", len(data))
                    events = framer.feed(data)
                else:
                    events = framer.eof()
                    self._sel.unregister(conn)
                    conn.close()
                    self.metrics.add("connections_open", -1)
                if events and self.queue.put(events) is None:
                    return                    # queue closed: the source is closing

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%s on port %d: accept failed: %s", self.name, self.port, exc)
                return
            conn.setblocking(False)
            self._sel.register(conn, selectors.EVENT_READ, self.make_framer(addr[0]))
            self.metrics.add("connections")
            self.metrics.add("connections_open")
            log.debug("%s on port %d: connection from %s", self.name, self.port, addr)


class UdpServer(_Server):
    """Receives datagrams on ``bind:port``; ``parse(datagrams, peers)`` makes the events."""

    def __init__(self, name: str, bind: str, port: int,
                 parse: Callable[[list[bytes], list[str]], list[Event]],
                 queue: BatchQueue, metrics: Metrics):
        super().__init__(name, queue, metrics)
        self.bind, self.port = bind, port
        self.parse = parse

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
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sel.register(sock, selectors.EVENT_READ, "udp")
        self._start(self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select():
                if key.data is None:
                    return
                sock = key.fileobj
                datagrams: list[bytes] = []
                peers: list[str] = []
                for _ in range(UDP_BURST):
                    try:
                        data, addr = sock.recvfrom(RECV_SIZE)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # e.g. ICMP-reported errors; the socket stays usable
                    datagrams.append(data)
                    peers.append(addr[0])
                if not datagrams:
                    continue
                self.metrics.add("bytes_in", sum(map(len, datagrams)))
                events = self.parse(datagrams, peers)
                if not self.queue.offer(events):
                    if self.queue.closed:
                        return
                    self.metrics.add("dropped", len(events))


class ServerSource(QueuedSource):
    """A source fed by a server through a :class:`BatchQueue`: subclasses say which server
    in ``_make_server`` (one of the above, or any object with ``start()``, ``stop()`` and
    ``port``); the port check, the port read back after binding (port 0 works),
    ``next_batch`` and a prompt ``close`` are common."""

    queue_events = 10_000

    def __init__(self, port: int, bind: str):
        super().__init__()
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {port}")
        self.port = port
        self.bind = bind
        self._queue: BatchQueue | None = None
        self._server = None

    def _make_server(self):
        raise NotImplementedError

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._queue = BatchQueue(self.queue_events)
        self._server = self._make_server()
        self._server.start()
        self.port = self._server.port

    def close(self) -> None:
        super().close()
        server, self._server = self._server, None
        if server is not None:
            server.stop()
