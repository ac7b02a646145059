"""ZooKeeper ACLs (zk/acl.py) on a real ZooKeeper: the auth file, what an anonymous client,
a node and a master may do, every znode operation a node process makes, and the ACLs set
on a tree made open before."""
from __future__ import annotations

import os

import pytest
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE, Permissions

from flume_og.zk.acl import (AclPolicy, AuthFileError, Credential, managed_credentials,
                             protect_tree, read_auth_file)
from flume_og.zk.client import connect
from flume_og.zk.store import ConfigStore, LogicalConfig
from tests.waiting import wait_until

from tests.conftest import AclTree

MASTER, NODE, CREDS = AclTree.MASTER, AclTree.NODE, AclTree.CREDS


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


# ---------------------------------------------------------------- the auth file

def test_auth_file_read_when_only_its_owner_may(tmp_path):
    f = write(tmp_path / "auth", f"# comment\n\n{MASTER.line('master')}\n"
              f" node = {NODE.user}:{NODE.password} \n")
    assert read_auth_file(f, need=("master", "node")) == CREDS
    os.chmod(f, 0o640)
    with pytest.raises(AuthFileError, match="chmod 600"):
        read_auth_file(f)
    os.chmod(f, 0o604)
    with pytest.raises(AuthFileError, match="accessible by others"):
        read_auth_file(f)


@pytest.mark.parametrize("text, error", [
    ("node=flume-node:short\n", "16 characters"),
    ("nodes=flume-node:0123456789abcdef\n", "expected master="),
    ("node flume-node:0123456789abcdef\n", "expected master="),
    ("node=0123456789abcdef0123\n", "USER:PASSWORD"),
    ("node=a:0123456789abcdef\nnode=b:0123456789abcdef\n", "second node"),
    ("node=a:0123456789abcdef\nmaster=a:fedcba9876543210\n", "different users"),
    ("node=a:0123456789 abcdef\n", "no spaces"),
])
def test_auth_file_malformed_refused(tmp_path, text, error):
    with pytest.raises(AuthFileError, match=error):
        read_auth_file(write(tmp_path / "auth", text))


def test_auth_file_missing_role_refused(tmp_path):
    f = write(tmp_path / "auth", NODE.line("node") + "\n")
    assert read_auth_file(f, need=("node",)) == {"node": NODE}
    with pytest.raises(AuthFileError, match="no master line"):
        read_auth_file(f, need=("master", "node"))


