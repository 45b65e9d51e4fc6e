#!/usr/bin/env bash
# All benchmarks: the Envoy load comparison (wrk), the in-V8 tokenizer benchmark and the core's
# per-request work in V8 and natively.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v wrk >/dev/null || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo; $SUDO apt-get update -qq; $SUDO apt-get install -y -qq wrk; }
cargo build --release -p tollgate-benches --bin load
target/release/load "$@"
[ -x benches/bpe-wasm.sh ] && benches/bpe-wasm.sh
[ -x benches/core-wasm.sh ] && benches/core-wasm.sh
