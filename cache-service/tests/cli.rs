//! The operator CLI (`budgets`, `spend`, `cache`) as operators run it: the real binary against
//! the real service app served on a free loopback port (embedded stores in a temp dir).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::TempDir;
use std::sync::Arc;

use serde_json::{Value, json};
use tollgate_cache_service::budget::Budgets;
use tollgate_cache_service::embed::{BatchConfig, Batcher, FakeEmbedder};
use tollgate_cache_service::engine::Engine;
use tollgate_cache_service::ledger::{self, LedgerConfig};
use tollgate_cache_service::metrics::Metrics;
use tollgate_cache_service::service::FileConfig;
use tollgate_cache_service::store::EmbeddedStore;
use tollgate_cache_service::{AppState, run};
use tollgate_wire::admit::{CacheOutcome, SettleBatch, SettleRecord};
use tollgate_wire::{Api, Usage, UsageSource};

const TOKEN: &str = "cli-admin-token";
const BIN: &str = env!("CARGO_BIN_EXE_tollgate-cache-service");

/// A running service: its base URL; stops when dropped.
struct Service {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    dir: TempDir,
}

async fn start(name: &str) -> Service {
    let dir = TempDir::new(name);
    let file: FileConfig =
        serde_json::from_value(json!({"cache": {"semantic": {"threshold": 0.9}}})).unwrap();
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
    let state = Arc::new(AppState::new(
        engine,
        metrics,
        Some(TOKEN.into()),
        Arc::new(budgets),
        ledger,
        None,
        None,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(listener, state, async {
        let _ = rx.await;
    }));
    Service {
        url: format!("http://{addr}"),
        _stop: tx,
        dir,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` against `url` (token from the environment, as operators do).
async fn cli(url: &str, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env("TOLLGATE_URL", url)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env("RUST_LOG", "warn");
    if let Some(t) = token {
        cmd.env("TOLLGATE_ADMIN_TOKEN", t);
    }
    let o = cmd.output().await.unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

async fn ok(url: &str, args: &[&str]) -> String {
    let o = cli(url, Some(TOKEN), args).await;
    assert_eq!(
        o.code, 0,
        "{args:?}\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    o.stdout
}

/// 2025-11-24T16:00:00Z
const T: u64 = 1_764_000_000_000;

fn spent(id: &str, tenant: &str, model: &str, cost_pico: u64) -> SettleRecord {
    SettleRecord {
        request_id: id.into(),
        tenant: tenant.into(),
        api: Some(Api::OpenAiChat),
        model: model.into(),
        stream: false,
        status: 200,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 50,
            ..Usage::default()
        },
        usage_source: UsageSource::Provider,
        cost_pico: Some(cost_pico),
        cache: CacheOutcome::Miss,
        saved_pico: 0,
        finished_at_ms: T,
        store: None,
        identity: None,
        reservation_id: None,
        requested_model: None,
        route: None,
    }
}

async fn settle(url: &str, records: Vec<SettleRecord>) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/settle"))
        .header("content-type", "application/json")
        .body(serde_json::to_string(&SettleBatch { records }).unwrap())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

/// The cells of the table line whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_set_list_usage_delete() {
    let s = start("budgets").await;
    let out = ok(
        &s.url,
        &[
            "budgets",
            "set",
            "search-daily",
            "--scope",
            "team",
            "--target",
            "search",
            "--period",
            "day",
            "--limit-usd",
            "10",
            "--limit-tokens",
            "50000",
            "--soft-fraction",
            "0.8",
            "--downgrade-to",
            "gpt-4o-mini",
            "--reset-hour-utc",
            "6",
        ],
    )
    .await;
    assert!(out.contains("budget search-daily saved"), "{out}");
    assert!(out.contains("\"limitUsd\": 10"), "{out}");
    // The flags also work before the subcommand.
    ok(
        &s.url,
        &[
            "budgets",
            "--url",
            &s.url,
            "set",
            "user-tpm",
            "--scope",
            "user",
            "--target",
            "*",
            "--period",
            "minute",
            "--limit-input-tokens",
            "1000",
            "--limit-output-tokens",
            "2000",
        ],
    )
    .await;

    let list = ok(&s.url, &["budgets", "list"]).await;
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "SCOPE",
            "PERIOD",
            "LIMIT_USD",
            "LIMIT_IN",
            "LIMIT_OUT",
            "LIMIT_TOKENS",
            "SOFT"
        ]
    );
    assert_eq!(
        row(&list, "search-daily"),
        [
            "search-daily",
            "team:search",
            "day",
            "10.0000",
            "-",
            "-",
            "50000",
            "0.8",
            "->",
            "gpt-4o-mini"
        ]
    );
    assert_eq!(
        row(&list, "user-tpm"),
        [
            "user-tpm", "user:*", "minute", "-", "1000", "2000", "-", "-"
        ]
    );
    let json_list: Value =
        serde_json::from_str(&ok(&s.url, &["budgets", "list", "--format", "json"]).await).unwrap();
    assert_eq!(json_list["budgets"].as_array().unwrap().len(), 2);
    assert_eq!(json_list["budgets"][0]["resetHourUtc"], 6);

    // Spend charges the team's window; usage shows it.
    let mut r = spent("u1", "search", "gpt-4o", 2_500_000_000_000);
    r.finished_at_ms = tollgate_cache_service::budget::now_ms();
    settle(&s.url, vec![r]).await;
    let usage = ok(&s.url, &["budgets", "usage", "--scope", "team:search"]).await;
    let cells = row(&usage, "search-daily");
    assert_eq!(cells[1], "team:search", "{usage}");
    assert_eq!(
        &cells[5..9],
        ["10.0000", "2.5000", "0.0000", "7.5000"],
        "{usage}"
    );
    assert_eq!(&cells[9..], ["100", "50"], "{usage}");

    // Invalid definitions: the API's message, exit 1.
    let bad = cli(
        &s.url,
        Some(TOKEN),
        &[
            "budgets", "set", "x", "--scope", "team", "--target", "a", "--period", "day",
        ],
    )
    .await;
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    assert!(bad.stderr.contains("HTTP 400"), "{}", bad.stderr);

    let out = ok(&s.url, &["budgets", "delete", "user-tpm"]).await;
    assert!(out.contains("budget user-tpm deleted"));
    let list = ok(&s.url, &["budgets", "list"]).await;
    assert!(!list.contains("user-tpm"), "{list}");
    let gone = cli(&s.url, Some(TOKEN), &["budgets", "delete", "user-tpm"]).await;
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains("no budget \"user-tpm\" (HTTP 404)"),
        "{}",
        gone.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_as_table_csv_and_json() {
    let s = start("spend").await;
    settle(
        &s.url,
        vec![
            spent("r1", "search", "gpt-4o", 1_000_000_000_000),
            spent("r2", "search", "gpt-4o", 500_000_000_000),
            spent("r3", "search", "gpt-4o-mini", 10_000_000_000),
            spent("r4", "support", "gpt-4o", 2_000_000_000_000),
        ],
    )
    .await;
    let range = ["--from", "2025-11-01", "--to", "2025-11-30"];
    let args = |extra: &[&'static str]| {
        let mut a = vec!["spend", "--group-by", "team,model"];
        a.extend(range);
        a.extend(extra);
        a
    };

    let table = ok(&s.url, &args(&[])).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "spend 2025-11-01T00:00:00.000Z .. 2025-12-01T00:00:00.000Z",
        "{table}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "TEAM",
            "MODEL",
            "REQUESTS",
            "TOKENS_IN",
            "TOKENS_OUT",
            "TOKENS_CACHED",
            "COST_USD",
            "SAVED_USD",
            "CACHE_HITS"
        ]
    );
    let cells: Vec<Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        cells,
        [
            vec![
                "search", "gpt-4o", "2", "200", "100", "0", "1.5000", "0.0000", "0"
            ],
            vec![
                "search",
                "gpt-4o-mini",
                "1",
                "100",
                "50",
                "0",
                "0.0100",
                "0.0000",
                "0"
            ],
            vec![
                "support", "gpt-4o", "1", "100", "50", "0", "2.0000", "0.0000", "0"
            ],
            vec!["TOTAL", "4", "400", "200", "0", "3.5100", "0.0000", "0"],
        ],
        "{table}"
    );
    // Aligned: every line of the table is as wide as its header up to the last column.
    let ends: Vec<usize> = lines[1..]
        .iter()
        .map(|l| {
            l.find("CACHE_HITS")
                .map_or(l.len(), |i| i + "CACHE_HITS".len())
        })
        .collect();
    assert!(ends.iter().all(|e| *e == ends[0]), "{table}");

    let csv = ok(&s.url, &args(&["--format", "csv", "--team", "search"])).await;
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "team,model,requests,tokens_in,tokens_out,tokens_cached,tokens_cache_write,cost_usd,unpriced_requests,saved_usd,cache_hits",
            "search,gpt-4o,2,200,100,0,0,1.5,0,0,0",
            "search,gpt-4o-mini,1,100,50,0,0,0.01,0,0,0",
        ],
        "{csv}"
    );

    let json: Value =
        serde_json::from_str(&ok(&s.url, &args(&["--format", "json", "--model", "gpt-4o"])).await)
            .unwrap();
    assert_eq!(json["totals"]["requests"], 3);
    assert_eq!(json["totals"]["cost_usd"], 3.5);
    assert_eq!(json["rows"].as_array().unwrap().len(), 2);

    // A bad parameter: the API's message on stderr, exit 1, nothing on stdout.
    let bad = cli(&s.url, Some(TOKEN), &["spend", "--group-by", "planet"]).await;
    assert_eq!(bad.code, 1);
    assert!(bad.stdout.is_empty(), "{}", bad.stdout);
    assert!(
        bad.stderr.starts_with("error: ") && bad.stderr.contains("planet"),
        "{}",
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_warm_stats_invalidate() {
    let s = start("cache").await;
    let file = s.dir.0.join("faq.jsonl");
    let lines = [
        json!({"tenant": "support", "model": "gpt-4o", "question": "How do I reset my password?", "answer": "Settings → Security → Reset."}),
        json!({"tenant": "support", "model": "gpt-4o-mini", "question": "What are your opening hours?", "answer": "9 to 5."}),
        json!({"tenant": "search", "model": "gpt-4o", "question": "Where is the API reference?", "answer": "docs.example.com/api"}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, body).unwrap();
    let file = file.to_str().unwrap();

    let out = ok(&s.url, &["cache", "warm", file]).await;
    assert_eq!(out.trim(), "warmed 3 entries");
    let stats = ok(&s.url, &["cache", "stats"]).await;
    assert_eq!(row(&stats, "entries"), ["entries", "3"], "{stats}");

    let out = ok(
        &s.url,
        &[
            "cache",
            "invalidate",
            "--tenant",
            "support",
            "--model",
            "gpt-4o",
        ],
    )
    .await;
    assert_eq!(out.trim(), "invalidated 1 entries");
    assert_eq!(
        row(&ok(&s.url, &["cache", "stats"]).await, "entries")[1],
        "2"
    );
    let out = ok(&s.url, &["cache", "invalidate"]).await;
    assert_eq!(out.trim(), "invalidated 2 entries");
    assert_eq!(
        row(&ok(&s.url, &["cache", "stats"]).await, "entries")[1],
        "0"
    );

    // A file with a broken line: the per-line errors, exit 1.
    let broken = s.dir.0.join("broken.jsonl");
    std::fs::write(&broken, format!("{}\nnot json\n", lines[0])).unwrap();
    let o = cli(
        &s.url,
        Some(TOKEN),
        &["cache", "warm", broken.to_str().unwrap()],
    )
    .await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("1 line(s) rejected, 1 warmed") && o.stderr.contains("line 2:"),
        "{}",
        o.stderr
    );
    // A missing file never reaches the service.
    let o = cli(
        &s.url,
        Some(TOKEN),
        &["cache", "warm", "/nonexistent/faq.jsonl"],
    )
    .await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("reading /nonexistent/faq.jsonl"),
        "{}",
        o.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_and_unreachable_service_exit_1_with_a_message() {
    let s = start("errors").await;
    for token in [Some("wrong"), None] {
        let o = cli(&s.url, token, &["budgets", "list"]).await;
        assert_eq!(o.code, 1, "{token:?}: {}", o.stdout);
        assert!(o.stdout.is_empty());
        assert_eq!(
            o.stderr.trim(),
            "error: unauthorized: send `authorization: Bearer <admin token>` (HTTP 401)"
        );
    }
    // --admin-token overrides the environment.
    let o = cli(
        &s.url,
        Some("wrong"),
        &["cache", "stats", "--admin-token", TOKEN],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);

    // Nothing listens on this port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    for args in [&["spend"][..], &["cache", "stats"], &["budgets", "list"]] {
        let o = cli(&url, Some(TOKEN), args).await;
        assert_eq!(o.code, 1, "{args:?}");
        assert!(
            o.stderr
                .contains(&format!("cannot connect to the Tollgate service at {url}")),
            "{}",
            o.stderr
        );
    }
    let o = cli("localhost:8090", Some(TOKEN), &["cache", "stats"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("expected http://host:port"),
        "{}",
        o.stderr
    );
}
