"""A master on a three-server ZooKeeper ensemble whose leader is killed: the commands sent
while the ensemble elects a new leader (and the master reconnects) succeed."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.zk.ensemble import Ensemble

from .harness import Master, wait_until

pytestmark = pytest.mark.timeout(120)


def test_commands_during_a_leader_election_succeed(tmp_path, procs):
    ens = Ensemble(tmp_path / "ensemble")
    try:
        m = Master(tmp_path, ens.connect_string, "/flume")
        procs.append(m)
        assert m.command("config", "warm", "null", "null").status_code == 200
        results, health = [], []
        stop = threading.Event()

        def config(k: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                if k == 0:   # one transaction for several configs
                    r = m.command("multiconfig", f"m{i}a: null | null; "
                                  f'm{i}b: null | {{ value("k", "{i}") => null }};')
                else:
                    r = m.command("config", f"n{k}", "null",
                                  f'{{ value("k", "{i}") => null }}')
                results.append((k, i, r.status_code, r.text[:300]))

        def watch_health() -> None:
            while not stop.is_set():
                try:
                    health.append(m.get("/api/health").status_code)
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)     # the sampling pace of the health page

        threads = [threading.Thread(target=config, args=(k,)) for k in range(3)]
        threads.append(threading.Thread(target=watch_health))
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(results) >= 3, 30, "configs answered before the kill",
                       interval=0.05)
            lost_before = m.get("/api/health").json()["zookeeper_disconnections"]
            ens.kill_leader()
            # until the master lost ZooKeeper and got it back (counted by the master: the
            # health page sampled under load can miss a short 503), and has answered a few
            # more configs since
            wait_until(lambda: m.get("/api/health").json()["zookeeper_disconnections"]
                       > lost_before and health[-1:] == [200], 60,
                       "the master to lose ZooKeeper and get it back", interval=0.05)
            answered = len(results)
            wait_until(lambda: len(results) >= answered + 3, 30,
                       "configs answered after the master got ZooKeeper back", interval=0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        failed = [r for r in results if r[2] != 200]
        assert not failed, failed
        assert len(results) >= 6
        last = max(i for k, i, _, _ in results if k == 1)
        row = m.get("/api/configs/n1").json()
        assert f'value("k", "{last}")' in row["sink"], row
    finally:
        ens.stop()
