#!/usr/bin/env bash
# Messages per second into a webhook receiver, every request answered 200
# before the next, end to end, and rowhook's peak RSS.
#
#   tests/bench/http.sh            # ~2 min on 2 cores after the release build
#
# 1. builds rowhook (release) and the `counting` handler (tests/guests/trivial/counting:
#    one ~90-byte JSON message per row change, keyed by the change id);
# 2. makes a binlog of one transaction inserting 1,000,000 narrow rows (a private MariaDB,
#    tests/mariadb.sh, INSERT ... SELECT FROM seq_1_to_1000000), unless $BINLOG names one;
# 3. starts tests/bench/http_receiver.py (Python asyncio, HTTP/1.1 keep-alive, checks every
#    signature) on a free port;
# 4. times `rowhook replay` of it, under GNU time for the peak RSS, with the handler's sink
#    as a file (`fsync = "never"`, the pipeline's own ceiling) and as an http sink in
#    `mode = "batch"` (default max_batch_messages 1000 and max_body_bytes 1 MiB, signed with
#    hmac_secret), and checks that the receiver counted 1,000,000 lines, all signed right.
#    The receiver's CPU seconds are printed too: it must not be the bottleneck.
# The machine is shared: compare the rows of one run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-/tmp/rowhook-bench-http}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK"

(cd "$ROOT" && cargo build --release -p rowhook --bins 2>&1 | tail -n 1) >&2
(cd "$ROOT/tests/guests" && cargo build --release --target wasm32-wasip2 -p counting --quiet --target-dir "$ROOT/tests/guests/target") >&2
BIN=$TARGET_DIR/release/rowhook
WASM=$ROOT/tests/guests/target/wasm32-wasip2/release/counting.wasm

if [[ -z ${BINLOG:-} ]]; then
    BINLOG=$WORK/txn-1M.binlog
    if [[ ! -s $BINLOG ]]; then
        rm -rf "$WORK/db"
        port=$("$ROOT/tests/mariadb.sh" start "$WORK/db")
        M() { mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot "$@"; }
        M -e "CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT PRIMARY KEY, amount INT NOT NULL, note VARCHAR(32) NOT NULL)"
        M bench -e "INSERT INTO bench.t SELECT seq, seq % 1000, 'row' FROM seq_1_to_1000000; FLUSH BINARY LOGS"
        cp "$WORK/db/log/mysql-bin.000001" "$BINLOG"
        "$ROOT/tests/mariadb.sh" stop "$WORK/db"
    fi
fi

export WEBHOOK_SECRET=bench-secret-0123456789abcdef
HPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$ROOT/tests/bench/http_receiver.py" "$HPORT" &
HPID=$!
trap 'kill $HPID 2>/dev/null || true' EXIT
stats() { python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$HPORT/stats').read().decode())"; }
until stats >/dev/null 2>&1; do sleep 0.05; done

run() { # NAME SINK-KEYS
    cat >"$WORK/$1.toml" <<TOML
[sinks.calls]
$2

[[handlers]]
name = "counting"
module = "$WASM"
tables = ["bench.t"]
sinks = ["calls"]
limits = { time_ms = 1000 }
TOML
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -f %M -o "$WORK/$1.rss" "$BIN" replay -c "$WORK/$1.toml" "$BINLOG" >/dev/null
    end=$(date +%s.%N)
    python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'| $1 | {s:.2f} s | {1e6/s:,.0f} messages/s | {int(sys.argv[3])/1024:.0f} MiB |')" \
        "$start" "$end" "$(tail -n 1 "$WORK/$1.rss")"
}

echo "| sink | 1,000,000 messages | rate | peak RSS |"
echo "|---|---|---|---|"
rm -f "$WORK/out.jsonl"
run file "kind = \"file\"
path = \"out.jsonl\"
fsync = \"never\""
read -r _ _ _ cpu0 <<<"$(stats)"
run http-batch "kind = \"http\"
url = \"http://127.0.0.1:$HPORT/hook\"
mode = \"batch\"
hmac_secret = \"\${WEBHOOK_SECRET}\""
read -r lines requests bad cpu1 <<<"$(stats)"
echo "receiver: $lines lines in $requests requests, $bad bad signatures, $(python3 -c "print(f'{$cpu1-$cpu0:.2f}')") CPU seconds"
[[ $lines == 1000000 && $bad == 0 ]] || { echo "http.sh: the receiver counted $lines lines ($bad bad signatures), not 1000000" >&2; exit 1; }
