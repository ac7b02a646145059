"""Fixtures of the cluster tests: a :class:`Cluster` per test, closed (processes stopped,
namespaces deleted) however the test ends; where namespaces cannot be made (not root, no
``ip``, a container without the privilege) they skip, or fail with
``FLUME_TEST_CLUSTER=required``. Tests marked ``cluster_full`` (the long fault
scenarios) run only with ``FLUME_CLUSTER_FULL=1`` (scripts/cluster-faults.sh).

Under pytest-xdist every cluster test is in the ``cluster`` group (one worker runs them one
after the other: a cluster is a dozen processes, two at once would starve each other's
timeouts), and the namespaces' prefix names the worker, so that a harness deleting the
namespaces a killed run left behind never deletes another worker's."""
from __future__ import annotations

import os

import pytest

from . import netns


PREFIX = "flc" + os.environ.get("PYTEST_XDIST_WORKER", "")     # flc, or flcgw0, flcgw1...


def pytest_collection_modifyitems(config, items):
    full = os.environ.get("FLUME_CLUSTER_FULL") == "1"
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.xdist_group("cluster"))
        if "cluster_full" in item.keywords and not full:
            item.add_marker(pytest.mark.skip(
                reason="a long fault scenario: scripts/cluster-faults.sh runs it"))


@pytest.fixture
def make_cluster(tmp_path):
    """``make_cluster(mode="E2E")`` -> a started :class:`Cluster` (skips where network
    namespaces cannot be made: not root, or no ``ip``)."""
    why = netns.available(PREFIX)
    if why:
        if os.environ.get("FLUME_TEST_CLUSTER") == "required":
            pytest.fail(f"the cluster harness {why}")
        pytest.skip(f"the cluster harness {why}")
    from .harness import Cluster
    made = []

    def make(mode: str = "E2E"):
        c = Cluster(tmp_path, mode, PREFIX)
        made.append(c)
        return c.start()
    yield make
    for c in made:
        c.close()
