"""``collectorSink("dir", "prefix"[, rollMs=30000[, format]], compression=, utc=,
maxGroups=500, maxOpen=256)``.

The collector's sink: a ``roll`` (its trigger thread closes files on time even when no
event arrives) over a ``dfs`` sink writing ``dir/prefix<rolltag>``. ``dir`` and ``prefix``
take the escapes of node/escapes.py, expanded from each event's own timestamp, so one
roll period may write several bucket files (``"/logs/%Y-%m-%d/%H00"``). Files are written
hidden (``.name.tmp``) and renamed when their roll period ends: a file is visible only
when complete. Values of the event in ``dir`` and ``prefix`` are percent-encoded, and an
event whose file would not be safely below the directory of the text before the first
escape goes to ``<that directory>/_rejected/`` (counted in ``refused_path``); at most
``maxOpen`` files are open at once per roll period (``node.sinks.dfs``). Formats: any output format (default ``raw``); ``compression``: ``gzip`` or
``zstd`` for the whole file. ``dir`` may be any fsspec URL.

* **Without ZooKeeper** the files of each roll period are committed like ``dfs`` does:
  renames and the checkpoints of the events in them in one local journaled commit.
* **With ZooKeeper** (a node under a master) it is the E2E collector (docs/e2e.md): the
  groups received by ``collectorSource`` reach it as checkpoint keys ``e2e:<agent>:<seq>``;
  at each roll the completed files and their groups are committed in one ZooKeeper
  transaction (:class:`node.e2e.Committer`), then renamed. The agents learn the
  acknowledgements from ZooKeeper. A roll period is cut short once it holds ``maxGroups``
  groups (the transaction stays well below ZooKeeper's request size limit). At start,
  recorded commits are rolled forward.
* Under a ``collectorSource`` with ZooKeeper, batches without E2E groups (best effort,
  disk failover: the source never mixes them with groups in one batch) go to the roll
  period's own *plain* files, so a group file discarded (refused commit) or deleted after
  a crash never takes them along; plain files are salvaged after a crash.
* **Disk full.** A batch the disk has no room for is cut off every file it went to
  (truncated to the size before it: no torn line, nothing a resend would duplicate) and
  written again once there is space: the append waits (a stop interrupts it), and so do
  the flow and its senders, whose calls time out and are resent as usual (E2E groups and
  DFO batch ids: not written twice). Meanwhile the logical node says "disk full: ...",
  ``disk_full`` counts the waits, ``disk_free_bytes`` gauges the directory's disk and
  ``batches_cut`` the batches cut off; the flow goes on by itself, no refresh needed.
* Every append is handed to the OS at once (flushed), and every hidden file is listed in a
  local journal (``<node data>/collector/hidden-files``) before data goes into it. At start,
  the hidden files of a crashed run are deleted -- except, under ZooKeeper with a
  ``collectorSource``, those that cannot hold an E2E group (no group was in flight when
  their events were written; line formats): their events (best-effort and disk-failover
  batches the collector had answered OK) have no source to be read again from, so they are
  *salvaged*: cut after their last complete line and made final.

Rolls never separate an E2E group from its file: between an append and the checkpoint that
follows it, the trigger thread does not roll while any group handed to the flow has not
reached this sink in a checkpoint (``CollectorState.any_queued``) -- however long the
driver takes. A batch without groups (best effort, disk failover) holds no roll back: its
checkpoint, if any, only carries positions, which are committed once its file is.
"""
from __future__ import annotations

import logging
import os
import threading

from ..checkpoint import Checkpoint
from ..component import NodeContext
from ..e2e import (KEY_PREFIX, Committer, HeldState, collector_state, file_url,
                   parse_group_key, take_groups)
from ..errors import SinkError
from ..event import set_attr
from ..formats import Compression, OutputFormat
from ..limits import Refusals
from ..registry import AtLeast1, NonEmpty, Positive, sink
from ..segment_log import SpaceWait
from ..decorators.collector import CollectorRoll
from ..decorators.roll import ROLLTAG, Slot
from .dfs import _FINAL_LOCK, MAX_OPEN, DfsSink, dfs_target

log = logging.getLogger(__name__)

MAX_GROUPS = 500


