#!/usr/bin/env bash
# Capture speed: `rowhook capture` publishing a 1M-change binlog to a local JetStream, every
# message acknowledged, the checkpoint at the binlog's end.
#
#   tests/bench/capture.sh        # ~3 min on 2 cores after the build (~1 min more the first
#                                 # time, to write the binlog in a private MariaDB)
#
# What it does:
#  1. builds rowhook (release);
#  2. starts a private MariaDB (tests/mariadb.sh) and writes the binlog: $ROWS inserts into
#     cdcbench.orders, the shared workload's orders table (../shared/bench/workload: 13
#     columns, a BIGINT key, INT, VARCHARs, CHAR, two DECIMALs, SMALLINT, two DATETIME(6),
#     TEXT, TINYINT), in transactions of $TXN rows;
#  3. runs, $REPEAT times, a private `nats-server -js` with an empty store and `rowhook capture`
#     from the binlog's start into it ($PARTITIONS partitions), and times it from the log line
#     "took the capture lease" until `rowhook state` reports the capture's checkpoint at the
#     binlog's end (every message acknowledged by then); the CPU seconds of rowhook and of
#     nats-server come from /proc;
#  4. prints a markdown table: changes per second of each run, their median, and the CPU
#     seconds per million changes of rowhook and of nats-server.
# Everything also lands in $BENCH_DIR/results-<time>.md.
#
# Environment:
#   BENCH_DIR   work directory, kept between runs                              [/tmp/rowhook-bench-capture]
#   ROWS        inserts in the binlog                                          [1000000]
#   TXN         rows per transaction                                           [100]
#   PARTITIONS  [cluster] partitions                                           [16]
#   REPEAT      runs                                                           [3]
#   KEEP_DB     1: leave the server running at the end (REUSE_DB=1 takes it)   [0]
#   REUSE_DB    1: reuse a server and binlog left by KEEP_DB=1                 [0]
# The machine is shared: absolute figures drift between runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/rowhook-bench-capture}
ROWS=${ROWS:-1000000}
TXN=${TXN:-100}
PARTITIONS=${PARTITIONS:-16}
REPEAT=${REPEAT:-3}
KEEP_DB=${KEEP_DB:-0}
REUSE_DB=${REUSE_DB:-0}
DB=$BENCH_DIR/db
REPORT=$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S).md

log() { echo "capture.sh: $*" >&2; }
die() { log "$*"; exit 1; }
out() { echo "$*" | tee -a "$REPORT"; }
mkdir -p "$BENCH_DIR"
: >"$REPORT"

for t in mariadbd mariadb nats-server python3 cargo; do
    command -v "$t" >/dev/null || die "$t is needed"
done

# --- build ---------------------------------------------------------------------------------------
log "building rowhook (release)"
(cd "$ROOT" && cargo build --release -p rowhook --bins 2>&1 | tail -n 2) >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/rowhook
[[ -x $BIN ]] || die "$BIN was not built"

# --- server and binlog ---------------------------------------------------------------------------
M() { mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uroot "$@"; }
NATS_PID=
cleanup() {
    [[ -n $NATS_PID ]] && kill "$NATS_PID" 2>/dev/null || true
    if [[ $KEEP_DB == 1 ]]; then
        log "server left running: port $PORT, dir $DB"
    else
        "$ROOT/tests/mariadb.sh" stop "$DB" || true
    fi
}
if [[ $REUSE_DB == 1 && -f $DB/port ]] && PORT=$(cat "$DB/port") && M -e 'SELECT 1' >/dev/null 2>&1; then
    log "reusing the server on port $PORT"
else
    "$ROOT/tests/mariadb.sh" stop "$DB" >/dev/null 2>&1 || true
    PORT=$("$ROOT/tests/mariadb.sh" start "$DB")
    echo "$PORT" >"$DB/port"
fi
trap cleanup EXIT
have=$(M -N -e "SELECT COUNT(*) FROM cdcbench.orders" 2>/dev/null || echo 0)
if [[ $have != "$ROWS" ]]; then
    log "writing $ROWS inserts into cdcbench.orders, $TXN per transaction"
    M -e "RESET MASTER; DROP DATABASE IF EXISTS cdcbench; CREATE DATABASE cdcbench"
    python3 - "$ROOT/../shared/bench/workload/gen_workload.py" <<'EOF' | M cdcbench
