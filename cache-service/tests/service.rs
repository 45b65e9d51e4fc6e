//! The service through its HTTP API (`app(state)` driven with `oneshot`, no sockets): admit,
//! settle, exact and semantic hits, guards, rules, TTL, tenant isolation, invalidation, warming,
//! shadow mode, eviction, restart, metrics; and two replicas sharing one real Redis.
//!
//! Most tests use the trigram [`FakeEmbedder`] (near-identical strings are similar, different
//! wording is not); `real_model_*` assembles the service exactly as `main` does
//! ([`service::build`]: the real all-MiniLM-L6-v2 model, the default threshold) and checks
//! paraphrases and guarded near-misses through `app()`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../tests/src/redis.rs"]
mod redis_server;

mod common;
use common::TempDir;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tollgate_cache_service::breaker::{AnomalyDetector, SpendBreaker};
use tollgate_cache_service::budget::Budgets;
use tollgate_cache_service::embed::{BatchConfig, Batcher, FakeEmbedder};
use tollgate_cache_service::engine::Engine;
use tollgate_cache_service::ledger::{self, LedgerConfig};
use tollgate_cache_service::metrics::Metrics;
use tollgate_cache_service::service::{self, FileConfig, ServeArgs};
use tollgate_cache_service::store::{EmbeddedStore, RedisStore, Store};
use tollgate_cache_service::{AppState, app};
use tollgate_wire::admit::{
    AdmitRequest, AdmitResponse, CacheOutcome, CacheQuery, CachedCompletion, SettleBatch,
    SettleRecord, StoreRequest,
};
use tollgate_wire::{Api, Usage, UsageSource};
use tower::ServiceExt;

const TOKEN: &str = "s3cret-admin";

/// Thresholds calibrated for the real model mean nothing for the trigram fake: these tests use
/// 0.9 unless they set one (the near-duplicates below score 0.90-0.95 with it).
const FAKE_THRESHOLD: f64 = 0.9;

/// The service's other stores (budgets, ledger) next to the cache store.
enum Backing<'a> {
    Dir(&'a TempDir),
    Redis(String),
}

async fn state_on(store: Arc<dyn Store>, backing: Backing<'_>, mut config: Value) -> Arc<AppState> {
    let semantic = config
        .as_object_mut()
        .unwrap()
        .entry("cache")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .unwrap()
        .entry("semantic")
        .or_insert_with(|| json!({}));
    let semantic = semantic.as_object_mut().unwrap();
    semantic.entry("threshold").or_insert(json!(FAKE_THRESHOLD));
    // These tests exercise the guards on near-misses; the real-model test covers the default.
    semantic.entry("match").or_insert(json!("paraphrases"));
    let file: FileConfig = serde_json::from_value(config).unwrap();
    let settings = file.cache.compile().unwrap();
    let metrics = Arc::new(Metrics::new());
    let embedder = Arc::new(Batcher::new(
        Arc::new(FakeEmbedder::new(256)),
        BatchConfig::default(),
    ));
    let engine = Engine::start(settings, store, Some(embedder), metrics.clone())
        .await
        .unwrap();
    let (budgets, ledger) = match backing {
        Backing::Dir(d) => (
            Budgets::open_embedded(d.0.join("budgets.redb"))
                .await
                .unwrap(),
            ledger::open(&LedgerConfig::embedded_in(&d.0))
                .await
                .unwrap(),
        ),
        Backing::Redis(url) => (
            Budgets::open_redis(&url, "svc").await.unwrap(),
            ledger::open(&LedgerConfig::Redis {
                url,
                namespace: "svc".into(),
                retention_days: 30,
            })
            .await
            .unwrap(),
        ),
    };
    Arc::new(AppState::new(
        engine,
        metrics,
        Some(TOKEN.into()),
        Arc::new(budgets),
        ledger,
        file.budgets.breaker.map(SpendBreaker::new),
        file.budgets.anomaly.map(AnomalyDetector::new),
    ))
}

