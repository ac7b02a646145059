"""Checks on component arguments are declared, and validating a spec builds nothing.

Every bound declared next to a parameter (``Annotated[int, Gt(0)]``, see node/registry.py)
is tried here just past its limit, by validating a spec and by building it: both report
the same message at the call's position. Validating a spec must not call any component's
constructor (the master validates what people enter without building runtime objects).
"""
from __future__ import annotations

from typing import Annotated

import annotated_types as at
import pytest

from flume_og.node.builder import build_sink, build_source, validate_parts
from flume_og.node.component import Decorator
from flume_og.node.components import all_components
from flume_og.node.errors import SpecError, SpecErrors
from flume_og.node.registry import decorator
from flume_og.node.sinks.failover import FailoverSink
from flume_og.node.sinks.fanout import FanOutSink
from flume_og.node.sinks.shared import SharedSink
from flume_og.node.spec import parse

# a valid spec value for each parameter a component requires, by parameter name
REQUIRED = {"port": "1", "cmd": '"ls"', "ms": "1", "name": '"n"', "dir": '"d"',
            "file": '"f"', "path": '"/x"', "logicalNode": '"n"', "host": '"h"', "n": "1",
            "id": '"c"', "algorithm": '"MD5"', "attr": '"a"', "pattern": '"yyyy"',
            "p": "0.5", "regex": '"(a)"', "idx": "1", "k": "1", "rollmillis": "1",
            "value": '"v"'}
# a valid first value for each *args parameter (a chain needs one collector, ...)
VARARGS = {"files": '"f"', "collectors": '"h"', "attrs": '"a"', "names": '"a"'}


def _spec(info, param: str, text: str) -> str:
    """A one-node spec calling ``info`` with ``param`` given as ``text`` (spec syntax) and
    valid values for the rest of what it requires."""
    pos, kw = [], []
    for p in info.params:
        if p.kind is p.VAR_POSITIONAL:
            pos.append(text if p.name == param else VARARGS[p.name])
        elif p.name == param:
            kw.append(f"{p.name}={text}")
        elif p.default is p.empty:
            kw.append(f"{p.name}={REQUIRED[p.name]}")
    call = f"{info.name}({', '.join(pos + kw)})"
    if info.kind == "source":
        return f"a : {call} | null"
    if info.kind == "sink":
        return f"a : null | {call}"
    inner = {"inner": " null", "inner_factory": " { null }", "branches": " [ null ]"}
    return f"a : null | {call}{inner[info.takes]}"


def _past(check) -> tuple[str, str]:
    """(spec text of a value just past ``check``, the message it must give)."""
    if isinstance(check, at.Interval):
        return str(check.le + 1), f"must be within {check.ge}..{check.le}, got {check.le + 1}"
    if isinstance(check, at.Gt):
        return str(check.gt), f"must be > {check.gt}, got {check.gt}"
    if isinstance(check, at.Ge):
        below = check.ge - 1
        if check.ge == 0:
            return str(below), f"must not be negative, got {below}"
        return str(below), f"must be at least {check.ge}, got {below}"
    if isinstance(check, at.MinLen) and check.min_length == 1:
        return '""', "must not be empty"
    raise AssertionError(f"no case for {check!r}: add one")


def _bounds():
    cases = []
    for kind in ("source", "sink", "decorator"):
        for info in all_components(kind):
            for param, checks in info.checks.items():
                for check in checks:
                    if isinstance(check, at.BaseMetadata):
                        cases.append(pytest.param(info, param, check,
                                                  id=f"{info.name}-{param}-{check!r}"))
    return cases


BOUNDS = _bounds()


def test_the_declared_bounds_are_all_found():
    # about a hundred today; far fewer means the registry lost its Annotated metadata
    assert len(BOUNDS) >= 90


def _problems(text: str) -> list[tuple[int, int, str]]:
    d = parse(text).definitions[0]
    try:
        validate_parts(d.source, d.sink, text)
    except SpecErrors as exc:
        return [(e.line, e.column, e.message) for e in exc.errors]
    return []


def _build(text: str):
    d = parse(text).definitions[0]
    return build_source(d.source) if d.source.name != "null" else build_sink(d.sink)


