#!/usr/bin/env bash
# Upserted rows per second into PostgreSQL and MariaDB through the postgres and mysql sinks,
# every batch committed durably, end to end.
#
#   tests/bench/sql.sh            # ~2 min on 2 cores after the release build
#
# 1. builds rowhook (release) and the `upserting` handler (tests/guests/trivial/upserting: one
#    upsert of the row, reshaped, into t_copy per row change);
# 2. makes (or reuses) the binlog of one transaction inserting 1,000,000 narrow rows
#    (tests/bench/sink-bench.sh);
# 3. for the PostgreSQL on 127.0.0.1:5432 (user postgres) and the MariaDB on 127.0.0.1:3306
#    (root), each with synchronous_commit / innodb_flush_log_at_trx_commit as the server has
#    them (on / 1 by default: each commit flushed), creates the database rh_bench_sql with
#    t_copy, times `rowhook replay` into it (the pipeline hands the sink batches of 4096
#    rows, each one transaction), and checks with SQL that t_copy holds the 1,000,000
#    reshaped rows; then replays again over the full table (every row an update).
# The machine is shared: compare the rows of one run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-/tmp/rowhook-bench-sql}

# shellcheck source=tests/bench/sink-bench.sh
. "$ROOT/tests/bench/sink-bench.sh"
(cd "$ROOT/tests/guests" && cargo build --release --target wasm32-wasip2 -p upserting --quiet --target-dir "$ROOT/tests/guests/target") >&2
WASM=$ROOT/tests/guests/target/wasm32-wasip2/release/upserting.wasm

P() { psql -h 127.0.0.1 -U postgres -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
M() { mariadb --no-defaults -h127.0.0.1 -P3306 -uroot -N -B "$@"; }

# The handler's sink is `copy` (run names it `calls`: the config below is ours).
run_sql() { # NAME SINK-KEYS
    cat >"$WORK/$1.toml" <<TOML
[sinks.copy]
$2

[[handlers]]
name = "upserting"
module = "$WASM"
tables = ["bench.t"]
sinks = ["copy"]
limits = { time_ms = 1000 }
TOML
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -f %M -o "$WORK/$1.rss" "$BIN" replay -c "$WORK/$1.toml" "$BINLOG" >/dev/null
    end=$(date +%s.%N)
    python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'| $1 | {s:.2f} s | {1e6/s:,.0f} rows/s | {int(sys.argv[3])/1024:.0f} MiB |')" \
        "$start" "$end" "$(tail -n 1 "$WORK/$1.rss")"
}

echo "| sink | 1,000,000 upserts | rate | peak RSS |"
echo "|---|---|---|---|"

P -d postgres -c "DROP DATABASE IF EXISTS rh_bench_sql WITH (FORCE)" -c "CREATE DATABASE rh_bench_sql"
P -d rh_bench_sql -c "CREATE TABLE t_copy (id bigint PRIMARY KEY, amount integer NOT NULL, note varchar(32) NOT NULL, doubled bigint NOT NULL)"
PG="kind = \"postgres\"
url = \"postgres://postgres@127.0.0.1:5432/rh_bench_sql\"
tables = { t_copy = { key = [\"id\"] } }"
echo "(PostgreSQL synchronous_commit = $(P -d rh_bench_sql -c 'SHOW synchronous_commit'), fsync = $(P -d rh_bench_sql -c 'SHOW fsync'))" >&2
run_sql "postgres, inserts" "$PG"
run_sql "postgres, updates" "$PG"
got=$(P -d rh_bench_sql -c "SELECT count(*), sum(amount), sum(doubled) FROM t_copy WHERE doubled = 2 * amount AND note = 'row'")
[[ $got == "1000000|499500000|999000000" ]] || { echo "sql.sh: PostgreSQL's t_copy holds $got" >&2; exit 1; }
P -d postgres -c "DROP DATABASE rh_bench_sql WITH (FORCE)"

M -e "DROP DATABASE IF EXISTS rh_bench_sql; CREATE DATABASE rh_bench_sql"
M rh_bench_sql -e "CREATE TABLE t_copy (id BIGINT PRIMARY KEY, amount INT NOT NULL, note VARCHAR(32) NOT NULL, doubled BIGINT NOT NULL) ENGINE = InnoDB"
MY="kind = \"mysql\"
url = \"mysql://root@127.0.0.1:3306/rh_bench_sql\"
tables = { t_copy = { key = [\"id\"] } }"
echo "(MariaDB innodb_flush_log_at_trx_commit = $(M -e 'SELECT @@innodb_flush_log_at_trx_commit'))" >&2
run_sql "mysql (MariaDB), inserts" "$MY"
run_sql "mysql (MariaDB), updates" "$MY"
got=$(M rh_bench_sql -e "SELECT CONCAT_WS('|', COUNT(*), SUM(amount), SUM(doubled)) FROM t_copy WHERE doubled = 2 * amount AND note = 'row'")
[[ $got == "1000000|499500000|999000000" ]] || { echo "sql.sh: MariaDB's t_copy holds $got" >&2; exit 1; }
M -e "DROP DATABASE rh_bench_sql"
