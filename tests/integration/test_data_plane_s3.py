"""E2E onto an S3-protocol store with real processes: master, collector and agent nodes,
and moto's S3 server, each its own process; collectors and agents SIGKILLed at random
moments (so before, during and after commits), and a failover. Every counter ends in
exactly one visible object, and a reader listing the bucket all along never sees an object
that is not whole."""
from __future__ import annotations

import random
import time

import pytest

from flume_og.node.object_store import ObjectStore
from tests.conftest import free_port
from tests.node.test_e2e_object_store import Reader
from tests.s3server import S3Server

from .harness import Node, wait_until
from .test_data_plane import N, Cluster, run_writer

pytestmark = pytest.mark.timeout(240)

EXPECTED = [b"counter %07d" % i for i in range(N)]


class S3Cluster(Cluster):
    """Nodes started with ``--storage-config`` naming the test's bucket; the bucket as
    :attr:`objects`."""

    def __init__(self, tmp, zk, root, s3: S3Server):
        self.bucket = s3.new_bucket()
        self.objects = ObjectStore(self.bucket, s3.options())
        self.settings = tmp / "storage.toml"
        self.settings.write_text(f'["s3://{self.bucket}"]\n' + "".join(
            f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {v}\n"
            for k, v in s3.options().items()))
        super().__init__(tmp, zk, root)

    def node(self, name: str) -> Node:
        n = Node(self.tmp, self.zk, self.root, name,
                 extra=("--storage-config", str(self.settings)))
        self.procs.append(n)
        return n

    def lines(self) -> list[bytes]:
        return [ln for k in sorted(self.objects.objects())
                for ln in self.objects.read(f"{self.bucket}/{k}").splitlines()]


@pytest.fixture
def cluster(tmp_path, zk_server, zk_root, s3):
    c = S3Cluster(tmp_path, zk_server.connect_string, zk_root, s3)
    yield c
    c.stop()


def start_collector(cluster: S3Cluster, name: str, port: int) -> Node:
    node = cluster.node(name)
    cluster.config(name, f"collectorSource({port})",
                   f'collectorSink("s3://{cluster.bucket}/out/%Y-%m-%d", "{name}-", 1000)')
    cluster.active(name)
    return node


def start_agent(cluster: S3Cluster, src, sink: str) -> Node:
    node = cluster.node("agent")
    cluster.config("agent", f'tail("{src}")', sink)
    cluster.active("agent")
    return node


def expect_exactly_once(cluster: S3Cluster, agent: Node, reader: Reader) -> None:
    wait_until(lambda: len(cluster.lines()) >= N, 120, f"all {N} counters visible")
    wait_until(lambda: agent.counters("agent").get("wal_groups") == 0, 120,
               "every group acknowledged")
    lines = cluster.lines()
    assert len(lines) == len(set(lines)), f"{len(lines) - len(set(lines))} duplicates"
    assert sorted(lines) == EXPECTED
    reader.finish()


@pytest.mark.parametrize("victim, seed, down", [("collector", 3, 0.5), ("agent", 5, 0.0)])
def test_e2e_to_s3_node_sigkilled_and_restarted_three_times(cluster, tmp_path, victim,
                                                            seed, down):
    src, port = tmp_path / "app.log", free_port()
    src.touch()
    collector = start_collector(cluster, "collector", port)
    agent = start_agent(cluster, src, f'agentE2ESink("127.0.0.1", {port})')
    reader = Reader(cluster.objects, set(EXPECTED))
    done = run_writer(src, pace=0.02)
    node = collector if victim == "collector" else agent
    rnd = random.Random(seed)
    for _ in range(3):
        time.sleep(rnd.uniform(0.5, 1.5))   # the chaos schedule: a kill at a random moment
        node.kill()
        time.sleep(down)                    # how long the victim stays dead
        node = cluster.node(victim)
    assert done.wait(120)
    expect_exactly_once(cluster, node if victim == "agent" else agent, reader)
    if victim == "collector":
        # the last run aborted the uploads the killed runs left in progress
        wait_until(lambda: cluster.objects.uploads() == [], 30, "no upload in progress")


def test_e2e_to_s3_failover_to_second_collector(cluster, tmp_path):
    src = tmp_path / "app.log"
    p1, p2 = free_port(), free_port()
    src.touch()
    c1 = start_collector(cluster, "c1", p1)
    start_collector(cluster, "c2", p2)
    agent = start_agent(cluster, src, f'agentE2EChain("127.0.0.1:{p1}", "127.0.0.1:{p2}")')
    reader = Reader(cluster.objects, set(EXPECTED))
    done = run_writer(src, pace=0.02)
    wait_until(lambda: c1.counters("c1").get("events_in", 0) > 0, 60, "c1 receiving")
    c1.kill()  # c2 takes over; c1's unacknowledged groups are sent again
    assert done.wait(120)
    expect_exactly_once(cluster, agent, reader)
