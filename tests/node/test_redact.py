"""Passwords hidden from what is shown, and put back from what is stored."""
from __future__ import annotations

import pytest

from node.redact import has_redacted, redact, redact_tree, unredact


@pytest.mark.parametrize("text, shown", [
    ('dfs("s3://KEY:SECRET@bucket/x")', 'dfs("s3://KEY:***@bucket/x")'),
    ("https://ghp_token@github.com/a", "https://***@github.com/a"),
    ("x://u:p@ss#w@h/p", "x://u:***@h/p"),               # an unescaped '@' and '#'
    ("s3://K:S@b and ftp://u:v@h", "s3://K:***@b and ftp://u:***@h"),
    ("hdfs://nn:8020/x", "hdfs://nn:8020/x"),             # a port is no password
    ("mail a@b, see http://h/p?x=a@b", "mail a@b, see http://h/p?x=a@b"),
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
    assert unredact("https://***@elsewhere/x", stored) == "https://***@elsewhere/x"
    assert unredact("s3://K:***@b", ["s3://K:S1@b", "s3://K:S2@b/c"]) == "s3://K:***@b"
    assert unredact("s3://K:***@b", ["s3://K:p@ss@b/q"]) == "s3://K:p@ss@b"
    assert unredact("no url here", stored) == "no url here"
