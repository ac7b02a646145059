"""The end-to-end commit log: every znode and watch of E2E delivery (protocol: docs/e2e.md).

Layout under the root (``commits/`` next to the config store's folders, zk/store.py)::

    commits/claims/<agent>/<seq>      ephemeral, data = collector id: a collector holds the
                                      E2E group in a file not yet complete
    commits/groups/<agent>/<seq>      data = final file: the group is committed (its
                                      existence is the acknowledgement)
    commits/watermark/<agent>         W: every group of the agent below W is committed
    commits/files/<collector>/<id>    {"files": [[hidden, final], ...], ...}: a commit whose
                                      renames may not have happened yet (roll-forward)

Agents and collectors are named by opaque strings, quoted into znode names; seqs are
decimal integers. Kazoo errors do not leave this module except through the retried
single-znode reads and writes (connection loss and session expiry are retried there);
the pipelined and transactional calls raise :class:`ZkError`.
"""
from __future__ import annotations

import enum
import json
import threading
from typing import Callable, NamedTuple
from urllib.parse import quote

from kazoo.exceptions import (BadVersionError, KazooException, NodeExistsError, NoNodeError,
                              RolledBackError, ZookeeperError)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.recipe.watchers import ChildrenWatch

from .client import ConflictError, ZkError

CAS_TRIES = 50
E2E_TIMEOUT = 15.0      # seconds one pipelined end-to-end request may take
ENSURED_KEPT = 20_000   # parent paths known to exist, remembered (a cache: then forgotten)

_KAZOO_ERRORS = (KazooException, ZookeeperError, KazooTimeoutError)


class ClaimOutcome(enum.StrEnum):
    """What :meth:`CommitLog.claim_group` found (equal to its lower-case name)."""

    CLAIMED = "claimed"       # the claim is ours now and the group is not committed
    OURS = "ours"             # this session held it already
    HELD = "held"             # another live session holds it
    COMMITTED = "committed"   # committed already: no claim is kept


class CommitResult(NamedTuple):
    """The answer of :meth:`CommitLog.commit_groups`: ``(applied, reason)``."""

    applied: bool
    reason: str = ""


def _zk_error(exc: Exception, what: str) -> ZkError:
    return ZkError(f"{what}: {type(exc).__name__} {exc}".rstrip())


def _record(raw: bytes) -> dict:
    """A file record's data (``{}`` when empty or unreadable)."""
    try:
        return (json.loads(raw) if raw else None) or {}
    except ValueError:
        return {}


def _znode_name(name: str) -> str:
    return quote(name, safe="#:@,+=-_.~") if name not in (".", "..") else quote(name + "~")


