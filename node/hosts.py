"""Which ``Host`` headers a local HTTP server answers: the defence against DNS rebinding.

A page on ``evil.example`` whose name is made to resolve to 127.0.0.1 can have a browser
send requests to a server on the loopback address, and read the answers (same origin). The
requests still carry ``Host: evil.example``: a server that answers only its own names is
out of reach. The master's REST API and a node's status page both check it.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Iterable


class HostPolicy:
    """Which ``Host`` headers a server answers: any IP address (a rebinding page is
    always served under a name), ``localhost``, this machine's host name, the name the
    server binds, and ``extra`` names; ``"*"`` in ``extra`` accepts every name (behind a
    proxy that checks names itself). Names compare case-insensitively, without the port."""

    def __init__(self, bind: str, extra: Iterable[str] = ()):
        names = {"localhost", socket.gethostname(), bind, *extra}
        self.any = "*" in names
        self.names = {n.lower().rstrip(".") for n in names if n and n != "*"}

    def allows(self, host: str) -> bool:
        if self.any:
            return True
        name = _hostname(host)
        if name is None:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.names


def _hostname(host: str) -> str | None:
    """The name of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lowered."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


__all__ = ["HostPolicy"]
