"""A physical node's status page: ``/`` (HTML), ``/status.json`` and ``/metrics``
(Prometheus text format 0.0.4: :class:`node.metrics.NodeCollector` over the same status,
the process and build metrics, in a registry of this server's own).

It serves whatever ``status()`` returns when asked — a dict ``{physical, host, pid,
started, updated, logical: {name: {state, version, flow, source, sink, last_error,
counters, components}}}`` — plus ``status_page``, its own refusal counters; it keeps no
other state and never blocks the node. It runs on the bounded HTTP server the master uses
(:mod:`node.http_server`: uvicorn, one event loop on a daemon thread of its own) within
:data:`STATUS_LIMITS` (or ``limits``):

* at most ``max_connections`` (32) connections at once and ``max_connections_per_peer``
  (8) from one address; past either, the connection that has waited longest for a request
  head is closed to make room (``refused_evicted``), or, if every one is being served, the
  new one is answered 503 and closed (``refused_connections``,
  ``refused_peer_connections``);
* a request's line and headers must arrive within ``header_timeout`` (10 s), however
  slowly they trickle in (``refused_header_timeout``); an idle kept-alive connection
  closes after ``keep_alive`` (5 s); at most 64 KiB of line and headers (past it, 400);
* a request that is not whole is never answered, so a client that goes away costs no
  rendering; the page is rendered on a worker thread only for whole requests (at most one
  per connection), so a slow ``status()`` does not stop the loop from closing slow
  clients.

Every refusal is counted (``status_page`` in ``/status.json``, the HTML page and
``flume_status_page_refused_total`` in ``/metrics``) and logged, rate-limited
(:class:`node.limits.Refusals`).

It binds 127.0.0.1 by default and refuses any address that is not loopback
(:class:`UnsafeBindError`) unless it serves TLS (``tls``) or plain HTTP is opted in
(``insecure``): the page has no access control and shows every spec and counter; reach
it remotely through SSH or a reverse proxy that authenticates, or over TLS. It answers
421 to a ``Host`` header that names another site (:class:`node.hosts.HostPolicy`: DNS
rebinding). Specs are shown with the passwords of their URLs hidden
(:func:`node.redact.redact`). When the port is
taken it tries the next ones (as OG's node did), so several nodes can share a machine;
``port`` says where it listens, and 0 picks a free port.
"""
from __future__ import annotations

import errno
import html
import ipaddress
import json
import logging
import time
from typing import Callable

from . import http_server
from .component import Metrics
from .errors import FlumeError
from .hosts import HostPolicy
from .http_server import HttpLimits
from .http_thread import AsgiServerThread
from .limits import RateLimitedLog, Refusals
from .metrics import (MAIN, PROMETHEUS_CONTENT_TYPE, NodeCollector, components, exposition,
                      registry, summarize)
from .redact import redact_tree

log = logging.getLogger(__name__)

PORT_TRIES = 64
REFRESH_SECONDS = 5
# one reader is a browser tab or a scraper: a few connections each, far below the master's
STATUS_LIMITS = HttpLimits(max_connections=32, max_connections_per_peer=8)


class UnsafeBindError(FlumeError):
    """The status page was asked to listen on an address other hosts can reach."""


def check_bind(bind: str, tls: bool = False, insecure: bool = False) -> None:
    """Raise :class:`UnsafeBindError` unless ``bind`` is a loopback address (or
    ``localhost``), or the page is served over TLS (``tls``), or plain HTTP beyond
    loopback is opted in (``insecure``): the master's rule."""
    try:
        loopback = bind == "localhost" or ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = False
    if not (loopback or tls or insecure):
        raise UnsafeBindError(
            f"refusing to serve the node status page in plain HTTP on {bind}: it shows "
            f"every spec and counter to whoever reaches it. Keep the default 127.0.0.1 "
            f"(and reach it through SSH or a reverse proxy that authenticates), serve it "
            f"over TLS with --http-tls-cert FILE --http-tls-key FILE (which keeps it from "
            f"being read on the way, not from being read: it asks no one who they are), "
            f"or pass --http-insecure on a network you trust")


