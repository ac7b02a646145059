"""Spec regexes on RE2 (node/regexes.py): linear-time matching, refused constructs named,
byte-exact offsets on any body."""
from __future__ import annotations

import time

import pytest

from flume_og.node.errors import SpecErrors
from flume_og.node.logical_node import LogicalNode
from flume_og.node.regexes import compile_bytes, compile_text
from flume_og.node.builder import validate_parts
from flume_og.node.sinks import collect
from flume_og.node.sources import memory
from flume_og.node.sources._files import compile_fileregex
from flume_og.node.sources.tail import Splitter
from flume_og.node.spec import parse_sink, parse_source
from tests.waiting import wait_until

EVIL = "(a+)+$"          # Python's re: about 4 s at 25 characters, doubling per character


def test_catastrophic_pattern_runs_in_linear_time_through_a_real_flow(tmp_path):
    collect.reset("redos")
    node = LogicalNode("n", tmp_path)
    node.configure(parse_source('memory("redos")'), parse_sink(
        f'{{ regex("{EVIL}", 1, "x") => regexAll("{EVIL}", "y") => split("{EVIL}", 0, "z") '
        f'=> collect("redos") }}'))
    lines = [b"a" * 29 + b"!", b"a" * 10_000 + b"!", b"b" + b"a" * 10_000]
    started = time.monotonic()
    memory.push("redos", lines)
    got = wait_until(lambda: len(collect.collected("redos")) == 3 and collect.collected("redos"),
                     timeout=5)
    elapsed = time.monotonic() - started
    node.stop(10)
    assert elapsed < 1.0, elapsed
    assert [e.attrs["x"] for e in got] == [b"", b"", b"a" * 10_000]
    assert [e.attrs.get("y") for e in got] == [None, None, b"a" * 10_000]
    assert [e.attrs["z"] for e in got] == [lines[0], lines[1], b"b"]


def test_catastrophic_delimiter_and_fileregex_are_linear_too():
    started = time.monotonic()
    recs, _, rest = Splitter("(x+)+y", "exclude").split(b"x" * 20_000 + b"\n", eof=True)
    assert (recs, rest) == ([], b"x" * 20_000 + b"\n")
    assert not compile_fileregex(EVIL)("a" * 5_000 + "!")
    assert compile_fileregex(EVIL)("a" * 5_000)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("sink, column, why", [
    ('{ regex("(a)\\\\1", 1, "x") => null }', 3, "backreferences are not supported"),
    ('{ regexAll("a(?=b)", "x") => null }', 3, "lookahead (?=...) is not supported"),
    ('{ split("(?<=,)", 0, "x") => null }', 3, "lookbehind (?<=...) is not supported"),
    ('{ regex("a*+", 0, "x") => null }', 3, "possessive quantifiers are not supported"),
    ('{ regex("a\\\\Z", 0, "x") => null }', 3, "write the end of the text as \\z"),
])
def test_constructs_re2_refuses_are_spec_errors_naming_them(sink, column, why):
    with pytest.raises(SpecErrors) as info:
        validate_parts(None, parse_sink(sink), sink)
    [err] = info.value.errors
    assert (err.line, err.column) == (1, column)
    assert why in err.message and "RE2" in err.message


@pytest.mark.parametrize("source, what", [
    ('tail("/x", delim="(?!\\\\n)")', "delim"),
    ('tailDir("/x", fileregex="(\\\\w)\\\\1")', "fileregex"),
    ('spoolDir("/x", fileregex="(?<!x)log")', "fileregex"),
])
def test_source_patterns_re2_refuses_are_spec_errors(source, what):
    with pytest.raises(SpecErrors) as info:
        validate_parts(parse_source(source), None, source)
    assert what in info.value.message and "not supported" in info.value.message


def test_offsets_are_exact_bytes_of_bodies_that_are_not_utf8():
    rx = compile_text("b(.)c(d+)$")
    m = rx.search(b"\xffa\xfe\xffb\xc3\xa9cdd")
    assert m.group(0) == b"b\xc3\xa9cdd" and m.groups() == (b"\xc3\xa9", b"dd")
    m = rx.search(b"ab\xffcd")                    # an undecodable byte is one character
    assert m.group(1) == b"\xff" and m.span() == (1, 5)
    assert compile_text("[^,]+").search(b"\xe9\xff,x").group() == b"\xe9\xff"
    assert compile_text("(x)|(y)").search(b"\xffy").groups() == (None, b"y")


def test_empty_matches_never_fall_inside_a_character():
    cuts = [m.span() for m in compile_text("x*").finditer("é€".encode())]
    assert cuts == [(0, 0), (2, 2), (5, 5)]


def test_text_patterns_match_characters_and_byte_patterns_bytes():
    assert compile_text("^.$").search("é".encode())
    assert not compile_bytes("^.$").search("é".encode())
    assert compile_bytes("é").search(b"caf\xc3\xa9").span() == (3, 5)
    assert compile_text(r"\w+").search("café".encode()).group() == b"caf"   # ASCII, as Java
    assert compile_text(r"\pL+").search("café".encode()).group() == "café".encode()


def test_a_pattern_too_big_for_its_memory_bound_is_refused():
    with pytest.raises(ValueError, match="not a usable regular expression"):
        compile_text("((a{100}){100}){100}")
