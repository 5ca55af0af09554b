#!/usr/bin/env bash
# What the HTTP server for operators costs: `rowhook replay` of a binlog of
# $ROWS row changes (inserts of 1,000 rows per transaction) with the trivial
# handler, without [http], and with [http] while a client fetches /metrics
# and /status every second, $REPEAT runs each, alternating; medians.
#
#   tests/bench/http-server.sh            # ~2 min on 2 cores after the build
#   ROWS=500000 REPEAT=5 tests/bench/http-server.sh
#   ROWHOOK=path/to/rowhook tests/bench/http-server.sh   # that binary, no build
#
# Prints rows per second of wall time and per CPU-second (user+sys of the
# rowhook process), and the ratio on/off. The machine is shared: quote the
# ratio of one run, not absolute figures.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROWS=${ROWS:-2000000}
REPEAT=${REPEAT:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/rowhook-bench-http-server}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
log() { echo "http-server.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[[ -x /usr/bin/time ]] || die "needs GNU time (/usr/bin/time)"
command -v curl >/dev/null || die "needs curl"
if [[ -z ${ROWHOOK:-} ]]; then
    (cd "$ROOT" && cargo build --release -p rowhook --bin rowhook 2>&1 | tail -n 1) >&2
    ROWHOOK=$TARGET/release/rowhook
fi
GUESTS=$ROOT/tests/guests
(cd "$GUESTS" && cargo build --release --target wasm32-wasip2 -p trivial --quiet --target-dir "$GUESTS/target") >&2
TRIVIAL=$GUESTS/target/wasm32-wasip2/release/trivial.wasm

mkdir -p "$BENCH_DIR"
DB=$BENCH_DIR/db
bash "$ROOT/tests/mariadb.sh" stop "$DB"
PORT=$(bash "$ROOT/tests/mariadb.sh" start "$DB")
trap 'bash "$ROOT/tests/mariadb.sh" stop "$DB"' EXIT
log "writing $ROWS rows"
{
    echo "CREATE DATABASE bench; CREATE TABLE bench.orders (id BIGINT PRIMARY KEY, customer INT, amount DECIMAL(10,2), status VARCHAR(16), note VARCHAR(64));"
    for ((t = 0; t < ROWS / 1000; t++)); do
        echo "INSERT INTO bench.orders SELECT $t * 1000 + seq, seq % 97, seq / 7, 'new', 'row $t' FROM seq_1_to_1000;"
    done
    echo "FLUSH BINARY LOGS;"
} | mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uroot test
mapfile -t FILES < <(ls "$DB"/log/mysql-bin.[0-9]*)

for mode in off on; do
    {
        [[ $mode == on ]] && printf '[http]\nlisten = "127.0.0.1:0"\n\n'
        printf '[[handlers]]\nname = "trivial"\nmodule = "%s"\ntables = ["bench.orders"]\n' "$TRIVIAL"
    } >"$BENCH_DIR/$mode.toml"
done

# One replay: prints "wall cpu changes".
replay() {
    local mode=$1 err=$BENCH_DIR/$1.err
    ROWHOOK_LOG=info NO_COLOR=1 /usr/bin/time -f '%e %U %S' -o "$BENCH_DIR/$mode.time" \
        "$ROWHOOK" replay -c "$BENCH_DIR/$mode.toml" "${FILES[@]}" 2>"$err" &
    local pid=$! addr=""
    if [[ $mode == on ]]; then
        while kill -0 "$pid" 2>/dev/null; do
            [[ -z $addr ]] && addr=$(grep -o 'addr=[0-9.:]*' "$err" | head -n 1 | cut -d= -f2 || true)
            if [[ -n $addr ]]; then
                curl -fsS -o /dev/null "http://$addr/metrics" || true
                curl -fsS -o /dev/null "http://$addr/status" || true
                sleep 1
            else
                sleep 0.02
            fi
        done
    fi
    wait "$pid"
    local changes
    changes=$(grep -o '[0-9]* row changes' "$err" | cut -d' ' -f1)
    [[ $changes == "$ROWS" ]] || die "$mode: $changes row changes, expected $ROWS: $(cat "$err")"
    read -r wall user sys <"$BENCH_DIR/$mode.time"
    echo "$wall $(echo "$user + $sys" | bc) $changes"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$BENCH_DIR/off.runs"
: >"$BENCH_DIR/on.runs"
for ((i = 0; i < REPEAT; i++)); do
    for mode in off on; do
        replay "$mode" >>"$BENCH_DIR/$mode.runs"
    done
done
declare -A WALL CPU
for mode in off on; do
    WALL[$mode]=$(cut -d' ' -f1 "$BENCH_DIR/$mode.runs" | median)
    CPU[$mode]=$(cut -d' ' -f2 "$BENCH_DIR/$mode.runs" | median)
done
echo "| replay of $ROWS row changes, trivial handler | wall s | rows/s | CPU s | rows per CPU-second |"
echo "|---|---|---|---|---|"
for mode in off on; do
    label="no [http]"
    [[ $mode == on ]] && label="[http], /metrics + /status every second"
    echo "| $label | ${WALL[$mode]} | $(echo "$ROWS / ${WALL[$mode]}" | bc) | ${CPU[$mode]} | $(echo "$ROWS / ${CPU[$mode]}" | bc) |"
done
echo
echo "on/off rows per second: $(echo "scale=3; ${WALL[off]} / ${WALL[on]}" | bc)"
