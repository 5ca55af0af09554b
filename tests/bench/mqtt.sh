#!/usr/bin/env bash
# Messages per second into an MQTT broker, every one acknowledged (QoS 1), end to end.
#
#   tests/bench/mqtt.sh            # ~3 min on 2 cores after the release build
#
# 1. builds rowhook (release) and the `counting` handler (tests/guests/trivial/counting:
#    one ~90-byte message per row change, keyed by the change id);
# 2. makes a binlog of one transaction inserting 1,000,000 narrow rows (a private MariaDB,
#    tests/mariadb.sh, INSERT ... SELECT FROM seq_1_to_1000000), unless $BINLOG names one;
# 3. starts a private mosquitto (no persistence, $SYS every second) on a free port;
# 4. times `rowhook replay` of it, under GNU time for the peak RSS, with the handler's sink
#    as a file (`fsync = "never"`, the pipeline's own ceiling), then as an mqtt sink in
#    MQTT 5 and in MQTT 3.1.1 (QoS 1, one topic), and checks after each mqtt run that the
#    broker counted 1,000,000 more publishes received ($SYS/broker/publish/messages/received,
#    read with mosquitto_sub from mosquitto-clients).
# No subscriber is connected, so the broker only acknowledges and drops: the figure is what
# rowhook and the broker's ingest reach. The machine is shared: compare the rows of one run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-/tmp/rowhook-bench-mqtt}
command -v mosquitto_sub >/dev/null || { echo "mqtt.sh: needs mosquitto_sub (apt-get install mosquitto-clients)" >&2; exit 1; }

# shellcheck source=tests/bench/sink-bench.sh
. "$ROOT/tests/bench/sink-bench.sh"

MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/mosquitto.conf" <<CONF
listener $MPORT 127.0.0.1
allow_anonymous true
persistence false
sys_interval 1
log_dest file $WORK/mosquitto.log
CONF
mosquitto -c "$WORK/mosquitto.conf" &
MPID=$!
trap 'kill $MPID 2>/dev/null || true' EXIT
until mosquitto_sub -p "$MPORT" -t '$SYS/broker/uptime' -C 1 -W 1 >/dev/null 2>&1; do sleep 0.1; done

received() { # publishes the broker has counted, once it has counted at least $1
    local n
    for _ in $(seq 1 30); do
        n=$(mosquitto_sub -p "$MPORT" -t '$SYS/broker/publish/messages/received' -C 1 -W 5)
        [[ $n -ge ${1:-0} ]] && { echo "$n"; return; }
        sleep 1
    done
    echo "$n"
}

file_baseline
for protocol in 5 3.1.1; do
    before=$(received 0)
    run "mqtt-$protocol" "kind = \"mqtt\"
url = \"mqtt://127.0.0.1:$MPORT\"
topic = \"bench/orders\"
protocol = \"$protocol\""
    after=$(received $((before + 1000000)))
    (( after - before == 1000000 )) || { echo "mqtt.sh: the broker counted $((after - before)) publishes, not 1000000" >&2; exit 1; }
done
