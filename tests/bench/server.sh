# Sourced by the benches that run their own MariaDB: a private server in $DB
# (tests/mariadb.sh), left running with KEEP_DB=1 and taken again with REUSE_DB=1,
# and the shared workload's orders table. Needs ROOT, DB, KEEP_DB, REUSE_DB and log().

# The client, as root, on the private server.
M() { mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uroot "$@"; }

# Starts the server (or takes the one KEEP_DB=1 left) and sets PORT.
start_server() {
    if [[ $REUSE_DB == 1 && -f $DB/port ]] && PORT=$(cat "$DB/port") && M -e 'SELECT 1' >/dev/null 2>&1; then
        log "reusing the server on port $PORT"
    else
        "$ROOT/tests/mariadb.sh" stop "$DB" >/dev/null 2>&1 || true
        PORT=$("$ROOT/tests/mariadb.sh" start "$DB")
        echo "$PORT" >"$DB/port"
    fi
}

# Stops the server, unless KEEP_DB=1.
stop_server() {
    if [[ $KEEP_DB == 1 ]]; then
        log "server left running: port $PORT, dir $DB"
    else
        "$ROOT/tests/mariadb.sh" stop "$DB" || true
    fi
}

# Makes cdcbench.orders anew, as ../shared/bench/workload/gen_workload.py defines it
# (13 columns: a BIGINT key, INT, VARCHARs, CHAR, two DECIMALs, SMALLINT, two DATETIME(6),
# TEXT, TINYINT).
orders_table() {
    M -e "DROP DATABASE IF EXISTS cdcbench; CREATE DATABASE cdcbench"
    python3 - "$ROOT/../shared/bench/workload/gen_workload.py" <<'EOF' | M cdcbench
import re, sys
src = open(sys.argv[1]).read()
m = re.search(r"CREATE TABLE orders \(.*?\)[^;]*;", src, re.S)
print(m.group(0))
EOF
}
