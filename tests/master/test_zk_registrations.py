"""What a client holding the node credential can register, and what the leader's check
(zk/registrations.py, run by the leading master) leaves of it, on a real ZooKeeper where the master is not
the super user (an external ensemble): review case 11."""
from __future__ import annotations

import json

import pytest
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

from flume_og.master.validation import name_problem
from flume_og.node.component import Metrics
from flume_og.node.limits import RateLimitedLog, Refusals
from flume_og.zk.client import connect
from flume_og.zk.registrations import Registrations
from flume_og.zk.store import ConfigStore

from tests.conftest import AclTree

MASTER, NODE = AclTree.MASTER, AclTree.NODE


@pytest.fixture
def tree(acl_tree, zk_server, zk_root):
    """(master store, node store made as a node process makes it, a raw client with the
    node credential and no ACL policy: what a hostile holder of the credential uses,
    anonymous client, the check, its metrics)."""
    m, master, n, client = acl_tree.m, acl_tree.master, acl_tree.n, acl_tree.client
    metrics = Metrics()
    logger = __import__("logging").getLogger("t")
    check = Registrations(master, m.acl_policy, Refusals(metrics, logger, "test"),
                          name_problem=name_problem, locked_log=RateLimitedLog(logger))
    raw = client(NODE)
    yield master, ConfigStore(n, zk_root), raw, client(), check, metrics
    raw.delete(f"{zk_root}/physical/locked", recursive=True)   # only its creator may
    remove = connect(zk_server.connect_string, auth=MASTER)
    remove.delete(zk_root, recursive=True)
    remove.stop()
    remove.close()


def test_a_nodes_own_registration_has_no_create_and_no_admin(tree, zk_root):
    """Before: a node's status znode (persistent) granted it CREATE: a sub-tree could hang
    below it. (Its registration is ephemeral: ZooKeeper refuses children there anyway.)"""
    _, node, _, _, check, metrics = tree
    node.register_physical("p1", {"host": "h", "pid": 1})
    node.put_status("p1", {"logical": {}})
    nz = node.client
    for path in (node.status_path("p1"), node.physical_path("p1")):
        with pytest.raises(NoAuthError):
            nz.create(f"{path}/sub", b"")
        with pytest.raises(NoAuthError):
            nz.set_acls(path, OPEN_ACL_UNSAFE)
    assert check.check() == {"p1"}
    assert metrics.get("refused", 0) == 0          # a real registration passes untouched


def test_hostile_registrations_are_repaired_removed_or_never_mapped(tree, zk_root):
    """The review's case: with the raw node credential, a world:ALL ``physical/evil``
    (readable by anonymous, ADMIN for its creator) with a sub-tree, and names or data no
    node registers (the review's ``{}`` included). After one check: the ACL is the policy's, the sub-tree is gone, the
    rest is deleted, nothing malformed is mapped, and each refusal is counted."""
    master, node, raw, anon, check, metrics = tree
    node.register_physical("p1", {"host": "h"})
    phys = f"{zk_root}/physical"
    raw.create(f"{phys}/evil", b'{"host": "h"}', acl=OPEN_ACL_UNSAFE)
    raw.create(f"{phys}/evil/sub", b"", acl=OPEN_ACL_UNSAFE)
    raw.create(f"{phys}/" + "x" * 300, b"{}", acl=OPEN_ACL_UNSAFE)
    raw.create(f"{phys}/a b", b"{}", acl=OPEN_ACL_UNSAFE)
    raw.create(f"{phys}/junk", b"\xff" * 1000, acl=OPEN_ACL_UNSAFE)
    raw.create(f"{phys}/hostless", b"{}", acl=OPEN_ACL_UNSAFE)
    raw.create(f"{zk_root}/status/evil", b"{}", acl=OPEN_ACL_UNSAFE)
    # only the node may even read this one: the master can neither repair nor delete it
    mine = [make_digest_acl(NODE.user, NODE.password, all=True)]
    raw.create(f"{phys}/locked", b'{"host": "h"}', acl=mine)
    raw.create(f"{phys}/locked/sub", b"", acl=mine)
    assert anon.get(f"{phys}/evil")[0]                   # before the check: world-readable

    accepted = check.check()
    assert accepted == {"p1", "evil"}
    assert master.ensure_default_mappings(accepted) == ["evil", "p1"]
    assert set(master.list_mappings()) == {"evil", "p1"}
    with pytest.raises(NoAuthError):
        anon.get(f"{phys}/evil")
    with pytest.raises(NoAuthError):
        raw.set_acls(f"{phys}/evil", OPEN_ACL_UNSAFE)
    with pytest.raises(NoAuthError):
        anon.get(f"{zk_root}/status/evil")
    assert set(master.client.get_children(phys)) == {"p1", "evil", "locked"}
    assert master.client.get_children(f"{phys}/evil") == []
    assert metrics["refused_registration_name"] == 2
    assert metrics["refused_registration_subtree"] >= 1
    assert metrics["refused_registration_acl"] >= 3      # evil, status/evil, locked
    assert metrics["refused_registration_data"] == 2      # junk, hostless
    # the check's own deletions changed the folder: the next check looks again (and
    # counts what it still cannot remove); after that, nothing changed, nothing is counted
    assert check.check() == accepted
    before = dict(metrics)
    assert check.check() == accepted and metrics == before
    # a registration made after the check is checked too
    raw.create(f"{phys}/late", json.dumps({"host": "h2", "pid": 2}).encode(),
               acl=OPEN_ACL_UNSAFE)
    assert anon.get(f"{phys}/late")[0]
    assert check.check() == {"p1", "evil", "late"}
    assert metrics["refused_registration_acl"] > before["refused_registration_acl"]
    with pytest.raises(NoAuthError):
        anon.get(f"{phys}/late")
