#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FLUME_TEST_BROWSER=required   # setup.sh installed it: never skip the web tests
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
