"""Targeted unit tests of the spec language (node/spec.py, SpecError rendering)."""
from __future__ import annotations

import pytest

from flume_og.node.cli import load_checked_spec
from flume_og.node.errors import MAX_MESSAGE_CHARS, MAX_SHOWN, QUOTE_CHARS, SpecError, SpecErrors
from flume_og.node.builder import validate_parts
from flume_og.node.spec import (MAX_COMPONENTS, MAX_DEPTH, MAX_SPEC_CHARS, Call, Decorated, Definition,
                                Failover, FanOut, Func, Let, Lit, Spec, format_sink, format_spec,
                                format_value, parse, parse_sink, parse_source, quote, unescape,
                                walk_calls)


def error_of(fn, text) -> SpecError:
    with pytest.raises(SpecError) as info:
        fn(text)
    return info.value


# ---------------------------------------------------------------- caret rendering

def test_render_unexpected_character_exactly():
    err = error_of(parse, 'a : null | null ;\nb :\ttail("x") $ null ;')
    assert err.render() == (
        "spec error at line 2, column 15: unexpected character '$'\n"
        '  b : tail("x") $ null ;\n'
        "                ^")
    assert str(err) == err.render()
    assert err.to_dict() == {"message": "unexpected character '$'", "line": 2, "column": 15}


def test_render_end_of_spec_exactly():
    err = error_of(parse, 'a : tail("x") | text(\n\n')
    assert err.render() == (
        "spec error at line 1, column 22: unexpected end of spec, expected ')' or 'false' or "
        "'true' or a name or a number or a string\n"
        '  a : tail("x") | text(\n'
        "                       ^")


def test_render_unterminated_string_exactly():
    err = error_of(parse_sink, '[ console,\n  text("out) ]')
    assert err.render() == (
        "spec error at line 2, column 8: unterminated string (a string must end with \" on "
        "the same line)\n"
        '    text("out) ]\n'
        "         ^")


def test_render_without_text_or_position():
    assert SpecError("boom").render() == "spec error: boom"
    assert SpecError("boom", 3, 4).render() == "spec error at line 3, column 4: boom"
    # a line beyond the text: just the head
    assert SpecError("boom", 9, 1, "a\nb").render() == "spec error at line 9, column 1: boom"


def test_a_long_line_is_quoted_around_the_column_only():
    # one line of 20,000 characters: every error used to quote all of it
    line = "".join(f"a{i}: null | null; " for i in range(1000)) + "b: null | nosink;"
    err = error_of(lambda t: validate_parts(None, parse(t).definitions[-1].sink, t), line)
    head, src, caret = err.render().split("\n")
    assert head.endswith("unknown sink 'nosink'")
    assert src.startswith("  …") and len(src) <= 2 + QUOTE_CHARS + 1
    assert src[caret.index("^"):].startswith("nosink")
    middle = error_of(parse, "x" * 5000 + " $ " + "y" * 5000)
    _, src, caret = middle.render().split("\n")
    assert src.startswith("  …") and src.endswith("…") and len(src) == 2 + QUOTE_CHARS + 2
    assert src[caret.index("^")] == "$"
    start = error_of(parse, "$" + "y" * 5000)
    _, src, caret = start.render().split("\n")
    assert src == "  $" + "y" * (QUOTE_CHARS - 1) + "…" and caret == "  ^"


def test_many_errors_show_the_first_twenty_and_messages_are_bounded():
    text = "".join(f"a{i}: nosuch{i} | null;\n" for i in range(100))
    with pytest.raises(SpecErrors) as info:
        load_checked_spec(text)
    shown = info.value.render().split("\n")
    assert len(shown) == 3 * MAX_SHOWN + 1
    assert shown[-1] == f"... and {100 - MAX_SHOWN} more problems (the first 20 are shown)"
    long = SpecError("unknown sink '" + "n" * 100_000 + "'", 1, 1)
    assert len(long.message) == MAX_MESSAGE_CHARS + 1 and long.message.endswith("…")
    assert len(long.render()) < MAX_MESSAGE_CHARS + 100


def test_lines_are_counted_like_the_parser_counts_them():
    # \f, \x1c and U+2028 are line breaks for str.splitlines() but not for the parser
    for sep in ["\f", "\x1c", "\u2028", "\x85"]:
        text = f'a : text("x{sep}y") | null ;\nb : null | null $'
        err = error_of(parse, text)
        assert (err.line, err.column) == (2, 17)
        assert err.render().split("\n")[1:] == ["  b : null | null $",
                                                "  " + " " * 16 + "^"]


