#!/usr/bin/env bash
# The demo stack: the simulated provider (OpenAI + Anthropic wire formats), the Tollgate cache
# service (127.0.0.1:8090, embedded store in .tollgate/cache, real ONNX embeddings) and Envoy with
# the Tollgate filter on 127.0.0.1:10000 (admin on 127.0.0.1:9901). Beside it, a pool of 4
# simulated self-hosted replicas with KV prefix caches (127.0.0.1:8200-8203) behind a second
# Envoy with the filter on 127.0.0.1:10001 (admin 127.0.0.1:9902), which keeps each prompt
# prefix on one replica by hashing `x-tollgate-prefix-key` (envoy/pool.yaml.tmpl).
#   scripts/stack.sh up     start in the background, return when ready
#   scripts/stack.sh down   stop
#   scripts/stack.sh status
# Expects `make build` to have run (filter .wasm, sim-provider and cache-service binaries).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.tollgate"
LISTEN_PORT="${TOLLGATE_PORT:-10000}"
ADMIN_PORT="${TOLLGATE_ADMIN_PORT:-9901}"
SIM_PORT="${TOLLGATE_SIM_PORT:-8081}"
CACHE_PORT="${TOLLGATE_CACHE_PORT:-8090}"
POOL_PORT="${TOLLGATE_POOL_PORT:-10001}"
POOL_ADMIN_PORT="${TOLLGATE_POOL_ADMIN_PORT:-9902}"
POOL_BASE_PORT="${TOLLGATE_POOL_BASE_PORT:-8200}"
POOL_REPLICAS=4
# Each replica's KV cache holds about a third of the demo's shared prompts (scripts/demo_traffic.py):
# with hashing each replica needs only its share; round robin makes every replica hold them all.
POOL_CAPACITY_BLOCKS="${TOLLGATE_POOL_CAPACITY_BLOCKS:-300}"
SIM_LATENCY_MS="${TOLLGATE_SIM_LATENCY_MS:-250}"
CONFIG="${TOLLGATE_CONFIG:-$ROOT/envoy/demo-config.json}"
WASM="$ROOT/target/wasm32-wasip1/release/tollgate_filter.wasm"
SIM="$ROOT/target/release/sim-provider"
SIM_POOL="$ROOT/target/release/sim-pool"
CACHE_SERVICE="$ROOT/target/release/tollgate-cache-service"
ADMIN_TOKEN="${TOLLGATE_ADMIN_TOKEN:-demo-admin-token}"
ENVOY="$ROOT/.venv/bin/envoy"

say() { printf '\033[1m[stack]\033[0m %s\n' "$*"; }

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

stop() {
  for name in envoy-pool envoy pool cache sim; do
    if running "$name"; then
      kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true
      for _ in $(seq 50); do running "$name" || break; sleep 0.1; done
      running "$name" && kill -9 "$(cat "$RUN/$name.pid")" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
  done
}

