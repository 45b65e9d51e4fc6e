//! The response cache end to end: client -> real Envoy with the Tollgate filter (`.wasm`) ->
//! real cache service (embedded store, real all-MiniLM-L6-v2 ONNX model, in-process on a free
//! port) -> simulated provider with the demo's latency (250 ms).
//!
//! 1. misses: the first question of each of `--pairs` paraphrase pairs
//!    (`cache-service/data/pairs`, `same: true`) goes to the provider and is stored;
//! 2. the rewordings are asked once: those answered `hit-semantic` form the semantic-hit set;
//! 3. sequential (one client, keep-alive) exact hits (the stored questions again) and semantic
//!    hits (the rewordings again), `--samples` each, p50/p90/p99;
//! 4. closed-loop concurrent clients (`--conc`), and `wrk` if installed, for hit throughput.
//!
//! Every response's `x-tollgate-cache` header is checked; a hit that reached the provider would
//! show in the simulator's request log (reported).
//!
//! Usage: cache_e2e [--latency-ms 250] [--pairs 80] [--samples 500] [--conc 8,32] [--secs 5]
//!                  [--wrk-secs 10] [--data-dir DIR (a store filled by `admit`, e.g.
//!                  target/cache-bench/one-100000)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../cache_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Summary, TENANT, chat_body, paraphrase_pairs};
use serde_json::json;
use tokio::task::JoinSet;
use tollgate_tests::cache::{CacheOptions, CacheService};
use tollgate_tests::harness::{Envoy, EnvoyOptions, workspace_root};
use tollgate_tests::sim::{self, SimConfig, SimHandle};

struct Args {
    latency_ms: u64,
    pairs: usize,
    samples: usize,
    conc: Vec<usize>,
    secs: f64,
    wrk_secs: u64,
    data_dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        latency_ms: 250,
        pairs: 80,
        samples: 500,
        conc: vec![8, 32],
        secs: 5.0,
        wrk_secs: 10,
        data_dir: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--latency-ms" => a.latency_ms = v.parse().unwrap(),
            "--pairs" => a.pairs = v.parse().unwrap(),
            "--samples" => a.samples = v.parse().unwrap(),
            "--conc" => a.conc = v.split(',').map(|s| s.parse().unwrap()).collect(),
            "--secs" => a.secs = v.parse().unwrap(),
            "--wrk-secs" => a.wrk_secs = v.parse().unwrap(),
            "--data-dir" => a.data_dir = Some(PathBuf::from(v)),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

const TIMEOUT_MS: u64 = 1000;

async fn ask(client: &reqwest::Client, envoy: &Envoy, question: &str) -> (String, f64) {
    let body = chat_body(question).to_string();
    let t0 = Instant::now();
    let r = client
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-tollgate-tenant", TENANT)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-tollgate-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = r.bytes().await.unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    (cache, ms)
}

fn provider_calls(sim: &SimHandle) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count()
}

/// Sequential requests cycling through `questions`; latencies of those answered `expect`.
async fn sequential(
    client: &reqwest::Client,
    envoy: &Envoy,
    questions: &[String],
    samples: usize,
    expect: &str,
) -> (Summary, usize) {
    let mut lat = Vec::with_capacity(samples);
    let mut unexpected = 0;
    for i in 0..samples {
        let (cache, ms) = ask(client, envoy, &questions[i % questions.len()]).await;
        if cache == expect {
            lat.push(ms);
        } else {
            unexpected += 1;
        }
    }
    (Summary::of(&mut lat), unexpected)
}

