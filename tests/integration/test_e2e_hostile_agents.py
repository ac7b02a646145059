"""Hostile appendGroup calls against a real master, its managed ZooKeeper and a collector
node, all separate processes (issue 9, review item 1).

An unauthenticated sender used agent ids of 900 kB to 3 MiB with junk payloads: before,
each junk call left a persistent znode named by the id (ZooKeeper ran out of heap after
26-38 of them and the cluster stayed down), and a 3 MiB id made ZooKeeper drop the
collector's session again and again. Now every such call is answered FAILED and counted
before ZooKeeper is asked anything; ZooKeeper's data directory and heap stay as they were,
and a legitimate group is still taken and committed.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from flume_og.node.codec import encode_events
from flume_og.node.event import events_from_lines
from flume_og.node.rpc import RpcClient, Status
from tests.conftest import free_port

from .harness import Master, Node, wait_until

pytestmark = pytest.mark.timeout(180)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def zookeeper_pid(master: Master) -> int:
    """The managed ZooKeeper's process (its command line names the master's zoo.cfg)."""
    cfg = str(master.data_dir / "zookeeper" / "zoo.cfg").encode()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if cfg in Path(f"/proc/{d}/cmdline").read_bytes():
                    return int(d)
            except OSError:
                continue
    raise AssertionError("no managed ZooKeeper process")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_huge_agent_ids_and_junk_groups_leave_the_managed_zookeeper_alone(tmp_path, procs):
    m = Master(tmp_path, None, "/flume")
    procs.append(m)
    n = Node(tmp_path, None, "/flume", "p1", extra=("--master", m.url))
    procs.append(n)
    wait_until(lambda: m.logical("p1"), 30, "p1 registered")
    port, out = free_port(), tmp_path / "out"
    r = m.command("config", "p1", f'collectorSource({port}, bind="127.0.0.1")',
                  f'collectorSink("file://{out}", "data-", 500)')
    assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED", r.text
    wait_until(lambda: m.logical("p1").get("state") == "ACTIVE", 30, "collector ACTIVE")

    zk_pid = zookeeper_pid(m)
    zk_data = m.data_dir / "zookeeper" / "data"
    data_before, rss_before = dir_bytes(zk_data), rss_mb(zk_pid)
    rpc = RpcClient("127.0.0.1", port, timeout=30)
    calls = [("A" * (3 << 20), 1, b"junk")]                              # Len error
    calls += [(f"{i:06d}-" + "C" * 900_000, 1, b"junk") for i in range(40)]  # heap
    calls += [(f"junk-{i}", 1, b"junk") for i in range(100)]             # znode each
    for agent, seq, payload in calls:
        status, msg = rpc.append_group(agent, seq, zlib.crc32(payload), payload, 1)
        assert status == Status.FAILED, msg[:200]
    wait_until(lambda: n.counters("p1").get("refused_malformed", 0) >= len(calls), 10,
               "every hostile call counted")
    rss_after = rss_mb(zk_pid)

    # a legitimate group goes through, committed in ZooKeeper and written once
    payload = encode_events(events_from_lines([b"legit-1", b"legit-2"]))
    assert rpc.append_group("agent-legit", 1, zlib.crc32(payload), payload, 2)[0] \
        == Status.OK
    rpc.close()
    wait_until(lambda: sorted(b"".join(f.read_bytes() for f in out.rglob("data-*"))
                              .splitlines()) == [b"legit-1", b"legit-2"], 30,
               "the legitimate group in a committed file")

    assert zookeeper_pid(m) == zk_pid                       # ZooKeeper never died
    assert dir_bytes(zk_data) - data_before < 1 << 20, (data_before, dir_bytes(zk_data))
    assert rss_after - rss_before < 64, (rss_before, rss_after)
    assert m.get("/api/health").status_code == 200
    log = n.output()
    assert "Connection dropped" not in log and "discarded a file" not in log, log[-3000:]
    print(f"ZooKeeper RSS {rss_before:.0f} -> {rss_after:.0f} MiB, data "
          f"{data_before / 1e6:.1f} -> {dir_bytes(zk_data) / 1e6:.1f} MB")
