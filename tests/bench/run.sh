#!/usr/bin/env bash
# rowhook's speed and memory figures, end to end, in one command.
#
#   tests/bench/run.sh                  # rowhook alone: ~3-5 min on 2 cores after the build
#   BENCH_PEERS=1 tests/bench/run.sh    # + ../shared/bench/bench.py with rowhook beside the peers
#                                       #   (~6 min more; the first time also ~12 min to build the peers)
#   ONLY=handlers tests/bench/run.sh    # only the handler figures (steps 3, 3b, 4b, 5b)
#   ONLY=inspect tests/bench/run.sh     # only the `rowhook inspect` figures (steps 3-6)
#
# What it does:
#  1. builds rowhook (release) and the trivial handler (tests/guests/trivial, wasm32-wasip2:
#     reads the `id` column of each change, emits nothing) with its sibling `counting` (the
#     same plus one message per change); the benches build when they run;
#  2. starts a private MariaDB (tests/mariadb.sh: ROW binlog, FULL row image and metadata,
#     max_allowed_packet 1G) under $BENCH_DIR/db;
#  3. writes four binlog files, one per case (the handler figures use workload, txn-1M, blob-40M):
#       workload  the shared 1M-row workload (../shared/bench/workload/make_binlog.sh 500 42:
#                 100 rows per transaction, orders + user_info, inserts/updates/deletes)
#       txn-100k  one transaction inserting 100,000 narrow rows (INSERT ... SELECT FROM seq_1_to_100000)
#       txn-1M    one transaction inserting 1,000,000 narrow rows
#       blob-40M  $BLOBS rows of one 40 MiB LONGBLOB each
#  3b. and one more for the handler figures:
#       ten       the same row shape spread evenly over ten tables cdcbench10.orders_0..9:
#                 $ROUNDS x 2000 row changes, 100 rows per transaction, transactions round-robin
#                 over the tables, the workload's op mix (80% inserts, 15% updates, 5% deletes),
#                 row values copied from the workload's `orders` rows by SQL on the server
#  4. times `rowhook inspect` on each, live (--url, the server streams it) and from the file
#     (--file), counting (--format count) and printing JSON to /dev/null, $REPEAT runs each,
#     median; CPU = user+sys of the rowhook process, peak RSS from GNU time (%M);
#  4b. times `rowhook replay -c CONFIG FILE` with the trivial handler ($REPEAT runs, median,
#     GNU time): subscribed to every table of the workload (calls = 1M), to one table of the
#     ten-table file (calls must equal that table's row changes: the other nine cost no call)
#     and to all ten; checks the `handler calls` and `messages` counts replay prints.
#     Durability: the workload with `replay --checkpoint` (a fresh [state] path per run) at
#     commit_interval_ms 500 and 10, and the rows per CPU-second that keeps; then two handlers,
#     trivial and counting (a file sink that must end with exactly one line per change), with
#     --checkpoint over the workload, txn-1M and blob-40M, for the peak RSS (which should be the
#     same for txn-1M as for the workload: it must not grow with the transaction);
#  5. runs `cargo bench -p rowhook --bench decode` on the workload file;
#  5b. runs `cargo bench -p rowhook --bench handlers` on the workload and the ten-table file;
#  6. with BENCH_PEERS=1: builds the peers of ../shared/bench in a copy (shared/ is read-only)
#     and runs its bench.py with rowhook as `--ours`.
# Prints markdown tables; everything also lands in $BENCH_DIR/results-<time>.md.
#
# Environment:
#   BENCH_DIR     work directory, kept between runs (peer builds are reused)  [/tmp/rowhook-bench]
#   ROUNDS        workload rounds of 2000 row changes                          [500 = 1M rows]
#   REPEAT        runs per measurement                                         [3]
#   BLOBS         number of 40 MiB rows                                        [5]
#   BENCH_PEERS   1: also run bench.py with the peers                           [0]
#   PEER_LIST     peers for bench.py (comma list; rowhook is added first)      [all of peers.conf]
#   REUSE_DB      1: keep a server and binlogs left by an earlier run with KEEP_DB=1 [0]
#                 (binlogs that run did not make, e.g. after ONLY=handlers, are made now)
#   ONLY          handlers | inspect: run only that part                         [both]
#   TEN_TABLE     the table of the ten-table file the 1-in-10 handler subscribes to [orders_3]
#   KEEP_DB       1: leave the server running at the end                        [0]
# The machine is shared: quote ratios between rows of one run, not absolute times.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED_BENCH=$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd) || { echo "run.sh: ../shared/bench not found next to the repo" >&2; exit 1; }
BENCH_DIR=${BENCH_DIR:-/tmp/rowhook-bench}
ROUNDS=${ROUNDS:-500}
REPEAT=${REPEAT:-3}
BLOBS=${BLOBS:-5}
BENCH_PEERS=${BENCH_PEERS:-0}
REUSE_DB=${REUSE_DB:-0}
KEEP_DB=${KEEP_DB:-0}
ONLY=${ONLY:-}
TEN_TABLE=${TEN_TABLE:-orders_3}
case $ONLY in
    "" | handlers | inspect) ;;
    *) echo "run.sh: ONLY=$ONLY: expected handlers or inspect" >&2; exit 1 ;;
