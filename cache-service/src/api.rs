//! The HTTP API. `app(state)` is testable without sockets (`tower::ServiceExt::oneshot`).
//!
//! | route | who | |
//! |---|---|---|
//! | `POST /v1/admit` | filter | cache lookup before the provider is called |
//! | `POST /v1/settle` | filter | finished requests (batched): spend, savings, answers to store |
//! | `POST /v1/cache/invalidate` | admin | `{"tenant"?, "model"?}`; `{}` = everything |
//! | `POST /v1/cache/warm` | admin | JSONL of `{"tenant","model","question","answer",…}` |
//! | `GET /v1/cache/shadow` | admin | shadow-mode observations |
//! | `GET /v1/cache/stats` | admin | entry counts |
//! | `GET /metrics`, `/healthz`, `/readyz` | ops | Prometheus text, liveness, readiness |
//!
//! Admin routes need `authorization: Bearer <admin token>`; without a configured token they are
//! disabled (403).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tollgate_wire::admit::{AdmitRequest, SettleBatch};

use crate::engine::{Engine, EngineError, WarmItem};
use crate::metrics::Metrics;
use crate::model::InvalidateFilter;

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Option<String>,
}

/// API errors: the message is safe to show; internal causes are logged, not sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized: send `authorization: Bearer <admin token>`")]
    Unauthorized,
    #[error("the admin API is disabled: start the service with --admin-token")]
    AdminDisabled,
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error")]
    Internal(#[source] EngineError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let status = self.status();
        (
            status,
            Json(json!({"error": {"message": self.to_string(), "status": status.as_u16()}})),
        )
            .into_response()
    }
}

fn check_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison.
    let ok = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The router.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/admit", post(admit))
        .route("/v1/settle", post(settle))
        .route("/v1/cache/invalidate", post(invalidate))
        .route(
            "/v1/cache/warm",
            post(warm).layer(DefaultBodyLimit::max(64 << 20)),
        )
        .route("/v1/cache/shadow", get(shadow))
        .route("/v1/cache/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(16 << 20))
        .layer(axum::middleware::from_fn(request_timeout))
        .with_state(state)
}

/// Bounds every request so draining at shutdown ends.
async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(Duration::from_secs(60), next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out").into_response(),
    }
}

async fn admit(State(s): State<Arc<AppState>>, Json(req): Json<AdmitRequest>) -> Response {
    Json(s.engine.admit(&req).await).into_response()
}

async fn settle(
    State(s): State<Arc<AppState>>,
    Json(batch): Json<SettleBatch>,
) -> Result<Response, ApiError> {
    let summary = s.engine.settle(batch).await?;
    Ok(Json(summary).into_response())
}

async fn invalidate(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(filter): Json<InvalidateFilter>,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    let n = s.engine.invalidate(&filter).await?;
    tracing::info!(tenant = ?filter.tenant, model = ?filter.model, removed = n, "cache invalidated");
    Ok(Json(json!({"invalidated": n})).into_response())
}

async fn warm(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    let mut warmed = 0u64;
    let mut errors = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let item: WarmItem = match serde_json::from_str(line) {
            Ok(it) => it,
            Err(e) => {
                errors.push(json!({"line": i + 1, "error": e.to_string()}));
                continue;
            }
        };
        match s.engine.warm(&item).await {
            Ok(_) => warmed += 1,
            Err(EngineError::Invalid(m)) => errors.push(json!({"line": i + 1, "error": m})),
            Err(e) => return Err(ApiError::Internal(e)),
        }
    }
    tracing::info!(warmed, errors = errors.len(), "cache warmed");
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((status, Json(json!({"warmed": warmed, "errors": errors}))).into_response())
}

async fn shadow(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    Ok(Json(json!({"records": s.engine.shadow_records()})).into_response())
}

async fn stats(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    Ok(Json(json!({"entries": s.engine.entries()})).into_response())
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.engine.ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response()
    }
}
