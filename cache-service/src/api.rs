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
//! | `GET /v1/budgets`, `POST /v1/budgets`, `PUT /v1/budgets/{id}`, `DELETE /v1/budgets/{id}` | admin | budget definitions |
//! | `GET /v1/budgets/usage` | admin | current windows: spent, reserved, remaining (`?budget_id=`, `?scope=team:x`) |
//! | `GET /v1/spend` | admin | spend from the ledger grouped by `org,team,user,key,model,day` (`?from=&to=&group_by=&team=&model=&format=json\|csv\|jsonl`) |
//! | `GET /v1/spend/export` | admin | ledger records, streamed as CSV or JSONL (`?format=csv\|jsonl&from=&to=`) |
//! | `GET /dashboard` | admin | the cost dashboard (HTML + SVG; token also as `?token=`) |
//! | `GET /metrics`, `/healthz`, `/readyz` | ops | Prometheus text, liveness, readiness |
//!
//! Admin routes need `authorization: Bearer <admin token>`; without a configured token they are
//! disabled (403).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use tollgate_wire::admit::{
    AdmitRequest, BudgetDecision, BudgetRejection, BudgetVerdict, Identity, SettleBatch,
    SettleRecord,
};

use crate::breaker::{AnomalyDetector, BreakerVerdict, SpendBreaker};
use crate::budget::{BudgetDef, Budgets, Charge, UsageFilter};
use crate::engine::{Engine, EngineError, WarmItem};
use crate::ledger::{Export, Ledger, LedgerRecord, SpendQuery};
use crate::metrics::Metrics;
use crate::model::InvalidateFilter;

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Option<String>,
    pub budgets: Arc<Budgets>,
    pub ledger: Arc<dyn Ledger>,
    pub breaker: Option<SpendBreaker>,
    pub anomaly: Option<AnomalyDetector>,
    pub prefixes: crate::prefix::PrefixTracker,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        admin_token: Option<String>,
        budgets: Arc<Budgets>,
        ledger: Arc<dyn Ledger>,
        breaker: Option<SpendBreaker>,
        anomaly: Option<AnomalyDetector>,
    ) -> Self {
        describe(&metrics);
        AppState {
            engine,
            metrics,
            admin_token,
            budgets,
            ledger,
            breaker,
            anomaly,
            prefixes: crate::prefix::PrefixTracker::default(),
        }
    }
}

fn describe(m: &Metrics) {
    m.describe(
        "tollgate_budget_admits_total",
        "counter",
        "Budget checks on admit by verdict (allow, downgrade, reject, breaker).",
    );
    m.describe(
        "tollgate_budget_errors_total",
        "counter",
        "Admits that could not consult the budget store (the filter's failure mode applied).",
    );
    m.describe(
        "tollgate_budget_admit_seconds",
        "histogram",
        "Budget reservation latency inside the service.",
    );
    m.describe(
        "tollgate_ledger_records_total",
        "counter",
        "Ledger records written (re-sent settles are not counted twice).",
    );
    m.describe(
        "tollgate_budget_definition_reads_total",
        "counter",
        "Budget definitions refreshes by kind: full (every definition read) or version (only \
         the store's definitions version checked: unchanged).",
    );
    m.describe(
        "tollgate_spend_anomalies_total",
        "counter",
        "Teams whose spend today exceeded the anomaly factor times their trailing daily average.",
    );
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
    #[error("{0}")]
    NotFound(String),
    /// A backing store is unreachable (the cause is logged).
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("internal error")]
    Internal(#[source] EngineError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
        .route("/v1/budgets", get(list_budgets).post(create_budget))
        .route("/v1/budgets/usage", get(budget_usage))
        .route(
            "/v1/budgets/{id}",
            put(put_budget).delete(delete_budget).get(get_budget),
        )
        .route("/v1/spend", get(spend))
        .route("/v1/spend/export", get(spend_export))
        .route("/dashboard", get(crate::dashboard::page))
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
    let mut resp = s.engine.admit(&req).await;
    if let Some(k) = &req.prefix_key {
        resp.prefix_hot = s.prefixes.observe(k, crate::budget::now_ms());
    }
    // Cache hits cost nothing: they are served without touching budgets.
    if resp.cache.outcome.is_hit() {
        return Json(resp).into_response();
    }
    if let (Some(q), Some(id)) = (&req.budget, &req.identity) {
        let now = crate::budget::now_ms();
        let started = std::time::Instant::now();
        let breaker = match &s.breaker {
            Some(b) => b.check(&id.team, now).await,
            None => BreakerVerdict::Pass,
        };
        if let BreakerVerdict::Reject {
            retry_after_seconds,
        } = breaker
        {
            s.metrics
                .inc("tollgate_budget_admits_total", &[("verdict", "breaker")], 1);
            resp.budget = Some(breaker_rejection(&id.org, retry_after_seconds));
            return Json(resp).into_response();
        }
        match s.budgets.admit(id, q, now).await {
            Ok(mut d) => {
                if let BreakerVerdict::Downgrade { model } = breaker
                    && d.verdict == BudgetVerdict::Allow
                {
                    d.verdict = BudgetVerdict::Downgrade;
                    d.downgrade_model = Some(model);
                }
                let verdict = match d.verdict {
                    BudgetVerdict::Allow => "allow",
                    BudgetVerdict::Downgrade => "downgrade",
                    BudgetVerdict::Reject => "reject",
                };
                s.metrics
                    .inc("tollgate_budget_admits_total", &[("verdict", verdict)], 1);
                if let Some(r) = &d.rejection {
                    tracing::info!(scope = %r.scope, period = %r.period, code = %r.code, "request over budget");
                }
                resp.budget = Some(d);
            }
            Err(e) => {
                // The filter applies its failure mode (open: allow; closed: 503).
                tracing::warn!(error = %e, "budget admit failed");
                s.metrics.inc("tollgate_budget_errors_total", &[], 1);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": {"message": "budget store unavailable", "status": 503}})),
                )
                    .into_response();
            }
        }
        s.metrics
            .observe("tollgate_budget_admit_seconds", &[], started.elapsed());
    }
    Json(resp).into_response()
}