esac
want() { [[ -z $ONLY || $ONLY == "$1" ]]; }
DB=$BENCH_DIR/db
GEN=$BENCH_DIR/peers-bench   # writable copy of ../shared/bench: workload.env, peer builds, results/
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT=$BENCH_DIR/results-$STAMP.md

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 1; }

mkdir -p "$BENCH_DIR"
: >"$REPORT"
out() { echo "$*" | tee -a "$REPORT"; }

# --- tools ---------------------------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time (peak RSS)"
    apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
for t in mariadbd mariadb python3 bc cargo; do
    command -v "$t" >/dev/null || die "$t is needed"
done

# --- build ---------------------------------------------------------------------------------------
log "building rowhook (release)"
(cd "$ROOT" && cargo build --release -p rowhook --bins 2>&1 | tail -n 2) >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/rowhook
[[ -x $BIN ]] || die "$BIN was not built"
if want handlers; then
    log "building the trivial and counting handlers (wasm32-wasip2)"
    GUESTS=$ROOT/tests/guests
    (cd "$GUESTS" && cargo build --release --target wasm32-wasip2 -p trivial -p counting -p projecting -p spinner --quiet --target-dir "$GUESTS/target") >&2 \
        || die "building $GUESTS/trivial failed (rustup target add wasm32-wasip2?)"
    TRIVIAL=$GUESTS/target/wasm32-wasip2/release/trivial.wasm
    COUNTING=$GUESTS/target/wasm32-wasip2/release/counting.wasm
    SPINNER=$GUESTS/target/wasm32-wasip2/release/spinner.wasm
    PROJECTING=$GUESTS/target/wasm32-wasip2/release/projecting.wasm
    [[ -s $SPINNER ]] || die "$SPINNER was not built"
    [[ -s $TRIVIAL ]] || die "$TRIVIAL was not built"
    [[ -s $COUNTING ]] || die "$COUNTING was not built"
fi

# --- server and binlogs --------------------------------------------------------------------------
M() { mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uroot "$@"; }

# The binlog file the server writes now; after this, `FLUSH BINARY LOGS` closes it.
fresh_binlog() {
    M -e "FLUSH BINARY LOGS"
    M -N -e "SHOW MASTER STATUS" | awk '{print $1}'
}

cleanup() {
    if [[ $KEEP_DB == 1 ]]; then
        log "server left running: port $PORT, dir $DB (tests/mariadb.sh stop $DB)"
    else
        "$ROOT/tests/mariadb.sh" stop "$DB" || true
    fi
}

# refresh the copy of the shared bench (scripts only: builds, venv, node_modules stay)
mkdir -p "$GEN"
cp -r --preserve=timestamps "$SHARED_BENCH/." "$GEN/"
chmod -R u+w "$GEN"

# cases.env: KEY=VALUE lines that REUSE_DB=1 reads back; `record` appends to it.
record() {
    local kv
    for kv in "$@"; do echo "$kv" >>"$BENCH_DIR/cases.env"; done
}

if [[ $REUSE_DB == 1 && -s $BENCH_DIR/cases.env && -s $DB/pid ]] && kill -0 "$(cat "$DB/pid")" 2>/dev/null; then
    # shellcheck disable=SC1091
    source "$BENCH_DIR/cases.env"
    log "reusing the server on port $PORT and the binlogs in $DB/log"
    trap cleanup EXIT
else
    "$ROOT/tests/mariadb.sh" stop "$DB"
    PORT=$("$ROOT/tests/mariadb.sh" start "$DB" --innodb-buffer-pool-size=1G --innodb-log-file-size=512M)
    trap cleanup EXIT
    log "MariaDB on 127.0.0.1:$PORT"

    log "loading the workload: $ROUNDS rounds x 2000 row changes (make_binlog.sh)"
    (cd "$GEN" && PORT=$PORT HOST=127.0.0.1 USER_DB=root ./workload/make_binlog.sh "$ROUNDS" 42 >&2)
    echo "SERVER_PID_FILE=$DB/pid" >>"$GEN/workload.env"
    # shellcheck disable=SC1091
    source "$GEN/workload.env"
    WL_FILE=$BINLOG_FILE
    # shellcheck disable=SC2153 # N_ROWS comes from workload.env
    WL_ROWS=$N_ROWS
    : >"$BENCH_DIR/cases.env"
    record "PORT=$PORT" "WL_FILE=$WL_FILE" "WL_ROWS=$WL_ROWS"
fi

