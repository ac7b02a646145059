"""An E2E agent killed while the file it tails rotates three times (and the collector
goes on): started again, it reads the rest of the file it was in, the rotated files after
it in order, then the live file; every counter line is in the collector's files exactly
once."""
from __future__ import annotations

import pytest

from tests.conftest import free_port
from tests.integration.harness import wait_until
from tests.integration.test_data_plane import (cluster, output_lines,  # noqa: F401 (fixture)
                                               start_agent, start_collector)
from tests.node.test_tail_rotations import counters, rotate

pytestmark = pytest.mark.timeout(240)


def test_e2e_agent_down_while_its_file_rotates_three_times(cluster, tmp_path):  # noqa: F811
    src, out, port = tmp_path / "app.log", tmp_path / "out", free_port()
    src.write_bytes(counters(0, 2000))
    start_collector(cluster, "collector", port, out)
    agent = start_agent(cluster, src, f'agentE2ESink("127.0.0.1", {port})')
    wait_until(lambda: len(output_lines(out)) >= 2000, 60, "the first 2,000 counters")
    agent.kill()
    with open(src, "ab") as f:
        f.write(counters(2000, 3000))
    for k, (a, b) in enumerate(((3000, 4000), (4000, 5000), (5000, 6000)), 1):
        rotate(src, "numbered", k, counters(a, b))  # size-based: name.1 .. name.3
    agent = cluster.node("agent")
    with open(src, "ab") as f:                      # the live file grows on
        f.write(counters(6000, 7000))
    wait_until(lambda: len(output_lines(out)) >= 7000, 120, "all 7,000 counters")
    # once the agent's write-ahead log holds no group, nothing can be sent again
    wait_until(lambda: agent.counters("agent").get("wal_groups") == 0, 120,
               "every group acknowledged")
    lines = output_lines(out)
    assert len(lines) == len(set(lines)), f"{len(lines) - len(set(lines))} duplicates"
    assert sorted(lines) == counters(0, 7000).splitlines()