def test_crlf_line_endings():
    text = 'a : null | null ;\r\nb : null |\r\n  [ x, y ] ;\r\nc : null | $ ;\r\n'
    err = error_of(parse, text)
    assert (err.line, err.column) == (4, 12)
    assert err.render().split("\n")[1] == "  c : null | $ ;"
    spec = parse(text.replace("$", "z"))
    assert [d.name for d in spec.definitions] == ["a", "b", "c"]
    assert spec.definitions[1].sink.pos == (3, 3)


def test_end_of_spec_is_reported_after_the_last_word():
    err = error_of(parse, "a : null |   \n   \n\n")
    assert (err.line, err.column) == (1, 11)
    err = error_of(parse, "a : null | // a comment\n")
    assert (err.line, err.column) == (1, 24)


# ---------------------------------------------------------------- literals

def test_hex_and_octal_are_ints():
    c = parse_source("s(0x1F, 0XFF, 0xdeadBEEF, -0x10, 010, -017, 0, 00, 7)")
    assert [a.value for a in c.args] == [31, 255, 0xDEADBEEF, -16, 8, -15, 0, 0, 7]
    assert {a.kind for a in c.args} == {"int"}
    assert format_value(c.args[0]) == "31"


def test_number_kinds_are_distinct():
    c = parse_source("s(1, 1.0, true, 1e0, 0, false)")
    assert [(a.value, a.kind) for a in c.args] == [
        (1, "int"), (1.0, "float"), (True, "bool"), (1.0, "float"), (0, "int"),
        (False, "bool")]
    assert c.args[0] != c.args[1] and c.args[0] != c.args[2] and c.args[4] != c.args[5]
    assert c.args[1] == c.args[3]


def test_floats_and_infinity():
    c = parse_source("s(1.5, 1., .5, -0.25, 1e5, 1E-3, -2.5e+3, 1e999, -1e999)")
    assert [a.value for a in c.args] == [1.5, 1.0, 0.5, -0.25, 1e5, 1e-3, -2500.0,
                                          float("inf"), float("-inf")]
    assert format_value(c.args[7]) == "1e999" and format_value(c.args[8]) == "-1e999"
    assert parse_source(format_sink(c)) == c


def test_huge_numbers():
    err = error_of(parse_source, "s(" + "9" * 5000 + ")")
    assert err.column == 3 and "too long" in err.message
    # a huge hex parses, and prints in a form that reads back
    c = parse_source("s(0x" + "f" * 5000 + ")")
    assert parse_source(format_sink(c)) == c


def test_string_escapes():
    c = parse_source(r's("a\tb\nc\rd", "\"q\" \'s\' \\", "\u00e9\U0001F600\x41", '
                     r'"\b\f\0", "\d+\s", "", "tab	raw ✓")')
    assert [a.value for a in c.args] == [
        "a\tb\nc\rd", "\"q\" 's' \\", "é😀A", "\b\f\0", "\\d+\\s", "", "tab\traw ✓"]
    assert {a.kind for a in c.args} == {"string"}


def test_unescape_and_quote_are_inverse():
    for s in ["", "plain", 'q"uo"te', "back\\slash\\", "\n\t\r\0\x1b\x7f", "é😀",
              "\ud800 lone surrogate", "\\d", "\\"]:
        q = quote(s)
        assert "\n" not in q
        assert unescape(q[1:-1]) == s
        assert parse_source(f"s({q})").args[0].value == s


def test_bad_escape_has_position():
    err = error_of(parse_sink, 'text("ok", "\\U0011FFFF")')
    assert (err.line, err.column) == (1, 12)
    assert "bad escape" in err.message


def test_functions_and_keywords():
    c = parse_sink('dfs("p", json, seqfile("bzip2"), format=avro(codec=deflate(6)), n=-3)')
    assert c.args == (Lit("p", "string"), Func("json"),
                      Func("seqfile", (Lit("bzip2", "string"),)))
    deflate = Func("deflate", (Lit(6, "int"),))
    assert c.kwargs == (("format", Func("avro", (), (("codec", deflate),))),
                        ("n", Lit(-3, "int")))
    # a bare name, an empty argument list and no argument list are the same function
    assert parse_sink("c(f)") == parse_sink("c(f())")
    assert parse_sink("c") == parse_sink("c()") == Call("c")


def test_keyword_order_is_kept_and_positions_recorded():
    c = parse_sink('c(b=1,\n  a="x")')
    assert [k for k, _ in c.kwargs] == ["b", "a"]
    assert c.kwarg_pos("a") == (2, 5)
    assert c.kwarg_pos("b") == (1, 5)
    assert c.kwarg_pos("missing") == c.pos == (1, 1)


