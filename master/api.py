"""The master's REST API (FastAPI; OpenAPI at ``/docs``): every command and every listing.

Errors are JSON ``{"message": ...}``: a bad spec answers 400 with ``"errors"``, a list of
``{message, line, column[, part]}`` (the first 20 problems, then one saying how many more)
and the message rendered with carets (each under at most 120 characters of its line); a
bad command 400; something unknown 404; a valid command that cannot be performed 409;
ZooKeeper unreachable 503. Bad input never gets a 5xx.

Requests pass :class:`master.http_guard.Guard` first (Host, tokens, body size, before any
body is read). With a token, every write (PUT, POST, DELETE) needs ``Authorization: Bearer
<token>``; reads stay open unless a read token is set. ``POST /api/validate`` stores
nothing and is a read: open, or guarded by the read token when one is set. Listings hide
the passwords of URLs (``s3://KEY:***@bucket``); a spec pasted back from a listing gets
its passwords back from the stored configs (same scheme, user and host), and is refused
(400) when one cannot be put back safely, rather than stored with ``***`` as a password.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi_offline import FastAPIOffline
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from flume_og.node.component import Metrics
from flume_og.node.errors import RestoreError, SpecError
from flume_og.node.hosts import HostPolicy
from flume_og.node.metrics import PROMETHEUS_CONTENT_TYPE, exposition
from flume_og.node.redact import has_redacted, redact_tree, unredact
from flume_og.zk.client import ConflictError, ZkError

from . import command_table
from .errors import CommandError, CommandFailed, NotFound
from .http_guard import DEFAULT_MAX_BODY, Guard
from .metrics import master_registry
from .service import MasterService
from .validation import render_spec_error, spec_error_list

MAX_SPEC_HALF = 64 * 1024           # a source or a sink
MAX_ARG = 1024 * 1024               # one command argument (a multiconfig spec): parsing
                                    # costs ~200 bytes of memory per byte of spec
HEAVY_SPEC = 64 * 1024              # spec text above which a request takes a slot ...
HEAVY_AT_ONCE = 2                   # ... of so many, waiting HEAVY_WAIT s at most (503)
HEAVY_WAIT = 30.0
MAX_ARGS = 16
MAX_NAME = 200
MAX_ERRORS_SHOWN = 20               # validation errors in a 422 answer
MAX_KEYS = 16                       # keys of a request body object


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate in stored text cannot break it."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode()


def _json(status: int, body: dict, headers: dict | None = None) -> SafeJSONResponse:
    return SafeJSONResponse(body, status_code=status, headers=headers)


def _raw(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
SpecHalf = Annotated[str, StringConstraints(max_length=MAX_SPEC_HALF)]
Arg = Annotated[str, StringConstraints(max_length=MAX_ARG)]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _few_keys(cls, data):
        # one error for a body of 300,000 unknown keys, not one each (0.5 GB of errors)
        if isinstance(data, dict) and len(data) > MAX_KEYS:
            unknown = list(islice((k for k in data if k not in cls.model_fields), 3))
            raise ValueError(f"{len(data)} fields given, at most {MAX_KEYS} taken; "
                             f"unknown: {', '.join(map(repr, unknown))}...")
        return data


class ConfigBody(_Body):
    """A logical node's spec as entered; the flow is kept when omitted (default-flow for
    a new node)."""
    source: SpecHalf = Field(examples=['tail("/var/log/app.log")'])
    sink: SpecHalf = Field(examples=['{ batch(100) => agentE2ESink("collector1") }'])
    flow: Name | None = None


class MappingBody(_Body):
    physical: Name
    logical: Name


class CommandBody(_Body):
    """Any command of the master, e.g. ``{"command": "config", "args": ["node1",
    "tail(\\"/var/log/a.log\\")", "null"]}``."""
    command: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(
        examples=["noop"], description="one of: " + "; ".join(
            c.usage for c in command_table.COMMANDS) + " (any case; - and _ ignored)")
    args: Annotated[list[Arg], Field(max_length=MAX_ARGS)] = []


class PreviewBody(_Body):
    """Logical nodes to move to a flow (``POST /api/flows/{flow}/preview``)."""
    nodes: Annotated[list[Name], Field(max_length=10000)] = Field(examples=[["web1"]])


class ValidateBody(_Body):
    """Any of a source, a sink or a whole spec file (``name : source | sink ;`` ...)."""
    source: SpecHalf | None = None
    sink: SpecHalf | None = None
    spec: Arg | None = None


def create_app(service: MasterService, token: str | None = None, *,
               read_token: str | None = None, hosts: HostPolicy | None = None,
               max_body: int = DEFAULT_MAX_BODY, metrics: Metrics | None = None) -> FastAPI:
    """The REST API over ``service``, behind a :class:`Guard`. ``token``: required (Bearer)
    for writes if set; ``read_token``: required for reads if set (the write token reads
    too); ``hosts``: the Host headers answered (None: any); ``max_body``: bytes per
    request body; ``metrics``: where refusals are counted (shown by ``/api/health``)."""
    # the docs page's scripts come with the package: /docs works on a machine without
    # internet (FastAPI's own page loads Swagger UI from a CDN)
    app = FastAPIOffline(title="Flume master", version="1.0", redoc_url=None,
                         static_url="/docs-static",
                         description="Commands and listings of a Flume master. Every "
                                     "master of an ensemble serves every request.",
                         default_response_class=SafeJSONResponse)
    app.state.service = service
    app.state.static_dir = None  # the web console mounts its files here
    app.state.metrics = metrics = metrics if metrics is not None else Metrics()
    app.add_middleware(Guard, metrics=metrics, hosts=hosts, write_token=token or read_token,
                       read_token=read_token, max_body=max_body)

    parsing = _ParseSlots()
    _add_error_handlers(app)
    _add_listings(app, service, metrics)
    _add_metrics(app, service, metrics)
    _add_configs(app, service, parsing)
    _add_mappings(app, service)
    _add_commands(app, service, parsing)
    _mount_console(app)
    return app


class _ParseSlots:
    """Bounds the memory of concurrent requests (not of one: MAX_ARG does): those carrying
    more than HEAVY_SPEC of spec text parse HEAVY_AT_ONCE at a time, waiting HEAVY_WAIT s
    at most for a slot (then 503)."""

    def __init__(self):
        self._heavy = threading.BoundedSemaphore(HEAVY_AT_ONCE)

    @contextmanager
    def __call__(self, *texts: str | None):
        if sum(len(t) for t in texts if t) <= HEAVY_SPEC:
            yield
            return
        if not self._heavy.acquire(timeout=HEAVY_WAIT):
            raise _Busy()
        try:
            yield
        finally:
            self._heavy.release()


def _by(request: Request) -> str:
    """Who sent a command, for its record."""
    client = request.client.host if request.client else "?"
    agent = request.headers.get("user-agent", "")[:60]
    return f"{client} {agent}".strip()


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as a JSON ``{"message"}`` with the status the module docstring gives."""
    @app.exception_handler(_Busy)
    def busy(request, exc):
        return _json(503, {"message": "the master is busy parsing other large specs; "
                                      "retry in a moment"}, {"Retry-After": "5"})

    @app.exception_handler(SpecError)
    def spec_error(request, exc: SpecError):
        return _json(400, {"message": render_spec_error(exc),
                           "errors": spec_error_list(exc)})

    @app.exception_handler(CommandError)
    def command_error(request, exc):
        return _json(400, {"message": str(exc)})

    @app.exception_handler(NotFound)
    def not_found(request, exc):
        return _json(404, {"message": str(exc)})

    @app.exception_handler(CommandFailed)
    def command_failed(request, exc):
        return _json(409, {"message": str(exc)})

    @app.exception_handler(ConflictError)
    def conflict(request, exc):
        return _json(409, {"message": str(exc)})

    @app.exception_handler(ZkError)
    def unavailable(request, exc):
        return _json(503, {"message": f"ZooKeeper is unavailable: {exc}"})

    @app.exception_handler(RequestValidationError)
    def bad_request(request, exc: RequestValidationError):
        # the first few: a body with 300,000 unknown keys has as many errors
        errors = jsonable_encoder(
            [{k: v for k, v in e.items() if k not in ("input", "ctx")}
             for e in exc.errors()[:MAX_ERRORS_SHOWN]], custom_encoder={bytes: repr})
        for e in errors:
            e.pop("input", None)  # do not echo (possibly megabytes of) input back
            e.pop("ctx", None)
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _json(422, {"message": f"{where}: {first.get('msg', 'invalid request')}",
                           "detail": errors})

    @app.exception_handler(StarletteHTTPException)
    def http_error(request, exc: StarletteHTTPException):
        return _json(exc.status_code, {"message": str(exc.detail)}, exc.headers)


