use clap::Parser;
use tollgate_cache_service::service::{Cli, Command};
use tollgate_cache_service::{run, service, shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Calibrate(args)) => tokio::task::spawn_blocking(move || {
            tollgate_cache_service::semantic::calibrate::run_cli(args)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string())),
        Some(Command::Budgets(args)) => tollgate_cache_service::cli::budgets(args).await,
        Some(Command::Spend(args)) => tollgate_cache_service::cli::spend(args).await,
        Some(Command::Cache(args)) => tollgate_cache_service::cli::cache(args).await,
        Some(Command::Serve) | None => serve(cli.serve).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tollgate-cache-service: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: service::ServeArgs) -> Result<(), String> {
    let state = service::build(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, entries = state.engine.entries(), "tollgate cache service listening");
    run(listener, state, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
