#!/usr/bin/env bash
# The SMS sender behind examples/sms-outbox.toml: pops the jobs rowhook
# pushes onto the Redis list `sms:outbox`, oldest first (binlog order), and
# sends each once. Sending is one line on standard output here,
#
#   send +4915112345678 "Your code is 1234" (job 0-1-4:0:0)
#
# where a real sender calls its SMS gateway.
#
#   bash examples/sms-consumer.sh                  # until Ctrl-C
#   bash examples/sms-consumer.sh --timeout 1      # until the list stays empty for 1 s
#   bash examples/sms-consumer.sh --jobs 4         # until it has sent 4 jobs
#
# --url URL (default redis://127.0.0.1:6379, as in examples/sms-outbox.toml)
# and --list KEY (default sms:outbox) point it elsewhere; a password goes in
# the environment, REDISCLI_AUTH=..., not in the URL. Needs redis-cli and jq.
#
# Duplicates: rowhook delivers at least once, so after a crash a job may be
# pushed twice (a run stopped before its checkpoint, a reply from Redis lost
# on the way). Every delivery of a job has the same `job` id, the row
# change's, so the sender claims the id before sending,
#
#   SET sms:done:<job> 1 NX EX 86400
#
# and drops a job whose id is claimed already (a line on standard error).
# The claim lasts a day, far longer than a re-delivery can come late. It is
# taken before the send: a sender killed between the two loses that message
# rather than sending it twice. BLPOP removes the job as it hands it over; a
# sender that must not lose a popped job takes it with BLMOVE into a list of
# its own and removes it there once sent.
set -euo pipefail

url=redis://127.0.0.1:6379
list=sms:outbox
timeout=0
jobs=0

die() {
    echo "sms-consumer: $*" >&2
    exit 1
}

usage="use --url URL, --list KEY, --timeout SECONDS, --jobs N"
while (($#)); do
    case $1 in
        --url | --list | --timeout | --jobs) (($# >= 2)) || die "$1 needs a value: $usage" ;;
        *) die "unknown option \`$1\`: $usage" ;;
    esac
    declare "${1#--}=$2"
    shift 2
done
[[ $timeout =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--timeout \`$timeout\`: seconds, e.g. 1 or 0.5 (0: wait forever)"
[[ $jobs =~ ^[0-9]+$ ]] || die "--jobs \`$jobs\`: a number of jobs (0: no limit)"
command -v redis-cli >/dev/null || die "redis-cli is missing (apt-get install redis-tools)"
command -v jq >/dev/null || die "jq is missing (apt-get install jq)"

redis() {
    redis-cli -u "$url" --raw "$@" || die "redis-cli $1 failed: is Redis up at the --url?"
}

sent=0
dropped=0
finish() {
    echo "sms-consumer: sent $sent, dropped $dropped duplicates" >&2
}
trap finish EXIT

while ((jobs == 0 || sent < jobs)); do
    # Two lines, the list's name and the job; one empty line when the
    # timeout passed with nothing to pop.
    popped=$(redis BLPOP "$list" "$timeout")
    mapfile -t reply <<<"$popped"
    if [[ -z ${reply[0]:-} ]]; then
        break
    fi
    [[ ${reply[0]} == "$list" && ${#reply[@]} -eq 2 ]] || die "BLPOP $list: ${reply[*]}"
    payload=${reply[1]}

    # Job id, number and text (as a JSON string, so one line whatever it holds).
    mapfile -t job < <(jq -r '.job, .to, (.body | @json)' <<<"$payload" 2>/dev/null || true)
    if [[ ${#job[@]} -ne 3 || ! ${job[0]} =~ ^[[:graph:]]+$ || ! ${job[1]} =~ ^\+[0-9]{4,15}$ ]]; then
        echo "sms-consumer: not a job, dropped: ${payload@Q}" >&2
        continue
    fi
    id=${job[0]} to=${job[1]} body=${job[2]}

    claim=$(redis SET "sms:done:$id" 1 NX EX 86400)
    if [[ $claim != OK ]]; then
        echo "sms-consumer: job $id was sent already, dropped" >&2
        dropped=$((dropped + 1))
        continue
    fi
    echo "send $to $body (job $id)"
    sent=$((sent + 1))
done
