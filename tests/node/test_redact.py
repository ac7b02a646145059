"""Passwords hidden from what is shown, and put back from what is stored."""
from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flume_og.node.errors import RestoreError
from flume_og.node.redact import has_redacted, redact, redact_tree, unredact
from flume_og.node.spec import parse_sink, quote


@pytest.mark.parametrize("text, shown", [
    ('dfs("s3://KEY:SECRET@bucket/x")', 'dfs("s3://KEY:***@bucket/x")'),
    ("https://ghp_token@github.com/a", "https://***@github.com/a"),
    ("x://u:p@ss#w@h/p", "x://u:***@h/p"),               # an unescaped '@' and '#'
    ("s3://K:S@b and ftp://u:v@h", "s3://K:***@b and ftp://u:***@h"),
    ("hdfs://nn:8020/x", "hdfs://nn:8020/x"),             # a port is no password
    ("mail a@b, see http://h/p", "mail a@b, see http://h/p"),
    # a password with '/', '"', '\' or a space, in a spec string literal
    ('dfs("s3://AKIA:wJalr/K7MDENG+bPxRfiCY@bucket/logs")', 'dfs("s3://AKIA:***@bucket/logs")'),
    ('dfs("ftp://u:a\\"b c\\\\d@h/p", "x")', 'dfs("ftp://u:***@h/p", "x")'),
    ('dfs("ftp://u:a/b@c@h/p@q/r")', 'dfs("ftp://u:***@q/r")'),   # hides more, never less
    # ... and in a message (up to whitespace or a quote)
    ("cannot open s3://AKIA:wJ/K7@bucket/logs: denied",
     "cannot open s3://AKIA:***@bucket/logs: denied"),
])
def test_redact(text, shown):
    assert redact(text) == shown
    assert has_redacted(shown) == (shown != text) and not has_redacted(text)


def test_redact_tree_copies_every_string():
    value = {"a": ["s3://K:S@b", 1, None], "b": {"c": "ftp://t@h"}}
    assert redact_tree(value) == {"a": ["s3://K:***@b", 1, None], "b": {"c": "ftp://***@h"}}
    assert value["a"][0] == "s3://K:S@b"


def test_unredact_restores_only_an_unambiguous_password_for_the_same_host():
    stored = ['dfs("s3://K:S1@b/q")', "https://T@h:80/y", "https://T2@z/"]
    assert unredact('x s3://K:***@b/p y https://***@h:80/x', stored) == \
        "x s3://K:S1@b/p y https://T@h:80/x"
    for other_host in ("https://***@elsewhere/x", "https://***@h:81/x", "https://***@h/x"):
        with pytest.raises(RestoreError, match="no stored config"):
            unredact(other_host, stored)
    with pytest.raises(RestoreError, match="several passwords"):
        unredact("s3://K:***@b", ["s3://K:S1@b", "s3://K:S2@b/c"])
    assert unredact("s3://K:***@b", ["s3://K:p@ss@b/q"]) == "s3://K:p@ss@b"
    assert unredact("no url here", stored) == "no url here"


STORED = 'dfs("ftp://ops:S3cretPw@ftp.corp/logs/app")'


@pytest.mark.parametrize("pasted", [
    # the review's paste: fsspec read host=evil.example, password "S3cretPw@ftp.corp\"
    'dfs("ftp://ops:***@ftp.corp\\\\@evil.example/x/y")',
    'dfs("ftp://ops:***@ftp.corp\\u0040evil.example/x/y")',   # '@' by an escape
    'dfs("ftp://ops:***@ftp.corp/x\\u0040evil.example/y")',   # ... after the host
    'dfs("ftp://ops:***@ftp.corp?@evil.example/x")',
    'dfs("ftp://ops:***@ftp.corp#@evil.example/x")',
    'dfs("ftp://ops:***@ftp.corp/@evil.example/x")',
    'dfs("ftp://ops:***@ftp.corp\\\\/x")',
    'dfs("ftp://ops:***@ftp.corp%40evil.example/x")',          # '@' percent-encoded
])
def test_a_password_is_never_put_back_for_another_host(pasted):
    assert has_redacted(pasted)
    with pytest.raises(RestoreError):
        unredact(pasted, [STORED])
    # the same shown URL with only the path changed is put back
    assert unredact('dfs("ftp://ops:***@ftp.corp/x/y")', [STORED]) == \
        'dfs("ftp://ops:S3cretPw@ftp.corp/x/y")'


# passwords of every character a URL parser or the spec's string literals treat specially
PASSWORD = st.text(alphabet=st.sampled_from('ab9/"\\ @:#?%*+=~'), min_size=1, max_size=24)
USER = st.text(alphabet=st.sampled_from("abcXYZ019_.-"), min_size=1, max_size=8)
HOST = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z]{2,4})?(:[0-9]{1,5})?", fullmatch=True)
PATH = st.from_regex(r"(/[A-Za-z0-9._%-]{0,8}){0,3}(\?[a-z=&]{0,6})?(#[a-z]{0,4})?",
                     fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["s3", "ftp", "https", "hdfs"]), user=st.one_of(st.none(), USER),
       password=PASSWORD, host=HOST, path=PATH)
def test_redaction_and_restoration_are_inverse(scheme, user, password, host, path):
    assume(not password.startswith("***@") and ":***@" not in password)
    assume(user is not None or ":" not in password)   # else it is "user:password"
    userinfo = password if user is None else f"{user}:{password}"
    url = f"{scheme}://{userinfo}@{host}{path}"
    spec = f"{{ batch(10) => dfs({quote(url)}) }}"
    assert parse_sink(spec)   # a valid spec, whose literal the node reads as ``url``
    shown = redact(spec)
    hidden = "***" if user is None else f"{user}:***"
    assert shown == f"{{ batch(10) => dfs({quote(f'{scheme}://{hidden}@{host}{path}')}) }}"
    assert has_redacted(shown) and not has_redacted(spec) or "***" in password
    assert unredact(shown, [spec, 'null']) == spec
    assert redact(unredact(shown, [spec])) == shown
    # in a message the URL ends at whitespace or a quote: passwords without those
    if not any(c in password for c in ' "'):
        message = f"cannot open {url}: refused"
        shown_message = redact(message)
        assert shown_message == f"cannot open {scheme}://{hidden}@{host}{path}: refused"
