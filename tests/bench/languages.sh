#!/usr/bin/env bash
# What a handler costs per change in each language rowhook has an SDK for.
#
#   ROWHOOK=target/release/rowhook BINLOG=/tmp/mdb-3308/log/mysql-bin.000002 \
#       bash tests/bench/languages.sh
#
# BINLOG is the 1,000,000-row workload of ../shared/bench
# (`./start-mariadb.sh 3308; PORT=3308 ./workload/make_binlog.sh 500 42`).
# The same handler in Rust, C, JavaScript (QuickJS) and Python reads `id`
# and `status` of every `cdcbench.orders` change and emits them as one JSON
# line to a stdout sink (tests/guests/two-columns, tests/bench/languages/);
# js-nothing and python-nothing do nothing but let the SDK parse the change.
# Each is replayed over BINLOG with limits.memory_mb = MEMORY_MB (32); the
# figure is the CPU (user + sys) of the replay above one whose handler is
# never called (it subscribes to no table of the workload), per call. The
# start (loading the compiled handler from the compile cache, then
# instantiating it) and the memory line (growth over 1,000 calls) come
# from `rowhook check`. Needs what `cargo test --workspace` needs for the guests (the
# wasm32-wasip2 target, clang and wasi-libc, `npm ci` in guest-sdk/js,
# componentize-py) and GNU time. Quote ratios from one run: the machine is
# shared.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${ROWHOOK:?set ROWHOOK to a release rowhook binary}"
: "${BINLOG:?set BINLOG to the 1,000,000-row workload binlog}"
ROWHOOK=$(realpath "$ROWHOOK")
BINLOG=$(realpath "$BINLOG")
MEMORY_MB=${MEMORY_MB:-32}
WORK=$(mktemp -d /tmp/rowhook-languages.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "building the handlers" >&2
cargo build --release --target wasm32-wasip2 --quiet -p two-columns \
    --manifest-path "$ROOT/tests/guests/Cargo.toml" --target-dir "$ROOT/tests/guests/target"
cp "$ROOT/tests/guests/target/wasm32-wasip2/release/two_columns.wasm" "$WORK/rust.wasm"
make -s -C "$ROOT/tests/bench/languages" OUT="$WORK/c.wasm" "$WORK/c.wasm"
node "$ROOT/guest-sdk/js/bin/rowhook-js.js" build "$ROOT/tests/bench/languages/two-columns.js" -o "$WORK/js.wasm" 2>/dev/null
PYTHONPATH="$ROOT/guest-sdk/python" python3 -m rowhook_guest build "$ROOT/tests/bench/languages/two_columns.py" -o "$WORK/python.wasm" >/dev/null
# The interpreters' own cost: handlers that do nothing (the SDK parses the change).
node "$ROOT/guest-sdk/js/bin/rowhook-js.js" build "$ROOT/tests/bench/languages/nothing.js" -o "$WORK/js-nothing.wasm" 2>/dev/null
PYTHONPATH="$ROOT/guest-sdk/python" python3 -m rowhook_guest build "$ROOT/tests/bench/languages/nothing.py" -o "$WORK/python-nothing.wasm" >/dev/null

config() { # NAME TABLE
    cat > "$WORK/$1.toml" <<EOT
[state]
path = "state"

[sinks.out]
kind = "stdout"

[[handlers]]
name = "$1"
module = "$1.wasm"
tables = ["$2"]
sinks = ["out"]
limits = { memory_mb = $MEMORY_MB, time_ms = 1000 }
on_error = "halt"
EOT
}

replay() { # NAME -> CPU seconds; the summary line in $WORK/NAME.err
    (cd "$WORK" && /usr/bin/time -f "%U %S" -o "$WORK/$1.time" "$ROWHOOK" replay -c "$1.toml" "$BINLOG" > /dev/null 2> "$WORK/$1.err")
    awk '{printf "%.2f", $1 + $2}' "$WORK/$1.time"
}

cp "$WORK/rust.wasm" "$WORK/none.wasm"
config none "cdcbench.no_such_table"
base=$(replay none)
echo "replay, no handler called: $base CPU-s"
printf '%-14s %10s %8s %14s %18s  %s\n' language CPU-s calls "us per change" "start, cached (ms)" "memory (rowhook check)"
for lang in rust c js python js-nothing python-nothing; do
    config "$lang" "cdcbench.orders"
    # The first check compiles and fills the compile cache; the second
    # loads from it: its load and instantiation times are the handler's
    # start, as at every start and reload of rowhook.
    (cd "$WORK" && "$ROWHOOK" check -c "$lang.toml" > /dev/null) || true
    checked=$(cd "$WORK" && "$ROWHOOK" check -c "$lang.toml" || true)
    memory=$(echo "$checked" | grep -o "memory [0-9.]* MiB after 100 calls, [0-9.]* MiB after 1000[^;]*" || true)
    load=$(echo "$checked" | grep -o "loads from the compile cache ([0-9]* ms)" | grep -o "[0-9]*" || echo "?")
    inst=$(echo "$checked" | grep -o "starts in [0-9]* ms" | grep -o "[0-9]*" || echo "?")
    cpu=$(replay "$lang")
    calls=$(grep -o "[0-9]* handler calls" "$WORK/$lang.err" | cut -d' ' -f1)
    per=$(echo "($cpu - $base) * 1000000 / $calls" | bc -l)
    printf '%-14s %10s %8s %14.2f %18s  %s\n' "$lang" "$cpu" "$calls" "$per" "$load + $inst" "$memory"
done
