#!/usr/bin/env bash
# Many machines, on one: `rowhook capture` publishing a 1M-change binlog to a local JetStream,
# then 1 and 2 `rowhook work` processes running the trivial handler on the stream, beside
# `rowhook run` with the same handler on the same binlog.
#
#   tests/bench/cluster.sh        # ~6 min on 2 cores after the build (~1 min more the first
#                                 # time, to write the binlog in a private MariaDB)
#
# What it does:
#  1. builds rowhook (release) and the trivial handler (reads `id`, emits nothing) from
#     tests/guests, for wasm32-wasip2;
#  2. starts a private MariaDB (tests/mariadb.sh) and writes the binlog: $ROWS inserts into
#     cdcbench.orders, the shared workload's orders table (../shared/bench/workload: 13
#     columns, a BIGINT key, INT, VARCHARs, CHAR, two DECIMALs, SMALLINT, two DATETIME(6),
#     TEXT, TINYINT), in transactions of $TXN rows;
#  3. runs, $REPEAT times, a private `nats-server -js` with an empty store and `rowhook capture`
#     from the binlog's start into it ($PARTITIONS partitions), and times it from the log line
#     "took the capture lease" until `rowhook state` reports the capture's checkpoint at the
#     binlog's end (every message acknowledged by then); the CPU seconds of rowhook and of
#     nats-server come from /proc;
#  4. after each capture, starts each count of $WORKERS workers in turn on a copy of the filled
#     stream (the nats-server store, copied), and times them from their start until `rowhook
#     state` shows every partition owned, its consumer with nothing pending or unacknowledged
#     and its state written;
#  5. runs `rowhook run` from the binlog's start with the same handler, until its checkpoint is
#     at the binlog's end;
#  6. prints a markdown table: changes per second of each role and the CPU seconds per million
#     changes of rowhook capture, nats-server, the workers (summed) and rowhook run.
# Everything also lands in $BENCH_DIR/results-<time>.md.
#
# Environment:
#   BENCH_DIR   work directory, kept between runs                              [/tmp/rowhook-bench-cluster]
#   ROWS        inserts in the binlog                                          [1000000]
#   TXN         rows per transaction                                           [100]
#   PARTITIONS  [cluster] partitions                                           [16]
#   REPEAT      runs                                                           [3]
#   WORKERS     worker counts to time                                          ["1 2"]
#   KEEP_DB     1: leave the server running at the end (REUSE_DB=1 takes it)   [0]
#   REUSE_DB    1: reuse a server and binlog left by KEEP_DB=1                 [0]
# The machine is shared: absolute figures drift between runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/rowhook-bench-cluster}
ROWS=${ROWS:-1000000}
TXN=${TXN:-100}
PARTITIONS=${PARTITIONS:-16}
REPEAT=${REPEAT:-3}
WORKERS=${WORKERS:-1 2}
KEEP_DB=${KEEP_DB:-0}
REUSE_DB=${REUSE_DB:-0}
DB=$BENCH_DIR/db
REPORT=$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S).md

