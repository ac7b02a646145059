"""The configuration store: every path of the ZooKeeper layout lives here and nowhere else.

Layout under the root (default ``/flume``), whose own data holds the master ids nodes
grant access to what they create (zk/acl.py)::

    logical/<name>            {"flow", "source", "sink", "tsource", "tsink"} one znode per
                              logical node; its znode version is the spec version
    mappings/<physical>       ["logical", ...]   logical nodes a physical node runs
    physical/<physical>       ephemeral {"host", "pid", "http_port", ...}: the node is alive
    status/<physical>         {"logical": {name: {...state...}}, "updated": ms}
    commands/cmd-<seq>        {"command", "args", "state", "message", ...}
    ports/<physical>/<port>   a port handed to a logicalSource, data = logical name
    chokes/<physical>         {"choke id": kbps}
    election/                 the master leader election
    commits/                  the end-to-end commit log: zk/commit_log.py owns it
                              (reached as ``ConfigStore.commits``)

Every read-modify-write is a compare-and-set on the znode version, retried on conflict;
writes of several znodes are transactions. Functions that change state succeed or raise.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.handlers.threading import KazooTimeoutError

from .client import KAZOO_ERRORS, ConflictError, ZkError, as_zk_error, wait_connected
from .commit_log import CommitLog

CAS_TRIES = 50
COMMANDS_KEPT = 1000


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _loads(raw: bytes):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


@dataclass
class LogicalConfig:
    """A logical node's spec as entered and as translated, with its flow and version."""

    name: str
    source: str = "null"
    sink: str = "null"
    flow: str = "default-flow"
    tsource: str | None = None
    tsink: str | None = None
    refresh: int = 0           # bumped by ``refresh``: the node restarts the flow
    version: int = -1

    @property
    def running_source(self) -> str:
        return self.tsource if self.tsource is not None else self.source

    @property
    def running_sink(self) -> str:
        return self.tsink if self.tsink is not None else self.sink

    def data(self) -> dict:
        d = asdict(self)
        d.pop("name")
        d.pop("version")
        return d


@dataclass
class Command:
    id: str
    command: str
    args: list = field(default_factory=list)
    state: str = "QUEUED"
    message: str = ""
    submitted: int = 0
    finished: int | None = None
    by: str = ""


class _Retrying:
    """The kazoo client with the one retry policy applied to every znode operation
    (connection loss and session expiry are retried; real answers are not), and what
    still fails raised as a ZkError (``zk.client.as_zk_error``: it stays an instance of its
    kazoo class for the handlers in zk/)."""

    RETRIED = frozenset({"get", "set", "create", "delete", "get_children", "exists",
                         "ensure_path"})
    # How long one attempt waits for its answer. While the connection is down kazoo queues
    # a request and waits without end; past this the operation fails (not retried: the
    # queued request may still be applied once ZooKeeper is back, so its outcome is unknown).
    ANSWER_TIMEOUT = 10.0

    def __init__(self, client: KazooClient):
        self._client = client

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name not in self.RETRIED:
            return attr
        start = getattr(self._client, name + "_async")

        def attempt(*args, **kwargs):
            if kwargs.get("recursive"):     # several requests, made by the blocking call
                return attr(*args, **kwargs)
            return start(*args, **kwargs).get(timeout=self.ANSWER_TIMEOUT)

        def call(*args, **kwargs):
            try:
                return self._client.retry(attempt, *args, **kwargs)
            except KazooTimeoutError as exc:
                raise ZkError(f"ZooKeeper did not answer a {name} within "
                              f"{self.ANSWER_TIMEOUT:.0f} s (its outcome is unknown: a "
                              f"write may still be applied when ZooKeeper is back)") from exc
            except KAZOO_ERRORS as exc:
                raise as_zk_error(exc) from exc
        return call


