"""Fixtures of the node tests (besides tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture
def opened():
    """``opened(src, ctx)``: ``src`` opened with ``ctx`` (returned), closed after the test."""
    srcs = []

    def open_(src, ctx):
        src.open(ctx)
        srcs.append(src)
        return src
    yield open_
    for s in srcs:
        s.close()