fn breaker_rejection(org: &str, retry_after_seconds: u64) -> BudgetDecision {
    BudgetDecision {
        verdict: BudgetVerdict::Reject,
        rejection: Some(BudgetRejection {
            code: "budget_exceeded".into(),
            scope: format!("org:{org}"),
            period: "breaker".into(),
            message: format!(
                "org:{org} is spending faster than its circuit breaker allows; non-exempt traffic is paused, retry in {retry_after_seconds}s"
            ),
            retry_after_seconds: Some(retry_after_seconds),
        }),
        ..BudgetDecision::default()
    }
}

/// The scopes of a settle record (older filters send no identity: the tenant is the team).
fn identity_of(r: &SettleRecord) -> Identity {
    r.identity.clone().unwrap_or_else(|| Identity {
        org: "default".into(),
        team: r.tenant.clone(),
        user: None,
        key: None,
    })
}

/// Finished requests: the ledger first (durable), then budgets (release reservations, charge
/// actual cost), then the cache (store answers). Every step is idempotent by request or
/// reservation id, so a batch the filter re-sends after a failure is accounted once.
async fn settle(
    State(s): State<Arc<AppState>>,
    Json(batch): Json<SettleBatch>,
) -> Result<Response, ApiError> {
    let records: Vec<LedgerRecord> = batch
        .records
        .iter()
        .map(LedgerRecord::from_settle)
        .collect();
    let new = s.ledger.append(&records).await.map_err(|e| {
        tracing::error!(error = %e, "ledger append failed");
        ApiError::Unavailable("ledger unavailable")
    })?;
    s.metrics.inc("tollgate_ledger_records_total", &[], new);
    let now = crate::budget::now_ms();
    let mut batch_cost = 0u64;
    for r in &batch.records {
        let identity = identity_of(r);
        let cost = r.cost_pico.unwrap_or(0);
        batch_cost = batch_cost.saturating_add(cost);
        if r.reservation_id.is_some() || cost > 0 {
            let charge = Charge {
                cost_pico: cost,
                input_tokens: r.usage.prompt_tokens(),
                output_tokens: r.usage.output_tokens,
            };
            s.budgets
                .settle(
                    r.reservation_id.as_deref(),
                    &r.request_id,
                    &identity,
                    charge,
                    now,
                )
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "budget settle failed");
                    ApiError::Unavailable("budget store unavailable")
                })?;
        }
        if let Some(a) = &s.anomaly
            && let Some(hit) = a.record(&identity.team, cost, now)
        {
            s.metrics
                .inc("tollgate_spend_anomalies_total", &[("team", &hit.team)], 1);
            tracing::warn!(
                team = %hit.team,
                today_usd = hit.today_usd,
                trailing_average_usd = hit.trailing_average_usd,
                "spend anomaly: today's spend is far above the trailing daily average"
            );
        }
    }
    // One record per batch: a shared (Redis) window costs one round trip per batch.
    if let Some(b) = &s.breaker {
        b.record(batch_cost, now).await;
    }
    let summary = s.engine.settle(batch).await?;
    Ok(Json(summary).into_response())
}

