#!/usr/bin/env bash
# Records examples/shop.sql into examples/binlog/shop-bin.000001 with a
# throwaway MariaDB (binlog on, ROW format, FULL row image and metadata), so
# the examples and the README run without a server.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/rowhook-record.XXXXXX)
trap 'bash "$here/../tests/mariadb.sh" stop "$dir/db"' EXIT
port=$(bash "$here/../tests/mariadb.sh" start "$dir/db" --log-bin="$dir/db/log/shop-bin")
mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot < "$here/shop.sql"
mkdir -p "$here/binlog"
cp "$dir/db/log/shop-bin.000001" "$here/binlog/"
echo "recorded $here/binlog/shop-bin.000001 ($(stat -c %s "$here/binlog/shop-bin.000001") bytes)"
