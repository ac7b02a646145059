"""Semantic spec errors: the registry's checks of a parsed spec (node.registry).

Unknown components (with suggestions), unknown keywords, wrong argument types, argument
counts, decorators used as sinks and sinks used as decorators -- each reported with the
position of the offending word, and every problem of a spec reported at once.
"""
from __future__ import annotations

import pytest

from flume_og.node.errors import SpecError, SpecErrors
from flume_og.node.builder import build_sink, build_source, validate_parts
from flume_og.node.spec import parse, parse_sink, parse_source


def problems(text: str) -> list[tuple[int, int, str]]:
    """Every problem validate_parts finds in the whole spec ``text``, as (line, col, msg)."""
    out = []
    for d in parse(text).definitions:
        try:
            validate_parts(d.source, d.sink, text)
        except SpecErrors as errs:
            assert errs.errors, "SpecErrors without errors"
            out.extend((e.line, e.column, e.message) for e in errs.errors)
    return out


def one_problem(text: str) -> tuple[int, int, str]:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def col(text: str, needle: str, nth: int = 0) -> int:
    """1-based column of the nth occurrence of needle in a one-line text."""
    i = -1
    for _ in range(nth + 1):
        i = text.index(needle, i + 1)
    return i + 1


# ---------------------------------------------------------------- names

def test_unknown_sink_suggests_close_names():
    text = "a : null | consle"
    line, column, msg = one_problem(text)
    assert (line, column) == (1, col(text, "consle"))
    assert msg.startswith("unknown sink 'consle'") and "did you mean 'console'" in msg


def test_unknown_source_suggests_close_names():
    line, column, msg = one_problem('a : tial("x") | null')
    assert (line, column) == (1, 5)
    assert msg.startswith("unknown source 'tial'") and "did you mean 'tail'" in msg


def test_unknown_decorator_suggests_close_names():
    text = "a : null | bach(10) null"
    line, column, msg = one_problem(text)
    assert column == col(text, "bach")
    assert "unknown decorator 'bach'" in msg and "did you mean 'batch'" in msg


def test_unknown_name_far_from_everything_has_no_suggestion():
    line, column, msg = one_problem("a : null | qqqqqqqqqqqq")
    assert msg == "unknown sink 'qqqqqqqqqqqq'"


def test_decorator_used_as_sink():
    text = "a : null | { gzip => batch(10) }"
    line, column, msg = one_problem(text)
    assert column == col(text, "batch")
    assert msg == "'batch' is a decorator and needs a sink after it"


def test_sink_used_as_decorator():
    text = "a : null | console null"
    line, column, msg = one_problem(text)
    assert column == col(text, "console")
    assert "'console' is a sink, not a decorator" in msg


def test_source_name_used_as_sink_only_where_it_exists():
    # "text" is both a source and a sink; "tail" is only a source
    assert problems('a : text("in") | text("out")') == []
    line, column, msg = one_problem('a : null | tail("x")')
    assert msg.startswith("unknown sink 'tail'")


# ---------------------------------------------------------------- arguments

def test_unknown_keyword_points_at_its_value():
    text = 'a : tail("x", startFromEnd=true, dlim="x") | null'
    line, column, msg = one_problem(text)
    assert column == col(text, '"x"', 1)
    assert msg.startswith("unknown keyword 'dlim' for tail; it takes file, startFromEnd")


def test_unknown_keyword_of_a_decorator():
    text = "a : null | gzip(level=1, lvl=3) null"
    line, column, msg = one_problem(text)
    assert column == col(text, "3")
    assert "unknown keyword 'lvl' for gzip" in msg


def test_wrong_argument_types_point_at_the_argument():
    cases = [
        ('a : null | batch("x") null', '"x"', "batch argument 'n' must be an int"),
        ('a : tail("x", startFromEnd=1) | null', "1", "must be a bool"),
        ('a : null | probSampler("p") null', '"p"', "must be a float"),
        ("a : null | text(5)", "5", "text argument 'file' must be a string, got int 5"),
        ("a : null | text(true)", "true", "must be a string, got bool true"),
        ("a : null | batch(1.5) null", "1.5", "must be an int, got float 1.5"),
        ("a : null | batch(n) null", "n)", "must be an int, got function n"),
    ]
    for text, at, message in cases:
        line, column, msg = one_problem(text)
        assert column == col(text, at), text
        assert message in msg, (text, msg)


def test_int_is_accepted_where_a_float_is_expected():
    assert problems("a : null | probSampler(1) null") == []


def test_function_values_are_checked():
    text = "a : null | console(nosuchformat)"
    line, column, msg = one_problem(text)
    assert column == col(text, "nosuchformat")
    assert "nosuchformat" in msg
    assert problems("a : null | console(json)") == []
    text = "a : null | roll(1000, trigger=size(\"x\")) { null }"
    line, column, msg = one_problem(text)
    assert column == col(text, "size") and "trigger" in msg
    assert problems("a : null | roll(1000, trigger=size(1000000)) { null }") == []


