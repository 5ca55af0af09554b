#!/usr/bin/env bash
# Builds the handler, then replays the recorded binlog in tests/ through it
# into in-memory sinks and compares what each sink got with golden/.
# `bash test.sh --update` records golden/ anew. Needs make, Debian's clang,
# lld, wasi-libc and libclang-rt-dev-wasm32, the Rust toolchain (for
# wasm-component-ld), and `rowhook` on PATH (or ROWHOOK=/path/to/rowhook).
set -euo pipefail
cd "$(dirname "$0")"
make -s handler.wasm
"${ROWHOOK:-rowhook}" test -c rowhook.toml --binlog tests/shop-bin.000001 "$@"
