"""``collector([rollmillis]) { sink }``: the generic collector.

A roll (time trigger, checked every 250 ms) that acknowledges E2E groups once the inner
instance holding their events has durably closed. Like ``collectorSink``, its trigger
thread does not roll between an append and its checkpoint while a group handed to the
flow has not reached it.

With ZooKeeper (a node under a master), the groups ``collectorSource`` received reach the
roll as checkpoint keys ``e2e:<agent>:<seq>``; they are kept per roll period and, when the
instance of that period closes without error, committed in ZooKeeper (their claims
checked and deleted, ``groups/<agent>/<seq>`` created: docs/e2e.md), which acknowledges
them to the agents. An instance that fails to close gives its groups' claims up, so the
agents send them again.

The inner sink is arbitrary, so making its output final and recording the groups cannot
be one step: a crash between the two makes the agents resend groups that are already in
the output -- **at-least-once**. ``collectorSink`` commits its files and their groups in one
transaction and is effectively once; use it where duplicates matter.
"""
from __future__ import annotations

import logging
import time

from ..checkpoint import Checkpoint
from ..component import NodeContext, SinkFactory
from ..registry import Positive, decorator
from .roll import RollSink

ROLL_NOW_WAIT = 10.0

log = logging.getLogger(__name__)


class CollectorRoll(RollSink):
    """What ``collector`` and ``collectorSink`` share: while open, the roll is counted in
    the node's CollectorState (``self.state``, set before :meth:`open`; None without
    ZooKeeper); and with a state, its trigger thread does not roll between an append and
    the checkpoint that follows it while a group handed to the flow has not reached a
    collector in a checkpoint (``any_queued``). ``_last_instance`` and ``_last_tag`` say
    where the last batch went."""

    def __init__(self, inner_factory: SinkFactory, rollmillis: int, checkmillis: int = 250):
        super().__init__(inner_factory, rollmillis, checkmillis)
        self.state = None
        self._joined = False
        self._awaiting = False     # appended, and the driver has not passed a checkpoint
        self._last_instance = None
        self._last_tag: bytes | None = None

    def open(self, ctx: NodeContext) -> None:
        st = self.state
        if st is not None and getattr(self, "under_fanout", False):
            # its checkpoints come split by the fan-out, without the group keys: it
            # could never acknowledge a group, so it does not offer to take any
            log.warning("%s under a fan-out cannot acknowledge end-to-end groups: the "
                        "collector refuses them (put it directly under the source)",
                        self.spec_name)
            st = None
        if st is not None:
            with st.lock:
                st.sinks += 1
            self._joined = True
        try:
            super().open(ctx)
        except Exception:
            self._leave()
            raise

    def _leave(self) -> None:
        """No longer counted in the state (idempotent); called by ``close``."""
        st = self.state
        if st is not None and self._joined:
            self._joined = False
            st.sink_left()

    def append(self, events) -> None:
        if self.state is None:
            super().append(events)
            return
        with self._lock:
            super().append(events)
            self._last_instance, self._last_tag = self._current, self._tag
            self._awaiting = True

    def _check(self) -> None:
        with self._lock:
            if self._group_on_its_way():
                return      # the checkpoint of a group may be on its way: no roll now
            super()._check()

    def _group_on_its_way(self) -> bool:
        return self._awaiting and self.state is not None and self.state.any_queued()

    def roll_now(self) -> None:
        """Roll at once (tests, administrative flush) -- but, like the trigger thread, not
        between an append and the checkpoint that follows it while a group may be on its
        way: that waits for the checkpoint, up to ``ROLL_NOW_WAIT`` seconds (then rolls
        anyway; the group's file is closed without it, and the agent sends it again)."""
        deadline = time.monotonic() + ROLL_NOW_WAIT
        while True:
            with self._lock:
                if not self._group_on_its_way() or time.monotonic() >= deadline:
                    super().roll_now()
                    return
            time.sleep(0.002)


@decorator("collector")
class CollectorRollSink(CollectorRoll):
    """A roll every ``rollmillis`` whose closes acknowledge the E2E groups written to the
    closed instance (at-least-once; see the module docstring)."""

    def __init__(self, inner_factory: SinkFactory, rollmillis: Positive = 30000):
        super().__init__(inner_factory, rollmillis)
        self._tag_groups: dict[bytes, list] = {}
        self._closed_tags: dict[bytes, bool] = {}

    def open(self, ctx: NodeContext) -> None:
        from ..e2e import collector_state
        self.ctx = ctx
        self.state = collector_state(ctx) if ctx.shared.commit_log is not None \
            else None
        super().open(ctx)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._leave()

    def when_durable(self, cp: Checkpoint) -> None:
        if self.state is not None:
            from ..e2e import HeldState, take_groups
            with self._lock:
                self._awaiting = False
                groups = take_groups([cp])
                if groups:
                    self.state.mark(groups, HeldState.WRITTEN)
                    tag = self._last_tag
                    if tag == self._tag and self._current is not None and self._cur_events:
                        self._tag_groups.setdefault(tag, []).extend(groups)
                    else:   # the instance holding them was closed meanwhile
                        self._settle(groups, self._closed_tags.get(tag, False))
        super().when_durable(cp)

    def on_inner_closed(self, tag: bytes, durable: bool) -> None:
        """The instance tagged ``tag`` was closed: acknowledge its groups when
        ``durable``, else give their claims up (the agents resend them)."""
        if self.state is None:
            return
        self._closed_tags[tag] = durable
        while len(self._closed_tags) > 16:
            self._closed_tags.pop(next(iter(self._closed_tags)))
        groups = self._tag_groups.pop(tag, [])
        if groups:
            self._settle(groups, durable)

    def _settle(self, groups: list, durable: bool) -> None:
        st = self.state
        st.forget(groups)
        if not durable:
            try:
                st.commits.release_claims(groups)
            except Exception:
                pass
            return
        try:
            ok, why = st.commits.commit_groups(st.collector_id, None, None, groups,
                                               f"{st.collector_id}/collector".encode())
        except Exception as exc:
            ok, why = False, str(exc)
        if ok:
            self.metrics.add("groups_committed", len(groups))
        else:
            self.metrics.add("errors")
            log.warning("collector %s: %d groups are in the output but could not be "
                        "acknowledged (%s); the agents will send them again",
                        st.collector_id, len(groups), why)
