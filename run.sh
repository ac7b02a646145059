#!/usr/bin/env bash
# The main job: install, start a master (with its managed ZooKeeper), a collector node and
# an agent node, configure an end-to-end flow through the master, and show data moving.
# The web console stays up at http://127.0.0.1:35871/ until Ctrl-C.
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

echo "== starting two nodes: 'collector' and 'agent' (each registers itself in ZooKeeper)"
$FLUME --log-level WARNING node -n collector --http-port 35862 \
  >"$FLUME_DATA_DIR/collector.log" 2>&1 &
COLLECTOR_PID=$!
pids+=($!)
$FLUME --log-level WARNING node -n agent --http-port 35863 >"$FLUME_DATA_DIR/agent.log" 2>&1 &
pids+=($!)

APP_LOG="$FLUME_DATA_DIR/demo-app.log"
: >"$APP_LOG"
echo "== a sample application writing $APP_LOG (5 numbered lines a second)"
( i=0; while true; do
    i=$((i+1)); echo "$(date '+%F %T') demo-app INFO request $i served in $((RANDOM % 90 + 10)) ms"
    sleep 0.2
  done >>"$APP_LOG" ) &
pids+=($!)

echo "== configuring the flows through the master:"
echo "   collector: collectorSource(35853) | collectorSink(...)  -- files rolled every 5 s"
echo "   agent:     tail(app log) | agentE2ESink(collector)      -- end to end: nothing lost"
$FLUMECTL config collector "collectorSource(35853)" \
  "collectorSink(\"file://$OUT/%Y-%m-%d\", \"events-\", 5000)"
$FLUMECTL wait-active 30s collector
$FLUMECTL config agent "tail(\"$APP_LOG\")" "agentE2ESink(\"127.0.0.1\", 35853)"
$FLUMECTL wait-active 30s agent
$FLUMECTL status

echo "== data moving into $OUT (web console: $FLUME_MASTER/ ; Ctrl-C stops everything)"
echo "   try it: kill -9 $COLLECTOR_PID (the collector) and start it again with"
echo "     FLUME_DATA_DIR=$FLUME_DATA_DIR FLUME_MASTER=$FLUME_MASTER \\"
echo "       $PWD/$FLUME node -n collector --http-port 35862 &"
echo "   the agent keeps the lines in its write-ahead log and sends them once it is back:"
echo "   'missing' returns to 0 (what is still in flight), 'duplicated' stays 0."
while true; do
  sleep 5
  written=$(wc -l <"$APP_LOG")
  files=$(find "$OUT" -type f ! -name '.*' | wc -l)
  stats=$(find "$OUT" -type f ! -name '.*' -exec cat {} + 2>/dev/null \
    | grep -o 'request [0-9]*' | sort | uniq -c \
    | awk '{n++; if ($1 > 1) d += $1 - 1} END {print n+0, d+0}')
  read -r unique dups <<<"$stats"
  echo "$(date +%T)  lines written: $written   in final files: $unique ($files files)" \
       "  missing: $((written - unique))   duplicated: $dups"
done