class StatusServer:
    """Serves ``status()`` over HTTP on ``bind``:``port`` until :meth:`stop`, within
    ``limits`` (default :data:`STATUS_LIMITS`); ``bind`` must be a loopback address
    (:func:`check_bind`). ``metrics`` counts its refusals."""

    def __init__(self, status: Callable[[], dict], bind: str = "127.0.0.1",
                 port: int = 35862, autofind: bool = True,
                 limits: HttpLimits = STATUS_LIMITS, tls=None, insecure: bool = False):
        """``tls``: serve HTTPS with this server context
        (:func:`node.http_server.tls_context`); ``insecure``: plain HTTP beyond loopback
        is allowed (:func:`check_bind`)."""
        check_bind(bind, tls is not None, insecure)
        self.tls = tls
        self.hosts = HostPolicy(bind)
        self.status = status
        self.bind = bind
        self.wanted_port = port
        self.autofind = autofind
        self.limits = limits
        self.metrics = Metrics()
        self.registry = registry(NodeCollector(self.served_status))
        self.port: int | None = None
        self._errors = RateLimitedLog(log)
        self._serving: AsgiServerThread | None = None

    def start(self) -> "StatusServer":
        """Bind and serve; raises OSError when no port can be had."""
        refusals = Refusals(self.metrics, log, "the node status page")
        tries = PORT_TRIES if self.autofind and self.wanted_port else 1
        last: OSError | None = None
        for i in range(tries):
            port = self.wanted_port + i if self.wanted_port else 0
            try:
                sock = http_server.listening_socket(self.bind, port, refusals)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or port >= 65535:
                    raise
                last = exc
        else:
            raise last  # type: ignore[misc]
        self.port = sock.getsockname()[1]
        refusals.what = f"the node status page on {self.bind}:{self.port}"
        server = http_server.server(self._app(), sock, self.limits, refusals, tls=self.tls)
        self._serving = AsgiServerThread(server, sock, "status-http-")
        self._serving.start()
        log.info("node status page on %s", self.url)
        return self

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bind}:{self.port}/"

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def served_status(self) -> dict:
        """``status()`` with passwords hidden and this page's own counters
        (``status_page``)."""
        return {**redact_tree(self.status()), "status_page": dict(self.metrics)}

    def _app(self):
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        def page(render: Callable[[], str | bytes], content_type: str):
            # a plain function: Starlette runs it on a worker thread, off the event loop
            def endpoint(request) -> Response:
                host = request.headers.get("host")
                if host is not None and not self.hosts.allows(host):
                    return Response(b"this node's status page does not answer for that "
                                    b"host name\n", 421, media_type="text/plain",
                                    headers={"Connection": "close"})
                try:
                    body = render()
                except Exception as exc:  # a status page must not take the node down
                    self._errors.warning("render", "status page %s failed: %r",
                                         request.url.path, exc)
                    log.debug("status page %s failed", request.url.path, exc_info=True)
                    return Response(f"error: {exc}\n", 500, media_type="text/plain")
                return Response(body, media_type=content_type,
                                headers={"Cache-Control": "no-store"})
            return endpoint

        html_page = page(lambda: render_html(self.served_status()),
                         "text/html; charset=utf-8")
        return Starlette(routes=[
            Route("/", html_page), Route("/index.html", html_page),
            Route("/status.json", page(lambda: json.dumps(self.served_status(),
                                                          ensure_ascii=True, default=str),
                                       "application/json")),
            # the registry's collector reads served_status() itself
            Route("/metrics", page(lambda: exposition(self.registry),
                                   PROMETHEUS_CONTENT_TYPE))])


def _refused(counters: dict | None) -> dict:
    """``{reason: count}`` of the ``refused_<reason>`` counters in ``counters``."""
    return {k[len("refused_"):]: v for k, v in (counters or {}).items()
            if k.startswith("refused_")}