# (both parts: the handler figures replay txn-1M and blob-40M too)
if [[ -z ${TXN100K_FILE:-} ]]; then
    M cdcbench -e "CREATE TABLE narrow (id INT UNSIGNED NOT NULL PRIMARY KEY, v BIGINT NOT NULL, s VARCHAR(16) NOT NULL);
                   CREATE TABLE blobs (id INT UNSIGNED NOT NULL PRIMARY KEY, b LONGBLOB NOT NULL)"
    log "one transaction of 100,000 rows"
    TXN100K_FILE=$(fresh_binlog)
    M cdcbench -e "BEGIN; INSERT INTO narrow SELECT seq, seq * 7, CONCAT('row-', seq) FROM seq_1_to_100000; COMMIT"
    log "one transaction of 1,000,000 rows"
    TXN1M_FILE=$(fresh_binlog)
    M cdcbench -e "BEGIN; INSERT INTO narrow SELECT 100000 + seq, seq * 7, CONCAT('row-', seq) FROM seq_1_to_1000000; COMMIT"
    log "$BLOBS rows of 40 MiB"
    BLOB_FILE=$(fresh_binlog)
    for ((i = 1; i <= BLOBS; i++)); do
        # 40 MiB: a random 1 KiB block repeated (the value is built by the server, no 40 MiB statement)
        M cdcbench -e "INSERT INTO blobs VALUES ($i, REPEAT(RANDOM_BYTES(1024), 40 * 1024))"
    done
    M -e "FLUSH BINARY LOGS"
    record "TXN100K_FILE=$TXN100K_FILE" "TXN1M_FILE=$TXN1M_FILE" "BLOB_FILE=$BLOB_FILE" "BLOBS=$BLOBS"
fi

if want handlers && [[ -z ${TEN_FILE:-} ]]; then
    # The workload's row shape over ten tables. The rows are the workload's own `orders` rows
    # (copied, numbered, into a staging table that is not binlogged), inserted 100 per
    # transaction by INSERT ... SELECT; every round of 20 transactions has the workload's
    # mix (16 inserts, 3 updates, 1 delete of 100 rows each) and puts transaction j of round
    # r on table (j + r) % 10, so each table gets a tenth of every op. An update changes the
    # newest live 100 ids of its table, a delete removes the oldest: each hits 100 rows.
    log "the ten-table workload: $ROUNDS rounds x 2000 row changes over cdcbench10.orders_0..9"
    M cdcbench -e "SET SESSION sql_log_bin = 0;
                   DROP TABLE IF EXISTS ten_src;
                   CREATE TABLE ten_src ENGINE=InnoDB SELECT ROW_NUMBER() OVER (ORDER BY id) AS n, o.* FROM orders o;
                   ALTER TABLE ten_src ADD PRIMARY KEY (n)"
    M -e "DROP DATABASE IF EXISTS cdcbench10; CREATE DATABASE cdcbench10"
    for ((t = 0; t < 10; t++)); do
        M -e "CREATE TABLE cdcbench10.orders_$t LIKE cdcbench.orders"
    done
    src_rows=$(M -N -e "SELECT COUNT(*) DIV 100 * 100 FROM cdcbench.ten_src")
    (( src_rows >= 100 )) || die "the workload left too few orders rows ($src_rows) to copy"
    TEN_FILE=$(fresh_binlog)
    python3 - "$ROUNDS" "$src_rows" <<'PY' | M
import sys

rounds, src_rows = int(sys.argv[1]), int(sys.argv[2])
cols = "user_id, status, currency, amount, tax, qty, created_at, updated_at, sku, note, attrs, is_gift"
statuses = ["shipped", "delivered", "cancelled", "refunded"]
out = sys.stdout
out.write("SET SESSION binlog_annotate_row_events = OFF;\nSET time_zone = '+00:00';\nUSE cdcbench10;\n")
next_id = [1] * 10   # next id to insert, per table
live = [[] for _ in range(10)]   # first ids of the 100-row batches still there, oldest first
src = 0   # next staging row (0-based), wraps
for r in range(rounds):
    for j in range(20):
        t = (j + r) % 10
        if j < 16:
            lo, s = next_id[t], src % src_rows
            next_id[t] += 100
            src += 100
            live[t].append(lo)
            out.write(f"BEGIN;\nINSERT INTO orders_{t} (id, {cols}) SELECT n + ({lo - 1 - s}), {cols} "
                      f"FROM cdcbench.ten_src WHERE n BETWEEN {s + 1} AND {s + 100};\nCOMMIT;\n")
        elif j < 19:
            lo = live[t][-1]
            out.write(f"BEGIN;\nUPDATE orders_{t} SET status = '{statuses[(r + j) % 4]}', "
                      f"updated_at = '2024-06-{1 + r % 28:02d} 12:00:00.000000', amount = amount + 1.00, "
                      f"note = CONCAT(COALESCE(note, ''), ' [upd]') WHERE id BETWEEN {lo} AND {lo + 99};\nCOMMIT;\n")
        else:
            lo = live[t].pop(0)
            out.write(f"BEGIN;\nDELETE FROM orders_{t} WHERE id BETWEEN {lo} AND {lo + 99};\nCOMMIT;\n")
