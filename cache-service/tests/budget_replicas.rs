//! Two cache-service replicas sharing one real Redis, assembled as `main` does
//! ([`service::build`], semantic cache off so no model is needed): the spend circuit breaker's
//! window is shared (spend settled through one replica trips the breaker on the other, and it
//! closes again once the window has passed), and budget definitions made through one replica
//! reach the other within the refresh interval, read by one task at a time.
//!
//! Plus the single-flight refresh of the definitions cache on its own, with a store that makes
//! every read slow: concurrent admits during a refresh cause exactly one read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../tests/src/redis.rs"]
mod redis_server;

mod common;
use common::TempDir;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tollgate_cache_service::budget::{
    Amounts, BudgetDef, BudgetError, BudgetOptions, BudgetStore, Budgets, EmbeddedBudgetStore,
    Period, ReserveOutcome, ScopeKind, SettleStatus, UsageFilter, WindowSpec, WindowUsage,
};
use tollgate_cache_service::service::{self, ServeArgs};
use tollgate_cache_service::{AppState, app};
use tollgate_wire::admit::{
    AdmitRequest, AdmitResponse, BudgetQuery, BudgetVerdict, Identity, SettleBatch, SettleRecord,
};
use tollgate_wire::{Api, Usage, UsageSource};
use tower::ServiceExt;

const TOKEN: &str = "s3cret-admin";
const USD: u64 = 1_000_000_000_000;

fn redis() -> redis_server::RedisServer {
    redis_server::RedisServer::start().expect("cannot start redis-server (run `make setup`)")
}

