"""What the node credential may register, checked by the leading master: the children of
``physical/`` and ``status/`` (:class:`Registrations`)."""
from __future__ import annotations

import json
from typing import Callable

from kazoo.exceptions import NoAuthError, NoNodeError, NotEmptyError

from .acl import AclPolicy
from .store import ConfigStore

MAX_REGISTRATION_BYTES = 64 * 1024   # a physical node's registration is a small JSON object
MAX_HOST = 255                       # a host name is at most 253 characters


class Registrations:
    """The leader's check of what the node credential may create: the children of
    ``physical/`` and ``status/``. ZooKeeper lets the creator of a znode choose its ACL
    and lets it hang children below it when that ACL grants CREATE, so a client with the
    node credential can register anything. Each child, whenever its folder's children
    changed, must have

    * a name a physical node can have (``name_problem(name)`` says why not, or None; the
      master's: at most 200 characters, no '/', blanks or control characters), else it
      is deleted;
    * no children, else they are deleted;
    * the ACL of its path (zk/acl.py: the masters ALL, the node READ|WRITE), else it is
      given that ACL, or deleted when this master may not change it;
    * for ``physical/``: a JSON object of at most MAX_REGISTRATION_BYTES with a ``host``
      string of 1 to MAX_HOST characters (what a node registers), else deleted.

    Each is a refusal told to ``refusals.refuse(reason, detail)``, which counts it
    (``refused_registration_name``, ``..._subtree``, ``..._acl``, ``..._data``).
    :meth:`check` returns the physical names that passed: only those get a default
    mapping. A znode this master can neither repair
    nor delete (an external ZooKeeper, where it is not the super user) stays, is counted,
    is reported through ``locked_log.warning(key, msg, *args)`` (rate-limited by the
    caller) and is never mapped."""

    FOLDERS = ("physical", "status")

    def __init__(self, store: ConfigStore, policy: AclPolicy | None, refusals, *,
                 name_problem: Callable[[str], str | None], locked_log):
        self.client = store.client
        self.store = store
        self.policy = policy
        self.refusals = refusals
        self.name_problem = name_problem
        self._locked_log = locked_log
        self._seen: dict[str, tuple[int, set[str]]] = {}   # folder -> (cversion, accepted)

    def check(self) -> set[str]:
        for folder in self.FOLDERS:
            path = self.store.path(folder)
            children, stat = self.client.get_children(path, include_data=True)
            seen = self._seen.get(folder)
            if seen is None or seen[0] != stat.cversion:
                self._seen[folder] = (stat.cversion, self._check(folder, path, children))
        return set(self._seen["physical"][1])

    def _check(self, folder: str, base: str, children: list[str]) -> set[str]:
        accepted = set()
        named = []
        for name in children:
            problem = self.name_problem(name)
            if problem:
                self._remove(f"{base}/{name}", "registration_name",
                             f"{folder}/{name[:60]!r}: {problem[:120]}")
            else:
                named.append(name)
        reads = [(n, self.client.get_async(f"{base}/{n}"),
                  self.client.get_acls_async(f"{base}/{n}")) for n in named]
        for name, data_r, acl_r in reads:
            path = f"{base}/{name}"
            try:
                acls, stat = acl_r.get()
                data, _ = data_r.get()
            except NoNodeError:
                continue
            except NoAuthError:
                self._remove(path, "registration_acl", f"{folder}/{name}: this master "
                             f"may not read it")
                continue
            if stat.numChildren:
                self.refusals.refuse("registration_subtree",
                                     f"{folder}/{name} has {stat.numChildren} children")
                if not self._delete_children(path):
                    continue
            if folder == "physical" and not _registration(data):
                self._remove(path, "registration_data",
                             f"{folder}/{name} holds {len(data)} bytes that are not a "
                             f"registration")
                continue
            if self.policy is not None and set(acls) != set(self.policy.acl(path)):
                self.refusals.refuse("registration_acl", f"{folder}/{name} has the ACL "
                                     f"{_acl_text(acls)}")
                try:
                    self.client.set_acls(path, self.policy.acl(path))
                except NoNodeError:
                    continue
                except NoAuthError:
                    self._remove(path, None, "")
                    continue
            accepted.add(name)
        return accepted

    def _delete_children(self, path: str) -> bool:
        try:
            for child in self.client.get_children(path):
                self.client.delete(f"{path}/{child}", recursive=True)
            return True
        except NoNodeError:
            return True
        except NoAuthError:
            return False

    def _remove(self, path: str, reason: str | None, detail: str) -> None:
        if reason:
            self.refusals.refuse(reason, detail)
        try:
            self.client.delete(path, recursive=True)
        except NoNodeError:
            pass
        except (NoAuthError, NotEmptyError):
            self._locked_log.warning("locked", "cannot delete %s from ZooKeeper: its ACL "
                                     "shuts this master out; it is ignored", path[:200])


def _registration(data: bytes) -> bool:
    """``data`` looks like what a node registers (node/physical_node.py): a JSON object
    naming its host."""
    if len(data) > MAX_REGISTRATION_BYTES:
        return False
    try:
        info = json.loads(data)
    except ValueError:
        return False
    return isinstance(info, dict) and isinstance(info.get("host"), str) and \
        0 < len(info["host"]) <= MAX_HOST


def _acl_text(acls) -> str:
    return ", ".join(f"{a.id.scheme}:{a.id.id[:40]}={a.perms}" for a in acls)
