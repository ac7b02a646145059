"""``syslogTcp("host"[, port=514])``: events as syslog lines over TCP.

Each event is sent as an RFC 5424 message in RFC 6587 octet-counting framing (the
``syslog5424("octet")`` output format: header fields from the attributes the syslog sources
set, ``docs/syslog.md``), which rsyslog and syslog-ng parse back into the same fields; a
batch in one ``sendall``.

Before each batch the connection is checked: a peer that closed it (a restarted syslog
daemon) is noticed and the sink reconnects, instead of writing into a dead socket. A send
that fails is retried once on a new connection; if that fails too, the append raises
SinkError. Syslog over TCP has no acknowledgements: a batch counts as durable once the
kernel took it, and a batch retried after a failure may be received twice in part.
"""
from __future__ import annotations

import logging
import select
import socket

from ..component import NodeContext, Sink
from ..errors import SinkError
from ..formats import Syslog5424Format
from ..registry import NonEmpty, PeerPort, sink

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 30.0


@sink("syslogTcp")
class SyslogTcpSink(Sink):
    """Sends events to a syslog server over TCP (see the module docstring)."""

    def __init__(self, host: NonEmpty, port: PeerPort = 514):
        super().__init__()
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self.encode = Syslog5424Format("octet").encode

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._connect()

    def _connect(self) -> None:
        self._disconnect()
        try:
            s = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            self.metrics.add("errors")
            raise SinkError(f"syslogTcp: cannot connect to {self.host}:{self.port}: "
                            f"{exc}") from exc
        s.settimeout(SEND_TIMEOUT)
        self.sock = s
        self.metrics.add("connects")

    def _disconnect(self) -> None:
        s, self.sock = self.sock, None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def _peer_closed(self) -> bool:
        """True if the server closed the connection (or reset it)."""
        s = self.sock
        try:
            readable, _, _ = select.select([s], [], [], 0)
            if not readable:
                return False
            # a syslog server never talks back: readable means EOF or an error
            return s.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def append(self, events) -> None:
        data = self.encode(events)
        for attempt in (1, 2):
            try:
                if self.sock is None or self._peer_closed():
                    self._connect()
                self.sock.sendall(data)
                break
            except (OSError, SinkError) as exc:
                self._disconnect()
                if attempt == 2:
                    self.metrics.add("errors")
                    raise SinkError(f"syslogTcp: cannot send to {self.host}:{self.port}: "
                                    f"{exc}") from exc
                log.info("syslogTcp send failed; reconnecting",
                         extra={"host": self.host, "port": self.port, "error": str(exc)})
        self.metrics.add("events_in", len(events))
        self.metrics.add("bytes_out", len(data))

    def close(self) -> None:
        self._disconnect()
