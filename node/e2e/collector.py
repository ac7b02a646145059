"""The collector half of end-to-end mode: claims (docs/e2e.md, collector step 1).

* :class:`GroupHandler` answers ``appendGroup`` for a ``collectorSource``
  (:func:`collector_group_handler`): agent id, CRC, payload and distinct-agent checks
  before ZooKeeper is asked anything, then a claim in the commit log (OK without writing
  when the group is committed already or this collector holds it; RETRY when another
  collector holds it), then the events go to the flow with the checkpoint key
  ``e2e:<agent>:<seq>`` (:func:`~node.e2e.protocol.group_key`).
* :class:`CollectorState` is what the collector's source and sink share per logical node
  (:func:`collector_state`): the commit log, the collector id, and the groups it holds
  claims on, each in a :class:`~node.e2e.protocol.HeldState`.

Committing the files that hold the groups is ``node/e2e/commit.py``.
"""
from __future__ import annotations

import logging
import threading
import time
import zlib
from typing import Callable, NamedTuple


from ..codec import BatchTooLarge
from ..component import Metrics, NodeContext
from ..limits import Refusals
from ..rpc import decode_payload
from .protocol import (AGENT_IDLE_MS, COMMITTED, FAILED, MAX_AGENTS,
                       MAX_NEW_AGENTS_PER_MINUTE, OK, RETRY, TAKEN_BY, Claim, HeldState,
                       agent_id_problem, collector_id, commit_log_of, group_key)

log = logging.getLogger(__name__)

NEW_AGENTS_WINDOW = 60.0   # seconds over which new agent ids are counted per address


class AgentLimits(NamedTuple):
    """Bounds on the agent ids a collector takes groups from (collectorSource's
    ``maxAgents``, ``agentIdleMs``, ``maxNewAgentsPerMinute``)."""

    max_agents: int = MAX_AGENTS
    idle: float = AGENT_IDLE_MS / 1000
    max_new_per_minute: int = MAX_NEW_AGENTS_PER_MINUTE