/// `conc` clients in a closed loop for `secs`.
async fn concurrent(
    envoy: &Arc<Envoy>,
    questions: &Arc<Vec<String>>,
    conc: usize,
    secs: f64,
    expect: &'static str,
) -> (Summary, f64, usize) {
    let cursor = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut set = JoinSet::new();
    for _ in 0..conc {
        let (envoy, questions, cursor, client) = (
            envoy.clone(),
            questions.clone(),
            cursor.clone(),
            client.clone(),
        );
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut unexpected = 0;
            while Instant::now() < deadline {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                let (cache, ms) = ask(&client, &envoy, &questions[i % questions.len()]).await;
                if cache == expect {
                    lat.push(ms);
                } else {
                    unexpected += 1;
                }
            }
            (lat, unexpected)
        });
    }
    let mut lat = Vec::new();
    let mut unexpected = 0;
    while let Some(r) = set.join_next().await {
        let (l, u) = r.unwrap();
        lat.extend(l);
        unexpected += u;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = lat.len() + unexpected;
    (Summary::of(&mut lat), n as f64 / elapsed, unexpected)
}

// ---------------------------------------------------------------------------------------------
// wrk

#[derive(Debug, Default, Clone)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    errors: u64,
    requests: u64,
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(0.0)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

fn wrk_script(dir: &Path, name: &str, questions: &[String]) -> PathBuf {
    let bodies = dir.join(format!("{name}.bodies"));
    let lines: Vec<String> = questions.iter().map(|q| chat_body(q).to_string()).collect();
    std::fs::write(&bodies, lines.join("\n") + "\n").unwrap();
    let script = format!(
        r#"
local bodies = {{}}
for line in io.lines("{}") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-tollgate-tenant"] = "{TENANT}"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "/v1/chat/completions", nil, bodies[i])
end
"#,
        bodies.display()
    );
    let p = dir.join(format!("{name}.lua"));
    std::fs::write(&p, script).unwrap();
    p
}

