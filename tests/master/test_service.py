"""The master's command service on a real ZooKeeper: every command, its failures and its
record in the history, the listings and the watch-driven view."""
from __future__ import annotations

import time

import pytest

from flume_og.master.errors import CommandError, NotFound
from flume_og.master.service import MasterService
from flume_og.master.validation import name_problem, render_spec_error
from flume_og.node.errors import SpecError, SpecErrors
from flume_og.zk.client import ZkError
from flume_og.zk.store import LogicalConfig
from tests.waiting import wait_until as wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service(store, tmp_path):
    svc = MasterService(store, tmp_path / "master-data", name="test-master")
    yield svc
    svc.close()




def row(service, name):
    return next((r for r in service.status()["logical"] if r["name"] == name), None)


# ---------------------------------------------------------------- config

def test_config_stores_the_entered_spec_and_records_the_command(service, store):
    cmd = service.execute("config", ["n1", 'asciisynth(10)', '{ batch(5) => null }'],
                          by="tester")
    assert cmd.state == "SUCCEEDED", cmd.message
    assert cmd.command == "config" and cmd.by == "tester" and cmd.finished
    cfg = store.get_logical("n1")
    assert (cfg.source, cfg.sink, cfg.flow) == ('asciisynth(10)', '{ batch(5) => null }',
                                                "default-flow")
    assert f"version {cfg.version}" in cmd.message
    recorded = store.get_command(cmd.id)
    assert recorded.state == "SUCCEEDED" and recorded.args == cmd.args
    # the service reads its own write at once
    assert service.config("n1")["version"] == cfg.version


def test_config_with_a_flow_and_flow_kept_when_omitted(service, store):
    service.execute("config", ["n1", "flowA", "asciisynth(1)", "null"])
    assert store.get_logical("n1").flow == "flowA"
    service.execute("config", ["n1", "asciisynth(2)", "null"])
    cfg = store.get_logical("n1")
    assert cfg.flow == "flowA" and cfg.source == "asciisynth(2)"


def test_config_with_the_same_spec_writes_nothing(service, store):
    first = service.execute("config", ["n1", "asciisynth(1)", "null"])
    v = store.get_logical("n1").version
    again = service.execute("config", ["n1", "asciisynth(1)", "null"])
    assert again.state == "SUCCEEDED" and "unchanged" in again.message
    assert store.get_logical("n1").version == v
    assert first.id != again.id


def test_command_names_are_case_insensitive_and_accept_og_spellings(service, store):
    assert service.execute("CONFIG", ["n1", "asciisynth(1)", "null"]).command == "config"
    assert service.execute("unmap-all", []).command == "unmapAll"
    assert service.execute("setchokelimit", ["p1", "c", "10"]).command == "setChokeLimit"
    assert service.execute("spawn", ["p1", "n1"]).command == "map"


def test_bad_spec_is_refused_with_every_position_and_recorded_failed(service, store):
    with pytest.raises(SpecErrors) as info:
        service.execute("config", ["n1", 'nosuchsource("x")', '{ batch(5) => nosuchsink }'])
    errors = info.value.errors
    assert [(e.part, e.line, e.column) for e in errors] == [("source", 1, 1),
                                                            ("sink", 1, 15)]
    text = render_spec_error(info.value)
    assert "unknown source 'nosuchsource'" in text and "unknown sink 'nosuchsink'" in text
    assert "in the sink:" in text and text.endswith("\n" + " " * 16 + "^")
    assert store.get_logical("n1") is None
    last = service.commands(1)[0]
    assert last["state"] == "FAILED" and "unknown sink 'nosuchsink'" in last["message"]


def test_syntax_error_carries_line_and_column(service):
    with pytest.raises(SpecError) as info:
        service.execute("config", ["n1", "asciisynth(1", "null"])
    assert info.value.line == 1 and info.value.column >= 12


