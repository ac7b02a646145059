"""Every component module is listed in its package's ``__init__.py``, so none is silently
left out of the registry (a module missing there only shows when a spec names it:
"unknown sink")."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest


@pytest.mark.parametrize("package", ["flume_og.node.sources", "flume_og.node.sinks",
                                     "flume_og.node.decorators"])
def test_every_module_of_a_component_package_is_imported_by_it(package):
    pkg = importlib.import_module(package)
    init = Path(pkg.__file__)
    imported = {alias.name for node in ast.walk(ast.parse(init.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module
                for alias in node.names}
    # helpers shared by a package's components start with "_" (_net, _lines, ...)
    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    assert modules - imported == set(), f"{init} does not import {sorted(modules - imported)}"
