#!/bin/sh
# Stands in for nft in the ip-block example, so the demo needs no root and
# touches no firewall: it appends the command line it was given, as
# `nft ARGS...`, to the file $BLOCK_LOG (relative to its working
# directory), which the sink's `env` sets. README.md, section "The exec
# sink", shows the config that runs /usr/sbin/nft instead.
set -eu
log=${BLOCK_LOG:?the sink must set BLOCK_LOG in its env}
mkdir -p "$(dirname "$log")"
line=nft
for arg in "$@"; do
    line="$line $arg"
done
printf '%s\n' "$line" >>"$log"
