"""The builder: spec tree -> runtime objects, and validation of a spec's parts.

Arguments are bound to each component's constructor signature (see :mod:`node.registry`)
and converted by its annotations; then the checks the component declares run on them:
bounds next to each parameter (``port: Annotated[int, Interval(ge=1, le=65535)]``), and the
class's ``check_args`` for rules across parameters. A failed check, or a constructor's own
``ValueError``, becomes a :class:`SpecError` at the call's position ("batch: n must be at
least 1, got 0").

Building runs the same checks and then the constructors; :func:`validate_parts` (what the
master and ``flume check`` use) runs only the checks, so validating a spec builds nothing,
and it reports *every* problem of a spec, not only the first.
"""
from __future__ import annotations

import contextlib
import inspect
import types
import typing
from typing import Any

from .component import Sink, Source
from .components import lookup
from .errors import SpecError, SpecErrors
from .registry import ComponentInfo, check_value, type_name
from .sinks.failover import FailoverSink
from .sinks.fanout import FanOutSink
from .sinks.shared import SharedSink
from .spec import Call, Decorated, Failover, FanOut, Func, Let, Lit, SinkNode, format_value


# ---------------------------------------------------------------- argument conversion

def _describe(v) -> str:
    if isinstance(v, Func):
        return f"function {format_value(v)}"
    return f"{v.kind} {format_value(v)}"


def convert(value, annotation, what: str):
    """Convert one spec value to the Python type ``annotation``; ValueError if it can't."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value.value if isinstance(value, Lit) else value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in typing.get_args(annotation):
            if alt is type(None):
                continue
            try:
                return convert(value, alt, what)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else
                         f"{what} must be {type_name(annotation)}, got {_describe(value)}")
    if hasattr(annotation, "from_spec"):
        try:
            return annotation.from_spec(value)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    expected = {str: "string", int: "int", float: "float", bool: "bool"}.get(annotation)
    if expected is None:
        raise TypeError(f"unsupported annotation {annotation!r} for {what}")
    if isinstance(value, Lit):
        if value.kind == expected:
            return value.value
        if expected == "float" and value.kind == "int":
            return float(value.value)
    raise ValueError(f"{what} must be {'an' if expected == 'int' else 'a'} {expected}, "
                     f"got {_describe(value)}")


def _convert_at(value, annotation, what: str, call: Call):
    """``convert``, with a failure reported at the value's own position."""
    try:
        return convert(value, annotation, what)
    except ValueError as exc:
        raise SpecError(str(exc), *getattr(value, "pos", call.pos)) from None


def bind(info: ComponentInfo, call: Call) -> tuple[list, dict]:
    """``call``'s arguments bound to ``info``'s signature, converted by its annotations and
    put through its declared checks (:func:`run_checks`): the ``(args, kwargs)`` of its
    constructor. Builds nothing; SpecError at the position of the problem."""
    names = {p.name for p in info.params}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in info.params)
    for key, value in call.kwargs:
        if key not in names and not var_kw:
            accepted = ", ".join(p.name for p in info.params if p.kind is not p.VAR_POSITIONAL)
            raise SpecError(f"unknown keyword '{key}' for {info.name}"
                            + (f"; it takes {accepted}" if accepted else "; it takes none"),
                            *call.kwarg_pos(key))
    try:
        bound = info.signature.bind(*call.args, **dict(call.kwargs))
    except TypeError as exc:
        raise SpecError(f"bad arguments for {info.name}: {exc}; usage: {info.usage()}",
                        *call.pos) from None
    args, kwargs = [], {}
    skipped = False  # once an optional parameter is left out, later ones go by keyword
    for p in info.params:
        if p.name not in bound.arguments:
            skipped = True
            continue
        ann = info.hints.get(p.name, Any)
        raw = bound.arguments[p.name]
        if p.kind is p.VAR_POSITIONAL:
            args.extend(_convert_at(v, ann, f"{info.name} argument '{p.name}'", call)
                        for v in raw)
            continue
        val = _convert_at(raw, ann, f"{info.name} argument '{p.name}'", call)
        if p.kind is p.KEYWORD_ONLY or skipped:
            kwargs[p.name] = val
        else:
            args.append(val)
    with _at(info, call, "checked"):
        run_checks(info, info.signature.bind(*args, **kwargs))
    return args, kwargs


def run_checks(info: ComponentInfo, bound: inspect.BoundArguments) -> None:
    """Run ``info``'s declared checks on converted arguments: each parameter's (its
    ``Annotated`` metadata, see :mod:`node.registry`; defaults too), then the class's
    ``check_args`` across parameters. ValueError with the first problem."""
    bound.apply_defaults()
    values = bound.arguments
    for p in info.params:
        for check in info.checks.get(p.name, ()):
            for v in values[p.name] if p.kind is p.VAR_POSITIONAL else (values[p.name],):
                check_value(p.name, v, check)
    info.cls.check_args(values)


