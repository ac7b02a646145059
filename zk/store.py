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
    commits/claims/<agent>/<seq>      ephemeral, data = collector id: a collector holds the
                                      E2E group in a file not yet complete
    commits/groups/<agent>/<seq>      data = final file: the group is committed (its
                                      existence is the acknowledgement, docs/e2e.md)
    commits/watermark/<agent>         W: every group of the agent below W is committed
    commits/files/<collector>/<id>    {"files": [[hidden, final], ...], ...}: a commit whose
                                      renames may not have happened yet (roll-forward)

Every read-modify-write is a compare-and-set on the znode version, retried on conflict;
writes of several znodes are transactions. Functions that change state succeed or raise.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import quote

from kazoo.client import KazooClient
from kazoo.exceptions import (BadVersionError, KazooException, NodeExistsError, NoNodeError,
                              NotEmptyError, RolledBackError, ZookeeperError)
from kazoo.handlers.threading import KazooTimeoutError

from .client import ConflictError, ZkError

CAS_TRIES = 50
COMMANDS_KEPT = 1000
E2E_TIMEOUT = 15.0      # seconds one pipelined end-to-end request may take
ENSURED_KEPT = 20_000   # parent paths known to exist, remembered (a cache: then forgotten)


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
    (connection loss and session expiry are retried; real answers are not)."""

    RETRIED = frozenset({"get", "set", "create", "delete", "get_children", "exists",
                         "ensure_path"})

    def __init__(self, client: KazooClient):
        self._client = client

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name in self.RETRIED:
            def call(*args, **kwargs):
                return self._client.retry(attr, *args, **kwargs)
            return call
        return attr


class ConfigStore:
    """Typed access to the layout above through one kazoo client."""

    def __init__(self, client: KazooClient, root: str = "/flume"):
        self.client = client
        self.zk = _Retrying(client)
        self.root = root.rstrip("/") or "/flume"
        self._ensured: set[str] = set()
        self._ensured_lock = threading.Lock()

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
        return self._logical(name, raw, stat.version)

    @staticmethod
    def _logical(name: str, raw: bytes, version: int) -> LogicalConfig:
        d = _loads(raw) or {}
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
            tx = self.zk.transaction()
            for cfg in cfgs[i:i + chunk]:
                if cfg.name in existing:
                    tx.set_data(self.logical_path(cfg.name), _dumps(cfg.data()))
                else:
                    tx.create(self.logical_path(cfg.name), _dumps(cfg.data()))
            results = tx.commit()
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
                old = self._logical(name, raw, stat.version)
            except NoNodeError:
                old = None
            new = change(old)
            if new is None:
                return None
            data = _dumps(new.data())
            try:
                if old is None:
                    self.zk.create(path, data, makepath=True)
                    version = 0
                else:
                    version = self.zk.set(path, data, version=old.version).version
            except (BadVersionError, NoNodeError, NodeExistsError):
                continue
            return LogicalConfig(**{**new.data(), "name": name, "version": version})
        raise ConflictError(f"could not update {name}: too many concurrent writers")

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
        cfg = self._logical(name, raw, stat.version)
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

    def list_commands(self, limit: int = 100) -> list[Command]:
        names = sorted(self.zk.get_children(self.path("commands")))[-limit:]
        out = []
        for n in reversed(names):
            c = self.get_command(n.split("-", 1)[1])
            if c is not None:
                out.append(c)
        return out

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

    def allocate_port(self, physical: str, logical: str, first: int = 35853) -> int:
        """The port of ``logical``'s logicalSource on ``physical`` (allocated once)."""
        port = self.port_of(physical, logical)
        if port is not None:
            return port
        base = self.path("ports", physical)
        self.zk.ensure_path(base)
        taken = {int(c) for c in self.zk.get_children(base)}
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

    # ------------------------------------------------------------ end-to-end commits
    # Protocol: docs/e2e.md. Agents and collectors are named by opaque strings, quoted into
    # znode names; seqs are decimal integers.

    @staticmethod
    def _e2e_name(name: str) -> str:
        return quote(name, safe="#:@,+=-_.~") if name not in (".", "..") else quote(name + "~")

    def e2e_path(self, kind: str, owner: str, item: str | int | None = None) -> str:
        """``commits/<kind>/<owner>[/<item>]`` (kind: claims, groups, watermark, files)."""
        parts = ["commits", kind, self._e2e_name(owner)]
        if item is not None:
            parts.append(str(item))
        return self.path(*parts)

    def _e2e_ensure(self, kind: str, owner: str) -> None:
        path = self.e2e_path(kind, owner)
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

    @staticmethod
    def _zk_error(exc: Exception, what: str) -> ZkError:
        return ZkError(f"{what}: {type(exc).__name__} {exc}".rstrip())

    def claim_group(self, agent: str, seq: int, owner: str) -> str:
        """Claim an agent's group for this session: ``"claimed"`` (the claim is ours now
        and the group is not committed), ``"ours"`` (this session already held it),
        ``"held"`` (another live session holds it) or ``"committed"`` (the group is
        committed already: no claim is kept). ZkError when ZooKeeper does not answer.

        The committed checks are read *after* the claim is created, so a group committed
        and then forgotten below the watermark is never taken for uncommitted."""
        return self.begin_claim(agent, seq, owner).result()

    def begin_claim(self, agent: str, seq: int, owner: str) -> "ClaimRequest":
        """Send the requests of :meth:`claim_group` (pipelined) and return at once; the
        caller does other work, then calls ``.result()``."""
        try:
            self._e2e_ensure("claims", agent)
            claim = self.e2e_path("claims", agent, seq)
            c = self.client.create_async(claim, owner.encode(), ephemeral=True)
            g = self.client.exists_async(self.e2e_path("groups", agent, seq))
            w = self.client.get_async(self.e2e_path("watermark", agent))
        except (KazooException, ZookeeperError, KazooTimeoutError) as exc:
            raise self._zk_error(exc, f"claiming group {agent}:{seq}") from exc
        return ClaimRequest(self, agent, seq, claim, c, g, w, owner)

    def claim_exists(self, agent: str, seq: int) -> bool:
        return self.zk.exists(self.e2e_path("claims", agent, seq)) is not None

    def claim_holder(self, agent: str, seq: int) -> str | None:
        """The collector id holding the claim on ``agent``'s group ``seq``; None if none."""
        try:
            data, _ = self.zk.get(self.e2e_path("claims", agent, seq))
        except NoNodeError:
            return None
        return data.decode(errors="replace")

    def reclaim_group(self, agent: str, seq: int, holder: str) -> bool:
        """Delete the claim on ``agent``'s group ``seq`` if collector ``holder`` holds it
        (the agent knows that collector's process is gone while its session lingers).
        True when no claim is left; False when another collector holds it. Safe even if
        ``holder`` is alive after all: a group is committed only by the transaction that
        creates its znode, which succeeds once (docs/e2e.md)."""
        path = self.e2e_path("claims", agent, seq)
        try:
            data, stat = self.zk.get(path)
        except NoNodeError:
            return True
        except (KazooException, ZookeeperError, KazooTimeoutError) as exc:
            raise self._zk_error(exc, f"reading the claim on group {agent}:{seq}") from exc
        if data.decode(errors="replace") != holder:
            return False
        try:
            self.zk.delete(path, version=stat.version)
        except NoNodeError:
            pass
        except BadVersionError:
            return False
        except (KazooException, ZookeeperError, KazooTimeoutError) as exc:
            raise self._zk_error(exc, f"deleting the claim on group {agent}:{seq}") from exc
        return True

    def release_claims(self, groups: list[tuple[str, int]]) -> int:
        """Delete the claims among ``groups`` that this session holds; how many."""
        if not groups:
            return 0
        me = self._session()
        paths = [self.e2e_path("claims", a, s) for a, s in groups]
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
        except (KazooException, ZookeeperError, KazooTimeoutError) as exc:
            raise self._zk_error(exc, "releasing group claims") from exc
        return len(mine)

    def commit_groups(self, collector: str, file_id: str | None, record: dict | None,
                      groups: list[tuple[str, int]], data: bytes = b"") -> tuple[bool, str]:
        """One transaction: every claim of ``groups`` still there, ``groups/<a>/<seq>``
        created for each (``data``), ``files/<collector>/<file_id>`` created with
        ``record`` (unless ``file_id`` is None), the claims deleted.

        ``(True, "")`` applied; ``(False, reason)`` refused (a claim vanished, a group is
        committed already) and nothing changed. When the answer is lost (connection loss,
        session expiry) the outcome is decided by reading the file record back; ZkError
        if that is impossible too (the outcome is then unknown)."""
        try:
            for a in {a for a, _ in groups}:
                self._e2e_ensure("groups", a)
            if file_id is not None:
                self._e2e_ensure("files", collector)
        except (KazooException, ZookeeperError, KazooTimeoutError) as exc:
            raise self._zk_error(exc, "preparing a commit") from exc
        claims = [self.e2e_path("claims", a, s) for a, s in groups]
        tx = self.client.transaction()
        for c in claims:
            tx.check(c, 0)
        for a, s in groups:
            tx.create(self.e2e_path("groups", a, s), data)
        fpath = None
        if file_id is not None:
            fpath = self.e2e_path("files", collector, file_id)
            tx.create(fpath, _dumps(record or {}))
        for c in claims:
            tx.delete(c)
        try:
            results = tx.commit()
        except (KazooException, ZookeeperError, KazooTimeoutError) as exc:
            if fpath is None:
                raise self._zk_error(exc, "committing groups") from exc
            try:   # did it happen? the file record says
                applied = self.zk.exists(fpath) is not None
            except (KazooException, ZookeeperError, KazooTimeoutError) as exc2:
                raise self._zk_error(exc2, "committing a file (outcome unknown)") from exc
            return (True, "") if applied else (False, f"commit lost: {type(exc).__name__}")
        for i, r in enumerate(results):
            if isinstance(r, Exception) and not isinstance(r, RolledBackError):
                n = len(groups)
                if i < n:
                    a, s = groups[i]
                    return False, f"the claim on group {a}:{s} is gone"
                if i < 2 * n:
                    a, s = groups[i - n]
                    return False, f"group {a}:{s} is committed already"
                if fpath is not None and i == 2 * n and isinstance(r, NodeExistsError):
                    return True, ""        # this very commit was applied before
                return False, f"{type(r).__name__} on operation {i}"
        return True, ""

    def file_records(self, collector: str) -> dict[str, dict]:
        """Every recorded commit of ``collector`` whose renames may be pending."""
        base = self.e2e_path("files", collector)
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
            out[n] = _loads(raw) or {}
        return out

    def delete_file_record(self, collector: str, file_id: str) -> None:
        try:
            self.zk.delete(self.e2e_path("files", collector, file_id))
        except NoNodeError:
            pass

    def groups_path(self, agent: str) -> str:
        """The parent of an agent's committed groups (watched by the agent); created."""
        self._e2e_ensure("groups", agent)
        return self.e2e_path("groups", agent)

    def group_committed(self, agent: str, seq: int) -> bool:
        """``agent``'s group ``seq`` is committed (its znode exists; valid for groups the
        agent has not acknowledged yet, whose znodes it never deletes)."""
        return self.zk.exists(self.e2e_path("groups", agent, seq)) is not None

    def list_groups(self, agent: str) -> list[int]:
        try:
            names = self.zk.get_children(self.e2e_path("groups", agent))
        except NoNodeError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def delete_groups(self, agent: str, seqs) -> None:
        """Forget committed groups (only below the watermark: docs/e2e.md)."""
        try:
            for r in [self.client.delete_async(self.e2e_path("groups", agent, s))
                      for s in seqs]:
                try:
                    r.get(E2E_TIMEOUT)
                except NoNodeError:
                    pass
        except (KazooException, ZookeeperError, KazooTimeoutError) as exc:
            raise self._zk_error(exc, f"deleting committed groups of {agent}") from exc

    def get_watermark(self, agent: str) -> int:
        try:
            raw, _ = self.zk.get(self.e2e_path("watermark", agent))
        except NoNodeError:
            return 0
        try:
            return int(raw or b"0")
        except ValueError:
            return 0

    def raise_watermark(self, agent: str, value: int) -> int:
        """Set the agent's watermark to ``value`` unless it is higher already; returns the
        watermark now stored."""
        path = self.e2e_path("watermark", agent)
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

    def remove_tree(self) -> None:
        """Delete everything under the root (tests)."""
        try:
            self.zk.delete(self.root, recursive=True)
        except (NoNodeError, NotEmptyError):
            pass



