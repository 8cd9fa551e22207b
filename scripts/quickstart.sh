#!/usr/bin/env bash
# The README's quick start from nothing, as a newcomer runs it: `cargo new hello` beside
# (a link to) this repository, the dependency lines and the two files taken from README.md
# (the blocks after `<!-- quickstart: NAME -->`), a first build with a target directory of
# its own, then the server started and the client run against it.
#
# Offline (`--offline`): every crate comes from the local cargo cache, which any earlier
# build of this repository filled; nothing is fetched. Prints the first build's time, the
# number of crates compiled and the disk it took (the figures in README.md's Install).
# Uses port 8081 of 127.0.0.1, as the README's code does.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The code block after `<!-- quickstart: $1 -->` in README.md.
block() {
    awk -v want="<!-- quickstart: $1 -->" '
        $0 == want { found = 1; next }
        found == 1 && /^```/ { found = 2; next }
        found == 2 && /^```/ { exit }
        found == 2 { print }
    ' "$repo/README.md"
}

ln -s "$repo" "$work/tokio-webwire"
cd "$work"
cargo new --vcs none --quiet hello
cd hello
# `cargo new` ends Cargo.toml with its own [dependencies] header.
block Cargo.toml | grep -v '^\[dependencies\]$' >>Cargo.toml
mkdir -p src/bin
block src/bin/server.rs >src/bin/server.rs
block src/bin/client.rs >src/bin/client.rs
for file in Cargo.toml src/bin/server.rs src/bin/client.rs; do
    [ -s "$file" ] || { echo "quickstart: no block for $file in README.md" >&2; exit 1; }
done

export CARGO_TARGET_DIR="$work/target"
start=$(date +%s)
cargo build --offline --bins 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
seconds=$(( $(date +%s) - start ))
crates=$(grep -c '^ *Compiling ' "$work/build.log" || true)
echo "quickstart: first build: $crates crates compiled in ${seconds} s, target/ $(du -sh "$CARGO_TARGET_DIR" | cut -f1)"

"$CARGO_TARGET_DIR/debug/server" >"$work/server.out" &
server=$!
# The server prints its address once it listens: wait for that line (10 s at most).
for _ in $(seq 100); do
    grep -q . "$work/server.out" && break
    sleep 0.1
done
expected_server="listening on ws://127.0.0.1:8081/"
[ "$(cat "$work/server.out")" = "$expected_server" ] || {
    echo "quickstart: the server printed '$(cat "$work/server.out")', not '$expected_server'" >&2
    exit 1
}
output=$(timeout 30 "$CARGO_TARGET_DIR/debug/client")
expected=$'echo: hello\nlogged in as alice'
[ "$output" = "$expected" ] || {
    echo "quickstart: the client printed:" >&2
    echo "$output" >&2
    exit 1
}
echo "quickstart: the server and the client of README.md work"