def test_wrong_argument_count_raises_usage(service):
    with pytest.raises(CommandError, match="usage: config NODE"):
        service.execute("config", ["n1", "null"])
    assert service.commands(1)[0]["state"] == "FAILED"
    with pytest.raises(CommandError, match="usage: map PHYSICAL LOGICAL"):
        service.execute("map", ["p1"])
    with pytest.raises(CommandError, match="unknown command 'frobnicate'"):
        service.execute("frobnicate", [])
    with pytest.raises(CommandError, match="bad logical node name"):
        service.execute("config", ["a/b", "null", "null"])
    with pytest.raises(CommandError, match="bad flow name"):
        service.execute("config", ["n", "bad flow", "null", "null"])


def test_name_rules():
    assert name_problem("node-1.example.com") is None
    for bad in ("", ".", "..", "a/b", "a b", "a\x00", "\ud800", "x" * 201):
        assert name_problem(bad), bad


def test_config_stores_translation_in_the_same_write(service, store):
    store.register_physical("phys1", {"host": "host1"})
    service.execute("map", ["phys1", "coll"])
    service.execute("config", ["coll", "autoCollectorSource", "null"])
    cfg = store.get_logical("coll")
    assert cfg.version == 0, "translated in the write itself, not by a second write"
    assert cfg.tsource and cfg.tsource.startswith("collectorSource(")
    service.execute("config", ["agent", "asciisynth(1)", "autoE2EChain"])
    agent = store.get_logical("agent")
    port = cfg.tsource.split("(")[1].rstrip(")")
    assert agent.tsink == f'agentE2EChain("host1:{port}")'
    flows = service.flows()
    assert flows["default-flow"]["chains"] == {"agent": ["coll"]}
    assert flows["default-flow"]["collectors"] == ["coll"]


# ---------------------------------------------------------------- multiconfig

SPEC = """
a : asciisynth(1) | null ;
// flow: f2
b : asciisynth(2) | { batch(2) => null } ;
"c:d" : asciisynth(3) | [ null, null ]
"""


def test_multiconfig_stores_every_node_with_flows_from_comments(service, store):
    cmd = service.execute("multiconfig", [SPEC])
    assert cmd.state == "SUCCEEDED" and "configured 3" in cmd.message
    got = {n: (c.source, c.sink, c.flow) for n, c in store.list_logical().items()}
    assert got == {"a": ("asciisynth(1)", "null", "default-flow"),
                   "b": ("asciisynth(2)", "{ batch(2) => null }", "f2"),
                   "c:d": ("asciisynth(3)", "[ null, null ]", "f2")}
    again = service.execute("multiconfig", [SPEC])
    assert "configured 0" in again.message and "3 unchanged" in again.message


def test_multiconfig_reports_every_error_and_stores_nothing(service, store):
    spec = ('a : nosource | null ;\n'
            'b : asciisynth(1) | null ;\n'
            'b : asciisynth(1) | batch(x=1) nosink ;\n')
    with pytest.raises(SpecErrors) as info:
        service.execute("multiconfig", [spec])
    found = [(e.line, e.column, e.message) for e in info.value.errors]
    assert (1, 5, "unknown source 'nosource'") in found
    assert any(line == 3 and "defined twice" in msg for line, _, msg in found)
    assert any(line == 3 and "nosink" in msg for line, _, msg in found)
    assert store.list_logical() == {}
    assert service.commands(1)[0]["state"] == "FAILED"


def test_multiconfig_of_a_syntax_error(service):
    with pytest.raises(SpecError) as info:
        service.execute("multiconfig", ["a : null | null ;\nb : null null ;"])
    assert info.value.line == 2


# ---------------------------------------------------------------- unconfig, decommission

def test_unconfig(service, store):
    service.execute("config", ["n1", "null", "null"])
    cmd = service.execute("unconfig", ["n1"])
    assert cmd.state == "SUCCEEDED"
    assert store.get_logical("n1") is None
    assert service.configs() == []
    missing = service.execute("unconfig", ["n1"])
    assert missing.state == "FAILED" and "has no configuration" in missing.message
    with pytest.raises(NotFound):
        service.execute("unconfig", ["n1"], raise_failed=True)


