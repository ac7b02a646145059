"""Passwords out of what is shown: the userinfo of URLs in specs, errors and commands.

A spec may carry credentials in a URL (``dfs("s3://KEY:SECRET@bucket/logs")``). What is
*stored* keeps them (nodes need them); what is *shown* (listings of the REST API, flumectl,
the console, a node's status page) goes through :func:`redact`:

* ``scheme://user:password@host`` becomes ``scheme://user:***@host`` (the user names which
  credential is in use and is kept);
* ``scheme://token@host`` becomes ``scheme://***@host`` (a lone userinfo is often a token).

The userinfo runs to the last ``@`` before the next ``/``, whitespace or quote, so that an
unescaped ``@`` or ``#`` in a password is hidden too. :func:`has_redacted` tells whether a
text holds a redacted URL, so that a listing pasted back is refused instead of replacing a
secret with ``***``.
"""
from __future__ import annotations

import re
from typing import Any

MARK = "***"

# scheme "://" userinfo "@": the userinfo holds no '/', whitespace, quote or backslash
_USERINFO = re.compile(r"""([A-Za-z][A-Za-z0-9+.\-]*://)([^/\s"'\\<>]*)@""")
_REDACTED = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*://(?:[^/\s"'\\<>:@]*:)?\*\*\*@""")


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


__all__ = ["redact", "redact_tree", "has_redacted", "MARK"]
