"""Common parts of the sources that read files (tail, multitail, tailDir, spoolDir): the
polling loop on the caller's thread and the ``fileregex`` argument."""
from __future__ import annotations

import os
import threading
import time
from typing import Annotated, Callable

from ..component import NodeContext, Source
from ..event import Event
from ..regexes import compile_text

POLL = 0.05              # seconds between two looks at the files while nothing comes


def compile_fileregex(fileregex: str) -> Callable[[str], bool]:
    """Whether a file name matches ``fileregex`` as a whole (RE2, :mod:`node.regexes`; an
    undecodable name is matched by its bytes). ValueError naming it if RE2 refuses it."""
    rx = compile_text(fileregex, "fileregex")
    return lambda name: rx.fullmatch(os.fsencode(name)) is not None


FileRegex = Annotated[str, compile_fileregex]   # declared check: RE2 must take it


class PollingSource(Source):
    """A source read on the caller's thread: ``next_batch`` calls ``_gather()`` under
    ``_lock`` every ``POLL`` seconds until it returns events or the timeout passes.
    ``close`` may come from any thread: it wakes a waiting ``next_batch`` at once, which
    then returns None, and closes the files (``_close_files``) under the lock."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False

    def _start(self, ctx: NodeContext) -> None:
        """The first step of ``open``."""
        self.ctx = ctx
        self._closed = False
        self._stop.clear()

    def _gather(self) -> list[Event]:
        """The events ready now (``[]`` if none); called with the lock held."""
        raise NotImplementedError

    def _close_files(self) -> None:
        """Close what is open; called with the lock held."""

    def next_batch(self, timeout: float) -> list[Event] | None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._closed:
                    return None
                out = self._gather()
            if out:
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self._stop.wait(min(POLL, left))

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        with self._lock:
            self._close_files()