@pytest.mark.parametrize("info, param, check", BOUNDS)
def test_a_value_past_a_declared_bound_is_refused_with_its_message(info, param, check):
    value, message = _past(check)
    text = _spec(info, param, value)
    expected = f"{info.name}: {param} {message}"
    column = text.index(info.name + "(") + 1
    assert _problems(text) == [(1, column, expected)], text
    with pytest.raises(SpecError) as ei:          # building runs the same check first
        _build(text)
    assert (ei.value.line, ei.value.column, ei.value.message) == (1, column, expected)


@pytest.mark.parametrize("info, param, check", BOUNDS)
def test_a_value_at_a_declared_bound_passes_it(info, param, check):
    if isinstance(check, at.Interval):
        values = [str(check.ge), str(check.le)]
    elif isinstance(check, at.Gt):
        values = [str(check.gt + 1)]
    elif isinstance(check, at.Ge):
        values = [str(check.ge)]
    else:
        values = ['"x"']
    for value in values:
        text = _spec(info, param, value)
        # a rule across parameters may still refuse it (diskFailover(maxMs=1)), not the bound
        assert not [m for _, _, m in _problems(text) if f"{param} must" in m], text


SPEC = """
src : tail("/var/log/x", delim="\\n\\n+", delimMode="prev")
    | let s := { batch(10, maxLatencyMs=5) => gzip(level=9) => rpcSink("h", 1) } in
      [ s, < { insistentOpen => agentE2EChain("a:1", "b") } ? diskFailover(100, 10) s >,
        roll(1000, trigger=size(5)) { collectorSink("/d", "p-", format=json) },
        balance("hash", key="%{host}") [ null, counter("c") ],
        regexAll("(a)(b)", "x", "") split(",", 0, "y") value("v", "%{host}", true)
          mask("m") exDate("d", "yyyy-MM-dd") dfs("/x/%{host}", "f", maxOpen=4) ] ;
agent : syslogTcp(0, idleTimeoutMs=0) | agentDFOChain("c1:35853", checkMs=10, maxMs=20) ;
coll : collectorSource(0, maxAgents=1) | collector(500) { formatDfs("/y", json) } ;
"""


def test_validating_a_spec_calls_no_constructor(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} was built while validating")
    classes = {FanOutSink, FailoverSink, SharedSink}
    for kind in ("source", "sink", "decorator"):
        classes.update(info.cls for info in all_components(kind))
    for cls in classes:
        monkeypatch.setattr(cls, "__init__", refuse)
    for d in parse(SPEC).definitions:
        validate_parts(d.source, d.sink, SPEC)        # no SpecErrors: every part checked
    # and its checks still ran: a bad argument anywhere in it is found
    bad = SPEC.replace("maxOpen=4", "maxOpen=0").replace("delimMode=\"prev\"",
                                                         "delimMode=\"after\"")
    found = [e.message for d in parse(bad).definitions
             for e in (_errors(d, bad) or [])]
    assert found == ['tail: delimMode must be one of exclude, prev, next, got \'after\'',
                     "dfs: maxOpen must be at least 1, got 0"]


def _errors(d, text):
    try:
        validate_parts(d.source, d.sink, text)
    except SpecErrors as exc:
        return exc.errors
    return None


def test_the_master_validates_without_building(monkeypatch):
    from flume_og.master.validation import validate
    from flume_og.node.sinks.dfs import DfsSink

    def refuse(self, *args, **kwargs):
        raise AssertionError("built while validating")
    monkeypatch.setattr(DfsSink, "__init__", refuse)
    assert validate(sink='dfs("/x/%{host}", maxOpen=2)')["ok"]
    bad = validate(spec='a : null | dfs("/x/")')
    assert not bad["ok"] and "names a directory" in bad["message"]


def test_a_check_that_is_neither_a_bound_nor_a_function_is_refused_at_registration():
    with pytest.raises(TypeError, match="unsupported check"):
        @decorator("declaredChecksProbe")
        class Probe(Decorator):
            def __init__(self, inner, n: Annotated[int, at.MultipleOf(2)] = 2):
                super().__init__(inner)
