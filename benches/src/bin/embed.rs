//! Sentence-embedding cost of the semantic cache: all-MiniLM-L6-v2 (int8 ONNX) on ONNX Runtime
//! 1.31 (CPU), through `tollgate_cache_service::embed`.
//!
//! For each ONNX Runtime configuration (the default: no thread spinning, memory arena on; with
//! spinning; without the arena), a fresh child process measures RSS before/after loading and
//! after the batches, load time, the latency of one short query (batch of 1), and throughput at
//! batch sizes 1, 4, 16, 64 for short (~12 token) and medium (~60 token) texts. Then the async
//! `Batcher` (max_batch 32; window 2 ms and 0) is measured in this process: one caller at a time,
//! and N concurrent closed-loop callers. Every measurement runs `--repeat` times; medians are
//! reported, runs of different configurations interleaved.
//!
//! Prints a Markdown report and writes it to `benches/results/embed.md`.
//! Needs `make setup` (model and ONNX Runtime in `.cache/`).
//!
//! Usage: embed [--threads 2] [--repeat 3] [--secs 1.5] [--out PATH]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_cache_service::embed::{
    BatchConfig, Batcher, Embedder, OnnxConfig, OnnxEmbedder, SharedEmbedder,
};

struct Args {
    threads: usize,
    repeat: usize,
    secs: f64,
    out: PathBuf,
    child: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        threads: 2,
        repeat: 3,
        secs: 1.5,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results/embed.md")),
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--threads" => a.threads = val.parse().unwrap(),
            "--repeat" => a.repeat = val.parse().unwrap(),
            "--secs" => a.secs = val.parse().unwrap(),
            "--out" => a.out = PathBuf::from(val),
            "--child" => a.child = Some(val),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// (name, description, allow_spinning, memory_arena)
const CONFIGS: &[(&str, &str, bool, bool)] = &[
    ("default", "default (no spinning, arena)", false, true),
    ("spinning", "thread spinning on", true, true),
    ("no-arena", "memory arena off", false, false),
];
const BATCHES: [usize; 4] = [1, 4, 16, 64];

fn rss_mib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// CPU seconds (user + system, all threads) this process has used.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(14) + ticks(15)) / 100.0 // USER_HZ is 100 on Linux
}

const SUBJECTS: &[&str] = &[
    "France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "Chile", "Egypt", "India", "Peru",
];

/// ~12 tokens with [CLS]/[SEP]; distinct per i.
fn short(i: usize) -> String {
    format!(
        "What is the capital city of {} in year {}?",
        SUBJECTS[i % SUBJECTS.len()],
        1900 + i % 120
    )
}