def test_positional_after_keyword_and_duplicate_keyword():
    err = error_of(parse_sink, 'c(a=1, 2)')
    assert (err.line, err.column) == (1, 8) and "positional argument" in err.message
    err = error_of(parse_sink, 'c(a=1, b=2, a=3)')
    assert (err.line, err.column) == (1, 13) and "'a' given twice" in err.message
    err = error_of(parse_sink, 'c(f(a=1, a=2))')
    assert (err.line, err.column) == (1, 10)


# ---------------------------------------------------------------- sink structure

def test_decorator_spellings_are_one_tree():
    expected = Decorated(Call("a"), Decorated(Call("b"), Call("s")))
    for text in ["{ a => b => s }", "a b s", "{ a => { b => s } }", "a { b => s }",
                 "{ a => b s }", "{a=>b=>s}", "a() b() s()"]:
        tree = parse_sink(text)
        assert tree == expected, text
        assert format_sink(tree) == "{ a => b => s }"


def test_decorator_arguments_and_positions():
    tree = parse_sink('{ batch(100) =>\n  gzip => text("x") }')
    assert tree.deco == Call("batch", (Lit(100, "int"),))
    assert tree.pos == (1, 3) and tree.inner.pos == (2, 3)
    assert tree.inner.inner.pos == (2, 11)


def test_roll_prints_canonically():
    expected = Decorated(Call("roll", (Lit(1000, "int"),)), Call("s"))
    for text in ["roll(1000) { s }", "roll(1000) s", "{ roll(1000) => s }", "roll(1000){s}"]:
        tree = parse_sink(text)
        assert tree == expected, text
        assert format_sink(tree) == "roll(1000) { s }"
    tree = parse_sink("roll(1000, trigger=size(1000000)) { batch(10) s }")
    assert format_sink(tree) == "roll(1000, trigger=size(1000000)) { { batch(10) => s } }"
    assert parse_sink(format_sink(tree)) == tree
    assert format_sink(parse_sink("collector(30000) { [ a, b ] }")) == \
        "collector(30000) { [ a, b ] }"
    # a roll inside a decorator chain keeps its own braces
    assert format_sink(parse_sink("batch(2) roll(5) s")) == "{ batch(2) => roll(5) { s } }"


def test_fanout_failover_let():
    tree = parse_sink('[ a, < b ? c ? d >, let x := e in [ x, x ] ]')
    assert tree == FanOut((Call("a"), Failover((Call("b"), Call("c"), Call("d"))),
                           Let("x", Call("e"), FanOut((Call("x"), Call("x"))))))
    assert format_sink(tree) == "[ a, < b ? c ? d >, let x := e in [ x, x ] ]"
    assert [c.name for c in walk_calls(tree)] == ["a", "b", "c", "d", "e", "x", "x"]


def test_walk_calls_includes_decorators():
    tree = parse_sink("{ batch(1) => [ gzip a, roll(5) { b } ] }")
    assert [c.name for c in walk_calls(tree)] == ["batch", "gzip", "a", "roll", "b"]


# ---------------------------------------------------------------- halves

def test_parse_source():
    assert parse_source('  tail("f", startFromEnd=true) // c\n') == Call(
        "tail", (Lit("f", "string"),), (("startFromEnd", Lit(True, "bool")),))
    assert parse_source("console") == Call("console")
    for bad, col in [("a | b", 3), ("[ a ]", 1), ("batch(1) a", 10), ("a : b | c", 3),
                     ("", 1), ("a b", 3)]:
        assert error_of(parse_source, bad).column == col, bad


def test_parse_sink():
    assert parse_sink("null") == Call("null")
    assert parse_sink("/* c */ [ a ] // d") == FanOut((Call("a"),))
    for bad, col in [("a : b | c", 3), ("a | b", 3), ("", 1), ("[ a ] b", 7), ("a ;", 3)]:
        assert error_of(parse_sink, bad).column == col, bad


def test_a_spec_must_be_text():
    for fn in (parse, parse_source, parse_sink):
        err = error_of(fn, b"a : b | c")
        assert "text" in err.message


# ---------------------------------------------------------------- whole specs

def test_definitions_and_names():
    spec = parse('a : b | c ;; "x y" : d | e\n;\n10.1.2.3 : f | g ; web-1.example.com : h | i')
    assert [d.name for d in spec.definitions] == ["a", "x y", "10.1.2.3", "web-1.example.com"]
    assert isinstance(spec.definitions[0], Definition)
    assert spec.definitions[2].pos == (3, 1)
    assert set(spec.by_name()) == {"a", "x y", "10.1.2.3", "web-1.example.com"}
    assert parse("") == parse("  // nothing\n /* */ ;;") == Spec(())


