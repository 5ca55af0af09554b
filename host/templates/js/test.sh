#!/usr/bin/env bash
# Builds the handler, then replays the recorded binlog in tests/ through it
# into in-memory sinks and compares what each sink got with golden/.
# `bash test.sh --update` records golden/ anew. Needs Node 20, `rowhook` on
# PATH (or ROWHOOK=/path/to/rowhook); the SDK's build tools are installed
# into sdk/js/node_modules the first time.
set -euo pipefail
cd "$(dirname "$0")"
[ -d sdk/js/node_modules ] || (cd sdk/js && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
node sdk/js/bin/rowhook-js.js build handler.js -o handler.wasm 2>/dev/null
"${ROWHOOK:-rowhook}" test -c rowhook.toml --binlog tests/shop-bin.000001 "$@"