class _CollectorDfs(DfsSink):
    """One roll period's files; commits them through the collector's :class:`Committer`.
    ``plain``: the period's files for batches known to hold no E2E group (never tainted,
    so salvaged after a crash)."""

    def __init__(self, target: str, owner: "CollectorSink", plain: bool = False):
        super().__init__(target, None, owner.format, compression=owner.compression,
                         utc=owner.utc, maxOpen=owner.max_open)
        self.owner = owner
        self.refusals = owner.refusals    # counted on the collectorSink, which outlives us
        self.plain = plain
        self.groups = 0
        self.published = False
        self.tainted = False      # may hold E2E group events: never salvaged

    def when_durable(self, cp: Checkpoint) -> None:
        self.groups += sum([1 for k in cp.updates if k.startswith(KEY_PREFIX)])
        super().when_durable(cp)

    flush_appends = True   # handed to the OS: a SIGKILL loses nothing appended (salvage)

    def append(self, events) -> None:
        st = self.owner.state
        if st is not None and st.held and not self.tainted and not self.plain:
            # A group is in flight, so this batch may hold its events: recorded before
            # they are written, so a crashed run's file is never salvaged with them.
            self.tainted = True
            with self.lock:
                urls = [file_url(f, f.hidden) for f in self.files.values()]
            self.owner.committer.journal.mark(urls, "!")
        # A batch the disk has no room for is cut off (DfsSink.append) and written again
        # once there is space; the caller, and so its senders, wait meanwhile.
        self.owner.space.call(lambda: DfsSink.append(self, events), self.owner.stopping)

    def _cut_back(self, marks) -> None:
        super()._cut_back(marks)
        if marks:
            self.owner.metrics.add("batches_cut")    # outlives this roll period

    def _discard(self, files) -> None:
        super()._discard(files)
        if self.owner.committer is not None:
            self.owner.committer.journal.remove([file_url(f, f.hidden) for f in files])

    def _will_create(self, f) -> None:
        # listed before the file (or the upload) exists, so a crash leaves nothing the
        # next start does not find
        committer, st = self.owner.committer, self.owner.state
        if committer is not None:
            if self.tainted:
                mark = "!"
            elif st is not None and st.rpc_source and not self.format.container:
                mark = "~"
            else:
                mark = "+"
            committer.journal.add(file_url(f, f.hidden), mark)

    def _finish(self, files, pending) -> None:
        try:
            super()._finish(files, pending)
        except SinkError:
            state = self.owner.state
            if state is not None:
                # the files could not be completed: their groups go back to the agents
                groups = take_groups(pending)
                state.forget(groups)
                try:
                    state.commits.release_claims(groups)
                except Exception:
                    pass
            raise

    def _publish(self, files, pending) -> None:
        owner = self.owner
        groups = take_groups(pending) if owner.state is not None else []
        if not groups:
            super()._publish(files, pending)
            self.published = True
            if owner.committer is not None:
                owner.committer.journal.remove([file_url(f, f.hidden) for f in files])
            return
        with _FINAL_LOCK:
            taken: set[str] = set()
            finals = []
            for f in files:
                final = self._free_name(f, taken)
                taken.add(final)
                finals.append(final)
            ok = owner.committer.commit(files, finals, pending, groups)
        self.published = ok
        if ok:
            self.metrics.add("files_closed", len(files))
            for f, final in zip(files, finals):
                log.info("collectorSink completed a file",
                         extra={"file": final, "events": f.events})
        elif any(cp.updates for cp in pending):
            owner.positions_lost()


class _OutputDisk:
    """The disk of the sink's directory, as :class:`SpaceWait` asks about it."""

    what = "collectorSink output"

    def __init__(self, dir: str):
        self.dir = dir
        self.log = log
        self.freed = threading.Event()    # nothing of ours frees space: waits time out

    def free_bytes(self) -> int:
        d = self.dir
        while not os.path.isdir(d) and os.path.dirname(d) != d:
            d = os.path.dirname(d)        # not made yet: its disk is its parent's
        st = os.statvfs(d)
        return st.f_bavail * st.f_frsize


def _target(dir: str, prefix: str) -> str:
    return dir.rstrip("/") + "/" + prefix + "%{rolltag}"


