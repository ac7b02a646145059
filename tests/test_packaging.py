"""A plain (non-editable) install carries everything: code, the IDL files, the web console."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"flume_og"}


@pytest.mark.timeout(300)
def test_plain_install_ships_code_idl_and_web(tmp_path):
    target = tmp_path / "site"
    # built from a copy of what a source distribution holds: pip builds in the source
    # tree, and a build/ left there by an earlier layout would be installed too
    src = tmp_path / "src"
    for name in ("node", "master", "zk", "web", "thrift"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    # the one name the distribution claims at the top of site-packages (no node, master or
    # zk, which PyPI distributions own too; no tests/ or bench/)
    top = {p.name for p in target.iterdir()} - {"bin"}
    assert {n for n in top if not n.endswith(".dist-info")} == TOP_LEVEL
    pkg = target / "flume_og"
    assert (pkg / "thrift" / "flume.thrift").is_file()
    # every package of the source tree is installed (a new subpackage missing from
    # pyproject.toml's list would be left out of the wheel)
    for top_name in ("node", "master", "zk", "web"):
        for init in (ROOT / top_name).rglob("__init__.py"):
            rel = init.relative_to(ROOT)
            assert (pkg / rel).is_file(), f"{rel.parent} is not installed"
    assert any((pkg / "web" / "static").rglob("*.html")) or not any(
        (ROOT / "web" / "static").rglob("*.html"))
    # run from an unrelated directory with the installed copy first on the path
    probe = ("import flume_og.node.cli, flume_og.master.cli, flume_og.master.flumectl;"
             "from flume_og.node import rpc; rpc.idl();"
             "print(flume_og.node.cli.__file__, rpc.idl_path())")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    code_file, idl_file = r.stdout.split()
    assert code_file.startswith(str(target)) and idl_file.startswith(str(target))
    r = subprocess.run([sys.executable, "-m", "flume_og.master.cli", "check", "-c",
                        'a: text("x") | { batch(10) => null }'], cwd=tmp_path,
                       capture_output=True, text=True, env={"PYTHONPATH": str(target),
                                                             "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'a : text("x") | { batch(10) => null } ;\n'


@pytest.mark.timeout(300)
def test_the_editable_install_of_setup_sh_prints_no_setuptools_notice(tmp_path):
    """setup.sh's editable install (scripts/pip-install-editable.sh) of a copy of the tree
    into a fresh environment: no page of setuptools notices (before: "Editable
    installation ... Please be careful with folders in your working directory")."""
    src = tmp_path / "src"
    for name in ("node", "master", "zk", "web", "thrift"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    # this environment's pip (setup.sh's, upgraded) installs into the fresh one
    r = subprocess.run(["bash", str(ROOT / "scripts" / "pip-install-editable.sh"),
                        sys.executable, str(src), "--no-deps"],
                       env={**os.environ, "PIP_TARGET_PYTHON": str(env_dir / "bin" / "python")},
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    notices = [line for line in r.stderr.splitlines()
               if not line.startswith("WARNING: Location")]   # this machine's pip.conf
    assert not any("Editable installation" in line or "be careful" in line
                   for line in notices), r.stderr
