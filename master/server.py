"""The ``flume master`` process: ZooKeeper (managed or given), leader duties, REST API.

Every master serves every request; all state lives in ZooKeeper. Duties that need a single
actor (re-translating specs when collectors or mappings change, trimming the command
history) run on the elected leader and move to another master when it dies.
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
from pathlib import Path

from kazoo.exceptions import NoAuthError
from kazoo.recipe.election import Election
from kazoo.recipe.watchers import ChildrenWatch

from node.component import Metrics
from node.errors import FlumeError
from node.limits import Refusals
from zk.acl import AclPolicy, Credential, managed_credentials, protect_tree
from zk.client import connect
from zk.server import ManagedZooKeeper
from zk.store import ConfigStore

log = logging.getLogger(__name__)

LEADER_SWEEP_SECONDS = 5.0


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
    """Runs for election; while leader, re-translates on topology changes."""

    def __init__(self, client, store: ConfigStore, identifier: str):
        self.client = client
        self.store = store
        self.identifier = identifier
        self.stop_event = threading.Event()
        self.dirty = threading.Event()
        self.is_leader = False
        self.election = Election(client, store.election_path, identifier)
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
        for part in ("physical", "mappings", "logical"):
            ChildrenWatch(self.client, self.store.path(part), self._mark)
        try:
            while not self.stop_event.is_set():
                self.dirty.wait(LEADER_SWEEP_SECONDS)
                self.dirty.clear()
                if self.stop_event.is_set():
                    break
                try:
                    made = self.store.ensure_default_mappings()
                    if made:
                        log.info("mapped new physical node(s) %s to their default logical "
                                 "node", ", ".join(made))
                    retranslate(self.store)
                    self.store.trim_commands()
                except Exception as exc:
                    log.warning("leader sweep failed: %s", exc)
        finally:
            self.is_leader = False


class Master:
    """A master process's parts, started and stopped together."""

    def __init__(self, data_dir: Path, zk_hosts: str | None = None, zk_port: int = 3181,
                 root: str = "/flume", bind: str = "127.0.0.1", http_port: int = 35871,
                 token: str | None = None, name: str | None = None,
                 zk_auth: dict[str, Credential] | None = None, zk_insecure: bool = False,
                 zk_bind: str = "127.0.0.1", read_token: str | None = None,
                 allowed_hosts: tuple[str, ...] = (), max_body: int | None = None,
                 limits=None):
        """``zk_auth``: the master and node credentials (zk/acl.py); without them the
        managed ZooKeeper uses generated ones, and an external ensemble is refused unless
        ``zk_insecure`` (its tree is then open to anyone reaching ZooKeeper)."""
        if not is_loopback(bind) and not token:
            raise MasterConfigError(
                f"refusing to listen on {bind} without an access token: create one "
                f"(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "
                f"token) and pass --token-file token")
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
        from node.http_server import HttpLimits
        self.max_body = max_body or DEFAULT_MAX_BODY
        self.limits = limits or HttpLimits()
        self.http_metrics = Metrics()
        self.name = name or f"{socket.gethostname()}:{http_port}-{secrets.token_hex(3)}"
        self.zk_auth = zk_auth
        self.zk_bind = zk_bind
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
                super_digest=self.zk_auth["master"].id.id)
            self.managed_zk.start()
            self.zk_hosts = self.managed_zk.connect_string
        self.client = connect(self.zk_hosts,
                              auth=self.zk_auth["master"] if self.zk_auth else None)
        if self.zk_auth:
            self.acl = self.client.acl_policy = AclPolicy.for_master(self.root, self.zk_auth)
        else:
            log.warning("ZooKeeper at %s is used WITHOUT ACLs (--zk-insecure): anyone who "
                        "can reach it may read and rewrite every spec and mapping",
                        self.zk_hosts)
        self.store = ConfigStore(self.client, self.root)
        try:
            self.store.ensure_layout()
            if self.acl is None:
                self.client.get_children(self.root)   # refused if the tree is protected
            else:
                self.acl.publish(self.client)
                checked, changed = protect_tree(self.client, self.root, self.acl)
                if changed:
                    log.warning("set the ZooKeeper ACLs of %d of %d znodes under %s",
                                changed, checked, self.root)
        except NoAuthError:
            raise MasterConfigError(
                f"ZooKeeper refused access to {self.root}: it is protected by ACLs that do "
                f"not name this master's credential (--zk-auth-file)") from None
        from .service import MasterService
        self.service = MasterService(self.store, self.data_dir, self.name)
        self.leader = LeaderDuties(self.client, self.store, self.name)
        self.leader.start()
        return self

    def app(self):
        from .api import create_app
        from node.hosts import HostPolicy
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
            (``user:password``), given only by a loopback master without a token."""
            return {"zk": self.zk_hosts, "root": self.root, "master": self.name,
                    "acl": self.acl is not None,
                    "zk_auth": f"{node_cred.user}:{node_cred.password}" if node_cred
                    else None}
        return app

    def serve(self) -> None:
        """Serve the REST API and console until interrupted (SIGINT / SIGTERM), within
        the bounds of :mod:`node.http_server`."""
        from node import http_server
        refusals = Refusals(self.http_metrics, http_server.log,
                            f"the master's HTTP server on port {self.http_port}")
        sock = http_server.listening_socket(self.bind, self.http_port, refusals)
        limits = http_server.fit_to_descriptors(self.limits)
        self.server = http_server.server(self.app(), sock, limits, refusals)
        log.info("master %s serving http://%s:%d (ZooKeeper %s%s)", self.name, self.bind,
                 self.http_port, self.zk_hosts, self.root)
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
