#!/usr/bin/env bash
# Throwaway MariaDB servers with a row-based binlog, for tests and CI.
#
#   tests/mariadb.sh start DIR [mariadbd options...]   # prints the TCP port, one line
#   tests/mariadb.sh stop DIR                          # stops the server, removes DIR
#   tests/mariadb.sh down DIR                          # stops the server, keeps DIR
#   tests/mariadb.sh up DIR                            # starts it again: same data, port, options
#
# start: DIR must be empty or absent. Initialises DIR/data, starts `mariadbd --no-defaults`
# on 127.0.0.1 at a free port (binlog in DIR/log/mysql-bin.*, format ROW, row image FULL,
# row metadata FULL, server id 1, GTID domain 0), waits until it answers, creates database
# `test` and lets root log in over TCP from 127.0.0.1 with an empty password. Extra options
# come after the built-in ones, so they win. Only the port goes to stdout; the rest to
# stderr. The setup statements are not binlogged: the binlog holds only what tests do.
# Also in DIR: sock (unix socket), pid, err.log.
#   port=$(tests/mariadb.sh start /tmp/db1)
#   mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot test
#   tests/mariadb.sh stop /tmp/db1
# stop: kills the pid in DIR/pid (SIGTERM, SIGKILL after 20 s), then removes DIR.
# down/up: a server restart (clean shutdown, then the same datadir, port and options,
# recorded in DIR/port and DIR/args by start); up prints the port. Both are idempotent.
# MARIADB_OWNER_PID=PID (start): also stop the server when process PID exits.
# Idempotent. Needs only the mariadb server/client packages, python3 and coreutils.
set -euo pipefail

log() { echo "mariadb.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# The pid in DIR/pid if it is a live mariadbd, else nothing.
server_pid() {
    local pid
    pid=$(cat "$1/pid" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] && grep -qa mariadbd "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
    return 0
}

stop() {
    local dir=$1
    [[ -e $dir ]] || return 0
    down "$dir"
    rm -rf -- "$dir"
}

# Stops the server of DIR, if one runs, and keeps DIR.
down() {
    local dir=$1 pid i
    [[ -e $dir ]] || return 0
    pid=$(server_pid "$dir")
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "mariadbd $pid did not stop in 20 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
    fi
}

# Starts mariadbd on DIR's datadir at PORT with the built-in options and the
# extra ones, and waits until it answers. Returns 0 when it does, 2 when the
# port was taken, 1 on any other failure (with the error log on stderr).
launch() {
    local dir=$1 port=$2 pid i
    shift 2
    local user=()
    [[ $(id -u) == 0 ]] && user=(--user=root)
    : >"$dir/err.log"
    mariadbd --no-defaults "${user[@]}" \
        --datadir="$dir/data" --socket="$dir/sock" --pid-file="$dir/pid" \
        --log-error="$dir/err.log" --port="$port" --bind-address=127.0.0.1 \
        --skip-name-resolve --server-id=1 --gtid-domain-id=0 \
        --log-bin="$dir/log/mysql-bin" --binlog-format=ROW \
        --binlog-row-image=FULL --binlog-row-metadata=FULL \
        --max-allowed-packet=1G --innodb-buffer-pool-size=64M \
        --innodb-log-file-size=64M \
        "$@" </dev/null >/dev/null 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"   # mariadbd writes the same; this covers a failed start
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        if mariadb-admin --no-defaults -S "$dir/sock" -uroot --connect-timeout=2 \
            ping >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then   # still running but not answering
        tail -n 30 "$dir/err.log" >&2
        log "mariadbd did not answer within 60 s"
        return 1
    fi
    wait "$pid" || true
    grep -q 'Address already in use' "$dir/err.log" 2>/dev/null && return 2
    tail -n 30 "$dir/err.log" >&2
    log "mariadbd exited during start"
    return 1
}

# Starts the stopped server of DIR again with the port and options of its start.
up() {
    local dir=$1 port args=()
    [[ -f $dir/port && -f $dir/args ]] || die "$dir was not made by \`$0 start\`"
    dir=$(cd "$dir" && pwd)
    port=$(cat "$dir/port")
    if [[ -z $(server_pid "$dir") ]]; then
        mapfile -d '' args <"$dir/args"
        launch "$dir" "$port" "${args[@]}" || die "mariadbd did not start again on port $port"
        log "mariadbd pid $(server_pid "$dir") listening on 127.0.0.1:$port again"
    fi
    echo "$port"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local dir=$1; shift
    [[ -z $(ls -A "$dir" 2>/dev/null) ]] || die "$dir is not empty"
    mkdir -p "$dir/data" "$dir/log"
    dir=$(cd "$dir" && pwd)
    # A unix socket path is limited to 107 bytes.
    (( ${#dir} <= 100 )) || die "$dir is too long for a socket path"
    local user=()
    [[ $(id -u) == 0 ]] && user=(--user=root)

    mariadb-install-db --no-defaults "${user[@]}" --datadir="$dir/data" \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
        --innodb-log-file-size=64M >"$dir/install.log" 2>&1 \
        || { tail -n 30 "$dir/install.log" >&2; die "mariadb-install-db failed"; }

    # The port is free when asked but may be taken before mariadbd binds it: retry then.
    local port pid attempt status
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        status=0
        launch "$dir" "$port" "$@" || status=$?
        case $status in
            0) break ;;
            2) log "port $port was taken, retrying" ;;
            *) down "$dir"; die "mariadbd did not start" ;;
        esac
    done
    pid=$(server_pid "$dir")
    [[ -n $pid ]] || die "no free port after $attempt attempts"
    echo "$port" >"$dir/port"
    : >"$dir/args"
    (($# == 0)) || printf '%s\0' "$@" >"$dir/args"

    mariadb --no-defaults -S "$dir/sock" -uroot <<'SQL' \
        || { stop "$dir"; die "setting up users failed"; }
SET SESSION sql_log_bin = 0;
CREATE DATABASE IF NOT EXISTS test;
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    log "mariadbd pid $pid listening on 127.0.0.1:$port, datadir $dir/data"
    # With MARIADB_OWNER_PID set, a watchdog stops the server once that
    # process is gone: a test run that is killed, or that keeps its server in
    # a static, leaves nothing running.
    if [[ ${MARIADB_OWNER_PID:-} =~ ^[0-9]+$ ]]; then
        local self
        self=$(realpath "$0")
        setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -e $3 ]]; do sleep 1; done; bash "$2" stop "$3"' \
            watchdog "$MARIADB_OWNER_PID" "$self" "$dir" </dev/null >/dev/null 2>&1 &
    fi
    echo "$port"
}

case "${1:-}" in
    start) [[ $# -ge 2 ]] || die "usage: $0 start DIR [mariadbd options...]"; shift; start "$@" ;;
    stop)  [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
    down)  [[ $# -eq 2 ]] || die "usage: $0 down DIR"; down "$2" ;;
    up)    [[ $# -eq 2 ]] || die "usage: $0 up DIR"; up "$2" ;;
    *)     die "usage: $0 start DIR [mariadbd options...] | $0 stop DIR | $0 down DIR | $0 up DIR" ;;
esac
