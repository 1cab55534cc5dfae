#!/usr/bin/env bash
# Runs the official proxy-wasm Rust SDK's `hello_world` example (a bootstrap Wasm service:
# `envoy.bootstrap.wasm`, singleton) in weir from the example's own envoy.yaml, with only the
# module's path changed, and checks that it starts and ticks. The examples are not in the
# crates.io package: this takes a checkout of github.com/proxy-wasm/proxy-wasm-rust-sdk (a
# work tree, or a git directory such as a fetched snapshot), builds the example for
# wasm32-wasip1 (its dependencies come from crates.io) and leaves everything in a temp dir.
# usage: tests/scripts/sdk-examples.sh SDK_CHECKOUT WEIR_BIN
set -eu
src=${1:?usage: sdk-examples.sh SDK_CHECKOUT WEIR_BIN}
weir=${2:?usage: sdk-examples.sh SDK_CHECKOUT WEIR_BIN}
cargo=${CARGO:-cargo}
work=$(mktemp -d)
weir_pid=""
cleanup() {
    if [ -n "$weir_pid" ]; then kill "$weir_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The SDK's source: a work tree as it is, a git directory through `git archive`.
if [ -f "$src/examples/hello_world/envoy.yaml" ]; then
    sdk=$src
elif git --git-dir="$src" rev-parse --verify -q HEAD >/dev/null; then
    sdk=$work/sdk
    mkdir -p "$sdk"
    git --git-dir="$src" archive HEAD | tar -x -C "$sdk"
else
    echo "$src is neither a checkout of proxy-wasm-rust-sdk nor its git directory" >&2
    exit 2
fi
example=$sdk/examples/hello_world
echo "== building $example for wasm32-wasip1"
timeout 900 "$cargo" build --manifest-path "$example/Cargo.toml" --target wasm32-wasip1 \
    --release --target-dir "$work/target"
module=$work/target/wasm32-wasip1/release/proxy_wasm_example_hello_world.wasm
test -f "$module"

# The example's envoy.yaml, the module's path changed (it has no ports).
config=$work/envoy.yaml
sed -E "s#(filename: *\")[^\"]*/proxy_wasm_example_hello_world\.wasm\"#\1$module\"#" \
    "$example/envoy.yaml" >"$config"
echo "== the example's envoy.yaml, as weir runs it (diff against the original):"
diff "$example/envoy.yaml" "$config" || true
"$weir" validate -c "$config"

echo "== running weir; the example ticks every 5 s"
log=$work/weir.log
"$weir" -c "$config" --log-level info >"$log" 2>&1 &
weir_pid=$!
for _ in $(seq 1 60); do
    if [ "$(grep -c 'your lucky number is' "$log")" -ge 2 ]; then break; fi
    if ! kill -0 "$weir_pid" 2>/dev/null; then break; fi
    sleep 0.5
done
kill -TERM "$weir_pid" 2>/dev/null || true
for _ in $(seq 1 40); do kill -0 "$weir_pid" 2>/dev/null || break; sleep 0.25; done
weir_pid=""
cat "$log"
ticks=$(grep -c 'your lucky number is' "$log" || true)
if ! grep -q 'Hello, World!' "$log" || [ "$ticks" -lt 2 ]; then
    echo "FAIL: hello_world did not start and tick twice within 30 s" >&2
    exit 1
fi
if ! grep -q 'Wasm service stopped' "$log"; then
    echo "FAIL: the service did not stop on SIGTERM" >&2
    exit 1
fi
echo "OK: hello_world started, ticked $ticks times and stopped with weir"
