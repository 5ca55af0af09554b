#!/usr/bin/env bash
# Fair sharing between tenants, on the shared 1M-row workload: how much of its
# throughput a well-behaved tenant keeps beside a tenant whose handler loops to
# its time limit on every call and one whose sink takes 1,000 messages a second.
#
#   tests/bench/tenants.sh        # ~4 min on 2 cores after the build (~6 min more the first
#                                 # time, to load the workload into a private MariaDB)
#
# What it does:
#  1. builds rowhook (release) and the handlers trivial (reads `id`, emits nothing), counting
#     (the same plus one message per change) and spinner (loops until its deadline) from
#     tests/guests, for wasm32-wasip2;
#  2. starts a private MariaDB (tests/mariadb.sh) and loads the shared workload into one
#     binlog file (../shared/bench/workload/make_binlog.sh $ROUNDS 42: 1M row changes of
#     cdcbench.orders and cdcbench.user_info, 100 per transaction);
#  3. runs `rowhook run` from the start of that file, $REPEAT times each way:
#       alone       [tenants.c] only: the trivial handler on cdcbench.*;
#       neighbours  [tenants.c] as above, beside
#                   [tenants.a] the spinner on cdcbench.* (the default 100 ms time limit,
#                               on_error = "skip", breaker = { failures = 0 }: it times out
#                               on every call and is never suspended), and
#                   [tenants.b] counting on cdcbench.* into a FIFO sink that a reader drains
#                               at 1,000 lines a second;
#                   every tenant with the default share of CPU (a third of a core);
#     and takes C's throughput: its handler's calls (rowhook_handler_calls_total, polled on
#     /metrics every 20 ms) over the time from its first call to its last;
#  4. prints a markdown table: C's rows per second alone and beside A and B (the median of
#     the runs), their ratio, and how many binlog connections the server served when C was
#     done (one for the shared loop plus one per lane on a connection of its own).
# Everything also lands in $BENCH_DIR/results-<time>.md.
#
# Environment:
#   BENCH_DIR   work directory, kept between runs                              [/tmp/rowhook-bench-tenants]
#   ROUNDS      workload rounds of 2000 row changes                            [500 = 1M rows]
#   REPEAT      runs of each kind                                              [3]
#   KEEP_DB     1: leave the server running at the end (REUSE_DB=1 takes it)   [0]
#   REUSE_DB    1: reuse a server and workload left by KEEP_DB=1               [0]
#   KEEP_RUNS   1: keep each run's directory (config, log, state) in $BENCH_DIR [0]
# The machine is shared: quote the ratio of one run, not absolute figures.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED_BENCH=$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd) || { echo "tenants.sh: ../shared/bench not found next to the repo" >&2; exit 1; }
BENCH_DIR=${BENCH_DIR:-/tmp/rowhook-bench-tenants}
ROUNDS=${ROUNDS:-500}
REPEAT=${REPEAT:-3}
KEEP_DB=${KEEP_DB:-0}
REUSE_DB=${REUSE_DB:-0}
DB=$BENCH_DIR/db
GEN=$BENCH_DIR/workload
REPORT=$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S).md

log() { echo "tenants.sh: $*" >&2; }
die() { log "$*"; exit 1; }
out() { echo "$*" | tee -a "$REPORT"; }
mkdir -p "$BENCH_DIR"
: >"$REPORT"

for t in mariadbd mariadb python3 cargo; do
    command -v "$t" >/dev/null || die "$t is needed"
done

# --- build ---------------------------------------------------------------------------------------
log "building rowhook (release) and the handlers"
(cd "$ROOT" && cargo build --release -p rowhook --bins 2>&1 | tail -n 2) >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/rowhook
[[ -x $BIN ]] || die "$BIN was not built"
GUESTS=$ROOT/tests/guests
(cd "$GUESTS" && cargo build --release --target wasm32-wasip2 -p trivial -p counting -p spinner --quiet --target-dir "$GUESTS/target") >&2 \
    || die "building the handlers of $GUESTS failed (rustup target add wasm32-wasip2?)"
WASM=$GUESTS/target/wasm32-wasip2/release

# --- server and workload -------------------------------------------------------------------------
M() { mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uroot "$@"; }
cleanup() {
    if [[ $KEEP_DB == 1 ]]; then
        log "server left running: port $PORT, dir $DB"
    else
        "$ROOT/tests/mariadb.sh" stop "$DB" || true
    fi
}
if [[ $REUSE_DB == 1 && -s $BENCH_DIR/workload.env && -s $DB/pid ]] && kill -0 "$(cat "$DB/pid")" 2>/dev/null; then
    # shellcheck disable=SC1091
    source "$BENCH_DIR/workload.env"
    PORT=$DB_PORT
    log "reusing the server on port $PORT"
else
    "$ROOT/tests/mariadb.sh" stop "$DB"
    PORT=$("$ROOT/tests/mariadb.sh" start "$DB" --innodb-buffer-pool-size=1G --innodb-log-file-size=512M)
    log "MariaDB on 127.0.0.1:$PORT; loading the workload ($ROUNDS rounds x 2000 row changes)"
    rm -rf "$GEN" && mkdir -p "$GEN" && cp -r "$SHARED_BENCH/workload" "$GEN/" && chmod -R u+w "$GEN"
    (cd "$GEN" && PORT=$PORT HOST=127.0.0.1 USER_DB=root ./workload/make_binlog.sh "$ROUNDS" 42 >&2)
    cp "$GEN/workload.env" "$BENCH_DIR/workload.env"
    # shellcheck disable=SC1091
    source "$BENCH_DIR/workload.env"
fi
trap cleanup EXIT

