"""The architecture rules (import-linter contracts in pyproject.toml) hold, and break when
they should: a forbidden import added to a copy of the tree fails the check."""
from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("node", "master", "zk", "web")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=sysconfig.get_path("scripts"))
    assert exe, "lint-imports is missing: install the test extra (pip install -e '.[test]')"
    # run in ``cwd``: import-linter puts it first on sys.path, so that copy is analysed
    return subprocess.run([exe, "--no-cache", "--no-logo"], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def namespace_view(dst: Path, copy: bool) -> Path:
    """``dst`` laid out as installed (flume_og/node, ...: see pyproject.toml), with
    pyproject.toml beside it; the packages linked to the repository's folders, or copied."""
    (dst / "flume_og").mkdir(parents=True)
    for pkg in PACKAGES:
        if copy:
            shutil.copytree(ROOT / pkg, dst / "flume_og" / pkg,
                            ignore=shutil.ignore_patterns("__pycache__", "static"))
        else:
            (dst / "flume_og" / pkg).symlink_to(ROOT / pkg, target_is_directory=True)
    shutil.copy(ROOT / "pyproject.toml", dst)
    return dst


def test_import_contracts_hold_run_from_the_checkout():
    """Plain ``lint-imports`` at the checkout's root (as a developer runs it): the root
    packages resolve to the folders through the editable install."""
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "Analyzed" in r.stdout


def test_import_contracts_hold_in_a_view_laid_out_as_installed(tmp_path):
    r = lint_imports(namespace_view(tmp_path, copy=False))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.fixture
def tree(tmp_path):
    """The packages' Python files, copied as installed, and pyproject.toml beside them."""
    return namespace_view(tmp_path, copy=True) / "flume_og"


def add_import(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


@pytest.mark.parametrize("file, line, broken", [
    ("node/spec.py", "import flume_og.master.translate", "node never imports master"),
    ("zk/errors.py", "from flume_og.node.errors import FlumeError",
     "zk imports neither node nor master"),
    ("node/sources/text.py", "import flume_og.zk.store", "components never import zk"),
    ("master/server.py", "from kazoo.recipe.watchers import ChildrenWatch",
     "only zk imports kazoo"),
    ("node/physical_node.py", "import kazoo.client", "only zk imports kazoo"),
    # node.sinks imports node.decorators: an import back makes a cycle
    ("node/decorators/batch.py", "import flume_og.node.sinks.console", "no cycles between node's"),
    ("node/registry.py", "import flume_og.node.sources.text", "the registry imports no component"),
])
def test_a_forbidden_import_breaks_a_contract(tree, file, line, broken):
    assert lint_imports(tree.parent).returncode == 0     # the copy is clean, as the tree is
    add_import(tree / file, line)
    r = lint_imports(tree.parent)
    assert r.returncode != 0
    assert any(ln.startswith(broken) and " BROKEN" in ln
               for ln in r.stdout.splitlines()), r.stdout
