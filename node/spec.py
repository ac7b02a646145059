"""The dataflow spec language (docs/spec-language.md): text -> immutable tree -> canonical text.

Pure: no I/O, no component knowledge. The grammar is an LALR grammar run by Lark, which
gives every node its line and column; errors become :class:`SpecError` with the position.

The tree is made of frozen dataclasses; positions are excluded from equality so that
``parse(print(parse(s))) == parse(s)`` holds. Decorators of both spellings, ``roll`` and
``collector`` all become :class:`Decorated` nodes: ``{ a => b => s }``, ``a b s`` and
``a { b => s }`` are the same tree.

Bounds: a spec text holds at most ``MAX_SPEC_CHARS`` characters, nests at most
``MAX_DEPTH`` levels (decorators, braces, fan-outs, failovers, ``let`` and function arguments
each add one) and a definition (or a source or sink half) holds at most ``MAX_COMPONENTS``
component calls. They are checked on Lark's parse tree without recursion, before anything
that recurses (the transformer, the printer, hashing, the builder) sees it; past a bound the
parse raises SpecError at the first construct beyond it. Within them, every recursive walk
of the tree stays far below Python's recursion limit.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Union

import lark
from lark import Lark, Token, Transformer, v_args

from .errors import SpecError

GRAMMAR = r"""
start: _SEMI* (definition (_SEMI+ definition)* _SEMI*)?
source_only: call
sink_only: sink

definition: nodename ":" call "|" sink
nodename: NAME | STRING | IPADDR

?sink: call sink            -> decorated
     | primary
?primary: call
        | "[" sink ("," sink)* "]"           -> fanout
        | "<" sink ("?" sink)* ">"           -> failover
        | "{" (call "=>")* sink "}"          -> braced
        | "let" NAME ":=" sink "in" sink     -> let

call: NAME ("(" [arglist] ")")?
arglist: arg ("," arg)*
?arg: value
    | NAME "=" value        -> kwarg
?value: STRING              -> string
      | FLOAT               -> float
      | HEX                 -> hex
      | INT                 -> int
      | "true"              -> true
      | "false"             -> false
      | NAME ("(" [arglist] ")")?   -> func

