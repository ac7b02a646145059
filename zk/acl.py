"""Who may do what in ZooKeeper: the two roles, their credentials, the ACL of every path.

Two roles authenticate with ZooKeeper's built-in ``digest`` scheme (no server
configuration needed):

* ``master``: everything under the root.
* ``node``: read the specs (``logical/``), mappings and choke limits; create and delete
  children of ``physical/`` and ``status/`` (its registration and status), then read and
  write them (READ|WRITE: no CREATE below them, no ADMIN); everything but ADMIN under
  ``commits/`` (the end-to-end commit log, written by agents and collectors). Nothing
  else: no write to ``logical/``, ``mappings/``, ``chokes/``, ``ports/``, and no access at
  all to ``commands/`` and ``election/``.

Anyone else (ZooKeeper's ``world:anyone``) gets nothing, not even READ: specs may hold
secrets. ZooKeeper ACLs are per znode and not inherited, so every create passes the ACL of
its path (:meth:`AclPolicy.acl`); :func:`protect_tree` sets them on a tree made before.

What ZooKeeper cannot express: the ACL of a new znode is whatever its creator sends, so a
client holding the node credential can create a child of ``physical/``, ``status/`` or
``commits/`` that grants itself ADMIN or the world everything. The master therefore checks
the children of ``physical/`` and ``status/`` (master/server.py) and repairs their ACLs;
``commits/`` is too large to check and is bounded by the quota only (:func:`set_quota`).

On a managed ZooKeeper the master also owns the server: :func:`lock_server` gives ``/``
and ``/zookeeper`` world READ and the masters ALL (out of the box both grant the world
everything, so anyone reaching the port could fill the server's memory), and
:func:`set_quota` puts a hard quota on the root.

Credentials come from an auth file, one ``role=user:password`` a line (``#`` comments),
readable by its owner only (refused otherwise, as ssh refuses a private key)::

    master=flume-master:9pQ...   (a master's file: both lines)
    node=flume-node:Xk2...       (a node's file: this line only)
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import stat as stat_mod
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from kazoo.exceptions import NoAuthError, NoNodeError
from kazoo.security import (ACL, OPEN_ACL_UNSAFE, Id, Permissions,
                            make_digest_acl_credential)

from .client import ZkError
from .errors import CoordinationError

log = logging.getLogger(__name__)

ROLES = ("master", "node")
MIN_PASSWORD = 16
# what a node may do on the znodes it creates and on the commit log: everything but ADMIN,
# so that it can never take the master's access away by changing an ACL
NODE_RWCD = Permissions.READ | Permissions.WRITE | Permissions.CREATE | Permissions.DELETE
# a node's registration and status: leaves it reads and rewrites; deleting them takes
# DELETE on the folder, and CREATE would let a node hang a sub-tree below them
NODE_OWN = Permissions.READ | Permissions.WRITE
# outside the root on a managed ZooKeeper: anyone may look, only masters may change
SERVER_PATHS = ("/", "/zookeeper", "/zookeeper/quota")
QUOTA_PATH = "/zookeeper/quota"
PROTECT_BATCH = 500     # znodes whose ACL is read at once by protect_tree


class AuthFileError(CoordinationError):
    """An auth file is missing, unsafe or malformed."""


@dataclass(frozen=True)
class Credential:
    """One role's ``user:password`` for ZooKeeper's digest scheme."""

    user: str
    password: str

    @property
    def id(self) -> Id:
        """The ACL id ZooKeeper gives a session authenticated with this credential."""
        return Id("digest", make_digest_acl_credential(self.user, self.password))

    @property
    def auth_data(self) -> tuple[str, str]:
        """For ``KazooClient(auth_data=[...])``."""
        return ("digest", f"{self.user}:{self.password}")

    def line(self, role: str) -> str:
        return f"{role}={self.user}:{self.password}"

    @classmethod
    def parse(cls, value: str, where: str = "credential") -> "Credential":
        user, colon, password = value.strip().partition(":")
        if not colon or not user or len(password) < MIN_PASSWORD or any(
                c.isspace() for c in value.strip()):
            raise AuthFileError(f"{where}: expected USER:PASSWORD with a password of "
                                f"{MIN_PASSWORD} characters or more and no spaces")
        return cls(user, password)


def read_auth_file(path: str | os.PathLike, need: tuple[str, ...] = ()) -> dict[str, Credential]:
    """The credentials in ``path`` by role. Refuses a file that its group or others may
    read or write, a malformed line, an unknown or repeated role, and a file lacking a
    role of ``need``."""
    p = Path(path)
    try:
        st = p.stat()
        if st.st_mode & 0o077:
            raise AuthFileError(
                f"{p} is accessible by others (mode {stat_mod.filemode(st.st_mode)}): "
                f"it holds ZooKeeper passwords; chmod 600 {p}")
        text = p.read_text()
    except OSError as exc:
        raise AuthFileError(f"cannot read auth file {p}: {exc.strerror}") from None
    creds: dict[str, Credential] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        role, eq, value = line.partition("=")
        role = role.strip()
        if not eq or role not in ROLES:
            raise AuthFileError(f"{p}:{n}: expected master=USER:PASSWORD or "
                                f"node=USER:PASSWORD")
        if role in creds:
            raise AuthFileError(f"{p}:{n}: a second {role} line")
        creds[role] = Credential.parse(value, f"{p}:{n}")
    missing = [r for r in need if r not in creds]
    if missing:
        raise AuthFileError(f"{p} has no {' and no '.join(missing)} line "
                            f"({' and '.join(f'{r}=USER:PASSWORD' for r in missing)})")
    if "master" in creds and "node" in creds and creds["master"].user == creds["node"].user:
        raise AuthFileError(f"{p}: the master and node credentials need different users")
    return creds


def write_auth_file(path: Path, creds: dict[str, Credential]) -> None:
    """Write ``creds`` to a new file of mode 0600 (never over an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# ZooKeeper credentials of Flume (docs/security.md)\n")
        f.write("".join(c.line(r) + "\n" for r, c in creds.items()))


def managed_credentials(directory: Path) -> dict[str, Credential]:
    """The credentials of a master's managed ZooKeeper: read from ``directory/zk-auth``,
    generated there on first use, with ``directory/zk-auth-node`` (the node line only, for
    ``flume node --zk-auth-file``)."""
    master_file, node_file = directory / "zk-auth", directory / "zk-auth-node"
    if not master_file.exists():
        creds = {"master": Credential("flume-master", secrets.token_urlsafe(24)),
                 "node": Credential("flume-node", secrets.token_urlsafe(24))}
        directory.mkdir(parents=True, exist_ok=True)
        write_auth_file(master_file, creds)
        log.info("generated ZooKeeper credentials in %s", master_file)
    creds = read_auth_file(master_file, need=ROLES)
    if not node_file.exists():
        write_auth_file(node_file, {"node": creds["node"]})
    return creds


class AclPolicy:
    """The ACL every znode of the layout (zk/store.py) gets, by path.

    ``masters``: the ids given ALL; ``node``: the node role's id (None: the policy of a
    node, which never grants anything to a node id other than its own). No master id
    means an open tree: every znode is created ``world:anyone`` as before."""

    def __init__(self, root: str, masters: list[Id], node: Id | None):
        self.root = root.rstrip("/") or "/flume"
        self.masters = list(masters)
        self.node = node

    @classmethod
    def for_master(cls, root: str, creds: dict[str, Credential]) -> "AclPolicy":
        return cls(root, [creds["master"].id], creds["node"].id)

    def publish(self, client) -> None:
        """Write the master ids into the root's data, where nodes learn them (ZooKeeper
        shows a digest id only to a session with ADMIN, so a node cannot read them from
        the ACLs)."""
        data = json.dumps({"masters": sorted(m.id for m in self.masters)}).encode()
        if client.get(self.root)[0] != data:
            client.set(self.root, data)

    @classmethod
    def learn(cls, client, root: str, cred: Credential | None) -> "AclPolicy | None":
        """A node's policy: the tree is protected when the root's ACL names no
        ``world`` id, and the master ids are those the masters published in the root's
        data (:meth:`publish`). None: the root does not exist yet. NoAuthError when this
        session may not read the root (no credential, or the wrong one); ZkError when no
        master published its ids."""
        try:
            acls, _ = client.get_acls(root)
            raw, _ = client.get(root)
        except NoNodeError:
            return None
        if any(a.id.scheme == "world" for a in acls):
            return cls(root, [], None)      # an open tree
        try:
            masters = [Id("digest", m) for m in json.loads(raw)["masters"]]
        except (ValueError, KeyError, TypeError):
            masters = []
        if not masters:
            raise ZkError(f"{root} is protected by ACLs but names no master ids in its "
                          f"data: start a master with credentials first")
        return cls(root, masters, cred.id if cred else None)

    @property
    def protected(self) -> bool:
        return bool(self.masters)

    def _acl(self, node_perms: int) -> list[ACL]:
        acl = [ACL(Permissions.ALL, m) for m in self.masters]
        if node_perms and self.node is not None:
            acl.append(ACL(node_perms, self.node))
        return acl

    def acl(self, path: str) -> list[ACL]:
        """The ACL of ``path`` (a path above the root gets the root's)."""
        if not self.masters:
            return OPEN_ACL_UNSAFE
        R = Permissions.READ
        if path != self.root and not path.startswith(self.root + "/"):
            return self._acl(R)
        parts = path[len(self.root):].strip("/").split("/")
        top = parts[0]
        if top == "commits":
            return self._acl(NODE_RWCD)
        if top in ("physical", "status"):
            # the folder: a node adds and removes its own child; the child: the node's
            return self._acl(Permissions.CREATE | Permissions.DELETE if len(parts) == 1
                             else NODE_OWN)
        if top in ("", "logical", "mappings", "chokes"):
            return self._acl(R)
        return self._acl(0)                 # commands, election, ports: masters only


def lock_server(client, masters: list[Id]) -> int:
    """Give ``/``, ``/zookeeper`` and ``/zookeeper/quota`` world READ and ``masters`` ALL
    (only for a ZooKeeper this master runs: an ensemble shared with others is theirs to
    lock). How many ACLs changed."""
    want = [ACL(Permissions.READ, Id("world", "anyone"))] + [
        ACL(Permissions.ALL, m) for m in masters]
    client.ensure_path(QUOTA_PATH)
    changed = 0
    for path in SERVER_PATHS:
        if set(client.get_acls(path)[0]) != set(want):
            client.set_acls(path, want)
            changed += 1
    return changed


def _quota_value(count: int, nbytes: int) -> bytes:
    # ZooKeeper's StatsTrack text: the hard limits are the enforced ones
    return f"count=-1,bytes=-1,countHardLimit={count},byteHardLimit={nbytes}".encode()


def set_quota(client, path: str, count: int, nbytes: int) -> None:
    """Put a hard quota on the tree at ``path``: at most ``count`` znodes and ``nbytes``
    bytes of data (path names are not counted: ZooKeeper counts data only). Enforced by a
    server started with ``zookeeper.enforceQuota=true`` (zk/server.py), which answers a
    create or set past it with QuotaExceeded; any other server only logs it. Writes
    ZooKeeper's own quota znodes, as its ``setquota`` command does."""
    base = QUOTA_PATH + path.rstrip("/")
    limits, stats = f"{base}/zookeeper_limits", f"{base}/zookeeper_stats"
    client.ensure_path(base)
    value = _quota_value(count, nbytes)
    try:
        if client.get(limits)[0] != value:
            client.set(limits, value)
    except NoNodeError:
        client.create(limits, value)
    if client.exists(stats) is None:
        # ZooKeeper fills in the current usage when this znode is created
        client.create(stats, b"count=0,bytes=0")


def acl_of(client, path: str) -> list[ACL] | None:
    """The ACL of ``path``; None when there is no such znode."""
    try:
        return client.get_acls(path)[0]
    except NoNodeError:
        return None


def protect_tree(client, root: str, policy: AclPolicy,
                 skip: Collection[str] = ()) -> tuple[int, int]:
    """Give every znode under ``root`` (and the root) the ACL of its path: (znodes
    checked, znodes changed). Idempotent; one pass, level by level, the reads of a level
    pipelined; it costs about one round trip per ``PROTECT_BATCH`` znodes. The children
    of a path in ``skip`` are not walked (the path itself is checked). The root's ACL is
    set last, so a root with the right ACL tells that the pass ended under it. A znode
    this session may not read is reported, not fixed (on the managed ZooKeeper the master
    is the super user and may read everything); NoAuthError when that znode is the
    root."""
    checked = changed = denied = 0
    root_acl = None
    level = [root]
    while level:
        nxt: list[str] = []
        for i in range(0, len(level), PROTECT_BATCH):
            batch = level[i:i + PROTECT_BATCH]
            acls = [client.get_acls_async(p) for p in batch]
            kids = [client.get_children_async(p) for p in batch]
            sets = []
            for path, a, k in zip(batch, acls, kids):
                try:
                    current, _ = a.get()
                    children = k.get()
                except NoNodeError:
                    continue
                except NoAuthError:
                    denied += 1
                    continue
                checked += 1
                want = policy.acl(path)
                if set(current) == set(want):
                    pass
                elif path == root:
                    root_acl = want
                else:
                    sets.append((path, client.set_acls_async(path, want)))
                if path not in skip:
                    nxt.extend(f"{path.rstrip('/')}/{c}" for c in children)
            for path, r in sets:
                try:
                    r.get()
                    changed += 1
                except NoNodeError:
                    pass
                except NoAuthError:
                    denied += 1
        if not checked and level == [root] and denied:
            raise NoAuthError(f"no access to {root}")
        level = nxt
    if root_acl is not None:
        client.set_acls(root, root_acl)
        changed += 1
    if denied:
        log.warning("ZooKeeper refused this master %d znode(s) under %s: their ACLs do "
                    "not name the master credential and were left as they are", denied, root)
    return checked, changed
