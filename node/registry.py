"""The component registry and the builder: spec tree -> runtime objects.

Components register themselves with ``@source("tail")``, ``@sink("agentE2ESink",
aliases=("agentSink",))`` or ``@decorator("batch")``. The constructor signature is the
schema: spec arguments are bound with ``inspect.signature(...).bind`` and converted by the
parameter annotations; usage text is generated from the signature.

Decorator constructors take, before their spec arguments, one of:

* ``inner`` -- the built inner sink (most decorators);
* ``inner_factory`` -- a callable building a fresh inner sink (``roll``, ``collector``);
* ``branches`` -- the built branches of a fan-out written after it (``balance``).

A parameter annotation may be ``str``, ``int``, ``float``, ``bool``, ``X | None``, or a
class with a ``from_spec(value)`` classmethod taking a :class:`Lit` or :class:`Func` and
raising ``ValueError`` with a readable message (formats, triggers).
"""
from __future__ import annotations

import difflib
import inspect
import threading
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from .component import Sink, Source
from .errors import SpecError, SpecErrors
from .spec import (Call, Decorated, Failover, FanOut, Func, Let, Lit, SinkNode, format_value,
                   sink_components)

SPECIAL_FIRST = ("inner", "inner_factory", "branches")


@dataclass
class ComponentInfo:
    """One registered component: its kind, spec name, class and argument schema."""

    kind: str                 # "source", "sink" or "decorator"
    name: str
    cls: type
    aliases: tuple = ()
    takes: str | None = None  # for decorators: inner, inner_factory or branches
    params: tuple = ()        # the spec parameters (inspect.Parameter)
    hints: dict = None        # resolved annotations

    @property
    def signature(self) -> inspect.Signature:
        return inspect.Signature(list(self.params))

    def usage(self) -> str:
        parts = []
        for p in self.params:
            ann = _type_name(self.hints.get(p.name, Any))
            if p.kind is p.VAR_POSITIONAL:
                parts.append(f"{p.name}: {ann}...")
            elif p.default is p.empty:
                parts.append(f"{p.name}: {ann}")
            else:
                parts.append(f"[{p.name}: {ann} = {_default_text(p.default)}]")
        text = f"{self.name}({', '.join(parts)})"
        if self.takes == "inner_factory":
            text += " { sink }"
        elif self.takes == "branches":
            text += " [ sink, sink, ... ]"
        elif self.takes == "inner":
            text += " sink"
        return text

    def summary(self) -> str:
        doc = inspect.getdoc(self.cls) or ""
        return doc.split("\n\n")[0].replace("\n", " ")


def _default_text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if v is None:
        return "none"
    return str(v)


def _type_name(t) -> str:
    if t is Any or t is inspect.Parameter.empty:
        return "any"
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(t) if a is not type(None)]
        return " | ".join(names)
    if isinstance(t, type):
        return getattr(t, "spec_type_name", t.__name__)
    return str(t)


_REGISTRY: dict[str, dict[str, ComponentInfo]] = {"source": {}, "sink": {}, "decorator": {}}
# name -> class of the components marked ``master_only`` (filled as they register)
_MASTER_ONLY: dict[str, dict[str, type]] = {"source": {}, "sink": {}, "decorator": {}}


def _register(kind: str, name: str, aliases: tuple) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        sig = inspect.signature(cls.__init__)
        params = [p for p in sig.parameters.values() if p.name != "self"]
        takes = None
        if kind == "decorator":
            if not params or params[0].name not in SPECIAL_FIRST:
                raise TypeError(f"decorator {name}: first parameter must be one of "
                                f"{SPECIAL_FIRST}")
            takes = params[0].name
            params = params[1:]
        hints = typing.get_type_hints(cls.__init__)
        info = ComponentInfo(kind, name, cls, tuple(aliases), takes, tuple(params), hints)
        for n in (name, *aliases):
            if n in _REGISTRY[kind]:
                raise ValueError(f"{kind} {n!r} is registered twice")
            _REGISTRY[kind][n] = info
            if cls.master_only:
                _MASTER_ONLY[kind][n] = cls
        cls.spec_name = name
        return cls
    return wrap


def source(name: str, aliases: tuple = ()):
    """Register a source class under ``name`` (and ``aliases``)."""
    return _register("source", name, aliases)


def sink(name: str, aliases: tuple = ()):
    """Register a sink class under ``name`` (and ``aliases``)."""
    return _register("sink", name, aliases)


def decorator(name: str, aliases: tuple = ()):
    """Register a decorator class under ``name`` (and ``aliases``)."""
    return _register("decorator", name, aliases)


_loaded = False
_load_lock = threading.RLock()