_SEMI: ";"
NAME: /[A-Za-z_][A-Za-z0-9_]*(?:[.\-][A-Za-z0-9_]+)*/
STRING: /"(?:[^"\\\n]|\\.)*"/
FLOAT.3: /-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)/
HEX.2: /-?0[xX][0-9a-fA-F]+/
INT: /-?\d+/
IPADDR: /\d+\.\d+\.\d+\.\d+/
COMMENT: /\/\/[^\n]*/ | /\/\*(.|\n)*?\*\//
%import common.WS
%ignore WS
%ignore COMMENT
"""

Pos = tuple  # (line, column), both 1-based


def _pos() -> tuple:
    return field(default=(0, 0), compare=False, repr=False)


@dataclass(frozen=True)
class Lit:
    """A literal argument. ``kind`` is one of string, int, float, bool (so 1 != true)."""
    value: object
    kind: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class Func:
    """A function used as a value: ``json``, ``seqfile("bzip2")``, ``size(1000)``."""
    name: str
    args: tuple = ()
    kwargs: tuple = ()  # ((key, value), ...) in the order written
    pos: Pos = _pos()


Value = Union[Lit, Func]


@dataclass(frozen=True)
class Call:
    """A component: ``name``, ``name()`` or ``name(arg, ..., key=value)``."""
    name: str
    args: tuple = ()
    kwargs: tuple = ()
    pos: Pos = _pos()

    def kwarg_pos(self, key: str) -> Pos:
        for k, v in self.kwargs:
            if k == key:
                return v.pos
        return self.pos


@dataclass(frozen=True)
class Decorated:
    """``deco`` applied to ``inner`` (decorators, ``roll``, ``collector``, ``balance``)."""
    deco: Call
    inner: "SinkNode"
    pos: Pos = _pos()


@dataclass(frozen=True)
class FanOut:
    branches: tuple
    pos: Pos = _pos()


@dataclass(frozen=True)
class Failover:
    branches: tuple
    pos: Pos = _pos()


@dataclass(frozen=True)
class Let:
    name: str
    value: "SinkNode"
    body: "SinkNode"
    pos: Pos = _pos()


SinkNode = Union[Call, Decorated, FanOut, Failover, Let]


@dataclass(frozen=True)
class Definition:
    """``name : source | sink``."""
    name: str
    source: Call
    sink: SinkNode
    pos: Pos = _pos()


@dataclass(frozen=True)
class Spec:
    definitions: tuple

    def by_name(self) -> dict[str, Definition]:
        return {d.name: d for d in self.definitions}


# ---------------------------------------------------------------- parsing

MAX_SPEC_CHARS = 1 << 20  # characters of spec text (a ZooKeeper znode holds 1 MiB)
MAX_DEPTH = 64            # nesting levels; real specs use fewer than 10
MAX_COMPONENTS = 1000     # component calls per definition (or per source or sink half)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0",
            '"': '"', "'": "'", "\\": "\\"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|.)", re.S)


def unescape(body: str) -> str:
    """Decode the escapes of a string literal. Unknown escapes keep their backslash, so
    regexes such as ``"\\d+"`` and ``"\\d+"`` written either way mean what users expect."""
    def repl(m: re.Match) -> str:
        esc = m.group(1)
        if esc[0] in "uUx" and len(esc) > 1:
            return chr(int(esc[1:], 16))
        return _ESCAPES.get(esc, "\\" + esc)
    return _ESCAPE_RE.sub(repl, body)


def _tokpos(tok: Token) -> Pos:
    return (tok.line, tok.column)


@v_args(inline=True)
class _ToTree(Transformer):
    def string(self, tok):
        try:
            return Lit(unescape(tok[1:-1]), "string", _tokpos(tok))
        except (ValueError, OverflowError) as exc:
            raise SpecError(f"bad escape in string {tok}: {exc}", tok.line, tok.column)

    def int(self, tok):
        digits = tok.lstrip("-")
        try:
            if len(digits) > 1 and digits[0] == "0":
                # OG read a leading 0 as octal (Java literals): keep 010 == 8
                if not set(digits) <= set("01234567"):
                    raise SpecError(f"bad octal number {tok} (a leading 0 means octal)",
                                    tok.line, tok.column)
                return Lit(int(tok, 8), "int", _tokpos(tok))
            return Lit(int(tok), "int", _tokpos(tok))
        except ValueError:  # more digits than int() accepts
            raise SpecError(f"number too long ({len(digits)} digits)", tok.line,
                            tok.column) from None

    def hex(self, tok):
        return Lit(int(tok, 16), "int", _tokpos(tok))

    def float(self, tok):
        return Lit(float(tok), "float", _tokpos(tok))

    @v_args(meta=True)
    def true(self, meta, *_):
        return Lit(True, "bool", (meta.line, meta.column))

    @v_args(meta=True)
    def false(self, meta, *_):
        return Lit(False, "bool", (meta.line, meta.column))

    def kwarg(self, name, value):
        return ("kw", str(name), value, _tokpos(name))

    def arglist(self, *items):
        return list(items)

    def _split_args(self, name: Token, arglist):
        args, kwargs, seen = [], [], set()
        for item in arglist or ():
            if isinstance(item, tuple) and item and item[0] == "kw":
                _, key, value, pos = item
                if key in seen:
                    raise SpecError(f"keyword argument '{key}' given twice", *pos)
                seen.add(key)
                kwargs.append((key, value))
            else:
                if kwargs:
                    raise SpecError(f"positional argument after keyword arguments in "
                                    f"'{name}'", *item.pos)
                args.append(item)
        return tuple(args), tuple(kwargs)

    def func(self, name, arglist=None):
        args, kwargs = self._split_args(name, arglist)
        return Func(str(name), args, kwargs, _tokpos(name))

    def call(self, name, arglist=None):
        args, kwargs = self._split_args(name, arglist)
        return Call(str(name), args, kwargs, _tokpos(name))

    def decorated(self, deco, inner):
        return Decorated(deco, inner, deco.pos)

    @v_args(inline=True, meta=True)
    def fanout(self, meta, *branches):
        return FanOut(tuple(branches), (meta.line, meta.column))

    @v_args(inline=True, meta=True)
    def failover(self, meta, *branches):
        return Failover(tuple(branches), (meta.line, meta.column))

    def braced(self, *items):
        *decos, inner = items
        for deco in reversed(decos):
            inner = Decorated(deco, inner, deco.pos)
        return inner

    @v_args(inline=True, meta=True)
    def let(self, meta, name, value, body):
        return Let(str(name), value, body, (meta.line, meta.column))

    def nodename(self, tok):
        if tok.type == "STRING":
            name = unescape(tok[1:-1])
            if not name:
                raise SpecError("a node name must not be empty", tok.line, tok.column)
            return (name, _tokpos(tok))
        return (str(tok), _tokpos(tok))  # NAME or IPADDR (OG accepted IP addresses)

    def definition(self, nodename, source, sink):
        name, pos = nodename
        return Definition(name, source, sink, pos)

    def start(self, *defs):
        return Spec(tuple(defs))

    def source_only(self, call):
        return call

    def sink_only(self, sink):
        return sink


_PARSER = Lark(GRAMMAR, parser="lalr", start=["start", "source_only", "sink_only"],
               propagate_positions=True, maybe_placeholders=False)
# the lexer's own string literal, for those who look for strings in spec text (redaction)
STRING_RE = re.compile(_PARSER.get_terminal("STRING").pattern.to_regexp())
_TO_TREE = _ToTree()

_READABLE = {"$END": "end of spec", "NAME": "a name", "STRING": "a string",
             "INT": "a number", "FLOAT": "a number", "HEX": "a number", "_SEMI": "';'",
             "IPADDR": "an IP address"}


def _readable(term: str) -> str:
    if term in _READABLE:
        return _READABLE[term]
    try:
        pattern = _PARSER.get_terminal(term).pattern
    except KeyError:
        return term
    if isinstance(pattern, lark.lexer.PatternStr):
        return repr(pattern.value)
    return term.lower()


def _end_pos(text: str) -> Pos:
    """Where "end of spec" is reported: just after the last non-blank character (lines are
    counted on "\n" only, as Lark counts them)."""
    lines = text.rstrip().split("\n")
    return len(lines), len(lines[-1]) + 1


def _translate(exc: lark.exceptions.UnexpectedInput, text: str) -> SpecError:
    line = getattr(exc, "line", None)
    column = getattr(exc, "column", None)
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        ch = text[exc.pos_in_stream]
        if ch == '"':
            msg = "unterminated string (a string must end with \" on the same line)"
        elif text.startswith("/*", exc.pos_in_stream):
            msg = "unterminated comment (/* without */)"
        else:
            msg = f"unexpected character {ch!r}"
    elif isinstance(exc, lark.exceptions.UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            found = "end of spec"
            line, column = _end_pos(text)
        else:
            found = repr(str(tok))
        expected = sorted({_readable(t) for t in exc.expected})
        msg = f"unexpected {found}"
        if expected:
            msg += ", expected " + " or ".join(expected[:8])
        if tok.type == "COLON" and "_SEMI" in exc.expected and "STRING" not in exc.expected:
            msg += " (is the ';' ending the previous definition missing?)"
    elif isinstance(exc, lark.exceptions.UnexpectedEOF):
        line, column = _end_pos(text)
        msg = "unexpected end of spec"
    else:  # pragma: no cover - Lark has no other kinds today
        msg = str(exc)
    if line is None or line < 1:
        line, column = 1, 1
    return SpecError(msg, line, column, text)


def _text_pos(text: str, index: int) -> Pos:
    """The (line, column) of character ``index``, lines counted on "\n" as Lark does."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _tree_pos(node, default: Pos) -> Pos:
    if isinstance(node, Token):
        return _tokpos(node)
    meta = node.meta
    return (meta.line, meta.column) if not meta.empty else default


