"""The cluster view: a cache of ``logical/``, ``mappings/``, ``physical/`` and ``status/``
kept current by ZooKeeper watches, which the master's listings and commands read (and,
through the master's REST API, the web console).

A child watch per folder and a data watch per znode, all asynchronous; everything re-read
after each reconnection, since kazoo drops watches with the connection. While the view is
not initialised (at start, after a disconnection) :meth:`ClusterView.snapshot` reads
ZooKeeper directly. Failures reach callers as :class:`zk.client.ZkError`, never as kazoo's
exceptions.
"""
from __future__ import annotations

import functools
import json
import logging
import threading
from dataclasses import dataclass
from typing import Callable

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, KazooState

from .client import zk_errors
from .store import ConfigStore, LogicalConfig

log = logging.getLogger(__name__)

SETTLE_SECONDS = 5.0            # how long a writer waits for its write to reach the view
PARTS = ("logical", "mappings", "physical", "status")


@dataclass(frozen=True)
class ClusterState:
    """What the view holds: ``logical`` {name: LogicalConfig}, ``mappings`` {physical:
    [logical...]}, ``physical`` {physical: registration} (alive nodes only) and ``status``
    {physical: reported status}. ``generation`` grows with every change of the view (None:
    read from ZooKeeper directly, the view not being ready). Values are replaced in the
    view, never mutated, so they may be kept."""

    generation: int | None
    logical: dict[str, LogicalConfig]
    mappings: dict[str, list[str]]
    physical: dict[str, dict]
    status: dict[str, dict]


class _Folder:
    """The children of one znode and their data, kept current by watches: a child watch
    on the folder and a data watch on every child. Results and watch events arrive on
    kazoo's threads; they only issue asynchronous requests and update the view's tables
    under its lock, so nothing blocks kazoo."""

    def __init__(self, view: "ClusterView", part: str, base: str):
        self.view = view
        self.part = part
        self.base = base
        self.zk = view.store.zk
        self.known: set[str] = set()     # children seen in the last listing
        self.mzxid: dict[str, int] = {}  # change zxid of the data held, per child
        self.watchers: dict[str, object] = {}
        self.epoch = 0
        self.pending = 0
        self.ready = False

    # ------------------------------------------------------------ requests
    def refresh(self) -> None:
        """Re-read everything (at start and after every reconnection: kazoo drops all
        watches when a connection is lost)."""
        with self.view._cond:
            self.epoch += 1
            self.pending = 1
            self.ready = False
            epoch = self.epoch
        self._list(epoch, full=True)

    def _list(self, epoch: int | None, full: bool = False) -> None:
        try:
            self.zk.get_children_async(self.base, watch=self._on_children).rawlink(
                functools.partial(self._got_children, epoch, full))
        except Exception as exc:  # the client is closing: a later refresh reads again
            log.debug("cluster view: cannot list %s: %s", self.base, exc)

    def _get(self, name: str, epoch: int | None) -> None:
        watcher = self.watchers.get(name)
        if watcher is None:
            # one function object per child: kazoo keeps a set of watchers per path, so
            # re-reading a child never stacks up watches
            watcher = self.watchers[name] = functools.partial(self._on_data, name)
        try:
            self.zk.get_async(f"{self.base}/{name}", watch=watcher).rawlink(
                functools.partial(self._got_data, name, epoch))
        except Exception as exc:
            log.debug("cluster view: cannot read %s/%s: %s", self.base, name, exc)
            self._done(epoch)

    # ------------------------------------------------------------ watch events
    def _on_children(self, event) -> None:
        if event.type == EventType.CHILD and not self.view._closed:
            self._list(None)

    def _on_data(self, name: str, event) -> None:
        if self.view._closed:
            return
        if event.type == EventType.CHANGED:
            self._get(name, None)
        elif event.type == EventType.DELETED:
            with self.view._cond:
                self._forget(name)
            # it may have been created again already: the listing finds it as new
            self._list(None)

    # ------------------------------------------------------------ results
    def _got_children(self, epoch: int | None, full: bool, result) -> None:
        try:
            names = set(result.get())
        except NoNodeError:
            names = set()  # the folder is gone (a test removing its tree)
        except Exception:
            self._done(epoch)  # connection lost: the refresh after reconnecting reads again
            return
        with self.view._cond:
            for name in self.known - names:
                self._forget(name)
            fresh = names if full else names - self.known
            self.known |= names
            if epoch is not None and epoch == self.epoch:
                self.pending += len(fresh)
        for name in sorted(fresh):
            self._get(name, epoch)
        self._done(epoch)

    def _got_data(self, name: str, epoch: int | None, result) -> None:
        try:
            raw, stat = result.get()
        except NoNodeError:
            with self.view._cond:
                self._forget(name)
            self._done(epoch)
            return
        except Exception:
            self._done(epoch)
            return
        with self.view._cond:
            # a late answer for a child deleted meanwhile, or older than what is held
            if name in self.known and stat.mzxid > self.mzxid.get(name, -1):
                self.mzxid[name] = stat.mzxid
                self.view._tables[self.part][name] = self.view._parse(self.part, name, raw,
                                                                    stat)
                self.view._changed()
        self._done(epoch)

    def _forget(self, name: str) -> None:
        """Drop a child (the view's lock is held)."""
        self.known.discard(name)
        self.mzxid.pop(name, None)
        if self.view._tables[self.part].pop(name, None) is not None:
            self.view._changed()

    def _done(self, epoch: int | None) -> None:
        if epoch is None:
            return
        with self.view._cond:
            if epoch == self.epoch:
                self.pending -= 1
                if self.pending == 0:
                    self.ready = True
                    self.view._changed()


