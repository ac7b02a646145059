"""Fixtures shared by the integration tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def procs():
    """A list to append started master and node processes to; each is stopped, the last
    started first, when the test ends."""
    started = []
    yield started
    for p in reversed(started):
        p.stop()
