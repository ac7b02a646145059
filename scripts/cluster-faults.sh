#!/usr/bin/env bash
# Every fault scenario of tests/cluster on a real cluster in network namespaces (3 ZooKeeper
# servers, 2 masters, 2 collectors, 3 agents), one after the other, then the table of their
# figures. Needs root (ip netns); takes about twelve minutes (23 scenarios). Extra arguments go to pytest,
# e.g. -k collector_paused. The logs of each run stay under the directory it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
base="$(mktemp -d /var/tmp/flume-cluster-faults.XXXXXX)"
echo "cluster-faults: processes' logs and data under $base"
set +e
# pytest empties --basetemp when it starts: the log goes beside it
FLUME_CLUSTER_FULL=1 FLUME_TEST_CLUSTER=required .venv/bin/python -m pytest -q -p no:cacheprovider -s \
  --basetemp="$base/runs" tests/cluster "$@" | tee "$base/pytest.log"
status=${PIPESTATUS[0]}
set -e
echo
echo "figures per scenario (recovery: from the fault's end until every counter is delivered):"
grep '^SCENARIO' "$base/pytest.log" || echo "(no scenario finished)"
exit "$status"
