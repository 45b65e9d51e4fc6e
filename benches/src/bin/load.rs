//! Envoy with the Tollgate filter vs Envoy without it, under `wrk`, in one run on one machine.
//!
//! For each prompt size (distinct prompts, mixed prose/code/languages from the tokenizer corpus)
//! it starts a fast fixed-response upstream, then Envoy without the filter, with it (defaults) and
//! with it and `stopOnHeaders` (1 worker), measures startup (spawn -> ready and accepting) and RSS, warms up, and runs
//! `wrk` with a Lua script that cycles through pre-generated distinct bodies. Prints a Markdown
//! table and writes it to `benches/results/load.md` (an experiment does not: `LOAD_CONFIG`,
//! `LOAD_PATH` or `TOLLGATE_WASM` set).
//!
//! Each configuration runs `--repeat` times, alternating with and without the filter, and the
//! run with the median throughput is reported (the client, upstream and Envoy share 2 cores).
//!
//! Usage: load [--repeat N] [--duration SECS] [--connections N] [--sizes 2048,32768] [--workers N]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::json;
use tollgate_tests::harness::{Envoy, EnvoyOptions, workspace_root};

const RESPONSE: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"This is a short fixed answer from the benchmark upstream.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":500,"completion_tokens":12,"total_tokens":512,"prompt_tokens_details":{"cached_tokens":0}}}"#;

struct Args {
    repeat: usize,
    duration: u64,
    connections: u32,
    sizes: Vec<usize>,
    workers: u32,
    /// `--phases`: the filter is a `phase-timing` build (`benches/phases.sh`); report the time
    /// spent inside each callback and write nothing to `benches/results/`.
    phases: bool,
}