def load_components() -> None:
    """Import every component module (each kind's ``__init__`` lists them explicitly).
    Thread-safe: no caller sees a half-filled registry."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if not _loaded:
            from . import decorators, sinks, sources  # noqa: F401
            _loaded = True


def lookup(kind: str, name: str, pos=(None, None)) -> ComponentInfo:
    """The component ``name`` of ``kind``; raises SpecError (with suggestions) if unknown."""
    load_components()
    table = _REGISTRY[kind]
    try:
        return table[name]
    except KeyError:
        pass
    msg = f"unknown {kind} '{name}'"
    close = difflib.get_close_matches(name, table.keys(), n=3)
    if kind == "sink" and name in _REGISTRY["decorator"]:
        msg = f"'{name}' is a decorator and needs a sink after it"
    elif kind == "decorator" and name in _REGISTRY["sink"]:
        msg = f"'{name}' is a sink, not a decorator: only the last element of a chain is a sink"
    elif close:
        msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    raise SpecError(msg, *pos)


def all_components(kind: str) -> list[ComponentInfo]:
    load_components()
    seen, out = set(), []
    for info in _REGISTRY[kind].values():
        if id(info) not in seen:
            seen.add(id(info))
            out.append(info)
    return sorted(out, key=lambda i: i.name.lower())


def master_only(kind: str) -> Mapping[str, type]:
    """The ``kind`` components only a master's translation makes runnable (their class says
    ``master_only``), by name and alias; ``cls.translation`` is what the master makes of
    each."""
    load_components()
    return types.MappingProxyType(_MASTER_ONLY[kind])


def master_only_in(source: Call | None, sink: SinkNode | None) -> list[str]:
    """The names of the master-only components ``source`` and ``sink`` use, in order (a
    ``let`` reference is not a component, whatever its name)."""
    found = []
    if source is not None and source.name in master_only("source"):
        found.append(source.name)
    if sink is not None:
        sinks = master_only("sink")
        found += [c.name for c in sink_components(sink) if c.name in sinks]
    return found


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
                         f"{what} must be {_type_name(annotation)}, got {_describe(value)}")
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


def instantiate(info: ComponentInfo, call: Call, first: Any = None):
    """Bind ``call``'s arguments to ``info``'s constructor and build the object."""
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
    try:
        if info.takes is not None:
            return info.cls(first, *args, **kwargs)
        return info.cls(*args, **kwargs)
    except SpecError as exc:
        if exc.line is None:
            exc.line, exc.column = call.pos
        raise
    except ValueError as exc:
        raise SpecError(f"{info.name}: {exc}", *call.pos) from None
    except Exception as exc:  # a constructor's own failure: still this call's fault
        raise SpecError(f"{info.name} cannot be built: {type(exc).__name__}: {exc}",
                        *call.pos) from None


# ---------------------------------------------------------------- building

class _Collector:
    """Collects every problem instead of stopping at the first (validation)."""

    def __init__(self, collect: bool):
        self.collect = collect
        self.errors: list[SpecError] = []

    def fail(self, exc: SpecError):
        if not self.collect:
            raise exc
        self.errors.append(exc)
        return None


def build_source(call: Call, errors: _Collector | None = None) -> Source | None:
    errors = errors or _Collector(False)
    try:
        info = lookup("source", call.name, call.pos)
        return instantiate(info, call)
    except SpecError as exc:
        return errors.fail(exc)


def _build(node: SinkNode, env: dict, errors: _Collector) -> Sink | None:
    from .sinks.failover import FailoverSink
    from .sinks.fanout import FanOutSink
    from .sinks.shared import SharedSink

    try:
        if isinstance(node, Call):
            if not node.args and not node.kwargs and node.name in env:
                return env[node.name].reference()
            return instantiate(lookup("sink", node.name, node.pos), node)
        if isinstance(node, FanOut):
            branches = [_build(b, env, errors) for b in node.branches]
            return None if None in branches else FanOutSink(branches)
        if isinstance(node, Failover):
            branches = [_build(b, env, errors) for b in node.branches]
            return None if None in branches else FailoverSink(branches)
        if isinstance(node, Let):
            value = _build(node.value, env, errors)
            shared = SharedSink(value) if value is not None else _Unbuilt()
            return _build(node.body, {**env, node.name: shared}, errors)
        if isinstance(node, Decorated):
            info = lookup("decorator", node.deco.name, node.deco.pos)
            if info.takes == "inner_factory":
                if _build(node.inner, env, errors) is None:  # validate the inner once
                    return None
                inner, inner_env = node.inner, env

                def factory() -> Sink:
                    return _build(inner, inner_env, _Collector(False))
                return instantiate(info, node.deco, factory)
            if info.takes == "branches":
                if not isinstance(node.inner, FanOut):
                    raise SpecError(f"{info.name} must be followed by a fan-out "
                                    f"[ sink, sink, ... ]", *node.deco.pos)
                branches = [_build(b, env, errors) for b in node.inner.branches]
                if None in branches:
                    return None
                return instantiate(info, node.deco, branches)
            built = _build(node.inner, env, errors)
            if built is None:
                # still check the decorator's own arguments
                instantiate(info, node.deco, _Placeholder())
                return None
            return instantiate(info, node.deco, built)
        raise SpecError(f"not a sink: {node!r}")
    except SpecError as exc:
        return errors.fail(exc)


class _Placeholder(Sink):
    """Stands for an inner sink that failed to build, so a decorator's arguments are still
    checked during validation."""


class _Unbuilt:
    def reference(self):
        return None


def build_sink(node: SinkNode) -> Sink:
    """Build a runtime sink tree from a sink node. Raises the first SpecError."""
    return _build(node, {}, _Collector(False))


def validate_parts(source: Call | None, sink: SinkNode | None, text: str | None = None) -> None:
    """Check that every component exists and every argument binds; raises SpecErrors listing
    *every* problem found."""
    errors = _Collector(True)
    if source is not None:
        build_source(source, errors)
    if sink is not None:
        _build(sink, {}, errors)
    if errors.errors:
        errors.errors.sort(key=lambda e: (e.line or 0, e.column or 0))
        for e in errors.errors:
            if text is not None:
                e.with_text(text)
        raise SpecErrors(errors.errors)
