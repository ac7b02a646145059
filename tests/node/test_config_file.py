"""Settings files (--config-file): keys are long flags, flags override, mistakes refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flume_og.master.cli import build_parser as master_parser
from flume_og.node.cli import build_parser, parse_command_line

ROOT = Path(__file__).resolve().parents[2]


def settings(tmp_path, text: str) -> str:
    f = tmp_path / "flume.toml"
    f.write_text(text)
    return str(f)


def test_a_file_sets_what_the_flags_would_and_flags_override_it(tmp_path):
    f = settings(tmp_path, 'name = "web1"\nhttp-port = 0\nzk_root = "/a"\n'
                           'log-level = "WARNING"\nallow-exec = true\n')
    args = parse_command_line(build_parser(), ["node", "--config-file", f, "--zk-root", "/b"])
    assert (args.name, args.http_port, args.zk_root, args.log_level, args.allow_exec) == \
        ("web1", 0, "/b", "WARNING", True)


def test_a_master_file_takes_repeated_flags_as_lists(tmp_path):
    f = settings(tmp_path, 'allowed-host = ["a.example", "b.example"]\nzk-heap-mb = 512\n'
                           'header-timeout = 3\n')
    args = parse_command_line(master_parser(), ["master", "--config-file", f])
    assert args.allowed_host == ["a.example", "b.example"]
    assert args.zk_heap_mb == 512 and args.header_timeout == 3.0


@pytest.mark.parametrize("text, says", [
    ("nme = 1\n", "unknown setting 'nme'"),
    ('http-port = "x"\n', "http-port must be an integer, got 'x'"),
    ("http-port = true\n", "http-port must be an integer, got True"),
    ('one-shot = "yes"\n', "one-shot must be true or false"),
    ("http-port = \n", "not a TOML file"),
    ("[section]\nname = 1\n", "unknown setting 'section'"),
    ("name = [1, 2]\n", "name takes one value"),
])
def test_a_wrong_file_is_refused_with_its_key(tmp_path, capsys, text, says):
    f = settings(tmp_path, text)
    with pytest.raises(SystemExit) as info:
        parse_command_line(build_parser(), ["node", "--config-file", f])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f in err and says in err, err


def test_a_node_process_runs_the_flow_its_file_gives(tmp_path):
    out = tmp_path / "out.txt"
    f = settings(tmp_path, f'one-shot = true\ndata-dir = "{tmp_path / "data"}"\n'
                           f'config = \'n: asciisynth(3, 5) | text("{out}");\'\n')
    r = subprocess.run([sys.executable, "-m", "flume_og.node.cli", "node", "--config-file", f],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 3


def test_a_settings_file_is_read_up_to_its_bound_not_whole(tmp_path):
    """A settings path naming a device or a huge file by mistake is refused after
    MAX_FILE_BYTES, not read whole (/dev/zero would never end)."""
    from flume_og.node.config_file import MAX_FILE_BYTES, read_toml
    big = tmp_path / "big.toml"
    big.write_bytes(b"# x\n" * (MAX_FILE_BYTES // 4 + 1))
    for path in (Path("/dev/zero"), big):
        with pytest.raises(ValueError, match="larger than"):
            read_toml(path, ValueError)
