"""The event transport: the Thrift IDL, a threaded RPC server and a reconnecting client.

The IDL (``thrift/flume.thrift``, shipped as package data of ``flume_idl``) is loaded once
per process with thriftpy2 as the module ``flume_thrift`` (:func:`idl`). Both sides use
thriftpy2's Cython binary protocol and buffered transport when they are built (the pure
Python ones otherwise; the bytes on the wire are the same).

* :class:`RpcServer` ``(bind, port, handler)`` serves ``ThriftFlumeEventServer``: a thread
  accepts connections and each connection gets its own thread. ``handler`` has the IDL's
  method names; an exception escaping one of the ``AppendResult`` methods is answered as
  ``FAILED`` with its message (the connection stays usable). ``port=0`` picks a free port,
  readable as ``.port`` after :meth:`RpcServer.start`; :meth:`RpcServer.stop` closes the
  listener and every connection at once.
* :class:`RpcClient` ``(host, port, timeout)`` connects lazily and reconnects on the next
  call after any failure. Every call either returns ``(status, message)`` or raises
  :class:`SinkError` (transport failure, timeout, or an answer it cannot read); after a
  failure the outcome of that call is unknown to the sender (the receiver may have taken
  it), so resending gives at-least-once delivery.

Payloads of ``appendPacked`` / ``appendGroup`` are :mod:`node.codec` encodings, optionally
gzip-compressed as a whole (``agent*Sink(compression=true)``): :func:`decode_payload`
recognises the gzip magic, so no IDL field marks compression.
"""
from __future__ import annotations

import importlib.resources
import logging
import socket
import threading
import time
import zlib
from pathlib import Path

import thriftpy2
from thriftpy2.thrift import TClient, TProcessor

from .codec import decode_events, encode_events
from .errors import SinkError, SourceError
from .event import Event, Priority

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

_idl = None
_idl_lock = threading.Lock()
_PRIORITIES = tuple(Priority)
_GZIP_MAGIC = b"\x1f\x8b"


def idl_path() -> Path:
    """Where the IDL is: the installed ``flume_idl`` package data, else the repository."""
    try:
        p = importlib.resources.files("flume_idl") / "flume.thrift"
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


def decode_payload(data: bytes) -> list[Event]:
    """Inverse of :func:`encode_payload` (plain or gzip); ValueError if it is not one."""
    if data[:2] == _GZIP_MAGIC:
        try:
            data = zlib.decompress(data, 31)
        except zlib.error as exc:
            raise ValueError(f"corrupt compressed payload: {exc}") from None
    return decode_events(data)


# ---------------------------------------------------------------- server

class _Dispatch:
    """Calls the user handler; an exception in an AppendResult method becomes FAILED."""

    def __init__(self, handler):
        self._h = handler

    def append(self, evt) -> None:
        try:
            self._h.append(evt)
        except Exception as exc:  # oneway: nobody to answer
            log.warning("rpc: one-event append failed: %s", exc)

    def _guard(self, name, *args):
        try:
            return getattr(self._h, name)(*args)
        except Exception as exc:
            log.warning("rpc: %s failed: %s", name, exc, exc_info=True)
            return result(Status.FAILED, f"{type(exc).__name__}: {exc}")

    def appendBatch(self, events):
        return self._guard("appendBatch", events or [])

    def appendPacked(self, payload, count):
        return self._guard("appendPacked", payload or b"", count or 0)

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


