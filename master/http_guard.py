"""The REST API's gate: Host, tokens and body size, checked before any body is read.

:class:`Guard` is a pure ASGI middleware around the API. For each HTTP request, in order:

1. **Host**: with a :class:`HostPolicy`, a ``Host`` header naming another site answers
   421 (a DNS-rebinding page in a browser cannot reach a token-less loopback master).
2. **Tokens**, from the headers alone: with a write token, every write (any method but
   GET, HEAD and OPTIONS; ``POST /api/validate``, ``POST /api/plan`` and ``POST
   /api/flows/FLOW/preview``, which store nothing, are reads) needs ``Authorization: Bearer WRITE_TOKEN``; with a read token,
   every ``/api/`` request (and ``/metrics``) but ``/api/health`` and
   ``/api/cluster`` needs the read or the write token. Missing or wrong: 401. (The API
   passes the read token as the write token too when it has no write token: a master
   that guards its reads does not leave its writes open.)
3. **Body size**: a ``Content-Length`` above ``max_body`` answers 413 at once; a body
   without one (chunked) is counted as it arrives and refused with 413 past ``max_body``.
   The body is read here, whole, before the application sees it: no request moves the
   master's memory by more than ``max_body`` (plus one network chunk).

A refusal answers JSON ``{"message": ...}`` with ``Connection: close`` (the rest of a large
body is not read), is counted in ``metrics`` (``refused``, ``refused_<reason>``) and logged,
rate-limited (:class:`node.limits.Refusals`).
"""
from __future__ import annotations

import hmac
import json
import logging

from flume_og.node.hosts import HostPolicy
from flume_og.node.limits import Refusals

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 4 * 1024 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_READS = frozenset({"/api/health", "/api/cluster"})
TOKEN_FREE_WRITES = frozenset({"/api/validate", "/api/plan"})   # store nothing


def stores_nothing(path: str) -> bool:
    """A POST that only computes an answer: a read for the tokens."""
    if path in TOKEN_FREE_WRITES:
        return True
    parts = path.split("/")        # "", "api", "flows", FLOW, "preview"
    return len(parts) == 5 and parts[1:3] == ["api", "flows"] and parts[4] == "preview" \
        and parts[3] != ""


class Guard:
    """The ASGI middleware of the module docstring. ``hosts`` None checks no Host (an
    app under test); ``write_token`` / ``read_token`` None leave those requests open."""

    def __init__(self, app, *, metrics, hosts: HostPolicy | None = None,
                 write_token: str | None = None, read_token: str | None = None,
                 max_body: int = DEFAULT_MAX_BODY, what: str = "the master's REST API"):
        self.app = app
        self.hosts = hosts
        self.write = write_token.encode() if write_token else None
        self.read = read_token.encode() if read_token else None
        self.max_body = max_body
        self.refusals = Refusals(metrics, log, what)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope["headers"]:   # the first of repeated headers counts
            headers.setdefault(k, v)
        refusal = self._check(scope, headers)
        if refusal is not None:
            return await self._refuse(send, *refusal)
        method = scope["method"]
        if method in SAFE_METHODS and b"content-length" not in headers \
                and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":   # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return await self._refuse(send, 413, "oversize", self._too_large())
            if not message.get("more_body", False):
                break
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()
        await self.app(scope, replay, send)

    def _check(self, scope, headers) -> tuple[int, str, str] | None:
        """``(status, reason, message)`` of a refusal, or None to go on."""
        if self.hosts is not None:
            host = headers.get(b"host")
            if host is not None and not self.hosts.allows(host.decode("latin-1")):
                return (421, "host", f"this master does not answer for host "
                        f"{host.decode('latin-1')[:100]!r}; add it with --allowed-host "
                        f"if it is one of this master's names")
        path, method = scope["path"], scope["method"]
        if method not in SAFE_METHODS and not stores_nothing(path):
            if self.write is not None and not self._bearer(headers, self.write):
                return (401, "token", "a valid access token is required for writes "
                        "(Authorization: Bearer TOKEN)")
        elif self.read is not None and (path.startswith("/api/") or path == "/metrics") \
                and path not in OPEN_READS \
                and not (self._bearer(headers, self.read)
                         or (self.write is not None and self._bearer(headers, self.write))):
            return (401, "token", "a valid access token is required to read "
                    "(Authorization: Bearer TOKEN)")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return (400, "bad_request", "Content-Length is not a number")
            if n > self.max_body:
                return (413, "oversize", self._too_large())
        return None

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body} bytes (--max-body)"

    @staticmethod
    def _bearer(headers, secret: bytes) -> bool:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), secret)

    async def _refuse(self, send, status: int, reason: str, message: str) -> None:
        self.refusals.refuse(reason, message)
        body = json.dumps({"message": message}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = ["Guard", "DEFAULT_MAX_BODY"]
