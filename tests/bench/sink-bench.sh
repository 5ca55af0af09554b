# What the sink benchmarks (redis.sh, amqp.sh, mqtt.sh, http.sh, kafka.sh) share; sourced, not run.
#
# The caller sets ROOT (the repository) and WORK (its work directory) first. This
#  - builds rowhook (release; ROWHOOK_BIN=PATH uses that binary instead) and the `counting` handler (tests/guests/trivial/counting: one
#    ~90-byte message per row change, keyed by the change id), and sets BIN and WASM;
#  - sets BINLOG to $BINLOG if given, else to $WORK/txn-1M.binlog, made once with a private
#    MariaDB (tests/mariadb.sh): one transaction inserting 1,000,000 narrow rows into bench.t;
#  - defines `run NAME SINK-KEYS`: replays BINLOG with the handler writing to a sink of those
#    keys, and prints a table row: wall time, messages per second, peak RSS (GNU time %M);
#  - defines `file_baseline`: prints the table's header and the row of a file sink without
#    fsync, the pipeline's own ceiling that each sink's rows are read against.
# shellcheck shell=bash

[ -x /usr/bin/time ] || { echo "$0: needs GNU time (apt-get install time)" >&2; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK"

if [[ -n ${ROWHOOK_BIN:-} ]]; then
    BIN=$ROWHOOK_BIN
else
    (cd "$ROOT" && cargo build --release -p rowhook --bins 2>&1 | tail -n 1) >&2
    BIN=$TARGET_DIR/release/rowhook
fi
(cd "$ROOT/tests/guests" && cargo build --release --target wasm32-wasip2 -p counting --quiet --target-dir "$ROOT/tests/guests/target") >&2
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

file_baseline() {
    echo "| sink | 1,000,000 messages | rate | peak RSS |"
    echo "|---|---|---|---|"
    rm -f "$WORK/out.jsonl"
    run file "kind = \"file\"
path = \"out.jsonl\"
fsync = \"never\""
}
