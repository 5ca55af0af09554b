#!/usr/bin/env bash
# Snapshot speed: a 1M-row table read by `rowhook snapshot` through the trivial handler,
# with the server on the same machine.
#
#   tests/bench/snapshot.sh       # ~2 min on 2 cores after the build (~1 min more the first
#                                 # time, to fill the table in a private MariaDB)
#
# What it does:
#  1. builds rowhook (release) and the trivial handler (reads `id`, emits nothing) from
#     tests/guests, for wasm32-wasip2;
#  2. starts a private MariaDB (tests/mariadb.sh) and fills cdcbench.orders, the shared
#     workload's orders table (../shared/bench/workload: 13 columns, a BIGINT key, INT,
#     VARCHARs, CHAR, two DECIMALs, SMALLINT, two DATETIME(6), TEXT, TINYINT), with $ROWS rows;
#  3. runs `rowhook snapshot -c …` with the trivial handler on cdcbench.orders (ops =
#     ["snapshot"]), $REPEAT times, each from an empty store, and times each snapshot from
#     its log: from "snapshot queued" to "snapshot done" (the reads, the calls, the
#     checkpoints); the process's CPU time and peak memory come from /usr/bin/time;
#  4. prints a markdown table: rows per second of each run, their median, the chunk size,
#     the rowhook process's CPU seconds per million rows and its peak RSS.
# Everything also lands in $BENCH_DIR/results-<time>.md.
#
# Environment:
#   BENCH_DIR   work directory, kept between runs                              [/tmp/rowhook-bench-snapshot]
#   ROWS        rows in the table                                              [1000000]
#   CHUNK       snapshot_chunk_rows                                            [10000]
#   REPEAT      runs                                                           [5]
#   KEEP_DB     1: leave the server running at the end (REUSE_DB=1 takes it)   [0]
#   REUSE_DB    1: reuse a server and table left by KEEP_DB=1                  [0]
# The machine is shared: absolute figures drift between runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/rowhook-bench-snapshot}
ROWS=${ROWS:-1000000}
CHUNK=${CHUNK:-10000}
REPEAT=${REPEAT:-5}
KEEP_DB=${KEEP_DB:-0}
REUSE_DB=${REUSE_DB:-0}
DB=$BENCH_DIR/db
REPORT=$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S).md

log() { echo "snapshot.sh: $*" >&2; }
die() { log "$*"; exit 1; }
out() { echo "$*" | tee -a "$REPORT"; }
mkdir -p "$BENCH_DIR"
: >"$REPORT"

for t in mariadbd mariadb python3 cargo /usr/bin/time; do
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

# --- server and table ----------------------------------------------------------------------------
# shellcheck source=server.sh
source "$ROOT/tests/bench/server.sh"
start_server
trap stop_server EXIT
have=$(M -N -e "SELECT COUNT(*) FROM cdcbench.orders" 2>/dev/null || echo 0)
if [[ $have != "$ROWS" ]]; then
    log "filling cdcbench.orders with $ROWS rows"
    orders_table
    M cdcbench -e "SET SESSION sql_log_bin = 0;
        INSERT INTO orders (id, user_id, status, currency, amount, tax, qty, created_at, updated_at,
                            sku, note, attrs, is_gift)
        SELECT seq, seq % 50000, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), 'EUR',
               (seq % 100000) / 100, (seq % 10000) / 10000, 1 + seq % 9,
               TIMESTAMP('2024-01-01') + INTERVAL seq SECOND, NULL, CONCAT('sku-', seq % 1000),
               IF(seq % 3 = 0, CONCAT('note ', seq), NULL),
               CONCAT('{\"channel\":\"web\",\"n\":', seq % 97, '}'), seq % 2
        FROM seq_1_to_$ROWS" \
        || die "filling the table failed (the orders table of gen_workload.py changed?)"
fi

# --- runs ----------------------------------------------------------------------------------------
RUN=$BENCH_DIR/run
rates=()
cpus=()
rsss=()
for i in $(seq 1 "$REPEAT"); do
    rm -rf "$RUN" && mkdir -p "$RUN"
    cat >"$RUN/rowhook.toml" <<EOF
[source]
url = "mysql://root@127.0.0.1:$PORT"
server_id = 9301
snapshot_chunk_rows = $CHUNK

[state]
path = "state"

[[handlers]]
name = "trivial"
module = "$WASM"
tables = ["cdcbench.orders"]
ops = ["snapshot"]
EOF
    ROWHOOK_LOG=info NO_COLOR=1 /usr/bin/time -f "%U %S %M" -o "$RUN/time" \
        "$BIN" snapshot -c "$RUN/rowhook.toml" 2>"$RUN/log" &
    pid=$!
    until grep -q "snapshot done" "$RUN/log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$RUN/log" >&2; die "rowhook exited before the snapshot was done"; }
        sleep 0.2
    done
    pkill -INT -P "$pid" rowhook 2>/dev/null || kill -INT "$pid"
    wait "$pid" || true
    rate=$(python3 - "$RUN/log" "$ROWS" <<'EOF'
import re, sys, datetime
text = open(sys.argv[1]).read()
def at(what):
    line = next(l for l in text.splitlines() if what in l)
    return datetime.datetime.fromisoformat(re.match(r"(\S+?)Z", line).group(1))
secs = (at("snapshot done") - at("snapshot queued")).total_seconds()
print(round(int(sys.argv[2]) / secs))
EOF
)
    read -r user sys rss <"$RUN/time"
    cpu=$(python3 -c "print(round(($user + $sys) / ($ROWS / 1e6), 2))")
    log "run $i: $rate rows/s, $cpu CPU s per 1M rows, peak RSS $((rss / 1024)) MiB"
    rates+=("$rate")
    cpus+=("$cpu")
    rsss+=("$((rss / 1024))")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

out "## Snapshot: $ROWS rows of cdcbench.orders through the trivial handler"
out ""
out "chunks of $CHUNK rows; MariaDB on the same machine; $(nproc) cores"
out ""
out "| run | rows/s | rowhook CPU s per 1M rows | peak RSS |"
out "|---|---|---|---|"
for i in "${!rates[@]}"; do
    out "| $((i + 1)) | ${rates[$i]} | ${cpus[$i]} | ${rsss[$i]} MiB |"
done
out "| **median** | **$(median "${rates[@]}")** | $(median "${cpus[@]}") | $(median "${rsss[@]}") MiB |"
log "report: $REPORT"
