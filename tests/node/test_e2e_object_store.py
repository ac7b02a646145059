"""End-to-end mode onto an S3-protocol store (a real server process: moto's standalone
server): collectorSink writes each file as a multipart upload, recorded in the ZooKeeper
commit before it is completed (docs/e2e.md, "Object storage"). Every crash case ends with
every event in exactly one visible object, and a reader listing the bucket all along never
sees a partial object."""
from __future__ import annotations

import collections
import threading

import pytest

from flume_og.zk.commit_log import CommitLog
from flume_og.node.object_store import ObjectStore, StorageConfig
from flume_og.node.sources import memory
from flume_og.node.spec import parse_sink, parse_source
from tests.node.test_e2e import (Cluster, all_acked, bodies, free_port, port_of,
                                 sink_metrics, wal_metrics)
from tests.node.test_e2e import channel  # noqa: F401 (a fixture)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def bucket(s3):
    return s3.new_bucket()


@pytest.fixture
def cluster(zk_server, zk_root, store, tmp_path, s3, bucket):
    c = Cluster(zk_server, zk_root, tmp_path, store)
    c.storage = StorageConfig({f"s3://{bucket}": s3.options()})
    c.s3 = ObjectStore(bucket, s3.options())
    yield c
    c.close()


def visible_lines(objs: ObjectStore, prefix: str = "") -> collections.Counter:
    c: collections.Counter = collections.Counter()
    for key in objs.objects(prefix):
        c.update(objs.read(f"{objs.bucket}/{key}").splitlines())
    return c


def assert_exactly_once(objs: ObjectStore, expected: list[bytes]) -> None:
    # acknowledged means recorded; the upload is completed right after the transaction
    got = wait_until(lambda: (c := visible_lines(objs)).total() >= len(expected) and c,
                     what="every event visible")
    missing = [b for b in expected if got[b] == 0]
    dups = {b: n for b, n in got.items() if n > 1}
    extra = set(got) - set(expected)
    assert not missing, f"{len(missing)} events missing, first {missing[:3]}"
    assert not dups, f"{len(dups)} events duplicated, e.g. {list(dups.items())[:3]}"
    assert not extra, f"unexpected lines {list(extra)[:3]}"


@pytest.fixture(autouse=True)
def _stop_readers():
    yield
    for r in list(Reader.running):
        r.stop()


class Reader:
    """Lists the bucket and reads every object it sees, over and over, while a test runs:
    an object seen must already be whole (complete lines, all of them events of the test)
    and must never change afterwards."""

    def __init__(self, objs: ObjectStore, expected: set[bytes]):
        self.objs, self.expected = objs, expected
        self.seen: dict[str, bytes] = {}
        self.problems: list[str] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        Reader.running.append(self)
        self._thread.start()

    running: list = []

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self in Reader.running:
            Reader.running.remove(self)

    def _run(self):
        while not self._stop.is_set():
            for key in self.objs.objects():
                if key in self.seen:
                    continue
                data = self.objs.read(f"{self.objs.bucket}/{key}")
                self.seen[key] = data
                if not data.endswith(b"\n"):
                    self.problems.append(f"{key}: does not end with a whole line")
                bad = [ln for ln in data.splitlines() if ln not in self.expected]
                if bad:
                    self.problems.append(f"{key}: foreign or torn lines {bad[:2]}")
            self.rounds += 1

    def finish(self) -> None:
        """Two more rounds, with at least one object seen (objects may still be on their
        way to visible when a test calls this), then the checks."""
        start = self.rounds
        wait_until(lambda: self.rounds >= start + 2 and self.seen,
                   what="the reader's rounds over a visible object")
        self.stop()
        assert not self.problems, self.problems
        for key, data in self.seen.items():     # nothing seen ever changed afterwards
            assert self.objs.read(f"{self.objs.bucket}/{key}") == data, key
        assert self.seen, "the reader saw no object"


def uploads_in_progress(cluster) -> list:
    return cluster.s3.uploads()


# ---------------------------------------------------------------------- the basic path