/// ~55-60 tokens; distinct per i.
fn medium(i: usize) -> String {
    format!(
        "I run a small online shop in {} and customers keep asking about delivery times for order \
         {}. Can you write a short, friendly reply that explains shipping takes three to five \
         business days, offers a tracking link, and apologises for any delay?",
        SUBJECTS[i % SUBJECTS.len()],
        1000 + i
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// (texts per second, CPU ms per text) at a batch size, running for about `secs`.
fn throughput(m: &dyn Embedder, batch: usize, make: fn(usize) -> String, secs: f64) -> (f64, f64) {
    let texts: Vec<String> = (0..batch * 16).map(make).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    m.embed_batch(&refs[..batch]).unwrap(); // warm-up
    let (start, cpu0) = (Instant::now(), cpu_secs());
    let (mut done, mut k) = (0usize, 0usize);
    while start.elapsed().as_secs_f64() < secs {
        let at = (k % 16) * batch;
        m.embed_batch(&refs[at..at + batch]).unwrap();
        done += batch;
        k += 1;
    }
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_secs() - cpu0);
    (done as f64 / wall, cpu * 1e3 / done as f64)
}

/// One configuration, in this (fresh) process; prints one JSON line.
fn child(name: &str, threads: usize, secs: f64) {
    let &(_, _, allow_spinning, memory_arena) = CONFIGS.iter().find(|c| c.0 == name).unwrap();
    let rss_before = rss_mib("VmRSS:");
    let start = Instant::now();
    let m = OnnxEmbedder::load(&OnnxConfig {
        intra_threads: threads,
        allow_spinning,
        memory_arena,
        ..OnnxConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}\n(run `make setup` to fetch the model and ONNX Runtime)"));
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let rss_loaded = rss_mib("VmRSS:");

    for i in 0..20 {
        m.embed_batch(&[&short(i)]).unwrap();
    }
    let cpu0 = cpu_secs();
    let mut lat: Vec<f64> = (0..300)
        .map(|i| {
            let t = short(100 + i);
            let start = Instant::now();
            m.embed_batch(&[&t]).unwrap();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let lat_cpu_ms = (cpu_secs() - cpu0) * 1e3 / lat.len() as f64;
    lat.sort_by(f64::total_cmp);

    let mut tput = serde_json::Map::new();
    let mut tput_cpu = serde_json::Map::new();
    for (kind, make) in [
        ("short", short as fn(usize) -> String),
        ("medium", medium as fn(usize) -> String),
    ] {
        for b in BATCHES {
            let (per_sec, cpu_ms) = throughput(&m, b, make, secs);
            tput.insert(format!("{kind}/{b}"), json!(per_sec));
            tput_cpu.insert(format!("{kind}/{b}"), json!(cpu_ms));
        }
    }
    let out = json!({
        "model_id": m.model_id(),
        "short_tokens": m.token_ids(&short(7)).unwrap().len(),
        "medium_tokens": m.token_ids(&medium(7)).unwrap().len(),
        "rss_before": rss_before,
        "rss_loaded": rss_loaded,
        "rss_after": rss_mib("VmRSS:"),
        "rss_peak": rss_mib("VmHWM:"),
        "load_ms": load_ms,
        "p50": percentile(&lat, 0.5),
        "p90": percentile(&lat, 0.9),
        "p99": percentile(&lat, 0.99),
        "mean": lat.iter().sum::<f64>() / lat.len() as f64,
        "cpu_ms": lat_cpu_ms,
        "tput": tput,
        "tput_cpu": tput_cpu,
    });
    println!("{out}");
}

struct Concurrent {
    per_sec: f64,
    cpu_ms: f64,
    p50: f64,
    p99: f64,
    mean_batch: f64,
}

/// `callers` closed-loop tasks embedding short texts through a fresh Batcher for `secs`.
async fn concurrent(
    model: SharedEmbedder,
    cfg: BatchConfig,
    callers: usize,
    secs: f64,
) -> Concurrent {
    let batcher = Arc::new(Batcher::new(model, cfg));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (start, cpu0) = (Instant::now(), cpu_secs());
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let b = batcher.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    b.embed(short(c * 100_000 + i)).await.unwrap();
                    lat.push(start.elapsed().as_secs_f64() * 1e3);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_ms = (cpu_secs() - cpu0) * 1e3 / lat.len() as f64;
    lat.sort_by(f64::total_cmp);
    Concurrent {
        per_sec: lat.len() as f64 / elapsed,
        cpu_ms,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        mean_batch: batcher.stats().mean_batch_size(),
    }
}

fn main() {
    let a = args();
    if let Some(name) = &a.child {
        child(name, a.threads, a.secs);
        return;
    }
    let load_avg = |s: String| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let load_start = load_avg(std::fs::read_to_string("/proc/loadavg").unwrap_or_default());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown CPU".to_string(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    // Per-configuration children, interleaved.
    let exe = std::env::current_exe().unwrap();
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); CONFIGS.len()];
    for r in 0..a.repeat {
        for (i, (name, ..)) in CONFIGS.iter().enumerate() {
            let out = Command::new(&exe)
                .args(["--child", name, "--threads", &a.threads.to_string()])
                .args(["--secs", &a.secs.to_string()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "child {name} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            eprintln!(
                "run {r} {name}: p50 {:.2} ms, short/16 {:.0}/s",
                v["p50"], v["tput"]["short/16"]
            );
            runs[i].push(v);
        }
    }
    let med = |i: usize, f: &dyn Fn(&Value) -> f64| median(runs[i].iter().map(f).collect());
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap();

    // Batcher, default configuration, in this process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let model: SharedEmbedder = Arc::new(
        OnnxEmbedder::load(&OnnxConfig {
            intra_threads: a.threads,
            ..OnnxConfig::default()
        })
        .unwrap(),
    );
    let windows = [Duration::from_millis(2), Duration::ZERO];
    let cfg_for = |window| BatchConfig {
        window,
        ..BatchConfig::default()
    };
    let mut one_caller = Vec::new();
    for window in windows {
        let per_run: Vec<f64> = (0..a.repeat)
            .map(|_| {
                rt.block_on(async {
                    let b = Batcher::new(model.clone(), cfg_for(window));
                    for i in 0..20 {
                        b.embed(short(i)).await.unwrap();
                    }
                    let mut ms = Vec::new();
                    for i in 0..200 {
                        let start = Instant::now();
                        b.embed(short(5000 + i)).await.unwrap();
                        ms.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    median(ms)
                })
            })
            .collect();
        one_caller.push(median(per_run));
    }
    let mut conc_rows = Vec::new();
    for callers in [8usize, 32, 128] {
        for window in windows {
            let mut rs: Vec<Concurrent> = (0..a.repeat)
                .map(|_| rt.block_on(concurrent(model.clone(), cfg_for(window), callers, a.secs)))
                .collect();
            rs.sort_by(|x, y| x.per_sec.total_cmp(&y.per_sec));
            let m = rs.swap_remove(rs.len() / 2);
            eprintln!("window {window:?}, {callers} callers: {:.0}/s", m.per_sec);
            conc_rows.push((window, callers, m));
        }
    }
    let load_end = load_avg(std::fs::read_to_string("/proc/loadavg").unwrap_or_default());

    let first = &runs[0][0];
    let (short_tokens, medium_tokens) = (num(first, "short_tokens"), num(first, "medium_tokens"));
    let mut md = String::new();
    writeln!(
        md,
        "# Embedding benchmark (`benches/src/bin/embed.rs`)\n\n\
         Model `{}` (all-MiniLM-L6-v2, int8 ONNX, 384-d), ONNX Runtime 1.31.1 CPU (the PyPI \
         wheel's library), {} intra-op threads; {cpu}, {cores} cores. Each configuration runs in \
         a fresh process, {} times, interleaved; medians reported. Throughput runs last {} s. \
         Load average {load_start} at start, {load_end} at the end: **the machine is shared with \
         other agents compiling**, so absolute numbers are noisy and pessimistic; compare rows \
         within a table rather than with other machines.\n",
        first["model_id"].as_str().unwrap(),
        a.threads,
        a.repeat,
        a.secs,
    )
    .unwrap();
    writeln!(
        md,
        "## Memory and load time\n\n| configuration | RSS before load MiB | after load MiB | \
         after all batches MiB | peak MiB | load ms |\n|---|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for (i, (_, desc, ..)) in CONFIGS.iter().enumerate() {
        writeln!(
            md,
            "| {desc} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            med(i, &|v| num(v, "rss_before")),
            med(i, &|v| num(v, "rss_loaded")),
            med(i, &|v| num(v, "rss_after")),
            med(i, &|v| num(v, "rss_peak")),
            med(i, &|v| num(v, "load_ms")),
        )
        .unwrap();
    }
    writeln!(
        md,
        "\n## One short query ({short_tokens} tokens), batch of 1, 300 queries\n\n\
         | configuration | p50 ms | p90 ms | p99 ms | mean ms | CPU ms per query |\n\
         |---|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for (i, (_, desc, ..)) in CONFIGS.iter().enumerate() {
        writeln!(
            md,
            "| {desc} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            med(i, &|v| num(v, "p50")),
            med(i, &|v| num(v, "p90")),
            med(i, &|v| num(v, "p99")),
            med(i, &|v| num(v, "mean")),
            med(i, &|v| num(v, "cpu_ms")),
        )
        .unwrap();
    }
    write!(
        md,
        "\n## Throughput by batch size\n\n\
         Texts per second (wall clock) and, in brackets, CPU ms per text (all threads; less \
         sensitive to the other load on the machine).\n\n\
         | texts | tokens | batch | ms per batch (default) |"
    )
    .unwrap();
    for (_, desc, ..) in CONFIGS {
        write!(md, " {desc} |").unwrap();
    }
    writeln!(
        md,
        "\n|---|---:|---:|---:|{}",
        "---:|".repeat(CONFIGS.len())
    )
    .unwrap();
    for (kind, toks) in [("short", short_tokens), ("medium", medium_tokens)] {
        for b in BATCHES {
            let key = format!("{kind}/{b}");
            let per_sec: Vec<f64> = (0..CONFIGS.len())
                .map(|i| med(i, &|v| v["tput"][&key].as_f64().unwrap()))
                .collect();
            let cpu: Vec<f64> = (0..CONFIGS.len())
                .map(|i| med(i, &|v| v["tput_cpu"][&key].as_f64().unwrap()))
                .collect();
            write!(
                md,
                "| {kind} | {toks} | {b} | {:.1} |",
                b as f64 / per_sec[0] * 1e3
            )
            .unwrap();
            for (p, c) in per_sec.iter().zip(&cpu) {
                write!(md, " {p:.0} ({c:.2}) |").unwrap();
            }
            writeln!(md).unwrap();
        }
    }
    writeln!(
        md,
        "\n## Through the async Batcher (default configuration, max_batch 32), short texts\n\n\
         One caller at a time, median ms per query: window 2 ms: {:.2} (the window is waited \
         out: nothing else arrives to fill the batch); window 0: {:.2}.\n\n\
         Closed-loop concurrent callers ({} s each):\n\n\
         | callers | window | texts/s | CPU ms per text | p50 ms | p99 ms | mean batch |\n\
         |---:|---:|---:|---:|---:|---:|---:|",
        one_caller[0], one_caller[1], a.secs
    )
    .unwrap();
    for (window, callers, m) in &conc_rows {
        writeln!(
            md,
            "| {callers} | {} ms | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
            window.as_millis(),
            m.per_sec,
            m.cpu_ms,
            m.p50,
            m.p99,
            m.mean_batch
        )
        .unwrap();
    }
    print!("{md}");
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&a.out, md).unwrap();
    eprintln!("wrote {}", a.out.display());
}
