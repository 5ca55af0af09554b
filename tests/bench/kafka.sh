#!/usr/bin/env bash
# Messages per second into a Kafka-protocol broker, every batch acknowledged (acks = all), end to end.
#
#   tests/bench/kafka.sh           # ~3 min on 2 cores after the release build
#
# 1. builds rowhook (release) and the `counting` handler (tests/guests/trivial/counting:
#    one ~90-byte message per row change, keyed by the change id);
# 2. makes a binlog of one transaction inserting 1,000,000 narrow rows (a private MariaDB,
#    tests/mariadb.sh, INSERT ... SELECT FROM seq_1_to_1000000), unless $BINLOG names one;
# 3. starts a private tansu (`cargo install tansu --version 0.6.0 --locked --features libsql`)
#    with its SQLite store on a free port, and makes a 4-partition topic per run;
# 4. times `rowhook replay` of it, under GNU time for the peak RSS, with the handler's sink
#    as a file (`fsync = "never"`, the pipeline's own ceiling), then as a kafka sink
#    uncompressed and with zstd, and checks after each kafka run that the topic's end
#    offsets add up to 1,000,000 (a ListOffsets request).
# The machine is shared: compare the rows of one run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-/tmp/rowhook-bench-kafka}
command -v tansu >/dev/null || { echo "kafka.sh: needs tansu (cargo install tansu --version 0.6.0 --locked --features libsql)" >&2; exit 1; }

# shellcheck source=tests/bench/sink-bench.sh
. "$ROOT/tests/bench/sink-bench.sh"

KPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -f "$WORK"/store.db*
(cd "$WORK" && exec tansu broker --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" \
    --storage-engine sqlite://store.db >"$WORK/tansu.log" 2>&1) &
KPID=$!
trap 'kill $KPID 2>/dev/null || true' EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $KPORT), 1)" 2>/dev/null; do sleep 0.1; done

records() { # TOPIC PARTITIONS: the sum of the partitions' end offsets (ListOffsets v1)
    python3 - "$KPORT" "$1" "$2" <<'PY'
import socket, struct, sys
port, topic, parts = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
s = lambda b: struct.pack(">h", len(b)) + b
body = struct.pack(">hhi", 2, 1, 1) + s(b"bench") + struct.pack(">ii", -1, 1) + s(topic) + struct.pack(">i", parts)
body += b"".join(struct.pack(">iq", p, -1) for p in range(parts))
c = socket.create_connection(("127.0.0.1", port))
c.sendall(struct.pack(">i", len(body)) + body)
def read(n):
    b = b""
    while len(b) < n:
        b += c.recv(n - len(b))
    return b
data = read(struct.unpack(">i", read(4))[0])
at = 4 + 4  # correlation id, topic count
at += 2 + struct.unpack(">h", data[at:at + 2])[0]
n = struct.unpack(">i", data[at:at + 4])[0]
at += 4
total = 0
for _ in range(n):
    _, err, _, offset = struct.unpack(">ihqq", data[at:at + 22])
    assert err == 0, err
    total += offset
    at += 22
print(total)
PY
}

file_baseline
for codec in none zstd; do
    tansu topic create "bench-$codec" --partitions 4 --broker "tcp://127.0.0.1:$KPORT" >/dev/null
    run "kafka-$codec" "kind = \"kafka\"
brokers = \"127.0.0.1:$KPORT\"
topic = \"bench-$codec\"
compression = \"$codec\""
    n=$(records "bench-$codec" 4)
    [[ $n -eq 1000000 ]] || { echo "kafka.sh: topic bench-$codec holds $n records, not 1000000" >&2; exit 1; }
done
