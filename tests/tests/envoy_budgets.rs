//! Budgets end to end: the real Envoy with the real filter, the real cache service (budgets,
//! ledger; embedded store or two replicas on a real Redis) and the simulated provider.
//!
//! A budget stops traffic at its limit with a 429 in the provider's shape, a soft limit
//! downgrades the model, nested scopes all apply, windows reset, streamed responses settle their
//! actual cost, the failure modes behave as configured, and 200 concurrent requests through two
//! Envoy workers and two service replicas never overspend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::cache::{CacheOptions, CacheService};
use tollgate_tests::harness::{Envoy, EnvoyOptions, workspace_root};
use tollgate_tests::sim::{self, SimConfig, SimHandle};

const TOKEN: &str = "test-admin-token";
const MAX_TOKENS: u64 = 40;

fn filter_config(failure_mode: &str) -> Value {
    json!({
        "tenant": {"sources": ["header:x-tollgate-tenant"], "org": "acme",
                   "userSources": ["header:x-tollgate-user"]},
        "maxTokens": {"default": MAX_TOKENS},
        "stopOnHeaders": true,
        "cache": {"cluster": "tollgate_cache", "timeoutMs": 2000},
        "budgets": {"failureMode": failure_mode}
    })
}

/// The service without semantic lookups (budgets do not need the model).
fn service_options() -> CacheOptions {
    CacheOptions {
        config: json!({"cache": {"semantic": {"mode": "off"}}}),
        ..CacheOptions::default()
    }
}