fn wrk(url: &str, script: &Path, connections: usize, seconds: u64) -> Wrk {
    let out = Command::new("wrk")
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut r = Wrk::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("90%") {
            r.p90_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_ms(v);
        } else if t.contains("requests in") {
            r.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if t.starts_with("Non-2xx") || t.starts_with("Socket errors") {
            r.errors += t
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    assert!(
        r.rps > 0.0,
        "wrk produced no result:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    r
}

fn have_wrk() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
}

// ---------------------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let root = workspace_root();
    let load_start = common::load_average();
    let sim = sim::spawn(SimConfig {
        latency: Duration::from_millis(a.latency_ms),
        chunk_delay: Duration::ZERO,
    })
    .await
    .unwrap();
    // A filled store is copied, so this run's entries do not change the original.
    let copy = a.data_dir.as_ref().map(|src| {
        let dst = std::env::temp_dir().join(format!("tollgate-e2e-store-{}", std::process::id()));
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::copy(src.join("cache.redb"), dst.join("cache.redb"))
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        dst
    });
    let opts = CacheOptions {
        data_dir: copy.clone(),
        config: json!({"cache": {"maxEntries": 10_000_000u64}}),
        ..CacheOptions::default()
    };
    let t = Instant::now();
    let cache = tokio::task::spawn_blocking(move || CacheService::start(&opts))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let service_start_s = t.elapsed().as_secs_f64();
    let entries_at_start = cache.state.engine.entries();
    eprintln!(
        "cache service ready in {service_start_s:.1} s with {entries_at_start} entries; load {}",
        common::load_average()
    );
    let filter = json!({
        "tenant": {"sources": ["header:x-tollgate-tenant"], "default": "anonymous"},
        "stopOnHeaders": true,
        "cache": {"cluster": "tollgate_cache", "timeoutMs": TIMEOUT_MS}
    });
    let mut eopts = EnvoyOptions::new(sim.addr, true).config(filter);
    eopts.cache = cache.addr;
    eopts.log_level = "warning";
    let envoy = Arc::new(Envoy::start(&eopts).await.unwrap_or_else(|e| panic!("{e}")));
    let client = reqwest::Client::new();

    // Warm-up: connections Envoy -> service and Envoy -> provider, the filter's VM.
    for i in 0..3 {
        ask(
            &client,
            &envoy,
            &format!("Warm-up request number {i}, please ignore."),
        )
        .await;
    }

    // 0. The provider alone (no Envoy): what a miss costs without the proxy.
    let mut direct_lat = Vec::new();
    for i in 0..10 {
        let t0 = Instant::now();
        let r = client
            .post(format!("http://{}/v1/chat/completions", sim.addr))
            .header("content-type", "application/json")
            .body(chat_body(&format!("Direct baseline question number {i}?")).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.bytes().await.unwrap();
        direct_lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let direct = Summary::of(&mut direct_lat);

    // 1. Misses: each question once, through to the provider; stored on settle.
    let pairs = paraphrase_pairs(&root);
    let pairs = &pairs[..a.pairs.min(pairs.len())];
    let calls_before = provider_calls(&sim);
    let mut miss_lat = Vec::new();
    let mut stored = Vec::new();
    let mut first_outcomes = std::collections::BTreeMap::<String, usize>::new();
    for (q, _) in pairs {
        let (cache_hdr, ms) = ask(&client, &envoy, q).await;
        *first_outcomes.entry(cache_hdr.clone()).or_default() += 1;
        if cache_hdr == "miss" {
            miss_lat.push(ms);
            stored.push(q.clone());
        }
    }
    let miss = Summary::of(&mut miss_lat);
    let want = entries_at_start + stored.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cache.state.engine.entries() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "misses: {first_outcomes:?}, p50 {:.1} ms; entries {} (want {want})",
        miss.p50,
        cache.state.engine.entries()
    );

    // 2. Rewordings once: which are semantic hits.
    let mut sem = Vec::new();
    let mut reword_outcomes = std::collections::BTreeMap::<String, usize>::new();
    for (q, b) in pairs {
        if !stored.contains(q) {
            continue;
        }
        let (cache_hdr, _) = ask(&client, &envoy, b).await;
        *reword_outcomes.entry(cache_hdr.clone()).or_default() += 1;
        if cache_hdr == "hit-semantic" {
            sem.push(b.clone());
        }
    }
    eprintln!("rewordings: {reword_outcomes:?}");
    let calls_after_setup = provider_calls(&sim);

    // 3. Sequential hits.
    let (exact, exact_bad) = sequential(&client, &envoy, &stored, a.samples, "hit-exact").await;
    let (semantic, sem_bad) = if sem.is_empty() {
        (Summary::default(), 0)
    } else {
        sequential(&client, &envoy, &sem, a.samples, "hit-semantic").await
    };
    eprintln!(
        "sequential: exact p50 {:.2} ms p99 {:.2}; semantic p50 {:.2} p99 {:.2}",
        exact.p50, exact.p99, semantic.p50, semantic.p99
    );

    // 4. Concurrency.
    let stored_arc = Arc::new(stored.clone());
    let sem_arc = Arc::new(sem.clone());
    let mut conc_rows = Vec::new();
    for &c in &a.conc {
        let load = common::load_average();
        let (s, rps, bad) = concurrent(&envoy, &stored_arc, c, a.secs, "hit-exact").await;
        conc_rows.push(("exact hit", c, s, rps, bad, load));
        if !sem.is_empty() {
            let load = common::load_average();
            let (s, rps, bad) = concurrent(&envoy, &sem_arc, c, a.secs, "hit-semantic").await;
            conc_rows.push(("semantic hit", c, s, rps, bad, load));
        }
    }
    let mut wrk_rows = Vec::new();
    if have_wrk() {
        let dir = std::env::temp_dir().join(format!("tollgate-cache-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = envoy.url("");
        let mut sets = vec![("exact hit", "hit-exact", stored.clone())];
        if !sem.is_empty() {
            sets.push(("semantic hit", "hit-semantic", sem.clone()));
        }
        for (name, tag, qs) in sets {
            for c in [16usize, 64] {
                let script = wrk_script(&dir, &name.replace(' ', "_"), &qs);
                let before = envoy
                    .counter("tollgate_cache_requests_total", &[&format!("cache={tag}")])
                    .await;
                let load = common::load_average();
                let (u, s, secs) = (url.clone(), script.clone(), a.wrk_secs);
                let r = tokio::task::spawn_blocking(move || wrk(&u, &s, c, secs))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let after = envoy
                    .counter("tollgate_cache_requests_total", &[&format!("cache={tag}")])
                    .await;
                eprintln!("wrk {name} c={c}: {r:?}; {tag} counted {}", after - before);
                wrk_rows.push((name, c, r, after - before, load));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let calls_end = provider_calls(&sim);
    let envoy_rss = envoy.rss_kib().unwrap_or(0) as f64 / 1024.0;

    // Report.
    use std::fmt::Write as _;
    let mut s = String::new();
    let lat = a.latency_ms as f64;
    writeln!(
        s,
        "Simulated provider latency {} ms; Envoy 1.40, 1 worker, filter `stopOnHeaders`, cache call-out timeout {TIMEOUT_MS} ms; cache service in-process (2 tokio workers, ONNX 2 threads, embedded store) with {entries_at_start} entries at start (ready in {service_start_s:.1} s); client: reqwest, keep-alive, same machine. Load average {load_start} at start, {} at the end. Envoy RSS {envoy_rss:.0} MiB.\n",
        a.latency_ms,
        common::load_average()
    )
    .unwrap();
    writeln!(
        s,
        "| path (one client, sequential) | samples | p50 ms | p90 ms | p99 ms | max ms | provider latency / p50 | provider latency / p99 | other outcome |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    let row = |s: &mut String, name: &str, x: &Summary, bad: usize| {
        writeln!(
            s,
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}x | {:.0}x | {bad} |",
            x.n,
            x.p50,
            x.p90,
            x.p99,
            x.max,
            lat / x.p50,
            lat / x.p99
        )
        .unwrap();
    };
    row(&mut s, "provider alone (no Envoy)", &direct, 0);
    row(
        &mut s,
        "miss (to the provider)",
        &miss,
        pairs.len() - miss.n,
    );
    row(&mut s, "exact hit", &exact, exact_bad);
    row(&mut s, "semantic hit", &semantic, sem_bad);
    writeln!(
        s,
        "\nFirst asks: {first_outcomes:?}; rewordings: {reword_outcomes:?}. Provider calls through Envoy: {} during setup (misses and rewordings that missed), {} during the hit measurements.\n",
        calls_after_setup - calls_before,
        calls_end - calls_after_setup
    )
    .unwrap();
    writeln!(
        s,
        "| concurrent clients (reqwest) | clients | requests | req/s | p50 ms | p99 ms | other outcome | load avg |\n|---|---:|---:|---:|---:|---:|---:|---|"
    )
    .unwrap();
    for (name, c, x, rps, bad, load) in &conc_rows {
        writeln!(
            s,
            "| {name} | {c} | {} | {rps:.0} | {:.2} | {:.2} | {bad} | {load} |",
            x.n, x.p50, x.p99
        )
        .unwrap();
    }
    if !wrk_rows.is_empty() {
        writeln!(
            s,
            "\n| wrk -t1, {} s | connections | requests | req/s | p50 ms | p90 ms | p99 ms | errors | counted as hits by Envoy | load avg |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            a.wrk_secs
        )
        .unwrap();
        for (name, c, r, counted, load) in &wrk_rows {
            writeln!(
                s,
                "| {name} | {c} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {counted} | {load} |",
                r.requests, r.rps, r.p50_ms, r.p90_ms, r.p99_ms, r.errors
            )
            .unwrap();
        }
    }
    println!("{s}");
    println!(
        "RAW {}",
        json!({"direct": direct.json(), "miss": miss.json(), "exact": exact.json(), "semantic": semantic.json(),
               "latency_ms": a.latency_ms, "entries_at_start": entries_at_start})
    );
    drop(cache);
    if let Some(dir) = copy {
        let _ = std::fs::remove_dir_all(dir);
    }
}
