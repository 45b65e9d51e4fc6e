//! The cost dashboard in a real headless Chromium (Debian `chromium`, installed by `make setup`):
//! the real service on a loopback port, spend settled and budgets set through its HTTP API, then
//! the page loaded by the browser (`--dump-dom`): no error text, no script errors, every figure
//! (`data-value`) equal to `GET /v1/spend` / `GET /v1/budgets/usage`, and a screenshot saved to
//! `target/dashboard.png`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_tests::cache::{CacheOptions, CacheService};

const TOKEN: &str = "test-admin-token";
const EVIL: &str = "<script>alert('pwned')</script>";

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_CHROMIUM") {
        return PathBuf::from(p);
    }
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium not found on PATH: run `make setup` (it installs the Debian `chromium` package), \
         or set TOLLGATE_CHROMIUM to a Chromium/Chrome binary"
    );
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Runs headless Chromium with `args` then `url`; returns (stdout, stderr).
async fn run_chromium(profile: &Path, args: &[String], url: &str) -> (String, String) {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium did not finish within 120 s")
        .expect("chromium could not be started: run `make setup`");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium failed: {}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

struct Api {
    http: reqwest::Client,
    cache: CacheService,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), self.cache.url(path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    id: &str,
    team: &str,
    user: Option<&str>,
    model: &str,
    cost_pico: u64,
    cache: &str,
    saved_pico: u64,
    at_ms: u64,
) -> Value {
    json!({
        "request_id": id,
        "tenant": team,
        "api": "openai_chat",
        "model": model,
        "stream": false,
        "status": 200,
        "usage": {"input_tokens": 120, "cache_read_tokens": 0, "cache_write_tokens": 0,
                  "output_tokens": 30, "reasoning_tokens": 0},
        "usage_source": "provider",
        "cost_pico": cost_pico,
        "cache": cache,
        "saved_pico": saved_pico,
        "finished_at_ms": at_ms,
        "identity": {"org": "acme", "team": team, "user": user, "key": null},
    })
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Attribute `name` of the tag that starts at `tag` (up to its `>`).
fn attr_in(tag: &str, name: &str) -> Option<String> {
    let end = tag.find('>').unwrap_or(tag.len());
    let tag = &tag[..end];
    let pat = format!(" {name}=\"");
    let start = tag.find(&pat)? + pat.len();
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

/// The value of ` name="..."` if `s` starts with it, and the rest after it.
fn take_attr<'a>(s: &'a str, name: &str) -> Option<(String, &'a str)> {
    let s = s.strip_prefix(&format!(" {name}=\""))?;
    let len = s.find('"')?;
    Some((unescape(&s[..len]), &s[len + 1..]))
}

/// metric -> key -> data-value, from every element carrying `data-metric` (the page writes
/// `data-metric`, then `data-key` if any, then `data-value`; Chromium keeps attribute order).
fn figures(dom: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut rest = dom;
    while let Some(i) = rest.find(" data-metric=\"") {
        let (metric, after) = take_attr(&rest[i..], "data-metric").unwrap();
        let (key, after) = take_attr(after, "data-key").unwrap_or((String::new(), after));
        let (value, after) = take_attr(after, "data-value")
            .unwrap_or_else(|| panic!("figure {metric} {key:?} without data-value"));
        let prev = out
            .entry(metric.clone())
            .or_default()
            .insert(key.clone(), value);
        assert!(prev.is_none(), "figure {metric} {key:?} shown twice");
        rest = after;
    }
    out
}

fn spend_rows(report: &Value, dims: &[&str], field: &str) -> BTreeMap<String, String> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key: Vec<&str> = dims
                .iter()
                .map(|d| r["group"][*d].as_str().unwrap_or(""))
                .collect();
            (key.join("|"), r[field].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_matches_the_spend_api() {
    let chromium_bin = chromium();
    let cache = tokio::task::spawn_blocking(|| CacheService::start(&CacheOptions::default()))
        .await
        .unwrap()
        .expect("cache service (run `make setup` for the model)");
    let api = Api {
        http: reqwest::Client::new(),
        cache,
    };

    // Budgets first, so the settles below are charged to them.
    api.call(
        reqwest::Method::PUT,
        "/v1/budgets/search-daily",
        Some(json!({"scope": "team", "target": "search", "period": "day", "limitUsd": 0.05})),
    )
    .await;
    api.call(
        reqwest::Method::PUT,
        "/v1/budgets/user-tokens",
        Some(json!({"scope": "user", "target": "*", "period": "month", "limitTokens": 2000})),
    )
    .await;

    // Demo traffic as the filter settles it.
    let now = tollgate_cache_service::budget::now_ms();
    let day = 86_400_000;
    let mut records = Vec::new();
    let teams = ["search", "support", "research", EVIL];
    let models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku"];
    for i in 0..48u64 {
        let team = teams[(i % 4) as usize];
        let model = models[(i % 3) as usize];
        let user = ["ann", "bob", "cat"][(i % 3) as usize];
        let hit = i % 5 == 0;
        let cache = if !hit {
            "miss"
        } else if i % 2 == 0 {
            "hit_exact"
        } else {
            "hit_semantic"
        };
        let cost = if hit {
            0
        } else {
            1_000_000_000 + i * 37_000_001
        };
        let saved = if hit { 2_000_000_000 + i } else { 0 };
        let mut r = record(
            &format!("demo-{i}"),
            team,
            Some(user),
            model,
            cost,
            cache,
            saved,
            now - (i % 11) * day,
        );
        if i % 7 == 3 {
            r["requested_model"] = json!("gpt-4o");
            r["model"] = json!("gpt-4o-mini");
            r["route"] = json!(if i % 2 == 0 {
                "downgrade:budget"
            } else {
                "rule:simple-questions"
            });
        }
        records.push(r);
    }
    api.call(
        reqwest::Method::POST,
        "/v1/settle",
        Some(json!({ "records": records })),
    )
    .await;

    let url = api.cache.url(&format!("/dashboard?token={TOKEN}"));
    let profile = std::env::temp_dir().join(format!("tollgate-chromium-{}", std::process::id()));
    let (dom, stderr) = run_chromium(&profile, &["--dump-dom".into()], &url).await;
    assert!(
        dom.contains("Tollgate cost dashboard"),
        "the page did not render: {dom}"
    );
    for bad in [
        "class=\"error\"",
        "unauthorized",
        "ledger unavailable",
        "did not answer",
    ] {
        assert!(!dom.contains(bad), "error text {bad:?} in the page");
    }
    assert!(
        !stderr.contains("Uncaught") && !stderr.contains("Refused to"),
        "browser console errors: {stderr}"
    );
    assert!(
        !dom.contains("<script"),
        "a name from a header became markup"
    );
    assert!(
        dom.contains("&lt;script&gt;"),
        "the <script> team is shown escaped"
    );
    assert!(dom.matches("<svg").count() >= 3, "charts missing");

    let f = figures(&dom);
    let from = attr_in(&dom[dom.find("<body").unwrap()..], "data-from-ms").unwrap();
    let to = attr_in(&dom[dom.find("<body").unwrap()..], "data-to-ms").unwrap();
    let spend = |group_by: String| {
        let path = format!("/v1/spend?from={from}&to={to}{group_by}");
        let api = &api;
        async move { api.call(reqwest::Method::GET, &path, None).await }
    };
    let totals = spend(String::new()).await;
    assert_eq!(totals["totals"]["requests"], 48);
    assert_eq!(
        f["total-cost"][""],
        totals["totals"]["cost_usd"].to_string()
    );
    assert_eq!(f["total-requests"][""], "48");
    assert_eq!(
        f["total-cache-hits"][""],
        totals["totals"]["cache_hits"].to_string()
    );
    assert_eq!(
        f["cache-saved"][""],
        totals["totals"]["saved_usd"].to_string()
    );
    for (metric, dims) in [
        ("team", vec!["team"]),
        ("user", vec!["user"]),
        ("model", vec!["model"]),
        ("day-team", vec!["day", "team"]),
        ("day-model", vec!["day", "model"]),
    ] {
        let report = spend(format!("&group_by={}", dims.join(","))).await;
        assert_eq!(
            f[&format!("{metric}-cost")],
            spend_rows(&report, &dims, "cost_usd"),
            "{metric} cost"
        );
        if let Some(reqs) = f.get(&format!("{metric}-requests")) {
            assert_eq!(reqs, &spend_rows(&report, &dims, "requests"), "{metric}");
        }
    }
    assert!(f["team-cost"].contains_key(EVIL));
    let routed: u64 = f["routed-requests-by-route"]
        .values()
        .map(|v| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(f["routed-requests"][""], routed.to_string());
    assert_eq!(routed, 7);

    let usage = api
        .call(reqwest::Method::GET, "/v1/budgets/usage", None)
        .await;
    let rows = usage["usage"].as_array().unwrap();
    assert!(rows.len() >= 4, "team + three users: {usage}");
    for u in rows {
        let key = format!(
            "{}|{}",
            u["budgetId"].as_str().unwrap(),
            u["scope"].as_str().unwrap()
        );
        if u["limits"]["usdPico"].is_u64() {
            assert_eq!(f["budget-spent"][&key], u["spent"]["costPico"].to_string());
            assert_eq!(
                f["budget-reserved"][&key],
                u["reserved"]["costPico"].to_string()
            );
            assert_eq!(f["budget-remaining"][&key], u["remainingPico"].to_string());
        } else {
            let tokens = u["spent"]["inputTokens"].as_u64().unwrap()
                + u["spent"]["outputTokens"].as_u64().unwrap();
            assert_eq!(f["budget-spent"][&key], tokens.to_string(), "{key}");
        }
    }

    // Screenshot.
    let png = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(
        &profile,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,2000".into(),
        ],
        &url,
    )
    .await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "screenshot is only {} bytes: a blank page?",
        bytes.len()
    );
    let _ = std::fs::remove_dir_all(&profile);
    drop(chromium_bin);
}
