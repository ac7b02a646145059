"""The ``flume master`` process: ZooKeeper (managed or given), leader duties, REST API.

Every master serves every request; all state lives in ZooKeeper. Duties that need a single
actor (re-translating specs when collectors or mappings change, trimming the command
history, checking what nodes registered) run on the elected leader and move to another
master when it dies.

A managed ZooKeeper is this master's own server: the master locks ``/`` and
``/zookeeper`` (world READ, master ALL), puts a hard quota on the root (:func:`quota`) and
starts the server again whenever it dies (zk/server.py). An external ensemble is left as
it is outside the root: it is shared with others (docs/security.md says what to do).
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
from pathlib import Path
from typing import Callable

from flume_og.node.component import Metrics
from flume_og.node.errors import FlumeError
from flume_og.node.limits import RateLimitedLog, Refusals
from flume_og.zk.acl import (AclPolicy, Credential, acl_of, lock_server, managed_credentials,
                             protect_tree, set_quota)
from flume_og.zk.client import AccessDenied, connect, zk_errors
from flume_og.zk.election import LeaderElection
from flume_og.zk.registrations import Registrations
from flume_og.zk.server import DEFAULT_HEAP_MB, ManagedZooKeeper
from flume_og.zk.store import ConfigStore

log = logging.getLogger(__name__)

LEADER_SWEEP_SECONDS = 5.0


def quota(heap_mb: int) -> tuple[int, int]:
    """The hard quota of the root on a managed ZooKeeper of ``heap_mb`` MiB: (znodes, data
    bytes). A znode costs the server roughly 1 kB of heap besides its data, and the data is
    held more than once while it is written (requests in flight, the log, snapshots): a
    128 MiB heap died of 28 MiB of data written in 700 kB pieces. So the data quota is an
    eighth of the heap (1024 MiB: 262,144 znodes, 128 MiB of data)."""
    return heap_mb * 256, heap_mb * 1024 * 1024 // 8


class MasterConfigError(FlumeError):
    """The master was asked to start in an unsafe or impossible way."""


def is_loopback(addr: str) -> bool:
    if addr in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def read_token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise MasterConfigError(f"cannot read token file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise MasterConfigError(f"the token in {path} is shorter than 16 characters")
    return token


class LeaderDuties:
    """Runs for election; while leader, checks registrations (:class:`Registrations`)
    and re-translates on topology changes. ``protect`` (if given) runs once each time
    this master becomes the leader, in a thread of its own (the tree's ACLs,
    :meth:`Master.protect`: it may take long on a big tree, and nothing waits for it);
    ``protected`` is set when it has ended."""

    def __init__(self, store: ConfigStore, identifier: str,
                 registrations: Registrations | None = None,
                 protect: Callable[[], None] | None = None):
        self.store = store
        self.identifier = identifier
        self.registrations = registrations
        self.protect = protect
        self.protected = threading.Event()
        self.stop_event = threading.Event()
        self.dirty = threading.Event()
        self.is_leader = False
        self.election = LeaderElection(store, identifier)
        self.thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.dirty.set()
        try:
            self.election.cancel()
        except Exception:
            pass

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.election.run(self._lead)
            except Exception as exc:
                if self.stop_event.is_set():      # the master stops: not a problem
                    log.debug("leader election ended by the stop: %s", exc)
                    return
                log.warning("leader election interrupted: %s", exc)
                self.stop_event.wait(1.0)

    def _mark(self, *_args) -> bool | None:
        if self.stop_event.is_set() or not self.is_leader:
            return False
        self.dirty.set()
        return None

    def _lead(self) -> None:
        from .translate import retranslate
        self.is_leader = True
        log.info("master %s is the leader", self.identifier)
        # status/: a new child there is checked at once (Registrations), not at the sweep
        for part in ("physical", "status", "mappings", "logical"):
            self.store.watch_folder(part, self._mark)
        if self.protect is not None:
            threading.Thread(target=self._protect, name="protect-tree", daemon=True).start()
        try:
            while not self.stop_event.is_set():
                self.dirty.wait(LEADER_SWEEP_SECONDS)
                self.dirty.clear()
                if self.stop_event.is_set():
                    break
                try:
                    accept = self.registrations.check() if self.registrations else None
                    made = self.store.ensure_default_mappings(accept)
                    if made:
                        log.info("mapped new physical node(s) %s to their default logical "
                                 "node", ", ".join(made))
                    retranslate(self.store)
                    self.store.trim_commands()
                except Exception as exc:
                    log.warning("leader sweep failed: %s", exc)
        finally:
            self.is_leader = False

    def _protect(self) -> None:
        try:
            self.protect()
        except Exception as exc:
            log.warning("setting the ZooKeeper ACLs of the tree failed (the next leader "
                        "tries again): %s", exc)
        finally:
            self.protected.set()


class Master:
    """A master process's parts, started and stopped together."""

    def __init__(self, data_dir: Path, zk_hosts: str | None = None, zk_port: int = 3181,
                 root: str = "/flume", bind: str = "127.0.0.1", http_port: int = 35871,
                 token: str | None = None, name: str | None = None,
                 zk_auth: dict[str, Credential] | None = None, zk_insecure: bool = False,
                 zk_bind: str = "127.0.0.1", read_token: str | None = None,
                 allowed_hosts: tuple[str, ...] = (), max_body: int | None = None,
                 limits=None, zk_heap_mb: int = DEFAULT_HEAP_MB,
                 advertise: str | None = None, tls=None, insecure_http: bool = False,
                 zk_tls=None, zk_server_tls=None, history_interval: float = 5.0):
        """``zk_auth``: the master and node credentials (zk/acl.py); without them the
        managed ZooKeeper uses generated ones, and an external ensemble is refused unless
        ``zk_insecure`` (its tree is then open to anyone reaching ZooKeeper).
        ``zk_heap_mb``: the Java heap of the managed ZooKeeper (its quota follows).
        ``advertise``: the host name nodes on other hosts reach this one by, handed out with
        the managed ZooKeeper's port (default: its bound address, or this host's name when
        it listens on every address). A master listening beyond loopback with a managed
        ZooKeeper on loopback is refused: no node elsewhere could reach it.
        ``tls``: the server context of the REST API and console
        (:func:`node.http_server.tls_context`); listening beyond loopback without it is
        refused unless ``insecure_http`` (tokens would cross the network in clear).
        ``zk_tls``: how to reach ZooKeeper over TLS (:class:`zk.client.TlsSettings`);
        ``zk_server_tls``: the files a managed ZooKeeper serves TLS only with
        (:class:`zk.server.ServerTls`)."""
        if not is_loopback(bind) and not token:
            raise MasterConfigError(
                f"refusing to listen on {bind} without an access token: create one "
                f"(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "
                f"token) and pass --token-file token")
        if not zk_hosts and not is_loopback(bind) and is_loopback(zk_bind):
            raise MasterConfigError(
                f"refusing to listen on {bind} with the managed ZooKeeper on {zk_bind}: "
                f"nodes on other hosts ask this master where ZooKeeper is and could not "
                f"reach it. Pass --zk-bind 0.0.0.0 --advertise HOST (the name other hosts "
                f"reach this one by), or run the masters on a ZooKeeper ensemble with --zk "
                f"(the production setup, docs/deploy.md)")
        if not is_loopback(bind) and tls is None and not insecure_http:
            raise MasterConfigError(
                f"refusing to serve plain HTTP on {bind}: the access token and every spec "
                f"would cross the network in clear. Pass --tls-cert FILE --tls-key FILE "
                f"(docs/security.md says how to make them), or --insecure-http on a "
                f"network you trust")
        if not zk_hosts and not is_loopback(zk_bind) and zk_server_tls is None:
            # the specs and the digest logins cross the network in clear: said, not
            # refused (the ACLs still protect the tree; a trial setup must stay easy)
            log.warning("the managed ZooKeeper listens on %s without TLS: specs and "
                        "ZooKeeper logins cross the network in clear; pass --zk-tls-ca "
                        "FILE (with --tls-cert/--tls-key) for TLS, or run on an ensemble",
                        zk_bind)
        if zk_hosts and not zk_auth and not zk_insecure:
            raise MasterConfigError(
                "refusing to use ZooKeeper at " + zk_hosts + " without credentials: anyone "
                "reaching it could rewrite every spec. Pass --zk-auth-file FILE with the "
                "lines master=USER:PASSWORD and node=USER:PASSWORD (docs/security.md), or "
                "--zk-insecure to keep the tree open")
        self.data_dir = Path(data_dir)
        self.zk_hosts = zk_hosts
        self.zk_port = zk_port
        self.root = root
        self.bind = bind
        self.http_port = http_port
        self.token = token
        self.read_token = read_token
        self.allowed_hosts = tuple(allowed_hosts)
        from .http_guard import DEFAULT_MAX_BODY
        from flume_og.node.http_server import HttpLimits
        self.max_body = max_body or DEFAULT_MAX_BODY
        self.limits = limits or HttpLimits()
        self.http_metrics = Metrics()
        self.name = name or f"{socket.gethostname()}:{http_port}-{secrets.token_hex(3)}"
        self.zk_auth = zk_auth
        self.zk_bind = zk_bind
        self.zk_heap_mb = zk_heap_mb
        self.history_interval = history_interval
        self.advertise = advertise
        self.tls = tls
        self.zk_tls = zk_tls
        self.zk_server_tls = zk_server_tls
        self.zk_metrics = Metrics()
        self.acl: AclPolicy | None = None
        self.managed_zk: ManagedZooKeeper | None = None
        self.client = None
        self.server = None
        self.leader: LeaderDuties | None = None

    def start(self) -> "Master":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.zk_hosts:
            self.zk_auth = self.zk_auth or managed_credentials(self.data_dir)
            self.managed_zk = ManagedZooKeeper(
                self.data_dir / "zookeeper", port=self.zk_port, host=self.zk_bind,
                super_digest=self.zk_auth["master"].id.id, heap_mb=self.zk_heap_mb,
                tls=self.zk_server_tls)
            self.managed_zk.start()
            self.managed_zk.supervise()
            self.zk_hosts = self.managed_zk.connect_string
        self.client = connect(self.zk_hosts,
                              auth=self.zk_auth["master"] if self.zk_auth else None,
                              tls=self.zk_tls)
        if self.zk_auth:
            self.acl = self.client.acl_policy = AclPolicy.for_master(self.root, self.zk_auth)
        else:
            log.warning("ZooKeeper at %s is used WITHOUT ACLs (--zk-insecure): anyone who "
                        "can reach it may read and rewrite every spec and mapping",
                        self.zk_hosts)
        self.store = ConfigStore(self.client, self.root)
        try:
            with zk_errors(f"cannot prepare {self.root} in ZooKeeper"):
                self.store.ensure_layout()
                self.store.check_access()
                if self.acl is not None:
                    self.acl.publish(self.client)
                    if self.managed_zk is not None:
                        if lock_server(self.client, self.acl.masters):
                            log.info("the managed ZooKeeper's / and /zookeeper are now "
                                     "read-only for anyone but masters")
                        set_quota(self.client, self.root, *quota(self.zk_heap_mb))
        except AccessDenied:
            raise MasterConfigError(
                f"ZooKeeper refused access to {self.root}: it is protected by ACLs that do "
                f"not name this master's credential (--zk-auth-file)") from None
        from .service import MasterService
        self.service = MasterService(self.store, self.data_dir, self.name,
                                     history_interval=self.history_interval)
        from .validation import name_problem
        refusals = Refusals(self.zk_metrics, log, "the check of node registrations")
        registrations = Registrations(self.store, self.acl, refusals,
                                      name_problem=name_problem,
                                      locked_log=RateLimitedLog(log))
        self.leader = LeaderDuties(self.store, self.name, registrations,
                                   self.protect if self.acl is not None else None)
        self.leader.start()
        return self

    def protect(self) -> None:
        """Give a tree made before ACLs (or under other credentials) the ACLs of the
        policy (:func:`zk.acl.protect_tree`). The leader runs it in the background once it
        leads, so the API serves at once whatever the tree's size; what nodes may
        register is repaired by :class:`Registrations` meanwhile.

        ``commits/<kind>/`` holds most of a big tree (claims, groups and watermark per
        agent, and the committed groups), made by nodes with the policy's ACL: it is
        walked only when the folder's own ACL differs from the policy's (a tree made
        open, or a changed node credential). protect_tree sets a folder's ACL after
        everything under it, so a pass cut short is done again at the next lead."""
        commits = self.store.path("commits")
        checked, changed = protect_tree(self.client, self.root, self.acl, [commits])
        for kind in ("claims", "groups", "watermark", "files"):
            folder = self.store.path("commits", kind)
            current = acl_of(self.client, folder)
            if current is not None and set(current) != set(self.acl.acl(folder)):
                c, n = protect_tree(self.client, folder, self.acl)
                checked, changed = checked + c, changed + n
        if changed:
            log.warning("set the ZooKeeper ACLs of %d of %d znodes under %s",
                        changed, checked, self.root)

    def app(self):
        from .api import create_app
        from flume_og.node.hosts import HostPolicy
        app = create_app(self.service, self.token, read_token=self.read_token,
                         hosts=HostPolicy(self.bind, self.allowed_hosts),
                         max_body=self.max_body, metrics=self.http_metrics)
        app.state.zk_hosts = self.zk_hosts
        app.state.zk_root = self.root

        # A master without a token listens on loopback only and lets every local user
        # configure anything through this API: handing those users the node credential
        # gives them less than they have. With a token, nodes read it from a file.
        serve_cred = self.acl is not None and not self.token and is_loopback(self.bind)
        node_cred = self.zk_auth["node"] if serve_cred else None

        @app.get("/api/cluster", tags=["cluster"])
        def cluster() -> dict:
            """Where the nodes find the configuration: the ZooKeeper ensemble and root;
            ``acl``: the tree is protected; ``zk_auth``: the node credential
            (``user:password``), given only by a loopback master without a token;
            ``zookeeper``: the managed server (alive, restarts, last exit status, heap;
            None for an external ensemble); ``refused``: node registrations this master
            refused or repaired while leader (``refused_registration_*``); ``zk_tls``:
            ZooKeeper is reached over TLS."""
            return {"zk": self.zk_advertised, "root": self.root, "master": self.name,
                    "acl": self.acl is not None, "zk_tls": self.zk_tls is not None,
                    "zk_auth": f"{node_cred.user}:{node_cred.password}" if node_cred
                    else None,
                    "zookeeper": self.managed_zk.state() if self.managed_zk else None,
                    "refused": dict(self.zk_metrics)}
        return app

    @property
    def zk_advertised(self) -> str:
        """The ZooKeeper connect string handed to nodes: the managed server's port on
        ``advertise`` when given, else where this master connects."""
        if self.managed_zk is not None and self.advertise:
            return f"{self.advertise}:{self.managed_zk.port}"
        return self.zk_hosts

    def serve(self) -> None:
        """Serve the REST API and console until interrupted (SIGINT / SIGTERM), within
        the bounds of :mod:`node.http_server`."""
        from flume_og.node import http_server
        refusals = Refusals(self.http_metrics, http_server.log,
                            f"the master's HTTP server on port {self.http_port}")
        sock = http_server.listening_socket(self.bind, self.http_port, refusals)
        limits = http_server.fit_to_descriptors(self.limits)
        self.server = http_server.server(self.app(), sock, limits, refusals, tls=self.tls)
        log.info("master %s serving %s://%s:%d (ZooKeeper %s%s)", self.name,
                 "https" if self.tls is not None else "http", self.bind, self.http_port,
                 self.zk_hosts, self.root)
        try:
            self.server.run(sockets=[sock])
        finally:
            sock.close()

    def stop(self) -> None:
        if self.leader is not None:
            self.leader.stop()
        if self.client is not None:
            self.client.stop()
            self.client.close()
        if self.managed_zk is not None:
            self.managed_zk.stop()
