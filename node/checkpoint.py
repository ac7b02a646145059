"""Positions that survive a crash: the per-logical-node checkpoint store.

Sources (``tail``, ``spoolDir``) resume from positions recorded here, and sinks record here
what makes their output final. One ``commit`` records, in one atomic file replace, the new
source positions together with the sink's pending renames (hidden name -> final name); the
renames are done after the record is safe. On load, recorded renames whose hidden file still
exists are rolled forward. So a SIGKILL at any moment leaves either the old positions and no
visible file, or the new positions and the visible file: the output neither loses nor
repeats an event.

The store is a small JSON file; a commit costs one file write and rename (plus an fsync
when it carries renames, because then the data files were fsynced first).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class Checkpoint:
    """A position to record once the events before it are durable (``updates``: key -> JSON
    value). ``after_commit`` runs once the record is safe."""

    __slots__ = ("updates",)

    def __init__(self, updates: dict):
        self.updates = updates

    def resolve(self) -> dict:
        return self.updates

    def after_commit(self, store: "CheckpointStore") -> None:
        pass


class _Join:
    """Waits for ``count`` branch checkpoints before committing the parent."""

    def __init__(self, parent: Checkpoint, count: int):
        self.parent = parent
        self.count = count
        self.lock = threading.Lock()

    def branch_done(self, store: "CheckpointStore") -> None:
        with self.lock:
            self.count -= 1
            last = self.count == 0
        if last:
            store.commit([self.parent])


class BranchCheckpoint(Checkpoint):
    """One branch's share of a fan-out checkpoint: it records nothing itself; when every
    branch has committed its share, the parent's position is committed."""

    __slots__ = ("join",)

    def __init__(self, join: _Join):
        super().__init__({})
        self.join = join

    def after_commit(self, store: "CheckpointStore") -> None:
        self.join.branch_done(store)


def split_checkpoint(cp: Checkpoint, branches: int) -> list[Checkpoint]:
    """Checkpoints for ``branches`` fan-out branches that commit ``cp`` when all have."""
    join = _Join(cp, branches)
    return [BranchCheckpoint(join) for _ in range(branches)]


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse(raw: bytes) -> tuple[dict, list] | None:
    """``(positions, renames)`` of a checkpoint file's bytes, or None if they are not one
    (not UTF-8, not JSON, or not the expected shape)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    positions, renames = data.get("positions", {}), data.get("renames", [])
    if not isinstance(positions, dict) or not isinstance(renames, list):
        return None
    if not all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r)
               for r in renames):
        return None
    return positions, renames


class CheckpointStore:
    """The checkpoint file of one logical node. Thread-safe."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._state: dict = {}
        self.corrupt = False      # the file existed but could not be read as a checkpoint
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()

    @classmethod
    def in_memory(cls) -> "CheckpointStore":
        """A store that records nothing on disk (tests, ``flume dump``)."""
        return cls(None)

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        data = _parse(raw)
        if data is None:
            # Any undecodable state is corruption, whatever the bytes are: the owners fall
            # back to what they can prove (the WAL's own position, the start of a file).
            self.corrupt = True
            kept = self.path.with_name(self.path.name + ".corrupt")
            try:
                os.replace(self.path, kept)
            except OSError:
                kept = self.path
            log.error("checkpoint file %s is corrupt (%d bytes, kept as %s); starting "
                      "without its positions", self.path, len(raw), kept.name,
                      extra={"file": str(self.path), "bytes": len(raw), "kept": str(kept)})
            return
        self._state, renames = data
        for hidden, final in renames:
            if os.path.exists(hidden) and not os.path.exists(final):
                os.replace(hidden, final)
                log.info("rolled forward a recorded rename to %s", final)
        if renames:
            self._write([])

    def get(self, key: str, default=None):
        with self._lock:
            return self._state.get(key, default)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._state)

    def _write(self, renames: list) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"positions": self._state, "renames": renames}).encode()
        with open(tmp, "wb") as f:
            f.write(data)
            if renames:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if renames:
            fsync_dir(self.path.parent)

    def commit(self, checkpoints: list[Checkpoint], renames: list[tuple[str, str]] = (),
               updates: dict | None = None) -> None:
        """Record the checkpoints' positions and ``updates``, then do ``renames``.

        ``renames`` are (hidden path, final path) pairs whose data is already fsynced.
        """
        merged: dict = {}
        for cp in checkpoints:
            merged.update(cp.resolve())
        if updates:
            merged.update(updates)
        renames = [(str(a), str(b)) for a, b in renames]
        if merged or renames:
            # Renames happen under the lock: a concurrent commit must not rewrite the
            # journal without them while they are still being done.
            with self._lock:
                self._state.update(merged)
                self._write(renames)
                for hidden, final in renames:
                    os.replace(hidden, final)
                for d in {os.path.dirname(f) for _, f in renames}:
                    fsync_dir(Path(d or "."))
        for cp in checkpoints:
            cp.after_commit(self)

    def forget(self, key: str) -> None:
        with self._lock:
            if self._state.pop(key, None) is not None:
                self._write([])
