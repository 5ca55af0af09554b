#!/usr/bin/env bash
# Builds the handler, then replays the recorded binlog in tests/ through it
# into in-memory sinks and compares what each sink got with golden/.
# `bash test.sh --update` records golden/ anew. Needs Python 3.11 with
# componentize-py 0.25.1 (`pip install componentize-py==0.25.1`) and
# `rowhook` on PATH (or ROWHOOK=/path/to/rowhook).
set -euo pipefail
cd "$(dirname "$0")"
PYTHONPATH=sdk/python python3 -m rowhook_guest build app.py -o app.wasm > /dev/null
"${ROWHOOK:-rowhook}" test -c rowhook.toml --binlog tests/shop-bin.000001 "$@"
