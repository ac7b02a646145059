"""A TCP proxy between a ZooKeeper client and a real server that loses answers the way a
network does: armed, it forwards the next client packet of at least ``armed`` bytes (a
write), lets the server apply it, then cuts the connection before the answer comes back.
``refuse`` makes it refuse new connections (ZooKeeper unreachable)."""
from __future__ import annotations

import socket
import threading
import time


class CuttingProxy:
    APPLY_WAIT = 0.3   # pacing: the time ZooKeeper gets to apply the forwarded write

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.armed: int | None = None
        self.refuse = False
        self.cuts = 0
        self._hold = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="cutting-proxy").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            self._conns += [client, server]
            dead = threading.Event()
            for a, b, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, dead, up), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, dead: threading.Event,
              upward: bool) -> None:
        try:
            while not dead.is_set():
                data = a.recv(65536)
                if not data or dead.is_set():
                    break
                if upward and self.armed is not None and len(data) >= self.armed:
                    self.armed = None
                    self._hold.set()          # answers from now on are dropped
                    b.sendall(data)           # ZooKeeper gets it and applies it...
                    time.sleep(self.APPLY_WAIT)   # ...within this time (no signal to wait on)
                    self.cuts += 1
                    break                     # ...and the connection is cut
                if not upward and self._hold.is_set():
                    continue
                b.sendall(data)
        except OSError:
            pass
        finally:
            dead.set()
            if upward:
                self._hold.clear()
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut_all(self) -> None:
        """Cut every connection now."""
        for s in self._conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.refuse = True
        self._listener.close()
        self.cut_all()