def test_decommission_removes_config_and_every_mapping(service, store):
    service.execute("config", ["n1", "null", "null"])
    service.execute("map", ["p1", "n1"])
    store.map("p2", "n1")  # a stray second mapping (e.g. written by hand)
    cmd = service.execute("decommission", ["n1"])
    assert cmd.state == "SUCCEEDED" and "p1" in cmd.message and "p2" in cmd.message
    assert store.get_logical("n1") is None
    assert store.get_mapping("p1") == [] and store.get_mapping("p2") == []
    assert service.execute("decommission", ["n1"]).state == "FAILED"


# ---------------------------------------------------------------- mappings

def test_map_unmap_unmapall(service, store):
    assert service.execute("map", ["p1", "a"]).state == "SUCCEEDED"
    service.execute("map", ["p1", "b"])
    service.execute("map", ["p2", "c"])
    assert service.mappings() == {"p1": ["a", "b"], "p2": ["c"]}
    again = service.execute("map", ["p1", "a"])
    assert again.state == "SUCCEEDED" and "already mapped" in again.message
    taken = service.execute("map", ["p2", "a"])
    assert taken.state == "FAILED" and "already mapped to p1" in taken.message
    assert service.execute("unmap", ["p1", "a"]).state == "SUCCEEDED"
    assert store.get_mapping("p1") == ["b"]
    not_mapped = service.execute("unmap", ["p1", "a"])
    assert not_mapped.state == "FAILED" and "not mapped" in not_mapped.message
    cmd = service.execute("unmapAll", [])
    assert cmd.state == "SUCCEEDED" and "unmapped 2" in cmd.message
    assert service.mappings() == {"p1": [], "p2": []}


# ---------------------------------------------------------------- refresh

def test_refresh_bumps_the_counter(service, store):
    service.execute("config", ["a", "null", "null"])
    service.execute("config", ["b", "null", "null"])
    assert service.execute("refresh", ["a"]).state == "SUCCEEDED"
    assert store.get_logical("a").refresh == 1
    assert service.execute("refreshAll", []).state == "SUCCEEDED"
    assert (store.get_logical("a").refresh, store.get_logical("b").refresh) == (2, 1)
    assert service.execute("refresh", ["zz"]).state == "FAILED"
    # a new spec keeps the counter (nodes restart on the spec change anyway)
    service.execute("config", ["a", "asciisynth(1)", "null"])
    assert store.get_logical("a").refresh == 2


# ---------------------------------------------------------------- purge

def test_purge_forgets_dead_physical_nodes_only(service, store):
    store.register_physical("alive", {"host": "h"})
    store.map("alive", "x")
    store.map("dead1", "y")
    store.put_status("dead2", {"logical": {}, "updated": 1})
    refused = service.execute("purge", ["alive"])
    assert refused.state == "FAILED" and "is alive" in refused.message
    assert service.execute("purge", ["nobody"]).state == "FAILED"
    assert service.execute("purge", ["dead1"]).state == "SUCCEEDED"
    assert "dead1" not in store.list_mappings()
    cmd = service.execute("purgeAll", [])
    assert cmd.state == "SUCCEEDED" and "dead2" in cmd.message
    assert set(store.list_mappings()) == {"alive"} and store.list_status() == {}


# ---------------------------------------------------------------- save / load

def test_save_and_load_round_trip_with_flows(service, store, tmp_path):
    service.execute("multiconfig", [SPEC])
    cmd = service.execute("save", ["backup/all.flume"])
    assert cmd.state == "SUCCEEDED" and "saved 3" in cmd.message
    saved = (tmp_path / "master-data" / "backup" / "all.flume").read_text()
    assert "// flow: f2" in saved and '"c:d" : asciisynth(3) | [ null, null ] ;' in saved
    for name in ("a", "b", "c:d"):
        service.execute("unconfig", [name])
    assert service.execute("load", ["backup/all.flume"]).state == "SUCCEEDED"
    got = {n: (c.source, c.sink, c.flow) for n, c in store.list_logical().items()}
    assert got["b"] == ("asciisynth(2)", "{ batch(2) => null }", "f2")
    assert got["a"][2] == "default-flow" and len(got) == 3


