#!/usr/bin/env bash
# The main job: install, then run a sample flow with data visibly moving.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export FLUME_DATA_DIR="${FLUME_DATA_DIR:-$PWD/.flume-data}"
echo "== sample flow: 30 synthetic events, 5 per second, printed as JSON"
exec .venv/bin/flume node --one-shot -n demo \
  -c 'demo: asciisynth(30, 40) | { delay(200) => console(json) }'
