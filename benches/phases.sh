#!/usr/bin/env bash
# Where the filter's time goes: the load benchmark on a `phase-timing` build of the filter
# (src/timing.rs), for LLM traffic and for a path the filter passes through untouched.
# Writes benches/results/phases.md. Usage: benches/phases.sh [load options, e.g. --duration 10]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_TARGET_DIR=target/phase-timing cargo build --release --target wasm32-wasip1 \
  -p tollgate-filter --features phase-timing
CARGO_TARGET_DIR=target/io-floor cargo build --release --target wasm32-wasip1 \
  -p tollgate-filter --features phase-timing,io-floor
CARGO_TARGET_DIR=target/free-count cargo build --release --target wasm32-wasip1 \
  -p tollgate-filter --features phase-timing,free-count
cargo build --release -p tollgate-benches --bin load
export TOLLGATE_WASM="$ROOT/target/phase-timing/wasm32-wasip1/release/tollgate_filter.wasm"
out=benches/results/phases.md
{
  echo "# Where the filter's time goes"
  echo
  echo "The load benchmark (\`benches/phases.sh\`) with a \`phase-timing\` build of the filter, which"
  echo "times every callback (host calls included) with the host clock; the clock itself adds two host"
  echo "calls per callback, so these runs are slower than \`load.md\`. \"Envoy's work around them\" is"
  echo "the rest of the added Envoy CPU: entering V8, buffering, the access log, framing."
  echo
  echo "## LLM traffic (/v1/chat/completions)"
  echo
  target/release/load --phases "$@"
  echo "## A path the filter does not meter (pass-through after the request headers)"
  echo
  LOAD_PATH=/internal/health target/release/load --phases "$@"
  echo "## The I/O floor: metering's host I/O without its work (feature \`io-floor\`)"
  echo
  echo "The same LLM traffic through a build whose metered requests only do the host I/O metering"
  echo "needs (read the request body, read the response headers and add four \`x-tollgate-*\`"
  echo "headers, read the response body, set the access-log property) with fixed values: no"
  echo "parsing, counting, pricing, governance or metrics (\`filter/src/glue/floor.rs\`). The"
  echo "difference to the first table is the filter's compute in Envoy."
  echo
  TOLLGATE_WASM="$ROOT/target/io-floor/wasm32-wasip1/release/tollgate_filter.wasm" \
    target/release/load --phases "$@"
  echo "## Everything but the count (feature \`free-count\`)"
  echo
  echo "The same LLM traffic through a build that does all the filter's work except counting:"
  echo "prompt texts are taken as a quarter of their bytes (\`CountCache::count\` in"
  echo "\`filter/core/src/count.rs\`). What any tokenizer, however fast, would leave."
  echo
  TOLLGATE_WASM="$ROOT/target/free-count/wasm32-wasip1/release/tollgate_filter.wasm" \
    target/release/load --phases "$@"
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