def test_e2e_to_s3_exactly_once_and_no_partial_object(cluster, channel, bucket):
    col = cluster.collector("col1", sink=f'collectorSink("s3://{bucket}/logs/%Y", "c1-", 200)')
    agent = cluster.agent("agent1", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    expected = bodies("basic", 0, 20_000)
    reader = Reader(cluster.s3, set(expected))
    for i in range(0, len(expected), 4000):
        memory.push(channel, expected[i:i + 4000])
    wait_until(lambda: all_acked(agent, len(expected)), 40, what="every group acknowledged")
    reader.finish()
    assert_exactly_once(cluster.s3, expected)
    assert uploads_in_progress(cluster) == []
    m = sink_metrics(col)
    assert m["files_committed"] >= 1 and m.get("late_commits", 0) == 0


def test_objects_larger_than_a_part_are_uploaded_in_parts(cluster, channel, bucket):
    """A roll period of more than 5 MiB goes up as several parts, completed as one."""
    col = cluster.collector("colP", sink=f'collectorSink("s3://{bucket}/big", "p-", 60000)')
    agent = cluster.agent("agentP", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    pad = "x" * 1000     # few large events: the same bytes for less per-event work
    expected = [f"{b.decode()}-{pad}".encode() for b in bodies("big", 0, 6_000)]  # 6.1 MB
    memory.push(channel, expected)
    written(col, len(expected))
    col._flow.sink.roll_now()        # one roll period holds them all: one object
    wait_until(lambda: all_acked(agent, len(expected)), 60, what="acknowledged")
    assert_exactly_once(cluster.s3, expected)
    objs = cluster.s3.objects()
    # the multipart ETag ends with the number of parts
    assert max(int(etag.strip('"').rsplit("-", 1)[1]) for etag, _ in objs.values()) >= 2
    assert_exactly_once(cluster.s3, expected)


# ---------------------------------------------------------------------- crashes

def test_collector_killed_before_commit_then_failover_to_a_second(cluster, channel, bucket):
    """Collector A holds groups in uploads not yet recorded when it dies (its session
    ends first): the agent sends them to B; A's next start aborts its uploads."""
    client_a, store_a = cluster.collector_store()
    col_a = cluster.collector("colA", store=store_a,
                              sink=f'collectorSink("s3://{bucket}/out", "a-", 60000)')
    port_b = free_port()
    agent = cluster.agent("agent2", channel,
                          f'agentE2EChain("127.0.0.1:{port_of(col_a)}", "127.0.0.1:{port_b}")')
    first, second = bodies("crash", 0, 6000), bodies("crash", 6000, 6000)
    reader = Reader(cluster.s3, set(first + second))
    memory.push(channel, first)
    wait_until(lambda: sink_metrics(col_a).get("events_in", 0) >= len(first),
               what="collector A took the first wave")
    client_a.stop()            # the crash: session (and claims) gone, nothing committed
    col_a.stop(10)
    assert not cluster.s3.objects() and uploads_in_progress(cluster)
    col_b = cluster.collector("colB", port=port_b,
                              sink=f'collectorSink("s3://{bucket}/out", "b-", 200)')
    memory.push(channel, second)
    wait_until(lambda: all_acked(agent, len(first) + len(second)), 40, what="all acked")
    assert_exactly_once(cluster.s3, first + second)
    assert wal_metrics(agent).get("groups_requeued", 0) >= 1
    # A comes back under its own name: its uploads of the crashed run are aborted
    _, store_a2 = cluster.collector_store()
    col_a2 = cluster.collector("colA", store=store_a2,
                               sink=f'collectorSink("s3://{bucket}/out", "a-", 200)')
    assert sink_metrics(col_a2).get("orphans_removed", 0) >= 1
    assert uploads_in_progress(cluster) == []
    reader.finish()
    assert_exactly_once(cluster.s3, first + second)
    assert sink_metrics(col_b).get("late_commits", 0) == 0


def written(col, n: int) -> None:
    """Wait until the collector's sink took ``n`` events and every group's checkpoint
    reached it: a roll before that would find the file without its groups (it would be
    made final without a ZooKeeper record, and the groups committed late)."""
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= n
               and not col._flow.sink.state.any_queued(), what="the groups written")


def crash_on(monkeypatch, cls, name: str, after: bool = False):
    """``cls.name`` raises KeyboardInterrupt (the process dies there): before it runs, or
    right after it did its work (``after``)."""
    original = getattr(cls, name)

    def crash(*a, **kw):
        if after:
            original(*a, **kw)
        raise KeyboardInterrupt(f"killed {'after' if after else 'in'} {name}")
    monkeypatch.setattr(cls, name, crash)


@pytest.mark.parametrize("when", ["recorded", "completed"])
def test_collector_killed_during_or_after_commit_is_rolled_forward(cluster, channel, bucket,
                                                                   store, monkeypatch, when):
    """``recorded``: the transaction recorded the upload, the process dies before
    completing it (the object is not visible, the group is acknowledged); ``completed``:
    it dies after completing, before deleting the record. Either way the next start
    completes the recorded upload (idempotently) and deletes the record."""
    import flume_og.node.e2e as e2e
    client_a, store_a = cluster.collector_store()
    sink = f'collectorSink("s3://{bucket}/rf", "r-", 60000)'
    col = cluster.collector("colR", store=store_a, sink=sink)
    agent = cluster.agent("agentR", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    evs = bodies("rf", 0, 3000)
    reader = Reader(cluster.s3, set(evs))
    memory.push(channel, evs)
    written(col, len(evs))
    if when == "recorded":
        crash_on(monkeypatch, e2e.Committer, "_finish_renames")
    else:
        crash_on(monkeypatch, CommitLog, "delete_file_record")
    with pytest.raises(KeyboardInterrupt):
        col._flow.sink.roll_now()
    monkeypatch.undo()
    client_a.stop()                         # the process is gone
    assert bool(cluster.s3.objects()) == (when == "completed")
    wait_until(lambda: all_acked(agent, len(evs)), what="acknowledged before completion")
    assert store.commits.file_records("cphys-colR")
    _, store_a2 = cluster.collector_store()
    col2 = cluster.collector("colR", store=store_a2, sink=sink)
    assert sink_metrics(col2).get("rolled_forward", 0) >= 1
    assert store.commits.file_records("cphys-colR") == {}
    assert uploads_in_progress(cluster) == []
    reader.finish()
    assert_exactly_once(cluster.s3, evs)


def test_agent_killed_resumes_from_its_wal(cluster, channel, bucket):
    """The agent dies with groups unacknowledged (nobody listening yet); restarted, it
    sends them from its WAL: exactly once in the bucket."""
    port = free_port()
    sink = f'agentE2ESink("127.0.0.1", {port})'
    agent = cluster.agent("agent4", channel, sink)
    first, second = bodies("restart", 0, 5000), bodies("restart", 5000, 3000)
    memory.push(channel, first)
    wait_until(lambda: wal_metrics(agent).get("wal_events", 0) == len(first),
               what="first wave in the WAL")
    agent.stop(10)
    reader = Reader(cluster.s3, set(first + second))
    cluster.collector("col4", port=port, sink=f'collectorSink("s3://{bucket}/a", "c-", 200)')
    agent.configure(parse_source(f'memory("{channel}")'), parse_sink(sink))
    memory.push(channel, second)
    wait_until(lambda: all_acked(agent, len(first) + len(second)), 40, what="all acked")
    reader.finish()
    assert_exactly_once(cluster.s3, first + second)


def test_refused_commit_aborts_the_upload(cluster, channel, bucket, zk_server):
    """The collector's session expires while it holds groups: the transaction is refused,
    the upload aborted (never visible), and the agent's resend lands exactly once."""
    from tests.node.test_e2e import expire_session
    client_a, store_a = cluster.collector_store()
    col = cluster.collector("colX", store=store_a,
                            sink=f'collectorSink("s3://{bucket}/x", "x-", 60000)')
    agent = cluster.agent("agentX", channel,
                          f'agentE2ESink("127.0.0.1", {port_of(col)}, retransmitMs=1000)')
    evs = bodies("exp", 0, 2000)
    memory.push(channel, evs)
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= len(evs))
    expire_session(zk_server, client_a)
    col._flow.sink.roll_now()
    assert sink_metrics(col).get("files_discarded", 0) >= 1
    assert not cluster.s3.objects() and uploads_in_progress(cluster) == []
    wait_until(lambda: wal_metrics(agent).get("groups_resent", 0) >= 1, what="resent")
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= 2 * len(evs))
    col._flow.sink.roll_now()
    wait_until(lambda: all_acked(agent, len(evs)), 40, what="resent and acknowledged")
    assert_exactly_once(cluster.s3, evs)
    assert uploads_in_progress(cluster) == []