def test_managed_credentials_generated_once_owner_only(tmp_path):
    creds = managed_credentials(tmp_path / "m")
    assert set(creds) == {"master", "node"} and creds["master"] != creds["node"]
    for name in ("zk-auth", "zk-auth-node"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o600
    assert read_auth_file(tmp_path / "m" / "zk-auth-node") == {"node": creds["node"]}
    assert managed_credentials(tmp_path / "m") == creds   # read back, not generated again


# ---------------------------------------------------------------- a protected tree

@pytest.fixture
def clients(acl_tree, zk_root):
    """(master store, node store, anonymous client, client factory) over a tree made by a
    master with credentials; the node's policy is learnt from the root, as a node process
    does."""
    n = acl_tree.n
    assert n.acl_policy.masters == [MASTER.id] and n.acl_policy.node == NODE.id
    yield acl_tree.master, ConfigStore(n, zk_root), acl_tree.client(), acl_tree.client
    acl_tree.master.remove_tree()


EXEC_SPEC = b'{"source":"exec(\\"touch /tmp/pwned\\")","sink":"null"}'


def test_anonymous_client_can_neither_read_nor_write(clients, zk_root):
    master, _, anon, _ = clients
    master.put_logical(LogicalConfig("web1", 'tail("/var/log/a")', "null"))
    master.map("p1", "web1")
    for read in (lambda: anon.get_children(zk_root),
                 lambda: anon.get(f"{zk_root}/logical/web1"),
                 lambda: anon.get_children(f"{zk_root}/logical"),
                 lambda: anon.get(f"{zk_root}/mappings/p1"),
                 lambda: anon.get_children(f"{zk_root}/commits")):
        with pytest.raises(NoAuthError):
            read()
    # the attack of the issue: a logical node running a program, mapped to a node
    with pytest.raises(NoAuthError):
        anon.create(f"{zk_root}/logical/evil", EXEC_SPEC)
    with pytest.raises(NoAuthError):
        anon.set(f"{zk_root}/mappings/p1", b'["evil"]')
    with pytest.raises(NoAuthError):
        anon.create(f"{zk_root}/mappings/p2", b'["evil"]')
    with pytest.raises(NoAuthError):
        anon.set_acls(f"{zk_root}/logical", OPEN_ACL_UNSAFE)
    assert master.get_mapping("p1") == ["web1"]
    assert master.get_logical("evil") is None


def test_node_credential_cannot_change_what_nodes_run(clients, zk_root):
    master, node, _, _ = clients
    master.put_logical(LogicalConfig("web1", 'tail("/var/log/a")', "null"))
    master.map("p1", "web1")
    master.set_choke("p1", "c1", 100)
    master.new_command("noop", [])
    master.allocate_port("p1", "web1")
    nz = node.client
    refused = [
        lambda: nz.create(f"{zk_root}/logical/evil", EXEC_SPEC),
        lambda: nz.set(f"{zk_root}/logical/web1", EXEC_SPEC),
        lambda: nz.delete(f"{zk_root}/logical/web1"),
        lambda: nz.set(f"{zk_root}/mappings/p1", b'["evil"]'),
        lambda: nz.create(f"{zk_root}/mappings/p2", b'["evil"]'),
        lambda: nz.delete(f"{zk_root}/mappings/p1"),
        lambda: nz.set(f"{zk_root}/chokes/p1", b'{"c1": 1}'),
        lambda: nz.create(f"{zk_root}/commands/cmd-", b"{}", sequence=True),
        lambda: nz.get_children(f"{zk_root}/commands"),
        lambda: nz.get_children(f"{zk_root}/election"),
        lambda: nz.create(f"{zk_root}/ports/p1/40000", b"evil"),
        lambda: nz.set_acls(f"{zk_root}/logical", OPEN_ACL_UNSAFE),
        lambda: nz.set_acls(f"{zk_root}/status", OPEN_ACL_UNSAFE),
        lambda: nz.create(f"{zk_root}/extra", b""),
    ]
    for i, op in enumerate(refused):
        with pytest.raises(NoAuthError):
            op()
            pytest.fail(f"operation {i} was allowed")
    assert master.get_logical("web1").source == 'tail("/var/log/a")'
    assert master.get_mapping("p1") == ["web1"]
    # what a node reads
    assert node.get_logical("web1").source == 'tail("/var/log/a")'
    assert node.get_mapping("p1") == ["web1"]
    assert node.get_chokes("p1") == {"c1": 100}


def test_every_node_operation_works_under_the_node_credential(clients, zk_root):
    """Registration, status, goodbye and the whole E2E commit log (zk/commit_log.py), as a
    node process makes them; the master reads all of it; nodes never get ADMIN."""
    master, node, _, client = clients
    node.register_physical("p1", {"pid": 1})
    node.register_physical("p1", {"pid": 2})                   # again, same session
    other = ConfigStore(client(NODE), zk_root)
    other.client.acl_policy = node.client.acl_policy
    other.register_physical("p1", {"pid": 3})                  # a new session takes over
    node.put_status("p1", {"logical": {}})
    node.put_status("p1", {"logical": {"a": 1}})
    assert master.list_physical() == {"p1": {"pid": 3}}
    assert master.get_status("p1") == {"logical": {"a": 1}}
    other.client.delete(other.physical_path("p1"))             # the goodbye
    assert master.list_physical() == {}
    # the E2E commit log: collector claims and commits, agent watches, acknowledges
    log = node.commits
    assert log.claim_group("agent1", 1, "coll") == "claimed"
    assert log.claim_group("agent1", 2, "coll") == "claimed"
    assert log.claim_holder("agent1", 1) == "coll"
    assert log.release_claims([("agent1", 2)]) == 1
    ok, why = log.commit_groups("coll", "f1", {"files": [["h", "f"]]}, [("agent1", 1)])
    assert ok, why
    assert log.file_recorded("coll", "f1")
    assert log.file_records("coll") == {"f1": {"files": [["h", "f"]]}}
    log.delete_file_record("coll", "f1")
    assert not log.file_recorded("coll", "f1")
    assert other.commits.claim_group("agent1", 3, "coll2") == "claimed"
    assert log.reclaim_group("agent1", 3, "coll2")
    seen: list[list[int]] = []
    log.watch_groups("agent1", seen.append)
    wait_until(lambda: seen and seen[-1] == [1], what="the committed group watched")
    assert log.group_committed("agent1", 1) and log.list_groups("agent1") == [1]
    assert log.raise_watermark("agent1", 2) == 2 and log.get_watermark("agent1") == 2
    log.delete_groups("agent1", [1])
    wait_until(lambda: seen[-1] == [], what="the forgotten group watched")
    assert master.commits.list_groups("agent1") == []
    assert master.commits.get_watermark("agent1") == 2
    # every znode a node made names the master and gives the node no ADMIN; its status
    # (and registration) no CREATE either: nothing can hang below them
    for path in (f"{zk_root}/commits/claims/agent1", f"{zk_root}/commits/watermark/agent1",
                 f"{zk_root}/commits/files/coll"):
        acls, _ = master.client.get_acls(path)
        assert {(a.perms, a.id) for a in acls} == {
            (Permissions.ALL, MASTER.id), (Permissions.ALL & ~Permissions.ADMIN, NODE.id)}
    acls, _ = master.client.get_acls(f"{zk_root}/status/p1")
    assert {(a.perms, a.id) for a in acls} == {
        (Permissions.ALL, MASTER.id), (Permissions.READ | Permissions.WRITE, NODE.id)}


def test_master_creates_the_default_mapping_of_a_new_node(clients):
    master, node, _, _ = clients
    node.register_physical("p9", {})
    with pytest.raises(NoAuthError):
        node.ensure_mapping("p9", ["p9"])
    assert master.ensure_default_mappings() == ["p9"]
    assert node.get_mapping("p9") == ["p9"]
    assert master.ensure_default_mappings() == []


def test_wrong_node_password_refused(clients, zk_root):
    *_, client = clients
    wrong = Credential(NODE.user, "not-the-node-password")
    c = client(wrong)
    with pytest.raises(NoAuthError):
        AclPolicy.learn(c, zk_root, wrong)
    with pytest.raises(NoAuthError):
        c.get(f"{zk_root}/logical")


def test_open_tree_gets_its_acls_once(zk_client, zk_server, zk_root):
    """A tree made before ACLs (world:anyone everywhere) is protected by a master's first
    start with credentials; a second pass changes nothing."""
    open_store = ConfigStore(zk_client, zk_root)
    open_store.ensure_layout()
    open_store.put_logical(LogicalConfig("web1", "null", "null"))
    open_store.map("p1", "web1")
    open_store.put_status("p1", {})
    assert open_store.commits.claim_group("a", 1, "c") == "claimed"
    m = connect(zk_server.connect_string, auth=MASTER)
    try:
        policy = AclPolicy.for_master(zk_root, CREDS)
        checked, changed = protect_tree(m, zk_root, policy)
        assert changed == checked >= 14   # root, 9 folders, logical, mapping, status, ...
        with pytest.raises(NoAuthError):
            zk_client.get(open_store.logical_path("web1"))
        with pytest.raises(NoAuthError):
            zk_client.set(open_store.mapping_path("p1"), b'["evil"]')
        assert protect_tree(m, zk_root, policy) == (checked, 0)
        acls, _ = m.get_acls(f"{zk_root}/commits/claims/a/1")
        assert set(acls) == set(policy.acl(f"{zk_root}/commits/claims/a/1"))
    finally:
        ConfigStore(m, zk_root).remove_tree()
        m.stop()
        m.close()


@pytest.fixture
def in_process_master(zk_server, zk_root, tmp_path):
    """Start a Master (no HTTP) on the test ZooKeeper; removes its tree afterwards."""
    from flume_og.master.server import Master
    made = []

    def start(wait=True):
        m = Master(tmp_path, zk_server.connect_string, root=zk_root, zk_auth=CREDS,
                   http_port=0)
        made.append(m)
        if wait:
            m.start()
        return m
    yield start
    for m in made:
        if m.client is not None:
            ConfigStore(m.client, zk_root).remove_tree()
        m.stop()


def test_master_serves_before_the_tree_is_protected_and_skips_commits(
        zk_server, zk_root, in_process_master, monkeypatch):
    """Review M3: the master walked the whole tree before serving (30,038 znodes: 32 s
    without an API). Now start() returns at once and the leader sets the ACLs in the
    background; below commits/<kind>/ only when that folder's ACL is not the policy's
    (nodes create those znodes with the policy's ACL)."""
    import threading

    from flume_og.master import server as master_server
    m = connect(zk_server.connect_string, auth=MASTER)
    try:
        m.acl_policy = AclPolicy.for_master(zk_root, CREDS)
        protected = ConfigStore(m, zk_root)
        protected.ensure_layout()
        protected.commits.raise_watermark("a", 1)     # commits/watermark made protected
        m.acl_policy = None                 # what follows is created open
        m.create(f"{zk_root}/logical/web1", b"{}", acl=OPEN_ACL_UNSAFE)
        mark = f"{zk_root}/commits/watermark/b"
        m.create(mark, b"1", acl=OPEN_ACL_UNSAFE)
    finally:
        m.stop()
        m.close()
    release, walking = threading.Event(), threading.Event()
    real = master_server.protect_tree

    def slow_protect(*args, **kwargs):     # a tree that takes long to walk
        walking.set()
        release.wait(30)
        return real(*args, **kwargs)
    monkeypatch.setattr(master_server, "protect_tree", slow_protect)
    master = in_process_master(wait=False)
    started = threading.Thread(target=master.start, daemon=True)
    try:
        started.start()
        started.join(10)
        assert not started.is_alive(), "start() waited for the walk of the tree"
        wait_until(walking.is_set, what="the leader walks the tree")
        assert not master.leader.protected.is_set()
        release.set()
        wait_until(master.leader.protected.is_set, what="the tree protected")
        web1 = f"{zk_root}/logical/web1"
        assert set(master.client.get_acls(web1)[0]) == set(master.acl.acl(web1))
        assert set(master.client.get_acls(mark)[0]) == set(OPEN_ACL_UNSAFE)    # skipped
    finally:
        release.set()
        started.join(10)


def test_master_protects_commits_of_a_tree_made_open(zk_client, zk_root,
                                                     in_process_master):
    open_store = ConfigStore(zk_client, zk_root)
    open_store.ensure_layout()
    assert open_store.commits.claim_group("a", 1, "c") == "claimed"
    open_store.commits.raise_watermark("a", 3)
    master = in_process_master()
    wait_until(master.leader.protected.is_set, what="the tree protected")
    for path in (f"{zk_root}/commits/claims/a/1", f"{zk_root}/commits/watermark/a",
                 f"{zk_root}/commits/claims"):
        assert set(master.client.get_acls(path)[0]) == set(master.acl.acl(path)), path
    with pytest.raises(NoAuthError):
        zk_client.get(f"{zk_root}/commits/watermark/a")


def test_policy_by_path():
    p = AclPolicy("/flume", [MASTER.id], NODE.id)

    def node_perms(path):
        return {a.id: a.perms for a in p.acl(path)}.get(NODE.id, 0)
    R = Permissions.READ
    assert node_perms("/flume") == R and node_perms("/flume/logical/x") == R
    assert node_perms("/flume/mappings/p") == R and node_perms("/flume/chokes/p") == R
    assert node_perms("/flume/physical") == Permissions.CREATE | Permissions.DELETE
    assert node_perms("/flume/status/p") == Permissions.READ | Permissions.WRITE
    assert node_perms("/flume/physical/p") == Permissions.READ | Permissions.WRITE
    assert node_perms("/flume/commits/groups/a/1") == Permissions.ALL & ~Permissions.ADMIN
    for master_only in ("/flume/commands/cmd-", "/flume/election/x", "/flume/ports/p/1"):
        assert node_perms(master_only) == 0
    assert node_perms("/flumex/logical") == R          # not under the root: the root's
    assert all(a.id.scheme != "world" for a in p.acl("/flume/commits"))
    assert AclPolicy("/flume", [], None).acl("/flume/logical/x") == OPEN_ACL_UNSAFE
