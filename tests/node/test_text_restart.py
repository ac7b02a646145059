"""A collector writing with text() keeps every event it answered OK for across a restart
(clean or SIGKILL): its network source resends nothing, so nothing may be cut."""
from __future__ import annotations

import signal

import pytest

from flume_og.node.client import FlumeClient
from tests.conftest import free_port
from tests.node.test_latency import start_node, stop
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_restart_keeps_everything_a_collector_answered_for(tmp_path, how):
    """Before: the text sink cut its file back to its last committed size at the next
    open, and a collectorSource never gives a position to commit: every event answered OK
    was deleted by the restart (1,000 answered, 0 kept)."""
    port, out = free_port(), tmp_path / "out.txt"
    spec = f'lat: collectorSource({port}, bind="127.0.0.1") | text("{out}")'
    node = start_node(tmp_path, spec)
    try:
        client = FlumeClient("127.0.0.1", port, timeout=5)
        wait_until(lambda: client.send_body("first") or True, 30, "a send taken",
                   ignore=(Exception,))
        for i in range(999):
            client.send_body(f"event {i}")
        client.close()
        node.send_signal(getattr(signal, how))
        node.wait(30)
        assert len(out.read_bytes().splitlines()) == 1000
        node = start_node(tmp_path, spec)
        wait_until(lambda: FlumeClient("127.0.0.1", port, timeout=2).send_body("after")
                   or True, 30, "the restarted collector taking events",
                   ignore=(Exception,))
        lines = out.read_bytes().splitlines()
        assert lines[:1000] == [b"first"] + [f"event {i}".encode() for i in range(999)]
        assert lines[1000:] == [b"after"]
    finally:
        stop(node)