PY
    M -e "FLUSH BINARY LOGS"
    M cdcbench -e "SET SESSION sql_log_bin = 0; DROP TABLE ten_src"
    TEN_ROWS=$((ROUNDS * 2000))
    seen=$("$BIN" inspect --file "$DB/log/$TEN_FILE" --format count | tail -n 1)
    [[ $seen == "$TEN_ROWS" ]] || die "the ten-table binlog $TEN_FILE holds $seen row changes, expected $TEN_ROWS"
    record "TEN_FILE=$TEN_FILE" "TEN_ROWS=$TEN_ROWS"
fi
URL="mysql://cdcbench:cdcbench@127.0.0.1:$PORT"
LOGDIR=$DB/log

# --- rowhook inspect -----------------------------------------------------------------------------
# run_one NAME ROWS FILE MODE -> "wall cpu rss_kb" of one run; fails on a wrong count
run_one() {
    local rows=$2 file=$3 mode=$4 tf err src=() fmt rc
    case $mode in
        live-*) src=(--url "$URL" --start "$file:4") ;;
        file-*) src=(--file "$LOGDIR/$file") ;;
    esac
    fmt=${mode#*-}
    tf=$(mktemp)
    err=$(mktemp)
    if [[ $fmt == count ]]; then
        /usr/bin/time -f '%e %U %S %M' -o "$tf" "$BIN" inspect "${src[@]}" --limit "$rows" --format count \
            >"$tf.out" 2>"$err" && rc=0 || rc=$?
        local seen
        seen=$(tail -n 1 "$tf.out")
        [[ $rc == 0 && $seen == "$rows" ]] || { cat "$err" >&2; die "$1 $mode: rc $rc, counted '$seen', expected $rows"; }
    else
        /usr/bin/time -f '%e %U %S %M' -o "$tf" "$BIN" inspect "${src[@]}" --limit "$rows" --format json \
            >/dev/null 2>"$err" && rc=0 || rc=$?
        [[ $rc == 0 ]] || { cat "$err" >&2; die "$1 $mode: rc $rc"; }
    fi
    local wall user sys rss
    read -r wall user sys rss < <(tail -n 1 "$tf")
    rm -f "$tf" "$tf.out" "$err"
    awk -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN { printf "%s %.2f %s\n", w, u + s, r }'
}

median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

# bench_case NAME ROWS FILE MODE -> one table row: median wall and CPU of $REPEAT runs, max RSS
bench_case() {
    local name=$1 rows=$2 file=$3 mode=$4 i r line walls=() cpus=() rsss=()
    for ((i = 0; i < REPEAT; i++)); do
        line=$(run_one "$@") || exit 1
        read -r -a r <<<"$line"
        walls+=("${r[0]}") cpus+=("${r[1]}") rsss+=("${r[2]}")
    done
    local wall cpu rss_max
    wall=$(printf '%s\n' "${walls[@]}" | median)
    cpu=$(printf '%s\n' "${cpus[@]}" | median)
    rss_max=$(printf '%s\n' "${rsss[@]}" | sort -g | tail -n 1)
    local mb
    mb=$(stat -c %s "$LOGDIR/$file")
    awk -v n="$name" -v m="$mode" -v rows="$rows" -v w="$wall" -v c="$cpu" -v rss="$rss_max" -v cs="${cpus[*]}" \
        -v mb="$mb" 'BEGIN {
        rw = (w > 0) ? sprintf("%d", rows / w) : "-"; rc = (c > 0) ? sprintf("%d", rows / c) : "-";
        mbs = (w > 0) ? sprintf("%.0f", mb / 1e6 / w) : "-";
        printf "| %s | %s | %d | %.1f | %.2f | %.2f (%s) | %s | %s | %s | %.1f |\n",
            n, m, rows, mb / 1e6, w, c, cs, rw, rc, mbs, rss / 1024 }' \
        | tee -a "$REPORT"
}

if want inspect; then
    out ""
    out "## rowhook inspect ($(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- host || echo '+changes'), $REPEAT runs, median; $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg) at start)"
    out ""
    out "CPU = user+sys of the rowhook process (each run in brackets; GNU time, 10 ms resolution); peak RSS = max over runs."
    out "live = --url (the server streams the file), file = --file; count = --format count, json = --format json >/dev/null."
    out ""
    out "| case | mode | rows | binlog MB | wall s | CPU s (runs) | rows/s wall | rows per CPU-s | binlog MB/s wall | peak RSS MB |"
    out "|---|---|---|---|---|---|---|---|---|---|"
    # Sanity: the JSON has one line per row change.
    lines=$("$BIN" inspect --url "$URL" --start "$WL_FILE:4" --limit "$WL_ROWS" --format json | wc -l)
    [[ $lines == "$WL_ROWS" ]] || die "live JSON gave $lines lines, expected $WL_ROWS"
    for mode in live-count live-json file-count file-json; do
        bench_case "workload (100 rows/txn)" "$WL_ROWS" "$WL_FILE" "$mode"
    done
    for mode in live-count live-json file-json; do
        bench_case "1 txn of 100k rows" 100000 "$TXN100K_FILE" "$mode"
    done
    for mode in live-count live-json file-json; do
        bench_case "1 txn of 1M rows" 1000000 "$TXN1M_FILE" "$mode"
    done
    for mode in live-count live-json file-json; do
        bench_case "$BLOBS x 40 MiB LONGBLOB" "$BLOBS" "$BLOB_FILE" "$mode"
    done
