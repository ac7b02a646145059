"""End-to-end protocol vocabulary shared by the agent and the collector (docs/e2e.md).

* The answers of ``appendGroup``: a :class:`~node.rpc.Status` (``OK``, ``RETRY``,
  ``FAILED``) and a message; an OK's message is :data:`COMMITTED` ("acknowledged
  already") or ``TAKEN_BY + <collector id>``.
* The states of a group: :class:`SendState` on the agent (its sender), :class:`HeldState`
  on the collector (a group it holds a claim on).
* Names: agent ids (validated on the collector: :func:`agent_id_problem`, made to fit on
  the agent: :func:`fit_agent_id`) and collector ids, which name znodes of the commit
  log (zk/commit_log.py).
* The checkpoint key ``e2e:<agent>:<seq>`` that carries a group's identity from the
  ``collectorSource`` through the flow to the ``collectorSink``.
"""
from __future__ import annotations

import enum
import hashlib
import re
import socket

from ..checkpoint import Checkpoint
from ..component import NodeContext
from ..errors import SinkError
from ..rpc import Status

NEEDS_ZK = ("end-to-end mode needs a node managed through ZooKeeper "
            "(flume node --zk or --master)")
KEY_PREFIX = "e2e:"
OK, RETRY, FAILED = Status.OK, Status.RETRY, Status.FAILED
COMMITTED = "committed"     # the message of an OK meaning "acknowledged already"
TAKEN_BY = "taken by "      # the message of an OK: "taken by <collector id>"


class Claim(enum.StrEnum):
    """What claiming a group found (the commit log's answer, node/commit_port.py)."""

    CLAIMED = "claimed"       # the claim is ours now and the group is not committed
    OURS = "ours"             # this session held it already
    HELD = "held"             # another live session holds it
    COMMITTED = "committed"   # committed already: no claim is kept


class SendState(enum.Enum):
    """Where the agent's sender is with a group (``GroupSender``); a group starts NEW and
    each answer of ``appendGroup`` moves it, from any state:

    * OK --> SENT: a collector took it; sent again ``retransmitMs`` later, or at once if
      that collector fails, until acknowledged (an OK "committed" acknowledges it now);
    * RETRY --> CLAIMED: another collector holds it; its claim is probed until it goes
      or ``retransmitMs`` passes, then the group is sent again;
    * FAILED --> FAILED: every collector refused it; sent again after a growing wait.

    No collector reachable leaves the state as it is. An acknowledged group leaves the
    sender whatever its state."""

    NEW = "new"
    SENT = "sent"
    CLAIMED = "claimed"
    FAILED = "failed"


class HeldState(enum.Enum):
    """Where a group a collector holds a claim on is (``CollectorState.held``)."""

    CLAIMING = "claiming"     # the claim is being created in ZooKeeper
    QUEUED = "queued"         # handed to the flow, its checkpoint key not yet at the sink
    WRITTEN = "written"       # the sink has it: in a file not yet committed


def group_key(agent: str, seq: int) -> str:
    """The checkpoint key carrying a group's identity from collectorSource to the sink."""
    return f"{KEY_PREFIX}{agent}:{seq}"


def parse_group_key(key: str) -> tuple[str, int] | None:
    if not key.startswith(KEY_PREFIX):
        return None
    agent, _, seq = key[len(KEY_PREFIX):].rpartition(":")
    try:
        return agent, int(seq)
    except ValueError:
        return None


def take_groups(checkpoints: list[Checkpoint]) -> list[tuple[str, int]]:
    """Remove the group keys from ``checkpoints`` (in place: what is left are ordinary
    positions for the local store) and return the groups, in order, without repeats."""
    out: dict[tuple[str, int], None] = {}
    for cp in checkpoints:
        upd = cp.updates
        if not upd:
            continue
        keys = [k for k in upd if k.startswith(KEY_PREFIX)]
        for k in keys:
            g = parse_group_key(k)
            if g is not None:
                out[g] = None
            del upd[k]
    return list(out)


def commit_log_of(ctx: NodeContext):
    """The node's E2E commit log (a node/commit_port.py CommitLogPort over
    zk/commit_log.py); SinkError when the node runs without ZooKeeper."""
    commits = ctx.shared.commit_log
    if commits is None:
        raise SinkError(NEEDS_ZK)
    return commits


# Agent ids name znodes (commits/claims/<agent>, groups/<agent>, watermark/<agent>) and
# come from unauthenticated senders: a collector takes only ids of at most
# AGENT_ID_MAX_BYTES characters of AGENT_ID_CHARS -- hostnames, logical node names, uuids
# fit, and none of these characters is quoted in a znode name, so the znode name is the id.
AGENT_ID_MAX_BYTES = 128
AGENT_ID_CHARS = "A-Za-z0-9 and . _ : @ # ~ + = , -"
_AGENT_ID = re.compile(r"[A-Za-z0-9._:@#~+=,-]+")
MAX_AGENTS = 10_000     # live agent ids one collector keeps track of (maxAgents)
AGENT_IDLE_MS = 300_000  # an agent without a held group, unseen this long, is forgotten
MAX_NEW_AGENTS_PER_MINUTE = 100   # agent ids not live yet admitted per sender address


def agent_id_problem(agent: str) -> str | None:
    """Why ``agent`` is not an agent id a collector takes; None if it is one. Never quotes
    the id itself (it may be megabytes)."""
    if len(agent) > AGENT_ID_MAX_BYTES:
        return (f"an agent id of {len(agent)} characters (at most "
                f"{AGENT_ID_MAX_BYTES})")
    if not _AGENT_ID.fullmatch(agent) or agent in (".", ".."):
        return (f"agent id {agent!r} is not 1 to {AGENT_ID_MAX_BYTES} characters of "
                f"{AGENT_ID_CHARS} (and not . or ..)")
    return None


def fit_agent_id(name: str) -> str:
    """``name`` if it is a valid agent id, else a stable id that is: up to 100 of its
    valid characters, ``~`` and 16 hex digits of its SHA-256 (logical node names may hold
    any printable character and 200 of them)."""
    if agent_id_problem(name) is None:
        return name
    kept = "".join(_AGENT_ID.findall(name))[:100]
    return f"{kept}~{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def agent_id(ctx: NodeContext) -> str:
    """This agent's name in ZooKeeper: the logical node's name, ``name#k`` for the k-th
    E2E sink of the same flow (k >= 2, in opening order); made to fit by
    :func:`fit_agent_id` when that is not a valid agent id."""
    ctx.e2e_agents += 1
    n = ctx.e2e_agents
    return fit_agent_id(ctx.logical_name if n == 1 else f"{ctx.logical_name}#{n}")


def collector_id(ctx: NodeContext) -> str:
    """This collector's name in ZooKeeper: ``<physical node>-<logical node>``, stable
    across restarts (its commit records are rolled forward under it)."""
    phys = ctx.physical_name or ctx.shared.physical_name or socket.gethostname()
    return f"{phys}-{ctx.logical_name}"