# Children of these Lark rules sit one level deeper than the rule itself; ``braced``
# nests its i-th decorator i+1 levels deep and its sink as deep as its last decorator.
_NESTS = frozenset({"decorated", "fanout", "failover", "let", "call", "func"})
_CONSTRUCTS = _NESTS | {"braced"}  # what a level is made of (literals are leaves)


def _check_bounds(tree: lark.Tree, text: str) -> None:
    """Raise SpecError at the first construct (in text order) past ``MAX_DEPTH`` or
    ``MAX_COMPONENTS``. Iterative: the tree may be arbitrarily deep here."""
    calls = 0
    stack = [(child, 1, (1, 1)) for child in reversed(tree.children)]
    while stack:
        node, depth, parent_pos = stack.pop()
        if isinstance(node, Token):
            continue
        pos = _tree_pos(node, parent_pos)
        kind = node.data
        if depth > MAX_DEPTH and kind in _CONSTRUCTS:
            raise SpecError(f"the spec nests too deeply: more than {MAX_DEPTH} levels "
                            f"(decorators, braces, fan-outs, failovers, let and function "
                            f"arguments each add one)", *pos, text)
        if kind == "definition":
            calls = 0
        elif kind == "call":
            calls += 1
            if calls > MAX_COMPONENTS:
                raise SpecError(f"more than {MAX_COMPONENTS} components in one definition",
                                *pos, text)
        if kind == "braced":
            *decos, inner = node.children
            stack.append((inner, depth + len(decos), pos))
            stack.extend((d, depth + i + 1, pos) for i, d in reversed(list(enumerate(decos))))
            continue
        inner_depth = depth + 1 if kind in _NESTS else depth
        stack.extend((child, inner_depth, pos) for child in reversed(node.children))