# --- runs ----------------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# config DIR HTTP_PORT NEIGHBOURS(0|1): writes DIR/rowhook.toml
config() {
    local dir=$1 http=$2 neighbours=$3
    cat >"$dir/rowhook.toml" <<EOF
[source]
url = "mysql://root@127.0.0.1:$PORT"
server_id = 9100
start = { file = "$BINLOG_FILE", pos = 4 }

[state]
path = "state"

[http]
listen = "127.0.0.1:$http"

[tenants.c]
tables = ["cdcbench.*"]

[[handlers]]
name = "c"
tenant = "c"
module = "$WASM/trivial.wasm"
tables = ["cdcbench.*"]
EOF
    [[ $neighbours == 1 ]] || return 0
    cat >>"$dir/rowhook.toml" <<EOF

[sinks.calls]
kind = "fifo"
path = "calls.fifo"

[tenants.a]
tables = ["cdcbench.*"]

[tenants.b]
tables = ["cdcbench.*"]
sinks = ["calls"]

[[handlers]]
name = "a"
tenant = "a"
module = "$WASM/spinner.wasm"
tables = ["cdcbench.*"]
on_error = "skip"
breaker = { failures = 0 }

[[handlers]]
name = "b"
tenant = "b"
module = "$WASM/counting.wasm"
tables = ["cdcbench.*"]
sinks = ["calls"]
EOF
}

# run KIND(alone|neighbours): prints "ROWS_PER_SEC DUMP_CONNECTIONS"
run() {
    local kind=$1 dir http neighbours=0 pid reader="" rate dumps
    [[ $kind == neighbours ]] && neighbours=1
    dir=$(mktemp -d "$BENCH_DIR/run-XXXX")
    http=$(free_port)
    config "$dir" "$http" "$neighbours"
    if [[ $neighbours == 1 ]]; then
        mkfifo "$dir/calls.fifo"
        # The slow consumer: 1,000 lines a second.
        python3 - "$dir/calls.fifo" <<'PY' &
import sys, time
start = None
with open(sys.argv[1], "rb") as f:
    for n, _ in enumerate(f):
        if start is None:
            start = time.monotonic()
        wait = start + n / 1000.0 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
PY
        reader=$!
    fi
    (cd "$dir" && exec "$BIN" run -c rowhook.toml) >"$dir/rowhook.log" 2>&1 &
    pid=$!
    rate=$(python3 - "http://127.0.0.1:$http/metrics" "$N_ROWS" "$PORT" "$pid" <<'PY'
import os, re, subprocess, sys, time, urllib.request
url, n, port, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
pattern = re.compile(r'^rowhook_handler_calls_total\{[^}]*handler="c"[^}]*\} (\S+)$', re.M)
first = last = None
dumps = 0
deadline = time.monotonic() + 1800
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("rowhook exited")
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        time.sleep(0.05)
        continue
    now = time.monotonic()
    m = pattern.search(body)
    calls = float(m.group(1)) if m else 0.0
    if calls > 0 and first is None:
        first = (now, calls)
    if calls >= n:
        last = (now, calls)
        # The lanes are still reading: how many connections the server serves.
        out = subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "-N", "-e", "SHOW PROCESSLIST"],
                             capture_output=True, text=True).stdout
        dumps = sum(1 for line in out.splitlines() if "Binlog Dump" in line)
        break
    time.sleep(0.02)
if first is None or last is None:
    sys.exit("C did not take every row change in time")
print(f"{(last[1] - first[1]) / (last[0] - first[0]):.0f} {dumps}")
PY
) || { kill "$pid" 2>/dev/null; tail -n 20 "$dir/rowhook.log" >&2; die "the $kind run failed (log: $dir/rowhook.log)"; }
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [[ -n $reader ]]; then kill "$reader" 2>/dev/null || true; wait "$reader" 2>/dev/null || true; fi
    if [[ $neighbours == 1 ]] && ! grep -q "reads on a connection of its own" "$dir/rowhook.log"; then
        log "note: no lane left the shared loop in $dir"
    fi
    echo "$rate"
    [[ ${KEEP_RUNS:-0} == 1 ]] || rm -rf "$dir"
    # The server lets go of the replicas before the next run.
    for _ in $(seq 50); do
        M -N -e "SHOW PROCESSLIST" | grep -q "Binlog Dump" || break
        sleep 0.2
    done
}

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

alone=() neighbours=() dumps=() dumps_alone=()
for ((i = 1; i <= REPEAT; i++)); do
    log "run $i of $REPEAT: C alone"
    read -r r d < <(run alone)
    alone+=("$r")
    dumps_alone+=("$d")
    log "  $r rows/s, $d binlog connections"
    log "run $i of $REPEAT: C beside A and B"
    read -r r d < <(run neighbours)
    neighbours+=("$r")
    dumps+=("$d")
    log "  $r rows/s, $d binlog connections"
done
A=$(printf '%s\n' "${alone[@]}" | median)
N=$(printf '%s\n' "${neighbours[@]}" | median)
out "## Fair sharing: tenant C's throughput beside a looping and a slow tenant"
out ""
out "$((N_ROWS / 1000))k row changes (\`tests/bench/tenants.sh\`, $REPEAT runs each, median; C runs the trivial handler on every change)."
out ""
out "| C's lane | rows/s | runs | binlog connections |"
out "|---|---:|---|---:|"
out "| alone | $A | ${alone[*]} | ${dumps_alone[*]} |"
out "| beside A (loops to its time limit) and B (sink of 1,000 msg/s) | $N | ${neighbours[*]} | ${dumps[*]} |"
out ""
out "C keeps $(python3 -c "print(f'{100 * $N / $A:.0f}')")% of its throughput alone."
log "report: $REPORT"