def test_load_refuses_bad_files_and_paths(service, tmp_path):
    data = tmp_path / "master-data"
    data.mkdir()
    (data / "bad.flume").write_text("a : null | null ;\nb : asciisynth(1) | nosink ;\n")
    with pytest.raises(SpecErrors) as info:
        service.execute("load", ["bad.flume"])
    assert info.value.errors[0].line == 2
    assert "bad.flume: spec error at line 2" in render_spec_error(info.value)
    missing = service.execute("load", ["nothere.flume"])
    assert missing.state == "FAILED" and "no file" in missing.message
    for escape in ("../outside.flume", "/etc/passwd"):
        with pytest.raises(CommandError, match="data directory"):
            service.execute("load", [escape])
        with pytest.raises(CommandError, match="data directory"):
            service.execute("save", [escape])
    assert not (tmp_path / "outside.flume").exists()


# ---------------------------------------------------------------- choke, noop

def test_set_choke_limit(service, store):
    assert service.execute("setChokeLimit", ["p1", "ch1", "250"]).state == "SUCCEEDED"
    assert store.get_chokes("p1") == {"ch1": 250}
    with pytest.raises(CommandError, match="KBPS"):
        service.execute("setChokeLimit", ["p1", "ch1", "fast"])
    with pytest.raises(CommandError, match="KBPS"):
        service.execute("setChokeLimit", ["p1", "ch1", "-1"])


def test_noop(service):
    t = time.monotonic()
    cmd = service.execute("noop", ["50"])
    assert cmd.state == "SUCCEEDED" and time.monotonic() - t >= 0.05
    assert service.execute("noop", []).message == "noop"
    with pytest.raises(CommandError):
        service.execute("noop", ["soon"])
    with pytest.raises(CommandError):
        service.execute("noop", ["1", "2"])


# ---------------------------------------------------------------- history

def test_history_is_newest_first_and_bounded(service, store):
    service.runner.trim_every, service.runner.keep_commands = 5, 8
    ids = [service.execute("noop", []).id for _ in range(23)]
    listed = service.commands(100)
    assert len(listed) <= 8 + 5
    assert [c["id"] for c in listed[:3]] == ids[::-1][:3]
    assert all(c["state"] == "SUCCEEDED" for c in listed)
    assert service.command(ids[-1])["command"] == "noop"
    with pytest.raises(NotFound):
        service.command("999999")
    with pytest.raises(NotFound):
        service.command("abc")


def test_long_arguments_are_shortened_in_the_record(service):
    spec = "".join(f"n{i} : asciisynth({i}) | null ;\n" for i in range(300))
    cmd = service.execute("multiconfig", [spec])
    assert cmd.state == "SUCCEEDED"
    stored = service.command(cmd.id)["args"][0]
    assert len(stored) < len(spec) and stored.endswith(f"({len(spec)} characters)")
    drop_all(service.store, "logical")


# ---------------------------------------------------------------- status and the view

