"""docs/reference.md is generated from the code (node/reference.py): it must equal what
the code generates now, so the reference cannot drift from the components."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reference_page_is_what_the_code_generates():
    r = subprocess.run([sys.executable, "-m", "flume_og.node.cli", "components", "--markdown"],
                       cwd=ROOT, env=dict(os.environ, TZ="UTC"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    committed = (ROOT / "docs" / "reference.md").read_text()
    assert r.stdout == committed, ("docs/reference.md is out of date: run "
                                   "TZ=UTC flume components --markdown > docs/reference.md")