class ConfigStore:
    """Typed access to the layout above through one kazoo client."""

    def __init__(self, client: KazooClient, root: str = "/flume"):
        self.client = client
        self.zk = _Retrying(client)
        self.root = root.rstrip("/") or "/flume"
        self.commits = CommitLog(client, self.zk, self.root)
        self.disconnections = 0         # times the connection was lost (SUSPENDED or LOST)
        was = [client.state == KazooState.CONNECTED]

        def count(state) -> None:
            if state != KazooState.CONNECTED and was[0]:
                self.disconnections += 1
            was[0] = state == KazooState.CONNECTED
        client.add_listener(count)

    def connected(self, wait: float = 0.0) -> bool:
        """Whether the client is connected, waiting ``wait`` seconds at most for it to
        reconnect (:func:`zk.client.wait_connected`)."""
        return wait_connected(self.client, wait)

    def check_access(self) -> None:
        """Read the root folder: AccessDenied when its ACLs do not name this client's
        credential (a tree protected for other masters or nodes)."""
        self.zk.get_children(self.root)

    # ------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def logical_path(self, name: str) -> str:
        return self.path("logical", name)

    def mapping_path(self, physical: str) -> str:
        return self.path("mappings", physical)

    def physical_path(self, physical: str) -> str:
        return self.path("physical", physical)

    def status_path(self, physical: str) -> str:
        return self.path("status", physical)

    @property
    def election_path(self) -> str:
        return self.path("election")

    def ensure_layout(self) -> None:
        for part in ("logical", "mappings", "physical", "status", "commands", "ports",
                     "chokes", "election", "commits"):
            self.zk.ensure_path(self.path(part))

    # ------------------------------------------------------------ logical nodes
    def get_logical(self, name: str) -> LogicalConfig | None:
        try:
            raw, stat = self.zk.get(self.logical_path(name))
        except NoNodeError:
            return None
        return self.parse_logical(name, raw, stat.version)

    @staticmethod
    def parse_logical(name: str, raw: bytes, version: int) -> LogicalConfig:
        """The config a ``logical/<name>`` znode holds (``raw``, at ``version``); keys it
        does not know are ignored, bad JSON (or JSON that is not an object) gives the
        defaults."""
        d = _loads(raw)
        d = d if isinstance(d, dict) else {}
        known = {k: d[k] for k in ("source", "sink", "flow", "tsource", "tsink", "refresh")
                 if k in d}
        return LogicalConfig(name=name, version=version, **known)

    def list_logical(self) -> dict[str, LogicalConfig]:
        out = {}
        for name in sorted(self.zk.get_children(self.path("logical"))):
            cfg = self.get_logical(name)
            if cfg is not None:
                out[name] = cfg
        return out

    def put_logical(self, cfg: LogicalConfig) -> int:
        """Create or replace a logical node's config; returns the new version."""
        path = self.logical_path(cfg.name)
        data = _dumps(cfg.data())
        for _ in range(CAS_TRIES):
            try:
                _, stat = self.zk.get(path)
            except NoNodeError:
                try:
                    self.zk.create(path, data, makepath=True)
                    return 0
                except NodeExistsError:
                    continue
            try:
                return self.zk.set(path, data, version=stat.version).version
            except (BadVersionError, NoNodeError):
                continue
        raise ConflictError(f"could not update {cfg.name}: too many concurrent writers")

    def put_many(self, cfgs: list[LogicalConfig], chunk: int = 200) -> None:
        """Create or replace many configs, ``chunk`` znodes per transaction."""
        existing = set(self.zk.get_children(self.path("logical")))
        for i in range(0, len(cfgs), chunk):
            def commit(part=cfgs[i:i + chunk]):
                tx = self.zk.transaction()
                for cfg in part:
                    if cfg.name in existing:
                        tx.set_data(self.logical_path(cfg.name), _dumps(cfg.data()))
                    else:
                        tx.create(self.logical_path(cfg.name), _dumps(cfg.data()))
                return tx.commit()
            # retried like single operations: a transaction whose answer was lost with the
            # connection but that was applied fails its creates when it runs again
            results = self.client.retry(commit)
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                # a concurrent create/delete: fall back to one compare-and-set per znode
                for cfg in cfgs[i:i + chunk]:
                    self.put_logical(cfg)

    def update_logical(self, name: str, change) -> LogicalConfig | None:
        """Apply ``change(LogicalConfig | None) -> LogicalConfig | None`` to ``name``'s
        config with compare-and-set (None as input: no config yet; None as output: leave it
        as it is). Returns the stored config with its new version, or None if unchanged."""
        path = self.logical_path(name)
        for _ in range(CAS_TRIES):
            try:
                raw, stat = self.zk.get(path)
                old = self.parse_logical(name, raw, stat.version)
            except NoNodeError:
                old = None
            new = change(old)
            if new is None:
                return None
            data = _dumps(new.data())
            version = 0 if old is None else old.version + 1
            try:
                if old is None:
                    self.zk.create(path, data, makepath=True)
                else:
                    version = self.zk.set(path, data, version=old.version).version
            except (BadVersionError, NoNodeError, NodeExistsError):
                if not self._holds(path, data, version):
                    continue
            return LogicalConfig(**{**new.data(), "name": name, "version": version})
        raise ConflictError(f"could not update {name}: too many concurrent writers")

    def _holds(self, path: str, data: bytes, version: int) -> bool:
        """After a compare-and-set lost: whether ``path`` holds exactly ``data`` at the
        ``version`` our write would have made. Then it was our write, applied, whose answer
        was lost with the connection; the retry lost against it, and applying the change
        again (a refresh counted twice) would be wrong. (A concurrent writer that made the
        very same bytes from the same version is taken for us: the outcome is the same.)"""
        try:
            raw, stat = self.zk.get(path)
        except NoNodeError:
            return False
        return raw == data and stat.version == version

    def set_translation(self, name: str, tsource: str | None, tsink: str | None,
                        expected_version: int) -> bool:
        """Record a translation computed from version ``expected_version``; False if the
        config changed meanwhile (the translator then recomputes)."""
        try:
            raw, stat = self.zk.get(self.logical_path(name))
        except NoNodeError:
            return False
        if stat.version != expected_version:
            return False
        cfg = self.parse_logical(name, raw, stat.version)
        cfg.tsource, cfg.tsink = tsource, tsink
        try:
            self.zk.set(self.logical_path(name), _dumps(cfg.data()), version=stat.version)
            return True
        except (BadVersionError, NoNodeError):
            return False

    def delete_logical(self, name: str) -> bool:
        try:
            self.zk.delete(self.logical_path(name))
            return True
        except NoNodeError:
            return False

    # ------------------------------------------------------------ mappings
    def get_mapping(self, physical: str) -> list[str]:
        try:
            raw, _ = self.zk.get(self.mapping_path(physical))
        except NoNodeError:
            return []
        return list(_loads(raw) or [])

    def list_mappings(self) -> dict[str, list[str]]:
        return {p: self.get_mapping(p)
                for p in sorted(self.zk.get_children(self.path("mappings")))}

    def update_mapping(self, physical: str, change) -> list[str]:
        """Apply ``change(list) -> list`` to a mapping with compare-and-set."""
        path = self.mapping_path(physical)
        for _ in range(CAS_TRIES):
            try:
                raw, stat = self.zk.get(path)
            except NoNodeError:
                new = change([])
                try:
                    self.zk.create(path, _dumps(new), makepath=True)
                    return new
                except NodeExistsError:
                    continue
            new = change(list(_loads(raw) or []))
            try:
                self.zk.set(path, _dumps(new), version=stat.version)
                return new
            except (BadVersionError, NoNodeError):
                continue
        raise ConflictError(f"could not update the mapping of {physical}")

    def map(self, physical: str, logical: str) -> list[str]:
        return self.update_mapping(physical,
                                   lambda m: m if logical in m else m + [logical])

    def unmap(self, physical: str, logical: str) -> list[str]:
        return self.update_mapping(physical, lambda m: [x for x in m if x != logical])

    def ensure_mapping(self, physical: str, default: list[str]) -> None:
        """Create the mapping with ``default`` if the physical node has none yet."""
        try:
            self.zk.create(self.mapping_path(physical), _dumps(default), makepath=True)
        except NodeExistsError:
            pass

    def ensure_default_mappings(self, accept=None) -> list[str]:
        """Map every live physical node that has no mapping to a logical node named like
        it (a node may not write ``mappings/`` itself when ACLs are on); the names mapped.
        ``accept``: the physical names that may be mapped (None: every one)."""
        alive = set(self.zk.get_children(self.path("physical")))
        if accept is not None:
            alive &= set(accept)
        unmapped = sorted(alive - set(self.zk.get_children(self.path("mappings"))))
        for physical in unmapped:
            self.ensure_mapping(physical, [physical])
        return unmapped

    # ------------------------------------------------------------ physical nodes
    def register_physical(self, physical: str, info: dict) -> None:
        """Announce a live physical node (ephemeral: it disappears with the session)."""
        path = self.physical_path(physical)
        try:
            self.zk.create(path, _dumps(info), ephemeral=True, makepath=True)
        except NodeExistsError:
            # our own previous session may still hold it until it expires
            try:
                _, stat = self.zk.get(path)
                if stat.ephemeralOwner == self.zk.client_id[0]:
                    self.zk.set(path, _dumps(info))
                    return
                self.zk.delete(path)
            except NoNodeError:
                pass
            self.zk.create(path, _dumps(info), ephemeral=True, makepath=True)

    def unregister_physical(self, physical: str) -> None:
        """Withdraw a live physical node's registration (a clean exit)."""
        try:
            self.zk.delete(self.physical_path(physical))
        except NoNodeError:
            pass

    def list_physical(self) -> dict[str, dict]:
        out = {}
        for p in sorted(self.zk.get_children(self.path("physical"))):
            try:
                raw, _ = self.zk.get(self.physical_path(p))
            except NoNodeError:
                continue
            out[p] = _loads(raw) or {}
        return out

    # ------------------------------------------------------------ status
    def put_status(self, physical: str, status: dict) -> None:
        path = self.status_path(physical)
        data = _dumps(status)
        try:
            self.zk.set(path, data)
        except NoNodeError:
            try:
                self.zk.create(path, data, makepath=True)
            except NodeExistsError:
                self.zk.set(path, data)

    def get_status(self, physical: str) -> dict:
        try:
            raw, _ = self.zk.get(self.status_path(physical))
        except NoNodeError:
            return {}
        return _loads(raw) or {}

    def list_status(self) -> dict[str, dict]:
        return {p: self.get_status(p)
                for p in sorted(self.zk.get_children(self.path("status")))}

    def delete_physical(self, physical: str) -> None:
        """Forget a physical node entirely (purge): mapping, status and ports."""
        for path in (self.mapping_path(physical), self.status_path(physical)):
            try:
                self.zk.delete(path)
            except NoNodeError:
                pass
        try:
            self.zk.delete(self.path("ports", physical), recursive=True)
        except NoNodeError:
            pass

    # ------------------------------------------------------------ commands
    def new_command(self, command: str, args: list, by: str = "") -> Command:
        cmd = Command(id="", command=command, args=list(args), state="QUEUED",
                      submitted=int(time.time() * 1000), by=by)
        data = asdict(cmd)
        data.pop("id")
        path = self.zk.create(self.path("commands", "cmd-"), _dumps(data), sequence=True,
                              makepath=True)
        cmd.id = path.rsplit("cmd-", 1)[1].lstrip("0") or "0"
        return cmd

    def _command_path(self, cmd_id: str) -> str:
        return self.path("commands", f"cmd-{int(cmd_id):010d}")

    def update_command(self, cmd: Command) -> None:
        data = asdict(cmd)
        data.pop("id")
        self.zk.set(self._command_path(cmd.id), _dumps(data))

    def get_command(self, cmd_id: str) -> Command | None:
        try:
            raw, _ = self.zk.get(self._command_path(cmd_id))
        except (NoNodeError, ValueError):
            return None
        return Command(id=str(int(cmd_id)), **(_loads(raw) or {}))

    def command_ids(self) -> list[str]:
        """The ids of the commands kept (at most ``COMMANDS_KEPT`` after a trim), oldest
        first."""
        return [n.split("-", 1)[1] for n in sorted(self.zk.get_children(self.path("commands")))]

    def list_commands(self, limit: int = 100) -> list[Command]:
        out = []
        for cid in reversed(self.command_ids()[-limit:]):
            c = self.get_command(cid)
            if c is not None:
                out.append(c)
        return out

    def session_state(self) -> str:
        """The ZooKeeper session's state: CONNECTED, SUSPENDED (connection lost, the
        session may still be recovered) or LOST (expired or closed)."""
        return str(self.client.state)

    def trim_commands(self, keep: int = COMMANDS_KEPT) -> int:
        names = sorted(self.zk.get_children(self.path("commands")))
        old = names[:-keep] if len(names) > keep else []
        for n in old:
            try:
                self.zk.delete(self.path("commands", n))
            except NoNodeError:
                pass
        return len(old)

    # ------------------------------------------------------------ ports
    def port_of(self, physical: str, logical: str) -> int | None:
        base = self.path("ports", physical)
        try:
            children = self.zk.get_children(base)
        except NoNodeError:
            return None
        for c in children:
            try:
                raw, _ = self.zk.get(f"{base}/{c}")
            except NoNodeError:
                continue
            if raw.decode() == logical:
                return int(c)
        return None

    def ports_of(self, physical: str) -> dict[str, int]:
        """Every port handed out on ``physical``: logical name -> port (the lowest, should
        two masters ever have raced for the same name). One read per port znode."""
        base = self.path("ports", physical)
        try:
            children = self.zk.get_children(base)
        except NoNodeError:
            return {}
        out: dict[str, int] = {}
        for c in sorted(children, key=int):
            try:
                raw, _ = self.zk.get(f"{base}/{c}")
            except NoNodeError:
                continue
            out.setdefault(raw.decode(), int(c))
        return out

    def allocate_port(self, physical: str, logical: str, first: int = 35853,
                      avoid: set[int] = frozenset()) -> int:
        """The port of ``logical``'s logicalSource on ``physical`` (allocated once): the
        lowest from ``first`` not handed out on ``physical`` nor in ``avoid``."""
        port = self.port_of(physical, logical)
        if port is not None:
            return port
        base = self.path("ports", physical)
        self.zk.ensure_path(base)
        taken = {int(c) for c in self.zk.get_children(base)} | set(avoid)
        port = first
        while True:
            while port in taken:
                port += 1
            try:
                self.zk.create(f"{base}/{port}", logical.encode())
                return port
            except NodeExistsError:
                taken.add(port)

    # ------------------------------------------------------------ chokes
    def set_choke(self, physical: str, choke: str, kbps: int) -> None:
        path = self.path("chokes", physical)
        for _ in range(CAS_TRIES):
            try:
                raw, stat = self.zk.get(path)
            except NoNodeError:
                try:
                    self.zk.create(path, _dumps({choke: kbps}), makepath=True)
                    return
                except NodeExistsError:
                    continue
            limits = _loads(raw) or {}
            limits[choke] = kbps
            try:
                self.zk.set(path, _dumps(limits), version=stat.version)
                return
            except (BadVersionError, NoNodeError):
                continue
        raise ConflictError(f"could not set choke {choke} on {physical}")

    def get_chokes(self, physical: str) -> dict:
        try:
            raw, _ = self.zk.get(self.path("chokes", physical))
        except NoNodeError:
            return {}
        return _loads(raw) or {}

    # ------------------------------------------------------------ watches
    # kazoo's recipes: each calls its function at once, then on every change, and sets
    # itself again after a reconnection. The functions run on kazoo's thread, so they
    # must only hand the news on (enqueue); one returning False ends its watch.

    def watch_folder(self, part: str, on_change: Callable[[list[str]], bool | None]) -> None:
        """``on_change(children)`` of the folder ``part`` (``physical``, ``mappings``...)."""
        ChildrenWatch(self.client, self.path(part), on_change)

    def watch_mapping(self, physical: str,
                      on_change: Callable[[list[str]], bool | None]) -> None:
        """``on_change(names)``: the logical nodes mapped to ``physical`` ([] when it has
        no mapping)."""
        def call(data, stat, event=None):
            return on_change(list(_loads(data) or []) if data is not None else [])
        DataWatch(self.client, self.mapping_path(physical), call)

    def watch_chokes(self, physical: str, on_change: Callable[[dict], bool | None]) -> None:
        """``on_change(limits)``: ``physical``'s choke limits {choke id: kbps} ({} when
        none are set)."""
        def call(data, stat, event=None):
            return on_change((_loads(data) or {}) if data else {})
        DataWatch(self.client, self.path("chokes", physical), call)

    def watch_logical(self, name: str,
                      on_change: Callable[[LogicalConfig | None, int], bool | None]) -> None:
        """``on_change(config, mzxid)``: ``name``'s config and the zxid of its last change
        (None and 0 when it has none), so a caller can reject one older than it applied."""
        def call(data, stat, event=None):
            if data is None or stat is None:
                return on_change(None, 0)
            return on_change(self.parse_logical(name, data, stat.version), stat.mzxid)
        DataWatch(self.client, self.logical_path(name), call)

    def on_new_session(self, callback: Callable[[], None]) -> None:
        """``callback()`` each time the client connects with a new session after losing
        the previous one (its ephemeral znodes, such as a registration, are gone)."""
        lost = False

        def listener(state) -> None:
            nonlocal lost
            if state == KazooState.LOST:
                lost = True
            elif state == KazooState.CONNECTED and lost:
                lost = False
                callback()
        self.client.add_listener(listener)

    def remove_tree(self) -> None:
        """Delete everything under the root (tests)."""
        try:
            self.zk.delete(self.root, recursive=True)
        except (NoNodeError, NotEmptyError):
            pass


__all__ = ["ConfigStore", "LogicalConfig", "Command", "ZkError", "ConflictError"]
