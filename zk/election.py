"""The masters' leader election under ``election/`` (kazoo's Election recipe: a lock whose
holder leads; the next candidate in line takes over when the leader's session ends)."""
from __future__ import annotations

from typing import Callable

from kazoo.recipe.election import Election

from .client import zk_errors
from .store import ConfigStore


class LeaderElection:
    """One candidate, named ``identifier``, among the masters of ``store``'s root."""

    def __init__(self, store: ConfigStore, identifier: str):
        self._election = Election(store.client, store.election_path, identifier)

    def run(self, lead: Callable[[], None]) -> None:
        """Block until this candidate is elected, then call ``lead()``; the lead is given
        up when ``lead`` returns (or raises: that passes through). ZooKeeper failing
        meanwhile raises :class:`zk.client.ZkError`; :meth:`cancel` makes it return."""
        with zk_errors("the leader election failed"):
            self._election.run(lead)

    def cancel(self) -> None:
        """Withdraw: a :meth:`run` waiting to be elected returns."""
        self._election.cancel()
