"""Small socket helpers the network tests share."""
from __future__ import annotations

import socket
import threading
import time


def connect_from(address: str, port: int, data: bytes = b"") -> socket.socket:
    """A connection to 127.0.0.1:``port`` from the local ``address`` (127.0.0.x: another
    peer as far as the server's per-address bounds go), sending ``data`` if given."""
    c = socket.socket()
    c.bind((address, 0))
    c.settimeout(5)
    c.connect(("127.0.0.1", port))
    if data:
        c.sendall(data)
    return c


def closed_now(c: socket.socket) -> bool:
    """True if the server has closed ``c`` already (without waiting)."""
    c.setblocking(False)
    try:
        return c.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the other end closed ``sock`` (EOF or reset) within ``timeout``; what it
    sent before closing is read and dropped."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def trickle(sock: socket.socket, data: bytes, interval: float, within: float) -> float | None:
    """Send ``data`` one byte every ``interval`` seconds -- the pace of the slow sender
    under test, not a wait -- for at most ``within`` seconds (from its start again when
    it runs out): the seconds until the server cut the connection, or None."""
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < within:
        try:
            sock.send(data[i % len(data):i % len(data) + 1])
        except OSError:
            return time.monotonic() - start
        i += 1
        time.sleep(interval)
    return None


class Relay:
    """A TCP relay from a free port on 127.0.0.1 to 127.0.0.1:``port``, connecting from
    ``source`` (another loopback address: the collector sees another peer). While
    ``refusing``, new connections are closed at once; :meth:`cut` breaks the ones open."""

    def __init__(self, port: int, source: str = "127.0.0.1"):
        self.target, self.source = port, source
        self.refusing = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                a.close()
                continue
            b = socket.create_connection(("127.0.0.1", self.target),
                                         source_address=(self.source, 0))
            self.socks += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def cut(self):
        socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.listener.close()
        self.cut()
