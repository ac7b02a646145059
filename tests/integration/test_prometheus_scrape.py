"""A real Prometheus (Debian's package, its own config and data directory) scrapes a
master and two nodes; rate() over the node counters gives the events per second the nodes
count themselves, and ``promtool check metrics`` accepts every exposition."""
from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.harness import Master, Node, wait_until

# scripts/setup.sh installs Debian's prometheus (prometheus and promtool): never skipped
pytestmark = pytest.mark.timeout(90)

# ms per event of each node's delay: 100 and 50 events per second at most
DELAYS = {"p1": 10, "p2": 20}
WINDOW = 6   # seconds of rate()


class Prometheus:
    def __init__(self, tmp, targets: dict[str, list[str]]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n"
                       f"      - targets: [{', '.join(repr(t) for t in addrs)}]\n"
                       for job, addrs in targets.items())
        cfg = tmp / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                       f"scrape_configs:\n{jobs}")
        self.log = open(tmp / "prometheus.log", "wb")
        self.p = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        # it answers 503 "Service Unavailable" until its storage is open
        wait_until(self.ready, 30, "Prometheus ready")

    def ready(self) -> bool:
        assert self.p.poll() is None, f"prometheus exited {self.p.returncode}"
        return httpx.get(self.url + "/-/ready", timeout=5).status_code == 200

    def query(self, q: str, at: float | None = None) -> list:
        params = {"query": q, **({"time": f"{at:.3f}"} if at is not None else {})}
        body = httpx.get(self.url + "/api/v1/query", params=params, timeout=5).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        self.log.close()


def test_prometheus_rate_of_two_nodes_and_promtool_on_every_exposition(
        tmp_path, zk_server, zk_root, procs):
    zk = zk_server.connect_string
    master = Master(tmp_path, zk, zk_root)
    procs.append(master)
    nodes = {}
    for name in DELAYS:
        nodes[name] = Node(tmp_path, zk, zk_root, name)
        procs.append(nodes[name])
    for name, ms in DELAYS.items():
        r = master.command("config", name, "asciisynth(0, 20)", f"delay({ms}) {{ null }}")
        assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED", r.text
    for name in DELAYS:
        wait_until(lambda: master.logical(name).get("state") == "ACTIVE", 30, f"{name} ACTIVE")

    node_addrs = [f"127.0.0.1:{n.http_port}" for n in nodes.values()]
    prom = Prometheus(tmp_path, {"master": [f"127.0.0.1:{master.port}"], "nodes": node_addrs})
    try:
        wait_until(lambda: len([r for r in prom.query("up == 1")]) == 3, 30,
                   "Prometheus scraping the master and both nodes")
        # every exposition, as Prometheus scraped it, passes promtool's checks
        for url in [master.url + "/metrics"] + [f"http://{a}/metrics" for a in node_addrs]:
            text = httpx.get(url, timeout=5).content
            out = subprocess.run(["promtool", "check", "metrics"], input=text,
                                 capture_output=True, timeout=30)
            assert out.returncode == 0 and not out.stdout.strip() \
                and not out.stderr.strip(), (url, out)

        # the events per second each node counts itself over the window...
        start = {n: (time.time(), node.counters(n)["events_out"]) for n, node in nodes.items()}
        time.sleep(WINDOW)   # the window of the measurement itself, not a wait for a state
        end = {n: (time.time(), node.counters(n)["events_out"]) for n, node in nodes.items()}
        at = max(t for t, _ in end.values())
        wait_until(lambda: prom.query("up", at + 1.5), 10, "a scrape after the window")
        for name, ms in DELAYS.items():
            (t0, c0), (t1, c1) = start[name], end[name]
            truth = (c1 - c0) / (t1 - t0)
            assert 0.5 * 1000 / ms < truth <= 1.05 * 1000 / ms, (name, truth)
            # ...is what rate() over what Prometheus scraped says, within 15%
            [res] = prom.query(f'rate(flume_logical_events_out_total{{logical="{name}"}}'
                               f'[{WINDOW}s])', at)
            rate = float(res["value"][1])
            assert abs(rate - truth) <= 0.15 * truth, (name, rate, truth)
        # the master's metrics are in Prometheus too
        [lost] = prom.query('flume_master_logical_nodes{state="ACTIVE"}')
        assert float(lost["value"][1]) == 2
        [session] = prom.query('flume_master_zookeeper_session_state{state="CONNECTED"}')
        assert float(session["value"][1]) == 1
    finally:
        prom.stop()
