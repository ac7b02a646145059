"""The master's command service: every command of REFERENCE section 7 and every listing.

``MasterService.execute(command, args)`` records the command in ZooKeeper
(QUEUED -> EXECING -> SUCCEEDED | FAILED, with a message), validates specs with the same
parser and registry the nodes use, and performs the command through :class:`ConfigStore`
(compare-and-set or transactions for every write). Any master serves any request: the
service keeps no state of its own beyond a read-through view of ZooKeeper.

Outcomes of ``execute``:

* bad input raises (after the command is recorded FAILED): :class:`SpecError` for a spec
  (every problem found, with positions; ``render_spec_error`` gives the text with carets),
  :class:`CommandError` for an unknown command, a wrong argument count or a bad value;
* a command that is valid but cannot be performed (unknown node, a live node purged, a
  file that cannot be read...) returns the record with state FAILED; with
  ``raise_failed=True`` it raises :class:`CommandFailed` (:class:`NotFound` for unknown
  things) instead, for the REST resource endpoints;
* ZooKeeper unreachable raises :class:`ZkError` at once (the request is not queued until
  ZooKeeper returns).

Listings come from :class:`ClusterView`, a cache of ``logical/``, ``mappings/``,
``physical/`` and ``status/`` kept current by ZooKeeper watches (a child watch per folder
and a data watch per znode, all asynchronous; everything re-read after each reconnection,
since kazoo drops watches with the connection). Listings
are memoised per change of the view, so ``status`` with thousands of nodes answers in
about a millisecond when nothing changed. A master reads its own writes: each command waits
(briefly) until its change is visible in the view. While the view is not initialised,
listings read ZooKeeper directly. Every listing (and every command record shown) hides the
passwords of URLs (:func:`node.redact.redact`); ZooKeeper keeps them.

Node states in ``status``: what the node reports (HELLO, IDLE, CONFIGURING, ACTIVE,
CLOSING, ERROR) while its physical node is alive; HELLO while a live node has not reported
it yet; LOST when its physical node is not alive (its ephemeral znode is gone); UNMAPPED
for a configured logical node that no physical node runs; DECOMMISSIONED for one a live
physical node still reports though it is neither configured nor mapped any more (being
stopped).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

from kazoo.exceptions import KazooException, ZookeeperError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, KazooState

from node.errors import FlumeError, SpecError, SpecErrors, more_problems
from node.redact import redact_tree
from node.registry import load_components, validate_parts
from node.spec import (Definition, format_definition, format_sink, format_source, parse,
                       parse_sink, parse_source)
from zk.client import ConflictError, ZkError
from zk.store import COMMANDS_KEPT, Command, ConfigStore, LogicalConfig

log = logging.getLogger(__name__)

DEFAULT_FLOW = "default-flow"
TRIM_EVERY = 50                 # trim the command history every 50 commands
SETTLE_SECONDS = 5.0            # how long a command waits for its write to reach the view
MAX_NAME = 200
MAX_NOOP_MS = 60_000
MAX_SPEC_FILE = 16 * 1024 * 1024
STORED_ARG_CHARS = 4096         # command records keep args and messages short: a znode
STORED_MESSAGE_CHARS = 16384    # must stay far below ZooKeeper's 1 MB limit
TX_BYTES = 512 * 1024           # bytes of configs per multiconfig transaction

_ZK_ERRORS = (KazooException, ZookeeperError, KazooTimeoutError)


class CommandError(FlumeError):
    """A command was given wrongly: unknown name, wrong argument count or a bad value."""


class CommandFailed(FlumeError):
    """A valid command could not be performed (the record says FAILED with this message)."""


class NotFound(CommandFailed):
    """A command or request named something that does not exist."""


# ---------------------------------------------------------------- helpers

def _shown(exc: SpecError) -> tuple[list[SpecError], int]:
    return exc.shown() if isinstance(exc, SpecErrors) else ([exc], 0)


def render_spec_error(exc: SpecError) -> str:
    """The text shown to people: the first problems (``SpecErrors.shown``), each with its
    spec line (cut around the column) and a caret, and which part it is in (``part``:
    "source", "sink", "spec" or a file name) when known; then how many more there are."""
    errors, more = _shown(exc)
    out = []
    for e in errors:
        part = getattr(e, "part", None)
        if part in ("source", "sink", "spec"):
            out.append(f"in the {part}: {e.render()}")
        else:  # a file name, or nothing
            out.append(f"{part}: {e.render()}" if part else e.render())
    if more:
        out.append(more_problems(more))
    return "\n".join(out)


def spec_error_list(exc: SpecError) -> list[dict]:
    """``[{message, line, column[, part]}]`` for the first problems in ``exc``, and one
    without a position saying how many more there are (with their ``part`` if they all
    have the same)."""
    errors, more = _shown(exc)
    out = []
    for e in errors:
        d = e.to_dict()
        if getattr(e, "part", None):
            d["part"] = e.part
        out.append(d)
    if more:
        d = {"message": more_problems(more), "line": None, "column": None}
        parts = {getattr(e, "part", None) for e in exc.errors[len(errors):]}
        if len(parts) == 1 and None not in parts:
            d["part"] = parts.pop()
        out.append(d)
    return out


def _tag(errors: list[SpecError], part: str, text: str) -> list[SpecError]:
    for e in errors:
        e.with_text(text)
        if not getattr(e, "part", None):
            e.part = part
    return errors


def name_problem(name) -> str | None:
    """Why ``name`` cannot name a logical node, physical node or flow (None if it can).
    Names become znode names: no '/', no control or blank characters, nothing ZooKeeper
    refuses."""
    if not isinstance(name, str) or not name:
        return "a name must not be empty"
    if len(name) > MAX_NAME:
        return f"a name must be at most {MAX_NAME} characters"
    if name in (".", ".."):
        return f"{name!r} is not a valid name"
    for ch in name:
        if ch == "/" or ch.isspace() or not ch.isprintable() \
                or "\ud800" <= ch <= "\uf8ff" or ch >= "\ufff0":
            return f"{name!r} contains {ch!r}, which a name cannot contain"
    return None


def _check_name(what: str, name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise CommandError(f"bad {what} name: {problem}")
    return name


def _short(s: str, limit: int) -> str:
    if len(s) <= limit:
        return s
    return s[:limit] + f"... ({len(s)} characters)"


def _flow_pragmas(text: str) -> list[tuple[int, str]]:
    """``// flow: NAME`` comment lines of a spec file, as (line number, flow): definitions
    after such a line belong to that flow (the spec language has no syntax for flows;
    ``save`` writes these lines so ``load`` restores flows)."""
    out = []
    for i, line in enumerate(text.split("\n"), 1):
        s = line.strip()
        if s.startswith("//"):
            body = s[2:].strip()
            if body.lower().startswith("flow:"):
                flow = body[5:].strip()
                if flow and not name_problem(flow):
                    out.append((i, flow))
    return out


def _counters(rep: dict) -> dict:
    """A logical node's counters as its physical node reported them in its status znode
    (see ``node.metrics.summarize``): the five main ones as fields, all of them under
    ``counters``, and the per-component tree under ``components`` (None when the node
    left it out)."""
    counters = rep.get("counters")
    counters = counters if isinstance(counters, dict) else {}
    out = {k: counters.get(k, rep.get(k)) for k in ("events_in", "bytes_in", "events_out",
                                                     "bytes_out", "errors")}
    out["counters"] = counters or None
    comps = rep.get("components")
    out["components"] = comps if isinstance(comps, dict) else None
    return out


def _to_json(obj) -> bytes:
    # ASCII-only output: a lone surrogate in a stored string must not break a response
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------- the view

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
        with self.view.cond:
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
        if event.type == EventType.CHILD and not self.view.closed:
            self._list(None)

    def _on_data(self, name: str, event) -> None:
        if self.view.closed:
            return
        if event.type == EventType.CHANGED:
            self._get(name, None)
        elif event.type == EventType.DELETED:
            with self.view.cond:
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
        with self.view.cond:
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
            with self.view.cond:
                self._forget(name)
            self._done(epoch)
            return
        except Exception:
            self._done(epoch)
            return
        with self.view.cond:
            # a late answer for a child deleted meanwhile, or older than what is held
            if name in self.known and stat.mzxid > self.mzxid.get(name, -1):
                self.mzxid[name] = stat.mzxid
                self.view.tables[self.part][name] = self.view.parse(self.part, name, raw,
                                                                    stat)
                self.view.changed()
        self._done(epoch)

    def _forget(self, name: str) -> None:
        """Drop a child (the view's lock is held)."""
        self.known.discard(name)
        self.mzxid.pop(name, None)
        if self.view.tables[self.part].pop(name, None) is not None:
            self.view.changed()

    def _done(self, epoch: int | None) -> None:
        if epoch is None:
            return
        with self.view.cond:
            if epoch == self.epoch:
                self.pending -= 1
                if self.pending == 0:
                    self.ready = True
                    self.view.changed()


class ClusterView:
    """A read-through view of ``logical/``, ``mappings/``, ``physical/`` and ``status/``,
    kept current by ZooKeeper watches (a child watch per folder, a data watch per znode;
    everything re-read after each reconnection). Table entries are replaced, never
    mutated; ``generation`` grows with every change."""

    PARTS = ("logical", "mappings", "physical", "status")

    def __init__(self, store: ConfigStore):
        self.store = store
        self.cond = threading.Condition()
        self.generation = 0
        self.tables: dict[str, dict] = {p: {} for p in self.PARTS}
        self.folders = [_Folder(self, p, store.path(p)) for p in self.PARTS]
        self.closed = False
        self._started = False

    def start(self, timeout: float = 30.0) -> "ClusterView":
        self._started = True
        self.store.zk.add_listener(self._on_state)
        if self.store.zk.connected:
            for f in self.folders:
                f.refresh()
        with self.cond:
            if not self.cond.wait_for(lambda: self.ready, timeout):
                log.warning("the cluster view is not initialised after %.0f s; listings "
                            "read ZooKeeper directly until it is", timeout)
        return self

    def close(self) -> None:
        self.closed = True
        if self._started:
            self.store.zk.remove_listener(self._on_state)
        with self.cond:
            self.changed()

    def _on_state(self, state) -> None:
        # runs on kazoo's connection thread: only flag and issue asynchronous requests
        if self.closed:
            return
        if state == KazooState.CONNECTED:
            for f in self.folders:
                f.refresh()
        else:
            with self.cond:
                for f in self.folders:
                    f.ready = False
                self.changed()

    @property
    def ready(self) -> bool:
        return not self.closed and all(f.ready for f in self.folders)

    def changed(self) -> None:
        """Note a change (the lock is held)."""
        self.generation += 1
        self.cond.notify_all()

    @staticmethod
    def parse(part: str, name: str, raw: bytes, stat):
        if part == "logical":
            return ConfigStore._logical(name, raw, stat.version)
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            value = None
        if part == "mappings":
            return [str(x) for x in value] if isinstance(value, list) else []
        return value if isinstance(value, dict) else {}

    def snapshot(self) -> tuple[int | None, dict, dict, dict, dict]:
        """``(generation, logical, mappings, physical, status)``: copies from the view, or
        read from ZooKeeper (generation None) while the view is not ready."""
        if self.ready:
            with self.cond:
                t = self.tables
                return (self.generation, dict(t["logical"]), dict(t["mappings"]),
                        dict(t["physical"]), dict(t["status"]))
        s = self.store
        return None, s.list_logical(), s.list_mappings(), s.list_physical(), s.list_status()

    def wait_until(self, predicate, timeout: float = SETTLE_SECONDS) -> bool:
        """Wait until ``predicate(tables)`` holds (a master reads its own writes)."""
        if not self.ready:
            return False
        with self.cond:
            ok = self.cond.wait_for(lambda: self.closed or predicate(self.tables), timeout)
        if not ok:
            log.debug("the view did not show a write within %.1f s", timeout)
        return ok


# ---------------------------------------------------------------- the service

class MasterService:
    """Commands and listings over one :class:`ConfigStore`. Thread-safe: the REST API calls
    it from many threads, several masters call it on the same ZooKeeper."""

    COMMANDS = ("config", "multiconfig", "unconfig", "map", "unmap", "unmapAll",
                "decommission", "refresh", "refreshAll", "purge", "purgeAll", "save", "load",
                "setChokeLimit", "noop")
    USAGE = {
        "config": "config NODE [FLOW] SOURCE SINK",
        "multiconfig": "multiconfig SPEC",
        "unconfig": "unconfig NODE",
        "map": "map PHYSICAL LOGICAL",
        "unmap": "unmap PHYSICAL LOGICAL",
        "unmapAll": "unmapAll",
        "decommission": "decommission LOGICAL",
        "refresh": "refresh NODE",
        "refreshAll": "refreshAll",
        "purge": "purge PHYSICAL",
        "purgeAll": "purgeAll",
        "save": "save FILE",
        "load": "load FILE",
        "setChokeLimit": "setChokeLimit PHYSICAL CHOKE KBPS",
        "noop": "noop [MS]",
    }
    ALIASES = {"spawn": "map"}  # OG's deprecated synonym

    def __init__(self, store: ConfigStore, data_dir: Path, name: str = "master",
                 watch: bool = True):
        self.store = store
        self.data_dir = Path(data_dir)
        self.name = name
        # import every component now, on one thread: validating concurrently while the
        # registry is still being filled would report components as unknown
        load_components()
        self.view = ClusterView(store)
        if watch:
            self.view.start()
        self._memo: dict[str, tuple] = {}
        self._memo_lock = threading.Lock()
        self.trim_every = TRIM_EVERY
        self.keep_commands = COMMANDS_KEPT
        self._lookup = {c.lower(): c for c in self.COMMANDS}
        self._lookup.update({a: c for a, c in self.ALIASES.items()})

    def close(self) -> None:
        self.view.close()

    # ------------------------------------------------------------ plumbing
    def _require_zk(self) -> None:
        if not self.store.zk.connected:
            raise ZkError("ZooKeeper is unreachable (the master is reconnecting)")

    def _canonical(self, command) -> str | None:
        if not isinstance(command, str):
            return None
        return self._lookup.get(command.lower().replace("-", "").replace("_", ""))

    def usage(self, command: str) -> str:
        return "usage: " + self.USAGE[command]

    def execute(self, command: str, args: list[str], by: str = "",
                raise_failed: bool = False) -> Command:
        """Record, validate and perform one command; see the module docstring for what
        it raises and returns."""
        self._require_zk()
        args = list(args or [])
        if not all(isinstance(a, str) for a in args):
            raise CommandError("command arguments must be strings")
        canonical = self._canonical(command)
        shown = canonical or _short(str(command), 100)
        try:
            cmd = self.store.new_command(
                shown, [_short(a, STORED_ARG_CHARS) for a in args], by=_short(by, 200))
            cmd.state = "EXECING"
            self.store.update_command(cmd)
        except _ZK_ERRORS as exc:
            raise ZkError(f"cannot record the command: {type(exc).__name__} {exc}") from exc
        try:
            if canonical is None:
                raise CommandError(f"unknown command {shown!r}; commands: "
                                   + ", ".join(self.COMMANDS))
            handler = getattr(self, "_cmd_" + canonical.lower())
            message = handler(args)
        except SpecError as exc:
            self._finish(cmd, "FAILED", render_spec_error(exc))
            raise
        except CommandError as exc:
            self._finish(cmd, "FAILED", str(exc))
            raise
        except CommandFailed as exc:
            self._finish(cmd, "FAILED", str(exc))
            if raise_failed:
                raise
            return cmd
        except ConflictError as exc:
            self._finish(cmd, "FAILED", str(exc))
            raise
        except (ZkError, *_ZK_ERRORS) as exc:
            self._finish(cmd, "FAILED", f"ZooKeeper: {type(exc).__name__} {exc}".strip())
            if isinstance(exc, ZkError):
                raise
            raise ZkError(f"ZooKeeper failed during {shown}: {type(exc).__name__} "
                          f"{exc}".rstrip()) from exc
        except Exception as exc:
            log.exception("command %s %s failed unexpectedly", shown, cmd.id)
            self._finish(cmd, "FAILED", f"internal error: {type(exc).__name__}: {exc}")
            raise
        self._finish(cmd, "SUCCEEDED", message)
        return cmd

    def _finish(self, cmd: Command, state: str, message: str) -> None:
        cmd.state = state
        cmd.message = _short(message or "", STORED_MESSAGE_CHARS)
        cmd.finished = int(time.time() * 1000)
        try:
            self.store.update_command(cmd)
            if int(cmd.id) % self.trim_every == 0:
                self.store.trim_commands(self.keep_commands)
        except _ZK_ERRORS as exc:  # the outcome stands; only its record is incomplete
            log.warning("could not record the outcome of command %s: %s", cmd.id, exc)

    def _world(self, extra: dict[str, LogicalConfig] | None = None):
        from .translate import World
        _, logical, mappings, physical, _ = self.view.snapshot()
        if extra:
            logical.update(extra)
        return World(configs=logical, mappings=mappings, physicals=physical)

    def _translate(self, cfg: LogicalConfig, world) -> tuple[str | None, str | None]:
        """The translation to store with a new config, so that nodes never see a spec that
        needs one without it. A failure here is repaired by the retranslation after the
        write (and by the leader's sweeps)."""
        try:
            from .translate import translate_config
            return translate_config(cfg, world, self.store)
        except Exception as exc:
            log.warning("translating %s failed: %s", cfg.name, exc)
            return None, None

    def _retranslate(self, names: list[str] | None) -> str:
        """Recompute translations that depend on ``names``; '' or a note for the message
        (the config itself is stored: the leader's sweeps finish a failed retranslation)."""
        from .translate import retranslate
        try:
            retranslate(self.store, names, world=self._world())
        except (FlumeError, ZkError, *_ZK_ERRORS) as exc:
            log.warning("retranslation after a change failed: %s", exc)
            return f" (translations pending: {exc})"
        return ""

    # ------------------------------------------------------------ spec validation
    @staticmethod
    def check_halves(source: str | None, sink: str | None):
        """Parse and validate a source and/or a sink as entered; raises SpecErrors with
        every problem of both halves (each tagged ``part`` "source" or "sink")."""
        errors: list[SpecError] = []
        src = snk = None
        if source is not None:
            try:
                src = parse_source(source)
            except SpecError as exc:
                errors += _tag([exc], "source", source)
        if sink is not None:
            try:
                snk = parse_sink(sink)
            except SpecError as exc:
                errors += _tag([exc], "sink", sink)
        if src is not None:
            try:
                validate_parts(src, None, source)
            except SpecErrors as exc:
                errors += _tag(list(exc.errors), "source", source)
        if snk is not None:
            try:
                validate_parts(None, snk, sink)
            except SpecErrors as exc:
                errors += _tag(list(exc.errors), "sink", sink)
        if errors:
            raise SpecErrors(errors)
        return src, snk

    @staticmethod
    def check_spec(text: str) -> list[Definition]:
        """Parse and validate a whole spec file; raises SpecErrors with every problem
        (bad or duplicate names, unknown components, bad arguments...)."""
        if not isinstance(text, str):
            raise CommandError("a spec must be text")
        spec = parse(text)
        errors: list[SpecError] = []
        first: dict[str, Definition] = {}
        for d in spec.definitions:
            problem = name_problem(d.name)
            if problem:
                errors.append(SpecError(f"bad logical node name: {problem}", *d.pos, text))
            elif d.name in first:
                errors.append(SpecError(f"{d.name} is defined twice (first at line "
                                        f"{first[d.name].pos[0]})", *d.pos, text))
            else:
                first[d.name] = d
            try:
                validate_parts(d.source, d.sink, text)
            except SpecErrors as exc:
                errors += exc.errors
        if errors:
            raise SpecErrors(errors)
        return list(spec.definitions)

    def validate(self, source: str | None = None, sink: str | None = None,
                 spec: str | None = None) -> dict:
        """Live validation for the console: ``{"ok", "errors", "message", "canonical"}``
        (canonical texts of whatever was valid). Never raises for bad specs."""
        errors: list[dict] = []
        messages: list[str] = []
        canonical: dict = {}
        if spec is not None:
            try:
                defs = self.check_spec(spec)
                canonical["spec"] = "".join(format_definition(d) + "\n" for d in defs)
            except SpecError as exc:
                _tag(exc.errors if isinstance(exc, SpecErrors) else [exc], "spec", spec)
                errors += spec_error_list(exc)
                messages.append(render_spec_error(exc))
            except CommandError as exc:
                errors.append({"message": str(exc), "line": None, "column": None,
                               "part": "spec"})
                messages.append(str(exc))
        if source is not None or sink is not None:
            for part, text in (("source", source), ("sink", sink)):
                if text is None:
                    continue
                try:
                    src, snk = self.check_halves(text if part == "source" else None,
                                                 text if part == "sink" else None)
                    canonical[part] = format_source(src) if src else format_sink(snk)
                except SpecError as exc:
                    errors += spec_error_list(exc)
                    messages.append(render_spec_error(exc))
        return {"ok": not errors, "errors": errors, "message": "\n".join(messages),
                "canonical": canonical}

    # ------------------------------------------------------------ config commands
    def _cmd_config(self, args: list[str]) -> str:
        if len(args) == 3:
            name, source, sink = args
            flow = None
        elif len(args) == 4:
            name, flow, source, sink = args
            _check_name("flow", flow)
        else:
            raise CommandError(self.usage("config"))
        _check_name("logical node", name)
        source, sink = source.strip(), sink.strip()
        self.check_halves(source, sink)
        cfg, changed = self._write_config(name, source, sink, flow)
        if not changed:
            return f"{name} unchanged (version {cfg.version})"
        note = self._retranslate([name])
        return f"configured {name} (version {cfg.version}){note}"

    def _new_config(self, old: LogicalConfig | None, name: str, source: str, sink: str,
                    flow: str | None, world_of) -> LogicalConfig | None:
        """The config to store for an entered spec, or None if nothing changes. The flow
        is kept when none is given (default-flow for a new node) and so is the refresh
        counter. The translation is computed now (``world_of(cfg)`` gives the world to
        translate in) and stored in the same write, so nodes never see a spec that needs
        a translation without one."""
        flow = flow or (old.flow if old else DEFAULT_FLOW)
        if old and (old.source, old.sink, old.flow) == (source, sink, flow):
            return None
        cfg = LogicalConfig(name=name, source=source, sink=sink, flow=flow,
                            refresh=old.refresh if old else 0)
        cfg.tsource, cfg.tsink = self._translate(cfg, world_of(cfg))
        return cfg

    def _write_config(self, name: str, source: str, sink: str,
                      flow: str | None) -> tuple[LogicalConfig, bool]:
        box: dict = {}

        def change(old):
            box["old"] = old
            return self._new_config(old, name, source, sink, flow,
                                    lambda cfg: self._world({name: cfg}))

        cfg = self.store.update_logical(name, change)
        if cfg is None:
            return box["old"], False
        self.view.wait_until(lambda t: getattr(t["logical"].get(name), "version", -1)
                             >= cfg.version)
        return cfg, True

    def _cmd_multiconfig(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError(self.usage("multiconfig"))
        return self._multiconfig(args[0])

    def _multiconfig(self, text: str, where: str | None = None) -> str:
        try:
            defs = self.check_spec(text)
        except SpecError as exc:
            if where:
                _tag(exc.errors if isinstance(exc, SpecErrors) else [exc], where, text)
            raise
        if not defs:
            return "the spec defines no logical node: nothing changed"
        pragmas = _flow_pragmas(text)
        _, existing, _, _, _ = self.view.snapshot()
        entered = {}
        for d in defs:
            flow = None
            for line, f in pragmas:
                if line < d.pos[0]:
                    flow = f
            entered[d.name] = (format_source(d.source), format_sink(d.sink), flow)
        probes = {n: LogicalConfig(name=n, source=s, sink=k,
                                   flow=f or getattr(existing.get(n), "flow", DEFAULT_FLOW))
                  for n, (s, k, f) in entered.items()}
        world = self._world(probes)
        cfgs = []
        for n, (s, k, f) in entered.items():
            cfg = self._new_config(existing.get(n), n, s, k, f, lambda _cfg: world)
            if cfg is not None:
                cfgs.append(cfg)
        self._put_many(cfgs)
        pending = sorted(c.name for c in cfgs)
        wanted = {c.name: (c.source, c.sink, c.flow) for c in cfgs}

        def written(tables) -> bool:
            logical = tables["logical"]
            while pending:
                got = logical.get(pending[0])
                if got is None or (got.source, got.sink, got.flow) != wanted[pending[0]]:
                    return False
                pending.pop(0)
            return True
        if cfgs:
            self.view.wait_until(written)
        note = self._retranslate(sorted(entered)) if cfgs else ""
        unchanged = len(defs) - len(cfgs)
        msg = f"configured {len(cfgs)} logical node(s)"
        if unchanged:
            msg += f", {unchanged} unchanged"
        return msg + note

    def _put_many(self, cfgs: list[LogicalConfig]) -> None:
        group: list[LogicalConfig] = []
        size = 0
        for cfg in cfgs:
            n = len(json.dumps(cfg.data())) + 100
            if group and size + n > TX_BYTES:
                self.store.put_many(group, chunk=len(group))
                group, size = [], 0
            group.append(cfg)
            size += n
        if group:
            self.store.put_many(group, chunk=len(group))

    def _cmd_unconfig(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError(self.usage("unconfig"))
        name = _check_name("logical node", args[0])
        if not self.store.delete_logical(name):
            raise NotFound(f"{name} has no configuration")
        self.view.wait_until(lambda t: name not in t["logical"])
        return f"removed the configuration of {name}" + self._retranslate([name])

    def _cmd_refresh(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError(self.usage("refresh"))
        name = _check_name("logical node", args[0])
        cfg = self._refresh(name)
        if cfg is None:
            raise NotFound(f"{name} has no configuration")
        return f"refreshed {name} (version {cfg.version})"

    def _refresh(self, name: str) -> LogicalConfig | None:
        """Bump ``name``'s refresh counter (compare-and-set); None if it has no config."""
        cfg = self.store.update_logical(
            name, lambda old: None if old is None else replace(old, refresh=old.refresh + 1))
        if cfg is not None:
            self.view.wait_until(lambda t: getattr(t["logical"].get(name), "version", -1)
                                 >= cfg.version)
        return cfg

    def _cmd_refreshall(self, args: list[str]) -> str:
        if args:
            raise CommandError(self.usage("refreshAll"))
        _, logical, _, _, _ = self.view.snapshot()
        done = [n for n in sorted(logical) if self._refresh(n) is not None]
        return f"refreshed {len(done)} logical node(s)"

    # ------------------------------------------------------------ mapping commands
    def _cmd_map(self, args: list[str]) -> str:
        if len(args) != 2:
            raise CommandError(self.usage("map"))
        physical = _check_name("physical node", args[0])
        logical = _check_name("logical node", args[1])
        _, _, mappings, _, _ = self.view.snapshot()
        for p in sorted(mappings):
            if p != physical and logical in mappings[p]:
                raise CommandFailed(f"{logical} is already mapped to {p}; unmap it first")
        if logical in mappings.get(physical, []):
            return f"{logical} is already mapped to {physical}"
        self.store.map(physical, logical)
        self.view.wait_until(lambda t: logical in t["mappings"].get(physical, ()))
        return f"mapped {logical} to {physical}" + self._retranslate([logical])

    def _cmd_unmap(self, args: list[str]) -> str:
        if len(args) != 2:
            raise CommandError(self.usage("unmap"))
        physical = _check_name("physical node", args[0])
        logical = _check_name("logical node", args[1])

        def change(m: list[str]) -> list[str]:
            if logical not in m:
                raise NotFound(f"{logical} is not mapped to {physical}")
            return [x for x in m if x != logical]
        self.store.update_mapping(physical, change)
        self.view.wait_until(lambda t: logical not in t["mappings"].get(physical, ()))
        return f"unmapped {logical} from {physical}" + self._retranslate([logical])

    def _cmd_unmapall(self, args: list[str]) -> str:
        if args:
            raise CommandError(self.usage("unmapAll"))
        count = 0
        mappings = self.store.list_mappings()
        for physical, names in mappings.items():
            if names:
                removed: list[str] = []

                def clear(m: list[str], removed=removed) -> list[str]:
                    removed[:] = m
                    return []
                self.store.update_mapping(physical, clear)
                count += len(removed)
        self.view.wait_until(lambda t: not any(t["mappings"].get(p) for p in mappings))
        return (f"unmapped {count} logical node(s) from {len(mappings)} physical node(s)"
                + self._retranslate(None))

    def _cmd_decommission(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError(self.usage("decommission"))
        name = _check_name("logical node", args[0])
        deleted = self.store.delete_logical(name)
        unmapped = []
        for physical, names in self.store.list_mappings().items():
            if name in names:
                self.store.unmap(physical, name)
                unmapped.append(physical)
        if not deleted and not unmapped:
            raise NotFound(f"{name} is neither configured nor mapped")
        self.view.wait_until(lambda t: name not in t["logical"] and not any(
            name in t["mappings"].get(p, ()) for p in unmapped))
        where = f" (unmapped from {', '.join(unmapped)})" if unmapped else ""
        return f"decommissioned {name}{where}" + self._retranslate([name])

    # ------------------------------------------------------------ physical nodes
    def _known_physical(self) -> tuple[set[str], set[str]]:
        """(every physical node known, those alive), read from ZooKeeper itself."""
        alive = set(self.store.list_physical())
        known = set(self.store.list_mappings()) | set(self.store.list_status()) | alive
        return known, alive

    def _cmd_purge(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError(self.usage("purge"))
        physical = _check_name("physical node", args[0])
        known, alive = self._known_physical()
        if physical in alive:
            raise CommandFailed(f"{physical} is alive: only physical nodes that are gone "
                                f"can be purged")
        if physical not in known:
            raise NotFound(f"no physical node {physical}")
        self.store.delete_physical(physical)
        self.view.wait_until(lambda t: physical not in t["mappings"]
                             and physical not in t["status"])
        return f"purged {physical}" + self._retranslate(None)

    def _cmd_purgeall(self, args: list[str]) -> str:
        if args:
            raise CommandError(self.usage("purgeAll"))
        known, alive = self._known_physical()
        dead = sorted(known - alive)
        for physical in dead:
            self.store.delete_physical(physical)
        self.view.wait_until(lambda t: not any(p in t["mappings"] or p in t["status"]
                                               for p in dead))
        if not dead:
            return "no physical node to purge"
        return (f"purged {len(dead)} physical node(s): {', '.join(dead)}"
                + self._retranslate(None))

    def _cmd_setchokelimit(self, args: list[str]) -> str:
        if len(args) != 3:
            raise CommandError(self.usage("setChokeLimit"))
        physical = _check_name("physical node", args[0])
        choke = args[1]
        if not choke or len(choke) > MAX_NAME:
            raise CommandError(f"bad choke id {choke!r}")
        try:
            kbps = int(args[2])
        except ValueError:
            raise CommandError(f"KBPS must be a whole number of KB/s, not {args[2]!r}") \
                from None
        if kbps < 0 or kbps > 2**40:
            raise CommandError(f"KBPS must be between 0 and {2**40}, not {kbps}")
        self.store.set_choke(physical, choke, kbps)
        return f"choke {choke} on {physical} limited to {kbps} KB/s"

    # ------------------------------------------------------------ files
    def _file(self, name: str) -> Path:
        """``name`` under the data directory (the master never reads or writes elsewhere:
        the REST API must not be a way into the master's filesystem)."""
        if not name or "\x00" in name:
            raise CommandError("a file name must not be empty")
        base = self.data_dir.resolve()
        path = (base / name).resolve()
        if path != base and base not in path.parents:
            raise CommandError(f"{name}: files are read and written under the master's "
                               f"data directory {base} only")
        return path

    def saved_text(self) -> str:
        """Every config as a spec file: definitions grouped by flow under ``// flow:``
        lines (which ``load`` reads back), entered specs in canonical form."""
        _, logical, _, _, _ = self.view.snapshot()
        by_flow: dict[str, list[str]] = {}
        for name in sorted(logical):
            cfg = logical[name]
            try:
                line = format_definition(Definition(name, parse_source(cfg.source),
                                                    parse_sink(cfg.sink)))
            except SpecError:
                line = f"{json.dumps(name)} : {cfg.source} | {cfg.sink} ;"
            by_flow.setdefault(cfg.flow, []).append(line)
        out = [f"// Flume logical node configurations, saved by master {self.name} "
               f"on {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"]
        for flow in sorted(by_flow):
            out.append(f"\n// flow: {flow}\n")
            out.extend(line + "\n" for line in by_flow[flow])
        return "".join(out)

    def _cmd_save(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError(self.usage("save"))
        path = self._file(args[0])
        text = self.saved_text()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
            os.replace(tmp, path)
        except (OSError, UnicodeError) as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise CommandFailed(f"cannot write {path}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
        count = sum(1 for line in text.splitlines() if line and not line.startswith("//"))
        return f"saved {count} configuration(s) to {path}"

    def _cmd_load(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError(self.usage("load"))
        path = self._file(args[0])
        try:
            if path.stat().st_size > MAX_SPEC_FILE:
                raise CommandFailed(f"{path} is larger than {MAX_SPEC_FILE} bytes")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"no file {path}") from None
        except (OSError, UnicodeError) as exc:
            raise CommandFailed(f"cannot read {path}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
        return f"{path}: " + self._multiconfig(text, where=str(path))

    def _cmd_noop(self, args: list[str]) -> str:
        if len(args) > 1:
            raise CommandError(self.usage("noop"))
        ms = 0
        if args:
            try:
                ms = int(args[0])
            except ValueError:
                raise CommandError(f"MS must be a whole number of milliseconds, "
                                   f"not {args[0]!r}") from None
            if not 0 <= ms <= MAX_NOOP_MS:
                raise CommandError(f"MS must be between 0 and {MAX_NOOP_MS}")
            time.sleep(ms / 1000)
        return "noop" + (f" ({ms} ms)" if ms else "")

    # ------------------------------------------------------------ listings
    def _memoised(self, key: str, build):
        """``(value, json bytes)`` of a listing, rebuilt only when the view changed."""
        self._require_zk()
        if self.view.ready:
            gen = self.view.generation
            hit = self._memo.get(key)
            if hit is not None and hit[0] == gen:
                return hit[1], hit[2]
        snap = self.view.snapshot()
        gen = snap[0]
        value = redact_tree(build(*snap[1:]))   # listings never show passwords
        raw = _to_json(value)
        if gen is not None:
            with self._memo_lock:
                self._memo[key] = (gen, value, raw)
        return value, raw

    def status(self) -> dict:
        """``{"logical": [row...], "physical": [row...]}``; see status_rows for fields."""
        return self._memoised("status", self._build_status)[0]

    def status_json(self) -> bytes:
        return self._memoised("status", self._build_status)[1]

    @staticmethod
    def _placement(mappings: dict[str, list[str]]) -> dict[str, str]:
        # the same rule as translations: the first physical node in name order wins
        placement: dict[str, str] = {}
        for p in sorted(mappings):
            for name in mappings[p]:
                placement.setdefault(name, p)
        return placement

    def _build_status(self, logical, mappings, physical, status) -> dict:
        placement = self._placement(mappings)
        rows = []
        for name in sorted(set(logical) | set(placement)):
            cfg = logical.get(name)
            p = placement.get(name)
            st = status.get(p) if p is not None else None
            st = st if isinstance(st, dict) else {}
            reports = st.get("logical")
            rep = reports.get(name) if isinstance(reports, dict) else None
            rep = rep if isinstance(rep, dict) else {}
            if p is None:
                state = "UNMAPPED"
            elif p not in physical:
                state = "LOST"
            else:
                state = str(rep.get("state") or "HELLO")
            info = physical.get(p) or {}
            rows.append({
                "name": name,
                "physical": p,
                "host": info.get("host") or st.get("host"),
                "state": state,
                "version": rep.get("version"),
                "config_version": cfg.version if cfg else None,
                "flow": cfg.flow if cfg else rep.get("flow"),
                "source": cfg.source if cfg else None,
                "sink": cfg.sink if cfg else None,
                "tsource": cfg.tsource if cfg else None,
                "tsink": cfg.tsink if cfg else None,
                "last_error": rep.get("last_error"),
                "last_seen": st.get("updated"),
                **_counters(rep),
            })
        # still reported by a live physical node, but neither configured nor mapped
        # anywhere any more: decommissioned, its node has not stopped it yet
        known = set(logical) | set(placement)
        for p in sorted(physical):
            st = status.get(p)
            reports = st.get("logical") if isinstance(st, dict) else None
            if not isinstance(reports, dict):
                continue
            for name in sorted(set(reports) - known):
                rep = reports[name] if isinstance(reports[name], dict) else {}
                known.add(name)
                rows.append({
                    "name": name, "physical": p, "host": physical[p].get("host"),
                    "state": "DECOMMISSIONED", "version": rep.get("version"),
                    "config_version": None, "flow": rep.get("flow"), "source": None,
                    "sink": None, "tsource": None, "tsink": None,
                    "last_error": rep.get("last_error"), "last_seen": st.get("updated"),
                    **_counters(rep)})
        rows.sort(key=lambda r: r["name"])
        phys = []
        for p in sorted(set(mappings) | set(physical) | set(status)):
            info = physical.get(p) or {}
            st = status.get(p) if isinstance(status.get(p), dict) else {}
            phys.append({
                "name": p,
                "alive": p in physical,
                "host": info.get("host") or st.get("host"),
                "pid": info.get("pid"),
                "http_port": info.get("http_port"),
                "started": info.get("started"),
                "logical": list(mappings.get(p, [])),
                "last_seen": st.get("updated"),
            })
        return {"logical": rows, "physical": phys}

    def configs(self) -> list[dict]:
        """Every config: entered and translated specs, flow, version, refresh, physical."""
        return self._memoised("configs", self._build_configs)[0]

    def configs_json(self) -> bytes:
        return self._memoised("configs", self._build_configs)[1]

    @staticmethod
    def _config_row(cfg: LogicalConfig, physical: str | None) -> dict:
        return {"name": cfg.name, "flow": cfg.flow, "source": cfg.source, "sink": cfg.sink,
                "tsource": cfg.tsource, "tsink": cfg.tsink, "version": cfg.version,
                "refresh": cfg.refresh, "physical": physical}

    def _build_configs(self, logical, mappings, physical, status) -> list[dict]:
        placement = self._placement(mappings)
        return [self._config_row(logical[n], placement.get(n)) for n in sorted(logical)]

    def config(self, name: str) -> dict:
        """One config (raises NotFound)."""
        self._require_zk()
        _, logical, mappings, _, _ = self.view.snapshot()
        cfg = logical.get(name)
        if cfg is None:
            raise NotFound(f"{name} has no configuration")
        return redact_tree(self._config_row(cfg, self._placement(mappings).get(name)))

    def mappings(self) -> dict[str, list[str]]:
        """``{physical: [logical...]}``."""
        return self._memoised("mappings", lambda lg, m, p, s: {k: list(m[k])
                                                                for k in sorted(m)})[0]

    def flows(self) -> dict[str, dict]:
        """``{flow: {"agents", "collectors", "pool", "others", "chains"}}``: ``chains`` maps
        each auto-chain agent to its collectors, primary first."""
        return self._memoised("flows", self._build_flows)[0]

    def flows_json(self) -> bytes:
        return self._memoised("flows", self._build_flows)[1]

    @staticmethod
    def _build_flows(logical, mappings, physical, status) -> dict:
        from .translate import World, chains, flows
        world = World(configs=logical, mappings=mappings, physicals=physical)
        out = flows(world)
        agent_chains = chains(world)
        for flow, info in out.items():
            info["chains"] = agent_chains.get(flow, {})
        return out

    def commands(self, limit: int = 100) -> list[dict]:
        """The newest ``limit`` commands, newest first."""
        self._require_zk()
        limit = max(1, min(int(limit), 1000))
        return [redact_tree(asdict(c)) for c in self.store.list_commands(limit)]

    def command(self, cmd_id: str) -> dict:
        self._require_zk()
        if not isinstance(cmd_id, str) or not cmd_id.isdigit() or len(cmd_id) > 10:
            raise NotFound(f"no command {cmd_id}")
        cmd = self.store.get_command(cmd_id)
        if cmd is None:
            raise NotFound(f"no command {cmd_id}")
        return redact_tree(asdict(cmd))


__all__ = ["MasterService", "ClusterView", "CommandError", "CommandFailed", "NotFound",
           "render_spec_error", "spec_error_list", "name_problem", "DEFAULT_FLOW"]