def _add_listings(app: FastAPI, service: MasterService, metrics: Metrics) -> None:
    """Health, status and flows (served as the memoised JSON of the listings)."""
    @app.get("/api/health", tags=["listings"])
    def health():
        """200 when this master reaches ZooKeeper, 503 otherwise;
        ``zookeeper_disconnections``: times its connection was lost; ``refused`` counts the
        requests and connections refused by reason (``refused_host``, ``refused_token``,
        ``refused_oversize``, ``refused_connections``, ``refused_header_timeout``...)."""
        ok = service.store.connected()
        return _json(200 if ok else 503, {"ok": ok, "master": service.name,
                                          "view": service.view.ready,
                                          "zookeeper_disconnections":
                                              service.store.disconnections,
                                          "refused": dict(metrics)})

    @app.get("/api/status", tags=["listings"])
    def status():
        """Every logical node (name, physical, host, state, running and configured
        version, flow, entered and translated specs, last error, last seen) and every
        physical node (alive, host, mapped logical nodes)."""
        return _raw(service.status_json())

    @app.get("/api/flows", tags=["listings"])
    def flows():
        """``{flow: {agents, collectors, pool, others, chains}}``."""
        return _raw(service.flows_json())

    @app.post("/api/flows/{flow}/preview", tags=["listings"])
    def preview(flow: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)],
                body: PreviewBody):
        """The collector chains the master would compute if ``nodes`` moved to ``flow``
        (a read: nothing is stored): ``{flow, nodes, unknown, chains, pool, changed}``,
        ``changed`` giving ``before`` and ``after`` of every agent whose chain moves."""
        return service.preview_chains(flow, list(body.nodes))

    @app.get("/api/history", tags=["history"])
    def history(node: Annotated[list[str] | None, Query(max_length=200)] = None):
        """Counters sampled by the master (master/history.py: a ring per logical node,
        1 hour at 5 s by default). With ``node`` (repeatable): their series ``{interval,
        samples, fields, t: [epoch ms], nodes: {name: {events_in: [per s], ...,
        recent_errors: [{t, component, message, state}]}}}``, oldest first, null where there was no reading.
        Without: the last sample of every node ``{t, interval, nodes: {name: {...}}}``."""
        if node:
            return service.history_series(node)
        return service.history_latest()

    @app.get("/api/history/flow/{flow}", tags=["history"])
    def flow_history(flow: str):
        """A flow end to end, per sample: ``in`` (events/s in at its agents),
        ``committed`` (events/s written by its collectors), ``gap`` (in - committed),
        ``backlog_bytes``, ``acks_pending`` and ``failovers`` (per s) of its agents."""
        return service.flow_history(flow)

    @app.get("/api/errors", tags=["history"])
    def errors(node: Annotated[list[str] | None, Query(max_length=200)] = None):
        """The recent errors of each logical node (the last 20, newest first):
        ``{name: [{t, component, message, state}]}``; only nodes with errors."""
        return service.history.errors(node)


