"""bench/compare.py's own checks: what it counts as output and as a verified run, and what
it says when rsyslog is missing (it installs nothing)."""
from __future__ import annotations

import os
import sys

from bench import compare


def line(i: int) -> bytes:
    return b"%012d %s\n" % (i, b"x" * 80)


def test_verify_counts_each_line_once_over_the_final_files_only(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "data-1").write_bytes(line(0) + line(1) + line(1))
    (tmp_path / "sub" / "data-2").write_bytes(line(3) + b"garbage\n" + line(99))
    (tmp_path / ".data-3.tmp").write_bytes(line(2))          # hidden: not final yet
    lines, lost, dup, bad = compare.verify(tmp_path, 5)
    assert (lines, lost, dup, bad) == (6, 2, 1, 2)           # 2 and 4 lost; 99 out of range


def test_output_counts_hidden_files_and_each_inode_once(tmp_path):
    (tmp_path / "data-1").write_bytes(line(0))
    (tmp_path / ".data-2.tmp").write_bytes(line(1) + line(2))
    os.link(tmp_path / "data-1", tmp_path / "data-1-again")  # one file under two names
    total, final = compare.output_state(tmp_path)
    assert total == 3 * compare.LINE_LEN
    assert final == compare.LINE_LEN
    assert compare.output_state(tmp_path / "missing") == (0, 0)


def test_without_rsyslog_it_says_what_to_install_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(compare.shutil, "which", lambda name: None)
    monkeypatch.setattr(compare, "RELP_MODULES", ("/nonexistent/imrelp.so",))
    real_exists = compare.Path.exists
    monkeypatch.setattr(compare.Path, "exists",
                        lambda p: False if str(p) == "/usr/sbin/rsyslogd" else real_exists(p))
    monkeypatch.setattr(sys, "argv", ["compare.py", "1000"])
    assert compare.main() == 2
    err = capsys.readouterr().err
    assert "apt-get install -y rsyslog rsyslog-relp" in err
