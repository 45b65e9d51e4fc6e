//! `sim-provider`: the simulated OpenAI/Anthropic provider as a server.
//!
//! ```text
//! sim-provider [--listen 127.0.0.1:8081] [--latency-ms N] [--chunk-delay-ms N]
//! ```
//! Logs with `tracing` (`RUST_LOG`, default `info`; `debug` logs every
//! request); stops gracefully on SIGINT/SIGTERM.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use tollgate_tests::sim::{self, SimConfig};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "sim-provider",
    version,
    about = "Simulated OpenAI/Anthropic LLM provider"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Added latency before the first byte of every response, in ms.
    #[arg(long, env = "SIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Delay between stream chunks, in ms.
    #[arg(long, env = "SIM_CHUNK_DELAY_MS", default_value_t = 0)]
    chunk_delay_ms: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = SimConfig {
        latency: Duration::from_millis(args.latency_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
    };
    // build both tokenizers before taking traffic
    let warm = tokio::task::spawn_blocking(|| {
        sim::tokens::Encoding::Cl100kBase.count("warm up");
        sim::tokens::Encoding::O200kBase.count("warm up");
    });
    if let Err(e) = warm.await {
        tracing::error!(error = %e, "tokenizer warm-up failed");
        return std::process::ExitCode::FAILURE;
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %args.listen, error = %e, "cannot bind");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(%addr, latency_ms = args.latency_ms, chunk_delay_ms = args.chunk_delay_ms, "sim-provider listening");
    match sim::serve(listener, config, sim::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            std::process::ExitCode::FAILURE
        }
    }
}