async fn embedded(dir: &TempDir, config: Value) -> Arc<AppState> {
    let store = EmbeddedStore::open(dir.0.join("cache.redb")).await.unwrap();
    state_on(Arc::new(store), Backing::Dir(dir), config).await
}

async fn call(state: &Arc<AppState>, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    call_raw(state, method, path, body.to_string(), Some(TOKEN)).await
}

async fn call_raw(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    body: String,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app(state.clone())
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

/// A chat request as the filter would describe it.
struct Ask {
    tenant: &'static str,
    model: &'static str,
    question: String,
    body_extra: Value,
    lookup: bool,
    store: bool,
    max_tokens: Option<u64>,
}

fn ask(tenant: &'static str, question: &str) -> Ask {
    Ask {
        tenant,
        model: "gpt-4o-mini",
        question: question.into(),
        body_extra: json!({"temperature": 0}),
        lookup: true,
        store: true,
        max_tokens: None,
    }
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Ask {
    fn body(&self) -> Value {
        let mut b = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": "You are a helpful support assistant."},
                {"role": "user", "content": self.question},
            ],
        });
        for (k, v) in self.body_extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    }

    fn request(&self) -> AdmitRequest {
        let body = self.body();
        let keys =
            tollgate_core::cachekey::keys(Api::OpenAiChat, self.tenant, self.model, &body).unwrap();
        AdmitRequest {
            request_id: format!(
                "req-{}",
                NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ),
            tenant: self.tenant.into(),
            api: Some(Api::OpenAiChat),
            model: self.model.into(),
            stream: false,
            route: "/v1/chat/completions".into(),
            cache: Some(CacheQuery {
                exact_key: keys.exact_key,
                partition: keys.partition,
                query: keys.query,
                temperature: keys.temperature,
                has_tools: keys.has_tools,
                lookup: self.lookup,
                store: self.store,
                max_tokens: self.max_tokens,
                ..CacheQuery::default()
            }),
            ..AdmitRequest::default()
        }
    }
}

