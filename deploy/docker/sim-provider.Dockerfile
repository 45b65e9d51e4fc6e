# syntax=docker/dockerfile:1
# The simulated provider (OpenAI and Anthropic wire formats, streaming) used by the demo.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY wire wire
COPY filter filter
COPY cache-service cache-service
COPY tests tests
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --locked --release -p tollgate-tests --bin sim-provider \
 && cp target/release/sim-provider /sim-provider

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 sim
COPY --from=build /sim-provider /usr/local/bin/sim-provider
USER 10001:10001
ENV SIM_LISTEN=0.0.0.0:8081 SIM_LATENCY_MS=250 SIM_CHUNK_DELAY_MS=15
EXPOSE 8081
HEALTHCHECK --interval=5s --timeout=2s --retries=12 CMD curl -fsS http://127.0.0.1:8081/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/sim-provider"]
