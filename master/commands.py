"""The master's commands (:mod:`master.command_table`): each recorded in ZooKeeper
(QUEUED -> EXECING -> SUCCEEDED | FAILED, with a message), checked (:mod:`master.validation`)
and performed through :class:`ConfigStore` (compare-and-set or transactions for every
write). A master reads its own writes: each command waits (briefly) until its change is
visible in the :class:`ClusterView`.

Outcomes of :meth:`CommandRunner.execute`:

* bad input raises (after the command is recorded FAILED): :class:`SpecError` for a spec
  (every problem found, with positions; ``render_spec_error`` gives the text with carets),
  :class:`CommandError` for an unknown command, a wrong argument count or a bad value;
* a command that is valid but cannot be performed (unknown node, a live node purged, a
  file that cannot be read...) returns the record with state FAILED; with
  ``raise_failed=True`` it raises :class:`CommandFailed` (:class:`NotFound` for unknown
  things) instead, for the REST resource endpoints;
* ZooKeeper failing raises :class:`ZkError`.

Bounds: arguments and messages are cut to STORED_ARG_CHARS and STORED_MESSAGE_CHARS in the
record; ``load`` reads MAX_SPEC_FILE bytes at most; ``noop`` waits MAX_NOOP_MS at most;
files are read and written under the data directory only.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from flume_og.node.errors import FlumeError, SpecError
from flume_og.node.spec import Definition, format_definition, format_sink, format_source, \
    parse_sink, parse_source
from flume_og.zk.client import ConflictError, ZkError, zk_errors
from flume_og.zk.cluster_view import ClusterView
from flume_og.zk.store import COMMANDS_KEPT, Command, ConfigStore, LogicalConfig

from . import command_table
from .errors import CommandError, CommandFailed, NotFound
from .translate import World, retranslate, translate_config
from .validation import (MAX_NAME, check_halves, check_name, check_spec, name_problem,
                         render_spec_error, tag_all)

log = logging.getLogger(__name__)

DEFAULT_FLOW = "default-flow"
TRIM_EVERY = 50                 # trim the command history every 50 commands
MAX_NOOP_MS = 60_000
MAX_SPEC_FILE = 16 * 1024 * 1024
STORED_ARG_CHARS = 4096         # command records keep args and messages short: a znode
STORED_MESSAGE_CHARS = 16384    # must stay far below ZooKeeper's 1 MB limit
TX_BYTES = 512 * 1024           # bytes of configs per multiconfig transaction
# A command finding the master disconnected waits this long for ZooKeeper before failing:
# an ensemble elects a new leader in ~0.5 s and the client reconnects within ~2 s.
RECONNECT_SECONDS = 5.0


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


class CommandRunner:
    """Runs commands over one store and its view. Thread-safe: the REST API calls it from
    many threads, several masters call it on the same ZooKeeper."""

    def __init__(self, store: ConfigStore, view: ClusterView, data_dir: Path,
                 name: str = "master"):
        self.store = store
        self.view = view
        self.data_dir = Path(data_dir)
        self.name = name
        self.trim_every = TRIM_EVERY
        self.keep_commands = COMMANDS_KEPT

    # ------------------------------------------------------------ running and recording
    def execute(self, command: str, args: list[str], by: str = "",
                raise_failed: bool = False) -> Command:
        """Record, validate and perform one command; see the module docstring for what
        it raises and returns."""
        args = list(args or [])
        if not all(isinstance(a, str) for a in args):
            raise CommandError("command arguments must be strings")
        known = command_table.find(command)
        shown = known.name if known else _short(str(command), 100)
        with zk_errors("cannot record the command"):
            cmd = self.store.new_command(
                shown, [_short(a, STORED_ARG_CHARS) for a in args], by=_short(by, 200))
            cmd.state = "EXECING"
            self.store.update_command(cmd)
        try:
            with zk_errors(f"ZooKeeper failed during {shown}"):
                message = self._perform(known, shown, args)
        except (SpecError, CommandError, ConflictError) as exc:
            self._finish(cmd, "FAILED", render_spec_error(exc)
                         if isinstance(exc, SpecError) else str(exc))
            raise
        except CommandFailed as exc:
            self._finish(cmd, "FAILED", str(exc))
            if raise_failed:
                raise
            return cmd
        except ZkError as exc:
            answer = exc.__cause__ or exc   # the record names ZooKeeper's own answer
            self._finish(cmd, "FAILED", f"ZooKeeper: {type(answer).__name__} "
                                        f"{answer}".strip())
            raise
        except Exception as exc:
            log.exception("command %s %s failed unexpectedly", shown, cmd.id)
            self._finish(cmd, "FAILED", f"internal error: {type(exc).__name__}: {exc}")
            raise
        self._finish(cmd, "SUCCEEDED", message)
        return cmd

    def _perform(self, known: command_table.MasterCommand | None, shown: str,
                 args: list[str]) -> str:
        if known is None:
            raise CommandError(f"unknown command {shown!r}; commands: "
                               + ", ".join(command_table.names()))
        fewest, most = known.arity
        if not fewest <= len(args) <= most:
            raise CommandError("usage: " + known.usage)
        return getattr(self, "_cmd_" + known.name.lower())(args)

    def _finish(self, cmd: Command, state: str, message: str) -> None:
        cmd.state = state
        cmd.message = _short(message or "", STORED_MESSAGE_CHARS)
        cmd.finished = int(time.time() * 1000)
        try:
            with zk_errors("cannot record the outcome"):
                self.store.update_command(cmd)
                if int(cmd.id) % self.trim_every == 0:
                    self.store.trim_commands(self.keep_commands)
        except ZkError as exc:  # the outcome stands; only its record is incomplete
            log.warning("could not record the outcome of command %s: %s", cmd.id, exc)

    # ------------------------------------------------------------ translations
    def _world(self, extra: dict[str, LogicalConfig] | None = None) -> World:
        state = self.view.snapshot()
        logical = state.logical
        if extra:
            logical.update(extra)
        return World(configs=logical, mappings=state.mappings, physicals=state.physical)

    def _translate(self, cfg: LogicalConfig, world: World) -> tuple[str | None, str | None]:
        """The translation to store with a new config, so that nodes never see a spec that
        needs one without it. A failure here is repaired by the retranslation after the
        write (and by the leader's sweeps)."""
        try:
            return translate_config(cfg, world, self.store)
        except Exception as exc:
            log.warning("translating %s failed: %s", cfg.name, exc)
            return None, None

    def _retranslate(self, names: list[str] | None) -> str:
        """Recompute translations that depend on ``names``; '' or a note for the message
        (the config itself is stored: the leader's sweeps finish a failed retranslation)."""
        try:
            with zk_errors("ZooKeeper"):
                retranslate(self.store, names, world=self._world())
        except (FlumeError, ZkError) as exc:
            log.warning("retranslation after a change failed: %s", exc)
            return f" (translations pending: {exc})"
        return ""

    # ------------------------------------------------------------ config commands
    def _cmd_config(self, args: list[str]) -> str:
        if len(args) == 3:
            name, source, sink = args
            flow = None
        else:
            name, flow, source, sink = args
            check_name("flow", flow)
        check_name("logical node", name)
        source, sink = source.strip(), sink.strip()
        check_halves(source, sink)
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
        self.view.wait_until(lambda s: getattr(s.logical.get(name), "version", -1)
                             >= cfg.version)
        return cfg, True

    def _cmd_multiconfig(self, args: list[str]) -> str:
        return self._multiconfig(args[0])

    def _multiconfig(self, text: str, where: str | None = None) -> str:
        try:
            defs = check_spec(text)
        except SpecError as exc:
            if where:
                tag_all(exc, where, text)
            raise
        if not defs:
            return "the spec defines no logical node: nothing changed"
        pragmas = _flow_pragmas(text)
        existing = self.view.snapshot().logical
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

        def written(state) -> bool:
            while pending:
                got = state.logical.get(pending[0])
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
        name = check_name("logical node", args[0])
        if not self.store.delete_logical(name):
            raise NotFound(f"{name} has no configuration")
        self.view.wait_until(lambda s: name not in s.logical)
        return f"removed the configuration of {name}" + self._retranslate([name])

    def _cmd_refresh(self, args: list[str]) -> str:
        name = check_name("logical node", args[0])
        cfg = self._refresh(name)
        if cfg is None:
            raise NotFound(f"{name} has no configuration")
        return f"refreshed {name} (version {cfg.version})"

    def _refresh(self, name: str) -> LogicalConfig | None:
        """Bump ``name``'s refresh counter (compare-and-set); None if it has no config."""
        cfg = self.store.update_logical(
            name, lambda old: None if old is None else replace(old, refresh=old.refresh + 1))
        if cfg is not None:
            self.view.wait_until(lambda s: getattr(s.logical.get(name), "version", -1)
                                 >= cfg.version)
        return cfg

    def _cmd_refreshall(self, args: list[str]) -> str:
        logical = self.view.snapshot().logical
        done = [n for n in sorted(logical) if self._refresh(n) is not None]
        return f"refreshed {len(done)} logical node(s)"

    # ------------------------------------------------------------ mapping commands
    def _cmd_map(self, args: list[str]) -> str:
        physical = check_name("physical node", args[0])
        logical = check_name("logical node", args[1])
        mappings = self.view.snapshot().mappings
        for p in sorted(mappings):
            if p != physical and logical in mappings[p]:
                raise CommandFailed(f"{logical} is already mapped to {p}; unmap it first")
        if logical in mappings.get(physical, []):
            return f"{logical} is already mapped to {physical}"
        self.store.map(physical, logical)
        self.view.wait_until(lambda s: logical in s.mappings.get(physical, ()))
        return f"mapped {logical} to {physical}" + self._retranslate([logical])

    def _cmd_unmap(self, args: list[str]) -> str:
        physical = check_name("physical node", args[0])
        logical = check_name("logical node", args[1])

        def change(m: list[str]) -> list[str]:
            if logical not in m:
                raise NotFound(f"{logical} is not mapped to {physical}")
            return [x for x in m if x != logical]
        self.store.update_mapping(physical, change)
        self.view.wait_until(lambda s: logical not in s.mappings.get(physical, ()))
        return f"unmapped {logical} from {physical}" + self._retranslate([logical])

    def _cmd_unmapall(self, args: list[str]) -> str:
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
        self.view.wait_until(lambda s: not any(s.mappings.get(p) for p in mappings))
        return (f"unmapped {count} logical node(s) from {len(mappings)} physical node(s)"
                + self._retranslate(None))

    def _cmd_decommission(self, args: list[str]) -> str:
        name = check_name("logical node", args[0])
        deleted = self.store.delete_logical(name)
        unmapped = []
        for physical, names in self.store.list_mappings().items():
            if name in names:
                self.store.unmap(physical, name)
                unmapped.append(physical)
        if not deleted and not unmapped:
            raise NotFound(f"{name} is neither configured nor mapped")
        self.view.wait_until(lambda s: name not in s.logical and not any(
            name in s.mappings.get(p, ()) for p in unmapped))
        where = f" (unmapped from {', '.join(unmapped)})" if unmapped else ""
        return f"decommissioned {name}{where}" + self._retranslate([name])

    # ------------------------------------------------------------ physical nodes
    def _known_physical(self) -> tuple[set[str], set[str]]:
        """(every physical node known, those alive), read from ZooKeeper itself."""
        alive = set(self.store.list_physical())
        known = set(self.store.list_mappings()) | set(self.store.list_status()) | alive
        return known, alive

    def _cmd_purge(self, args: list[str]) -> str:
        physical = check_name("physical node", args[0])
        known, alive = self._known_physical()
        if physical in alive:
            raise CommandFailed(f"{physical} is alive: only physical nodes that are gone "
                                f"can be purged")
        if physical not in known:
            raise NotFound(f"no physical node {physical}")
        self.store.delete_physical(physical)
        self.view.wait_until(lambda s: physical not in s.mappings
                             and physical not in s.status)
        return f"purged {physical}" + self._retranslate(None)

    def _cmd_purgeall(self, args: list[str]) -> str:
        known, alive = self._known_physical()
        dead = sorted(known - alive)
        for physical in dead:
            self.store.delete_physical(physical)
        self.view.wait_until(lambda s: not any(p in s.mappings or p in s.status
                                               for p in dead))
        if not dead:
            return "no physical node to purge"
        return (f"purged {len(dead)} physical node(s): {', '.join(dead)}"
                + self._retranslate(None))

    def _cmd_setchokelimit(self, args: list[str]) -> str:
        physical = check_name("physical node", args[0])
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

    def plan(self, text: str) -> list[dict]:
        """What ``multiconfig`` of ``text`` would do, per logical node of the text, in its
        order: ``{"name", "action": "add" | "change" | "same", "old": {source, sink, flow}
        | None, "new": {...}}``; nodes not in the text are not listed (multiconfig leaves
        them). SpecError as ``multiconfig`` would raise it. Nothing is written."""
        defs = check_spec(text)
        pragmas = _flow_pragmas(text)
        existing = self.view.snapshot().logical
        out = []
        for d in defs:
            flow = None
            for line, f in pragmas:
                if line < d.pos[0]:
                    flow = f
            old = existing.get(d.name)
            new = {"source": format_source(d.source), "sink": format_sink(d.sink),
                   "flow": flow or (old.flow if old else DEFAULT_FLOW)}
            was = None if old is None else {"source": old.source, "sink": old.sink,
                                             "flow": old.flow}
            action = "add" if was is None else ("same" if was == new else "change")
            out.append({"name": d.name, "action": action, "old": was, "new": new})
        return out

    def saved_text(self) -> str:
        """Every config as a spec file: definitions grouped by flow under ``// flow:``
        lines (which ``load`` reads back), entered specs in canonical form."""
        logical = self.view.snapshot().logical
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