def test_names_that_are_keywords_are_quoted_when_printed():
    spec = parse('"let" : in | null ; "true" : let | null ; "a b" : x | y')
    printed = format_spec(spec)
    assert printed == ('"let" : in | null ;\n"true" : let | null ;\n"a b" : x | y ;\n')
    assert parse(printed) == spec


def test_trees_ignore_positions():
    assert parse("a:b|c") == parse("\n\n  a :\n b |   c  ;")
    assert parse("a:b|c").definitions[0].pos != parse("\n a:b|c").definitions[0].pos


def _nested(kind: str, levels: int) -> str:
    """A sink half nesting ``levels`` levels deep through one kind of construct."""
    n = levels - 1
    return {
        "braced": "{ " + "batch(1) => " * n + "null }",
        "spaced": "batch(1) " * n + "null",
        "fanout": "[ " * n + "null" + " ]" * n,
        "failover": "< " * n + "null" + " >" * n,
        "let": "let x := null in " * n + "null",
        "roll": "roll(1000) { " * n + "null" + " }" * n,
        "function": "{ value(\"k\", " + "f(" * (n - 1) + "1" + ")" * (n - 1) + ") => null }",
    }[kind]


KINDS = ("braced", "spaced", "fanout", "failover", "let", "roll", "function")


def _use_stack(frames: int, fn):
    """Call ``fn`` with ``frames`` frames already on the stack (a server thread's depth)."""
    return fn() if frames == 0 else _use_stack(frames - 1, fn)


@pytest.mark.parametrize("kind", KINDS)
def test_nesting_up_to_the_limit_goes_through_every_recursive_path(kind):
    text = _nested(kind, MAX_DEPTH)
    tree = _use_stack(500, lambda: parse_sink(text))
    printed = _use_stack(500, lambda: format_sink(tree))
    assert _use_stack(500, lambda: parse_sink(printed) == tree)
    assert _use_stack(500, lambda: hash(tree) == hash(parse_sink(printed)))
    assert len(_use_stack(500, lambda: list(walk_calls(tree)))) >= 1


@pytest.mark.parametrize("kind, levels", [(k, n) for k in KINDS for n in (MAX_DEPTH + 1, 1000)]
                         + [("fanout", 10_000), ("function", 10_000)])
def test_nesting_past_the_limit_is_a_spec_error_at_the_first_construct_past_it(kind, levels):
    text = _nested(kind, levels)
    err = error_of(parse_sink, text)
    assert "nests too deeply" in err.message and f"more than {MAX_DEPTH}" in err.message
    # the caret is under the first construct past the limit: the level of the construct
    # there, counted from the text before it, is MAX_DEPTH + 1
    assert err.line == 1
    before = text[:err.column - 1]
    level = {"braced": before.count("=>") + 2,      # the braces, each decorator
             "spaced": before.count(" ") + 2,       # the first chain, each decorator
             "fanout": before.count("[") + 1, "failover": before.count("<") + 1,
             "let": before.count("let") + 1,        # the value of the innermost let
             "roll": before.count("{") + 2,         # roll's own call inside its Decorated
             "function": before.count("(") + 2}[kind]
    assert level == MAX_DEPTH + 1, (level, before[-40:])
    err = error_of(parse, f"a : null | {text} ;")
    assert "nests too deeply" in err.message and err.text is not None


def test_deep_definitions_are_checked_one_by_one_and_by_position():
    ok = _nested("fanout", MAX_DEPTH)
    err = error_of(parse, f"a : null | {ok} ;\nb : null | {_nested('fanout', MAX_DEPTH + 1)}")
    assert (err.line, err.column) == (2, len("b : null | ") + 2 * MAX_DEPTH + 1)


def test_component_count_is_bounded_per_definition():
    wide = "[ " + ", ".join(["null"] * (MAX_COMPONENTS - 1)) + " ]"
    spec = parse(f"a : null | {wide} ;\nb : null | {wide} ;")   # the source is one
    assert len(list(walk_calls(spec.definitions[1].sink))) == MAX_COMPONENTS - 1
    err = error_of(parse, f"a : null | {wide[:-2]}, console ]")
    assert f"more than {MAX_COMPONENTS} components" in err.message
    assert err.column == len(f"a : null | {wide[:-2]}, ") + 1
    err = error_of(parse_sink, "[ " + ", ".join(["null"] * 5000) + " ]")
    assert f"more than {MAX_COMPONENTS} components" in err.message


def test_spec_text_length_is_bounded():
    parse_sink("null" + " " * (MAX_SPEC_CHARS - 4))
    err = error_of(parse_sink, "null\n" + " " * MAX_SPEC_CHARS)
    assert f"longer than {MAX_SPEC_CHARS} characters" in err.message
    assert (err.line, err.column) == (2, MAX_SPEC_CHARS - 5 + 1)
