#!/usr/bin/env bash
# The filter core's per-request work (benches/core-wasm) in V8 and natively: builds it for
# wasm32-wasip1 and runs it under Node.js with TurboFan only (`--no-liftoff`, as Envoy's
# proxy-wasm host runs modules), then natively, for 2 KB and 32 KB prompts, with and without a
# memory sweep between requests (cold caches). Writes benches/results/core.md.
# Usage: benches/core-wasm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir="$root/target/core-wasm"
corpus="$root/filter/bpe/tests/corpus"
manifest="$root/benches/core-wasm/Cargo.toml"
rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target list --installed | grep -qx wasm32-wasip1
command -v node >/dev/null || { echo "node (>= 20) is required" >&2; exit 1; }
cargo build --quiet --release --manifest-path "$manifest" --target-dir "$target_dir" --target wasm32-wasip1
cargo build --quiet --release --manifest-path "$manifest" --target-dir "$target_dir"
wasm="$target_dir/wasm32-wasip1/release/core-wasm-bench.wasm"
native="$target_dir/release/core-wasm-bench"
out=benches/results/core.md
{
  echo "# The filter core's work per request, in V8 and natively"
  echo
  echo "\`benches/core-wasm.sh\`: the whole exchange of \`tollgate-core\` (request headers, body: parse,"
  echo "exact count, governance; response headers; usage from the JSON response; counters and the"
  echo "access-log line) on distinct prompts shaped like the load benchmark's, without Envoy or host"
  echo "calls; in V8 (Node.js $(node --version), V8 $(node -p process.versions.v8), TurboFan only) and"
  echo "natively; with a memory sweep between requests (cold caches, as between two requests of"
  echo "an Envoy worker) and without. $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
  echo
  echo '```'
  for size in 2048 32768; do
    for sweep in 0 2048; do
      echo -n "V8      "
      node --no-liftoff "$root/benches/bpe-wasm/run.mjs" "$wasm" "$corpus" "$size" "$sweep" 2>/dev/null \
        | grep '^size'
      echo -n "native  "
      "$native" "$corpus" "$size" "$sweep"
    done
  done
  echo '```'
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
