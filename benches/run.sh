#!/usr/bin/env bash
# All benchmarks: the Envoy load comparison (wrk) and the in-V8 tokenizer benchmark.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v wrk >/dev/null || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo; $SUDO apt-get update -qq; $SUDO apt-get install -y -qq wrk; }
cargo build --release -p tollgate-benches --bin load
target/release/load "$@"
[ -x benches/bpe-wasm.sh ] && benches/bpe-wasm.sh
