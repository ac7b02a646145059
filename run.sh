#!/usr/bin/env bash
# The main job: install, start a master (with its managed ZooKeeper) and a node, configure
# a sample flow through the master, and show data moving. The web console stays up at
# http://127.0.0.1:35871/ until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")"
FLUME_SETUP_BROWSER=0 bash scripts/setup.sh

export FLUME_DATA_DIR="${FLUME_DATA_DIR:-$PWD/.flume-data}"
export FLUME_MASTER="${FLUME_MASTER:-http://127.0.0.1:35871}"
FLUME=.venv/bin/flume
FLUMECTL=.venv/bin/flumectl
OUT="$FLUME_DATA_DIR/demo-output"
mkdir -p "$FLUME_DATA_DIR" "$OUT"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "== stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT     # stop here, not back into the loop below
trap 'cleanup; exit 143' TERM

echo "== starting the master (managed ZooKeeper on 127.0.0.1:3181, console on $FLUME_MASTER)"
$FLUME --log-level WARNING master >"$FLUME_DATA_DIR/master.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  curl -fsS "$FLUME_MASTER/api/health" >/dev/null 2>&1 && break
  sleep 0.25
done
curl -fsS "$FLUME_MASTER/api/health" >/dev/null || { cat "$FLUME_DATA_DIR/master.log"; exit 1; }

echo "== starting node 'demo' (it registers itself in ZooKeeper)"
$FLUME --log-level WARNING node -n demo >"$FLUME_DATA_DIR/node.log" 2>&1 &
pids+=($!)

APP_LOG="$FLUME_DATA_DIR/demo-app.log"
echo "== a sample application writing $APP_LOG (5 lines a second)"
( i=0; while true; do
    i=$((i+1)); echo "$(date '+%F %T') demo-app INFO request $i served in $((RANDOM % 90 + 10)) ms"
    sleep 0.2
  done >>"$APP_LOG" ) &
pids+=($!)

echo "== configuring the flow through the master: tail the log, roll files every 5 s"
$FLUMECTL config demo "tail(\"$APP_LOG\")" \
  "roll(5000) { escapedCustomDfs(\"file://$OUT/%Y-%m-%d\", \"events-%{rolltag}\") }"
$FLUMECTL wait-active 30s demo
$FLUMECTL status

echo "== data moving: events counted by the node, files rolled every 5 s into $OUT"
echo "   (web console: $FLUME_MASTER/ — Ctrl-C stops everything)"
while true; do
  sleep 5
  files=$(find "$OUT" -type f ! -name '.*' | wc -l)
  lines=$(find "$OUT" -type f ! -name '.*' -exec cat {} + 2>/dev/null | wc -l)
  events=$($FLUMECTL --json status | .venv/bin/python -c '
import json, sys
rows = json.load(sys.stdin)
rows = rows.get("logical", rows) if isinstance(rows, dict) else rows
rows = rows.values() if isinstance(rows, dict) else rows
print(sum(r.get("events_in") or 0 for r in rows))' 2>/dev/null || echo "?")
  echo "$(date +%T)  events read: $events   files written: $files   lines in files: $lines"
  newest=$(find "$OUT" -type f ! -name '.*' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
  [ -n "$newest" ] && echo "          last line of $(basename "$newest"): $(tail -1 "$newest")"
done
