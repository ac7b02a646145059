"""End-to-end (E2E) mode: effectively-once delivery with ZooKeeper as the commit log.

The protocol is written down in ``docs/e2e.md``; its ZooKeeper side (claims, committed
groups, watermarks, file records, the acknowledgement watch) is ``zk/commit_log.py``.
This package holds the node's side, one concept per module:

* :mod:`.protocol` -- answers, states (enums), agent and collector ids, checkpoint keys;
* :mod:`.agent` -- the agent: sender of the WAL's groups, acknowledgement tracker;
* :mod:`.collector` -- the collector's claims (``appendGroup``);
* :mod:`.commit` -- the collector's commits, roll-forward and salvage at start.

The names other modules use are importable from here.
"""
from .agent import AckCheckpoint, AckTracker, GroupSender, LocalTransport
from .collector import (AgentLimits, CollectorState, GroupHandler, collector_group_handler,
                        collector_state)
from .commit import Committer, HiddenJournal, file_url, salvage
from .protocol import (AGENT_ID_CHARS, AGENT_ID_MAX_BYTES, AGENT_IDLE_MS, COMMITTED, FAILED,
                       KEY_PREFIX, MAX_AGENTS, MAX_NEW_AGENTS_PER_MINUTE, NEEDS_ZK, OK,
                       RETRY, TAKEN_BY, HeldState, SendState,
                       agent_id, agent_id_problem, collector_id, commit_log_of,
                       fit_agent_id, group_key, parse_group_key, take_groups)

__all__ = ["AckCheckpoint", "AckTracker", "GroupSender", "LocalTransport",
           "AgentLimits", "CollectorState", "GroupHandler", "collector_group_handler",
           "collector_state",
           "Committer", "HiddenJournal", "file_url", "salvage",
           "AGENT_ID_CHARS", "AGENT_ID_MAX_BYTES", "COMMITTED", "FAILED", "KEY_PREFIX",
           "AGENT_IDLE_MS", "MAX_AGENTS", "MAX_NEW_AGENTS_PER_MINUTE", "NEEDS_ZK", "OK",
           "RETRY", "TAKEN_BY", "HeldState", "SendState",
           "agent_id", "agent_id_problem", "collector_id", "commit_log_of", "fit_agent_id",
           "group_key", "parse_group_key", "take_groups"]
