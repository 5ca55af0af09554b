#!/usr/bin/env bash
# Builds the handler, then replays the recorded binlog in tests/ through it
# into in-memory sinks and compares what each sink got with golden/.
# `bash test.sh --update` records golden/ anew. Needs `rowhook` on PATH (or
# ROWHOOK=/path/to/rowhook) and `rustup target add wasm32-wasip2`.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2 --target-dir target --quiet
"${ROWHOOK:-rowhook}" test -c rowhook.toml --binlog tests/shop-bin.000001 "$@"
