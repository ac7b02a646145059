#!/usr/bin/env python3
"""Web console render time with 1,000 logical nodes (issue 5: under 1 s on this machine).

Starts a master (with its own managed ZooKeeper), configures N logical nodes with one
``multiconfig``, then loads the console in headless Chromium (Debian's, through
Playwright) several times and prints, per load, the time from navigation start to the
first full render of the node table (fetching /api/status, parsing, building every row,
layout) and the time of the table build and layout alone; then the median.

    .venv/bin/python bench/console_render.py [N] [LOADS]
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import check_succeeded, multiconfig_spec, running_master  # noqa: E402

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


if __name__ == "__main__":
    main()
