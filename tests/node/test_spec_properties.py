"""Property tests of the spec language.

(a) Round trip: random spec trees print to text that parses back to the same tree, and the
    canonical text is a fixed point: ``print(parse(print(t))) == print(t)``.
(b) Fuzz: random text and mutations of valid specs never raise anything but SpecError, and
    every SpecError points inside the text and renders.

Trees compare without positions by design. Names are drawn from the NAME token's language,
minus the words the grammar reserves where they would be read as keywords: a sink or
decorator cannot be called ``let``, a function or keyword argument cannot be ``true`` or
``false`` (the parser cannot produce such trees either).
"""
from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flume_og.node.errors import SpecError
from flume_og.node.spec import (Call, Decorated, Definition, Failover, FanOut, Func, Let, Lit, Spec,
                                format_sink, format_source, format_spec, parse, parse_sink,
                                parse_source)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEYWORDS = ("let", "in", "true", "false", "roll", "collector")
_FIRST = "abcxyzABCZ_"
_REST = "abz019_"


@st.composite
def _name(draw):
    """A word of the NAME token: [A-Za-z_][A-Za-z0-9_]*([.-][A-Za-z0-9_]+)*"""
    out = draw(st.sampled_from(_FIRST)) + draw(st.text(_REST, max_size=4))
    for _ in range(draw(st.integers(0, 2))):
        out += draw(st.sampled_from(".-")) + draw(st.text(_REST, min_size=1, max_size=3))
    return out


def names(exclude=()):
    return st.one_of(_name(), st.sampled_from(KEYWORDS)).filter(lambda n: n not in exclude)


# ---------------------------------------------------------------- tree strategies

ints = st.one_of(st.integers(-1000, 1000), st.integers(-(10 ** 40), 10 ** 40))
floats = st.floats(allow_nan=False)  # includes inf, -inf, -0.0 and subnormals
any_chars = st.characters(exclude_categories=())  # surrogates and control chars included
strings = st.one_of(
    st.text(any_chars, max_size=8),
    st.text(st.sampled_from('"\\\n\t\r\0\x7f\x85\u2028é😀 /*/'), max_size=8))

lits = st.one_of(
    ints.map(lambda v: Lit(v, "int")),
    floats.map(lambda v: Lit(v, "float")),
    st.booleans().map(lambda v: Lit(v, "bool")),
    strings.map(lambda v: Lit(v, "string")))

VALUE_NAMES = names(exclude=("true", "false"))


def _with_args(ctor, name_strategy, values):
    @st.composite
    def build(draw):
        name = draw(name_strategy)
        args = tuple(draw(st.lists(values, max_size=2)))
        keys = draw(st.lists(VALUE_NAMES, max_size=2, unique=True))
        kwargs = tuple((k, draw(values)) for k in keys)
        return ctor(name, args, kwargs)
    return build()


values = st.recursive(lits, lambda inner: _with_args(Func, VALUE_NAMES, inner), max_leaves=3)
source_calls = _with_args(Call, names(), values)
sink_calls = _with_args(Call, names(exclude=("let",)), values)


def _extend(children):
    branches = st.lists(children, min_size=1, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Decorated, sink_calls, children),
        branches.map(FanOut),
        branches.map(Failover),
        st.builds(Let, names(), children, children))


sinks = st.recursive(sink_calls, _extend, max_leaves=5)
node_names = st.one_of(names(), st.text(any_chars, min_size=1, max_size=10),
                       st.lists(st.integers(0, 999), min_size=4, max_size=4).map(
                           lambda parts: ".".join(map(str, parts))))
definitions = st.builds(Definition, node_names, source_calls, sinks)
specs = st.lists(definitions, max_size=2).map(lambda ds: Spec(tuple(ds)))


# ---------------------------------------------------------------- (a) round trip

@SETTINGS
@given(specs)
def test_round_trip(spec):
    text = format_spec(spec)
    parsed = parse(text)
    assert parsed == spec
    assert format_spec(parsed) == text
    for d in spec.definitions:  # the halves, as flumectl config gives them
        sink_text, source_text = format_sink(d.sink), format_source(d.source)
        assert parse_sink(sink_text) == d.sink
        assert format_sink(parse_sink(sink_text)) == sink_text
        assert parse_source(source_text) == d.source


# ---------------------------------------------------------------- (b) fuzz

def _check_error(err: SpecError, text: str) -> None:
    assert err.line is not None and err.line >= 1
    assert err.column is not None and err.column >= 1
    lines = text.split("\n")
    assert err.line <= len(lines), (err.line, len(lines))
    assert err.column <= len(lines[err.line - 1]) + 1, (err.render(), err.column)
    rendered = err.render()
    assert rendered.startswith(f"spec error at line {err.line}, column {err.column}: ")
    if text:
        assert rendered.endswith("^")
    assert err.to_dict()["line"] == err.line


def _parse_all_ways(text: str) -> None:
    for fn, fmt in ((parse, format_spec), (parse_sink, format_sink),
                    (parse_source, format_source)):
        try:
            tree = fn(text)
        except SpecError as err:
            _check_error(err, text)
        else:
            # whatever parses has a canonical form that parses back to the same tree
            assert fn(fmt(tree)) == tree


CASES = Path(__file__).parent / "spec_cases"
SEEDS = sorted(p.read_bytes().decode() for d in ("valid", "og_guide/specs")
               for p in (CASES / d).glob("*.flume"))
SEEDS += ['a : b | c', 'x : tail("f", k=1.5e3) | roll(10, trigger=size(5)) { s }',
          'n : s | let z := [ a ? b ] in < z ? { d => z } >']

SPEC_ALPHABET = st.sampled_from(list('ab_xyz019.-:|;,()[]{}<>?=>"\\/*\n\t \r') +
                                ["let", "in", "true", "0x", "1e", "é", "\u2028", "\f"])


@SETTINGS
@given(st.text(max_size=60))
def test_fuzz_random_text(text):
    _parse_all_ways(text)


@SETTINGS
@given(st.lists(SPEC_ALPHABET, max_size=40).map("".join))
def test_fuzz_spec_like_text(text):
    _parse_all_ways(text)


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]))
        i = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:i] + draw(SPEC_ALPHABET | st.characters()) + text[i:]
        elif op == "delete":
            j = draw(st.integers(i, min(len(text), i + 5)))
            text = text[:i] + text[j:]
        elif op == "replace" and i < len(text):
            text = text[:i] + draw(SPEC_ALPHABET | st.characters()) + text[i + 1:]
        elif op == "truncate":
            text = text[:i]
        elif op == "duplicate":
            j = draw(st.integers(i, min(len(text), i + 20)))
            text = text[:j] + text[i:j] + text[j:]
    return text


@SETTINGS
@given(mutated())
def test_fuzz_mutated_specs(text):
    _parse_all_ways(text)