fi

# --- rowhook replay with the trivial handler -----------------------------------------------------
# time_replay CONFIG FILE CALLS MESSAGES [REPLAY FLAG...] -> "wall cpu rss_kb changes" of one
# `rowhook replay` run; fails unless replay reports exactly CALLS handler calls and MESSAGES
# messages delivered.
time_replay() {
    local config=$1 file=$2 calls=$3 messages=$4 tf err rc stats changes seen sent
    shift 4
    tf=$(mktemp)
    err=$(mktemp)
    ROWHOOK_LOG=warn /usr/bin/time -f '%e %U %S %M' -o "$tf" "$BIN" replay "$@" -c "$config" "$LOGDIR/$file" \
        >/dev/null 2>"$err" && rc=0 || rc=$?
    [[ $rc == 0 ]] || { cat "$err" >&2; die "replay $* -c $config $file: rc $rc"; }
    # replay ends with "rowhook: N row changes, M handler calls, K messages, ..." on stderr
    stats=$(grep -E '^rowhook: [0-9]+ row changes, [0-9]+ handler calls, [0-9]+ messages' "$err" | tail -n 1) \
        || { cat "$err" >&2; die "replay -c $config $file printed no counters"; }
    changes=$(sed -E 's/^rowhook: ([0-9]+) row changes.*/\1/' <<<"$stats")
    seen=$(sed -E 's/^rowhook: [0-9]+ row changes, ([0-9]+) handler calls.*/\1/' <<<"$stats")
    sent=$(sed -E 's/^rowhook: [0-9]+ row changes, [0-9]+ handler calls, ([0-9]+) messages.*/\1/' <<<"$stats")
    [[ $seen == "$calls" ]] || die "replay -c $config $file: $seen handler calls, expected $calls ($stats)"
    [[ $sent == "$messages" ]] || die "replay -c $config $file: $sent messages, expected $messages ($stats)"
    local wall user sys rss
    read -r wall user sys rss < <(tail -n 1 "$tf")
    rm -f "$tf" "$err"
    awk -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v c="$changes" \
        'BEGIN { printf "%s %.2f %s %s\n", w, u + s, r, c }'
}