class ClaimRequest:
    """A claim in flight (:meth:`ConfigStore.begin_claim`)."""

    def __init__(self, store: ConfigStore, agent: str, seq: int, claim: str, c, g, w,
                 owner: str = ""):
        self.store, self.agent, self.seq, self.claim = store, agent, seq, claim
        self.owner = owner
        self._c, self._g, self._w = c, g, w

    def _existing(self) -> str:
        """The claim existed already: ``"ours"`` (this session's), ``"held"`` (another
        collector's, or gone meanwhile: the agent tries again), or ``"claimed"`` after
        replacing a claim of this same collector id left by its previous run (a process
        that is gone and whose session has not expired yet: collector ids are unique,
        and its hidden files were deleted when this run opened)."""
        store = self.store
        try:
            data, stat = store.client.get(self.claim)
        except NoNodeError:
            return "held"
        if stat.ephemeralOwner == store._session():
            return "ours"
        if not self.owner or data.decode(errors="replace") != self.owner:
            return "held"
        try:
            store.client.delete(self.claim, version=stat.version)
            store.client.create(self.claim, self.owner.encode(), ephemeral=True)
        except (NoNodeError, NodeExistsError, BadVersionError):
            return "held"
        return "claimed"

    def result(self) -> str:
        store, seq = self.store, self.seq
        try:
            state = "claimed"
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
        except (KazooException, ZookeeperError, KazooTimeoutError, ValueError) as exc:
            raise store._zk_error(exc, f"claiming group {self.agent}:{seq}") from exc
        if committed and state in ("claimed", "ours"):
            store.release_claims([(self.agent, seq)])
            return "committed"
        return state


__all__ = ["ConfigStore", "LogicalConfig", "Command", "ClaimRequest", "ZkError",
           "ConflictError"]
