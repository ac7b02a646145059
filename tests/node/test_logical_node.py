"""The logical node driver: states, reconfiguration, exhaustion, errors."""
from __future__ import annotations

import logging

import pytest

from flume_og.node.errors import SpecError
from flume_og.node.logical_node import LogicalNode, State
from flume_og.node.sinks import collect
from flume_og.node.sources import memory
from flume_og.node.spec import parse_sink, parse_source
from tests.waiting import wait_until




def test_runs_until_source_exhausted(tmp_path):
    collect.reset("ln1")
    memory.push("ln1", [b"a", b"b", b"c"])
    memory.finish("ln1")
    node = LogicalNode("n", tmp_path)
    assert node.state is State.HELLO
    node.configure(parse_source('memory("ln1")'), parse_sink('collect("ln1")'), version=3)
    assert node.wait_done(10)
    assert [e.body for e in collect.collected("ln1")] == [b"a", b"b", b"c"]
    assert node.state is State.IDLE
    assert node.done
    st = node.status()
    assert st["version"] == 3 and st["events_in"] == 3 and st["bytes_in"] == 3
    assert st["source"] == 'memory("ln1")' and st["sink"] == 'collect("ln1")'


def test_reconfigure_closes_old_flow_and_starts_new(tmp_path):
    collect.reset("old")
    collect.reset("new")
    node = LogicalNode("n", tmp_path)
    node.configure(parse_source('memory("re")'), parse_sink('{ batch(100) => collect("old") }'))
    assert node.state is State.ACTIVE
    memory.push("re", [b"1", b"2"])
    assert wait_until(lambda: node.events_in == 2)
    # the batch decorator still holds the two events: replacing the spec must flush them
    assert collect.collected("old") == []
    node.configure(parse_source('memory("re")'), parse_sink('collect("new")'))
    assert len(collect.collected("old")) == 1  # one packed batch event, written on close
    memory.push("re", [b"3"])
    assert wait_until(lambda: [e.body for e in collect.collected("new")] == [b"3"])
    node.stop(10)
    assert node.state is State.IDLE


def test_bad_spec_keeps_running_flow(tmp_path):
    collect.reset("keep")
    node = LogicalNode("n", tmp_path)
    node.configure(parse_source('memory("keep")'), parse_sink('collect("keep")'), version=1)
    with pytest.raises(SpecError):
        node.configure(parse_source('memory("keep")'), parse_sink('nosuchsink'), version=2)
    assert node.state is State.ACTIVE and node.version == 1
    memory.push("keep", [b"x"])
    assert wait_until(lambda: len(collect.collected("keep")) == 1)
    node.stop(10)


def test_open_failure_is_error_with_message(tmp_path, caplog):
    """The node's own log says why too (before: only the master's status did)."""
    node = LogicalNode("n", tmp_path)
    with caplog.at_level(logging.ERROR, logger="flume_og.node.logical_node"):
        node.configure(parse_source('text("/nonexistent/dir/file.log")'), parse_sink("null"))
    assert node.state is State.ERROR
    assert "/nonexistent/dir/file.log" in node.last_error
    [rec] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert rec.getMessage().startswith("logical node n: CONFIGURING -> ERROR: ")
    assert "/nonexistent/dir/file.log" in rec.getMessage() and "\n" not in rec.getMessage()


def test_sink_failure_is_error(tmp_path):
    memory.push("failing", [b"x"])
    node = LogicalNode("n", tmp_path)
    node.configure(parse_source('memory("failing")'),
                   parse_sink('intervalFlakeyAppend(1) null'))
    assert node.wait_for({State.ERROR}, 10)
    assert node.last_error


def test_every_state_change_is_logged_with_the_names(tmp_path, caplog):
    memory.push("logged", [b"x"])
    node = LogicalNode("n", tmp_path, physical_name="host1")
    with caplog.at_level(logging.INFO, logger="flume_og.node.logical_node"):
        node.configure(parse_source('memory("logged")'), parse_sink('collect("logged")'))
        node.stop(10)
    changes = [(r.getMessage(), r.physical, r.logical) for r in caplog.records
               if "->" in r.getMessage()]
    assert [m for m, _, _ in changes] == ["logical node n: HELLO -> CONFIGURING",
                                          "logical node n: CONFIGURING -> ACTIVE",
                                          "logical node n: ACTIVE -> CLOSING",
                                          "logical node n: CLOSING -> IDLE"]
    assert {(p, lg) for _, p, lg in changes} == {("host1", "n")}
