"""A plain (non-editable) install carries everything: code, the IDL files, the web console."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"node", "master", "zk", "web", "flume_idl"}


@pytest.mark.timeout(300)
def test_plain_install_ships_code_idl_and_web(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), str(ROOT)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    # the names the distribution claims at the top of site-packages: its own packages only
    # (no tests/ or bench/, which other distributions ship too); each of these is a name
    # another distribution may also install (see pyproject.toml, [tool.setuptools])
    top = {p.name for p in target.iterdir()} - {"bin"}
    assert {n for n in top if not n.endswith(".dist-info")} == TOP_LEVEL
    assert (target / "flume_idl" / "flume.thrift").is_file()
    # every package of the source tree is installed (a new subpackage missing from
    # pyproject.toml's list would be left out of the wheel)
    for top_name in ("node", "master", "zk", "web"):
        for init in (ROOT / top_name).rglob("__init__.py"):
            rel = init.relative_to(ROOT)
            assert (target / rel).is_file(), f"{rel.parent} is not installed"
    assert any((target / "web" / "static").rglob("*.html")) or not any(
        (ROOT / "web" / "static").rglob("*.html"))
    # run from an unrelated directory with the installed copy first on the path
    probe = ("import node, master, zk, flume_idl, sys;"
             "import node.cli, master.cli, master.flumectl;"
             "print(node.__file__)")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(target))
    r = subprocess.run([sys.executable, "-m", "master.cli", "check", "-c",
                        'a: text("x") | { batch(10) => null }'], cwd=tmp_path,
                       capture_output=True, text=True, env={"PYTHONPATH": str(target),
                                                             "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'a : text("x") | { batch(10) => null } ;\n'
