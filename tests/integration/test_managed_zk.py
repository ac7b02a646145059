"""The managed ZooKeeper of a real master process (review cases 1c, 10, 11): locked outside
the root, a hard quota on the root, hostile registrations repaired by the leader, and the
server started again when it dies."""
from __future__ import annotations

import os
import signal

import pytest
from kazoo.exceptions import NoAuthError, QuotaExceededError
from kazoo.security import OPEN_ACL_UNSAFE

from flume_og.zk.acl import read_auth_file
from flume_og.zk.client import connect

from .harness import Master, wait_until

pytestmark = pytest.mark.timeout(120)
MB = b"a" * 700_000   # large, and under the client's own request bound


@pytest.fixture
def master(tmp_path):
    """A master with its own ZooKeeper of 64 MiB heap (quota: 16,384 znodes, 16 MiB)."""
    started = []

    def start(*extra):
        m = Master(tmp_path, None, "/flume", extra=extra)
        started.append(m)
        return m
    yield start
    for m in started:
        m.stop()


@pytest.fixture
def clients():
    made = []

    def client(zk, auth=None):
        c = connect(zk, auth=auth)
        made.append(c)
        return c
    yield client
    for c in made:
        c.stop()
        c.close()


def zookeeper_pid(master_pid: int) -> int | None:
    """The managed ZooKeeper: the java child of the master process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            cmd = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if ppid == master_pid and b"QuorumPeerMain" in cmd:
            return int(entry)
    return None


def test_outside_the_root_anyone_reads_and_only_the_master_writes(master, clients):
    """Case 10 (``zk_anon_root.py``): an anonymous client created 1 MB znodes at
    /anon-junk and /zookeeper/anon; case 11: the node credential created /flume2 and
    /zookeeper/x. All refused now; reading ``/`` still works."""
    m = master()
    zk = f"127.0.0.1:{m.zk_port}"
    node = read_auth_file(m.data_dir / "zk-auth")["node"]
    anon, nc = clients(zk), clients(zk, node)
    assert set(anon.get_children("/")) >= {"flume", "zookeeper"}
    for c, path in ((anon, "/anon-junk"), (anon, "/zookeeper/anon"),
                    (anon, "/zookeeper/quota/anon"), (nc, "/flume2"), (nc, "/zookeeper/x")):
        with pytest.raises(NoAuthError):
            c.create(path, MB)
    with pytest.raises(NoAuthError):
        anon.set_acls("/", OPEN_ACL_UNSAFE)


def test_the_root_has_a_hard_quota(master, clients):
    """Case 11: the node credential wrote 1 MB under commits/, without bound. The root's
    quota follows the heap (--zk-heap-mb 128: 16 MiB of data), and ZooKeeper refuses a
    write past it."""
    m = master("--zk-heap-mb", "128")
    zk = f"127.0.0.1:{m.zk_port}"
    nc = clients(zk, read_auth_file(m.data_dir / "zk-auth")["node"])
    written = 0
    with pytest.raises(QuotaExceededError):
        for i in range(40):
            nc.create(f"/flume/commits/x{i}", MB)
            written += 1
    assert 20 <= written <= 24          # 16 MiB in pieces of 700 kB
    r = m.command("config", "web1", "null", "null")   # the master still works
    assert r.json()["state"] == "SUCCEEDED", r.text


def test_hostile_registration_repaired_by_the_master(master, clients):
    """Case 11 (``zk_node_cred.py``): a world:ALL ``physical/evil`` with a sub-tree, made
    with the node credential, is readable by anonymous clients; the leader gives it the
    policy's ACL and deletes the sub-tree, and counts both in /api/cluster."""
    m = master()
    zk = f"127.0.0.1:{m.zk_port}"
    anon, nc = clients(zk), clients(zk, read_auth_file(m.data_dir / "zk-auth")["node"])
    nc.create("/flume/physical/evil", b'{"host": "x"}', acl=OPEN_ACL_UNSAFE, ephemeral=True)
    nc.create("/flume/physical/empty", b"{}", acl=OPEN_ACL_UNSAFE)  # the review's data
    nc.create("/flume/physical/" + "y" * 500, b"{}", acl=OPEN_ACL_UNSAFE, ephemeral=True)
    # in one transaction: the leader may repair status/evil before a second create came
    t = nc.transaction()
    t.create("/flume/status/evil", b"{}", acl=OPEN_ACL_UNSAFE)
    t.create("/flume/status/evil/sub", MB, acl=OPEN_ACL_UNSAFE)
    assert t.commit() == ["/flume/status/evil", "/flume/status/evil/sub"]

    def repaired():
        try:
            anon.get("/flume/physical/evil")
            return False
        except NoAuthError:
            pass
        refused = m.get("/api/cluster").json()["refused"]
        done = ("refused_registration_subtree", "refused_registration_name")
        return all(refused.get(k) for k in done) and refused
    refused = wait_until(repaired, 20, "the leader repairing physical/evil")
    assert refused["refused_registration_acl"] >= 2
    assert refused["refused_registration_name"] == 1
    assert refused["refused_registration_data"] == 1
    with pytest.raises(NoAuthError):
        nc.set_acls("/flume/physical/evil", OPEN_ACL_UNSAFE)
    with pytest.raises(NoAuthError):
        anon.get("/flume/status/evil")
    wait_until(lambda: "y" * 500 not in m.get("/api/status").text, 20, "bad name gone")
    wait_until(lambda: "evil" in m.get("/api/mappings").json(), 20, "evil mapped")
    assert set(m.get("/api/mappings").json()) == {"evil"}     # not empty, not y*500


def test_zookeeper_started_again_when_it_dies(master, clients):
    """Case 1c: the managed ZooKeeper died (out of memory) and nobody started it again,
    so the cluster stayed down. Now the master does, counts it and shows it; the heap and
    jute.maxbuffer are set explicitly and an out-of-memory JVM exits."""
    m = master()
    pid = wait_until(lambda: zookeeper_pid(m.p.pid), 10, "the ZooKeeper process")
    os.kill(pid, signal.SIGKILL)
    state = wait_until(lambda: (lambda z: z and z.get("alive") and z["restarts"] == 1 and z)(
        m.get("/api/cluster").json().get("zookeeper")), 30, "ZooKeeper started again")
    assert state == {"alive": True, "restarts": 1, "last_exit": -signal.SIGKILL,
                     "out_of_memory": 0, "heap_mb": 1024}
    assert "the managed ZooKeeper exited with status -9" in m.output()
    wait_until(lambda: m.get("/api/health").status_code == 200, 30, "master reconnected")
    r = m.command("config", "web1", "null", "null")
    assert r.json()["state"] == "SUCCEEDED", r.text
    new = zookeeper_pid(m.p.pid)
    assert new and new != pid
    cmd = open(f"/proc/{new}/cmdline", "rb").read().split(b"\0")
    assert b"-Xmx1024m" in cmd and b"-XX:+ExitOnOutOfMemoryError" in cmd
    assert b"-Djute.maxbuffer=1048575" in cmd and b"-Dzookeeper.enforceQuota=true" in cmd
    assert b"-Dzookeeper.largeRequestMaxBytes=67108864" in cmd
