"""The physical node: reconciles its logical nodes with what ZooKeeper says.

It registers itself (ephemeral znode), makes sure it has a mapping (by default a logical
node named like itself), watches its mapping and each mapped logical node's config, and
runs one :class:`LogicalNode` per mapped name.

ZooKeeper's watches (zk/store.py) only enqueue; one reconciler thread does the work, in
order:

* a config whose znode is older (``mzxid``) than the one applied is ignored (stale);
* a logical node is restarted only when what it runs changed (translated source and sink,
  or the refresh counter); a flow or version change alone is recorded without a restart;
* a spec that fails to build leaves the last good flow running and shows the node in ERROR
  with the message;
* when ZooKeeper is away, every flow keeps running; when the session comes back (or a new
  one after expiry) the node registers again and the watches re-read everything;
* a flow that fails (it cannot open its sink or source, or fails while running) is opened
  again with its spec after a capped backoff (:data:`RETRY_FIRST` doubling to
  :data:`RETRY_MAX` seconds; status shows ``retry_at``, epoch ms, and ``retries``); a
  spec that cannot be built is not retried (it needs a new config); ``refresh`` or a new
  config retries at once.

Status (state, version, last error, counters and per-component counters) is written to
``status/<physical>``: at once when a state, version or error changes, otherwise every few
seconds; the per-component counters are left out when they would make the znode large.
With ``http_port`` set, the node also serves its status page (:mod:`node.status_server`).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flume_og.zk.acl import AclPolicy, Credential
from flume_og.zk.client import AccessDenied, ZkError, connect, zk_errors
from flume_og.zk.errors import CoordinationError
from flume_og.zk.store import ConfigStore, LogicalConfig

from .commit_port import CommitLogPort
from .component import NodeShared
from .tls import PLAINTEXT, Transport
from .decorators.choke import set_choke_limit
from .components import master_only, master_only_in
from .errors import FlumeError, SpecError
from .logical_node import LogicalNode, State
from .metrics import summarize
from .spec import parse_sink, parse_source

log = logging.getLogger(__name__)

STATUS_EVERY = 2.0
RETRY_FIRST, RETRY_MAX = 1.0, 60.0     # seconds before a failed flow is opened again
STATUS_ZNODE_BUDGET = 256 * 1024   # bytes; ZooKeeper refuses znodes above 1 MB


def waits_for_translation(source: str, sink: str) -> bool:
    """True if ``source`` or ``sink`` (spec texts) uses a component marked ``master_only``:
    the config waits for its translation (written right after it) and is not applied yet.
    Such a name inside an argument (a path, a host, a regex) does not count."""
    if not (any(n in source for n in master_only("source"))
            or any(n in sink for n in master_only("sink"))):
        return False    # the usual case, decided without parsing
    try:
        return bool(master_only_in(parse_source(source), parse_sink(sink)))
    except SpecError:
        return False    # not waiting: configuring it reports the error


@dataclass
class _Retry:
    """The retries of one failed flow."""
    failures: int = 0
    due: float | None = None    # monotonic time of the next open; None: none scheduled
    last: float = 0.0           # when it was last opened again


class PhysicalNode:
    """One ``flume node`` process managed through ZooKeeper."""

    def __init__(self, name: str, zk_hosts: str, root: str = "/flume",
                 data_dir: Path | None = None, allow_exec: bool = False,
                 http_port: int | None = None, http_bind: str = "127.0.0.1",
                 zk_auth: Credential | None = None, advertise: str | None = None,
                 zk_tls=None, http_tls=None, http_insecure: bool = False,
                 transport: Transport = PLAINTEXT, storage=None):
        """``zk_auth``: the node role's ZooKeeper credential (zk/acl.py); needed when the
        masters protect the tree with ACLs. ``advertise``: the address other hosts reach
        this node at, registered as its ``host`` (the masters write it into the chains
        and logical sinks that point at this node's collectors); default: the host
        name. ``zk_tls``: reach ZooKeeper over TLS (:class:`zk.client.TlsSettings`).
        ``http_tls``, ``http_insecure``: the status page's TLS context and opt-in to
        plain HTTP beyond loopback (:class:`node.status_server.StatusServer`); the page's
        scheme is registered with its port, for the console's link. ``transport``: the
        node's event transport (node/tls.py), for every flow. ``storage``: the object
        stores' settings (node.object_store.StorageConfig; credentials stay here, never
        in a spec)."""
        self.name = name
        self.transport = transport
        self.zk_auth = zk_auth
        self.zk_tls = zk_tls
        self.zk_hosts = zk_hosts
        self.root = root
        self.data_dir = Path(data_dir) if data_dir else None
        self.allow_exec = allow_exec
        self.http_port = http_port   # wanted; the bound one once the page serves
        self.http_bind = http_bind
        self.http_tls = http_tls
        self.http_insecure = http_insecure
        self.status_server = None
        self.host = advertise or socket.gethostname()
        self.shared = NodeShared(storage=storage)
        self.logical: dict[str, LogicalNode] = {}
        self.running: dict[str, tuple] = {}      # name -> (source, sink, refresh) running
        self.applied_zxid: dict[str, int] = {}   # name -> mzxid of the config applied
        self.config_error: dict[str, str] = {}
        self.flows: dict[str, str] = {}
        self.retries: dict[str, _Retry] = {}
        self.mapped: list[str] = []
        self._watch_gen: dict[str, int] = {}
        self._gen = 0
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._status_dirty = threading.Event()
        self._threads: list[threading.Thread] = []
        self.client = None
        self.store: ConfigStore | None = None
        self.started_ms = int(time.time() * 1000)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "PhysicalNode":
        if self.http_port is not None:
            self._start_status_server()
        self.client = connect(self.zk_hosts, auth=self.zk_auth, tls=self.zk_tls)
        self.store = ConfigStore(self.client, self.root)
        self.store.on_new_session(self._on_new_session)
        try:
            self._learn_acl()
        except ZkError:
            self.client.stop()
            self.client.close()
            if self.status_server is not None:
                self.status_server.stop()
            raise
        # end-to-end mode (node/e2e/) commits through ZooKeeper under this node's name
        self.shared.commit_log = CommitLogPort(self.store.commits)
        self.shared.physical_name = self.name
        # mapped before it is announced: a `map` made once the node is seen adds to its
        # default mapping instead of racing it (the default is only made where none is)
        try:
            with zk_errors(f"cannot map {self.name}"):
                self.store.ensure_mapping(self.name, [self.name])
        except AccessDenied:
            pass   # under ACLs the leading master maps a new node (zk/acl.py)
        self._register()
        for target, tname in ((self._reconcile_loop, "reconciler"),
                              (self._status_loop, "status")):
            t = threading.Thread(target=target, name=f"{tname}-{self.name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.store.watch_mapping(self.name, self._on_mapping)
        self.store.watch_chokes(self.name, self._on_chokes)
        log.info("physical node %s is up", self.name)
        return self

    def _learn_acl(self) -> None:
        """Create znodes with the ACLs the masters chose (learnt from the root); make the
        layout of an open tree. ZkError when the credential does not fit the tree."""
        try:
            with zk_errors(f"cannot read {self.root}"):
                policy = AclPolicy.learn(self.client, self.root, self.zk_auth)
        except AccessDenied:
            raise ZkError(
                f"ZooKeeper refused access to {self.root}: " + (
                    f"the credential of user {self.zk_auth.user} is not the node "
                    f"credential of its masters" if self.zk_auth else
                    "the tree is protected by ACLs; pass --zk-auth-file with the node "
                    "credential")) from None
        if policy is None and self.zk_auth is not None:
            raise ZkError(f"ZooKeeper has no {self.root} yet: a master creates it with its "
                          f"ACLs; start one first")
        if policy is not None and policy.protected:
            self.client.acl_policy = policy
        else:
            self.store.ensure_layout()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every flow cleanly (buffered events written, files closed), then leave."""
        self._stop.set()
        self._queue.put(("stop",))
        for t in self._threads:
            t.join(timeout)
        for ln in list(self.logical.values()):
            ln.stop(timeout)
        if self.client is not None:
            if self.store.connected():
                # kazoo queues requests while disconnected: never let a goodbye block exit
                bye = threading.Thread(target=self._goodbye, daemon=True)
                bye.start()
                bye.join(3.0)
            self.client.stop()
            self.client.close()
        if self.status_server is not None:
            self.status_server.stop()

    def _goodbye(self) -> None:
        try:
            self._write_status()
            self.store.unregister_physical(self.name)
        except Exception:
            pass

    def _start_status_server(self) -> None:
        """Serve the status page; the node runs without it when no port can be had (its
        job is moving events), and registers the port it got."""
        from .status_server import StatusServer
        try:
            self.status_server = StatusServer(self.status, self.http_bind, self.http_port,
                                              tls=self.http_tls,
                                              insecure=self.http_insecure).start()
            self.http_port = self.status_server.port
        except OSError as exc:
            log.warning("no status page: cannot listen on %s:%s: %s", self.http_bind,
                        self.http_port, exc.strerror or exc)
            self.status_server = None
            self.http_port = None

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    # ------------------------------------------------------------ watches (enqueue only)
    def _on_new_session(self) -> None:
        self._queue.put(("register",))

    def _on_mapping(self, names: list[str]):
        if self._stop.is_set():
            return False
        self._queue.put(("mapping", names))

    def _on_chokes(self, limits: dict):
        if self._stop.is_set():
            return False
        self._queue.put(("chokes", limits))

    def _watch_logical(self, name: str) -> None:
        self._gen += 1
        gen = self._watch_gen[name] = self._gen

        def on_config(cfg: LogicalConfig | None, zxid: int):
            if self._stop.is_set() or self._watch_gen.get(name) != gen:
                return False  # unmapped meanwhile: drop this watch
            self._queue.put(("config", name, cfg, zxid))

        self.store.watch_logical(name, on_config)

    # ------------------------------------------------------------ reconciler
    def _reconcile_loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                self._retry_failed()
                continue
            kind = item[0]
            if kind == "stop":
                return
            try:
                if kind == "mapping":
                    self._apply_mapping(item[1])
                elif kind == "config":
                    self._apply_config(*item[1:])
                elif kind == "register":
                    self._register()
                elif kind == "chokes":
                    self._apply_chokes(item[1])
            except Exception as exc:  # keep reconciling whatever one item did
                log.error("reconciling %s failed: %s", kind, exc, exc_info=True)
            self._status_dirty.set()

    def _retry_failed(self) -> None:
        """Open again, after its backoff, each flow in ERROR whose spec built (module
        docstring). A flow that runs for :data:`RETRY_MAX` seconds after a retry starts
        over from :data:`RETRY_FIRST` at its next failure."""
        now = time.monotonic()
        for name, ln in list(self.logical.items()):
            wanted = self.running.get(name)
            r = self.retries.get(name)
            if ln.state is not State.ERROR or wanted is None or name in self.config_error:
                if (r is not None and r.due is None and ln.state is State.ACTIVE
                        and now - r.last > RETRY_MAX):
                    del self.retries[name]
                continue
            if r is None:
                r = self.retries[name] = _Retry()
            if r.due is None:
                delay = min(RETRY_MAX, RETRY_FIRST * 2 ** r.failures)
                r.failures += 1
                r.due = now + delay
                log.warning("logical node %s failed: %s; opening it again in %.0f s",
                            name, ln.last_error, delay,
                            extra={"physical": self.name, "attempt": r.failures})
                self._status_dirty.set()
                continue
            if now < r.due:
                continue
            r.due, r.last = None, now
            log.info("logical node %s: opening its flow again", name,
                     extra={"physical": self.name, "attempt": r.failures})
            try:
                ln.configure(parse_source(wanted[0]), parse_sink(wanted[1]),
                             version=ln.version)
            except Exception as exc:   # stays ERROR; the next pass schedules a retry
                ln.mark_failed(f"{type(exc).__name__}: {exc}")
            self._status_dirty.set()

    def _register(self) -> None:
        info = {"host": self.host, "pid": os.getpid(), "http_port": self.http_port,
                "http_scheme": self.status_server.scheme if self.status_server else None,
                "started": self.started_ms}
        try:
            self.store.register_physical(self.name, info)
        except Exception as exc:
            log.warning("could not register with ZooKeeper: %s", exc)

    def _logical_node(self, name: str) -> LogicalNode:
        ln = self.logical.get(name)
        if ln is None:
            ln = LogicalNode(name, self.data_dir / "logical" if self.data_dir else None,
                             physical_name=self.name, allow_exec=self.allow_exec,
                             shared=self.shared, transport=self.transport)
            self.logical[name] = ln
        return ln

    def _apply_mapping(self, names: list[str]) -> None:
        old = set(self.mapped)
        self.mapped = names
        for name in names:
            if name not in old:
                self._logical_node(name)
                self._watch_logical(name)
        for name in old - set(names):
            self._watch_gen.pop(name, None)
            ln = self.logical.pop(name, None)
            if ln is not None:
                ln.stop()
            for d in (self.running, self.applied_zxid, self.config_error, self.flows,
                      self.retries):
                d.pop(name, None)
            log.info("logical node %s unmapped from %s", name, self.name)

    def _apply_config(self, name: str, cfg: LogicalConfig | None, zxid: int) -> None:
        if name not in self.mapped:
            return
        if zxid and zxid < self.applied_zxid.get(name, 0):
            return  # stale: an older config arrived after a newer one
        self.applied_zxid[name] = zxid
        ln = self._logical_node(name)
        if cfg is None:
            if name in self.running:
                ln.unconfigure()
                self.running.pop(name, None)
            self.config_error.pop(name, None)
            return
        try:
            self._configure(name, ln, cfg)
        except Exception as exc:  # whatever failed, the masters must see it, with why
            log.debug("logical node %s: configuring failed", name, exc_info=True)
            self._reject(name, ln, f"spec version {cfg.version} could not be configured: "
                                   f"{type(exc).__name__}: {exc}")

    def _configure(self, name: str, ln: LogicalNode, cfg: LogicalConfig) -> None:
        """Run ``cfg`` on ``ln`` unless it runs already or waits for its translation."""
        self.flows[name] = cfg.flow
        wanted = (cfg.running_source, cfg.running_sink, cfg.refresh)
        if waits_for_translation(wanted[0], wanted[1]):
            self.config_error[name] = (f"spec version {cfg.version} is waiting for its "
                                       f"translation by a master")
            return
        if self.running.get(name) == wanted and ln.state is not State.ERROR:
            ln.version = cfg.version
            return
        try:
            source, sink = parse_source(wanted[0]), parse_sink(wanted[1])
            self.retries.pop(name, None)       # a new config or a refresh: at once
            ln.configure(source, sink, version=cfg.version)
        except SpecError as exc:
            self._reject(name, ln, f"spec version {cfg.version} rejected: {exc.message}")
            return
        except (FlumeError, CoordinationError) as exc:
            ln.mark_failed(str(exc))
        self.config_error.pop(name, None)
        self.running[name] = wanted

    def _reject(self, name: str, ln: LogicalNode, reason: str) -> None:
        """Show ``name`` in ERROR with ``reason`` (in the status the master reads), whatever
        it still runs: a running last good flow keeps running."""
        self.config_error[name] = reason
        if name not in self.running:
            ln.mark_failed(reason)
        else:
            ln.last_error = reason
        log.error("logical node %s: %s", name, reason)

    def _apply_chokes(self, limits: dict) -> None:
        for choke_id, kbps in limits.items():
            set_choke_limit(self.shared, choke_id, kbps)

    # ------------------------------------------------------------ status
    def status(self, components: bool = True) -> dict:
        """This node's status: every logical node's state, version, spec, last error,
        ``counters`` (see :func:`node.metrics.summarize`) and, with ``components``, the
        tree of its components' counters."""
        logical = {}
        for name, ln in list(self.logical.items()):
            st = ln.status()
            st["counters"] = summarize(st)
            if not components:
                st.pop("components", None)
            if name in self.config_error:
                st["state"] = State.ERROR.value
                st["last_error"] = self.config_error[name]
            r = self.retries.get(name)
            if r is not None and r.due is not None:
                st["retries"] = r.failures
                st["retry_at"] = int((time.time() + r.due - time.monotonic()) * 1000)
            st["flow"] = self.flows.get(name)
            logical[name] = st
        return {"physical": self.name, "host": self.host, "pid": os.getpid(),
                "http_port": self.http_port, "started": self.started_ms,
                "logical": logical, "updated": int(time.time() * 1000)}

    def _signature(self) -> tuple:
        """What, when it changes, is written to ZooKeeper at once (not only every few
        seconds)."""
        return tuple(sorted(
            (n, ln.state.value, ln.version, ln.last_error, self.config_error.get(n),
             self.flows.get(n)) for n, ln in list(self.logical.items())))

    def _status_for_zk(self) -> dict:
        st = self.status()
        if len(json.dumps(st, default=str)) > STATUS_ZNODE_BUDGET:
            for rep in st["logical"].values():
                rep.pop("components", None)
        return st

    def _write_status(self) -> dict:
        st = self._status_for_zk()
        self.store.put_status(self.name, st)
        return st

    def _status_loop(self) -> None:
        last_sig, last_write = None, 0.0
        while not self._stop.is_set():
            self._status_dirty.wait(0.05)
            self._status_dirty.clear()
            if not self.store.connected():
                continue  # flows go on; the status is written again once reconnected
            sig = self._signature()
            now = time.monotonic()
            if sig != last_sig or now - last_write >= STATUS_EVERY:
                try:
                    self._write_status()
                    last_sig, last_write = sig, now
                except Exception as exc:  # ZooKeeper away: flows go on, retry later
                    log.debug("status not written: %s", exc)
