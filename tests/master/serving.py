"""A master API served by uvicorn in a thread on port 0, for tests that need a real URL."""
from __future__ import annotations

import threading

import uvicorn

from tests.waiting import wait_until


def serve(app):
    """Start ``app`` on 127.0.0.1 (port 0) and wait until it listens: (server, thread,
    url). Stop it with ``server.should_exit = True`` and ``thread.join``."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "uvicorn did not start"
        return server.started
    wait_until(started, 10, "uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"
