#!/bin/bash
# Per-change cost and memory of JavaScript handlers under `rowhook replay`.
#
#   ROWHOOK=target/release/rowhook BINLOG=/tmp/mdb-3308/log/mysql-bin.000002 \
#       ENGINES="quickjs starlingmonkey" guest-sdk/js/bench/run.sh
#
# BINLOG is the 1,000,000-row workload of ../shared/bench
# (workload/make_binlog.sh 500 42). For each engine and each handler here
# (nothing.js: the SDK parses the change; two-columns.js: reads two columns
# and emits a JSON line), it replays BINLOG with limits.memory_mb =
# MEMORY_MB (32) and prints the CPU seconds of the replay, the CPU per
# change above a replay whose handler is never called, and whether every
# change was handled within the memory limit. A handler whose memory grows
# traps at the limit: the line says after how many calls.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
: "${ROWHOOK:?set ROWHOOK to a rowhook binary (a release build for per-change figures)}"
: "${BINLOG:?set BINLOG to the 1,000,000-row workload binlog}"
ENGINES=${ENGINES:-quickjs}
MEMORY_MB=${MEMORY_MB:-32}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

config() { # NAME MODULE TABLES MEMORY_MB
  cat > "$WORK/$1.toml" <<EOT
[state]
path = "state-$1"

[sinks.out]
kind = "stdout"

[[handlers]]
name = "$1"
tenant = "bench"
module = "$2"
tables = ["$3"]
sinks = ["out"]
limits = { memory_mb = $4, time_ms = 1000, emits_per_event = 4 }
on_error = "halt"
EOT
}

replay() { # NAME -> CPU seconds (user + sys); its stderr in $WORK/NAME.err
  (cd "$WORK" && /usr/bin/time -f "%U %S" -o "$WORK/$1.time" "$ROWHOOK" replay -c "$WORK/$1.toml" "$BINLOG" > /dev/null 2> "$WORK/$1.err") || true
  awk '{printf "%.2f", $1 + $2}' "$WORK/$1.time"
}

node "$HERE/../bin/rowhook-js.js" build "$HERE/nothing.js" -o "$WORK/none.wasm" 2>/dev/null
config none "$WORK/none.wasm" "no_such.table" "$MEMORY_MB"
base=$(replay none)
echo "replay without handler calls: $base CPU-s"
for engine in $ENGINES; do
  for handler in nothing two-columns; do
    name="$handler-$engine"
    node "$HERE/../bin/rowhook-js.js" build "$HERE/$handler.js" -o "$WORK/$name.wasm" --engine "$engine"
    config "$name" "$WORK/$name.wasm" "cdcbench.*" "$MEMORY_MB"
    "$ROWHOOK" check -c "$WORK/$name.toml" 2>&1 | grep -o "[0-9.]* MiB used" | sed "s/^/$name: linear memory at start: /" || true
    cpu=$(replay "$name")
    summary=$(grep -o "[0-9]* handler calls, [0-9]* messages, [0-9]* handler errors" "$WORK/$name.err" || true)
    if [ -n "$summary" ]; then
      calls=${summary%% handler calls*}
      echo "$name: $cpu CPU-s, $summary, $(echo "($cpu - $base) * 1000000 / $calls" | bc -l | xargs printf '%.1f') us per change above the replay"
    else
      echo "$name: $cpu CPU-s, stopped: $(grep -o "failed on [^ ]*.*memory_mb[^;]*" "$WORK/$name.err" | head -1 | cut -c1-200)"
    fi
  done
done
