#!/usr/bin/env bash
# Where the filter's time goes: the load benchmark on a `phase-timing` build of the filter
# (src/timing.rs), for LLM traffic and for a path the filter passes through untouched.
# Writes benches/results/phases.md. Usage: benches/phases.sh [load options, e.g. --duration 10]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_TARGET_DIR=target/phase-timing cargo build --release --target wasm32-wasip1 \
  -p tollgate-filter --features phase-timing
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
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
