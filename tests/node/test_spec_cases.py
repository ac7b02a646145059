"""The spec language against files of cases (tests/node/spec_cases/).

* ``valid/*.flume`` and ``og_guide/specs/*.flume``: whole specs that parse; each has a
  ``.canonical`` file with its canonical printed form, which must itself parse to the same
  tree and print identically.
* ``og_guide/sources|sinks/*.flume``: one source or sink half per line (``//`` lines and
  blank lines skipped), with a ``.canonical`` file holding one printed half per line.
* ``invalid/*.flume`` and ``og_guide/invalid/*.flume``: each paired with a ``.expected``
  file ``line:column: message substring``; a ``// parse: sink`` or ``// parse: source``
  line makes the case a half instead of a whole spec.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from flume_og.node.errors import SpecError
from flume_og.node.spec import (format_sink, format_source, format_spec, parse, parse_sink,
                                parse_source)

CASES = Path(__file__).parent / "spec_cases"


def _files(*dirs: str) -> list[Path]:
    out = sorted(p for d in dirs for p in (CASES / d).glob("*.flume"))
    assert out, f"no cases in {dirs}"
    return out


def _id(p: Path) -> str:
    return str(p.relative_to(CASES))


def _read(p: Path) -> str:
    # bytes -> str by hand: read_text() would translate line endings
    return p.read_bytes().decode("utf-8")


def _halves(p: Path) -> list[str]:
    return [line for line in _read(p).split("\n")
            if line.strip() and not line.lstrip().startswith("//")]


# ---------------------------------------------------------------- whole specs

@pytest.mark.parametrize("path", _files("valid", "og_guide/specs"), ids=_id)
def test_valid_spec_parses_to_its_canonical_form(path):
    text = _read(path)
    spec = parse(text)
    printed = format_spec(spec)
    assert printed == _read(path.with_suffix(".canonical"))
    again = parse(printed)
    assert again == spec
    assert format_spec(again) == printed
    # the number of definitions is the number of "name :" heads (counted on the printed
    # form, where every definition is one line)
    assert len(spec.definitions) == len(printed.splitlines())


@pytest.mark.parametrize("path", _files("valid", "og_guide/specs"), ids=_id)
def test_valid_spec_positions_point_into_the_text(path):
    text = _read(path)
    lines = text.split("\n")
    for d in parse(text).definitions:
        line, column = d.pos
        assert 1 <= line <= len(lines)
        head = lines[line - 1][column - 1:]
        assert head.startswith(d.name) or head.startswith('"'), (d.name, head)
        sline, scol = d.source.pos
        assert lines[sline - 1][scol - 1:].startswith(d.source.name)


def test_every_construct_has_a_valid_case():
    """The valid cases cover every construct of the spec language: keep them that way."""
    corpus = "\n".join(_read(p) for p in _files("valid"))
    for needle in ["=>", "[", "<", "?", "roll(", "trigger=size(", "collector(", "let ",
                   ":=", "//", "/*", "0x", "-42", "1e5", ".5", "true", "false", "\\u",
                   "\\\"", "web-01.example.com", '"node with spaces"', "=avro("]:
        assert needle in corpus, needle


# ---------------------------------------------------------------- halves

@pytest.mark.parametrize("kind", ["sources", "sinks"])
def test_og_guide_halves_parse_to_their_canonical_form(kind):
    parse_half, fmt = ((parse_source, format_source) if kind == "sources"
                       else (parse_sink, format_sink))
    for path in _files(f"og_guide/{kind}"):
        halves = _halves(path)
        expected = _read(path.with_suffix(".canonical")).splitlines()
        assert len(halves) == len(expected), path
        for text, canonical in zip(halves, expected):
            tree = parse_half(text)
            assert fmt(tree) == canonical, (path.name, text)
            assert parse_half(canonical) == tree


def test_og_guide_sources_are_not_sinks_with_decorators():
    """Sources are single components: a source half never holds a sink construct."""
    for path in _files("og_guide/sources"):
        for text in _halves(path):
            assert not re.search(r"[\[\]{}<>?]|=>", text.replace('"</a>"', "")), text


# ---------------------------------------------------------------- invalid

@pytest.mark.parametrize("path", _files("invalid", "og_guide/invalid"), ids=_id)
def test_invalid_case_reports_position_and_message(path):
    text = _read(path)
    expected = _read(path.with_suffix(".expected")).strip()
    m = re.fullmatch(r"(\d+):(\d+): (.+)", expected)
    assert m, f"bad .expected file for {path.name}: {expected!r}"
    line, column, message = int(m.group(1)), int(m.group(2)), m.group(3)
    mode = re.search(r"^// parse: (spec|sink|source)$", text, re.M)
    parse_it = {"sink": parse_sink, "source": parse_source}.get(mode and mode.group(1), parse)
    with pytest.raises(SpecError) as info:
        parse_it(text)
    err = info.value
    assert (err.line, err.column) == (line, column), err.render()
    assert message in err.message, err.render()
    # the rendering shows the offending line with a caret under the column
    rendered = err.render().split("\n")
    assert rendered[0] == f"spec error at line {line}, column {column}: {err.message}"
    src_line = text.split("\n")[line - 1]
    assert rendered[1] == "  " + src_line.rstrip("\r").replace("\t", " ")
    assert rendered[2] == "  " + " " * (column - 1) + "^"


def test_invalid_cases_each_carry_an_explanation():
    for path in _files("invalid", "og_guide/invalid"):
        assert _read(path).startswith("//"), f"{path.name}: say why it is invalid"
