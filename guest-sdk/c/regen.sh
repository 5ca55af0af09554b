#!/usr/bin/env bash
# Regenerates gen/, the C bindings of world `handler` (guest-sdk/wit) that
# rowhook.h builds on, with a pinned wit-bindgen-cli.
#
#   guest-sdk/c/regen.sh           rewrite gen/
#   guest-sdk/c/regen.sh --check   fail if gen/ differs from fresh bindings
#
# wit-bindgen-cli is installed once into guest-sdk/c/.tools (git-ignored)
# with `cargo install --locked`, the C generator only: a few minutes on two
# cores. Its version is the one of the wit-bindgen crate the Rust SDK uses,
# so both SDKs read the WIT alike.
set -euo pipefail

version=0.60.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=${RH_TOOLS:-$here/.tools}
bin=$tools/bin/wit-bindgen

check=false
case ${1:-} in
--check) check=true ;;
"") ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

if ! [[ -x $bin ]] || [[ $("$bin" --version) != "wit-bindgen-cli $version"* ]]; then
    echo "installing wit-bindgen-cli $version into $tools" >&2
    cargo install wit-bindgen-cli --version "$version" --locked --no-default-features --features c --root "$tools"
fi

fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
if ! log=$("$bin" c "$here/../wit" --world handler --out-dir "$fresh" 2>&1); then
    echo "$log" >&2
    exit 1
fi

if $check; then
    if ! diff -r "$fresh" "$here/gen"; then
        echo "guest-sdk/c/gen differs from what wit-bindgen $version makes of guest-sdk/wit: run guest-sdk/c/regen.sh and commit gen/" >&2
        exit 1
    fi
    echo "guest-sdk/c/gen is up to date (wit-bindgen $version)"
else
    rm -rf "$here/gen"
    mkdir -p "$here/gen"
    cp "$fresh"/* "$here/gen/"
    echo "wrote guest-sdk/c/gen (wit-bindgen $version)"
fi
