//! `GET /dashboard` through `app()` (no sockets): access with the header or `?token=`, every
//! figure equal to `GET /v1/spend` and `/v1/budgets/usage` for the page's range, cache and
//! routing breakdowns, and names from request headers escaped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::TempDir;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tollgate_cache_service::budget::Budgets;
use tollgate_cache_service::embed::{BatchConfig, Batcher, FakeEmbedder};
use tollgate_cache_service::engine::Engine;
use tollgate_cache_service::ledger::{self, LedgerConfig};
use tollgate_cache_service::metrics::Metrics;
use tollgate_cache_service::service::FileConfig;
use tollgate_cache_service::store::EmbeddedStore;
use tollgate_cache_service::{AppState, app};
use tollgate_wire::admit::{CacheOutcome, Identity, SettleRecord};
use tollgate_wire::{Api, Usage, UsageSource};
use tower::ServiceExt;

const TOKEN: &str = "dash-admin";
const EVIL: &str = "<script>alert('x')</script>";

async fn state(dir: &TempDir, token: Option<&str>) -> Arc<AppState> {
    let file: FileConfig = serde_json::from_value(json!({})).unwrap();
    let settings = file.cache.compile().unwrap();
    let metrics = Arc::new(Metrics::new());
    let embedder = Arc::new(Batcher::new(
        Arc::new(FakeEmbedder::new(256)),
        BatchConfig::default(),
    ));
    let store = EmbeddedStore::open(dir.0.join("cache.redb")).await.unwrap();
    let engine = Engine::start(settings, Arc::new(store), Some(embedder), metrics.clone())
        .await
        .unwrap();
    let budgets = Budgets::open_embedded(dir.0.join("budgets.redb"))
        .await
        .unwrap();
    let ledger = ledger::open(&LedgerConfig::embedded_in(&dir.0))
        .await
        .unwrap();
    Arc::new(AppState::new(
        engine,
        metrics,
        token.map(str::to_owned),
        Arc::new(budgets),
        ledger,
        None,
        None,
    ))
}

