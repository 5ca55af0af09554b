#!/usr/bin/env bash
# Records examples/NAME.sql into examples/binlog/NAME-bin.000001, each with a
# throwaway MariaDB of its own (binlog on, ROW format, FULL row image and
# metadata, GTIDs from 0-1-1), so the examples and the README run without a
# server.
#
#   bash examples/record-binlog.sh              # shop and sms
#   bash examples/record-binlog.sh sms          # only examples/binlog/sms-bin.000001
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/rowhook-record.XXXXXX)
stop_all() {
    local db
    for db in "$dir"/*/; do bash "$here/../tests/mariadb.sh" stop "$db"; done
    rm -rf "$dir"
}
trap stop_all EXIT
names=("$@")
((${#names[@]})) || names=(shop sms)
mkdir -p "$here/binlog"
for name in "${names[@]}"; do
    [[ -f $here/$name.sql ]] || { echo "no $here/$name.sql" >&2; exit 1; }
    port=$(bash "$here/../tests/mariadb.sh" start "$dir/$name" --log-bin="$dir/$name/log/$name-bin")
    mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot < "$here/$name.sql"
    cp "$dir/$name/log/$name-bin.000001" "$here/binlog/"
    echo "recorded $here/binlog/$name-bin.000001 ($(stat -c %s "$here/binlog/$name-bin.000001") bytes)"
done
