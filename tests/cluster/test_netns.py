"""The harness's network: hosts reach each other over the bridge, a cut or a link down
drops their packets silently until healed, and nothing is left behind."""
from __future__ import annotations

import socket

import pytest

from . import netns

pytestmark = pytest.mark.timeout(60)
PREFIX = "flct"


@pytest.fixture
def net():
    why = netns.available(PREFIX)
    if why:
        pytest.skip(f"the cluster harness {why}")
    netns.ip("netns", "add", f"{PREFIX}-stale")      # as a killed run leaves it
    n = netns.Network(PREFIX, subnet="10.213.254")
    yield n
    n.destroy()
    assert [ns for ns in netns.namespaces() if ns.startswith(PREFIX + "-")] == []


def listen(net: netns.Network, host: str) -> socket.socket:
    """A listening socket on ``host``:5000 (the kernel completes connections into its
    backlog: no one needs to accept them)."""
    with net.inside(host):
        return socket.create_server((net.hosts[host], 5000), backlog=16)


def reaches(net: netns.Network, here: str, there: str, timeout: float = 1.0) -> bool:
    """True if ``here`` connects to ``there``:5000 within ``timeout`` seconds; False on a
    timeout (silence)."""
    with net.inside(here):
        try:
            socket.create_connection((net.hosts[there], 5000), timeout=timeout).close()
            return True
        except TimeoutError:
            return False
        except OSError as exc:
            return exc


def test_hosts_reach_each_other_until_cut_and_again_once_healed(net):
    assert "flct-stale" not in netns.namespaces()
    net.add_host("a", 2)
    net.add_host("b", 3)
    net.add_host("c", 4)
    server = listen(net, "b")
    assert reaches(net, "a", "b") is True and reaches(net, "c", "b") is True
    net.cut(["a"], ["b"])
    assert reaches(net, "a", "b") is False        # silence, not an error
    assert reaches(net, "c", "b") is True         # a cut between a and b only
    net.heal()
    assert reaches(net, "a", "b") is True
    net.link_down("a")
    assert reaches(net, "a", "b") is not True
    net.heal()
    # a first SYN may still meet the neighbour entry the outage left failed: one
    # retransmission (1 s) is allowed
    assert reaches(net, "a", "b", timeout=3) is True
    server.close()