@sink("collectorSink")
class CollectorSink(CollectorRoll):
    """Writes to ``dir/prefix<rolltag>`` files rolled every ``rollMs``; with ZooKeeper,
    commits E2E groups with the files (see the module docstring)."""

    def __init__(self, dir: NonEmpty, prefix: str = "", rollMs: Positive = 30_000,
                 format: OutputFormat | None = None, *,
                 compression: Compression = Compression("none"), utc: bool = False,
                 checkMs: Positive = 250, maxGroups: AtLeast1 = MAX_GROUPS,
                 maxOpen: AtLeast1 = MAX_OPEN):
        super().__init__(self._new_instance, rollMs, checkMs)
        self.dir = dir
        self.prefix = prefix
        self.format = OutputFormat.of(format, "raw")
        self.compression = Compression.of(compression)
        self.utc = utc
        self.max_groups = maxGroups
        self.max_open = maxOpen
        self.target = _target(dir, prefix)
        self.refusals = Refusals(self.metrics, log, f"collectorSink({dir!r}, {prefix!r})")
        self.committer: Committer | None = None
        self._positions_lost = False
        self._closed = False
        self._plain: _CollectorDfs | None = None   # this period's files without groups
        # always reported, so that the paths of the inner sink's counters do not change
        # when the first plain files open (node.metrics.walk numbers siblings)
        self._plain_slot = Slot({"name": _CollectorDfs.spec_name, "kind": _CollectorDfs.kind,
                                 "metrics": {}})
        self._plain_tag = b""
        self.space: SpaceWait | None = None

    @classmethod
    def check_args(cls, args) -> None:
        dfs_target(_target(args["dir"], args["prefix"]), None, args["format"], args["utc"])

    def _new_instance(self) -> _CollectorDfs:
        return _CollectorDfs(self.target, self)

    @property
    def e2e(self) -> bool:
        return self.state is not None

    # ------------------------------------------------------------------ lifecycle

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._closed = False
        self.state = collector_state(ctx) if ctx.shared.commit_log is not None \
            else None
        self.committer = Committer(ctx, self.state, self.metrics)
        self.committer.recover()
        self.space = SpaceWait(_OutputDisk(self._local_base()), self.metrics,
                               ctx.conditions.reporter(f"collectorSink {self.dir}"),
                               ctx.clock, until="the collector's disk has space")
        self.space.gauge()
        super().open(ctx)

    def _local_base(self) -> str:
        """The local directory before the first escape (free bytes are read there; a
        directory on another filesystem gives no gauge)."""
        base = dfs_target(self.target, None, None, self.utc).base
        return base[len("file://"):] if base.startswith("file://") else base or "."

    def stopping(self) -> bool:
        """The flow stops: a write waiting for space gives up (Interrupted)."""
        return self._closed or self.ctx.stop_event.is_set()

    def children(self):
        plain = self._plain
        return super().children() + ([plain] if plain is not None else [])

    def _slots(self):
        return super()._slots() + [(self._plain_slot, self._plain)]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            try:
                super().close()
            finally:
                with self._lock:
                    self._close_plain()
        finally:
            if self.committer is not None:
                try:
                    self.committer.resolve()
                except Exception:
                    pass
            self._leave()

    # ------------------------------------------------------------------ data path

    def append(self, events) -> None:
        st = self.state
        if st is None or st.batch_has_groups is not False:
            super().append(events)
            return
        # A batch the collectorSource knows holds no E2E group: into this period's plain
        # files, which never share a fate with group files (a refused or crashed commit
        # of those does not take these events with it; they are salvaged after a crash).
        with self._lock:
            if self._time_due():
                self._roll()
            plain = self._plain
            if plain is None:
                plain = _CollectorDfs(self.target, self, plain=True)
                try:
                    plain.open(self.ctx)
                except Exception as exc:
                    self.metrics.add("errors")
                    raise SinkError(f"collectorSink: cannot open a file: {exc}") from exc
                self._plain = plain
                self._plain_tag = self._tagger.new_tag(self.ctx.clock.now_ms())
            set_attr(events, ROLLTAG, self._plain_tag)
            plain.append(events)
            self.metrics.add("events_in", len(events))
            self.metrics.add("plain_events", len(events))

    def _roll(self) -> None:
        self._close_plain()
        super()._roll()
        if self.state is not None and self.committer.records_left:
            # renames or completions a store failed after their commit: tried again at
            # every roll, even one without groups (their groups are acknowledged already)
            try:
                self.committer.resolve()
            except Exception as exc:
                log.warning("collectorSink: finishing earlier commits failed again: %s", exc)

    def _close_plain(self) -> None:
        """Complete this period's plain files (lock held). A failure leaves them hidden
        and listed in the journal: the next start salvages them."""
        plain = self._plain
        if plain is None:
            return
        self._retiring(self._plain_slot, plain)
        self._plain = None
        try:
            plain.close()
        except Exception as exc:
            self.metrics.add("rollfails")
            self.metrics.add("errors")
            log.error("collectorSink: files without E2E groups could not be completed (%s); "
                      "they stay hidden and are salvaged at the next start", exc)
        else:
            self.metrics.add("rolls")
        finally:
            self._retired(self._plain_slot, plain)

    def positions_lost(self) -> None:
        """A discarded file held events of ordinary (non-E2E) sources: later positions
        would skip them, so none is committed from now on (as ``roll`` does)."""
        if not self._positions_lost:
            self._positions_lost = True
            log.error("collectorSink: a file with events of a non-E2E source was discarded; "
                      "source positions are no longer committed (a restart re-reads them)")

    def when_durable(self, cp: Checkpoint) -> None:
        if self.state is None:
            super().when_durable(cp)
            return
        with self._lock:
            self._awaiting = False
            groups = [g for k in cp.updates if (g := parse_group_key(k)) is not None]
            if groups:
                self.state.mark(groups, HeldState.WRITTEN)
            if self._positions_lost:
                dropped = [k for k in cp.updates if not k.startswith(KEY_PREFIX)]
                for k in dropped:
                    del cp.updates[k]
                if dropped:
                    self.metrics.add("checkpoints_dropped")
            inst, last = self._current, self._last_instance
            if last is not None and last is not inst:
                # Rolled between the append and this checkpoint (``roll_now``; the trigger
                # thread does not while a group is on its way): the events are in a file
                # closed already.
                groups = take_groups([cp])
                if groups:
                    if last.published:
                        self.committer.commit_late(groups)
                    else:
                        self.state.forget(groups)
                        try:
                            self.state.commits.release_claims(groups)
                        except Exception:
                            pass
                if last.published:
                    self.ctx.store.commit([cp])
                elif cp.updates:
                    self.positions_lost()
                return
            if inst is None:
                self.ctx.store.commit([cp])
                return
            inst.when_durable(cp)
            if inst.groups >= self.max_groups:
                self.metrics.add("early_rolls")
                self._roll()
