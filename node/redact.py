"""Passwords out of what is shown: the userinfo of URLs in specs, errors and commands.

A spec may carry credentials in a URL (``dfs("s3://KEY:SECRET@bucket/logs")``). What is
*stored* keeps them (nodes need them); what is *shown* (listings of the REST API, flumectl,
the console, a node's status page) goes through :func:`redact`:

* ``scheme://user:password@host`` becomes ``scheme://user:***@host`` (the user names which
  credential is in use and is kept);
* ``scheme://token@host`` becomes ``scheme://***@host`` (a lone userinfo is often a token).

Where a URL ends is found as the parser finds it: in a spec string literal (the lexer's own
``STRING`` pattern, escapes included) the userinfo runs to the *last* ``@`` of the literal,
so a password holding ``/``, ``"``, ``\\``, a space, ``@`` or ``#`` is hidden whole (AWS
secret keys often hold ``/``). Elsewhere (messages, logs) it runs to the last ``@`` before
whitespace or a quote. A path holding ``@`` after the host is therefore hidden too: more is
hidden, never less. (A ``"`` inside a comment can pair with one of a string literal; the
rest of that line is then read as text outside literals.)

A listing pasted back (an unchanged spec with a new flow, an edited spec) must not store
``***`` as a password: :func:`unredact` puts back each hidden password that the stored
texts hold unambiguously (one password for that scheme, user and host), and only where the
result is the same authority as the stored one; otherwise it raises
:class:`~node.errors.RestoreError`, and the password must be typed again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

from .errors import RestoreError
from .spec import STRING_RE, unescape

MARK = "***"

# an argument: a spec string literal, or elsewhere a run of text up to whitespace or a quote
_ARG = re.compile(f"{STRING_RE.pattern}|[^\\s\"'<>]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_HIDDEN = re.compile(r"(?:[^:]*:)?\*\*\*")           # a userinfo redact() made
_MARK_THEN_AT = re.compile(r"(?:^|:)\*\*\*@")         # a hidden password with more after it
# host[:port] before which a password may be put back: a plain name or an IP literal (no
# '\', '%' or escape a client might decode into another host)
_HOSTPORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~]+)(?::[0-9]*)?")


@dataclass(frozen=True)
class _Url:
    """A URL with a userinfo in ``text``: ``text[start:at]`` is ``scheme://userinfo``,
    ``text[at]`` the ``@``, ``text[at + 1:end]`` host[:port], ``text[start:stop]`` the
    URL to the end of its argument; ``literal``: it is inside a spec string literal."""
    text: str
    start: int
    userinfo_start: int
    at: int
    end: int
    stop: int
    literal: bool

    @property
    def scheme(self) -> str:
        return self.text[self.start:self.userinfo_start]

    @property
    def userinfo(self) -> str:
        return self.text[self.userinfo_start:self.at]

    @property
    def host(self) -> str:
        return self.text[self.at + 1:self.end]

    def authority(self, userinfo: str) -> tuple:
        """Where this URL with ``userinfo`` goes, as a node reads it (the literal unescaped):
        urllib's (scheme, hostname, port, username), None if urllib cannot read it, and the
        host after the last ``@`` as other clients read it."""
        url = self.scheme + userinfo + self.text[self.at:self.stop]
        url = unescape(url) if self.literal else url
        last_host = re.split(r"[/?#]", url[url.rfind("@") + 1:], maxsplit=1)[0]
        try:
            parts = urlsplit(url)
            return (parts.scheme, parts.hostname, parts.port, parts.username), last_host
        except ValueError:   # a bad port or IPv6 literal
            return None, last_host


def _urls(text: str) -> Iterator[_Url]:
    """Every URL with a userinfo in ``text``, in order. The userinfo runs to the last ``@``
    of the argument, the host to the next ``/``, ``?``, ``#`` or the argument's end."""
    for arg in _ARG.finditer(text):
        literal = arg.group(0).startswith('"')
        lo, hi = (arg.start() + 1, arg.end() - 1) if literal else arg.span()
        scheme = _SCHEME.search(text, lo, hi)
        at = text.rfind("@", lo, hi)
        if scheme is None or at < scheme.end():
            continue
        end = at + 1
        while end < hi and text[end] not in "/?#":
            end += 1
        yield _Url(text, scheme.start(), scheme.end(), at, end, hi, literal)


def _shown(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MARK}" if colon else MARK


def redact(text: str) -> str:
    """``text`` with the password (or lone userinfo) of every URL replaced by ``***``."""
    if "@" not in text or "://" not in text:   # the common case costs two scans
        return text
    out, last = [], 0
    for url in _urls(text):
        out += [text[last:url.userinfo_start], _shown(url.userinfo)]
        last = url.at
    return "".join(out) + text[last:]


def redact_tree(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


def _hidden(url: _Url) -> bool:
    return bool(_HIDDEN.fullmatch(url.userinfo) or _MARK_THEN_AT.search(url.userinfo))


def has_redacted(text: str) -> bool:
    """True if ``text`` holds a URL whose password :func:`redact` replaced (or a ``***``
    password followed by more userinfo)."""
    return MARK in text and any(_hidden(url) for url in _urls(text))


def unredact(text: str, originals: Iterable[str]) -> str:
    """``text`` with every hidden userinfo (``scheme://user:***@host``, ``scheme://***@host``)
    put back from ``originals`` (the stored texts it may have been shown from). Raises
    RestoreError, naming the URL, unless each one is put back where ``originals`` hold
    exactly one userinfo for that scheme, user *and host*, the host is a plain host (no
    ``\\``, ``%``, escape or ``@``: the authority ends at ``/``, ``?``, ``#`` or the
    argument's end) and the result, unescaped, goes where the stored URL goes, for urllib
    (scheme, host, port, user) and for a client taking the host after the last ``@``: a
    password never moves to another host."""
    if not has_redacted(text):
        return text
    found: dict[tuple[str, str, str], dict[str, _Url]] = {}
    for original in originals:
        if original and "@" in original:
            for url in _urls(original):
                key = (url.scheme, _shown(url.userinfo), url.host)
                found.setdefault(key, {}).setdefault(url.userinfo, url)
    out, last = [], 0
    for url in _urls(text):
        if not _hidden(url):
            continue
        shown = f"{url.scheme}{url.userinfo}@{url.host}"
        if _MARK_THEN_AT.search(url.userinfo) or not _HOSTPORT.fullmatch(url.host):
            raise RestoreError(f"{shown!r}: the host after the hidden password is not a "
                               f"plain host[:port]")
        real = found.get((url.scheme, url.userinfo, url.host), {})
        if len(real) != 1:
            raise RestoreError(f"{shown!r}: " + ("no stored config has this user's password "
                                                 "for this scheme and host" if not real else
                                                 "stored configs hold several passwords for "
                                                 "this scheme, user and host"))
        (userinfo, original), = real.items()
        if url.authority(userinfo) != original.authority(userinfo):
            raise RestoreError(f"{shown!r}: put back, the password would go to another "
                               f"host than the stored one's")
        out += [text[last:url.userinfo_start], userinfo]
        last = url.at
    return "".join(out) + text[last:]


__all__ = ["redact", "redact_tree", "has_redacted", "unredact", "MARK"]