@contextlib.contextmanager
def _at(info: ComponentInfo, call: Call, done: str):
    """A failure checking or building ``call`` reported as a SpecError at its position."""
    try:
        yield
    except SpecError as exc:
        if exc.line is None:
            exc.line, exc.column = call.pos
        raise
    except ValueError as exc:
        raise SpecError(f"{info.name}: {exc}", *call.pos) from None
    except Exception as exc:  # a check's or constructor's own failure: still this call's
        raise SpecError(f"{info.name} cannot be {done}: {type(exc).__name__}: {exc}",
                        *call.pos) from None


def instantiate(info: ComponentInfo, call: Call, first: Any = None):
    """Bind and check ``call``'s arguments (:func:`bind`), then build the object."""
    args, kwargs = bind(info, call)
    with _at(info, call, "built"):
        if info.takes is not None:
            return info.cls(first, *args, **kwargs)
        return info.cls(*args, **kwargs)


# ---------------------------------------------------------------- building

class _ErrorList:
    """The problems found so far: every one when validating, else the first is raised."""

    def __init__(self, collect: bool):
        self.collect = collect
        self.errors: list[SpecError] = []

    def fail(self, exc: SpecError):
        if not self.collect:
            raise exc
        self.errors.append(exc)
        return None


class _Valid:
    """What validating a part yields in place of a runtime object: it passed its checks.
    A ``let`` name stands for its value's result."""

    def reference(self):
        return self


_VALID = _Valid()


class _Unbuilt:
    def reference(self):
        return None


def _make(info: ComponentInfo, call: Call, first: Any, make: bool):
    if make:
        return instantiate(info, call, first)
    bind(info, call)
    return _VALID


def build_source(call: Call, errors: _ErrorList | None = None,
                 make: bool = True) -> Source | None:
    """Build a source from its call (``make`` False: only check it). Raises the first
    SpecError, or with ``errors`` collects every one and returns None."""
    errors = errors or _ErrorList(False)
    try:
        return _make(lookup("source", call.name, call.pos), call, None, make)
    except SpecError as exc:
        return errors.fail(exc)


def _build(node: SinkNode, env: dict, errors: _ErrorList, make: bool = True) -> Sink | None:
    """The sink tree of ``node`` (``make`` False: :data:`_VALID` once every part passed its
    checks, nothing built); None when a part failed (each failure goes to ``errors``)."""
    try:
        if isinstance(node, Call):
            if not node.args and not node.kwargs and node.name in env:
                return env[node.name].reference()
            return _make(lookup("sink", node.name, node.pos), node, None, make)
        if isinstance(node, (FanOut, Failover)):
            branches = [_build(b, env, errors, make) for b in node.branches]
            if None in branches:
                return None
            if not make:
                return _VALID
            return FanOutSink(branches) if isinstance(node, FanOut) else FailoverSink(branches)
        if isinstance(node, Let):
            value = _build(node.value, env, errors, make)
            if value is None:
                shared = _Unbuilt()
            else:
                shared = SharedSink(value) if make else value
            return _build(node.body, {**env, node.name: shared}, errors, make)
        if isinstance(node, Decorated):
            info = lookup("decorator", node.deco.name, node.deco.pos)
            if info.takes == "inner_factory":
                # check the inner once here (when building, by building one: the roll
                # makes the next ones later, when a failure would be no spec error)
                if _build(node.inner, env, errors, make) is None:
                    return None
                inner, inner_env = node.inner, env

                def factory() -> Sink:
                    return _build(inner, inner_env, _ErrorList(False))
                return _make(info, node.deco, factory, make)
            if info.takes == "branches":
                if not isinstance(node.inner, FanOut):
                    raise SpecError(f"{info.name} must be followed by a fan-out "
                                    f"[ sink, sink, ... ]", *node.deco.pos)
                branches = [_build(b, env, errors, make) for b in node.inner.branches]
                if None in branches:
                    return None
                return _make(info, node.deco, branches, make)
            built = _build(node.inner, env, errors, make)
            if built is None:
                bind(info, node.deco)   # still check the decorator's own arguments
                return None
            return _make(info, node.deco, built, make)
        raise SpecError(f"not a sink: {node!r}")
    except SpecError as exc:
        return errors.fail(exc)


def build_sink(node: SinkNode) -> Sink:
    """Build a runtime sink tree from a sink node. Raises the first SpecError."""
    return _build(node, {}, _ErrorList(False))


def validate_parts(source: Call | None, sink: SinkNode | None, text: str | None = None) -> None:
    """Check that every component exists, every argument binds and passes the declared
    checks, without constructing any component; raises SpecErrors listing *every* problem
    found."""
    errors = _ErrorList(True)
    if source is not None:
        build_source(source, errors, make=False)
    if sink is not None:
        _build(sink, {}, errors, make=False)
    if errors.errors:
        errors.errors.sort(key=lambda e: (e.line or 0, e.column or 0))
        for e in errors.errors:
            if text is not None:
                e.with_text(text)
        raise SpecErrors(errors.errors)
