"""The physical node against a real ZooKeeper: watches, reconciliation, resilience."""
from __future__ import annotations

import socket

import pytest

from flume_og.node.physical_node import PhysicalNode
from flume_og.node.sinks import collect
from flume_og.node.sources import memory
from flume_og.zk.store import ConfigStore, LogicalConfig
from tests.waiting import wait_until




def logical_status(node: PhysicalNode, store, name: str) -> dict:
    return store.get_status(node.name).get("logical", {}).get(name, {})


@pytest.fixture
def pnode(zk_server, zk_root, tmp_path, store):
    nodes = []

    def start(name="p1", **kw):
        n = PhysicalNode(name, zk_server.connect_string, zk_root, data_dir=tmp_path / name,
                         **kw)
        nodes.append(n.start())
        return n
    yield start
    for n in nodes:
        n.stop()


def test_registers_and_maps_itself(pnode, store):
    pnode("p1")
    assert "p1" in store.list_physical()
    assert store.get_mapping("p1") == ["p1"]


def test_a_map_made_as_soon_as_the_node_is_seen_adds_to_its_default_mapping(pnode, store,
                                                                           monkeypatch):
    """An operator (or script) mapping a logical node onto a physical node the moment it
    registers gets both: the default mapping exists before the registration does. The map
    is made right after the registration, in the node's own call, the narrowest gap."""
    register = ConfigStore.register_physical

    def register_then_map(self, physical, info):
        register(self, physical, info)
        store.map(physical, "extra")
    monkeypatch.setattr(ConfigStore, "register_physical", register_then_map)
    pnode("p1")
    assert sorted(store.get_mapping("p1")) == ["extra", "p1"]


def test_registers_the_advertised_address_as_its_host(pnode, store):
    """The masters write a node's registered host into the chains pointing at its
    collectors: it must be an address the agents' hosts reach, not the host name (which
    resolves to 127.0.0.1 on many machines)."""
    pnode("p1", advertise="10.213.0.31")
    pnode("p2")
    physical = store.list_physical()
    assert physical["p1"]["host"] == "10.213.0.31"
    assert physical["p2"]["host"] == socket.gethostname()


def test_config_push_restarts_only_changed_nodes(pnode, store):
    collect.reset("pn-a")
    collect.reset("pn-b")
    node = pnode("p1")
    store.map("p1", "other")
    store.put_logical(LogicalConfig("p1", 'memory("pn-a")', 'collect("pn-a")'))
    store.put_logical(LogicalConfig("other", 'memory("pn-b")', 'collect("pn-b")'))
    wait_until(lambda: logical_status(node, store, "p1").get("state") == "ACTIVE", what="p1")
    wait_until(lambda: logical_status(node, store, "other").get("state") == "ACTIVE")
    other_flow = node.logical["other"]._flow
    v = store.put_logical(LogicalConfig("p1", 'memory("pn-a")',
                                        '{ value("k", "v") => collect("pn-a") }'))
    wait_until(lambda: logical_status(node, store, "p1").get("version") == v)
    assert node.logical["other"]._flow is other_flow  # untouched
    memory.push("pn-a", [b"x"])
    got = wait_until(lambda: collect.collected("pn-a"))
    assert got[0].attrs["k"] == b"v"


def test_unmap_stops_logical_node(pnode, store):
    node = pnode("p1")
    store.map("p1", "gone")
    store.put_logical(LogicalConfig("gone", 'memory("pn-gone")', "null"))
    wait_until(lambda: logical_status(node, store, "gone").get("state") == "ACTIVE")
    ln = node.logical["gone"]
    store.unmap("p1", "gone")
    wait_until(lambda: "gone" not in store.get_status("p1").get("logical", {}))
    assert ln.state.value == "IDLE"


def test_bad_spec_keeps_last_good_flow(pnode, store):
    collect.reset("pn-good")
    node = pnode("p1")
    store.put_logical(LogicalConfig("p1", 'memory("pn-good")', 'collect("pn-good")'))
    wait_until(lambda: logical_status(node, store, "p1").get("state") == "ACTIVE")
    store.put_logical(LogicalConfig("p1", 'memory("pn-good")', 'nosuchsink(1)'))
    st = wait_until(lambda: (s := logical_status(node, store, "p1")).get("state") == "ERROR"
                    and s)
    assert "nosuchsink" in st["last_error"]
    memory.push("pn-good", [b"still running"])
    wait_until(lambda: collect.collected("pn-good"), what="old flow still running")


