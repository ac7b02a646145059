"""Passwords out of what is shown: the userinfo of URLs in specs, errors and commands.

A spec may carry credentials in a URL (``dfs("s3://KEY:SECRET@bucket/logs")``). What is
*stored* keeps them (nodes need them); what is *shown* (listings of the REST API, flumectl,
the console, a node's status page) goes through :func:`redact`:

* ``scheme://user:password@host`` becomes ``scheme://user:***@host`` (the user names which
  credential is in use and is kept);
* ``scheme://token@host`` becomes ``scheme://***@host`` (a lone userinfo is often a token).

The userinfo runs to the last ``@`` before the next ``/``, whitespace or quote, so that an
unescaped ``@`` or ``#`` in a password is hidden too.

A listing pasted back (an unchanged spec with a new flow, an edited spec) must not store
``***`` as a password: :func:`unredact` puts back each hidden password that the stored
texts hold unambiguously (one password for that scheme and user), and :func:`has_redacted`
tells whether any is left, to be refused.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

MARK = "***"

# scheme "://" userinfo "@": the userinfo holds no '/', whitespace, quote or backslash
_USERINFO = re.compile(r"""([A-Za-z][A-Za-z0-9+.\-]*://)([^/\s"'\\<>]*)@""")
_REDACTED = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*://(?:[^/\s"'\\<>:@]*:)?\*\*\*@""")
_HOST = r"""[^/\s"'\\<>?#@]*"""   # the host[:port] after the userinfo
_AUTHORITY = re.compile(_USERINFO.pattern + _HOST)
_REDACTED_AUTHORITY = re.compile(_REDACTED.pattern + _HOST)


def _hide(m: re.Match) -> str:
    user, colon, _ = m.group(2).partition(":")
    return f"{m.group(1)}{user}:{MARK}@" if colon else f"{m.group(1)}{MARK}@"


def redact(text: str) -> str:
    """``text`` with the password (or lone userinfo) of every URL replaced by ``***``."""
    if "@" not in text or "://" not in text:   # the common case costs two scans
        return text
    return _USERINFO.sub(_hide, text)


def redact_tree(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


def has_redacted(text: str) -> bool:
    """True if ``text`` holds a URL whose password :func:`redact` replaced."""
    return MARK in text and _REDACTED.search(text) is not None


def unredact(text: str, originals: Iterable[str]) -> str:
    """``text`` with every hidden userinfo (``scheme://user:***@``, ``scheme://***@``) put
    back from ``originals`` (the stored texts it may have been shown from), where they
    hold exactly one userinfo for that scheme, user *and host* (a password never moves to
    another host); the others stay hidden."""
    if not has_redacted(text):
        return text
    found: dict[str, set[str]] = {}
    for original in originals:
        for m in _AUTHORITY.finditer(original or ""):
            host = m.string[m.end(2) + 1:m.end()]
            found.setdefault(_hide(m) + host, set()).add(m.group(0))
    restore = {shown: next(iter(real)) for shown, real in found.items() if len(real) == 1}
    return _REDACTED_AUTHORITY.sub(lambda m: restore.get(m.group(0), m.group(0)), text)


__all__ = ["redact", "redact_tree", "has_redacted", "unredact", "MARK"]