def test_status_states(service, store):
    service.execute("config", ["unmapped", "null", "null"])
    service.execute("config", ["lost", "null", "null"])
    service.execute("map", ["gone", "lost"])
    store.register_physical("live", {"host": "hostL", "pid": 7})
    service.execute("map", ["live", "hello"])
    service.execute("map", ["live", "active"])
    service.execute("config", ["active", "fl", "asciisynth(0)", "null"])
    store.put_status("live", {"host": "hostL", "updated": 1234, "logical": {
        "active": {"state": "ACTIVE", "version": 0, "last_error": None, "events_in": 5},
        "leaving": {"state": "CLOSING", "version": 3}}})
    store.put_status("gone", {"updated": 1, "logical": {"stale": {"state": "ACTIVE"}}})
    wait_for(lambda: row(service, "active")["state"] == "ACTIVE", what="status seen")
    assert row(service, "unmapped")["state"] == "UNMAPPED"
    assert row(service, "lost")["state"] == "LOST"
    assert row(service, "hello")["state"] == "HELLO"
    assert row(service, "leaving")["state"] == "DECOMMISSIONED"
    assert row(service, "stale") is None  # reported by a dead node: forgotten
    names = [r["name"] for r in service.status()["logical"]]
    assert names == sorted(names)
    active = row(service, "active")
    assert active == {**active, "physical": "live", "host": "hostL", "version": 0,
                      "config_version": 0, "flow": "fl", "source": "asciisynth(0)",
                      "sink": "null", "last_seen": 1234, "events_in": 5}
    phys = {p["name"]: p for p in service.status()["physical"]}
    assert phys["live"]["alive"] and phys["live"]["pid"] == 7
    assert phys["live"]["logical"] == ["hello", "active"]
    assert not phys["gone"]["alive"]


def test_view_follows_writes_of_other_masters(service, store):
    store.put_logical(LogicalConfig("elsewhere", "asciisynth(1)", "null"))
    wait_for(lambda: any(c["name"] == "elsewhere" for c in service.configs()),
             what="config written by another client")
    store.delete_logical("elsewhere")
    wait_for(lambda: service.configs() == [], what="deletion seen")


def test_validate_for_the_console(service):
    ok = service.validate(source='tail("/x")', sink="{ batch(10) => null }")
    assert ok["ok"] and ok["canonical"] == {"source": 'tail("/x")',
                                            "sink": "{ batch(10) => null }"}
    bad = service.validate(source="nosource", sink="null")
    assert not bad["ok"] and bad["errors"] == [
        {"message": "unknown source 'nosource'", "line": 1, "column": 1, "part": "source"}]
    assert "^" in bad["message"]
    spec = service.validate(spec="a : null | batch(2) null")
    assert spec["ok"] and spec["canonical"]["spec"] == "a : null | { batch(2) => null } ;\n"
    bad_spec = service.validate(spec="a : null |")
    assert not bad_spec["ok"] and bad_spec["errors"][0]["line"] == 1


def drop_all(store, *parts):
    """Delete every znode under ``parts`` in big transactions (teardown deletes one by
    one, which takes seconds for thousands)."""
    for part in parts:
        names = store.zk.get_children(store.path(part))
        for i in range(0, len(names), 500):
            tx = store.zk.transaction()
            for n in names[i:i + 500]:
                tx.delete(store.path(part, n))
            tx.commit()


def test_status_with_1000_nodes_is_built_once_per_change(service, store):
    """The listing of 1,000 nodes is rebuilt only when the view changed, whatever the number
    of reads (its latency is measured by bench/master_scale.py, not here)."""
    spec = "".join(f"n{i:04d} : asciisynth(0) | null ;\n" for i in range(1000))
    service.execute("multiconfig", [spec])
    for p in range(10):
        store.register_physical(f"p{p}", {"host": f"h{p}"})
        store.update_mapping(f"p{p}", lambda m, p=p: [f"n{i:04d}" for i in range(p, 1000, 10)])
        store.put_status(f"p{p}", {"updated": 1, "logical": {
            f"n{i:04d}": {"state": "ACTIVE", "version": 0} for i in range(p, 1000, 10)}})
    wait_for(lambda: len(service.status()["logical"]) == 1000
             and all(r["state"] == "ACTIVE" for r in service.status()["logical"]),
             what="1000 active rows")
    builds = []
    build = service.listings._build_status
    service.listings._build_status = lambda *a: builds.append(1) or build(*a)
    for i in range(200):
        if i % 20 == 0:  # a node reports: the next call rebuilds the listing
            store.put_status("p0", {"updated": i, "logical": {}})
            wait_for(lambda i=i: service.view.snapshot().status["p0"].get("updated") == i)
        body = service.status_json()
        assert body.startswith(b'{"logical":[')
    drop_all(store, "logical", "status", "mappings", "commands")
    # one build per report (a watch may deliver a change in two steps: at most two)
    assert 10 <= len(builds) <= 20, len(builds)