def test_spec_that_fails_to_open_is_error(pnode, store):
    node = pnode("p1")
    store.put_logical(LogicalConfig("p1", 'text("/nonexistent/in.log")', "null"))
    st = wait_until(lambda: (s := logical_status(node, store, "p1")).get("state") == "ERROR"
                    and s)
    assert "/nonexistent/in.log" in st["last_error"]


def test_zookeeper_restart_under_running_node(tmp_path):
    """The node keeps its flows while ZooKeeper is away and resynchronises afterwards."""
    from tests.conftest import free_port
    from flume_og.zk.client import connect
    from flume_og.zk.server import ManagedZooKeeper
    from flume_og.zk.store import ConfigStore
    port = free_port()
    zk = ManagedZooKeeper(tmp_path / "zk", port=port).start()
    node = None
    client = connect(zk.connect_string)
    try:
        store = ConfigStore(client, "/r")
        store.ensure_layout()
        collect.reset("zkr")
        node = PhysicalNode("p1", zk.connect_string, "/r", data_dir=tmp_path / "n").start()
        store.put_logical(LogicalConfig("p1", 'memory("zkr")', 'collect("zkr")'))
        wait_until(lambda: store.get_status("p1").get("logical", {}).get("p1", {})
                   .get("state") == "ACTIVE")
        zk.stop()
        memory.push("zkr", [b"while zk is down"])
        wait_until(lambda: collect.collected("zkr"), what="flow runs without ZooKeeper")
        zk = ManagedZooKeeper(tmp_path / "zk", port=port).start()
        # the test's own client reconnects with backoff: write once it is back (the
        # product's writes answer "unknown outcome" after 10 s, which is not under test)
        wait_until(lambda: client.connected, 60, "the test's client reconnected")
        v = store.put_logical(LogicalConfig("p1", 'memory("zkr")',
                                            '{ value("after", "1") => collect("zkr") }'))
        wait_until(lambda: store.get_status("p1").get("logical", {}).get("p1", {})
                   .get("version") == v, timeout=30, what="new spec after restart")
        wait_until(lambda: "p1" in store.list_physical(), what="registered again")
    finally:
        if node:
            node.stop()
        client.stop()
        zk.stop()


def _error_status(node, store, name):
    return wait_until(lambda: (s := logical_status(node, store, name)).get("state") == "ERROR"
                      and s, what=f"{name} in ERROR")


def test_spec_nesting_too_deeply_written_straight_to_zookeeper_is_error(pnode, store):
    node = pnode("p1")
    chained = "{ " + "batch(1) => " * 1000 + "null }"
    store.put_logical(LogicalConfig("p1", "null", chained))   # no master checked it
    st = _error_status(node, store, "p1")
    assert "nests too deeply" in st["last_error"] and "version 0" in st["last_error"]


def test_unexpected_failure_while_building_is_error_with_the_reason(pnode, store,
                                                                    monkeypatch):
    import flume_og.node.logical_node as logical_node
    real = logical_node.build_sink

    def build_sink(tree):
        if getattr(tree, "name", None) == "console":
            raise RuntimeError("no console here")
        return real(tree)
    monkeypatch.setattr(logical_node, "build_sink", build_sink)
    node = pnode("p1")
    store.put_logical(LogicalConfig("p1", "null", "console"))
    st = _error_status(node, store, "p1")
    assert st["last_error"] == ("spec version 0 could not be configured: "
                                "RuntimeError: no console here")
    store.put_logical(LogicalConfig("p1", "null", "null"))   # the next good spec runs
    wait_until(lambda: logical_status(node, store, "p1").get("state") == "ACTIVE")
    assert logical_status(node, store, "p1").get("last_error") is None


def test_data_directory_that_cannot_be_made_is_error(pnode, store, tmp_path):
    (tmp_path / "p1" / "logical").mkdir(parents=True)
    (tmp_path / "p1" / "logical" / "p1").write_text("a file where a directory goes")
    node = pnode("p1")
    store.put_logical(LogicalConfig("p1", "null", "null"))
    st = _error_status(node, store, "p1")
    assert "cannot prepare the data directory" in st["last_error"]


# The master-only components are those marked on their class (node/sinks/logical.py,
# node/sources/logical.py); a node holds a config using one until its translation comes.

@pytest.mark.parametrize("source, sink, waits", [
    ("logicalSource", "null", True),
    ('memory("x")', "autoBEChain", True),
    ('memory("x")', '{ batch(10) => < autoDFOChain ? console > }', True),
    ('memory("x")', 'logicalSink("n2")', True),
    # a master-only name inside an argument (a path, a host) is not the component
    ('memory("logicalSink-feed")', 'collect("autoE2EChain")', False),
    ('text("/var/log/autoCollectorSource.log")', 'rpcSink("autoBEChain.example")', False),
    # nor a let reference that happens to be spelt like one
    ('memory("x")', "let autoBEChain := console in autoBEChain", False),
])
def test_waits_for_translation_reads_the_components_marks(source, sink, waits):
    from flume_og.node.physical_node import waits_for_translation
    assert waits_for_translation(source, sink) is waits