def test_too_many_arguments():
    text = "a : null | batch(1, 2, 3) null"
    line, column, msg = one_problem(text)
    assert column == col(text, "batch")
    assert msg.startswith("bad arguments for batch: too many positional arguments")
    assert "usage: batch(n: int" in msg
    line, column, msg = one_problem("a : null | null(1)")
    assert "bad arguments for null" in msg and "usage: null()" in msg


def test_missing_required_argument():
    line, column, msg = one_problem("a : tail | null")
    assert column == 5 and "missing a required argument: 'file'" in msg
    line, column, msg = one_problem("a : null | roll { null }")
    assert "missing a required argument: 'rollmillis'" in msg


def test_bad_vararg_points_at_the_bad_one():
    text = 'a : null | mask("a", "b", 3) null'
    line, column, msg = one_problem(text)
    assert column == col(text, "3")


def test_balance_needs_a_fanout():
    text = "a : null | balance null"
    line, column, msg = one_problem(text)
    assert column == col(text, "balance") and "fan-out" in msg
    assert problems("a : null | balance [ null, null ]") == []


# ---------------------------------------------------------------- several problems

def test_every_problem_of_a_spec_is_reported():
    text = ('a : tial("x") | [ consle, < nul ? text(1) >, batch("n") nosuch ] ;\n'
            'b : null | { gzip(lvl=1) => let s := console(jsn) in [ s, bach s ] }')
    found = problems(text)
    line1, line2 = text.split("\n")
    expected = {
        (1, col(line1, "tial"), "unknown source 'tial'"),
        (1, col(line1, "consle"), "unknown sink 'consle'"),
        (1, col(line1, "nul "), "unknown sink 'nul'"),
        (1, col(line1, "1)"), "text argument 'file' must be a string"),
        (1, col(line1, "nosuch"), "unknown sink 'nosuch'"),
        (1, col(line1, '"n"'), "batch argument 'n' must be an int"),
        (2, col(line2, "1)"), "unknown keyword 'lvl' for gzip"),
        (2, col(line2, "jsn"), "jsn"),
        (2, col(line2, "bach"), "unknown decorator 'bach'"),
    }
    assert len(found) == len(expected), found
    for line, column, message in expected:
        assert any((l, c) == (line, column) and message in m for l, c, m in found), \
            (line, column, message, found)


def test_spec_errors_carry_the_text_and_render_every_caret():
    text = "a : null | [ consle, nul ]"
    d = parse(text).definitions[0]
    with pytest.raises(SpecErrors) as info:
        validate_parts(d.source, d.sink, text)
    errs = info.value
    assert isinstance(errs, SpecError)  # callers catching SpecError see it too
    assert [(e.line, e.column) for e in errs.errors] == [(1, 14), (1, 22)]
    assert (errs.line, errs.column, errs.message) == (1, 14, errs.errors[0].message)
    rendered = errs.render().split("\n")
    assert len(rendered) == 6
    assert rendered[1] == rendered[4] == "  " + text
    assert rendered[2] == "  " + " " * 13 + "^"
    assert rendered[5] == "  " + " " * 21 + "^"


def test_validating_halves():
    # flumectl config gives the halves separately; either may be left out
    validate_parts(parse_source('tail("x")'), None)
    validate_parts(None, parse_sink("{ batch(10) => null }"))
    with pytest.raises(SpecErrors) as info:
        validate_parts(parse_source("tial"), parse_sink("consle"))
    assert [e.message.split(";")[0] for e in info.value.errors] == [
        "unknown source 'tial'", "unknown sink 'consle'"]


def test_build_raises_the_first_problem():
    with pytest.raises(SpecError) as info:
        build_sink(parse_sink('[ null, consle, text(1) ]'))
    assert not isinstance(info.value, SpecErrors)
    assert info.value.column == 9 and "consle" in info.value.message
    with pytest.raises(SpecError) as info:
        build_source(parse_source('tail("x", dlim="y")'))
    assert info.value.column == 16


def test_valid_specs_build():
    sink = build_sink(parse_sink('{ batch(10) => gzip => [ null, < null ? null > ] }'))
    assert sink is not None
    sink.close()
    source = build_source(parse_source('tail("x", delim="\\n\\n+", delimMode="exclude")'))
    assert source is not None


def test_a_constructor_failing_unexpectedly_is_a_spec_error_at_its_call(monkeypatch):
    from flume_og.node.sinks.console import ConsoleSink

    def broken(self, *args):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(ConsoleSink, "__init__", broken)
    assert problems("a : null | { batch(2) => console }") == []   # validating builds nothing
    with pytest.raises(SpecError) as ei:
        build_sink(parse_sink("{ batch(2) => console }"))
    assert (ei.value.line, ei.value.column, ei.value.message) == (
        1, 15, "console cannot be built: RecursionError: maximum recursion depth exceeded")
