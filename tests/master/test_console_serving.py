"""The master's side of the console and of node counters, on a real ZooKeeper: the
console's files at ``/`` next to the API, counters from status znodes in the status rows,
and ``flumectl status --metrics``."""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from flume_og.master import flumectl
from flume_og.master.api import create_app
from flume_og.master.service import MasterService
from tests.master.serving import serve
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service(store, tmp_path):
    svc = MasterService(store, tmp_path / "master-data", name="console-master")
    yield svc
    svc.close()


@pytest.fixture
def client(service):
    with TestClient(create_app(service, token="console-test-token-0123456789")) as c:
        yield c


def report(store, physical: str, logical: dict) -> None:
    store.put_status(physical, {"host": "h1", "updated": int(time.time() * 1000),
                                "logical": logical})


def wait_row(client, name, cond, timeout=10.0):
    """The status row of logical node ``name`` once ``cond(row)`` holds."""
    def row():
        rows = {r["name"]: r for r in client.get("/api/status").json()["logical"]}
        return rows[name] if name in rows and cond(rows[name]) else None
    return wait_until(row, timeout, f"the status row of {name}", interval=0.02)


def test_console_files_are_served_beside_the_api(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'src="static/js/main.js"' in r.text and "Flume" in r.text
    js = client.get("/static/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    for path in ("/static/console.css", "/static/js/api.js", "/static/js/views/nodes.js"):
        assert client.get(path).status_code == 200, path
    # the API keeps its own answers: JSON errors, reads open, writes guarded
    missing = client.get("/static/nope.js")
    assert missing.status_code == 404 and missing.json()["message"]
    assert client.get("/api/nothing-here").json() == {"message": "Not Found"}
    assert client.get("/api/status").status_code == 200
    assert client.post("/api/commands", json={"command": "noop"}).status_code == 401


def test_counters_reported_by_nodes_reach_status_rows_and_flumectl(client, store, capsys):
    store.register_physical("p1", {"host": "h1"})
    store.map("p1", "web")
    client.put("/api/configs/web", json={"source": "asciisynth(0)", "sink": "null"},
               headers={"Authorization": "Bearer console-test-token-0123456789"})
    counters = {"events_in": 1200, "bytes_in": 48000, "events_out": 1100,
                "bytes_out": 45000, "errors": 3, "wal_bytes": 4096, "acks_pending": 7}
    comps = {"source": {"name": "asciisynth", "kind": "source", "metrics": {}},
             "sink": {"name": "null", "kind": "sink", "metrics": {"events_in": 1100}}}
    report(store, "p1", {"web": {"state": "ACTIVE", "version": 0, "events_in": 1200,
                                 "bytes_in": 48000, "counters": counters,
                                 "components": comps}})
    row = wait_row(client, "web", lambda r: r["events_out"] == 1100)
    assert (row["events_in"], row["bytes_in"], row["bytes_out"], row["errors"]) == (
        1200, 48000, 45000, 3)
    assert row["counters"] == counters and row["components"] == comps
    # a node that reports only the old fields still shows them
    report(store, "p1", {"web": {"state": "ACTIVE", "version": 0, "events_in": 5,
                                 "bytes_in": 9}})
    row = wait_row(client, "web", lambda r: r["events_in"] == 5)
    assert row["bytes_in"] == 9 and row["counters"] is None and row["events_out"] is None

    report(store, "p1", {"web": {"state": "ACTIVE", "version": 0, "counters": counters}})
    wait_row(client, "web", lambda r: r["events_out"] == 1100)
    server, thread, url = serve(client.app)
    try:
        code = flumectl.main(["--master", url, "status", "--metrics"])
    finally:
        server.should_exit = True
        thread.join(10)
    out = capsys.readouterr().out
    assert code == 0, out
    header, line = out.splitlines()[0], next(x for x in out.splitlines() if x.startswith("web"))
    assert header.split()[:3] == ["LOGICAL", "NODE", "PHYSICAL"] and "EVENTS OUT" in header
    assert line.split()[:8] == ["web", "p1", "ACTIVE", "1200", "48000", "1100", "45000", "3"]
    assert "acks_pending=7" in line and "wal_bytes=4096" in line
