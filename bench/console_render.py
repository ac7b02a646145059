#!/usr/bin/env python3
"""Web console render time with 1,000 logical nodes (under 1 s on this machine): the node
table, then the Topology tab of one flow of 1,000 logical nodes (990 auto-chain agents,
10 running collectors), which groups the agents by host and collector.

Starts a master (with its own managed ZooKeeper), configures N logical nodes with one
``multiconfig``, then loads the console in headless Chromium (Debian's, through
Playwright) several times and prints, per load, the time from navigation start to the
first full render of the node table (fetching /api/status, parsing, building every row,
layout) and the time of the table build and layout alone; then the median.

For the topology, a second master runs N - 10 agents and 10 collectors in flow ``big``,
the collectors on one real node process (so that their chains are computed); each load
opens ``/#topology`` and prints the time from navigation start until the graph first
rendered with every agent grouped, and the graph build + layout alone.

    .venv/bin/python bench/console_render.py [N] [LOADS]
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (check_succeeded, free_port, multiconfig_spec,  # noqa: E402
                           running_master, start, stop)

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    loads = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    from playwright.sync_api import sync_playwright
    with running_master() as (_, _, url, _):
        spec = multiconfig_spec(n)
        r = httpx.post(url + "/api/commands", json={"command": "multiconfig", "args": [spec]},
                       timeout=120)
        check_succeeded(r, "multiconfig")
        size = len(httpx.get(url + "/api/status", timeout=30).content)
        print(f"{n} logical nodes configured; /api/status is {size / 1024:.0f} KiB")
        firsts, builds = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for i in range(loads):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.goto(url + "/#nodes")
                page.wait_for_function("window.__flume && window.__flume.firstRenderMs !== null",
                                       timeout=30_000)
                info = page.evaluate("window.__flume")
                rows = page.locator("#logical-rows .r[data-name]").count()
                if rows != n or info["firstRenderRows"] != n:
                    raise SystemExit(f"rendered {rows} rows, expected {n}")
                firsts.append(info["firstRenderMs"])
                builds.append(info["renderMs"])
                print(f"load {i + 1}: first full render {info['firstRenderMs']:.0f} ms after "
                      f"navigation start (table build + layout {info['renderMs']:.0f} ms)")
                context.close()
            browser.close()
        print(f"median over {loads} loads: first full render of {n} rows "
              f"{statistics.median(firsts):.0f} ms (target < 1000 ms); table build + layout "
              f"{statistics.median(builds):.0f} ms")
    topology(n, loads)


def topology(n: int, loads: int) -> None:
    from playwright.sync_api import sync_playwright
    collectors = 10
    with running_master() as (tmp, log, url, _):
        node = start(["node", "-n", "bench-coll", "--master", url, "--data-dir",
                      str(tmp / "node"), "--http-port", str(free_port())], log)
        try:
            spec = "// flow: big\n" + "".join(
                f"coll{i:02d} : autoCollectorSource | null ;\n" for i in range(collectors)) + "".join(
                f'agent{i:04d} : tail("/var/log/app{i}.log") | autoBEChain ;\n'
                for i in range(n - collectors))
            r = httpx.post(url + "/api/commands", json={"command": "multiconfig", "args": [spec]},
                           timeout=120)
            check_succeeded(r, "multiconfig")
            for i in range(collectors):
                r = httpx.post(url + "/api/commands", timeout=60, json={
                    "command": "map", "args": ["bench-coll", f"coll{i:02d}"]})
                check_succeeded(r, "map")
            deadline = time.monotonic() + 60
            while len(httpx.get(url + "/api/flows", timeout=30).json()["big"]["pool"]) < collectors:
                if time.monotonic() > deadline:
                    raise SystemExit("the collectors did not start")
                time.sleep(0.2)
            print(f"topology: flow big of {n} logical nodes ({n - collectors} agents, "
                  f"{collectors} running collectors)")
            firsts, builds = [], []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                for i in range(loads):
                    context = browser.new_context(viewport={"width": 1400, "height": 900})
                    page = context.new_page()
                    page.goto(url + "/#topology")
                    page.wait_for_function(
                        "document.querySelectorAll('#topo-graph .tnode').length > 0 && "
                        "window.__flume.topologyMs !== undefined", timeout=30_000)
                    first = page.evaluate("performance.now()")
                    boxes = page.locator("#topo-graph .tnode").count()
                    groups = page.locator("#topo-graph .tnode.group").count()
                    if groups == 0:
                        raise SystemExit("the agents were not grouped")
                    build = page.evaluate("window.__flume.topologyMs")
                    firsts.append(first)
                    builds.append(build)
                    print(f"load {i + 1}: topology shown {first:.0f} ms after navigation start "
                          f"({boxes} boxes, {groups} agent groups; graph build + layout "
                          f"{build:.0f} ms)")
                    context.close()
                browser.close()
            print(f"median over {loads} loads: topology of {n} logical nodes shown "
                  f"{statistics.median(firsts):.0f} ms after navigation start (target < 1000 "
                  f"ms); graph build + layout {statistics.median(builds):.0f} ms")
        finally:
            stop(node)


if __name__ == "__main__":
    main()