wait_http() { # url tries
  for _ in $(seq "$2"); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

up() {
  for f in "$WASM" "$SIM" "$SIM_POOL" "$CACHE_SERVICE" "$ENVOY"; do
    [ -e "$f" ] || { echo "missing $f — run 'make build' first" >&2; exit 1; }
  done
  mkdir -p "$RUN"
  stop
  for port in "$LISTEN_PORT" "$ADMIN_PORT" "$SIM_PORT" "$CACHE_PORT" "$POOL_PORT" "$POOL_ADMIN_PORT" \
      $(seq "$POOL_BASE_PORT" $((POOL_BASE_PORT + POOL_REPLICAS - 1))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is already in use (set TOLLGATE_PORT / TOLLGATE_ADMIN_PORT / TOLLGATE_SIM_PORT / TOLLGATE_CACHE_PORT / TOLLGATE_POOL_PORT / TOLLGATE_POOL_ADMIN_PORT / TOLLGATE_POOL_BASE_PORT)" >&2
      exit 1
    fi
  done
  say "simulated provider on 127.0.0.1:$SIM_PORT (latency ${SIM_LATENCY_MS} ms)"
  nohup "$SIM" --listen "127.0.0.1:$SIM_PORT" --latency-ms "$SIM_LATENCY_MS" --chunk-delay-ms 15 \
    >"$RUN/sim.log" 2>&1 &
  echo $! >"$RUN/sim.pid"
  wait_http "http://127.0.0.1:$SIM_PORT/healthz" 100 || { cat "$RUN/sim.log" >&2; exit 1; }

  say "cache service on 127.0.0.1:$CACHE_PORT (store $RUN/cache; admin token in \$TOLLGATE_ADMIN_TOKEN, default $ADMIN_TOKEN)"
  TOLLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" nohup "$CACHE_SERVICE" --listen "127.0.0.1:$CACHE_PORT" \
    --data-dir "$RUN/cache" >"$RUN/cache.log" 2>&1 &
  echo $! >"$RUN/cache.pid"
  wait_http "http://127.0.0.1:$CACHE_PORT/readyz" 600 || { tail -30 "$RUN/cache.log" >&2; stop; exit 1; }

  python3 "$ROOT/scripts/render_envoy.py" "$RUN/envoy.yaml" \
    LISTEN_PORT="$LISTEN_PORT" ADMIN_PORT="$ADMIN_PORT" WASM="$WASM" \
    PLUGIN_CONFIG="@$CONFIG" STOP_ON_HEADERS=true \
    OPENAI_HOST=127.0.0.1 OPENAI_PORT="$SIM_PORT" ANTHROPIC_HOST=127.0.0.1 ANTHROPIC_PORT="$SIM_PORT" \
    CACHE_HOST=127.0.0.1 CACHE_PORT="$CACHE_PORT" \
    ACCESS_LOG="$RUN/access.log"
  say "Envoy + Tollgate filter on 127.0.0.1:$LISTEN_PORT (admin 127.0.0.1:$ADMIN_PORT)"
  : >"$RUN/access.log"
  nohup "$ENVOY" -c "$RUN/envoy.yaml" --concurrency 2 --disable-hot-restart \
    --file-flush-interval-msec 200 -l info >"$RUN/envoy.log" 2>&1 &
  echo $! >"$RUN/envoy.pid"
  if ! wait_http "http://127.0.0.1:$ADMIN_PORT/ready" 300 || ! (exec 3<>"/dev/tcp/127.0.0.1/$LISTEN_PORT") 2>/dev/null; then
    tail -30 "$RUN/envoy.log" >&2
    stop
    exit 1
  fi

  say "simulated self-hosted pool: $POOL_REPLICAS replicas with KV prefix caches ($POOL_CAPACITY_BLOCKS blocks each) on 127.0.0.1:$POOL_BASE_PORT-$((POOL_BASE_PORT + POOL_REPLICAS - 1))"
  nohup "$SIM_POOL" --replicas "$POOL_REPLICAS" --base-port "$POOL_BASE_PORT" \
    --capacity-blocks "$POOL_CAPACITY_BLOCKS" >"$RUN/pool.log" 2>&1 &
  echo $! >"$RUN/pool.pid"
  wait_http "http://127.0.0.1:$POOL_BASE_PORT/healthz" 100 || { cat "$RUN/pool.log" >&2; stop; exit 1; }
  python3 "$ROOT/scripts/render_envoy.py" "$RUN/envoy-pool.yaml" TEMPLATE=pool.yaml.tmpl \
    LISTEN_PORT="$POOL_PORT" ADMIN_PORT="$POOL_ADMIN_PORT" WASM="$WASM" \
    PLUGIN_CONFIG="@$ROOT/envoy/pool-config.json" STOP_ON_HEADERS=true \
    POOL="127.0.0.1:$POOL_BASE_PORT:$POOL_REPLICAS" CACHE_HOST=127.0.0.1 CACHE_PORT="$CACHE_PORT"
  say "Envoy + Tollgate filter in front of the pool on 127.0.0.1:$POOL_PORT (admin 127.0.0.1:$POOL_ADMIN_PORT)"
  nohup "$ENVOY" -c "$RUN/envoy-pool.yaml" --concurrency 1 --disable-hot-restart --base-id 1 \
    -l warning >"$RUN/envoy-pool.log" 2>&1 &
  echo $! >"$RUN/envoy-pool.pid"
  if ! wait_http "http://127.0.0.1:$POOL_ADMIN_PORT/ready" 300 || ! (exec 3<>"/dev/tcp/127.0.0.1/$POOL_PORT") 2>/dev/null; then
    tail -30 "$RUN/envoy-pool.log" >&2
    stop
    exit 1
  fi
  say "ready. Logs: $RUN/{envoy,envoy-pool,cache,sim,pool,access}.log"
}

case "${1:-}" in
  up) up ;;
  down) stop; say "stopped" ;;
  status)
    for name in sim cache envoy pool envoy-pool; do
      if running "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
    done ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
