"""The commit log as components see it: zk's answers and failures in node's vocabulary."""
from __future__ import annotations

import pytest

from flume_og.node.commit_port import CommitLogPort
from flume_og.node.e2e.protocol import Claim
from flume_og.node.errors import CommitLogError
from flume_og.zk.commit_log import ClaimOutcome


def test_every_claim_outcome_has_its_node_name():
    assert {o.value for o in ClaimOutcome} == {c.value for c in Claim}


def test_a_claim_answers_in_node_terms(store):
    commits = CommitLogPort(store.commits)
    first = commits.claim_group("agent-a", 1, "collector-1")
    assert type(first) is Claim and first is Claim.CLAIMED
    assert commits.claim_group("agent-a", 1, "collector-1") is Claim.OURS
    assert commits.get_watermark("agent-a") == store.commits.get_watermark("agent-a")


def test_zookeeper_failing_is_a_commit_log_error(zk_server, zk_root):
    from flume_og.zk.client import connect
    from flume_og.zk.store import ConfigStore
    client = connect(zk_server.connect_string)
    s = ConfigStore(client, zk_root)
    s.ensure_layout()
    commits = CommitLogPort(s.commits)
    client.stop()                 # the session is gone: every call fails at once
    try:
        with pytest.raises(CommitLogError) as info:
            commits.list_groups("agent-a")
        assert "list_groups" in str(info.value) or "agent-a" in str(info.value)
        with pytest.raises(CommitLogError):
            commits.claim_group("agent-a", 2, "collector-1")
    finally:
        client.close()
        client2 = connect(zk_server.connect_string)
        ConfigStore(client2, zk_root).remove_tree()
        client2.stop()
        client2.close()