def test_zookeeper_unreachable_raises_zkerror(zk_server, zk_root, tmp_path):
    from flume_og.zk.client import connect
    from flume_og.zk.store import ConfigStore
    own = connect(zk_server.connect_string)
    store = ConfigStore(own, zk_root)
    store.ensure_layout()
    svc = MasterService(store, tmp_path / "m")
    try:
        assert svc.execute("noop", []).state == "SUCCEEDED"
        own.stop()  # this master lost ZooKeeper: listings answer at once, never hang
        t = time.monotonic()
        with pytest.raises(ZkError):
            svc.status()
        with pytest.raises(ZkError):
            svc.commands()
        assert time.monotonic() - t < 1
        # a command waits for a reconnection (a leader election), within its bound
        svc.reconnect_seconds = 0.5
        t = time.monotonic()
        with pytest.raises(ZkError):
            svc.execute("config", ["n", "null", "null"])
        assert 0.45 <= time.monotonic() - t < 2
    finally:
        svc.close()
        own.start()
        store.remove_tree()
        own.stop()
        own.close()


def test_view_reads_everything_again_after_zookeeper_restarts(tmp_path):
    """kazoo drops every watch with the connection: the view must set them again."""
    from tests.conftest import free_port
    from flume_og.zk.client import connect
    from flume_og.zk.server import ManagedZooKeeper
    from flume_og.zk.store import ConfigStore
    server = ManagedZooKeeper(tmp_path / "zk", port=free_port()).start()
    mine, other = connect(server.connect_string), connect(server.connect_string)
    svc = None
    try:
        store, writer = ConfigStore(mine, "/r"), ConfigStore(other, "/r")
        store.ensure_layout()
        svc = MasterService(store, tmp_path / "m")
        svc.execute("config", ["before", "null", "null"])
        server.stop()
        wait_for(lambda: not mine.connected, what="disconnected")
        server.start()
        wait_for(lambda: mine.connected and other.connected and svc.view.ready,
                 timeout=30, what="reconnected")
        writer.put_logical(LogicalConfig("after", "asciisynth(1)", "null"))
        writer.map("p9", "after")
        wait_for(lambda: {c["name"] for c in svc.configs()} == {"before", "after"},
                 what="a config written after the restart")
        wait_for(lambda: svc.mappings() == {"p9": ["after"]}, what="a mapping")
        writer.delete_logical("before")
        wait_for(lambda: [c["name"] for c in svc.configs()] == ["after"],
                 what="a deletion after the restart")
    finally:
        if svc is not None:
            svc.close()
        for c in (mine, other):
            c.stop()
            c.close()
        server.stop()


def test_zookeeper_failures_reach_callers_as_zkerror(store, tmp_path, monkeypatch):
    """zk/ translates kazoo's exceptions: the view's direct reads (while it is not
    ready) and the history raise ZkError, which the REST API answers with 503."""
    from kazoo.exceptions import ConnectionLoss
    svc = MasterService(store, tmp_path / "m", watch=False)   # never ready: reads ZK

    def lost(*args, **kw):
        raise ConnectionLoss()
    monkeypatch.setattr(store, "list_logical", lost)
    monkeypatch.setattr(store, "list_commands", lost)
    try:
        for call in (svc.status, svc.configs, svc.commands, svc.stored_specs):
            with pytest.raises(ZkError, match="ConnectionLoss"):
                call()
        with pytest.raises(ZkError, match="ConnectionLoss"):
            svc.execute("refreshAll", [])
    finally:
        monkeypatch.undo()
        svc.close()
    record = store.list_commands(1)[0]
    assert (record.command, record.state) == ("refreshAll", "FAILED")
    assert record.message == "ZooKeeper: ConnectionLoss"
