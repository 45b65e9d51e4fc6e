# syntax=docker/dockerfile:1
# The Tollgate filter as a Wasm image in the "compat" layout Istio pulls (one layer with
# /plugin.wasm). Build from the repository root:
#   docker build -f deploy/docker/filter.Dockerfile -t <registry>/tollgate-filter:<tag> .
# (No Docker? deploy/oci/package.sh writes an OCI layout of the same module without it.)
FROM rust:1.95-bookworm AS build
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
 && cp target/wasm32-wasip1/release/tollgate_filter.wasm /plugin.wasm

FROM scratch
LABEL org.opencontainers.image.source="https://github.com/tollgate-dev/tollgate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.title="tollgate-filter"
COPY --from=build /plugin.wasm /plugin.wasm