log() { echo "cluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }
out() { echo "$*" | tee -a "$REPORT"; }
mkdir -p "$BENCH_DIR"
: >"$REPORT"

for t in mariadbd mariadb nats-server python3 cargo; do
    command -v "$t" >/dev/null || die "$t is needed"
done

# --- build ---------------------------------------------------------------------------------------
log "building rowhook (release) and the trivial handler"
(cd "$ROOT" && cargo build --release -p rowhook --bins 2>&1 | tail -n 2) >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/rowhook
[[ -x $BIN ]] || die "$BIN was not built"
GUESTS=$ROOT/tests/guests
(cd "$GUESTS" && cargo build --release --target wasm32-wasip2 -p trivial --quiet --target-dir "$GUESTS/target") >&2 \
    || die "building the trivial handler failed (rustup target add wasm32-wasip2?)"
WASM=$GUESTS/target/wasm32-wasip2/release/trivial.wasm

# --- server and binlog ---------------------------------------------------------------------------
# shellcheck source=server.sh
source "$ROOT/tests/bench/server.sh"
NATS_PID=
cleanup() {
    [[ -n $NATS_PID ]] && kill "$NATS_PID" 2>/dev/null || true
    stop_server
}
start_server
trap cleanup EXIT
have=$(M -N -e "SELECT COUNT(*) FROM cdcbench.orders" 2>/dev/null || echo 0)
if [[ $have != "$ROWS" ]]; then
    log "writing $ROWS inserts into cdcbench.orders, $TXN per transaction"
    M -e "RESET MASTER"
    orders_table
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
now() { date +%s.%N; }
# CPU ticks $2 per million of $1 changes, in seconds.
per_m() { python3 -c "print(round(($2) / $(getconf CLK_TCK) / ($1 / 1e6), 2))"; }
rate_of() { python3 -c "print(round($ROWS / ($2 - $1)))"; }
state() { "$BIN" state -c "$RUN/rowhook.toml" --json 2>/dev/null; }
RUN=$BENCH_DIR/run
declare -A rate cpu
add() { rate[$1]+="$2 "; cpu[$1]+="$3 "; }
write_config() {
    cat >"$RUN/rowhook.toml" <<EOF
[source]
url = "mysql://root@127.0.0.1:$PORT"
server_id = 9401
start = "earliest"

[state]
path = "state"

[cluster]
nats = "nats://127.0.0.1:$NPORT"
source = "bench"
partitions = $PARTITIONS
lease_ttl_ms = 3000

[[handlers]]
name = "trivial"
module = "$WASM"
tables = ["cdcbench.orders"]
EOF
}
start_nats() {
    nats-server -js -a 127.0.0.1 -p "$NPORT" -sd "$RUN/nats" >>"$RUN/nats.log" 2>&1 &
    NATS_PID=$!
    until (echo >"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null; do sleep 0.05; done
}
stop_nats() {
    kill "$NATS_PID"
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=
}
# Waits until `rowhook state` says what $1 (python over the report `r`) is true of.
wait_state() {
    local pid=$2
    while :; do
        [[ $(state | python3 -c "import json, sys; r = json.load(sys.stdin); print(int(bool($1)))") == 1 ]] && return
        for p in $pid; do kill -0 "$p" 2>/dev/null || die "process $p exited (logs in $RUN)"; done
        sleep 0.1
    done
}
AT_END="f\"{(r['cluster']['capture_position'] or {}).get('file')}:{(r['cluster']['capture_position'] or {}).get('pos')}\" == '$END'"
WORKED="all(p['pending'] == 0 and p['unacked'] == 0 and p['owner'] and p['state_seq'] > 0 for p in r['cluster']['partitions_detail'])"
RAN="f\"{(r.get('position') or {}).get('file')}:{(r.get('position') or {}).get('pos')}\" == '$END'"
for i in $(seq 1 "$REPEAT"); do
    rm -rf "$RUN" && mkdir -p "$RUN"
    NPORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    write_config
    start_nats
    ROWHOOK_LOG=info NO_COLOR=1 "$BIN" capture -c "$RUN/rowhook.toml" 2>"$RUN/capture.log" &
    pid=$!
    until grep -q "took the capture lease" "$RUN/capture.log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$RUN/capture.log" >&2; die "rowhook exited before it took the lease"; }
        sleep 0.05
    done
    t0=$(now) c0=$(cpu_of "$pid") n0=$(cpu_of "$NATS_PID")
    wait_state "$AT_END" "$pid"
    t1=$(now) c1=$(cpu_of "$pid") n1=$(cpu_of "$NATS_PID")
    MESSAGES=$(state | python3 -c "import json, sys; print(json.load(sys.stdin)['cluster']['messages'])")
    kill -INT "$pid"
    wait "$pid" || true
    add capture "$(rate_of "$t0" "$t1")" "$(per_m "$ROWS" "$c1 - $c0")"
    add nats-capture - "$(per_m "$ROWS" "$n1 - $n0")"
    log "run $i: capture ${rate[capture]}"
    stop_nats
    cp -a "$RUN/nats" "$RUN/nats-filled"
    for n in $WORKERS; do
        rm -rf "$RUN/nats" && cp -a "$RUN/nats-filled" "$RUN/nats"
        start_nats
        n0=$(cpu_of "$NATS_PID")
        pids=""
        t0=$(now)
        for w in $(seq 1 "$n"); do
            mkdir -p "$RUN/w$w" && cp "$RUN/rowhook.toml" "$RUN/w$w/"
            NO_COLOR=1 "$BIN" work -c "$RUN/w$w/rowhook.toml" 2>"$RUN/w$w/log" &
            pids+="$! "
        done
        wait_state "$WORKED" "$pids"
        t1=$(now) n1=$(cpu_of "$NATS_PID")
        ticks=0
        for p in $pids; do ticks=$((ticks + $(cpu_of "$p"))); done
        for p in $pids; do kill -INT "$p"; done
        for p in $pids; do wait "$p" || true; done
        add "work-$n" "$(rate_of "$t0" "$t1")" "$(per_m "$ROWS" "$ticks")"
        add "nats-work-$n" - "$(per_m "$ROWS" "$n1 - $n0")"
        log "run $i: $n workers ${rate[work-$n]}"
        stop_nats
    done
    ROWHOOK_LOG=info NO_COLOR=1 "$BIN" run -c "$RUN/rowhook.toml" 2>"$RUN/run.log" &
    pid=$!
    t0=$(now)
    wait_state "$RAN" "$pid"
    t1=$(now) c1=$(cpu_of "$pid")
    kill -INT "$pid"
    wait "$pid" || true
    add run "$(rate_of "$t0" "$t1")" "$(per_m "$ROWS" "$c1")"
    log "run $i: rowhook run ${rate[run]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

out "## Many machines, on one: $ROWS inserts into cdcbench.orders, the trivial handler"
out ""
out "transactions of $TXN rows; $PARTITIONS partitions ($MESSAGES messages in the stream, $(python3 -c "print(round($ROWS / $MESSAGES, 1))") changes per message); MariaDB and nats-server (file storage) on the same machine; $(nproc) cores; $REPEAT runs"
out ""
out "| role | changes/s (median) | CPU s per 1M changes, each run | median |"
out "|---|---|---|---|"
roles="capture nats-capture"
for n in $WORKERS; do roles+=" work-$n nats-work-$n"; done
for role in $roles run; do
    # shellcheck disable=SC2086
    r=$(median ${rate[$role]})
    [[ $r == - ]] && r=""
    # shellcheck disable=SC2086
    out "| $role | $r | ${cpu[$role]} | $(median ${cpu[$role]}) |"
done
log "report: $REPORT"
