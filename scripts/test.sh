#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FLUME_TEST_BROWSER=required   # setup.sh installed it: never skip the web tests
# Let Python keep compiled modules (__pycache__, ignored by git) even where the environment
# says not to: every worker then collects the tests from pytest's cached rewrites (13 s of
# CPU a worker without, 4 s with), and the hundreds of master and node processes the tests
# start load the project compiled instead of compiling it each time (0.6 -> 0.45 s of CPU).
unset PYTHONDONTWRITEBYTECODE
# Most tests wait on processes, sockets and ZooKeeper, not on the CPU: several pytest-xdist
# workers overlap those waits. loadgroup keeps each xdist_group (a module's shared master,
# the browser, the cluster harness) on one worker. FLUME_TEST_WORKERS=0 runs in one process.
# 3 on 2 cores: 4 were ~10% faster on a subset (160 s against 178 s), but on a loaded
# machine more tests that time a process or an answer began to fail (3 against 1).
exec .venv/bin/python -m pytest -q -p no:cacheprovider \
  -n "${FLUME_TEST_WORKERS:-3}" --dist loadgroup "$@"