def test_master_only_names_come_from_the_class_mark():
    from flume_og.node.components import master_only
    assert set(master_only("source")) == {"logicalSource", "autoCollectorSource"}
    assert set(master_only("sink")) == {"logicalSink", "autoE2EChain", "autoDFOChain",
                                        "autoBEChain"}
    assert all(cls.master_only and cls.translation for cls in master_only("sink").values())


def test_config_naming_a_master_only_component_only_in_an_argument_runs(pnode, store):
    """A path spelt like a master-only component is not one: the flow runs (it used to be
    held forever as 'waiting for its translation')."""
    collect.reset("autoE2EChain-feed")
    node = pnode("p1")
    store.put_logical(LogicalConfig("p1", 'memory("logicalSink-feed")',
                                    'collect("autoE2EChain-feed")'))
    wait_until(lambda: logical_status(node, store, "p1").get("state") == "ACTIVE",
               what="the flow runs")
    memory.push("logicalSink-feed", [b"x"])
    wait_until(lambda: collect.collected("autoE2EChain-feed"), what="events flow")


def test_untranslated_master_only_config_waits(pnode, store):
    node = pnode("p1")
    store.put_logical(LogicalConfig("p1", 'memory("untranslated")', "autoBEChain"))
    st = wait_until(lambda: (s := logical_status(node, store, "p1")).get("last_error")
                    and s, what="the config held")
    assert "waiting for its translation" in st["last_error"]
    assert st.get("state") != "ACTIVE"


@pytest.mark.parametrize("data", [b'{"source": 5, "sink": "null"}',
                                  b'{"source": "null", "sink": ["console"]}'])
def test_a_config_of_the_wrong_types_written_straight_to_zookeeper_is_error(pnode, store,
                                                                            data):
    """Any failure to configure, not only the known kinds, shows the node in ERROR with
    the reason in the status the masters read (it used to leave no trace but a log line)."""
    node = pnode("p1")
    store.zk.create(store.logical_path("p1"), data, makepath=True)  # no master checked it
    st = _error_status(node, store, "p1")
    assert st["last_error"].startswith("spec version 0 "), st["last_error"]
    store.put_logical(LogicalConfig("p1", "null", "null"))   # the next good spec runs
    wait_until(lambda: logical_status(node, store, "p1").get("state") == "ACTIVE")
    assert logical_status(node, store, "p1").get("last_error") is None


def test_a_flow_that_cannot_open_is_opened_again_with_backoff(pnode, store, tmp_path):
    """Before: ERROR was final until a refresh. Now the node opens it again after 1 s,
    2 s, 4 s...; the status shows when, and the flow runs once its sink can open."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the sink wants a directory")
    out = blocker / "out.txt"
    node = pnode("p1")
    memory.push("pn-retry", [b"kept"])
    store.put_logical(LogicalConfig("p1", 'memory("pn-retry")', f'text("{out}")'))
    st = wait_until(lambda: (s := logical_status(node, store, "p1")).get("retry_at") and s,
                    what="a retry scheduled")
    assert st["state"] == "ERROR" and st["retries"] >= 1
    assert "out.txt" in st["last_error"]
    blocker.unlink()                       # the disk is fixed: no refresh needed
    wait_until(lambda: logical_status(node, store, "p1").get("state") == "ACTIVE", 20,
               "the flow opened again")
    wait_until(lambda: out.is_file() and out.read_bytes() == b"kept\n", what="the event")
    assert "retry_at" not in logical_status(node, store, "p1")


def test_a_spec_that_cannot_be_built_is_not_retried(pnode, store):
    node = pnode("p1")
    store.put_logical(LogicalConfig("p1", 'memory("pn-bad")', "nosuchsink"))
    wait_until(lambda: logical_status(node, store, "p1").get("state") == "ERROR")
    since = store.get_status("p1")["updated"]
    # the status is written every 2 s: by then the reconciler scanned for retries 4 times
    wait_until(lambda: store.get_status("p1")["updated"] >= since + 2000, 20,
               "a later status")
    assert "retry_at" not in logical_status(node, store, "p1")
    assert "p1" not in node.retries and node.logical["p1"].state.value == "ERROR"
