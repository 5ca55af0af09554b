#!/usr/bin/env bash
# Messages per second into a Redis stream, acknowledged, end to end.
#
#   tests/bench/redis.sh            # ~2 min on 2 cores after the release build
#
# 1. builds rowhook (release) and the `counting` handler (tests/guests/trivial/counting:
#    one ~90-byte message per row change, keyed by the change id);
# 2. makes a binlog of one transaction inserting 1,000,000 narrow rows (a private MariaDB,
#    tests/mariadb.sh, INSERT ... SELECT FROM seq_1_to_1000000), unless $BINLOG names one;
# 3. starts a private redis-server (no persistence) on a free port;
# 4. times `rowhook replay` of it with the handler's sink as a file (`fsync = "never"`, the
#    pipeline's own ceiling) and as a redis `stream`, and checks XLEN = 1,000,000.
# The machine is shared: compare the two rows of one run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-/tmp/rowhook-bench-redis}

# shellcheck source=tests/bench/sink-bench.sh
. "$ROOT/tests/bench/sink-bench.sh"

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$WORK" --logfile "$WORK/redis.log" &
RPID=$!
trap 'kill $RPID 2>/dev/null || true' EXIT
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.05; done

file_baseline
redis-cli -p "$RPORT" del bench >/dev/null
run redis-stream "kind = \"redis\"
url = \"redis://127.0.0.1:$RPORT\"
stream = \"bench\""
n=$(redis-cli -p "$RPORT" xlen bench)
[[ $n == 1000000 ]] || { echo "redis.sh: the stream holds $n entries, not 1000000" >&2; exit 1; }