class CommitLog:
    """Typed access to ``commits/`` through one kazoo client: ``client`` is the kazoo
    client, ``zk`` the same client with the store's retry policy (``ConfigStore.zk``),
    ``root`` the layout's root."""

    def __init__(self, client, zk, root: str):
        self.client = client
        self.zk = zk
        self.root = root
        self._ensured: set[str] = set()
        self._ensured_lock = threading.Lock()

    # ------------------------------------------------------------ paths
    def path(self, kind: str, owner: str, item: str | int | None = None) -> str:
        """``commits/<kind>/<owner>[/<item>]`` (kind: claims, groups, watermark, files)."""
        parts = [self.root, "commits", kind, _znode_name(owner)]
        if item is not None:
            parts.append(str(item))
        return "/".join(parts)

    def _ensure(self, kind: str, owner: str) -> None:
        path = self.path(kind, owner)
        if path in self._ensured:
            return
        self.zk.ensure_path(path)
        with self._ensured_lock:
            if len(self._ensured) >= ENSURED_KEPT:
                self._ensured.clear()      # forgetting costs one ensure_path each, later
            self._ensured.add(path)

    def _session(self) -> int | None:
        cid = self.client.client_id
        return cid[0] if cid else None

    # ------------------------------------------------------------ claims (collectors)
    def claim_group(self, agent: str, seq: int, owner: str) -> ClaimOutcome:
        """Claim an agent's group for this session (see :class:`ClaimOutcome`). ZkError
        when ZooKeeper does not answer.

        The committed checks are read *after* the claim is created, so a group committed
        and then forgotten below the watermark is never taken for uncommitted."""
        return self.begin_claim(agent, seq, owner).result()

    def begin_claim(self, agent: str, seq: int, owner: str) -> "ClaimRequest":
        """Send the requests of :meth:`claim_group` (pipelined) and return at once; the
        caller does other work, then calls ``.result()``."""
        try:
            self._ensure("claims", agent)
            claim = self.path("claims", agent, seq)
            c = self.client.create_async(claim, owner.encode(), ephemeral=True)
            g = self.client.exists_async(self.path("groups", agent, seq))
            w = self.client.get_async(self.path("watermark", agent))
        except _KAZOO_ERRORS as exc:
            raise _zk_error(exc, f"claiming group {agent}:{seq}") from exc
        return ClaimRequest(self, agent, seq, claim, c, g, w, owner)

    def claim_exists(self, agent: str, seq: int) -> bool:
        return self.zk.exists(self.path("claims", agent, seq)) is not None

    def claim_holder(self, agent: str, seq: int) -> str | None:
        """The collector id holding the claim on ``agent``'s group ``seq``; None if none."""
        try:
            data, _ = self.zk.get(self.path("claims", agent, seq))
        except NoNodeError:
            return None
        return data.decode(errors="replace")

    def reclaim_group(self, agent: str, seq: int, holder: str) -> bool:
        """Delete the claim on ``agent``'s group ``seq`` if collector ``holder`` holds it
        (the agent knows that collector's process is gone while its session lingers).
        True when no claim is left; False when another collector holds it. Safe even if
        ``holder`` is alive after all: a group is committed only by the transaction that
        creates its znode, which succeeds once (docs/e2e.md)."""
        path = self.path("claims", agent, seq)
        try:
            data, stat = self.zk.get(path)
        except NoNodeError:
            return True
        except _KAZOO_ERRORS as exc:
            raise _zk_error(exc, f"reading the claim on group {agent}:{seq}") from exc
        if data.decode(errors="replace") != holder:
            return False
        try:
            self.zk.delete(path, version=stat.version)
        except NoNodeError:
            pass
        except BadVersionError:
            return False
        except _KAZOO_ERRORS as exc:
            raise _zk_error(exc, f"deleting the claim on group {agent}:{seq}") from exc
        return True

    def release_claims(self, groups: list[tuple[str, int]]) -> int:
        """Delete the claims among ``groups`` that this session holds; how many."""
        if not groups:
            return 0
        me = self._session()
        paths = [self.path("claims", a, s) for a, s in groups]
        try:
            stats = [self.client.exists_async(p) for p in paths]
            mine = []
            for p, r in zip(paths, stats):
                st = r.get(E2E_TIMEOUT)
                if st is not None and st.ephemeralOwner == me:
                    mine.append(p)
            for r in [self.client.delete_async(p) for p in mine]:
                try:
                    r.get(E2E_TIMEOUT)
                except NoNodeError:
                    pass
        except _KAZOO_ERRORS as exc:
            raise _zk_error(exc, "releasing group claims") from exc
        return len(mine)

    # ------------------------------------------------------------ commits (collectors)
    def commit_groups(self, collector: str, file_id: str | None, record: dict | None,
                      groups: list[tuple[str, int]], data: bytes = b"") -> CommitResult:
        """One transaction: every claim of ``groups`` still there, ``groups/<a>/<seq>``
        created for each (``data``), ``files/<collector>/<file_id>`` created with
        ``record`` (unless ``file_id`` is None), the claims deleted.

        ``(True, "")`` applied; ``(False, reason)`` refused (a claim vanished, a group is
        committed already) and nothing changed. When the answer is lost (connection loss,
        session expiry) the outcome is decided by reading the file record back; ZkError
        if that is impossible too (the outcome is then unknown)."""
        try:
            for a in {a for a, _ in groups}:
                self._ensure("groups", a)
            if file_id is not None:
                self._ensure("files", collector)
        except _KAZOO_ERRORS as exc:
            raise _zk_error(exc, "preparing a commit") from exc
        claims = [self.path("claims", a, s) for a, s in groups]
        tx = self.client.transaction()
        for c in claims:
            tx.check(c, 0)
        for a, s in groups:
            tx.create(self.path("groups", a, s), data)
        fpath = None
        if file_id is not None:
            fpath = self.path("files", collector, file_id)
            tx.create(fpath, json.dumps(record or {}, separators=(",", ":"),
                                        sort_keys=True).encode())
        for c in claims:
            tx.delete(c)
        try:
            results = tx.commit()
        except _KAZOO_ERRORS as exc:
            if fpath is None:
                raise _zk_error(exc, "committing groups") from exc
            try:   # did it happen? the file record says
                applied = self.zk.exists(fpath) is not None
            except _KAZOO_ERRORS as exc2:
                raise _zk_error(exc2, "committing a file (outcome unknown)") from exc
            return CommitResult(True) if applied else \
                CommitResult(False, f"commit lost: {type(exc).__name__}")
        return self._commit_answer(results, groups, fpath)

    @staticmethod
    def _commit_answer(results: list, groups: list[tuple[str, int]],
                       fpath: str | None) -> CommitResult:
        """What the results of :meth:`commit_groups`'s transaction mean."""
        n = len(groups)
        for i, r in enumerate(results):
            if not isinstance(r, Exception) or isinstance(r, RolledBackError):
                continue
            if i < n:
                a, s = groups[i]
                return CommitResult(False, f"the claim on group {a}:{s} is gone")
            if i < 2 * n:
                a, s = groups[i - n]
                return CommitResult(False, f"group {a}:{s} is committed already")
            if fpath is not None and i == 2 * n and isinstance(r, NodeExistsError):
                return CommitResult(True)        # this very commit was applied before
            return CommitResult(False, f"{type(r).__name__} on operation {i}")
        return CommitResult(True)

    def file_recorded(self, collector: str, file_id: str) -> bool:
        """The commit ``file_id`` of ``collector`` was applied and its record is still
        there (how a commit whose answer was lost is decided)."""
        return self.zk.exists(self.path("files", collector, file_id)) is not None

    def file_records(self, collector: str) -> dict[str, dict]:
        """Every recorded commit of ``collector`` whose renames may be pending."""
        base = self.path("files", collector)
        try:
            names = self.zk.get_children(base)
        except NoNodeError:
            return {}
        out = {}
        for n in sorted(names):
            try:
                raw, _ = self.zk.get(f"{base}/{n}")
            except NoNodeError:
                continue
            out[n] = _record(raw)
        return out

    def delete_file_record(self, collector: str, file_id: str) -> None:
        try:
            self.zk.delete(self.path("files", collector, file_id))
        except NoNodeError:
            pass

    # ------------------------------------------------------------ acknowledgements (agents)
    def watch_groups(self, agent: str,
                     on_change: Callable[[list[int]], bool | None]) -> ChildrenWatch:
        """Call ``on_change(seqs)`` with ``agent``'s committed groups now and at every
        change (from kazoo's event thread: keep it short) until it returns False. The
        parent znode is created first. ZkError when ZooKeeper does not answer."""
        def children(names: list[str]) -> bool | None:
            return on_change([int(n) for n in names if n.isdigit()])
        try:
            self._ensure("groups", agent)
            return ChildrenWatch(self.client, self.path("groups", agent), children)
        except _KAZOO_ERRORS as exc:
            raise _zk_error(exc, f"watching the committed groups of {agent}") from exc

    def group_committed(self, agent: str, seq: int) -> bool:
        """``agent``'s group ``seq`` is committed (its znode exists; valid for groups the
        agent has not acknowledged yet, whose znodes it never deletes)."""
        return self.zk.exists(self.path("groups", agent, seq)) is not None

    def list_groups(self, agent: str) -> list[int]:
        try:
            names = self.zk.get_children(self.path("groups", agent))
        except NoNodeError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def delete_groups(self, agent: str, seqs) -> None:
        """Forget committed groups (only below the watermark: docs/e2e.md)."""
        try:
            for r in [self.client.delete_async(self.path("groups", agent, s))
                      for s in seqs]:
                try:
                    r.get(E2E_TIMEOUT)
                except NoNodeError:
                    pass
        except _KAZOO_ERRORS as exc:
            raise _zk_error(exc, f"deleting committed groups of {agent}") from exc

    def get_watermark(self, agent: str) -> int:
        try:
            raw, _ = self.zk.get(self.path("watermark", agent))
        except NoNodeError:
            return 0
        try:
            return int(raw or b"0")
        except ValueError:
            return 0

    def raise_watermark(self, agent: str, value: int) -> int:
        """Set the agent's watermark to ``value`` unless it is higher already; returns the
        watermark now stored."""
        path = self.path("watermark", agent)
        for _ in range(CAS_TRIES):
            try:
                raw, stat = self.zk.get(path)
            except NoNodeError:
                try:
                    self.zk.create(path, str(value).encode(), makepath=True)
                    return value
                except NodeExistsError:
                    continue
            try:
                old = int(raw or b"0")
            except ValueError:
                old = 0
            if old >= value:
                return old
            try:
                self.zk.set(path, str(value).encode(), version=stat.version)
                return value
            except (BadVersionError, NoNodeError):
                continue
        raise ConflictError(f"could not raise the watermark of {agent}")