fn args() -> Args {
    let mut a = Args {
        repeat: 3,
        duration: 10,
        connections: 16,
        sizes: vec![2048, 32768],
        workers: 1,
        phases: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--repeat" => a.repeat = v.parse().expect("--repeat N"),
            "--duration" => a.duration = v.parse().expect("--duration SECS"),
            "--connections" => a.connections = v.parse().expect("--connections N"),
            "--workers" => a.workers = v.parse().expect("--workers N"),
            "--phases" => {
                a.phases = true;
                i += 1;
                continue;
            }
            "--sizes" => {
                a.sizes = v
                    .split(',')
                    .map(|s| s.parse().expect("--sizes 2048,32768"))
                    .collect()
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// Realistic text: the tokenizer test corpus (prose in many languages, code, JSON, emoji).
/// Two prompt mixes from the tokenizer corpus: `en+code` (English prose, code, JSON, Markdown:
/// typical LLM API traffic) and `multilingual` (every language, emoji, code: the hard case).
const EN_CODE: [&str; 9] = [
    "en_prose.txt",
    "code_rust.rs.txt",
    "code_python.py.txt",
    "code_js.js.txt",
    "code_go_c_sql.txt",
    "html_css.txt",
    "markdown.md",
    "json_api.json",
    "contractions.txt",
];

fn corpus(mix: &str) -> String {
    let dir = workspace_root().join("filter/bpe/tests/corpus");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.ends_with("README.md") && !p.ends_with("long_nospace.txt"))
        .filter(|p| mix != "en+code" || EN_CODE.iter().any(|n| p.ends_with(n)))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `count` distinct chat bodies of about `size` bytes.
fn bodies(corpus: &str, size: usize, count: usize) -> Vec<String> {
    let chars: Vec<char> = corpus.chars().collect();
    (0..count)
        .map(|i| {
            let start = (i * 7919) % chars.len().max(1);
            let mut text = format!("Request {i}: please review the following material.\n");
            let mut j = start;
            while text.len() < size.saturating_sub(120) {
                text.push(chars[j % chars.len()]);
                j += 1;
            }
            json!({"model": "gpt-4o-mini", "max_tokens": 64,
                   "messages": [{"role": "system", "content": "You are a reviewer."}, {"role": "user", "content": text}]})
            .to_string()
        })
        .collect()
}

fn lua_script(dir: &Path, bodies_file: &Path) -> PathBuf {
    let script = format!(
        r#"
local bodies = {{}}
for line in io.lines("{}") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-tollgate-tenant"] = "bench"
local n = 0
-- Every request is unique: a counter goes into the user turn, so no memo or cache can help.
request = function()
  i = i % #bodies + 1
  n = n + 1
  local b = bodies[i]
  local _, e = string.find(b, "Request ", 1, true)
  return wrk.format(nil, "{}", nil, string.sub(b, 1, e) .. n .. "." .. string.sub(b, e + 1))
end
"#,
        bodies_file.display(),
        std::env::var("LOAD_PATH").unwrap_or_else(|_| "/v1/chat/completions".into())
    );
    let p = dir.join("bodies.lua");
    std::fs::write(&p, script).expect("write lua");
    p
}

#[derive(Debug, Default, Clone)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
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

fn wrk(url: &str, script: &Path, connections: u32, seconds: u64) -> Wrk {
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
        .expect("run wrk (make bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut r = Wrk::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_ms(v);
        } else if t.starts_with("Non-2xx") || t.starts_with("Socket errors") {
            r.errors += t
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if std::env::var_os("LOAD_VERBOSE").is_some() {
        eprintln!("{text}");
    }
    if r.rps == 0.0 {
        panic!(
            "wrk produced no result:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    r
}

async fn upstream() -> SocketAddr {
    // Reads the whole request body (as a real provider does) so connections stay reusable.
    let app = Router::new().fallback(post(|_body: axum::body::Bytes| async {
        ([("content-type", "application/json")], RESPONSE)
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct Run {
    wrk: Wrk,
    startup: Duration,
    rss_mib: f64,
    /// Envoy's CPU time per request served (user + system).
    cpu_us_per_req: f64,
    /// `--phases`: mean µs per request inside each callback (name, µs), from the filter's log.
    phases: Vec<(String, f64)>,
}

/// Averages the `phase timing` lines of a `phase-timing` filter build's log.
fn phase_times(log: &str) -> Vec<(String, f64)> {
    let mut sums: Vec<(String, f64)> = Vec::new();
    let mut lines: f64 = 0.0;
    for line in log.lines() {
        let Some(rest) = line.split("phase timing ").nth(1) else {
            continue;
        };
        lines += 1.0;
        for field in rest.split_whitespace() {
            let Some((name, v)) = field.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<f64>() else { continue };
            match sums.iter_mut().find(|(n, _)| n == name) {
                Some((_, s)) => *s += v,
                None => sums.push((name.to_string(), v)),
            }
        }
    }
    sums.into_iter()
        .map(|(n, s)| (n, s / lines.max(1.0)))
        .collect()
}

/// `stop`: the filter's `stopOnHeaders` (and Envoy's `allow_on_headers_stop_iteration`).
async fn measure(up: SocketAddr, with_filter: bool, stop: bool, script: &Path, a: &Args) -> Run {
    let mut cfg = json!({ "stopOnHeaders": stop, "metrics": {"flushIntervalMs": 1000} });
    // LOAD_CONFIG: a JSON object merged into the plugin config (objects merged one level deep),
    // to measure what a setting costs, e.g. '{"metrics": {"accessLog": false}}'.
    if let Ok(extra) = std::env::var("LOAD_CONFIG") {
        let extra: serde_json::Value = serde_json::from_str(&extra).expect("LOAD_CONFIG: JSON");
        for (k, v) in extra.as_object().expect("LOAD_CONFIG: an object") {
            match (cfg.get_mut(k), v) {
                (Some(serde_json::Value::Object(base)), serde_json::Value::Object(add)) => {
                    base.extend(add.clone())
                }
                _ => {
                    cfg[k] = v.clone();
                }
            }
        }
    }
    let mut opts = EnvoyOptions::new(up, stop).config(cfg);
    opts.with_filter = with_filter;
    opts.concurrency = a.workers;
    opts.log_level = "warning";
    let envoy = Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let url = envoy.url("");
    let script = script.to_path_buf();
    let (conns, dur) = (a.connections, a.duration);
    let warm = tokio::task::spawn_blocking({
        let (url, script) = (url.clone(), script.clone());
        move || wrk(&url, &script, conns, 2)
    });
    let _ = warm.await;
    let cpu0 = envoy.cpu_seconds().unwrap_or(0.0);
    let result = tokio::task::spawn_blocking(move || wrk(&url, &script, conns, dur))
        .await
        .expect("wrk");
    let cpu = envoy.cpu_seconds().unwrap_or(0.0) - cpu0;
    let cpu_us_per_req = if result.rps > 0.0 {
        cpu * 1e6 / (result.rps * dur as f64)
    } else {
        0.0
    };
    let rss_mib = envoy.rss_kib().unwrap_or(0) as f64 / 1024.0;
    let startup = envoy.startup;
    let phases = if a.phases {
        tokio::time::sleep(Duration::from_millis(200)).await;
        phase_times(&envoy.log())
    } else {
        Vec::new()
    };
    envoy.stop().await;
    Run {
        wrk: result,
        startup,
        rss_mib,
        cpu_us_per_req,
        phases,
    }
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.wrk.rps.total_cmp(&b.wrk.rps));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// RSS of an Envoy with the filter after a few requests per worker, in MiB.
async fn idle_rss(up: SocketAddr, workers: u32) -> f64 {
    let mut opts = EnvoyOptions::new(up, true)
        .config(json!({"stopOnHeaders": true, "metrics": {"flushIntervalMs": 1000}}));
    opts.concurrency = workers;
    opts.log_level = "warning";
    let envoy = Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let client = tollgate_tests::harness::http_client();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there, how are you?"}]}).to_string();
    for _ in 0..(20 * workers) {
        let _ = client
            .post(envoy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss = envoy.rss_kib().unwrap_or(0) as f64 / 1024.0;
    envoy.stop().await;
    rss
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a = args();
    let up = upstream().await;
    let dir = std::env::temp_dir().join(format!("tollgate-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Envoy 1.40 ({} worker), wrk -t1 -c{} -d{}s, every prompt distinct (a counter in the user turn), fixed-response upstream; the filter with its defaults (metering, governance, metrics, access-log properties) and with `stopOnHeaders` (request headers held until the body is decided, JSON responses held so usage headers can be set); median of {} runs.\n",
        a.workers, a.connections, a.duration, a.repeat
    );
    let _ = writeln!(
        md,
        "| prompt | Envoy | req/s | p50 ms | p99 ms | errors | RSS MiB | startup ms | Envoy CPU µs/req |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut summary = String::new();
    for (mix, &size) in ["en+code", "multilingual"]
        .iter()
        .flat_map(|m| a.sizes.iter().map(move |s| (*m, s)))
    {
        let corpus = corpus(mix);
        let bodies = bodies(&corpus, size, 400);
        let file = dir.join(format!("bodies-{size}.jsonl"));
        std::fs::write(&file, bodies.join("\n")).expect("write bodies");
        let script = lua_script(&dir, &file);
        let (mut bases, mut defaults, mut stops) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.repeat.max(1) {
            bases.push(measure(up, false, false, &script, &a).await);
            defaults.push(measure(up, true, false, &script, &a).await);
            stops.push(measure(up, true, true, &script, &a).await);
        }
        let base = median(bases);
        let with = median(defaults);
        let stop = median(stops);
        for (name, r) in [
            ("no filter", &base),
            ("Tollgate, defaults", &with),
            ("Tollgate, stopOnHeaders", &stop),
        ] {
            let _ = writeln!(
                md,
                "| {} KB {mix} | {name} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {} | {:.1} |",
                size / 1024,
                r.wrk.rps,
                r.wrk.p50_ms,
                r.wrk.p99_ms,
                r.wrk.errors,
                r.rss_mib,
                r.startup.as_millis(),
                r.cpu_us_per_req
            );
        }
        for (label, w) in [("defaults", &with), ("stopOnHeaders", &stop)] {
            let _ = writeln!(
                summary,
                "- {} KB {mix}, {label}: throughput ratio **{:.0}%** (Envoy CPU per request: {:.0}% of no-filter's, +{:.1} µs), added latency p50 {:+.2} ms, p99 {:+.2} ms; RSS +{:.1} MiB; ready in {} ms with the filter",
                size / 1024,
                100.0 * w.wrk.rps / base.wrk.rps,
                100.0 * base.cpu_us_per_req / w.cpu_us_per_req.max(f64::MIN_POSITIVE),
                w.cpu_us_per_req - base.cpu_us_per_req,
                w.wrk.p50_ms - base.wrk.p50_ms,
                w.wrk.p99_ms - base.wrk.p99_ms,
                w.rss_mib - base.rss_mib,
                w.startup.as_millis()
            );
            if a.phases {
                let inside: f64 = w.phases.iter().map(|(_, v)| v).sum();
                let parts: Vec<String> = w
                    .phases
                    .iter()
                    .map(|(n, v)| format!("{n} {v:.1}"))
                    .collect();
                let _ = writeln!(
                    summary,
                    "  - inside the callbacks: {inside:.1} µs per request ({}); Envoy's work around them: {:.1} µs",
                    parts.join(", "),
                    w.cpu_us_per_req - base.cpu_us_per_req - inside
                );
            }
        }
    }
    md.push('\n');
    md.push_str(&summary);
    if !a.phases {
        let (one, three) = (idle_rss(up, 1).await, idle_rss(up, 3).await);
        let _ = writeln!(
            md,
            "- memory: Envoy+filter RSS {one:.1} MiB with 1 worker (3 VMs), {three:.1} MiB with 3 workers (5 VMs): **{:.1} MiB per additional wasm VM**; the rest is V8 and the compiled module, paid once per process",
            (three - one) / 2.0
        );
    }
    println!("{md}");
    let out = workspace_root().join("benches/results");
    let _ = std::fs::create_dir_all(&out);
    // An experiment (LOAD_CONFIG, another build of the filter) does not replace the committed
    // results.
    let experiment = ["LOAD_CONFIG", "TOLLGATE_WASM", "LOAD_PATH"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !experiment && !a.phases {
        let _ = std::fs::write(out.join("load.md"), &md);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