async fn get(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    body: String,
    bearer: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = bearer {
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
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn api(state: &Arc<AppState>, method: &str, path: &str, body: Value) -> Value {
    let (status, text) = get(state, method, path, body.to_string(), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn rec(
    id: &str,
    team: &str,
    user: Option<&str>,
    model: &str,
    cost_pico: u64,
    cache: CacheOutcome,
    saved_pico: u64,
    at_ms: u64,
) -> SettleRecord {
    SettleRecord {
        request_id: id.into(),
        tenant: team.into(),
        api: Some(Api::OpenAiChat),
        model: model.into(),
        stream: false,
        status: 200,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 20,
            ..Usage::default()
        },
        usage_source: UsageSource::Provider,
        cost_pico: Some(cost_pico),
        cache,
        saved_pico,
        finished_at_ms: at_ms,
        store: None,
        identity: Some(Identity {
            org: "acme".into(),
            team: team.into(),
            user: user.map(str::to_owned),
            key: None,
        }),
        reservation_id: None,
        requested_model: None,
        route: None,
    }
}

fn now_ms() -> u64 {
    tollgate_cache_service::budget::now_ms()
}

/// Settles demo records: three teams (one named like markup), two models, cache hits, a routed
/// and a downgraded request, over three days.
async fn seed(s: &Arc<AppState>) {
    let now = now_ms();
    let day = 86_400_000;
    let mut records = vec![
        rec(
            "r1",
            "search",
            Some("ann"),
            "gpt-4o",
            2_500_000_000,
            CacheOutcome::Miss,
            0,
            now,
        ),
        rec(
            "r2",
            "search",
            Some("bob"),
            "gpt-4o",
            1_250_000_000,
            CacheOutcome::Miss,
            0,
            now - day,
        ),
        rec(
            "r3",
            "search",
            Some("ann"),
            "gpt-4o",
            0,
            CacheOutcome::HitExact,
            2_500_000_000,
            now,
        ),
        rec(
            "r4",
            "support",
            Some(EVIL),
            "gpt-4o-mini",
            150_000_000,
            CacheOutcome::Miss,
            0,
            now - 2 * day,
        ),
        rec(
            "r5",
            "support",
            None,
            "gpt-4o-mini",
            0,
            CacheOutcome::HitSemantic,
            150_000_000,
            now,
        ),
        rec(
            "r6",
            EVIL,
            Some("eve"),
            "claude-3-5-haiku",
            7_000_000_001,
            CacheOutcome::Bypass,
            0,
            now,
        ),
        // Outside the 30-day range: must not count.
        rec(
            "r9",
            "archive",
            None,
            "gpt-4o",
            99_000_000_000,
            CacheOutcome::Miss,
            0,
            now - 40 * day,
        ),
    ];
    records[5].status = 502; // r6: an upstream error, still charged
    let mut routed = rec(
        "r7",
        "search",
        Some("bob"),
        "gpt-4o-mini",
        300_000_000,
        CacheOutcome::Miss,
        0,
        now,
    );
    routed.requested_model = Some("gpt-4o".into());
    routed.route = Some("rule:short-questions".into());
    records.push(routed);
    let mut down = rec(
        "r8",
        "support",
        Some("cat"),
        "gpt-4o-mini",
        200_000_000,
        CacheOutcome::Miss,
        0,
        now,
    );
    down.requested_model = Some(EVIL.into());
    down.route = Some("downgrade:budget".into());
    records.push(down);
    api(
        s,
        "PUT",
        "/v1/budgets/search-daily",
        json!({"scope": "team", "target": "search", "period": "day", "limitUsd": 0.01}),
    )
    .await;
    api(
        s,
        "PUT",
        "/v1/budgets/users-tokens",
        json!({"scope": "user", "target": "*", "period": "month", "limitTokens": 1000}),
    )
    .await;
    api(s, "POST", "/v1/settle", json!({ "records": records })).await;
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Every `data-metric` figure of the page: metric -> key -> data-value.
fn figures(html: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let re = regex::Regex::new(
        r#"data-metric="([^"]*)"(?: data-key="([^"]*)")?(?: data-value="([^"]*)")"#,
    )
    .unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for c in re.captures_iter(html) {
        let key = c.get(2).map(|m| unescape(m.as_str())).unwrap_or_default();
        let prev = out
            .entry(c[1].to_string())
            .or_default()
            .insert(key.clone(), c[3].to_string());
        assert!(prev.is_none(), "figure {} {key:?} twice", &c[1]);
    }
    out
}

fn attr(html: &str, name: &str) -> String {
    let start = html.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

/// The `/v1/spend` rows of a grouping as key ("a|b" for two dimensions) -> (cost_usd text, requests).
fn spend_rows(report: &Value, dims: &[&str]) -> BTreeMap<String, (String, u64)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key: Vec<String> = dims
                .iter()
                .map(|d| r["group"][*d].as_str().unwrap_or("").to_string())
                .collect();
            (
                key.join("|"),
                (r["cost_usd"].to_string(), r["requests"].as_u64().unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn needs_the_admin_token_in_the_header_or_the_query() {
    let dir = TempDir::new("auth");
    let s = state(&dir, Some(TOKEN)).await;
    let (st, body) = get(&s, "GET", "/dashboard", String::new(), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(body.contains("token"), "{body}");
    let (st, _) = get(&s, "GET", "/dashboard?token=wrong", String::new(), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = get(&s, "GET", "/dashboard", String::new(), Some("wrong")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, body) = get(&s, "GET", "/dashboard", String::new(), Some(TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        body.contains("No budgets defined"),
        "empty ledger renders: {body}"
    );
    let (st, body) = get(
        &s,
        "GET",
        &format!("/dashboard?token={TOKEN}"),
        String::new(),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.starts_with("<!doctype html>"));
    let (st, _) = get(
        &s,
        "GET",
        &format!("/dashboard?token={TOKEN}&days=0"),
        String::new(),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let dir = TempDir::new("disabled");
    let s = state(&dir, None).await;
    let (st, _) = get(&s, "GET", "/dashboard?token=x", String::new(), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn figures_equal_the_spend_api_and_names_are_escaped() {
    let dir = TempDir::new("figures");
    let s = state(&dir, Some(TOKEN)).await;
    seed(&s).await;
    s.metrics.inc(
        "tollgate_cache_bypass_total",
        &[("reason", "rule:<b>no-legal</b>")],
        2,
    );
    let (st, html) = get(&s, "GET", "/dashboard", String::new(), Some(TOKEN)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(!html.contains("<script"), "unescaped markup in the page");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(!html.contains("<svg") || html.contains("</svg>"));

    let f = figures(&html);
    let (from, to) = (attr(&html, "data-from-ms"), attr(&html, "data-to-ms"));
    let spend = |group_by: &str| {
        let s = s.clone();
        let path = format!("/v1/spend?from={from}&to={to}{group_by}");
        async move { api(&s, "GET", &path, json!({})).await }
    };

    let totals = spend("").await;
    assert_eq!(
        f["total-cost"][""],
        totals["totals"]["cost_usd"].to_string()
    );
    assert_eq!(
        f["total-requests"][""],
        totals["totals"]["requests"].to_string()
    );
    assert_eq!(
        totals["totals"]["requests"], 8,
        "the 40-day-old record is outside"
    );
    assert_eq!(f["total-cache-hits"][""], "2");
    assert_eq!(
        f["total-saved"][""],
        totals["totals"]["saved_usd"].to_string()
    );
    assert_eq!(
        f["cache-saved"][""],
        totals["totals"]["saved_usd"].to_string()
    );
    assert_eq!(f["cache-hit-rate"][""], "25.0");

    for (metric, dims) in [
        ("team", vec!["team"]),
        ("user", vec!["user"]),
        ("model", vec!["model"]),
        ("day-team", vec!["day", "team"]),
        ("day-model", vec!["day", "model"]),
    ] {
        let report = spend(&format!("&group_by={}", dims.join(","))).await;
        let rows = spend_rows(&report, &dims);
        let shown = &f[&format!("{metric}-cost")];
        let want: BTreeMap<String, String> = rows
            .iter()
            .map(|(k, (c, _))| (k.clone(), c.clone()))
            .collect();
        assert_eq!(shown, &want, "{metric}");
        if let Some(reqs) = f.get(&format!("{metric}-requests")) {
            let want: BTreeMap<String, String> = rows
                .iter()
                .map(|(k, (_, n))| (k.clone(), n.to_string()))
                .collect();
            assert_eq!(reqs, &want, "{metric} requests");
        }
    }
    assert!(f["team-cost"].contains_key(EVIL));
    assert!(
        !html.contains("archive"),
        "a record older than the range shows"
    );

    assert_eq!(f["cache-requests"]["hit-exact"], "1");
    assert_eq!(f["cache-requests"]["hit-semantic"], "1");
    assert_eq!(f["cache-saved-by-kind"]["hit-exact"], "0.0025");
    assert_eq!(f["routed-requests"][""], "2");
    assert_eq!(
        f["routed-requests-by-route"]["rule:short-questions|gpt-4o|gpt-4o-mini"],
        "1"
    );
    assert_eq!(
        f["routed-requests-by-route"][&format!("downgrade:budget|{EVIL}|gpt-4o-mini")],
        "1"
    );

    // Budgets: as /v1/budgets/usage reports them.
    let usage = api(&s, "GET", "/v1/budgets/usage", json!({})).await;
    let rows = usage["usage"].as_array().unwrap();
    assert!(!rows.is_empty());
    for u in rows {
        let key = format!(
            "{}|{}",
            u["budgetId"].as_str().unwrap(),
            u["scope"].as_str().unwrap()
        );
        if u["limits"]["usdPico"].is_u64() {
            assert_eq!(
                f["budget-spent"][&key],
                u["spent"]["costPico"].to_string(),
                "{key}"
            );
            assert_eq!(f["budget-limit"][&key], u["limits"]["usdPico"].to_string());
            assert_eq!(f["budget-remaining"][&key], u["remainingPico"].to_string());
        } else {
            let tokens = u["spent"]["inputTokens"].as_u64().unwrap()
                + u["spent"]["outputTokens"].as_u64().unwrap();
            assert_eq!(f["budget-spent"][&key], tokens.to_string(), "{key}");
            assert_eq!(f["budget-limit"][&key], u["limits"]["tokens"].to_string());
        }
    }
    // Settles charge the current window: search's three priced requests, over its $0.01.
    assert_eq!(f["budget-spent"]["search-daily|team:search"], "4050000000");
    assert_eq!(
        f["budget-used-fraction"]["search-daily|team:search"],
        "0.4050"
    );
    assert_eq!(f["budget-spent"]["users-tokens|user:ann"], "120");

    assert_eq!(f["budget-admits"]["reject"], "0");
    assert_eq!(f["cache-bypass"]["rule:<b>no-legal</b>"], "2");
    assert!(!html.contains("<b>no-legal"));
    assert_eq!(f["ledger-status"]["200"], "7");
    assert_eq!(f["ledger-status"]["502"], "1");
    assert!(html.contains("Envoy stats"));
}
