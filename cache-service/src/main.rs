use clap::Parser;
use tollgate_cache_service::{AppState, Settings, run, shutdown_signal};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let settings = Settings::parse();
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "tollgate cache service listening");
    run(listener, AppState::new(), shutdown_signal()).await
}