class AgentTable:
    """The agent ids a collector keeps track of, bounded (not thread-safe: the caller
    holds :attr:`CollectorState.lock`).

    An agent is *live* while the collector holds one of its groups (``busy``) or took one
    within ``limits.idle`` seconds; at most ``limits.max_agents`` are live, and at most
    ``limits.max_new_per_minute`` ids that are not live are admitted per sender address
    per minute. An agent neither busy nor seen for ``idle`` seconds is forgotten: it is
    admitted again later as a new one. Memory is O(live agents + addresses that brought a
    new id within the last minute)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.seen: dict[str, float] = {}        # agent -> last taken; oldest first
        self.new_by_peer: dict[str, tuple[float, int]] = {}   # window start, ids admitted
        self.forgotten: list[str] = []          # forgotten since the caller last took them

    def admit(self, agent: str, peer: str, limits: AgentLimits,
              busy: Callable[[], set[str]]) -> str | None:
        """None if a group of ``agent`` from ``peer`` may be taken (``agent`` is then
        live); else the refusal reason: ``new_agents`` (this address brought
        ``max_new_per_minute`` new ids within the last minute) or ``agents``
        (``max_agents`` are live)."""
        now = self.clock()
        if self.seen.pop(agent, None) is not None:
            self.seen[agent] = now           # to the newest end
            return None
        self._expire(now - limits.idle, busy)
        start, n = self.new_by_peer.get(peer, (now, 0))
        if now - start >= NEW_AGENTS_WINDOW:
            start, n = now, 0
        if n >= limits.max_new_per_minute:
            return "new_agents"
        if len(self.seen) >= limits.max_agents:
            return "agents"
        if len(self.new_by_peer) >= limits.max_agents and peer not in self.new_by_peer:
            self.new_by_peer = {p: w for p, w in self.new_by_peer.items()
                                if now - w[0] < NEW_AGENTS_WINDOW}
        self.new_by_peer[peer] = (start, n + 1)
        self.seen[agent] = now
        return None

    def _expire(self, before: float, busy: Callable[[], set[str]]) -> None:
        """Forget agents last seen before ``before`` (the oldest first) unless busy: a
        busy one counts as seen now."""
        held: set[str] | None = None
        now = self.clock()
        while self.seen:
            agent, last = next(iter(self.seen.items()))
            if last >= before:
                return
            if held is None:
                held = busy()
            del self.seen[agent]
            if agent in held:
                self.seen[agent] = now       # to the newest end: the loop ends there
            else:
                self.forgotten.append(agent)


class CollectorState:
    """What a collector's source and sink share (per logical node): the commit log
    (node/commit_port.py), the collector id, and the groups this collector
    holds claims on: ``held[(agent, seq)]`` is a :class:`HeldState`."""

    def __init__(self, commits, cid: str):
        self.commits = commits
        self.collector_id = cid
        self.lock = threading.Lock()
        self.held: dict[tuple[str, int], HeldState] = {}
        self.sinks = 0            # open E2E sinks of this logical node
        # the flow's source is a collectorSource: its events have no source position to
        # be read again from, so a crashed run's files without E2E groups are salvaged
        self.rpc_source = False
        # set by the collectorSource for each batch it returns (driver thread): True if
        # it holds E2E groups, False if not; None: not known (collectorSink then treats
        # it as possibly holding groups)
        self.batch_has_groups: bool | None = None
        self._after_sinks_left: list[Callable[[], None]] = []
        # the agents this collector takes groups from: each leaves znodes, so the live
        # ones and the rate of new ones are bounded (admit_agent)
        self.agents = AgentTable()

    def admit_agent(self, agent: str, peer: str, limits: AgentLimits) -> str | None:
        """None if groups of ``agent`` (sent from address ``peer``) may be taken; else
        why not (:meth:`AgentTable.admit`). The ``claims/<agent>`` folders of agents
        forgotten meanwhile are deleted where empty (their other znodes stay: the
        committed groups are the agents' acknowledgements, docs/e2e.md)."""
        with self.lock:
            refused = self.agents.admit(agent, peer, limits,
                                        lambda: {a for a, _ in self.held})
            forgotten, self.agents.forgotten = self.agents.forgotten, []
        if forgotten:
            self.commits.drop_claim_folders(forgotten)
        return refused

    def when_sinks_left(self, action: Callable[[], None]) -> bool:
        """Run ``action`` once no E2E sink of this node is open any more (from the last
        one's close); False, without running it, if none is open now."""
        with self.lock:
            if self.sinks <= 0:
                return False
            self._after_sinks_left.append(action)
            return True

    def sink_left(self) -> None:
        """An E2E sink closed (or failed to open): count it out, then give up the claims
        of groups no sink will write, then run what waited for the last sink."""
        with self.lock:
            self.sinks -= 1
            actions = self._after_sinks_left if self.sinks <= 0 else []
            if actions:
                self._after_sinks_left = []
        self.release_queued()
        for action in actions:
            try:
                action()
            except Exception as exc:
                log.warning("collector %s: %s", self.collector_id, exc)

    def forget(self, groups) -> None:
        with self.lock:
            for g in groups:
                self.held.pop(g, None)

    def mark(self, groups, state: HeldState) -> None:
        with self.lock:
            for g in groups:
                if g in self.held:
                    self.held[g] = state

    def any_queued(self) -> bool:
        """Some group is in the flow and its checkpoint has not reached the sink yet."""
        with self.lock:
            return any(st is HeldState.QUEUED for st in self.held.values())

    def release_queued(self) -> None:
        """Give up the claims of groups that never reached a file (the flow stopped)."""
        with self.lock:
            lost = [g for g, st in self.held.items()
                    if st in (HeldState.QUEUED, HeldState.CLAIMING)]
            for g in lost:
                del self.held[g]
        if lost:
            try:
                self.commits.release_claims(lost)
                log.info("collector %s released %d claims of groups it will not write",
                         self.collector_id, len(lost))
            except Exception as exc:
                log.warning("collector %s: releasing claims failed (they go with its "
                            "session): %s", self.collector_id, exc)


_STATES_LOCK = threading.Lock()


def collector_state(ctx: NodeContext) -> CollectorState:
    """The :class:`CollectorState` of ``ctx``'s logical node (created once)."""
    commits = commit_log_of(ctx)
    with _STATES_LOCK:
        states = ctx.shared.e2e_collectors
        st = states.get(ctx.logical_name)
        if st is None or st.commits is not commits:
            st = states[ctx.logical_name] = CollectorState(commits, collector_id(ctx))
        return st


class GroupHandler:
    """Answers ``appendGroup`` for a ``collectorSource`` (docs/e2e.md, collector step 1).

    Everything is checked before ZooKeeper is asked anything, so a call answered FAILED
    leaves no znode: the agent id (:func:`agent_id_problem`), the checksum, the payload
    (decoded within ``limits``: the source's ``(max_bytes, max_events)``), its event
    count, and the agent (``agent_limits``, :class:`AgentTable`: a group of an agent past
    ``max_agents`` live ones, or past ``max_new_per_minute`` new ids from its sender's
    address, is FAILED). Each refusal is counted and logged through ``refusals`` (the
    source's: ``refused_malformed``, ``refused_agents``, ``refused_new_agents``,
    ``refused_bytes``/``refused_decompressed``/``refused_events``)."""

    def __init__(self, ctx: NodeContext, enqueue: Callable[[list, dict], bool]):
        self.ctx = ctx
        self.enqueue = enqueue
        self.limits: tuple[int | None, int | None] = (None, None)
        self.agent_limits = AgentLimits()
        self.state = collector_state(ctx)
        self.metrics = Metrics()
        self.refusals = Refusals(self.metrics, log, f"collector {self.state.collector_id}")

    def _refuse(self, reason: str, message: str) -> tuple[int, str]:
        self.refusals.refuse(reason, message)
        return FAILED, message

    def append_group(self, agent: str, seq: int, checksum: int, payload: bytes,
                     count: int, peer: str = "") -> tuple[int, str]:
        """Answer one ``appendGroup`` sent from address ``peer``."""
        m = self.metrics
        problem = agent_id_problem(agent)
        if problem is not None:
            m.add("groups_corrupt")
            return self._refuse("malformed", f"group {seq} refused: {problem}")
        if zlib.crc32(payload) != checksum & 0xFFFFFFFF:
            m.add("groups_corrupt")
            return self._refuse("malformed", f"group {agent}:{seq}: checksum mismatch")
        st = self.state
        if st.sinks <= 0:
            return FAILED, ("this collector's flow has no end-to-end sink (collectorSink "
                            "directly under its source): it cannot acknowledge groups")
        try:
            events = decode_payload(payload, *self.limits)
        except BatchTooLarge as exc:
            m.add("groups_corrupt")
            return self._refuse(exc.reason, f"group {agent}:{seq}: batch too large: {exc}")
        except ValueError as exc:
            m.add("groups_corrupt")
            return self._refuse("malformed", f"group {agent}:{seq}: bad payload: {exc}")
        if len(events) != count:
            m.add("groups_corrupt")
            return self._refuse("malformed", f"group {agent}:{seq} holds {len(events)} "
                                             f"events, the call says {count}")
        lim = self.agent_limits
        refused = st.admit_agent(agent, peer, lim)
        if refused == "new_agents":
            return self._refuse(refused, f"group {agent}:{seq} from {peer or '?'}: this "
                                         f"collector takes {lim.max_new_per_minute} new "
                                         f"agent ids per address per minute at most "
                                         f"(maxNewAgentsPerMinute)")
        if refused is not None:
            return self._refuse(refused, f"group {agent}:{seq}: this collector keeps track"
                                         f" of {lim.max_agents} agents at most (maxAgents),"
                                         f" all active within the last {lim.idle:g} s "
                                         f"(agentIdleMs)")
        key = (agent, seq)
        with st.lock:
            cur = st.held.get(key)
            if cur is None:
                st.held[key] = HeldState.CLAIMING
        if cur is not None:
            if cur is HeldState.CLAIMING:
                return RETRY, f"group {agent}:{seq} is being taken"
            m.add("groups_duplicate")
            return OK, TAKEN_BY + st.collector_id   # ours already: in the flow or a file
        try:
            outcome = st.commits.claim_group(agent, seq, st.collector_id)
        except Exception as exc:
            st.forget([key])
            m.add("zk_errors")
            return RETRY, f"ZooKeeper unavailable: {exc}"
        if outcome == Claim.COMMITTED:
            st.forget([key])
            m.add("groups_committed_already")
            return OK, COMMITTED
        if outcome == Claim.HELD:
            st.forget([key])
            m.add("groups_held_elsewhere")
            return RETRY, f"group {agent}:{seq} is held by another collector"
        st.mark([key], HeldState.QUEUED)
        if not self.enqueue(events, {group_key(agent, seq): count}):
            st.forget([key])
            self._release([key])
            return RETRY, "collector busy: try again"
        m.add("groups_accepted")
        return OK, TAKEN_BY + st.collector_id

    def _release(self, groups) -> None:
        try:
            self.state.commits.release_claims(groups)
        except Exception:
            pass    # it goes with the session, or a resend finds it ours

    def close(self) -> None:
        """The collectorSource closed: what it told the sink no longer holds (the next
        flow of this logical node may have another source)."""
        st = self.state
        st.rpc_source = False
        st.batch_has_groups = None


def collector_group_handler(ctx: NodeContext, enqueue) -> GroupHandler:
    """The ``appendGroup`` handler a ``collectorSource`` delegates to (ZooKeeper needed)."""
    handler = GroupHandler(ctx, enqueue)
    handler.state.rpc_source = True
    return handler