def _add_metrics(app: FastAPI, service: MasterService, metrics: Metrics) -> None:
    """``/metrics`` (master/metrics.py), behind the read token like ``/api/``."""
    reg = master_registry(service, metrics)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics():
        return Response(exposition(reg), media_type=PROMETHEUS_CONTENT_TYPE,
                        headers={"Cache-Control": "no-store"})


def _add_configs(app: FastAPI, service: MasterService, parsing: _ParseSlots) -> None:
    """Configs as resources (``config`` and ``unconfig`` underneath) and live validation."""
    @app.get("/api/configs", tags=["configs"])
    def configs():
        """Every logical node's config: entered and translated specs, flow, version."""
        return _raw(service.configs_json())

    @app.get("/api/configs/{name}", tags=["configs"])
    def config(name: str):
        return service.config(name)

    @app.put("/api/configs/{name}", tags=["configs"])
    def put_config(name: str, body: ConfigBody, request: Request):
        """``config NAME [FLOW] SOURCE SINK``: validated like on the nodes; a bad spec
        answers 400 with every problem's position."""
        source = _unredacted(service, "source", body.source)
        sink = _unredacted(service, "sink", body.sink)
        args = [name] + ([body.flow] if body.flow is not None else []) + [source, sink]
        with parsing(source, sink):
            cmd = service.execute("config", args, by=_by(request), raise_failed=True)
        return {"command": _cmd(cmd), "config": service.config(name)}

    @app.delete("/api/configs/{name}", tags=["configs"])
    def delete_config(name: str, request: Request):
        """``unconfig NAME``: 404 if it has no config."""
        cmd = service.execute("unconfig", [name], by=_by(request), raise_failed=True)
        return {"command": _cmd(cmd)}

    @app.get("/api/export", tags=["configs"], response_class=Response)
    def export():
        """Every config as one spec file (``// flow:`` lines, one definition per logical
        node) that ``POST /api/plan`` and ``multiconfig`` take back unchanged; passwords
        hidden as in every listing (put back from the stored configs on the way in)."""
        return Response(service.export_text(), media_type="text/plain; charset=utf-8")

    @app.post("/api/plan", tags=["configs"])
    def plan(body: ValidateBody):
        """What ``multiconfig`` of ``spec`` would do (a read: nothing is stored): per
        logical node of the spec, ``add``, ``change`` or ``same``, with the old and new
        source, sink and flow. A bad spec answers 400 with every problem's position."""
        text = _unredacted(service, "spec", body.spec or "")
        with parsing(None, None, text):
            return redact_tree(service.plan(text))

    @app.post("/api/validate", tags=["configs"])
    def validate(body: ValidateBody):
        """Live validation (a read: nothing is stored; needs the read token if one is
        set): ``{ok, errors, message, canonical}``; the first 20 problems are listed, then
        how many more there are."""
        with parsing(body.source, body.sink, body.spec):
            return service.validate(body.source, body.sink, body.spec)


