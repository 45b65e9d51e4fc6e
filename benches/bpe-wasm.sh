#!/usr/bin/env bash
# Builds benches/bpe-wasm (tollgate-bpe vs tiktoken-rs) for wasm32-wasip1 in
# release and runs it under Node.js (V8, Envoy's wasm engine), then natively.
# Usage: benches/bpe-wasm.sh [SECONDS_PER_CASE]   (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-1}
target_dir="$root/target/bpe-wasm"
corpus="$root/filter/bpe/tests/corpus"
manifest="$root/benches/bpe-wasm/Cargo.toml"

rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target list --installed | grep -qx wasm32-wasip1
command -v node >/dev/null || { echo "node (>= 20) is required" >&2; exit 1; }

build() { cargo build --quiet --release --manifest-path "$manifest" --target-dir "$target_dir" "$@"; }

echo "== building (release)"
build --target wasm32-wasip1
cp "$target_dir/wasm32-wasip1/release/bpe-wasm-bench.wasm" "$target_dir/bench-with-tiktoken.wasm"
build --target wasm32-wasip1 --no-default-features --features tiktoken
cp "$target_dir/wasm32-wasip1/release/bpe-wasm-bench.wasm" "$target_dir/bench-with-tiktoken-nomemo.wasm"
build --target wasm32-wasip1 --no-default-features --features memo
cp "$target_dir/wasm32-wasip1/release/bpe-wasm-bench.wasm" "$target_dir/bench-tollgate-only.wasm"
build
cp "$target_dir/release/bpe-wasm-bench" "$target_dir/bench-native"
build --no-default-features --features tiktoken
cp "$target_dir/release/bpe-wasm-bench" "$target_dir/bench-native-nomemo"

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== wasm module sizes"
ls -l "$target_dir"/bench-*.wasm | awk '{print $5, $NF}'

echo "== V8 (node $(node --version)): tollgate-bpe vs tiktoken-rs"
node "$root/benches/bpe-wasm/run.mjs" "$target_dir/bench-with-tiktoken.wasm" "$corpus" "$secs"
echo "== V8: memo off (every piece merged from scratch: worst case)"
node "$root/benches/bpe-wasm/run.mjs" "$target_dir/bench-with-tiktoken-nomemo.wasm" "$corpus" "$secs"
echo "== V8: tollgate-bpe only (module size and memory without tiktoken-rs)"
node "$root/benches/bpe-wasm/run.mjs" "$target_dir/bench-tollgate-only.wasm" "$corpus" "$secs"
echo "== native"
"$target_dir/bench-native" "$corpus" "$secs"
echo "== native, memo off"
"$target_dir/bench-native-nomemo" "$corpus" "$secs"