async fn admit(state: &Arc<AppState>, req: &AdmitRequest) -> AdmitResponse {
    let (status, v) = call(
        state,
        "POST",
        "/v1/admit",
        serde_json::to_value(req).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

fn record(req: &AdmitRequest, resp: &AdmitResponse, status: u16, answer: &str) -> SettleRecord {
    let q = req.cache.clone().unwrap();
    let usage = Usage {
        input_tokens: 20,
        output_tokens: 12,
        ..Usage::default()
    };
    SettleRecord {
        request_id: req.request_id.clone(),
        tenant: req.tenant.clone(),
        api: req.api,
        model: req.model.clone(),
        stream: false,
        status,
        usage,
        usage_source: UsageSource::Provider,
        cost_pico: Some(3_000_000),
        cache: resp.cache.outcome,
        saved_pico: 0,
        finished_at_ms: 0,
        store: resp.cache.store.then(|| StoreRequest {
            exact_key: q.exact_key,
            partition: q.partition,
            query: q.query,
            completion: CachedCompletion {
                model: req.model.clone(),
                text: answer.into(),
                finish_reason: "stop".into(),
                usage,
                ..CachedCompletion::default()
            },
            shadow_entry_id: resp.cache.shadow_entry_id.clone(),
            ttl_seconds: resp.cache.ttl_seconds,
        }),
        identity: None,
        reservation_id: None,
        requested_model: None,
        route: None,
    }
}

async fn settle(state: &Arc<AppState>, records: Vec<SettleRecord>) -> Value {
    let (status, v) = call(
        state,
        "POST",
        "/v1/settle",
        serde_json::to_value(SettleBatch { records }).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Admits (expecting a miss) and settles a provider answer.
async fn prime(state: &Arc<AppState>, a: &Ask, answer: &str) {
    let req = a.request();
    let resp = admit(state, &req).await;
    assert_eq!(resp.cache.outcome, CacheOutcome::Miss, "{:?}", resp.cache);
    assert!(resp.cache.store);
    let v = settle(state, vec![record(&req, &resp, 200, answer)]).await;
    assert_eq!(v["stored"], 1, "{v}");
}

async fn outcome(state: &Arc<AppState>, a: &Ask) -> (CacheOutcome, Option<String>) {
    let resp = admit(state, &a.request()).await;
    (resp.cache.outcome, resp.cache.entry.map(|e| e.text))
}

const Q: &str = "How do I reset the password of my router to the factory settings?";
const A: &str = "Hold the reset button for ten seconds, then log in with the default password.";

#[tokio::test]
async fn repeat_hits_exactly_and_only_for_the_same_tenant() {
    let dir = TempDir::new("exact");
    let s = embedded(&dir, json!({})).await;
    prime(&s, &ask("acme", Q), A).await;
    assert_eq!(
        outcome(&s, &ask("acme", Q)).await,
        (CacheOutcome::HitExact, Some(A.into()))
    );
    // Another tenant asking the very same question never sees acme's answer.
    assert_eq!(outcome(&s, &ask("globex", Q)).await.0, CacheOutcome::Miss);
    // A different model is a different partition and key.
    let mut other = ask("acme", Q);
    other.model = "gpt-4o";
    assert_eq!(outcome(&s, &other).await.0, CacheOutcome::Miss);
    // Sampling parameters that change the answer are part of the key.
    let mut other = ask("acme", Q);
    other.body_extra = json!({"temperature": 0, "top_p": 0.5});
    assert_eq!(outcome(&s, &other).await.0, CacheOutcome::Miss);
    // The answer is no longer than the client's max_tokens allows.
    let mut short = ask("acme", Q);
    short.max_tokens = Some(5);
    assert_eq!(outcome(&s, &short).await.0, CacheOutcome::Miss);
}

#[tokio::test]
async fn near_duplicates_hit_semantically_but_guards_reject_negations_and_numbers() {
    let dir = TempDir::new("semantic");
    let s = embedded(&dir, json!({})).await;
    prime(&s, &ask("acme", Q), A).await;
    let near = "how do i reset the password of my router to factory settings";
    assert_eq!(
        outcome(&s, &ask("acme", near)).await,
        (CacheOutcome::HitSemantic, Some(A.into()))
    );
    assert_eq!(
        outcome(&s, &ask("globex", near)).await.0,
        CacheOutcome::Miss
    );
    let negated = "How do I not reset the password of my router to the factory settings?";
    assert_eq!(
        outcome(&s, &ask("acme", negated)).await.0,
        CacheOutcome::Miss
    );

    prime(
        &s,
        &ask(
            "acme",
            "Is a 20 amp breaker enough for a 3000 watt heater on 240 volts?",
        ),
        "Yes: 3000 W at 240 V draws 12.5 A.",
    )
    .await;
    let changed = "Is a 20 amp breaker enough for a 5000 watt heater on 240 volts?";
    assert_eq!(
        outcome(&s, &ask("acme", changed)).await.0,
        CacheOutcome::Miss
    );
    let (_, metrics) = call(&s, "GET", "/metrics", json!({})).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("tollgate_cache_guard_rejections_total{reason=\"negation\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_cache_guard_rejections_total{reason=\"number\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_cache_admits_total{outcome=\"hit-semantic\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rules_bypass_and_errors_are_never_stored() {
    let dir = TempDir::new("rules");
    let s = embedded(
        &dir,
        json!({"cache": {"maxTemperature": 0.5, "rules": [
            {"name": "no-legal", "routes": ["/v1/chat/completions"], "queryPattern": "(?i)\\blawsuit\\b", "cacheable": false}
        ]}}),
    )
    .await;
    let mut hot = ask("acme", Q);
    hot.body_extra = json!({"temperature": 0.9});
    let resp = admit(&s, &hot.request()).await;
    assert_eq!(resp.cache.outcome, CacheOutcome::Bypass);
    assert!(!resp.cache.store);
    assert!(resp.cache.reason.unwrap().contains("temperature"));

    let resp = admit(
        &s,
        &ask("acme", "Can I file a lawsuit against my landlord?").request(),
    )
    .await;
    assert_eq!(resp.cache.outcome, CacheOutcome::Bypass);
    assert_eq!(resp.cache.reason.as_deref(), Some("rule:no-legal"));

    let resp = admit(
        &s,
        &ask("acme", "What is the weather today in Paris?").request(),
    )
    .await;
    assert_eq!(resp.cache.outcome, CacheOutcome::Bypass);

    // A provider error is not stored, so the next request misses again.
    let a = ask("acme", "What are the opening hours of the support line?");
    let req = a.request();
    let resp = admit(&s, &req).await;
    let v = settle(&s, vec![record(&req, &resp, 500, "internal error")]).await;
    assert_eq!(v["stored"], 0);
    assert_eq!(outcome(&s, &a).await.0, CacheOutcome::Miss);

    // cache-control: no-store -> not stored; no-cache -> stored but not looked up.
    let mut no_store = ask("acme", "Which ports does the firewall block by default?");
    no_store.store = false;
    let req = no_store.request();
    let resp = admit(&s, &req).await;
    assert!(!resp.cache.store);
    settle(&s, vec![record(&req, &resp, 200, "Inbound 1-1023.")]).await;
    assert_eq!(
        outcome(
            &s,
            &ask("acme", "Which ports does the firewall block by default?")
        )
        .await
        .0,
        CacheOutcome::Miss
    );
    prime(&s, &ask("acme", Q), A).await;
    let mut no_cache = ask("acme", Q);
    no_cache.lookup = false;
    assert_eq!(outcome(&s, &no_cache).await.0, CacheOutcome::Miss);
}

#[tokio::test]
async fn entries_expire_after_their_rule_ttl() {
    let dir = TempDir::new("ttl");
    let s = embedded(
        &dir,
        json!({"cache": {"rules": [{"name": "short", "models": ["gpt-4o-mini"], "ttlSeconds": 1}]}}),
    )
    .await;
    let req = ask("acme", Q).request();
    let resp = admit(&s, &req).await;
    assert_eq!(resp.cache.ttl_seconds, Some(1));
    settle(&s, vec![record(&req, &resp, 200, A)]).await;
    assert_eq!(outcome(&s, &ask("acme", Q)).await.0, CacheOutcome::HitExact);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(outcome(&s, &ask("acme", Q)).await.0, CacheOutcome::Miss);
    let near = "how do i reset the password of my router to factory settings";
    assert_eq!(outcome(&s, &ask("acme", near)).await.0, CacheOutcome::Miss);
}

#[tokio::test]
async fn invalidation_by_tenant_model_or_everything_needs_the_admin_token() {
    let dir = TempDir::new("invalidate");
    let s = embedded(&dir, json!({})).await;
    prime(&s, &ask("acme", Q), A).await;
    prime(&s, &ask("globex", Q), A).await;
    let mut big = ask("acme", Q);
    big.model = "gpt-4o";
    prime(&s, &big, A).await;

    let (st, v) = call_raw(&s, "POST", "/v1/cache/invalidate", "{}".into(), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, _) = call_raw(
        &s,
        "POST",
        "/v1/cache/invalidate",
        "{}".into(),
        Some("nope"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    let (st, v) = call(
        &s,
        "POST",
        "/v1/cache/invalidate",
        json!({"tenant": "acme", "model": "gpt-4o"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["invalidated"], 1);
    assert_eq!(outcome(&s, &big).await.0, CacheOutcome::Miss);
    assert_eq!(outcome(&s, &ask("acme", Q)).await.0, CacheOutcome::HitExact);

    let (_, v) = call(
        &s,
        "POST",
        "/v1/cache/invalidate",
        json!({"tenant": "acme"}),
    )
    .await;
    assert_eq!(v["invalidated"], 1);
    assert_eq!(outcome(&s, &ask("acme", Q)).await.0, CacheOutcome::Miss);
    assert_eq!(
        outcome(&s, &ask("globex", Q)).await.0,
        CacheOutcome::HitExact
    );

    let (_, v) = call(&s, "POST", "/v1/cache/invalidate", json!({})).await;
    assert_eq!(v["invalidated"], 1);
    assert_eq!(outcome(&s, &ask("globex", Q)).await.0, CacheOutcome::Miss);
    let (_, v) = call(&s, "GET", "/v1/cache/stats", json!({})).await;
    assert_eq!(v["entries"], 0);
}

#[tokio::test]
async fn admin_routes_are_disabled_without_a_token() {
    let dir = TempDir::new("noadmin");
    let s = embedded(&dir, json!({})).await;
    let s = Arc::new(AppState::new(
        s.engine.clone(),
        s.metrics.clone(),
        None,
        s.budgets.clone(),
        s.ledger.clone(),
        None,
        None,
    ));
    let (st, v) = call(&s, "POST", "/v1/cache/invalidate", json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--admin-token")
    );
}

#[tokio::test]
async fn warming_from_jsonl_answers_the_filters_keys() {
    let dir = TempDir::new("warm");
    let s = embedded(&dir, json!({})).await;
    let jsonl = [
        json!({"tenant": "acme", "model": "gpt-4o-mini", "system": "You are a helpful support assistant.",
               "question": Q, "answer": A, "params": {"temperature": 0}}),
        json!({"tenant": "acme", "model": "gpt-4o-mini", "question": "What is Tollgate?", "answer": "A cost-control filter."}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let (st, v) = call_raw(&s, "POST", "/v1/cache/warm", jsonl, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["warmed"], 2);
    assert_eq!(
        outcome(&s, &ask("acme", Q)).await,
        (CacheOutcome::HitExact, Some(A.into()))
    );
    // Bad lines are reported by number; good lines still load.
    let bad = format!(
        "{}\nnot json\n{}",
        json!({"tenant": "acme", "model": "m", "question": "q", "answer": "a"}),
        json!({"tenant": "acme", "model": "m", "question": "", "answer": "a"})
    );
    let (st, v) = call_raw(&s, "POST", "/v1/cache/warm", bad, Some(TOKEN)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["warmed"], 1);
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(v["errors"][1]["line"], 3);
}

#[tokio::test]
async fn shadow_mode_never_serves_semantic_hits_but_records_both_answers() {
    let dir = TempDir::new("shadow");
    let s = embedded(&dir, json!({"cache": {"semantic": {"mode": "shadow"}}})).await;
    prime(&s, &ask("acme", Q), A).await;
    // Exact hits are still served.
    assert_eq!(outcome(&s, &ask("acme", Q)).await.0, CacheOutcome::HitExact);
    let near = ask(
        "acme",
        "how do i reset the password of my router to factory settings",
    );
    let req = near.request();
    let resp = admit(&s, &req).await;
    assert_eq!(resp.cache.outcome, CacheOutcome::Miss);
    assert!(resp.cache.entry.is_none());
    assert!(resp.cache.shadow_entry_id.is_some());
    let actual = "Press the reset button for 10 seconds; the default password is on the label.";
    settle(&s, vec![record(&req, &resp, 200, actual)]).await;
    let (st, v) = call(&s, "GET", "/v1/cache/shadow", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1, "{v}");
    assert_eq!(recs[0]["cached_answer"], A);
    assert_eq!(recs[0]["actual_answer"], actual);
    assert_eq!(recs[0]["cached_query"], Q);
    assert!(recs[0]["similarity"].as_f64().unwrap() >= 0.9);
}

#[tokio::test]
async fn size_limit_evicts_the_oldest_entries() {
    let dir = TempDir::new("evict");
    let s = embedded(&dir, json!({"cache": {"maxEntries": 5}})).await;
    for i in 0..8 {
        prime(
            &s,
            &ask("acme", &format!("Question number {i} about widgets")),
            "x",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        if i == 0 {
            // `created_at` has one-second resolution: keep the order unambiguous for the first.
        }
    }
    let (_, v) = call(&s, "GET", "/v1/cache/stats", json!({})).await;
    assert!(v["entries"].as_u64().unwrap() <= 5, "{v}");
    assert_eq!(
        outcome(&s, &ask("acme", "Question number 0 about widgets"))
            .await
            .0,
        CacheOutcome::Miss
    );
    assert_eq!(
        outcome(&s, &ask("acme", "Question number 7 about widgets"))
            .await
            .0,
        CacheOutcome::HitExact
    );
}

#[tokio::test]
async fn entries_survive_a_restart_and_the_index_is_rebuilt() {
    let dir = TempDir::new("restart");
    {
        let s = embedded(&dir, json!({})).await;
        prime(&s, &ask("acme", Q), A).await;
    }
    // Let the first engine's background task drop its handle on the file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = embedded(&dir, json!({})).await;
    assert_eq!(outcome(&s, &ask("acme", Q)).await.0, CacheOutcome::HitExact);
    let near = "how do i reset the password of my router to factory settings";
    assert_eq!(
        outcome(&s, &ask("acme", near)).await.0,
        CacheOutcome::HitSemantic
    );
}

#[tokio::test]
async fn malformed_admits_are_rejected_with_a_json_error() {
    let dir = TempDir::new("bad");
    let s = embedded(&dir, json!({})).await;
    let (st, _) = call_raw(&s, "POST", "/v1/admit", "{not json".into(), None).await;
    assert!(st.is_client_error());
    let (st, v) = call_raw(&s, "GET", "/readyz", String::new(), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn config_file_errors_are_clear() {
    let bad: Result<FileConfig, _> =
        serde_json::from_value(json!({"cache": {"semantic": {"treshold": 0.9}}}));
    assert!(bad.unwrap_err().to_string().contains("treshold"));
    let file: FileConfig =
        serde_json::from_value(json!({"cache": {"semantic": {"threshold": 1.5}}})).unwrap();
    assert!(file.cache.compile().unwrap_err().contains("threshold"));
}

fn redis() -> redis_server::RedisServer {
    redis_server::RedisServer::start().expect("cannot start redis-server (run `make setup`)")
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_entries() {
    let server = redis();
    let a = state_on(
        Arc::new(RedisStore::connect(&server.url(), "svc").await.unwrap()),
        Backing::Redis(server.url()),
        json!({}),
    )
    .await;
    let b = state_on(
        Arc::new(RedisStore::connect(&server.url(), "svc").await.unwrap()),
        Backing::Redis(server.url()),
        json!({}),
    )
    .await;
    prime(&a, &ask("acme", Q), A).await;
    // Exact lookups read the store directly.
    assert_eq!(outcome(&b, &ask("acme", Q)).await.0, CacheOutcome::HitExact);
    // Semantic lookups need replica b's index to have seen a's write through the event stream.
    let near = "how do i reset the password of my router to factory settings";
    let mut got = CacheOutcome::Miss;
    for _ in 0..50 {
        got = outcome(&b, &ask("acme", near)).await.0;
        if got == CacheOutcome::HitSemantic {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, CacheOutcome::HitSemantic);
    assert_eq!(
        outcome(&b, &ask("globex", near)).await.0,
        CacheOutcome::Miss
    );
    // Invalidation on b removes the entry for a too.
    let (_, v) = call(
        &b,
        "POST",
        "/v1/cache/invalidate",
        json!({"tenant": "acme"}),
    )
    .await;
    assert_eq!(v["invalidated"], 1);
    assert_eq!(outcome(&a, &ask("acme", Q)).await.0, CacheOutcome::Miss);
    let mut gone = false;
    for _ in 0..50 {
        if outcome(&a, &ask("acme", near)).await.0 == CacheOutcome::Miss {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone);
    // A new replica started later rebuilds from Redis.
    prime(&a, &ask("acme", Q), A).await;
    let c = state_on(
        Arc::new(RedisStore::connect(&server.url(), "svc").await.unwrap()),
        Backing::Redis(server.url()),
        json!({}),
    )
    .await;
    assert_eq!(
        outcome(&c, &ask("acme", near)).await.0,
        CacheOutcome::HitSemantic
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_serves_repeats_by_default_and_paraphrases_when_asked() {
    let dir = TempDir::new("onnx");
    let config = dir.0.join("paraphrases.json");
    std::fs::write(
        &config,
        r#"{"cache": {"semantic": {"match": "paraphrases"}}}"#,
    )
    .unwrap();
    let build = |data: &str, config: Option<std::path::PathBuf>| {
        let args = ServeArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.0.join(data),
            redis_url: None,
            redis_namespace: "tollgate".into(),
            config,
            admin_token: Some(TOKEN.into()),
            model_dir: None,
            ort_dylib: None,
            embed_threads: 2,
            embed_batch_window_ms: 0,
            device: "cpu".into(),
        };
        async move {
            service::build(&args)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    // Defaults: repeats (typos, case, greetings) hit; a paraphrase does not.
    let s = build("repeats", None).await;
    prime(
        &s,
        &ask("acme", "How do I reverse a list in Python?"),
        "Use reversed() or .reverse().",
    )
    .await;
    for (q, want) in [
        (
            "Hi! HOW do I reverse a list in Python??",
            CacheOutcome::HitSemantic,
        ),
        (
            "hey, how do i reverse a list in pyhton",
            CacheOutcome::HitSemantic,
        ),
        ("How can I reverse a Python list?", CacheOutcome::Miss),
        ("How do I not reverse a list in Python?", CacheOutcome::Miss),
    ] {
        assert_eq!(outcome(&s, &ask("acme", q)).await.0, want, "{q}");
    }
    let (_, m) = call(&s, "GET", "/metrics", json!({})).await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains("tollgate_cache_guard_rejections_total{reason=\"reworded\"} 1"),
        "{m}"
    );
    // The first repeat has the same content words: found by key, without an embedding; the
    // typo needed the embedding; the negation has the same key but the guards turn it away.
    assert!(m.contains("tollgate_cache_repeat_key_hits_total 1"), "{m}");
    drop(s);
    // `match: paraphrases`: the paraphrase hits, the near-misses still do not.
    let s = build("paraphrases", Some(config.clone())).await;
    real_model_paraphrases(&s).await;
}

async fn real_model_paraphrases(s: &Arc<AppState>) {
    let s = s.clone();
    let (st, _) = call_raw(&s, "GET", "/readyz", String::new(), None).await;
    assert_eq!(st, StatusCode::OK);
    prime(
        &s,
        &ask("acme", "How do I reverse a list in Python?"),
        "Use reversed() or .reverse().",
    )
    .await;
    prime(
        &s,
        &ask("acme", "Convert 5 miles to kilometers."),
        "8.05 km",
    )
    .await;
    // Cosine with all-MiniLM-L6-v2 in brackets.
    for (q, want) in [
        (
            "How can I reverse a Python list?",
            CacheOutcome::HitSemantic,
        ), // 0.98
        ("How do I not reverse a list in Python?", CacheOutcome::Miss), // 0.95, negation
        ("How do I sort a list in Python?", CacheOutcome::Miss),        // 0.57
        ("Convert 8 miles to kilometers.", CacheOutcome::Miss),         // 0.91
    ] {
        assert_eq!(outcome(&s, &ask("acme", q)).await.0, want, "{q}");
        assert_eq!(
            outcome(&s, &ask("globex", q)).await.0,
            CacheOutcome::Miss,
            "{q}"
        );
    }
    prime(
        &s,
        &ask(
            "acme",
            "How many grams of protein are in 100 grams of chicken breast?",
        ),
        "About 31 g.",
    )
    .await;
    // 0.97, another quantity.
    let q = "How many grams of protein are in 200 grams of chicken breast?";
    assert_eq!(outcome(&s, &ask("acme", q)).await.0, CacheOutcome::Miss);
    let (_, m) = call(&s, "GET", "/metrics", json!({})).await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains("tollgate_cache_guard_rejections_total{reason=\"number\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_cache_guard_rejections_total{reason=\"negation\"} 1"),
        "{m}"
    );
}

#[test]
fn the_default_match_and_thresholds_are_the_documented_ones() {
    use tollgate_cache_service::semantic::guards::MatchMode;
    assert_eq!(service::DEFAULT_MATCH, MatchMode::Repeats);
    assert_eq!(MatchMode::Repeats.default_threshold(), 0.80);
    assert_eq!(MatchMode::Paraphrases.default_threshold(), 0.95);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(readme.contains("\"match\": \"repeats\""));
}

#[tokio::test]
async fn the_spend_breaker_pauses_non_exempt_traffic() {
    use tollgate_wire::admit::{BudgetQuery, BudgetVerdict, Identity};
    let dir = TempDir::new("breaker");
    let s = embedded(
        &dir,
        json!({"budgets": {
            "breaker": {"windowSeconds": 60, "maxUsd": 0.000001, "exemptTeams": ["checkout"]},
            "anomaly": {"factor": 2.0, "trailingDays": 7, "minUsd": 0.0}
        }}),
    )
    .await;
    let admit_as = |team: &'static str| {
        let mut a = ask(team, "Summarise this for me please");
        (a.lookup, a.store) = (false, false);
        let mut r = a.request();
        r.identity = Some(Identity {
            org: "acme".into(),
            team: team.into(),
            user: None,
            key: None,
        });
        r.budget = Some(BudgetQuery {
            input_tokens: 10,
            max_output_tokens: 10,
            max_cost_pico: Some(1000),
        });
        r
    };
    let req = admit_as("search");
    let resp = admit(&s, &req).await;
    assert_eq!(resp.budget.as_ref().unwrap().verdict, BudgetVerdict::Allow);
    // 2 micro-USD spent within the window: above the 1 micro-USD breaker.
    let mut rec = record(&req, &resp, 200, "x");
    rec.cost_pico = Some(2_000_000);
    settle(&s, vec![rec]).await;
    let resp = admit(&s, &admit_as("search")).await;
    let b = resp.budget.unwrap();
    assert_eq!(b.verdict, BudgetVerdict::Reject);
    let r = b.rejection.unwrap();
    assert_eq!(
        (r.code.as_str(), r.scope.as_str()),
        ("budget_exceeded", "org:acme")
    );
    assert!(r.retry_after_seconds.is_some());
    let resp = admit(&s, &admit_as("checkout")).await;
    assert_eq!(resp.budget.unwrap().verdict, BudgetVerdict::Allow);
    let (_, m) = call(&s, "GET", "/metrics", json!({})).await;
    assert!(
        m.as_str()
            .unwrap()
            .contains("tollgate_budget_admits_total{verdict=\"breaker\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn budget_admin_api_validates_and_needs_the_token() {
    let dir = TempDir::new("budget-admin");
    let s = embedded(&dir, json!({})).await;
    let (st, _) = call_raw(&s, "GET", "/v1/budgets", String::new(), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = call(
        &s,
        "PUT",
        "/v1/budgets/b1",
        json!({"scope": "team", "target": "search", "period": "fortnight", "limitUsd": 1}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fortnight"),
        "{v}"
    );
    let (st, v) = call(
        &s,
        "PUT",
        "/v1/budgets/b1",
        json!({"scope": "team", "target": "search", "period": "day", "limitUsd": 1}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["id"], "b1");
    let (_, v) = call(&s, "GET", "/v1/budgets", json!({})).await;
    assert_eq!(v["budgets"].as_array().unwrap().len(), 1);
    let (st, v) = call(&s, "GET", "/v1/budgets/usage?scope=team:search", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["usage"][0]["remainingPico"], 1_000_000_000_000u64);
    let (st, _) = call(&s, "DELETE", "/v1/budgets/b1", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(&s, "DELETE", "/v1/budgets/b1", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = call(&s, "GET", "/v1/spend?group_by=planet", json!({})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("group_by"),
        "{v}"
    );
}
