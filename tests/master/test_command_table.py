"""The one table of the master's commands: the service runs exactly its commands, flumectl
offers exactly them (with their aliases), and both take names the same way."""
from __future__ import annotations

import pytest

from flume_og.master import command_table, flumectl
from flume_og.master.command_table import COMMANDS, find
from flume_og.master.commands import CommandRunner
from tests.conftest import free_port


def test_names_match_in_any_case_with_dashes_and_aliases():
    assert find("unmapAll").name == find("UNMAP-ALL").name == find("unmap_all").name \
        == "unmapAll"
    assert find("spawn").name == "map"
    assert find("setchokelimit").usage == "setChokeLimit PHYSICAL CHOKE KBPS"
    assert find("nosuch") is None and find(3) is None


def test_argument_counts_come_from_the_usage():
    assert find("config").arity == (3, 4)
    assert find("noop").arity == (0, 1)
    assert find("refreshAll").arity == (0, 0)
    assert [c.name for c in COMMANDS if not c.writes] == ["noop"]


def test_every_command_has_one_handler_and_nothing_else_does():
    handlers = {n[len("_cmd_"):] for n in dir(CommandRunner) if n.startswith("_cmd_")}
    assert handlers == {c.name.lower() for c in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_flumectl_offers_every_command_under_every_name(command):
    parser = flumectl.build_parser()
    args = [a.strip("[]").lower() for a in command.args]
    names = [command.name, *flumectl.cli_aliases(command)]
    for name in names:
        ns = parser.parse_args([name, *args])
        assert ns.command == command.name and flumectl.command_args(ns) == args
        assert command_table.find(name) is command


def test_flumectl_refuses_a_wrong_argument_count_without_asking_the_master(capsys):
    dead = f"http://127.0.0.1:{free_port()}"   # nothing listens: asking would exit 1
    assert flumectl.main(["--master", dead, "noop", "1", "2"]) == 2
    assert "noop takes [MS] (0 or 1 arguments, 2 given)" in capsys.readouterr().err