async fn list_budgets(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    let defs = s.budgets.list().await.map_err(budget_error)?;
    Ok(Json(json!({"budgets": defs})).into_response())
}

async fn get_budget(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    match s.budgets.get(&id).await.map_err(budget_error)? {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(ApiError::NotFound(format!("no budget {id:?}"))),
    }
}

async fn create_budget(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    let def: BudgetDef =
        serde_json::from_str(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let def = s.budgets.put(def).await.map_err(budget_error)?;
    tracing::info!(id = %def.id, "budget saved");
    Ok((StatusCode::CREATED, Json(def)).into_response())
}

async fn put_budget(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match v.get("id").and_then(|i| i.as_str()) {
        Some(given) if given != id => {
            return Err(ApiError::BadRequest(format!(
                "id {given:?} in the body differs from {id:?} in the path"
            )));
        }
        _ => {}
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(id));
    }
    let def: BudgetDef =
        serde_json::from_value(v).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let def = s.budgets.put(def).await.map_err(budget_error)?;
    tracing::info!(id = %def.id, "budget saved");
    Ok(Json(def).into_response())
}

async fn delete_budget(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    if s.budgets.delete(&id).await.map_err(budget_error)? {
        tracing::info!(%id, "budget deleted");
        Ok(Json(json!({"deleted": id})).into_response())
    } else {
        Err(ApiError::NotFound(format!("no budget {id:?}")))
    }
}

async fn budget_usage(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(filter): Query<UsageFilter>,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    let rows = s
        .budgets
        .usage(&filter, crate::budget::now_ms())
        .await
        .map_err(budget_error)?;
    Ok(Json(json!({"usage": rows})).into_response())
}

fn budget_error(e: crate::budget::BudgetError) -> ApiError {
    match e {
        crate::budget::BudgetError::Invalid(m) => ApiError::BadRequest(m),
        other => {
            tracing::error!(error = %other, "budget store");
            ApiError::Unavailable("budget store unavailable")
        }
    }
}

async fn spend(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    let q =
        SpendQuery::from_query_pairs(&pairs).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let report = s.ledger.query(&q).await.map_err(|e| {
        tracing::error!(error = %e, "ledger query failed");
        ApiError::Unavailable("ledger unavailable")
    })?;
    Ok(match q.format {
        crate::ledger::Format::Json => Json(report).into_response(),
        crate::ledger::Format::Csv => {
            ([("content-type", q.format.content_type())], report.to_csv()).into_response()
        }
        crate::ledger::Format::Jsonl => {
            let mut out = String::new();
            for row in &report.rows {
                out.push_str(&serde_json::to_string(row).unwrap_or_default());
                out.push('\n');
            }
            ([("content-type", q.format.content_type())], out).into_response()
        }
    })
}

/// Streams every ledger record of the range (CSV with a header row, or JSONL), page by page.
async fn spend_export(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    let q =
        SpendQuery::from_query_pairs(&pairs).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let format = match q.format {
        crate::ledger::Format::Json => crate::ledger::Format::Jsonl,
        f => f,
    };
    let export = Export::from_query(s.ledger.clone(), &q);
    let stream = futures_util::stream::unfold(Some(export), move |state| async move {
        let mut export = state?;
        match export.next_chunk(format).await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), Some(export))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "ledger export failed mid-stream");
                Some((Err(std::io::Error::other(e.to_string())), None))
            }
        }
    });
    Ok((
        [("content-type", format.content_type())],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
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
    let reads = s.budgets.definition_reads();
    for (kind, n) in [("full", reads.full), ("version", reads.version_checks)] {
        s.metrics.set(
            "tollgate_budget_definition_reads_total",
            &[("kind", kind)],
            i64::try_from(n).unwrap_or(i64::MAX),
        );
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if !s.engine.ready().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "cache store unreachable").into_response();
    }
    if s.budgets.ping().await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "budget store unreachable").into_response();
    }
    if s.ledger.ping().await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "ledger unreachable").into_response();
    }
    (StatusCode::OK, "ready").into_response()
}
