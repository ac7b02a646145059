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

This module imports no component: every component imports it. The tables are filled as
component modules are imported; :mod:`node.components` imports them all and answers
lookups.
"""
from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

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


def registered(kind: str) -> dict[str, ComponentInfo]:
    """The ``kind`` components registered so far, by name and alias (filled only as their
    modules are imported: use :mod:`node.components` for the complete table)."""
    return _REGISTRY[kind]


def registered_master_only(kind: str) -> dict[str, type]:
    """The ``kind`` components registered so far whose class says ``master_only``."""
    return _MASTER_ONLY[kind]
