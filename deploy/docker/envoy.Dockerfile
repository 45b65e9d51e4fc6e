# syntax=docker/dockerfile:1
# Envoy 1.40 with the Tollgate filter and the demo configuration (envoy/demo-config.json), as in
# `make demo`, rendered for containers by deploy/docker/render-envoy.sh: listener :10000, admin
# :9901, upstreams sim-provider:8081 and cache-service:8090 (override with build args).
FROM rust:1.95-bookworm AS wasm
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY wire wire
COPY filter filter
COPY cache-service cache-service
COPY tests tests
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --locked --release --target wasm32-wasip1 -p tollgate-filter \
 && cp target/wasm32-wasip1/release/tollgate_filter.wasm /tollgate_filter.wasm

FROM python:3.11-slim-bookworm AS config
ARG OPENAI_HOST=sim-provider
ARG ANTHROPIC_HOST=sim-provider
ARG CACHE_HOST=cache-service
WORKDIR /src
COPY envoy envoy
COPY scripts/render_envoy.py scripts/render_envoy.py
COPY deploy/docker/render-envoy.sh deploy/docker/render-envoy.sh
RUN OPENAI_HOST=$OPENAI_HOST ANTHROPIC_HOST=$ANTHROPIC_HOST CACHE_HOST=$CACHE_HOST \
    bash deploy/docker/render-envoy.sh /envoy.yaml /etc/envoy/tollgate_filter.wasm

FROM envoyproxy/envoy:v1.40.0
RUN apt-get update && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wasm /tollgate_filter.wasm /etc/envoy/tollgate_filter.wasm
COPY --from=config /envoy.yaml /etc/envoy/envoy.yaml
EXPOSE 10000 9901
HEALTHCHECK --interval=5s --timeout=2s --retries=12 CMD curl -fsS http://127.0.0.1:9901/ready || exit 1
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart", "--file-flush-interval-msec", "200", "-l", "info"]