class ClusterView:
    """The watch cache over one :class:`ConfigStore`. Thread-safe; its watches run on
    kazoo's threads and never block them. ``generation`` grows with every change, ``ready``
    says whether the cache is complete (else :meth:`snapshot` reads ZooKeeper)."""

    def __init__(self, store: ConfigStore):
        self.store = store
        self.generation = 0
        self._cond = threading.Condition()
        self._tables: dict[str, dict] = {p: {} for p in PARTS}
        self._folders = [_Folder(self, p, store.path(p)) for p in PARTS]
        self._closed = False
        self._started = False

    def start(self, timeout: float = 30.0) -> "ClusterView":
        """Set the watches and wait (``timeout`` s at most) for the first complete read."""
        self._started = True
        self.store.zk.add_listener(self._on_state)
        if self.store.zk.connected:
            for f in self._folders:
                f.refresh()
        with self._cond:
            if not self._cond.wait_for(lambda: self.ready, timeout):
                log.warning("the cluster view is not initialised after %.0f s; listings "
                            "read ZooKeeper directly until it is", timeout)
        return self

    def close(self) -> None:
        self._closed = True
        if self._started:
            self.store.zk.remove_listener(self._on_state)
        with self._cond:
            self._changed()

    @property
    def ready(self) -> bool:
        return not self._closed and all(f.ready for f in self._folders)

    def snapshot(self) -> ClusterState:
        """Copies of the tables, or (generation None) read from ZooKeeper while the view
        is not ready; :class:`ZkError` if ZooKeeper cannot be read."""
        if self.ready:
            with self._cond:
                t = self._tables
                return ClusterState(self.generation, dict(t["logical"]), dict(t["mappings"]),
                                    dict(t["physical"]), dict(t["status"]))
        s = self.store
        with zk_errors("cannot read the cluster from ZooKeeper"):
            return ClusterState(None, s.list_logical(), s.list_mappings(), s.list_physical(),
                                s.list_status())

    def wait_until(self, predicate: Callable[[ClusterState], bool],
                   timeout: float = SETTLE_SECONDS) -> bool:
        """Wait until ``predicate(state)`` holds (a master reads its own writes): it is
        called with the view's own tables under its lock, so it must be quick and must not
        keep them. False at once if the view is not ready, False after ``timeout`` s."""
        if not self.ready:
            return False
        live = ClusterState(None, *(self._tables[p] for p in PARTS))
        with self._cond:
            ok = self._cond.wait_for(lambda: self._closed or predicate(live), timeout)
        if not ok:
            log.debug("the view did not show a write within %.1f s", timeout)
        return ok

    # ------------------------------------------------------------ kazoo's threads
    def _on_state(self, state) -> None:
        # runs on kazoo's connection thread: only flag and issue asynchronous requests
        if self._closed:
            return
        if state == KazooState.CONNECTED:
            for f in self._folders:
                f.refresh()
        else:
            with self._cond:
                for f in self._folders:
                    f.ready = False
                self._changed()

    def _changed(self) -> None:
        """Note a change (the lock is held)."""
        self.generation += 1
        self._cond.notify_all()

    @staticmethod
    def _parse(part: str, name: str, raw: bytes, stat):
        if part == "logical":
            return ConfigStore.parse_logical(name, raw, stat.version)
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            value = None
        if part == "mappings":
            return [str(x) for x in value] if isinstance(value, list) else []
        return value if isinstance(value, dict) else {}