def _add_mappings(app: FastAPI, service: MasterService) -> None:
    """Mappings as resources (``map`` and ``unmap`` underneath)."""
    @app.get("/api/mappings", tags=["mappings"])
    def mappings():
        """``{physical: [logical, ...]}``."""
        return service.mappings()

    @app.post("/api/mappings", tags=["mappings"])
    def post_mapping(body: MappingBody, request: Request):
        """``map PHYSICAL LOGICAL``: 409 if the logical node runs elsewhere."""
        cmd = service.execute("map", [body.physical, body.logical], by=_by(request),
                              raise_failed=True)
        return {"command": _cmd(cmd), "mappings": service.mappings()}

    @app.delete("/api/mappings/{physical}/{logical}", tags=["mappings"])
    def delete_mapping(physical: str, logical: str, request: Request):
        """``unmap PHYSICAL LOGICAL``: 404 if it is not mapped there."""
        cmd = service.execute("unmap", [physical, logical], by=_by(request),
                              raise_failed=True)
        return {"command": _cmd(cmd)}


def _add_commands(app: FastAPI, service: MasterService, parsing: _ParseSlots) -> None:
    """The command table, the history, and running any command."""
    @app.get("/api/commands", tags=["commands"])
    def commands(limit: Annotated[int, Query(ge=1, le=1000)] = 100):
        """The command history, newest first."""
        return service.commands(limit)

    @app.get("/api/commands/{cmd_id}", tags=["commands"])
    def command(cmd_id: str):
        return service.command(cmd_id)

    @app.get("/api/command-table", tags=["commands"])
    def commands_taken():
        """Every command the master takes: ``[{name, aliases, usage, writes, help}]``
        (``writes``: whether it changes anything; ``[ARG]`` in a usage is optional)."""
        return [c.public() for c in command_table.COMMANDS]

    @app.post("/api/commands", tags=["commands"])
    def post_command(body: CommandBody, request: Request):
        """Run any command of ``GET /api/command-table`` (names case-insensitive).
        Answers the command record, whose ``state`` is SUCCEEDED or FAILED (with a
        message); bad usage or a bad spec answers 400."""
        args = [_unredacted(service, "argument", a) for a in body.args]
        with parsing(*args):
            return _cmd(service.execute(body.command, args, by=_by(request)))


def _mount_console(app: FastAPI) -> None:
    """The web console (web/static, shipped as package data) at ``/``; its assets under
    ``/static`` so that no API path is ever shadowed."""
    from flume_og import web
    static = Path(web.__file__).resolve().parent / "static"
    if not (static / "index.html").is_file():
        return
    app.state.static_dir = static
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    def console():
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})


class _Busy(Exception):
    pass


def _cmd(cmd) -> dict:
    return redact_tree({"id": cmd.id, "command": cmd.command, "args": cmd.args,
                        "state": cmd.state, "message": cmd.message,
                        "submitted": cmd.submitted, "finished": cmd.finished, "by": cmd.by})


def _unredacted(service: MasterService, what: str, text: str) -> str:
    """``text`` with the passwords a listing hid (``s3://KEY:***@...``) put back from the
    stored configs; CommandError (400) when one cannot be, rather than storing ``***`` or
    sending a password to another host."""
    if not has_redacted(text):
        return text
    try:
        return unredact(text, service.stored_specs())
    except RestoreError as exc:
        raise CommandError(f"the {what} holds a URL whose password a listing hid "
                           f"('user:***@') and it cannot be put back: {exc}; type the "
                           f"password again") from None


__all__ = ["create_app", "SafeJSONResponse"]
