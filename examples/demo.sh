#!/usr/bin/env bash
# The README's first command: builds the example handlers
# (examples/handlers/) and rowhook, then replays the recorded shop binlog
# through the four that need no server at once (examples/demo.toml) and
# shows what reached each sink. No server needed; works from any directory; once built, a run takes
# a few seconds.
#
#   bash examples/demo.sh
#
# What the sinks got stays in examples/var/demo/ (emptied at the start of
# every run, so the counters start from zero again).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=examples/var/demo
fifo=$out/news.fifo

step() { printf '\n== %s\n' "$*"; }

step "wasm32-wasip2, the target handlers are built for"
if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2
else
    echo "rustup not found: the wasm32-wasip2 standard library must already be installed"
fi

step "building the example handlers (examples/handlers, one WebAssembly component each)"
# The target directory is explicit: the configs point into it, whatever
# CARGO_TARGET_DIR says.
cargo build --release --target wasm32-wasip2 \
    --manifest-path examples/handlers/Cargo.toml --target-dir examples/handlers/target

step "building rowhook"
# `--bin rowhook`, not `-p rowhook`: cargo then resolves features for the
# whole workspace, as `cargo test --workspace` does, and the tests reuse this
# build instead of compiling wasmtime a second time.
cargo build --bin rowhook

rm -rf "$out"
mkdir -p "$out"
mkfifo "$fifo"

# The page builder: reads ids from the named pipe until rowhook closes it.
page_builder() {
    while IFS= read -r id; do
        echo "page builder: news item $id changed"
    done <"$fifo"
}

reader=
finish_page_builder() {
    # Our write end held the pipe open across the run: closing it gives the
    # page builder end-of-file once it has read every id.
    exec 3>&- || true
    if [[ -n $reader ]]; then
        wait "$reader" || true
        reader=
    fi
}
trap finish_page_builder EXIT

page_builder &
reader=$!
# Opening the write end blocks until the page builder has opened the pipe,
# so rowhook finds a reader at its first write and no id waits or is lost.
exec 3>"$fifo"

step "rowhook replay -c examples/demo.toml examples/binlog/shop-bin.000001"
echo "(orders-copy writes to stdout; 'page builder:' lines come from a reader of the FIFO)"
echo
cargo run --quiet --bin rowhook -- replay -c examples/demo.toml examples/binlog/shop-bin.000001 3>&-
finish_page_builder

step "daily-signups wrote $out/signups.jsonl (a file a dashboard reads)"
cat "$out/signups.jsonl"

step "ip-block ran examples/bin/block-ip.sh (a stand-in for nft, once, at the 4th hit), which recorded $out/firewall.log"
cat "$out/firewall.log"

step "done"
echo "Each handler alone, replayed or live: README.md, section Examples."
echo "Next: cargo test --workspace"
