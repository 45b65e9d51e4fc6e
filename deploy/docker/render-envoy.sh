#!/usr/bin/env bash
# Renders envoy/tollgate.yaml.tmpl for containers (docker-compose, deploy/docker/envoy.Dockerfile):
# the demo config and filter, but listening on 0.0.0.0 and reaching the other services by DNS name.
#   deploy/docker/render-envoy.sh OUT [WASM_PATH]
# Upstream names/ports come from the environment (defaults: the compose service names).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$1"
WASM="${2:-/etc/envoy/tollgate_filter.wasm}"
python3 "$ROOT/scripts/render_envoy.py" "$OUT" \
  LISTEN_PORT="${LISTEN_PORT:-10000}" ADMIN_PORT="${ADMIN_PORT:-9901}" WASM="$WASM" \
  PLUGIN_CONFIG="@${PLUGIN_CONFIG_FILE:-$ROOT/envoy/demo-config.json}" STOP_ON_HEADERS=true \
  OPENAI_HOST="${OPENAI_HOST:-sim-provider}" OPENAI_PORT="${OPENAI_PORT:-8081}" \
  ANTHROPIC_HOST="${ANTHROPIC_HOST:-sim-provider}" ANTHROPIC_PORT="${ANTHROPIC_PORT:-8081}" \
  CACHE_HOST="${CACHE_HOST:-cache-service}" CACHE_PORT="${CACHE_PORT:-8090}" \
  ACCESS_LOG="${ACCESS_LOG:-/dev/stdout}"
# The template is written for loopback: bind all interfaces inside the container, and resolve the
# upstreams by name (STATIC clusters take IP addresses only).
python3 - "$OUT" <<'PY'
import re, sys
p = sys.argv[1]
text = open(p).read()
text, n_addr = re.subn(r"address: 127\.0\.0\.1, port_value", "address: 0.0.0.0, port_value", text)
text, n_type = re.subn(r"^(\s+)type: STATIC$", r"\1type: STRICT_DNS", text, flags=re.M)
if n_addr != 2 or n_type < 3:
    sys.exit(f"render-envoy.sh: template changed shape (bind addresses: {n_addr}, clusters: {n_type})")
open(p, "w").write(text)
PY
