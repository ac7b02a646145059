"""The component registry: what each component is called in a spec and what its arguments are.

Components register themselves with ``@source("tail")``, ``@sink("agentE2ESink",
aliases=("agentSink",))`` or ``@decorator("batch")``. The constructor signature is the
schema: :mod:`node.builder` binds spec arguments with ``inspect.signature(...).bind`` and
converts them by the parameter annotations; usage text is generated from the signature.

Decorator constructors take, before their spec arguments, one of:

* ``inner`` -- the built inner sink (most decorators);
* ``inner_factory`` -- a callable building a fresh inner sink (``roll``, ``collector``);
* ``branches`` -- the built branches of a fan-out written after it (``balance``).

A parameter annotation may be ``str``, ``int``, ``float``, ``bool``, ``X | None``, or a
class with a ``from_spec(value)`` classmethod taking a :class:`Lit` or :class:`Func` and
raising ``ValueError`` with a readable message (formats, triggers).

Checks are declared, never written in a constructor, so that a spec is validated without
building anything:

* next to a parameter, as ``typing.Annotated`` metadata: a bound of ``annotated-types``
  (``Annotated[int, Ge(1)]``, ``Gt(0)``, ``Interval(ge=1, le=65535)``, or ``MinLen(1)`` for
  a non-empty string: the ones whose messages :func:`check_value` words), or a pure
  function of the value that raises ``ValueError`` with its own message (a regex that must
  compile). On ``*args`` they apply to each value; ``None`` passes them (an optional
  argument left out). The aliases below name the common ones.
* across parameters, in the class's ``check_args(args)`` classmethod (see
  :class:`node.component.Component`).

This module imports no component: every component imports it. The tables are filled as
component modules are imported; :mod:`node.components` imports them all and answers
lookups.
"""
from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

import annotated_types as at

from .escapes import literal_path

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
    hints: dict = None        # resolved annotations, without their Annotated metadata
    checks: dict = field(default_factory=dict)   # parameter name -> its declared checks

    @property
    def signature(self) -> inspect.Signature:
        return inspect.Signature(list(self.params))

    def usage(self) -> str:
        parts = []
        for p in self.params:
            ann = type_name(self.hints.get(p.name, Any))
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


def type_name(t) -> str:
    if t is Any or t is inspect.Parameter.empty:
        return "any"
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in typing.get_args(t) if a is not type(None)]
        return " | ".join(names)
    if isinstance(t, type):
        return getattr(t, "spec_type_name", t.__name__)
    return str(t)


# Checks that many components declare ("file must not be empty", "timeoutMs must be > 0")
NonEmpty = Annotated[str, at.MinLen(1)]
LiteralPath = Annotated[str, at.MinLen(1), literal_path]   # one file, no escapes expanded
Positive = Annotated[int, at.Gt(0)]
AtLeast1 = Annotated[int, at.Ge(1)]      # a count
NonNegative = Annotated[int, at.Ge(0)]   # a timeout in ms is 0 for never
PeerPort = Annotated[int, at.Interval(ge=1, le=65535)]   # a port to connect to

_METADATA = (at.BaseMetadata, at.Interval)   # a bound, not a function


def _declared(component: str, param: str, meta: list):
    """The checks of one parameter's Annotated metadata; TypeError (at import, so a typo
    never reaches a spec) for metadata that is neither a bound this module words nor a
    function."""
    for m in meta:
        bound = (isinstance(m, (at.Gt, at.Ge))
                 or (isinstance(m, at.MinLen) and m.min_length == 1)
                 or (isinstance(m, at.Interval) and None not in (m.ge, m.le)
                     and m.gt is None and m.lt is None))
        if not bound and (isinstance(m, _METADATA) or not callable(m)):
            raise TypeError(f"{component}: unsupported check {m!r} on {param}")
        yield m


def _bound(m, v) -> str | None:
    """What the value ``v`` must be to pass the bound ``m``, or None if it does."""
    if isinstance(m, at.Interval):
        return None if m.ge <= v <= m.le else f"be within {m.ge}..{m.le}"
    if isinstance(m, at.Gt):
        return None if v > m.gt else f"be > {m.gt}"
    if isinstance(m, at.Ge):
        if v >= m.ge:
            return None
        return "not be negative" if m.ge == 0 else f"be at least {m.ge}"
    return None if v else "not be empty"    # MinLen(1)


def check_value(param: str, value, check) -> None:
    """Apply one declared ``check`` to the value of ``param``; ValueError saying what
    ``param`` must be (a bound: "timeoutMs must be > 0, got 0"), or the function's own."""
    if value is None:
        return
    if not isinstance(check, _METADATA):
        check(value)
        return
    must = _bound(check, value)
    if must is not None:
        got = "" if isinstance(check, at.MinLen) else f", got {value}"
        raise ValueError(f"{param} must {must}{got}")


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
        hints, checks = {}, {}
        for pname, hint in typing.get_type_hints(cls.__init__, include_extras=True).items():
            if typing.get_origin(hint) is Annotated:
                hint, *meta = typing.get_args(hint)
                checks[pname] = tuple(_declared(name, pname, meta))
            hints[pname] = hint
        info = ComponentInfo(kind, name, cls, tuple(aliases), takes, tuple(params), hints,
                             checks)
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


def registered(kind: str) -> dict[str, ComponentInfo]:
    """The ``kind`` components registered so far, by name and alias (filled only as their
    modules are imported: use :mod:`node.components` for the complete table)."""
    return _REGISTRY[kind]


def registered_master_only(kind: str) -> dict[str, type]:
    """The ``kind`` components registered so far whose class says ``master_only``."""
    return _MASTER_ONLY[kind]
