#!/usr/bin/env bash
# The architecture rules (import-linter contracts in pyproject.toml) on the working tree.
# The folders install as flume_og.node, flume_og.master... (pyproject's package-dir), so
# lint-imports runs in a temporary view laid out that way, linked to the folders (the same
# view tests/test_architecture.py makes). Extra arguments go to lint-imports.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
view="$(mktemp -d)"
trap 'rm -rf "$view"' EXIT
mkdir "$view/flume_og"
for pkg in node master zk web; do ln -s "$root/$pkg" "$view/flume_og/$pkg"; done
cp "$root/pyproject.toml" "$view/"
cd "$view" && "$root/.venv/bin/lint-imports" --no-cache "$@"