# ---------------------------------------------------------------- the HTML page

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}
header{background:#1f3b57;color:#fff;padding:10px 20px}
header h1{font-size:18px;margin:0}header a{color:#cfe3ff;margin-right:12px}
main{padding:16px 20px}
section{background:#fff;border:1px solid #d8dee8;border-radius:6px;margin:0 0 16px;
padding:12px 16px}
h2{font-size:16px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eef1f5;vertical-align:top}
th{font-weight:600;color:#4a5568;font-size:12px;text-transform:uppercase}
td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,monospace;background:#f0f3f7;padding:1px 4px;border-radius:3px;
word-break:break-all}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;
font-weight:600;background:#e2e8f0}
.ACTIVE{background:#c6f6d5;color:#22543d}.ERROR{background:#fed7d7;color:#822727}
.IDLE{background:#e2e8f0}.CONFIGURING,.CLOSING,.HELLO{background:#fefcbf;color:#744210}
.err{color:#9b2c2c;white-space:pre-wrap}
.muted{color:#718096}
table.kv{width:auto;margin-bottom:8px}table.kv th{padding-right:28px;white-space:nowrap}
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _num(v) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}"
    return f"{int(v):,}" if isinstance(v, (int, float)) else _e(v)


def _when(ms) -> str:
    if not isinstance(ms, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def render_html(status: dict) -> str:
    """The status page: the physical node, then every logical node with its spec,
    counters and a table of its components' counters."""
    physical = status.get("physical", "")
    logical = status.get("logical") or {}
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
           f"<meta http-equiv=refresh content={REFRESH_SECONDS}>"
           f"<title>Flume node {_e(physical)}</title><style>{_CSS}</style></head><body>"
           f"<header><h1>Flume node {_e(physical)}</h1>"
           f"<a href=/status.json>status.json</a><a href=/metrics>metrics</a></header><main>"
           f"<section><h2>Physical node</h2><table class=kv>"
           f"<tr><th>name</th><td>{_e(physical)}</td></tr>"
           f"<tr><th>host</th><td>{_e(status.get('host'))}</td></tr>"
           f"<tr><th>pid</th><td>{_e(status.get('pid'))}</td></tr>"
           f"<tr><th>started</th><td>{_when(status.get('started'))}</td></tr>"
           f"<tr><th>updated</th><td>{_when(status.get('updated'))}</td></tr>"
           f"<tr><th>logical nodes</th><td>{len(logical)}</td></tr>"
           f"{_refused_row(status.get('status_page'))}</table></section>"]
    if logical:
        out.append("<section><h2>Logical nodes</h2><table><thead><tr><th>name</th>"
                   "<th>state</th><th>version</th><th>flow</th>"
                   + "".join(f"<th>{k.replace('_', ' ')}</th>" for k in MAIN)
                   + "</tr></thead><tbody>")
        for name in sorted(logical):
            st = logical[name]
            c = st.get("counters") or summarize(st)
            state = _e(st.get("state"))
            out.append(f"<tr><td><a href='#ln-{_e(name)}'>{_e(name)}</a></td>"
                       f"<td><span class='state {state}'>{state}</span></td>"
                       f"<td>{_e(st.get('version'))}</td><td>{_e(st.get('flow'))}</td>"
                       + "".join(f"<td class=n>{_num(c.get(k, 0))}</td>" for k in MAIN)
                       + "</tr>")
        out.append("</tbody></table></section>")
    for name in sorted(logical):
        out.append(_logical_section(name, logical[name]))
    out.append("</main></body></html>")
    return "".join(out)


def _refused_row(counters: dict | None) -> str:
    """The status page's own refusals by reason, when there were any."""
    refused = _refused(counters)
    if not refused:
        return ""
    return ("<tr><th>status page refused</th><td>"
            + ", ".join(f"{_e(k.replace('_', ' '))} <b>{_num(v)}</b>"
                        for k, v in sorted(refused.items())) + "</td></tr>")


def _logical_section(name: str, st: dict) -> str:
    state = _e(st.get("state"))
    c = st.get("counters") or summarize(st)
    out = [f"<section id='ln-{_e(name)}'><h2>{_e(name)} "
           f"<span class='state {state}'>{state}</span></h2><table class=kv>"
           f"<tr><th>version</th><td>{_e(st.get('version'))}</td></tr>"
           f"<tr><th>flow</th><td>{_e(st.get('flow'))}</td></tr>"
           f"<tr><th>source</th><td><code>{_e(st.get('source'))}</code></td></tr>"
           f"<tr><th>sink</th><td><code>{_e(st.get('sink'))}</code></td></tr>"]
    if st.get("last_error"):
        out.append(f"<tr><th>last error</th><td class=err>{_e(st['last_error'])}</td></tr>")
    out.append("<tr><th>counters</th><td>"
               + ", ".join(f"{_e(k.replace('_', ' '))} <b>{_num(v)}</b>"
                           for k, v in c.items())
               + "</td></tr></table>")
    comps = components(st)
    if comps:
        out.append("<table class=components><thead><tr><th>component</th><th>kind</th>"
                   "<th>counters</th></tr></thead><tbody>")
        for path, rep in comps:
            depth = path.count("/") - 1
            metrics = rep.get("metrics") or {}
            cells = ", ".join(f"{_e(k)} <b>{_num(v)}</b>" for k, v in sorted(metrics.items()))
            out.append(f"<tr><td style='padding-left:{8 + 18 * depth}px'>"
                       f"<code>{_e(rep.get('name'))}</code></td>"
                       f"<td class=muted>{_e(rep.get('kind'))}</td>"
                       f"<td>{cells or '<span class=muted>-</span>'}</td></tr>")
        out.append("</tbody></table>")
    else:
        out.append("<p class=muted>no flow running</p>")
    out.append("</section>")
    return "".join(out)


__all__ = ["StatusServer", "UnsafeBindError", "check_bind", "render_html"]
