//! `sim-pool`: a pool of simulated self-hosted replicas with a KV prefix cache
//! (see `tollgate_tests::sim::pool`), replica `i` on port `base-port + i`.
//!
//! ```text
//! sim-pool [--replicas 4] [--host 127.0.0.1] [--base-port 8200] [--capacity-blocks 2000]
//!          [--block-tokens 16] [--base-latency-ms 10] [--prefill-ms-per-token 0.2]
//!          [--decode-ms-per-token 2]
//! ```
//! Put Envoy in front with `envoy/pool.yaml.tmpl`. `GET /_sim/pool-stats` on any replica shows
//! every replica's hits and misses; `DELETE` resets them and empties the caches. Logs with
//! `tracing` (`RUST_LOG`, default `info`); stops gracefully on SIGINT/SIGTERM.

use clap::Parser;
use std::net::IpAddr;
use std::time::Duration;
use tollgate_tests::sim::pool::{self, PoolConfig};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "sim-pool",
    version,
    about = "Simulated self-hosted LLM replicas with a KV prefix cache"
)]
struct Args {
    /// Number of replicas.
    #[arg(long, env = "SIM_POOL_REPLICAS", default_value_t = 4)]
    replicas: u16,
    /// Address to listen on.
    #[arg(long, env = "SIM_POOL_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of replica 0; replica i listens on base-port + i.
    #[arg(long, env = "SIM_POOL_BASE_PORT", default_value_t = 8200)]
    base_port: u16,
    /// KV cache capacity of each replica, in blocks.
    #[arg(long, env = "SIM_POOL_CAPACITY_BLOCKS", default_value_t = 2000)]
    capacity_blocks: usize,
    /// Tokens per KV block.
    #[arg(long, env = "SIM_POOL_BLOCK_TOKENS", default_value_t = 16)]
    block_tokens: usize,
    /// Fixed latency before the first byte, in ms.
    #[arg(long, env = "SIM_POOL_BASE_LATENCY_MS", default_value_t = 10.0)]
    base_latency_ms: f64,
    /// Prefill time per uncached prompt token, in ms.
    #[arg(long, env = "SIM_POOL_PREFILL_MS_PER_TOKEN", default_value_t = 0.2)]
    prefill_ms_per_token: f64,
    /// Decode time per completion token, in ms.
    #[arg(long, env = "SIM_POOL_DECODE_MS_PER_TOKEN", default_value_t = 2.0)]
    decode_ms_per_token: f64,
}

fn millis(name: &str, ms: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .map_err(|_| format!("--{name}: {ms} is not a duration"))
}

impl Args {
    fn config(&self) -> Result<PoolConfig, String> {
        if self.replicas == 0 || self.block_tokens == 0 || self.capacity_blocks == 0 {
            return Err("--replicas, --block-tokens and --capacity-blocks must be positive".into());
        }
        Ok(PoolConfig {
            block_tokens: self.block_tokens,
            capacity_blocks: self.capacity_blocks,
            base_latency: millis("base-latency-ms", self.base_latency_ms)?,
            prefill_per_token: millis("prefill-ms-per-token", self.prefill_ms_per_token)?,
            decode_per_token: millis("decode-ms-per-token", self.decode_ms_per_token)?,
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // build both tokenizers before taking traffic
    let warm = tokio::task::spawn_blocking(|| {
        tollgate_tests::sim::tokens::Encoding::Cl100kBase.count("warm up");
        tollgate_tests::sim::tokens::Encoding::O200kBase.count("warm up");
    });
    if let Err(e) = warm.await {
        tracing::error!(error = %e, "tokenizer warm-up failed");
        return std::process::ExitCode::FAILURE;
    }
    let mut listeners = Vec::new();
    for i in 0..args.replicas {
        let Some(port) = args.base_port.checked_add(i) else {
            tracing::error!("--base-port + --replicas exceeds 65535");
            return std::process::ExitCode::FAILURE;
        };
        match tokio::net::TcpListener::bind((args.host, port)).await {
            Ok(l) => {
                tracing::info!(replica = i, addr = %l.local_addr().map_or_else(|_| port.to_string(), |a| a.to_string()), "replica listening");
                listeners.push(l);
            }
            Err(e) => {
                tracing::error!(host = %args.host, port, error = %e, "cannot bind");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    tracing::info!(
        replicas = args.replicas,
        capacity_blocks = config.capacity_blocks,
        block_tokens = config.block_tokens,
        base_latency = ?config.base_latency,
        prefill_per_token = ?config.prefill_per_token,
        decode_per_token = ?config.decode_per_token,
        "sim-pool serving"
    );
    match pool::serve_pool(listeners, config, tollgate_tests::sim::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            std::process::ExitCode::FAILURE
        }
    }
}