# handler_case [--emit] [--checkpoint MS] NAME ROWS FILE CALLS TABLE... -> one table row: the
# trivial handler on TABLE..., median wall and CPU of $REPEAT runs over FILE (ROWS row changes in
# all, CALLS of them on TABLE...), max RSS. Sets CASE_CPU to the median CPU seconds.
#   --emit            a second handler, tests/guests/trivial/counting, on the same tables: one
#                     message per change to a file sink (default fsync, "always"); after each run
#                     the file must hold exactly CALLS lines
#   --checkpoint MS   `replay --checkpoint`: the position and state go to the store, committed
#                     every MS ms (`[state] commit_interval_ms`)
#   --project         instead of the trivial handler, tests/guests/trivial/projecting, the realistic
#                     one: three columns of each change into a small JSON document, one message per
#                     change to a file sink (fsync "always"); the file must hold exactly CALLS lines
#   --noisy           a third handler, tests/guests/spinner, on the same tables: it spins until its
#                     deadline (time_ms = 10) on every change, on_error = "skip", default circuit
#                     breaker (5 timeouts within 10 s suspend it for 30 s): it must be called
#                     exactly 5 times, and the others must keep their throughput
#   --noisy-hold      as --noisy, with breaker.while_suspended = "hold": after its 5 timeouts the
#                     spinner's changes are held (with --checkpoint) instead of skipped, left in the
#                     binlog (the default hold_in)
#   --noisy-hold-file as --noisy-hold, with hold_in = "file": each held change is appended to the
#                     spinner's held file
# Every run starts from an empty directory (state store, sink file): a kept checkpoint would make
# the next run resume at the end of FILE and do nothing.
handler_case() {
    local emit=0 noisy=0 hold=0 project=0 interval='' flags=() held
    while [[ $1 == --* ]]; do
        case $1 in
            --emit) emit=1; shift ;;
            --noisy) noisy=1; shift ;;
            --noisy-hold) noisy=1; hold=1; shift ;;
            --noisy-hold-file) noisy=1; hold=2; shift ;;
            --project) project=1; shift ;;
            --checkpoint) interval=$2; flags+=(--checkpoint); shift 2 ;;
            *) die "handler_case: unknown option $1" ;;
        esac
    done
    local name=$1 rows=$2 file=$3 calls=$4 i r line walls=() cpus=() rsss=() changes='' slug config run list lines
    shift 4
    [[ -z $interval ]] || name="$name, --checkpoint, commit_interval_ms = $interval"
    # the config stays in $HDIR after the run, to replay the case by hand
    slug=$(tr -cs 'a-zA-Z0-9\n' '_' <<<"$name")
    config=$HDIR/$slug.toml
    run=$HDIR/$slug.run   # emptied before each run
    list=$(printf '"%s", ' "$@")
    # The bench measures throughput, not deadlines: on a loaded machine handing a
    # 40 MiB row to a guest can pass the default 100 ms time limit.
    local limits='limits = { time_ms = 10000 }'
    {
        echo "[state]"
        echo "path = \"$run/state\""
        [[ -z $interval ]] || echo "commit_interval_ms = $interval"
        if [[ $emit == 1 ]]; then
            printf '\n[sinks.calls]\nkind = "file"\npath = "%s"\n' "$run/calls.jsonl"
        fi
        if [[ $project == 1 ]]; then
            # the projecting handler's sink is `out`
            printf '\n[sinks.out]\nkind = "file"\npath = "%s"\n' "$run/calls.jsonl"
            printf '\n[[handlers]]\nname = "projecting"\nmodule = "%s"\ntables = [%s]\nsinks = ["out"]\n%s\n' \
                "$PROJECTING" "${list%, }" "$limits"
        else
            printf '\n[[handlers]]\nname = "trivial"\nmodule = "%s"\ntables = [%s]\n%s\n' "$TRIVIAL" "${list%, }" "$limits"
        fi
        if [[ $emit == 1 ]]; then
            printf '\n[[handlers]]\nname = "counting"\nmodule = "%s"\ntables = [%s]\nsinks = ["calls"]\n%s\n' \
                "$COUNTING" "${list%, }" "$limits"
        fi
        if [[ $noisy == 1 ]]; then
            printf '\n[[handlers]]\nname = "spinner"\nmodule = "%s"\ntables = [%s]\nlimits = { time_ms = 10 }\non_error = "skip"\n' \
                "$SPINNER" "${list%, }"
            [[ $hold != 1 ]] || printf 'breaker = { while_suspended = "hold", hold_mb = 1024 }\n'
            [[ $hold != 2 ]] || printf 'breaker = { while_suspended = "hold", hold_mb = 1024, hold_in = "file" }\n'
        fi
    } >"$config"
    local messages=$(((emit + project) * calls))
    for ((i = 0; i < REPEAT; i++)); do
        rm -rf "$run"
        mkdir -p "$run"
        line=$(time_replay "$config" "$file" $(((1 + emit) * calls + 5 * noisy)) "$messages" "${flags[@]}") || exit 1
        if [[ $emit == 1 || $project == 1 ]]; then
            # What reached the file, not what replay says it sent.
            lines=0
            [[ ! -f $run/calls.jsonl ]] || lines=$(wc -l <"$run/calls.jsonl")
            [[ $lines == "$calls" ]] || die "$name: the file sink $run/calls.jsonl holds $lines lines, expected $calls"
        fi
        # Left in the binlog, the held changes are not copied anywhere; in a file, they are.
        held=$run/state/held/default/spinner
        [[ $hold != 1 || ! -s $held ]] || die "$name: the spinner's changes were copied into $held"
        [[ $hold != 2 || -s $held ]] || die "$name: the spinner's held file $held is empty"
        read -r -a r <<<"$line"
        walls+=("${r[0]}") cpus+=("${r[1]}") rsss+=("${r[2]}")
        changes=${r[3]}
    done
    rm -rf "$run"
    local wall cpu rss_max handlers=$*
    wall=$(printf '%s\n' "${walls[@]}" | median)
    cpu=$(printf '%s\n' "${cpus[@]}" | median)
    rss_max=$(printf '%s\n' "${rsss[@]}" | sort -g | tail -n 1)
    CASE_CPU=$cpu
    [[ $emit == 0 ]] || handlers="$handlers (+ counting → file)"
    [[ $project == 0 ]] || handlers="$handlers (projecting → file)"
    [[ $noisy == 0 ]] || handlers="$handlers (+ spinner, suspended)"
    [[ $hold == 0 ]] || handlers="$handlers, its changes held"
    awk -v n="$name" -v t="$handlers" -v rows="$rows" -v ch="$changes" -v calls="$(((1 + emit) * calls + 5 * noisy))" \
        -v w="$wall" -v c="$cpu" -v cs="${cpus[*]}" -v rss="$rss_max" 'BEGIN {
        rw = (w > 0) ? sprintf("%d", rows / w) : "-"; rc = (c > 0) ? sprintf("%d", rows / c) : "-";
        printf "| %s | %s | %d | %d | %d | %.2f | %.2f (%s) | %s | %s | %.1f |\n",
            n, t, rows, ch, calls, w, c, cs, rw, rc, rss / 1024 }' \
        | tee -a "$REPORT"
}