/// One replica: `service::build` with Redis, a data directory of its own and `config`.
async fn replica(dir: &TempDir, name: &str, url: &str, config: &Value) -> Arc<AppState> {
    let data = dir.0.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let path = data.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let args = ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data,
        redis_url: Some(url.to_owned()),
        redis_namespace: "replicas".into(),
        config: Some(path),
        admin_token: Some(TOKEN.into()),
        model_dir: None,
        ort_dylib: None,
        embed_threads: 1,
        embed_batch_window_ms: 0,
        device: "cpu".into(),
    };
    service::build(&args)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn call(state: &Arc<AppState>, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn identity(team: &str) -> Identity {
    Identity {
        org: "acme".into(),
        team: team.into(),
        user: None,
        key: None,
    }
}

fn admit_request(team: &str) -> AdmitRequest {
    AdmitRequest {
        request_id: format!("req-{}", NEXT_ID.fetch_add(1, Ordering::SeqCst)),
        tenant: team.into(),
        api: Some(Api::OpenAiChat),
        model: "gpt-4o-mini".into(),
        stream: false,
        route: "/v1/chat/completions".into(),
        cache: None,
        identity: Some(identity(team)),
        budget: Some(BudgetQuery {
            input_tokens: 10,
            max_output_tokens: 10,
            max_cost_pico: Some(1000),
        }),
        prefix_key: None,
        ..AdmitRequest::default()
    }
}

async fn admit(state: &Arc<AppState>, team: &str) -> AdmitResponse {
    let (status, v) = call(
        state,
        "POST",
        "/v1/admit",
        serde_json::to_value(admit_request(team)).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

fn verdict(resp: &AdmitResponse) -> (BudgetVerdict, Option<String>) {
    let b = resp.budget.as_ref().expect("a budget decision");
    (b.verdict, b.rejection.as_ref().map(|r| r.period.clone()))
}

/// Settles one request of `team` that cost `cost_pico`, without a reservation.
async fn spend(state: &Arc<AppState>, team: &str, cost_pico: u64) {
    let rec = SettleRecord {
        request_id: format!("req-{}", NEXT_ID.fetch_add(1, Ordering::SeqCst)),
        tenant: team.into(),
        api: Some(Api::OpenAiChat),
        model: "gpt-4o-mini".into(),
        stream: false,
        status: 200,
        usage: Usage {
            input_tokens: 20,
            output_tokens: 12,
            ..Usage::default()
        },
        usage_source: UsageSource::Provider,
        cost_pico: Some(cost_pico),
        cache: tollgate_wire::admit::CacheOutcome::Miss,
        saved_pico: 0,
        finished_at_ms: 0,
        store: None,
        identity: Some(identity(team)),
        reservation_id: None,
        requested_model: None,
        route: None,
    };
    let (status, v) = call(
        state,
        "POST",
        "/v1/settle",
        serde_json::to_value(SettleBatch { records: vec![rec] }).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn spend_settled_through_one_replica_trips_the_breaker_on_the_other() {
    let server = redis();
    let dir = TempDir::new("breaker");
    let config = json!({
        "cache": {"semantic": {"mode": "off"}},
        "budgets": {"breaker": {"windowSeconds": 2, "maxUsd": 0.000001, "exemptTeams": ["checkout"]}}
    });
    let a = replica(&dir, "a", &server.url(), &config).await;
    let b = replica(&dir, "b", &server.url(), &config).await;
    assert!(a.breaker.as_ref().unwrap().is_shared());
    assert_eq!(verdict(&admit(&b, "search").await).0, BudgetVerdict::Allow);

    // 2 micro-USD through A: over the 1 micro-USD breaker, org-wide.
    spend(&a, "search", 2_000_000).await;
    let spent = Instant::now();
    // A sees its own spend at once.
    assert_eq!(
        verdict(&admit(&a, "search").await),
        (BudgetVerdict::Reject, Some("breaker".into()))
    );
    // B within its refresh interval of the shared window (200 ms).
    tokio::time::sleep(Duration::from_millis(250)).await;
    let resp = admit(&b, "ads").await;
    assert_eq!(
        verdict(&resp),
        (BudgetVerdict::Reject, Some("breaker".into())),
        "B did not see A's spend"
    );
    let r = resp.budget.unwrap().rejection.unwrap();
    assert_eq!(
        (r.code.as_str(), r.scope.as_str()),
        ("budget_exceeded", "org:acme")
    );
    assert_eq!(r.retry_after_seconds, Some(2));
    assert_eq!(
        verdict(&admit(&b, "checkout").await).0,
        BudgetVerdict::Allow
    );
    let (_, m) = call(&b, "GET", "/metrics", json!({})).await;
    assert!(
        m.as_str()
            .unwrap()
            .contains("tollgate_budget_admits_total{verdict=\"breaker\"} 1"),
        "{m}"
    );
    assert!(
        m.as_str()
            .unwrap()
            .contains("tollgate_budget_definition_reads_total{kind=\"full\"} 1"),
        "{m}"
    );

    // Closed again once the spend has left the 2 s window (plus B's refresh interval).
    let deadline = spent + Duration::from_secs(6);
    loop {
        let resp = admit(&b, "search").await;
        if verdict(&resp).0 == BudgetVerdict::Allow {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker did not close");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed_after = spent.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed after {closed_after:?}: before the window passed"
    );
    assert_eq!(verdict(&admit(&a, "search").await).0, BudgetVerdict::Allow);
    // B read the shared window when its copy was due, not on every admit.
    let reads = b.breaker.as_ref().unwrap().shared_reads();
    assert!(reads >= 2, "{reads}");

    // The window's keys: namespaced, no team or org in them, and they expire.
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("replicas:b:brk:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(k.starts_with("replicas:b:brk:1:"), "{k}");
        assert!(!k.contains("search") && !k.contains("acme"), "{k}");
        let ttl: i64 = redis::cmd("PTTL").arg(k).query_async(&mut c).await.unwrap();
        assert!(ttl > 0 && ttl <= 63_000, "{k}: ttl {ttl}");
    }
}

fn team_budget(id: &str, team: &str, limit_usd: f64) -> BudgetDef {
    BudgetDef {
        id: id.into(),
        scope: ScopeKind::Team,
        target: team.into(),
        period: Period::Day,
        reset_hour_utc: None,
        reset_day_of_month: None,
        limit_usd: Some(limit_usd),
        limit_input_tokens: None,
        limit_output_tokens: None,
        limit_tokens: None,
        soft_fraction: None,
        downgrade_to: None,
    }
}

fn query(cost_usd: u64) -> BudgetQuery {
    BudgetQuery {
        input_tokens: 10,
        max_output_tokens: 10,
        max_cost_pico: Some(cost_usd * USD),
    }
}

#[tokio::test]
async fn definitions_made_through_one_replica_reach_the_other_within_the_refresh_interval() {
    let server = redis();
    let opts = BudgetOptions {
        defs_refresh_ms: 1000,
        ..BudgetOptions::default()
    };
    let a = Budgets::open_with(
        &tollgate_cache_service::budget::BudgetConfig::Redis {
            url: server.url(),
            namespace: "defs".into(),
        },
        opts.clone(),
    )
    .await
    .unwrap();
    let b = Arc::new(
        Budgets::open_with(
            &tollgate_cache_service::budget::BudgetConfig::Redis {
                url: server.url(),
                namespace: "defs".into(),
            },
            opts,
        )
        .await
        .unwrap(),
    );
    let t = 1_750_000_000_000u64;
    let search = identity("search");
    // B reads the (empty) definitions once, then caches them.
    let d = b.admit(&search, &query(1), t).await.unwrap();
    assert_eq!(d.verdict, BudgetVerdict::Allow);
    assert!(d.reservation_id.is_none());
    assert_eq!(b.definition_reads().full, 1);

    a.put(team_budget("search-daily", "search", 1.5))
        .await
        .unwrap();
    // Within the refresh interval B still uses what it read (no store access at all).
    let d = b.admit(&search, &query(1), t + 500).await.unwrap();
    assert!(d.reservation_id.is_none());
    assert_eq!(
        b.definition_reads(),
        tollgate_cache_service::budget::DefinitionReads {
            full: 1,
            version_checks: 0
        }
    );
    // Once it has passed, B sees the new version and reads the definitions again.
    let d = b.admit(&search, &query(1), t + 1000).await.unwrap();
    assert_eq!(d.verdict, BudgetVerdict::Allow);
    assert!(d.reservation_id.is_some(), "B did not see A's budget");
    assert_eq!(b.definition_reads().full, 2);
    assert_eq!(b.definition_reads().version_checks, 1);
    // The budget holds across both replicas: 1 USD reserved through B, 1 more does not fit.
    let d = a.admit(&search, &query(1), t + 1000).await.unwrap();
    assert_eq!(d.verdict, BudgetVerdict::Reject);

    // Unchanged definitions: each refresh reads only the version, once, however many admits
    // run concurrently.
    let before = b.definition_reads();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            b.admit(&identity(&format!("t{i}")), &query(1), t + 2500)
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().verdict, BudgetVerdict::Allow);
    }
    let after = b.definition_reads();
    assert_eq!(
        after.full, before.full,
        "unchanged definitions were re-read"
    );
    assert_eq!(after.version_checks, before.version_checks + 1);

    // A deletion through A is seen by B after the interval too.
    assert!(a.delete("search-daily").await.unwrap());
    let d = b.admit(&search, &query(5), t + 4000).await.unwrap();
    assert_eq!(d.verdict, BudgetVerdict::Allow);
    assert!(
        d.reservation_id.is_none(),
        "B still applies a deleted budget"
    );
    assert_eq!(b.definition_reads().full, before.full + 1);
}

/// A store whose definition reads are slow and counted.
struct SlowDefs {
    inner: EmbeddedBudgetStore,
    delay: Duration,
    versioned: bool,
    full_reads: AtomicU64,
    version_reads: AtomicU64,
}

#[async_trait]
impl BudgetStore for SlowDefs {
    async fn put_def(&self, def: &BudgetDef) -> Result<(), BudgetError> {
        self.inner.put_def(def).await
    }
    async fn delete_def(&self, id: &str) -> Result<bool, BudgetError> {
        self.inner.delete_def(id).await
    }
    async fn list_defs(&self) -> Result<Vec<BudgetDef>, BudgetError> {
        self.full_reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.list_defs().await
    }
    async fn defs_version(&self) -> Result<Option<u64>, BudgetError> {
        if !self.versioned {
            return Ok(None);
        }
        self.version_reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.defs_version().await
    }
    async fn list_defs_versioned(&self) -> Result<(Option<u64>, Vec<BudgetDef>), BudgetError> {
        self.full_reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let (v, defs) = self.inner.list_defs_versioned().await?;
        Ok((v.filter(|_| self.versioned), defs))
    }
    async fn reserve(
        &self,
        windows: &[WindowSpec],
        amounts: Amounts,
        reservation_id: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<ReserveOutcome, BudgetError> {
        self.inner
            .reserve(windows, amounts, reservation_id, now_ms, expires_at_ms)
            .await
    }
    async fn settle(
        &self,
        reservation_id: &str,
        charge: Amounts,
        now_ms: u64,
    ) -> Result<SettleStatus, BudgetError> {
        self.inner.settle(reservation_id, charge, now_ms).await
    }
    async fn charge_unreserved(
        &self,
        windows: &[WindowSpec],
        charge: Amounts,
        request_id: &str,
        now_ms: u64,
    ) -> Result<bool, BudgetError> {
        self.inner
            .charge_unreserved(windows, charge, request_id, now_ms)
            .await
    }
    async fn expire(&self, now_ms: u64) -> Result<u64, BudgetError> {
        self.inner.expire(now_ms).await
    }
    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<WindowUsage>, BudgetError> {
        self.inner.usage(filter).await
    }
    async fn ping(&self) -> Result<(), BudgetError> {
        self.inner.ping().await
    }
}

async fn slow_budgets(dir: &TempDir, versioned: bool) -> (Arc<Budgets>, Arc<SlowDefs>) {
    let store = Arc::new(SlowDefs {
        inner: EmbeddedBudgetStore::open(dir.0.join("budgets.redb"))
            .await
            .unwrap(),
        delay: Duration::from_millis(200),
        versioned,
        full_reads: AtomicU64::new(0),
        version_reads: AtomicU64::new(0),
    });
    let budgets = Arc::new(Budgets::new(
        store.clone(),
        BudgetOptions {
            defs_refresh_ms: 1000,
            ..BudgetOptions::default()
        },
    ));
    (budgets, store)
}

/// 64 admits at once when the definitions are due: one of them refreshes, the others use the
/// definitions they have and do not wait for the slow read.
async fn concurrent_admits_during_a_refresh(versioned: bool) {
    let dir = TempDir::new(if versioned { "flight-v" } else { "flight" });
    let (b, store) = slow_budgets(&dir, versioned).await;
    b.put(team_budget("search-daily", "search", 1000.0))
        .await
        .unwrap();
    let t = 1_750_000_000_000u64;
    let search = identity("search");
    assert!(
        b.admit(&search, &query(1), t)
            .await
            .unwrap()
            .reservation_id
            .is_some()
    );
    assert_eq!(store.full_reads.load(Ordering::SeqCst), 1);
    let reads_before = b.definition_reads();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let b = b.clone();
        let search = search.clone();
        tasks.push(tokio::spawn(async move {
            let begun = Instant::now();
            let d = b.admit(&search, &query(1), t + 1500).await.unwrap();
            (d, begun.elapsed())
        }));
    }
    let mut quick = 0;
    for task in tasks {
        let (d, took) = task.await.unwrap();
        assert_eq!(d.verdict, BudgetVerdict::Allow);
        assert!(d.reservation_id.is_some());
        if took < Duration::from_millis(150) {
            quick += 1;
        }
    }
    let after = b.definition_reads();
    if versioned {
        // One version check, no full read: the definitions did not change.
        assert_eq!(after.version_checks, reads_before.version_checks + 1);
        assert_eq!(after.full, reads_before.full);
        assert_eq!(store.version_reads.load(Ordering::SeqCst), 1);
        assert_eq!(store.full_reads.load(Ordering::SeqCst), 1);
    } else {
        assert_eq!(after.full, reads_before.full + 1);
        assert_eq!(store.full_reads.load(Ordering::SeqCst), 2);
    }
    assert!(
        quick >= 63,
        "{quick} of 64 admits finished without waiting for the refresh"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // A change made through this instance is seen at once (callers wait for the read).
    b.put(team_budget("search-daily", "search", 0.5))
        .await
        .unwrap();
    let d = b.admit(&search, &query(1), t + 1600).await.unwrap();
    assert_eq!(d.verdict, BudgetVerdict::Reject);
    assert_eq!(
        store.full_reads.load(Ordering::SeqCst),
        if versioned { 2 } else { 3 }
    );
}

#[tokio::test]
async fn concurrent_admits_during_a_refresh_cause_one_read_without_versions() {
    concurrent_admits_during_a_refresh(false).await;
}

#[tokio::test]
async fn concurrent_admits_during_a_refresh_cause_one_version_check() {
    concurrent_admits_during_a_refresh(true).await;
}