def test_compressed_objects(cluster, channel, bucket):
    """gzip goes through the upload like any stream: each object one whole gzip file."""
    import gzip
    col = cluster.collector("colZ", sink=f'collectorSink("s3://{bucket}/z", "z-", 200, '
                                         f'compression="gzip")')
    agent = cluster.agent("agentZ", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    evs = bodies("gz", 0, 5000)
    memory.push(channel, evs)
    wait_until(lambda: all_acked(agent, len(evs)), 40, what="acknowledged")
    objs = cluster.s3
    got = wait_until(lambda: (c := collections.Counter(
        ln for k in objs.objects() for ln in
        gzip.decompress(objs.read(f"{bucket}/{k}")).splitlines())).total() >= len(evs) and c,
        what="every event visible")
    assert got == collections.Counter(evs)
    assert all(k.endswith(".gz") for k in objs.objects())


def test_a_completion_the_store_refused_is_tried_again(cluster, channel, bucket, store,
                                                       monkeypatch):
    """The store fails the completion after the transaction (the group is acknowledged,
    the object not yet visible): the record stays, and the next roll completes the
    upload and only then deletes the record."""
    from flume_og.node.object_store import StorageError
    col = cluster.collector("colF", sink=f'collectorSink("s3://{bucket}/f", "f-", 60000)')
    agent = cluster.agent("agentF", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    evs = bodies("fail", 0, 2000)
    memory.push(channel, evs)
    wait_until(lambda: sink_metrics(col).get("events_in", 0) >= len(evs))

    def refused(*a, **kw):
        raise StorageError("503 Slow Down")
    monkeypatch.setattr(ObjectStore, "complete", refused)
    col._flow.sink.roll_now()
    monkeypatch.undo()
    wait_until(lambda: all_acked(agent, len(evs)), what="acknowledged")
    assert not cluster.s3.objects() and store.commits.file_records("cphys-colF")
    col._flow.sink.roll_now()               # the next roll
    assert_exactly_once(cluster.s3, evs)
    assert store.commits.file_records("cphys-colF") == {}
    assert uploads_in_progress(cluster) == []


def test_a_roll_forward_the_store_refused_at_start_is_tried_again(cluster, channel, bucket,
                                                                   store, monkeypatch):
    """The collector dies after the transaction, before completing; when it starts again
    the store is away (the completion fails). The groups are acknowledged already, so the
    running collector must complete the recorded upload by itself once the store is back
    (at its next roll), not only at some later restart."""
    import flume_og.node.e2e as e2e
    from flume_og.node.object_store import StorageError
    client_a, store_a = cluster.collector_store()
    sink = f'collectorSink("s3://{bucket}/rs", "r-", 60000)'
    col = cluster.collector("colS", store=store_a, sink=sink)
    agent = cluster.agent("agentS", channel, f'agentE2ESink("127.0.0.1", {port_of(col)})')
    evs = bodies("rs", 0, 2000)
    memory.push(channel, evs)
    written(col, len(evs))
    crash_on(monkeypatch, e2e.Committer, "_finish_renames")
    with pytest.raises(KeyboardInterrupt):
        col._flow.sink.roll_now()
    monkeypatch.undo()
    client_a.stop()                         # the process is gone
    wait_until(lambda: all_acked(agent, len(evs)), what="acknowledged before completion")

    def refused(*a, **kw):
        raise StorageError("503 Slow Down")
    monkeypatch.setattr(ObjectStore, "complete", refused)
    _, store_a2 = cluster.collector_store()
    col2 = cluster.collector("colS", store=store_a2, sink=sink)
    monkeypatch.undo()                      # the store is back
    assert not cluster.s3.objects() and store.commits.file_records("cphys-colS")
    col2._flow.sink.roll_now()              # the next roll
    assert_exactly_once(cluster.s3, evs)
    assert store.commits.file_records("cphys-colS") == {}
    assert uploads_in_progress(cluster) == []


def test_a_hung_store_at_start_is_asked_once_and_shown_meanwhile(make_ctx):
    """A collector starts after a crash with three uploads of the crashed run to abort,
    and the store accepts connections but never answers: the first request costs its
    timeouts, the two others are not asked (they wait in the journal for the next start),
    and the node's status says what it is doing while it waits."""
    from flume_og.node.component import Metrics, NodeShared
    from flume_og.node.e2e import Committer
    from tests.s3server import BrokenS3
    srv = BrokenS3("hang")
    try:
        storage = StorageConfig({"s3://b": srv.options(read_timeout=1, connect_timeout=1,
                                                        max_attempts=1)})
        ctx = make_ctx("colH", shared=NodeShared(storage=storage))
        metrics = Metrics()
        committer = Committer(ctx, None, metrics)
        urls = [f"s3://b/logs/f-{i}" for i in range(3)]
        for u in urls:
            committer.journal.add(u)
        t = threading.Thread(target=committer.recover)
        t.start()
        wait_until(lambda: any("finishing the files of a crashed run" in text
                               for text in ctx.conditions.texts()),
                   what="the recovery shown in the status")
        t.join(30)
        assert not t.is_alive()
        assert srv.connections == 1
        assert metrics.get("store_unreachable") == 1
        assert set(committer.journal.entries()) == set(urls)     # for the next start
        assert ctx.conditions.texts() == []
    finally:
        srv.stop()
