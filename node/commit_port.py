"""The E2E commit log as components see it (``NodeShared.commit_log``).

Components never import ``zk`` (an import contract, pyproject.toml): the physical node
wraps its ``zk.commit_log.CommitLog`` in a :class:`CommitLogPort` and hands that over. The
port has the commit log's methods and answers; what changes at the boundary is the
vocabulary: ZooKeeper's failures arrive as :class:`~node.errors.CommitLogError` and a
claim's outcome as :class:`~node.e2e.protocol.Claim`.
"""
from __future__ import annotations

import functools

from flume_og.zk.client import zk_errors
from flume_og.zk.commit_log import ClaimOutcome, CommitLog
from flume_og.zk.errors import CoordinationError

from .e2e.protocol import Claim
from .errors import CommitLogError


class CommitLogPort:
    """``log``'s public methods, raising CommitLogError for what ZooKeeper raised (the
    zk error as its ``__cause__``) and answering :class:`Claim` for a ClaimOutcome."""

    def __init__(self, log: CommitLog):
        self.log = log

    def __getattr__(self, name: str):
        attr = getattr(self.log, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            try:
                with zk_errors(f"the commit log ({name})"):
                    answer = attr(*args, **kwargs)
            except CoordinationError as exc:
                raise CommitLogError(str(exc)) from exc
            return Claim(answer.value) if isinstance(answer, ClaimOutcome) else answer

        setattr(self, name, call)      # made once per method
        return call
