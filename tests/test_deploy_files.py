"""The shipped systemd units and example settings files work with the command line they
name: every key of the examples is a flag, every ExecStart parses."""
from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from flume_og.master.cli import build_parser
from flume_og.node.cli import parse_command_line

SYSTEMD = Path(__file__).resolve().parents[1] / "scripts" / "systemd"


@pytest.mark.parametrize("unit, command, settings", [
    ("flume-master.service", "master", "master.toml"),
    ("flume-node.service", "node", "node.toml"),
])
def test_a_unit_runs_its_command_with_the_example_settings(unit, command, settings):
    u = configparser.ConfigParser(interpolation=None)
    u.optionxform = str
    u.read(SYSTEMD / unit)
    service = u["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/flume") and argv[1] == command
    assert service["KillSignal"] == "SIGTERM" and service["User"] == "flume"
    assert service["Environment"] == "FLUME_DATA_DIR=/var/lib/flume"
    assert service["StateDirectory"] == "flume"
    # the unit's own arguments, with the settings file of the repository in place of /etc
    args = [a if not a.startswith("/etc/flume/") else str(SYSTEMD / settings)
            for a in argv[1:]]
    parsed = parse_command_line(build_parser(), args)
    assert parsed.command == command
    assert parsed.zk.count(":2181") == 3          # the ensemble, from the file
    assert parsed.data_dir.startswith("/var/lib/flume/")