class ClaimRequest:
    """A claim in flight (:meth:`CommitLog.begin_claim`)."""

    def __init__(self, log: CommitLog, agent: str, seq: int, claim: str, c, g, w,
                 owner: str = ""):
        self.log, self.agent, self.seq, self.claim = log, agent, seq, claim
        self.owner = owner
        self._c, self._g, self._w = c, g, w

    def _existing(self) -> ClaimOutcome:
        """The claim existed already: OURS (this session's), HELD (another collector's,
        or gone meanwhile: the agent tries again), or CLAIMED after replacing a claim of
        this same collector id left by its previous run (a process that is gone and whose
        session has not expired yet: collector ids are unique, and its hidden files were
        deleted when this run opened)."""
        client = self.log.client
        try:
            data, stat = client.get(self.claim)
        except NoNodeError:
            return ClaimOutcome.HELD
        if stat.ephemeralOwner == self.log._session():
            return ClaimOutcome.OURS
        if not self.owner or data.decode(errors="replace") != self.owner:
            return ClaimOutcome.HELD
        try:
            client.delete(self.claim, version=stat.version)
            client.create(self.claim, self.owner.encode(), ephemeral=True)
        except (NoNodeError, NodeExistsError, BadVersionError):
            return ClaimOutcome.HELD
        return ClaimOutcome.CLAIMED

    def result(self) -> ClaimOutcome:
        seq = self.seq
        try:
            state = ClaimOutcome.CLAIMED
            try:
                self._c.get(E2E_TIMEOUT)
            except NodeExistsError:
                state = self._existing()
            committed = self._g.get(E2E_TIMEOUT) is not None
            try:
                raw, _ = self._w.get(E2E_TIMEOUT)
                committed = committed or seq < int(raw or b"0")
            except NoNodeError:
                pass
        except (*_KAZOO_ERRORS, ValueError) as exc:
            raise _zk_error(exc, f"claiming group {self.agent}:{seq}") from exc
        if committed and state in (ClaimOutcome.CLAIMED, ClaimOutcome.OURS):
            self.log.release_claims([(self.agent, seq)])
            return ClaimOutcome.COMMITTED
        return state


__all__ = ["CommitLog", "ClaimOutcome", "ClaimRequest", "CommitResult", "ZkError",
           "ConflictError"]
