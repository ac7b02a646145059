"""Every component, loaded: the index of sources, sinks and decorators and the lookups
over it. Importing this module imports every component module (each kind's ``__init__``
lists them explicitly), so no caller sees a half-filled registry and no component has to
import anything back."""
from __future__ import annotations

import difflib
import types
from collections.abc import Mapping

from . import decorators, sinks, sources  # noqa: F401  (they register themselves)
from .errors import SpecError
from .registry import ComponentInfo, registered, registered_master_only
from .spec import Call, SinkNode, sink_components


def lookup(kind: str, name: str, pos=(None, None)) -> ComponentInfo:
    """The component ``name`` of ``kind``; raises SpecError (with suggestions) if unknown."""
    table = registered(kind)
    try:
        return table[name]
    except KeyError:
        pass
    msg = f"unknown {kind} '{name}'"
    close = difflib.get_close_matches(name, table.keys(), n=3)
    if kind == "sink" and name in registered("decorator"):
        msg = f"'{name}' is a decorator and needs a sink after it"
    elif kind == "decorator" and name in registered("sink"):
        msg = f"'{name}' is a sink, not a decorator: only the last element of a chain is a sink"
    elif close:
        msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    raise SpecError(msg, *pos)


def all_components(kind: str) -> list[ComponentInfo]:
    seen, out = set(), []
    for info in registered(kind).values():
        if id(info) not in seen:
            seen.add(id(info))
            out.append(info)
    return sorted(out, key=lambda i: i.name.lower())


def master_only(kind: str) -> Mapping[str, type]:
    """The ``kind`` components only a master's translation makes runnable (their class says
    ``master_only``), by name and alias; ``cls.translation`` is what the master makes of
    each."""
    return types.MappingProxyType(registered_master_only(kind))


def master_only_in(source: Call | None, sink: SinkNode | None) -> list[str]:
    """The names of the master-only components ``source`` and ``sink`` use, in order (a
    ``let`` reference is not a component, whatever its name)."""
    found = []
    if source is not None and source.name in master_only("source"):
        found.append(source.name)
    if sink is not None:
        names = master_only("sink")
        found += [c.name for c in sink_components(sink) if c.name in names]
    return found