def _parse(text: str, start: str):
    if not isinstance(text, str):
        raise SpecError("a spec must be text")
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"the spec is longer than {MAX_SPEC_CHARS} characters",
                        *_text_pos(text, MAX_SPEC_CHARS), text)
    try:
        tree = _PARSER.parse(text, start=start)
    except lark.exceptions.UnexpectedInput as exc:
        raise _translate(exc, text) from None
    _check_bounds(tree, text)
    try:
        return _TO_TREE.transform(tree)
    except lark.exceptions.VisitError as exc:
        if isinstance(exc.orig_exc, SpecError):
            raise exc.orig_exc.with_text(text) from None
        raise SpecError(f"malformed spec: {exc.orig_exc}", 1, 1, text) from None


def parse(text: str) -> Spec:
    """Parse a spec file: ``name : source | sink ;`` definitions. Raises SpecError."""
    return _parse(text, "start")


def parse_source(text: str) -> Call:
    """Parse a source half, as given to ``flumectl config NODE SOURCE SINK``."""
    return _parse(text, "source_only")


def parse_sink(text: str) -> SinkNode:
    """Parse a sink half (decorators, fan-outs, failovers, rolls, let)."""
    return _parse(text, "sink_only")


# ---------------------------------------------------------------- printing

ROLL_LIKE = frozenset({"roll", "collector"})
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[.\-][A-Za-z0-9_]+)*\Z")
_KEYWORDS = frozenset({"let", "in", "true", "false"})


def quote(s: str) -> str:
    """A string literal that :func:`unescape` turns back into ``s``."""
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_value(v: Value) -> str:
    if isinstance(v, Func):
        return _format_call(v.name, v.args, v.kwargs)
    if v.kind == "string":
        return quote(v.value)
    if v.kind == "bool":
        return "true" if v.value else "false"
    if v.kind == "float":
        f = v.value
        if math.isinf(f):
            return "1e999" if f > 0 else "-1e999"
        return repr(f)
    try:
        return str(v.value)
    except ValueError:  # beyond int->str's digit limit; hex has none
        return hex(v.value)


def _format_call(name: str, args: tuple, kwargs: tuple) -> str:
    if not args and not kwargs:
        return name
    parts = [format_value(a) for a in args] + [f"{k}={format_value(v)}" for k, v in kwargs]
    return f"{name}({', '.join(parts)})"


def format_call(c: Call) -> str:
    return _format_call(c.name, c.args, c.kwargs)


def format_sink(node: SinkNode) -> str:
    """The canonical text of a sink tree."""
    if isinstance(node, Call):
        return format_call(node)
    if isinstance(node, FanOut):
        return "[ " + ", ".join(format_sink(b) for b in node.branches) + " ]"
    if isinstance(node, Failover):
        return "< " + " ? ".join(format_sink(b) for b in node.branches) + " >"
    if isinstance(node, Let):
        return f"let {node.name} := {format_sink(node.value)} in {format_sink(node.body)}"
    if isinstance(node, Decorated):
        if node.deco.name in ROLL_LIKE:
            return f"{format_call(node.deco)} {{ {format_sink(node.inner)} }}"
        chain = []
        while isinstance(node, Decorated) and node.deco.name not in ROLL_LIKE:
            chain.append(format_call(node.deco))
            node = node.inner
        return "{ " + " => ".join(chain + [format_sink(node)]) + " }"
    raise TypeError(f"not a sink node: {node!r}")


def format_source(c: Call) -> str:
    return format_call(c)


def format_definition(d: Definition) -> str:
    name = d.name if _BARE_NAME.match(d.name) and d.name not in _KEYWORDS else quote(d.name)
    return f"{name} : {format_source(d.source)} | {format_sink(d.sink)} ;"


def format_spec(spec: Spec) -> str:
    """The canonical text of a whole spec: one definition per line."""
    return "".join(format_definition(d) + "\n" for d in spec.definitions)


def walk_calls(node: SinkNode):
    """Every component call in a sink tree (decorators included), depth first."""
    if isinstance(node, Call):
        yield node
    elif isinstance(node, Decorated):
        yield node.deco
        yield from walk_calls(node.inner)
    elif isinstance(node, (FanOut, Failover)):
        for b in node.branches:
            yield from walk_calls(b)
    elif isinstance(node, Let):
        yield from walk_calls(node.value)
        yield from walk_calls(node.body)


def sink_components(node: SinkNode, env: frozenset = frozenset()) -> Iterator[Call]:
    """The leaf sink components of a tree, depth first, without ``let`` references (a bare
    name bound by an enclosing ``let`` is a reference, not a component)."""
    if isinstance(node, Call):
        if node.args or node.kwargs or node.name not in env:
            yield node
    elif isinstance(node, Decorated):
        yield from sink_components(node.inner, env)
    elif isinstance(node, (FanOut, Failover)):
        for b in node.branches:
            yield from sink_components(b, env)
    elif isinstance(node, Let):
        yield from sink_components(node.value, env)
        yield from sink_components(node.body, env | {node.name})