# kept BASE_CPU CPU -> "90%": the share of the rows per CPU-second of the base case that a case keeps
kept() { awk -v b="$1" -v c="$2" 'BEGIN { if (c > 0) printf "%.0f%%", 100 * b / c; else printf "-" }'; }

if want handlers; then
    HDIR=$BENCH_DIR/handlers
    mkdir -p "$HDIR"
    TEN_SUB=$("$BIN" inspect --file "$LOGDIR/$TEN_FILE" --tables "cdcbench10.$TEN_TABLE" --format count | tail -n 1)
    [[ $TEN_SUB -gt 0 ]] || die "cdcbench10.$TEN_TABLE has no row changes in $TEN_FILE"
    out ""
    out "## rowhook replay, trivial handler ($(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- host || echo '+changes'), $REPEAT runs, median; $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg) at start)"
    out ""
    out "\`rowhook replay -c CONFIG FILE\`, the handler tests/guests/trivial (reads \`id\`, emits nothing) on the tables shown;"
    out "\"+ counting → file\": a second handler, tests/guests/trivial/counting, on the same tables, one message per change"
    out "to a file sink (fsync \"always\"), whose file was checked to hold exactly one line per change. \`--checkpoint\`:"
    out "\`replay --checkpoint\` with a fresh \`[state] path\` per run, committed every commit_interval_ms."
    out "rows = every row change in the file; changes, calls = what replay reports (changes of subscribed tables,"
    out "handler calls of all handlers); the rates are over all rows. CPU = user+sys of the process (each run in"
    out "brackets; GNU time)."
    out ""
    out "| case | handler tables | rows | changes | calls | wall s | CPU s (runs) | rows/s wall | rows per CPU-s | peak RSS MB |"
    out "|---|---|---|---|---|---|---|---|---|---|"
    handler_case "workload, every row" "$WL_ROWS" "$WL_FILE" "$WL_ROWS" "cdcbench.*"
    base_cpu=$CASE_CPU
    # What durable checkpoints cost: the same replay, committing to the store every 500 ms (the
    # default) and every 10 ms.
    handler_case --checkpoint 500 "workload, every row" "$WL_ROWS" "$WL_FILE" "$WL_ROWS" "cdcbench.*"
    kept_500=$(kept "$base_cpu" "$CASE_CPU")
    handler_case --checkpoint 10 "workload, every row" "$WL_ROWS" "$WL_FILE" "$WL_ROWS" "cdcbench.*"
    kept_10=$(kept "$base_cpu" "$CASE_CPU")
    # The emit path: a realistic handler (three columns into a small JSON document, one message
    # per change) to a file sink, fsync "always", durable checkpoints, against the trivial one.
    handler_case --project --checkpoint 500 "workload, projecting → file" "$WL_ROWS" "$WL_FILE" "$WL_ROWS" "cdcbench.*"
    kept_project=$(kept "$base_cpu" "$CASE_CPU")
    handler_case "ten tables, 1 in 10" "$TEN_ROWS" "$TEN_FILE" "$TEN_SUB" "cdcbench10.$TEN_TABLE"
    handler_case "ten tables, all 10" "$TEN_ROWS" "$TEN_FILE" "$TEN_ROWS" "cdcbench10.*"
    # Bounded memory: two handlers, one emitting a message per row, durable checkpoints; one
    # transaction of 1M rows must peak where 100-row transactions do, and a 40 MiB row costs a
    # few copies of itself (decoded, encoded for the guests, in each guest's memory).
    handler_case --emit --checkpoint 500 "workload, two handlers" "$WL_ROWS" "$WL_FILE" "$WL_ROWS" "cdcbench.*"
    checkpoint_cpu=$CASE_CPU
    # A noisy neighbour: the same two handlers, alone and beside one that times out on every
    # change until its circuit breaker suspends it. With --checkpoint, like the case alone above:
    # without it the file sink fsyncs every transaction, and 10,000 fsyncs drown the difference.
    handler_case --emit --noisy --checkpoint 500 "workload, two handlers + a noisy one" "$WL_ROWS" "$WL_FILE" "$WL_ROWS" "cdcbench.*"
    kept_noisy=$(kept "$checkpoint_cpu" "$CASE_CPU")
    # The same, the spinner's changes held rather than skipped (left in the binlog, then copied
    # into its held file), against the two handlers alone with the same checkpoints.
    handler_case --emit --noisy-hold --checkpoint 500 "workload, two handlers + a noisy one, held" "$WL_ROWS" "$WL_FILE" "$WL_ROWS" "cdcbench.*"
    kept_hold=$(kept "$checkpoint_cpu" "$CASE_CPU")
    handler_case --emit --noisy-hold-file --checkpoint 500 "workload, two handlers + a noisy one, held in a file" "$WL_ROWS" "$WL_FILE" "$WL_ROWS" "cdcbench.*"
    kept_hold_file=$(kept "$checkpoint_cpu" "$CASE_CPU")
    handler_case --emit --checkpoint 500 "1 txn of 1M rows, two handlers" 1000000 "$TXN1M_FILE" 1000000 "cdcbench.*"
    handler_case --emit --checkpoint 500 "$BLOBS x 40 MiB LONGBLOB, two handlers" "$BLOBS" "$BLOB_FILE" "$BLOBS" "cdcbench.*"
    out ""
    out "Throughput kept with durable checkpoints (rows per CPU-s with \`--checkpoint\` / without, workload, trivial handler):"
    out "$kept_500 at commit_interval_ms = 500, $kept_10 at 10."
    out ""
    out "Throughput the projecting handler (three columns → JSON → file, fsync \"always\", --checkpoint) keeps"
    out "against the trivial handler (rows per CPU-s): $kept_project."
    out ""
    out "Throughput the two handlers keep beside a handler that times out on every change (rows per CPU-s"
    out "with the spinner, suspended by its circuit breaker after 5 timeouts / without; --checkpoint,"
    out "commit_interval_ms = 500): its changes skipped (on_error = \"skip\"): $kept_noisy; held"
    out "(while_suspended = \"hold\"), left in the binlog: $kept_hold; copied into its held file"
    out "(hold_in = \"file\"): $kept_hold_file."
    out ""
    out "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    out ""
    out "No handler, same files (\`rowhook inspect --file F --format count\`: decode every row):"
    out ""
    out "| case | mode | rows | binlog MB | wall s | CPU s (runs) | rows/s wall | rows per CPU-s | binlog MB/s wall | peak RSS MB |"
    out "|---|---|---|---|---|---|---|---|---|---|"
    bench_case "workload (100 rows/txn)" "$WL_ROWS" "$WL_FILE" file-count
    bench_case "ten tables" "$TEN_ROWS" "$TEN_FILE" file-count