class RpcServer:
    """Threaded ``ThriftFlumeEventServer`` on ``bind:port`` (see the module docstring)."""

    def __init__(self, bind: str, port: int, handler, name: str = "rpc"):
        self.bind = bind
        self.port = port
        self.name = name
        self._processor = TProcessor(idl().ThriftFlumeEventServer, _Dispatch(handler))
        self._proto = _ProtoFactory()
        self._trans = _TransFactory()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.connections = 0

    def start(self) -> None:
        """Bind and start serving; SourceError if the address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.bind, self.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise SourceError(f"{self.name}: cannot bind {self.bind}:{self.port}: "
                              f"{exc.strerror or exc}") from exc
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,),
                                        name=f"{self.name}:{self.port}", daemon=True)
        self._thread.start()

    def _accept_loop(self, sock: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                conn, addr = sock.accept()
            except OSError:
                if self._stopped.is_set():
                    return
                log.warning("%s on port %d: accept failed", self.name, self.port,
                            exc_info=True)
                self._stopped.wait(0.1)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                 name=f"{self.name}:{self.port}:{addr[1]}")
            with self._lock:
                if self._stopped.is_set():
                    conn.close()
                    return
                self._conns[conn] = t
                self.connections += 1
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        trans = self._trans.get_transport(TSocket(sock=conn))
        prot = self._proto.get_protocol(trans)
        process = self._processor.process
        try:
            while not self._stopped.is_set():
                process(prot, prot)
        except Exception as exc:  # EOF, reset, or a shut-down socket: the connection ends
            if not self._stopped.is_set():
                log.debug("%s on port %d: connection ended: %s", self.name, self.port, exc)
        finally:
            with self._lock:
                self._conns.pop(conn, None)
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
            try:
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        me = threading.current_thread()
        deadline = time.monotonic() + timeout
        for t in [self._thread, *(t for _, t in conns)]:
            if t is not None and t is not me and t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        for conn, t in conns:
            if t.is_alive():           # still stuck: cut it off completely
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ---------------------------------------------------------------- client

class RpcClient:
    """A connection to one ``ThriftFlumeEventServer``; thread-safe (calls are serialised).

    ``timeout`` (seconds) bounds connecting and each call. Any failure closes the
    connection and raises :class:`SinkError`; the next call connects again."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float | None = None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._lock = threading.Lock()
        self._client: TClient | None = None
        self._trans = None
        self._sock: TSocket | None = None
        self.connects = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _connect(self) -> TClient:
        sock = TSocket(self.host, self.port, socket_timeout=self.timeout * 1000,
                       connect_timeout=self.connect_timeout * 1000)
        trans = _TransFactory().get_transport(sock)
        try:
            trans.open()
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

    def _call(self, name: str, *args):
        with self._lock:
            client = self._client or self._connect()
            try:
                return getattr(client, name)(*args)
            except Exception as exc:
                self._drop()
                raise SinkError(f"rpc {name} to {self.address} failed: "
                                f"{exc or type(exc).__name__}") from exc

    def connect(self) -> None:
        """Connect now if not connected (SinkError if that fails)."""
        with self._lock:
            if self._client is None:
                self._connect()

    def _answer(self, name: str, *args) -> tuple[int, str]:
        r = self._call(name, *args)
        if r is None or r.status is None:
            with self._lock:
                self._drop()
            raise SinkError(f"rpc {name} to {self.address}: empty answer")
        return r.status, r.message or ""

    def append_packed(self, events: list[Event], compress: bool = False) -> tuple[int, str]:
        """Send ``events`` as one codec payload (``appendPacked``)."""
        return self._answer("appendPacked", encode_payload(events, compress), len(events))

    def append_payload(self, payload: bytes, count: int) -> tuple[int, str]:
        """Send an already encoded payload of ``count`` events (``appendPacked``)."""
        return self._answer("appendPacked", payload, count)

    def append_batch(self, events: list[Event]) -> tuple[int, str]:
        """Send ``events`` as a list of ``ThriftFlumeEvent`` structs (``appendBatch``)."""
        return self._answer("appendBatch", to_thrift(events))

    def append_group(self, agent: str, seq: int, checksum: int, payload: bytes,
                     count: int) -> tuple[int, str]:
        """Send one E2E group (``appendGroup``)."""
        return self._answer("appendGroup", agent, seq, checksum, payload, count)

    def append_one(self, event: Event) -> None:
        """The original oneway one-event ``append`` (no outcome, no flow control)."""
        self._call("append", to_thrift([event])[0])

    def close(self) -> None:
        """Close the connection. Safe from another thread: a call in progress fails
        (SinkError) at once instead of waiting for its timeout."""
        sock = self._sock
        raw = getattr(sock, "sock", None) if sock is not None else None
        if raw is not None:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            self._drop()
