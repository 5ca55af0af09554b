#!/usr/bin/env bash
# Messages per second into a RabbitMQ queue, publisher-confirmed, end to end.
#
#   tests/bench/amqp.sh             # ~3 min on 2 cores after the release build
#
# 1. builds rowhook (release) and the `counting` handler (tests/guests/trivial/counting:
#    one ~90-byte message per row change, keyed by the change id);
# 2. makes a binlog of one transaction inserting 1,000,000 narrow rows (a private MariaDB,
#    tests/mariadb.sh, INSERT ... SELECT FROM seq_1_to_1000000), unless $BINLOG names one;
# 3. declares a fresh direct exchange and a durable queue bound to it on the RabbitMQ at
#    $AMQP_HOST:$AMQP_PORT (default 127.0.0.1:5672, guest/guest), with a small AMQP client
#    below (the management plugin need not be enabled);
# 4. times `rowhook replay` of it, and its peak RSS (GNU time), with the handler's sink as a
#    file (`fsync = "never"`, the pipeline's own ceiling), as amqp with persistent messages
#    (confirmed once the durable queue wrote them) and with transient ones (confirmed once
#    queued: the broker's ceiling without its disk), checking after each that the queue
#    holds 1,000,000 messages; then deletes the exchange and the queue.
# The machine is shared, and RabbitMQ runs on the same two cores: compare the rows of one run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-/tmp/rowhook-bench-amqp}
AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}

# shellcheck source=tests/bench/sink-bench.sh
. "$ROOT/tests/bench/sink-bench.sh"

# Declares, counts and deletes with AMQP 0.9.1 methods over a plain socket, as guest.
cat >"$WORK/amqp_admin.py" <<'EOF'
import socket, struct, sys

def short(s): b = s.encode(); return struct.pack("B", len(b)) + b
def long_(b): return struct.pack(">I", len(b)) + b

class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.s.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(0, 10, 10)
        self.send(0, 10, 11, long_(b"") + short("PLAIN") + long_(b"\0guest\0guest") + short("en_US"))
        tune = self.expect(0, 10, 30)
        self.send(0, 10, 31, tune[:6] + b"\0\0")
        self.call(0, 10, 40, short("/") + short("") + b"\0", 41)
        self.call(1, 20, 10, short(""), 11)
    def read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk: raise SystemExit("amqp_admin: the broker closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out
    def send(self, ch, cls, m, args):
        p = struct.pack(">HH", cls, m) + args
        self.s.sendall(struct.pack(">BHI", 1, ch, len(p)) + p + b"\xce")
    def expect(self, ch, cls, m):
        while True:
            kind, _, size = struct.unpack(">BHI", self.read(7))
            p = self.read(size + 1)[:-1]
            if kind != 1: continue
            c, mm = struct.unpack(">HH", p[:4])
            if (c, mm) in ((10, 50), (20, 40)):
                code, = struct.unpack(">H", p[4:6])
                raise SystemExit(f"amqp_admin: the broker refused: {code} {p[7:7 + p[6]].decode()}")
            if (c, mm) == (cls, m): return p[4:]
    def call(self, ch, cls, m, args, ok):
        self.send(ch, cls, m, args)
        return self.expect(ch, cls, ok)

cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Conn(host, port)
if cmd == "setup":
    ex, q, key = sys.argv[4:7]
    c.call(1, 40, 10, b"\0\0" + short(ex) + short("direct") + b"\x02" + long_(b""), 11)
    c.call(1, 50, 10, b"\0\0" + short(q) + b"\x02" + long_(b""), 11)
    c.call(1, 50, 20, b"\0\0" + short(q) + short(ex) + short(key) + b"\0" + long_(b""), 21)
elif cmd == "count":
    p = c.call(1, 50, 10, b"\0\0" + short(sys.argv[4]) + b"\x01" + long_(b""), 11)
    print(struct.unpack(">I", p[1 + p[0]:5 + p[0]])[0])
elif cmd == "purge":
    c.call(1, 50, 30, b"\0\0" + short(sys.argv[4]) + b"\0", 31)
elif cmd == "teardown":
    ex, q = sys.argv[4:6]
    c.call(1, 50, 40, b"\0\0" + short(q) + b"\0", 41)
    c.call(1, 40, 20, b"\0\0" + short(ex) + b"\0", 21)
EOF
admin() { python3 "$WORK/amqp_admin.py" "$1" "$AMQP_HOST" "$AMQP_PORT" "${@:2}"; }

EX=rowhook-bench-$$
Q=rowhook-bench-$$
admin setup "$EX" "$Q" bench
trap 'admin teardown "$EX" "$Q" || true' EXIT

check_count() {
    local n
    n=$(admin count "$Q")
    [[ $n == 1000000 ]] || { echo "amqp.sh: the queue holds $n messages, not 1000000" >&2; exit 1; }
    admin purge "$Q"
}

file_baseline
run amqp-persistent "kind = \"amqp\"
url = \"amqp://guest:guest@$AMQP_HOST:$AMQP_PORT\"
exchange = \"$EX\"
routing_key = \"bench\"
confirm_timeout_ms = 60000"
check_count
run amqp-transient "kind = \"amqp\"
url = \"amqp://guest:guest@$AMQP_HOST:$AMQP_PORT\"
exchange = \"$EX\"
routing_key = \"bench\"
persistent = false
confirm_timeout_ms = 60000"
check_count