fi

# --- in-process decode bench ---------------------------------------------------------------------
if want inspect; then
    out ""
    out "## cargo bench -p rowhook --bench decode"
    out ""
    out '```'
    (cd "$ROOT" && ROWHOOK_BENCH_BINLOG=$LOGDIR/$WL_FILE cargo bench -q -p rowhook --bench decode) | tee -a "$REPORT"
    out '```'
fi
if want handlers; then
    out ""
    out "## cargo bench -p rowhook --bench handlers"
    out ""
    out '```'
    (cd "$ROOT" && ROWHOOK_BENCH_BINLOG=$LOGDIR/$WL_FILE ROWHOOK_BENCH_BINLOG10=$LOGDIR/$TEN_FILE \
        ROWHOOK_BENCH_TABLE10=cdcbench10.$TEN_TABLE ROWHOOK_BENCH_WASM=$TRIVIAL ROWHOOK_BENCH_RUNS=$REPEAT \
        cargo bench -q -p rowhook --bench handlers) | tee -a "$REPORT"
    out '```'
fi

# --- peers ---------------------------------------------------------------------------------------
if want inspect && [[ $BENCH_PEERS == 1 ]]; then
    log "building the peers in $GEN (once; reused later)"
    (cd "$GEN/peers/rust" && cargo build --release 2>&1 | tail -n 2) >&2
    if [[ ! -x $GEN/peers/python/venv/bin/python ]] || ! "$GEN/peers/python/venv/bin/python" -c 'import pymysqlreplication' 2>/dev/null; then
        python3 -m venv "$GEN/peers/python/venv"
        "$GEN/peers/python/venv/bin/pip" install -q mysql-replication==1.0.17 >&2
    fi
    [[ -d $GEN/peers/node/node_modules ]] || (cd "$GEN/peers/node" && npm install --no-audit --no-fund >&2)
    # bench.py's contract: env DB_HOST DB_PORT DB_USER DB_PASS BINLOG_FILE START_POS N_ROWS, count printed last.
    cat >"$GEN/rowhook-peer.sh" <<EOF
#!/bin/sh
exec "$BIN" inspect --url "mysql://\$DB_USER:\$DB_PASS@\$DB_HOST:\$DB_PORT" --start "\$BINLOG_FILE:\$START_POS" \\
    --limit "\$N_ROWS" --format count
EOF
    chmod +x "$GEN/rowhook-peer.sh"
    peers=${PEER_LIST:-$(grep -v '^\s*#' "$GEN/peers.conf" | grep '|' | cut -d'|' -f1 | tr -d ' ' | paste -sd,)}
    out ""
    out "## ../shared/bench/bench.py --ours rowhook ($REPEAT runs, median)"
    out ""
    (cd "$GEN" && ./bench.py --repeat "$REPEAT" --slow-cutoff 60 --ours "$GEN/rowhook-peer.sh" --ours-name rowhook \
        --peers "rowhook,$peers") | tee "$BENCH_DIR/bench-py-$STAMP.log" | sed -n '/^| peer/,/^$/p' | tee -a "$REPORT"
fi
log "report: $REPORT"
