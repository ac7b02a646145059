"""Checking what people enter before anything is stored: names, a source and a sink, a
whole spec file, with the same parser and registry the nodes use (every problem found,
each with its position and the part it is in), and how those problems are shown.

Nothing here touches ZooKeeper or builds a component: the components' declared checks run
on the bound arguments (:func:`node.builder.validate_parts`). Bounds: the REST API bounds
the text (64 KiB a half, 1 MiB a spec file) before it gets here; the first problems are
shown (``SpecErrors.shown``), then how many more there are.
"""
from __future__ import annotations

from flume_og.node.errors import SpecError, SpecErrors, more_problems
from flume_og.node.builder import validate_parts
from flume_og.node.spec import (Definition, format_definition, format_sink, format_source, parse,
                                parse_sink, parse_source)

from .errors import CommandError

MAX_NAME = 200


def name_problem(name) -> str | None:
    """Why ``name`` cannot name a logical node, physical node or flow (None if it can).
    Names become znode names: no '/', no control or blank characters, nothing ZooKeeper
    refuses."""
    if not isinstance(name, str) or not name:
        return "a name must not be empty"
    if len(name) > MAX_NAME:
        return f"a name must be at most {MAX_NAME} characters"
    if name in (".", ".."):
        return f"{name!r} is not a valid name"
    for ch in name:
        if ch == "/" or ch.isspace() or not ch.isprintable() \
                or "\ud800" <= ch <= "\uf8ff" or ch >= "\ufff0":
            return f"{name!r} contains {ch!r}, which a name cannot contain"
    return None


def check_name(what: str, name: str) -> str:
    """``name``, or CommandError saying why it cannot name a ``what``."""
    problem = name_problem(name)
    if problem:
        raise CommandError(f"bad {what} name: {problem}")
    return name


# ---------------------------------------------------------------- showing problems

def _shown(exc: SpecError) -> tuple[list[SpecError], int]:
    return exc.shown() if isinstance(exc, SpecErrors) else ([exc], 0)


def render_spec_error(exc: SpecError) -> str:
    """The text shown to people: the first problems (``SpecErrors.shown``), each with its
    spec line (cut around the column) and a caret, and which part it is in (``part``:
    "source", "sink", "spec" or a file name) when known; then how many more there are."""
    errors, more = _shown(exc)
    out = []
    for e in errors:
        part = getattr(e, "part", None)
        if part in ("source", "sink", "spec"):
            out.append(f"in the {part}: {e.render()}")
        else:  # a file name, or nothing
            out.append(f"{part}: {e.render()}" if part else e.render())
    if more:
        out.append(more_problems(more))
    return "\n".join(out)


def spec_error_list(exc: SpecError) -> list[dict]:
    """``[{message, line, column[, part]}]`` for the first problems in ``exc``, and one
    without a position saying how many more there are (with their ``part`` if they all
    have the same)."""
    errors, more = _shown(exc)
    out = []
    for e in errors:
        d = e.to_dict()
        if getattr(e, "part", None):
            d["part"] = e.part
        out.append(d)
    if more:
        d = {"message": more_problems(more), "line": None, "column": None}
        parts = {getattr(e, "part", None) for e in exc.errors[len(errors):]}
        if len(parts) == 1 and None not in parts:
            d["part"] = parts.pop()
        out.append(d)
    return out


def tag(errors: list[SpecError], part: str, text: str) -> list[SpecError]:
    """Give each problem its spec text and, unless it has one, its part."""
    for e in errors:
        e.with_text(text)
        if not getattr(e, "part", None):
            e.part = part
    return errors


def tag_all(exc: SpecError, part: str, text: str) -> None:
    tag(exc.errors if isinstance(exc, SpecErrors) else [exc], part, text)


# ---------------------------------------------------------------- checking specs

def check_halves(source: str | None, sink: str | None):
    """Parse and validate a source and/or a sink as entered; raises SpecErrors with
    every problem of both halves (each tagged ``part`` "source" or "sink")."""
    errors: list[SpecError] = []
    src = snk = None
    if source is not None:
        try:
            src = parse_source(source)
        except SpecError as exc:
            errors += tag([exc], "source", source)
    if sink is not None:
        try:
            snk = parse_sink(sink)
        except SpecError as exc:
            errors += tag([exc], "sink", sink)
    if src is not None:
        try:
            validate_parts(src, None, source)
        except SpecErrors as exc:
            errors += tag(list(exc.errors), "source", source)
    if snk is not None:
        try:
            validate_parts(None, snk, sink)
        except SpecErrors as exc:
            errors += tag(list(exc.errors), "sink", sink)
    if errors:
        raise SpecErrors(errors)
    return src, snk


def check_spec(text: str) -> list[Definition]:
    """Parse and validate a whole spec file; raises SpecErrors with every problem
    (bad or duplicate names, unknown components, bad arguments...)."""
    if not isinstance(text, str):
        raise CommandError("a spec must be text")
    spec = parse(text)
    errors: list[SpecError] = []
    first: dict[str, Definition] = {}
    for d in spec.definitions:
        problem = name_problem(d.name)
        if problem:
            errors.append(SpecError(f"bad logical node name: {problem}", *d.pos, text))
        elif d.name in first:
            errors.append(SpecError(f"{d.name} is defined twice (first at line "
                                    f"{first[d.name].pos[0]})", *d.pos, text))
        else:
            first[d.name] = d
        try:
            validate_parts(d.source, d.sink, text)
        except SpecErrors as exc:
            errors += exc.errors
    if errors:
        raise SpecErrors(errors)
    return list(spec.definitions)


def validate(source: str | None = None, sink: str | None = None,
             spec: str | None = None) -> dict:
    """Live validation for the console: ``{"ok", "errors", "message", "canonical"}``
    (canonical texts of whatever was valid). Never raises for bad specs."""
    errors: list[dict] = []
    messages: list[str] = []
    canonical: dict = {}
    if spec is not None:
        try:
            defs = check_spec(spec)
            canonical["spec"] = "".join(format_definition(d) + "\n" for d in defs)
        except SpecError as exc:
            tag_all(exc, "spec", spec)
            errors += spec_error_list(exc)
            messages.append(render_spec_error(exc))
        except CommandError as exc:
            errors.append({"message": str(exc), "line": None, "column": None,
                           "part": "spec"})
            messages.append(str(exc))
    for part, text in (("source", source), ("sink", sink)):
        if text is None:
            continue
        try:
            src, snk = check_halves(text if part == "source" else None,
                                    text if part == "sink" else None)
            canonical[part] = format_source(src) if src else format_sink(snk)
        except SpecError as exc:
            errors += spec_error_list(exc)
            messages.append(render_spec_error(exc))
    return {"ok": not errors, "errors": errors, "message": "\n".join(messages),
            "canonical": canonical}
