"""Latency is bounded whatever the rate (docs/reliability.md, "Latency"): an event a node
took is readable at a file sink's output soon after, not when a buffer fills, a whole batch
has been delayed, or the node closes. Real node processes; each test fails on code that
holds events back (it waits far longer than the bound, so a slow machine does not fail
it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flume_og.node.client import FlumeClient
from tests.conftest import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def start_node(tmp_path: Path, spec: str) -> subprocess.Popen:
    env = dict(os.environ, FLUME_DATA_DIR=str(tmp_path / "data"))
    return subprocess.Popen([sys.executable, "-m", "flume_og.node.cli", "--log-level",
                             "WARNING", "node", "--one-shot", "-n", "lat", "-c", spec],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)


def test_an_event_a_collector_took_is_readable_in_its_text_file_at_once(tmp_path):
    """Before: the text sink flushed only at a checkpoint, which a collectorSource never
    gives, so a few events stayed in the process's buffer until it filled or closed."""
    port, out = free_port(), tmp_path / "out.txt"
    node = start_node(tmp_path, f'lat: collectorSource({port}, bind="127.0.0.1") '
                                f'| text("{out}")')
    try:
        client = wait_until(lambda: FlumeClient("127.0.0.1", port, timeout=2), 30,
                            "the collector listening", ignore=(OSError,))
        wait_until(lambda: client.send_body("hello") or True, 30, "a send taken",
                   ignore=(Exception,))
        client.close()
        # the node keeps running: only the flush on append can make the line readable
        wait_until(lambda: out.is_file() and out.read_bytes() == b"hello\n", 10,
                   "the line in the file while the node runs")
    finally:
        stop(node)


def test_a_slow_decorator_passes_a_large_batch_on_in_pieces(tmp_path):
    """asciisynth(0) makes 5,000-event batches at once; delay(5) holds each event 5 ms.
    Before: nothing was written until the whole batch had waited 25 s."""
    out = tmp_path / "out.txt"
    node = start_node(tmp_path, f'lat: asciisynth(0) | {{ delay(5) => text("{out}") }}')
    try:
        wait_until(lambda: out.is_file() and out.stat().st_size > 0, 12,
                   "the first lines while the first batch is still delayed")
    finally:
        stop(node)


def test_a_partial_batch_goes_on_within_its_default_latency(tmp_path):
    """batch(n) without maxLatencyMs: before, a partial batch waited for more events
    forever; now at most 1 s (the default)."""
    port, out = free_port(), tmp_path / "out.txt"
    node = start_node(tmp_path, f'lat: collectorSource({port}, bind="127.0.0.1") '
                                f'| {{ batch(1000) => unbatch => text("{out}") }}')
    try:
        client = wait_until(lambda: FlumeClient("127.0.0.1", port, timeout=2), 30,
                            "the collector listening", ignore=(OSError,))
        wait_until(lambda: client.send_body("one") or True, 30, "a send taken",
                   ignore=(Exception,))
        client.close()
        wait_until(lambda: out.is_file() and out.read_bytes() == b"one\n", 10,
                   "the partial batch in the file")
    finally:
        stop(node)
