"""The master's service: every command (:mod:`master.commands`, named in
:mod:`master.command_table`), every listing (:mod:`master.listings`) and live validation
(:mod:`master.validation`) over one :class:`ConfigStore`, with the
:class:`zk.cluster_view.ClusterView` they read. Any master serves any request: the service
keeps no state of its own beyond that view of ZooKeeper.

Every listing raises :class:`ZkError` at once while this master is not connected to
ZooKeeper; a command waits ``reconnect_seconds`` (:data:`master.commands.RECONNECT_SECONDS`)
at most for the connection to come back (an ensemble electing a new leader), then raises
it. A connection lost while a command runs fails it within the store's bounds (each
ZooKeeper operation waits ``zk.store._Retrying.ANSWER_TIMEOUT`` for its answer, retries
within ``zk.client.RETRY``'s deadline): the command is then FAILED, its outcome unknown.
"""
from __future__ import annotations

from pathlib import Path

import flume_og.node.components  # noqa: F401  (every component, imported once at start)
from flume_og.node.redact import redact
from flume_og.zk.client import ZkError
from flume_og.zk.cluster_view import ClusterView
from flume_og.zk.store import Command, ConfigStore

from . import validation
from .errors import NotFound
from .commands import RECONNECT_SECONDS, CommandRunner
from .history import DEFAULT_INTERVAL, History
from .listings import Listings, preview_chains


class MasterService:
    """Commands and listings over one :class:`ConfigStore`. Thread-safe: the REST API calls
    it from many threads, several masters call it on the same ZooKeeper."""

    reconnect_seconds = RECONNECT_SECONDS     # a command's wait for ZooKeeper at most

    def __init__(self, store: ConfigStore, data_dir: Path, name: str = "master",
                 watch: bool = True, history_interval: float | None = DEFAULT_INTERVAL):
        self.store = store
        self.name = name
        self.view = ClusterView(store)
        if watch:
            self.view.start()
        self.runner = CommandRunner(store, self.view, data_dir, name)
        self.listings = Listings(self.view, store)
        # counters sampled into rings per logical node (master/history.py); None: kept
        # only when :meth:`sample_history` is called (tests)
        self.history = History(self.status, interval=history_interval or DEFAULT_INTERVAL)
        if history_interval and watch:
            self.history.start()

    def close(self) -> None:
        self.history.close()
        self.view.close()

    def sample_history(self) -> None:
        """One history sample now (the sampling thread does it every interval)."""
        self.history.sample(self.status())

    def history_series(self, names: list[str]) -> dict:
        return self.history.series(names)

    def history_latest(self) -> dict:
        return self.history.latest()

    def flow_history(self, flow: str) -> dict:
        """The end-to-end history of ``flow`` (raises NotFound for an unknown flow)."""
        info = self.flows().get(flow)
        if info is None:
            raise NotFound(f"no flow {flow}")
        out = self.history.flow(info["agents"], info["collectors"])
        out["flow"] = flow
        return out

    def preview_chains(self, flow: str, names: list[str]) -> dict:
        """The collector chains the master would compute if ``names`` moved to ``flow``
        (nothing is stored)."""
        self._require_zk()
        return preview_chains(self.view.snapshot(), flow, names)

    def _require_zk(self, wait: float = 0.0) -> None:
        if not self.store.connected(wait):
            raise ZkError("ZooKeeper is unreachable (the master is reconnecting)")

    # ------------------------------------------------------------ commands
    def execute(self, command: str, args: list[str], by: str = "",
                raise_failed: bool = False) -> Command:
        """See :meth:`master.commands.CommandRunner.execute`."""
        self._require_zk(self.reconnect_seconds)
        return self.runner.execute(command, args, by, raise_failed)

    # ------------------------------------------------------------ listings
    def status(self) -> dict:
        self._require_zk()
        return self.listings.status()

    def status_json(self) -> bytes:
        self._require_zk()
        return self.listings.status_json()

    def configs(self) -> list[dict]:
        self._require_zk()
        return self.listings.configs()

    def configs_json(self) -> bytes:
        self._require_zk()
        return self.listings.configs_json()

    def config(self, name: str) -> dict:
        self._require_zk()
        return self.listings.config(name)

    def mappings(self) -> dict[str, list[str]]:
        self._require_zk()
        return self.listings.mappings()

    def flows(self) -> dict[str, dict]:
        self._require_zk()
        return self.listings.flows()

    def flows_json(self) -> bytes:
        self._require_zk()
        return self.listings.flows_json()

    def commands(self, limit: int = 100) -> list[dict]:
        self._require_zk()
        return self.listings.commands(limit)

    def command(self, cmd_id: str) -> dict:
        self._require_zk()
        return self.listings.command(cmd_id)

    def plan(self, text: str) -> list[dict]:
        """See :meth:`master.commands.CommandRunner.plan`."""
        self._require_zk()
        return self.runner.plan(text)

    def export_text(self) -> str:
        """Every config as one spec file ``multiconfig`` takes back unchanged (the
        ``save`` format), passwords hidden as in every listing."""
        self._require_zk()
        return redact(self.runner.saved_text())

    def stored_specs(self) -> list[str]:
        """Every source and sink stored, as entered (passwords included): where the REST
        API puts back the passwords a listing hid."""
        logical = self.view.snapshot().logical
        return [t for cfg in logical.values() for t in (cfg.source, cfg.sink)]

    # ------------------------------------------------------------ validation
    @staticmethod
    def validate(source: str | None = None, sink: str | None = None,
                 spec: str | None = None) -> dict:
        return validation.validate(source, sink, spec)
