#!/usr/bin/env bash
# Messages per second into a webhook receiver, every request answered 200
# before the next, end to end, and rowhook's peak RSS.
#
#   tests/bench/http.sh            # ~2 min on 2 cores after the release build
#
# 1. builds rowhook (release) and the `counting` handler (tests/guests/trivial/counting:
#    one ~90-byte JSON message per row change, keyed by the change id);
# 2. makes a binlog of one transaction inserting 1,000,000 narrow rows (a private MariaDB,
#    tests/mariadb.sh, INSERT ... SELECT FROM seq_1_to_1000000), unless $BINLOG names one;
# 3. starts tests/bench/http_receiver.py (Python asyncio, HTTP/1.1 keep-alive, checks every
#    signature) on a free port;
# 4. times `rowhook replay` of it, under GNU time for the peak RSS, with the handler's sink
#    as a file (`fsync = "never"`, the pipeline's own ceiling) and as an http sink in
#    `mode = "batch"` (default max_batch_messages 1000 and max_body_bytes 1 MiB, signed with
#    hmac_secret), and checks that the receiver counted 1,000,000 lines, all signed right.
#    The receiver's CPU seconds are printed too: it must not be the bottleneck.
# The machine is shared: compare the rows of one run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-/tmp/rowhook-bench-http}

# shellcheck source=tests/bench/sink-bench.sh
. "$ROOT/tests/bench/sink-bench.sh"

export WEBHOOK_SECRET=bench-secret-0123456789abcdef
HPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$ROOT/tests/bench/http_receiver.py" "$HPORT" &
HPID=$!
trap 'kill $HPID 2>/dev/null || true' EXIT
stats() { python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$HPORT/stats').read().decode())"; }
until stats >/dev/null 2>&1; do sleep 0.05; done

file_baseline
read -r _ _ _ cpu0 <<<"$(stats)"
run http-batch "kind = \"http\"
url = \"http://127.0.0.1:$HPORT/hook\"
mode = \"batch\"
hmac_secret = \"\${WEBHOOK_SECRET}\""
read -r lines requests bad cpu1 <<<"$(stats)"
echo "receiver: $lines lines in $requests requests, $bad bad signatures, $(python3 -c "print(f'{$cpu1-$cpu0:.2f}')") CPU seconds"
[[ $lines == 1000000 && $bad == 0 ]] || { echo "http.sh: the receiver counted $lines lines ($bad bad signatures), not 1000000" >&2; exit 1; }
