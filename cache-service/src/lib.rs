//! Tollgate cache service: the native companion of the Envoy filter.
//!
//! The filter calls `POST /v1/admit` before a request goes to the provider (exact, then semantic
//! lookup) and reports finished requests in batches to `POST /v1/settle` (answers to store,
//! spend, savings). Shape (mini-redis / axum examples): `main.rs` is tiny, [`service::build`]
//! assembles store, embedder and engine from the settings, [`api::app`] builds a `Router`
//! testable without sockets, [`run`] serves a bound listener until a shutdown future resolves.

pub mod api;
pub mod breaker;
pub mod budget;
pub mod cli;
pub mod complexity;
pub mod dashboard;
pub mod embed;
pub mod engine;
pub mod index;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod prefix;
pub mod rules;
pub mod semantic;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

pub use api::{AppState, app};

/// Serves [`app`] on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