async fn envoy_for(sim: &SimHandle, cache: SocketAddr, mode: &str, workers: u32) -> Envoy {
    let mut opts = EnvoyOptions::new(sim.addr, true).config(filter_config(mode));
    opts.cache = cache;
    opts.concurrency = workers;
    Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"))
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn h(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A chat request that never uses the response cache (budgets are what is under test).
async fn ask(
    http: &reqwest::Client,
    envoy: &Envoy,
    team: &str,
    user: Option<&str>,
    model: &str,
    stream: bool,
) -> Resp {
    let mut body = json!({"model": model, "messages": [
        {"role": "user", "content": "Write one sentence about budgets."}
    ]});
    if stream {
        body["stream"] = json!(true);
    }
    let mut req = http
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-tollgate-tenant", team)
        .header("cache-control", "no-cache, no-store")
        .body(body.to_string());
    if let Some(u) = user {
        req = req.header("x-tollgate-user", u);
    }
    let r = req.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

async fn admin(
    http: &reqwest::Client,
    cache: &CacheService,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, cache.url(path))
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn put_budget(http: &reqwest::Client, cache: &CacheService, def: Value) {
    let id = def["id"].as_str().unwrap().to_string();
    let (st, v) = admin(
        http,
        cache,
        reqwest::Method::PUT,
        &format!("/v1/budgets/{id}"),
        Some(def),
    )
    .await;
    assert_eq!(st, 200, "{v}");
}

/// Current usage of a budget's window for `scope` (waits until no reservation is pending, i.e.
/// every request has settled).
async fn settled_usage(
    http: &reqwest::Client,
    cache: &CacheService,
    budget: &str,
    scope: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = admin(
            http,
            cache,
            reqwest::Method::GET,
            &format!("/v1/budgets/usage?budget_id={budget}&scope={scope}"),
            None,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let row = v["usage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scope"] == scope)
            .cloned()
            .unwrap_or(Value::Null);
        if row["reserved"]["costPico"].as_u64() == Some(0)
            && row["reserved"]["inputTokens"].as_u64() == Some(0)
        {
            return row;
        }
        assert!(Instant::now() < deadline, "reservations never settled: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// USD per token from the shipped price table (read independently of the filter).
fn price(model: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(workspace_root().join("filter/data/prices.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["models"][model][field].as_f64().unwrap()
}

/// What the filter reserves for one `ask` (its prompt tokens and MAX_TOKENS), pico-USD.
fn reservation_pico(model: &str, prompt_tokens: u64) -> u64 {
    let pico = prompt_tokens as f64 * price(model, "input_cost_per_token") * 1e12
        + MAX_TOKENS as f64 * price(model, "output_cost_per_token") * 1e12;
    pico.round() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_budget_stops_traffic_at_its_limit_with_a_429_in_the_providers_shape() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let cache = CacheService::start(&service_options()).unwrap();
    let envoy = envoy_for(&sim, cache.addr, "open", 1).await;
    let http = reqwest::Client::new();
    // Room for about three worst-case reservations.
    put_budget(
        &http,
        &cache,
        json!({"id": "search-daily", "scope": "team", "target": "search", "period": "day",
               "limitUsd": 0.0001}),
    )
    .await;
    let mut admitted = 0;
    let mut last_remaining = f64::MAX;
    let rejected = loop {
        let r = ask(&http, &envoy, "search", None, "gpt-4o-mini", false).await;
        if r.status != 200 {
            break r;
        }
        admitted += 1;
        let remaining: f64 = r
            .h("x-tollgate-budget-remaining-usd")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            remaining < last_remaining,
            "{remaining} after {last_remaining}"
        );
        last_remaining = remaining;
        settled_usage(&http, &cache, "search-daily", "team:search").await;
        assert!(admitted < 50, "the budget never stopped traffic");
    };
    assert!(admitted >= 2, "{admitted}");
    assert_eq!(rejected.status, 429);
    let retry: u64 = rejected.h("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 86_400);
    let j = rejected.json();
    assert_eq!(j["error"]["code"], "budget_exceeded");
    assert_eq!(j["error"]["type"], "budget_exceeded");
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("team:search") && msg.contains("daily"),
        "{msg}"
    );
    // Nothing was sent upstream for the rejected request, and spend stayed within the limit.
    assert_eq!(sim.requests().len(), admitted);
    let usage = settled_usage(&http, &cache, "search-daily", "team:search").await;
    assert!(
        usage["spent"]["costPico"].as_u64().unwrap() <= 100_000_000,
        "{usage}"
    );
    // Another team is not affected.
    let other = ask(&http, &envoy, "ads", None, "gpt-4o-mini", false).await;
    assert_eq!(other.status, 200);
    assert!(other.h("x-tollgate-budget-remaining-usd").is_none());
    // Anthropic clients get Anthropic's error shape.
    let r = http
        .post(envoy.url("/v1/messages"))
        .header("content-type", "application/json")
        .header("x-tollgate-tenant", "search")
        .header("cache-control", "no-cache, no-store")
        .body(
            json!({"model": "claude-haiku-4-5", "max_tokens": 40,
                   "messages": [{"role": "user", "content": "Hi"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["type"], "error");
    assert_eq!(j["error"]["type"], "budget_exceeded");
    // The ledger has every admitted request, grouped as asked.
    let (st, v) = admin(
        &http,
        &cache,
        reqwest::Method::GET,
        "/v1/spend?group_by=team,model",
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    let search = rows
        .iter()
        .find(|r| r["group"]["team"] == "search")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(search["requests"], admitted as u64);
    assert_eq!(search["group"]["model"], "gpt-4o-mini");
    // And exports it as CSV.
    let csv = http
        .get(cache.url("/v1/spend/export?format=csv&team=search"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 1 + admitted, "{csv}");
    assert!(csv.lines().next().unwrap().contains("team"));
    // The admin API needs the token.
    let st = http
        .get(cache.url("/v1/spend"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st.as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_limit_downgrades_to_the_cheaper_model() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let cache = CacheService::start(&service_options()).unwrap();
    let envoy = envoy_for(&sim, cache.addr, "open", 1).await;
    let http = reqwest::Client::new();
    put_budget(
        &http,
        &cache,
        json!({"id": "frugal", "scope": "team", "target": "*", "period": "month",
               "limitUsd": 1.0, "softFraction": 0.000001, "downgradeTo": "gpt-4o-mini"}),
    )
    .await;
    let r = ask(&http, &envoy, "frugal", None, "gpt-4o", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.h("x-tollgate-model").as_deref(), Some("gpt-4o-mini"));
    assert_eq!(sim.requests()[0].body["model"], "gpt-4o-mini");
    settled_usage(&http, &cache, "frugal", "team:frugal").await;
    let (_, v) = admin(
        &http,
        &cache,
        reqwest::Method::GET,
        "/v1/spend/export?format=jsonl",
        None,
    )
    .await;
    let line: Value = match v {
        Value::String(s) => serde_json::from_str(s.lines().next().unwrap()).unwrap(),
        other => other,
    };
    assert_eq!(line["model_requested"], "gpt-4o");
    assert_eq!(line["model_used"], "gpt-4o-mini");
    assert_eq!(line["route"], "downgrade:budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_scopes_all_apply() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let cache = CacheService::start(&service_options()).unwrap();
    let envoy = envoy_for(&sim, cache.addr, "open", 1).await;
    let http = reqwest::Client::new();
    // Generous team budgets, a user token limit, and an org budget for about two requests.
    put_budget(
        &http,
        &cache,
        json!({"id": "teams", "scope": "team", "target": "*", "period": "day", "limitUsd": 10.0}),
    )
    .await;
    put_budget(
        &http,
        &cache,
        json!({"id": "bob-tokens", "scope": "user", "target": "bob", "period": "hour",
               "limitOutputTokens": 10}),
    )
    .await;
    let r = ask(&http, &envoy, "search", Some("bob"), "gpt-4o-mini", false).await;
    assert_eq!(r.status, 429);
    let j = r.json();
    assert_eq!(j["error"]["code"], "rate_limited");
    assert!(j["error"]["message"].as_str().unwrap().contains("user:bob"));
    put_budget(
        &http,
        &cache,
        json!({"id": "org", "scope": "org", "target": "acme", "period": "day",
               "limitUsd": 0.00007}),
    )
    .await;
    let mut statuses = Vec::new();
    for team in ["search", "ads", "support", "ops"] {
        let r = ask(&http, &envoy, team, None, "gpt-4o-mini", false).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert!(
                r.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("org:acme")
            );
        }
        settled_usage(&http, &cache, "org", "org:acme").await;
    }
    assert_eq!(statuses[0], 200);
    assert_eq!(statuses[3], 429, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_responses_settle_their_actual_cost_and_windows_reset() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let cache = CacheService::start(&service_options()).unwrap();
    let envoy = envoy_for(&sim, cache.addr, "open", 1).await;
    let http = reqwest::Client::new();
    put_budget(
        &http,
        &cache,
        json!({"id": "per-minute", "scope": "team", "target": "stream", "period": "minute",
               "limitUsd": 0.00005}),
    )
    .await;
    let r = ask(&http, &envoy, "stream", None, "gpt-4o-mini", true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("data: [DONE]"));
    let usage = settled_usage(&http, &cache, "per-minute", "team:stream").await;
    // The actual cost (what the access log says), not the reservation, was charged.
    let log = envoy.access_log(1).await;
    let cost_usd: f64 = log[0]["cost_usd"].as_str().unwrap().parse().unwrap();
    let spent = usage["spent"]["costPico"].as_u64().unwrap();
    assert!(
        ((spent as f64) / 1e12 - cost_usd).abs() < 1e-12,
        "{spent} vs {cost_usd}"
    );
    assert!(spent < reservation_pico("gpt-4o-mini", 14));
    // Exhaust the minute, then wait for the next one.
    let mut status = 200;
    for _ in 0..20 {
        status = ask(&http, &envoy, "stream", None, "gpt-4o-mini", false)
            .await
            .status;
        if status == 429 {
            break;
        }
        settled_usage(&http, &cache, "per-minute", "team:stream").await;
    }
    assert_eq!(status, 429);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(60_000 - now_ms % 60_000 + 200)).await;
    let r = ask(&http, &envoy, "stream", None, "gpt-4o-mini", false).await;
    assert_eq!(r.status, 200, "a new minute, a new window: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_modes_open_records_later_closed_rejects() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-e2e-budget-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = CacheOptions {
        data_dir: Some(dir.clone()),
        ..service_options()
    };
    let cache = CacheService::start(&opts).unwrap();
    let addr = cache.addr;
    let open = envoy_for(&sim, addr, "open", 1).await;
    let closed = envoy_for(&sim, addr, "closed", 1).await;
    let http = reqwest::Client::new();
    assert_eq!(
        ask(&http, &closed, "t", None, "gpt-4o-mini", false)
            .await
            .status,
        200
    );
    drop(cache);
    // Open: allowed while the service is down; the settle waits in the filter.
    let r = ask(&http, &open, "offline", None, "gpt-4o-mini", false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("x-tollgate-cache").as_deref(), Some("error"));
    // Closed: refused with a clear error.
    let r = ask(&http, &closed, "offline", None, "gpt-4o-mini", false).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "budget_unavailable");
    // Back on the same address: the open-mode request reaches the ledger (reconciled).
    let cache = CacheService::start(&CacheOptions {
        listen: Some(addr),
        ..opts
    })
    .unwrap();
    let http2 = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = admin(
            &http2,
            &cache,
            reqwest::Method::GET,
            "/v1/spend?group_by=team&team=offline",
            None,
        )
        .await;
        if v["totals"]["requests"].as_u64() == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "never reconciled: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(cache);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_never_overspend_across_workers_and_replicas() {
    let redis = tollgate_tests::redis::RedisServer::start()
        .expect("cannot start redis-server (run `make setup`)");
    let sim = sim::spawn(SimConfig {
        latency: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let opts = CacheOptions {
        redis_url: Some(redis.url()),
        ..service_options()
    };
    let a = CacheService::start(&opts).unwrap();
    let b = CacheService::start(&opts).unwrap();
    let envoy_a = envoy_for(&sim, a.addr, "closed", 2).await;
    let envoy_b = envoy_for(&sim, b.addr, "closed", 2).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    // The reservation of one request, from its counted prompt.
    let probe = ask(&http, &envoy_a, "probe", None, "gpt-4o-mini", false).await;
    let prompt: u64 = probe
        .h("x-tollgate-prompt-tokens")
        .unwrap()
        .parse()
        .unwrap();
    let each = reservation_pico("gpt-4o-mini", prompt);
    let ideal = 10u64;
    let limit_pico = each * ideal + each / 2;
    put_budget(
        &http,
        &a,
        json!({"id": "load", "scope": "team", "target": "load", "period": "day",
               "limitUsd": limit_pico as f64 / 1e12}),
    )
    .await;
    // Replica b reads definitions within its refresh interval (1 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = http.clone();
        let url = if i % 2 == 0 {
            envoy_a.url("/v1/chat/completions")
        } else {
            envoy_b.url("/v1/chat/completions")
        };
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .header("content-type", "application/json")
                .header("x-tollgate-tenant", "load")
                .header("cache-control", "no-cache, no-store")
                .body(
                    json!({"model": "gpt-4o-mini", "messages": [
                        {"role": "user", "content": "Write one sentence about budgets."}]})
                    .to_string(),
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut ok = 0u64;
    let mut limited = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok + limited, 200);
    assert!(ok.abs_diff(ideal) <= 1, "admitted {ok}, ideal {ideal}");
    let usage = settled_usage(&http, &a, "load", "team:load").await;
    let spent = usage["spent"]["costPico"].as_u64().unwrap();
    assert!(spent <= limit_pico, "spent {spent} > limit {limit_pico}");
    assert!(spent > 0);
}