import re, sys
src = open(sys.argv[1]).read()
m = re.search(r"CREATE TABLE orders \(.*?\)[^;]*;", src, re.S)
print(m.group(0))
EOF
    python3 - "$ROWS" "$TXN" <<'EOF' | M cdcbench
import sys
rows, txn = int(sys.argv[1]), int(sys.argv[2])
for lo in range(1, rows + 1, txn):
    hi = min(rows, lo + txn - 1)
    print(f"""INSERT INTO orders (id, user_id, status, currency, amount, tax, qty, created_at,
        updated_at, sku, note, attrs, is_gift)
    SELECT seq, seq % 50000, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), 'EUR',
        (seq % 100000) / 100, (seq % 10000) / 10000, 1 + seq % 9,
        TIMESTAMP('2024-01-01') + INTERVAL seq SECOND, NULL, CONCAT('sku-', seq % 1000),
        IF(seq % 3 = 0, CONCAT('note ', seq), NULL),
        CONCAT('{{"channel":"web","n":', seq % 97, '}}'), seq % 2
    FROM seq_{lo}_to_{hi};""")
EOF
fi
END=$(M -N -e "SHOW MASTER STATUS" | awk '{print $1 ":" $2}')
log "the binlog ends at $END"

# --- runs ----------------------------------------------------------------------------------------
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RUN=$BENCH_DIR/run
rates=()
ours=()
theirs=()
for i in $(seq 1 "$REPEAT"); do
    rm -rf "$RUN" && mkdir -p "$RUN"
    NPORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    nats-server -js -a 127.0.0.1 -p "$NPORT" -sd "$RUN/nats" >"$RUN/nats.log" 2>&1 &
    NATS_PID=$!
    until (echo >"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null; do sleep 0.05; done
    : >"$RUN/handler.wasm"
    cat >"$RUN/rowhook.toml" <<EOF
[source]
url = "mysql://root@127.0.0.1:$PORT"
server_id = 9401
start = "earliest"

[cluster]
nats = "nats://127.0.0.1:$NPORT"
source = "bench"
partitions = $PARTITIONS

[[handlers]]
name = "all"
module = "handler.wasm"
tables = ["cdcbench.orders"]
EOF
    ROWHOOK_LOG=info NO_COLOR=1 "$BIN" capture -c "$RUN/rowhook.toml" 2>"$RUN/log" &
    pid=$!
    until grep -q "took the capture lease" "$RUN/log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$RUN/log" >&2; die "rowhook exited before it took the lease"; }
        sleep 0.05
    done
    t0=$(date +%s.%N)
    c0=$(cpu_of "$pid")
    n0=$(cpu_of "$NATS_PID")
    while :; do
        at=$("$BIN" state -c "$RUN/rowhook.toml" --json 2>/dev/null \
            | python3 -c "import json, sys; p = json.load(sys.stdin)['cluster']['capture_position'] or {}; print(f\"{p.get('file')}:{p.get('pos')}\")")
        [[ $at == "$END" ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$RUN/log" >&2; die "rowhook exited"; }
        sleep 0.1
    done
    t1=$(date +%s.%N)
    c1=$(cpu_of "$pid")
    n1=$(cpu_of "$NATS_PID")
    kill -INT "$pid"
    wait "$pid" || true
    kill "$NATS_PID"
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=
    tck=$(getconf CLK_TCK)
    read -r rate cpu ncpu < <(python3 -c "
rows, secs = $ROWS, $t1 - $t0
print(round(rows / secs), round(($c1 - $c0) / $tck / (rows / 1e6), 2), round(($n1 - $n0) / $tck / (rows / 1e6), 2))")
    log "run $i: $rate changes/s; CPU s per 1M changes: rowhook $cpu, nats-server $ncpu"
    rates+=("$rate")
    ours+=("$cpu")
    theirs+=("$ncpu")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

out "## Capture: $ROWS inserts into cdcbench.orders published to JetStream, acknowledged"
out ""
out "transactions of $TXN rows; $PARTITIONS partitions; MariaDB and nats-server (file storage) on the same machine; $(nproc) cores"
out ""
out "| run | changes/s | rowhook CPU s per 1M changes | nats-server CPU s per 1M changes |"
out "|---|---|---|---|"
for i in "${!rates[@]}"; do
    out "| $((i + 1)) | ${rates[$i]} | ${ours[$i]} | ${theirs[$i]} |"
done
out "| **median** | **$(median "${rates[@]}")** | $(median "${ours[@]}") | $(median "${theirs[@]}") |"
log "report: $REPORT"
