"""HTTP servers served on a daemon thread of their own: a bound stdlib
``ThreadingHTTPServer`` (``httpSource``: a thread per connection) and a uvicorn server from
:func:`node.http_server.server` (the node's status page: one event loop for every
connection)."""
from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer


class HttpServerThread:
    """Serves ``server`` (already bound; ``port`` is where) from :meth:`start` until
    :meth:`stop`, on a daemon thread named ``name`` + the port; each request runs on a
    daemon thread of its own."""

    def __init__(self, server: ThreadingHTTPServer, name: str, poll_interval: float):
        server.daemon_threads = True
        self.server: ThreadingHTTPServer | None = server
        self.port: int = server.server_address[1]
        self.name = name
        self.poll_interval = poll_interval
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": self.poll_interval},
                                        name=f"{self.name}{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (5 s at most); idempotent."""
        server, self.server = self.server, None
        if server is not None:
            if self._thread is not None:   # shutdown() waits for a serve_forever
                server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)


class AsgiServerThread:
    """Runs a ``uvicorn.Server`` (from :func:`node.http_server.server`) on ``sock`` (bound
    and listening; ``port`` is where) from :meth:`start` until :meth:`stop`, on a daemon
    thread named ``name`` + the port. Connections that arrive before the loop runs wait in
    the socket's backlog."""

    def __init__(self, server, sock: socket.socket, name: str, grace: float = 2.0):
        # stop() waits at most ``grace`` seconds for requests in progress
        server.config.timeout_graceful_shutdown = grace
        self.server = server
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.name = name
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.run,
                                        kwargs={"sockets": [self.sock]},
                                        name=f"{self.name}{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (5 s at most); idempotent."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()       # uvicorn closes it too; this covers a loop that never ran
