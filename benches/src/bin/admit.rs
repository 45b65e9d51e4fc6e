//! Admit latency of the response cache's engine at 10k / 100k / 1M entries, with the real
//! ONNX embedder (all-MiniLM-L6-v2) and the embedded store (redb), in-process (no HTTP).
//!
//! Per size, two child processes (so memory numbers are clean):
//! 1. `--fill`: writes N synthetic entries into `<data>/<layout>-<N>/cache.redb` (skipped when
//!    the file already holds N entries). Embeddings are clustered synthetic vectors
//!    (`index::synth`), tagged with the real model's id so the engine indexes them.
//!    Layout `one`: all N in the partition the benchmark's questions use (one big ANN index);
//!    `spread`: partitions of ~1000 entries (brute force each), the questions' partition among
//!    them.
//! 2. `--measure`: loads the model, opens the store and scans it once (timed; this fills redb's
//!    page cache, so the RSS step across the engine start is the engine's own memory), starts
//!    the engine (rebuild from the store: a second scan plus the index, timed), warms real
//!    question/answer pairs (`cache-service/data/pairs`, `same: true`) with the real embedder,
//!    then runs closed-loop admits at each concurrency for `--secs`:
//!    - exact hit: a random synthetic entry's exact key (store lookup only, no embedding);
//!    - semantic miss: a short question not in the cache (exact miss, embed, ANN search, miss);
//!    - semantic hit: a rewording of a warmed question (exact miss, embed, search, guards, get).
//!
//!    Concurrent admits share the `Batcher` (window 2 ms, max batch 32): concurrency is the
//!    batch-size dimension.
//!
//! Usage: admit [--sizes 10000,100000] [--layout one|spread] [--conc 1,8,32,64] [--secs 4]
//!              [--real 150] [--data target/cache-bench] [--clean] [--window-ms 2]
//!              [--workloads exact,miss,hit]
//! Build with `--release`. Prints Markdown tables and the raw JSON of every run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../cache_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{MODEL, SYSTEM, Summary, TENANT, chat_body, paraphrase_pairs};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tollgate_cache_service::embed::{BatchConfig, Batcher, OnnxConfig, OnnxEmbedder};
use tollgate_cache_service::engine::{Engine, WarmItem};
use tollgate_cache_service::index::synth::Synth;
use tollgate_cache_service::metrics::Metrics;
use tollgate_cache_service::model::Entry;
use tollgate_cache_service::service::FileConfig;
use tollgate_cache_service::store::{EmbeddedStore, Store};
use tollgate_tests::harness::workspace_root;
use tollgate_wire::admit::{AdmitRequest, CacheOutcome, CacheQuery, CachedCompletion};
use tollgate_wire::{Api, Usage};

const DIM: usize = 384;
const SPREAD_PARTITION: usize = 1000;
const ANSWER: &str = "To do that, open the settings page, choose the account section, and follow \
the steps shown there. If the option is missing, your administrator may have disabled it; ask \
them to enable it, then sign out and back in. Changes usually take effect within a few minutes, \
and you will receive a confirmation e-mail once they have been applied to your account.";

#[derive(Clone, Debug)]
struct Args {
    sizes: Vec<usize>,
    layout: String,
    conc: Vec<usize>,
    secs: f64,
    real: usize,
    data: PathBuf,
    clean: bool,
    /// The batcher's window (default 2 ms, as the service).
    window_ms: u64,
    /// Which workloads: exact, miss, hit.
    workloads: Vec<String>,
    /// Child modes.
    fill: bool,
    measure: bool,
    n: usize,
}

fn args() -> Args {
    let mut a = Args {
        sizes: vec![10_000, 100_000],
        layout: "one".into(),
        conc: vec![1, 8, 32, 64],
        secs: 4.0,
        real: 150,
        data: workspace_root().join("target/cache-bench"),
        clean: false,
        window_ms: 2,
        workloads: vec!["exact".into(), "miss".into(), "hit".into()],
        fill: false,
        measure: false,
        n: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let list = |v: &str| -> Vec<usize> { v.split(',').map(|s| s.parse().unwrap()).collect() };
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        let mut takes = true;
        match argv[i].as_str() {
            "--sizes" => a.sizes = list(&v),
            "--layout" => {
                assert!(v == "one" || v == "spread", "--layout one|spread");
                a.layout = v;
            }
            "--conc" => a.conc = list(&v),
            "--secs" => a.secs = v.parse().unwrap(),
            "--real" => a.real = v.parse().unwrap(),
            "--data" => a.data = PathBuf::from(v),
            "--n" => a.n = v.parse().unwrap(),
            "--window-ms" => a.window_ms = v.parse().unwrap(),
            "--workloads" => a.workloads = v.split(',').map(str::to_string).collect(),
            "--clean" => {
                a.clean = true;
                takes = false;
            }
            "--fill" => {
                a.fill = true;
                takes = false;
            }
            "--measure" => {
                a.measure = true;
                takes = false;
            }
            other => panic!("unknown argument {other}"),
        }
        i += if takes { 2 } else { 1 };
    }
    a
}

fn store_dir(a: &Args, n: usize) -> PathBuf {
    a.data.join(format!("{}-{n}", a.layout))
}

// ---------------------------------------------------------------------------------------------
// Synthetic entries

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 hex digits derived from (salt, i): stands in for a SHA-256 key.
fn hex_key(salt: u64, i: u64) -> String {
    let mut s = String::with_capacity(64);
    for k in 0..4u64 {
        let v = splitmix(salt ^ splitmix(i.wrapping_mul(4).wrapping_add(k)));
        s.push_str(&format!("{v:016x}"));
    }
    s
}

const KEY_SALT: u64 = 0x6b65_7973;
const PART_SALT: u64 = 0x7061_7274;

/// The partition of the benchmark's questions (system prompt, model, temperature 0).
fn question_partition() -> String {
    tollgate_core::cachekey::keys(Api::OpenAiChat, TENANT, MODEL, &chat_body("x"))
        .unwrap()
        .partition
}

fn synthetic_entry(
    i: usize,
    n: usize,
    layout: &str,
    qpart: &str,
    model_id: &str,
    synth: &mut Synth,
) -> Entry {
    let exact_key = hex_key(KEY_SALT, i as u64);
    let partition = if layout == "one" {
        qpart.to_string()
    } else {
        let parts = (n / SPREAD_PARTITION).max(1);
        match i % parts {
            0 => qpart.to_string(),
            j => hex_key(PART_SALT, j as u64),
        }
    };
    let id = Entry::id_for(TENANT, &exact_key);
    let now = tollgate_cache_service::engine::now_secs();
    Entry {
        id,
        tenant: TENANT.into(),
        partition,
        exact_key,
        model: MODEL.into(),
        query: format!("synthetic question number {i}"),
        embedding: Some(synth.point()),
        embedding_model: model_id.into(),
        completion: CachedCompletion {
            entry_id: id.to_string(),
            model: MODEL.into(),
            text: ANSWER.into(),
            finish_reason: "stop".into(),
            usage: Usage {
                input_tokens: 25,
                output_tokens: 60,
                ..Usage::default()
            },
            cost_pico: None,
            created_at: now,
        },
        created_at: now,
        expires_at: 0,
    }
}

fn load_model() -> Arc<OnnxEmbedder> {
    Arc::new(OnnxEmbedder::load(&OnnxConfig::default()).unwrap_or_else(|e| panic!("{e}")))
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("cache.redb")).map_or(0, |m| m.len())
}

async fn child_fill(a: &Args) -> Value {
    let dir = store_dir(a, a.n);
    let path = dir.join("cache.redb");
    if path.exists() {
        let store = EmbeddedStore::open(&path).await.unwrap();
        let len = store.len().await.unwrap();
        if len == a.n as u64 {
            eprintln!(
                "[fill] {} already holds {len} entries: reused",
                path.display()
            );
            return json!({"reused": true, "fill_s": null, "file_bytes": file_bytes(&dir)});
        }
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let model_id = {
        let m = tokio::task::spawn_blocking(load_model).await.unwrap();
        tollgate_cache_service::embed::Embedder::model_id(&*m).to_string()
    };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&path).await.unwrap());
    let qpart = question_partition();
    let mut synth = Synth::new(DIM, 2048, 42);
    let sem = Arc::new(Semaphore::new(2048));
    let mut set = JoinSet::new();
    let started = Instant::now();
    let step = (a.n / 10).max(1);
    for i in 0..a.n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let e = synthetic_entry(i, a.n, &a.layout, &qpart, &model_id, &mut synth);
        let st = store.clone();
        set.spawn(async move {
            let r = st.put(&e).await;
            drop(permit);
            r
        });
        while let Some(r) = set.try_join_next() {
            r.unwrap().unwrap();
        }
        if (i + 1) % step == 0 {
            eprintln!(
                "[fill] {} / {} entries, {:.1} s, load {}",
                i + 1,
                a.n,
                started.elapsed().as_secs_f64(),
                common::load_average()
            );
        }
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    let fill_s = started.elapsed().as_secs_f64();
    drop(store);
    json!({"reused": false, "fill_s": fill_s, "puts_per_s": a.n as f64 / fill_s,
           "file_bytes": file_bytes(&dir)})
}

// ---------------------------------------------------------------------------------------------
// Measurement

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An admit request as the filter sends it for `question`.
fn request_for(question: &str) -> AdmitRequest {
    let keys = tollgate_core::cachekey::keys(Api::OpenAiChat, TENANT, MODEL, &chat_body(question))
        .unwrap();
    AdmitRequest {
        request_id: String::new(),
        tenant: TENANT.into(),
        api: Some(Api::OpenAiChat),
        model: MODEL.into(),
        stream: false,
        route: "/v1/chat/completions".into(),
        cache: Some(CacheQuery {
            exact_key: keys.exact_key,
            partition: keys.partition,
            query: keys.query,
            temperature: keys.temperature,
            has_tools: keys.has_tools,
            lookup: true,
            store: true,
            prompt_tokens: 25,
            max_tokens: None,
        }),
        ..AdmitRequest::default()
    }
}

/// The exact-hit request of synthetic entry `i` (its exact key; the rest as for any question).
fn synthetic_request(i: usize) -> AdmitRequest {
    let mut r = request_for(&format!("synthetic question number {i}"));
    if let Some(c) = r.cache.as_mut() {
        c.exact_key = hex_key(KEY_SALT, i as u64);
    }
    r
}

async fn admit_once(engine: &Engine, req: &AdmitRequest) -> CacheOutcome {
    let mut r = req.clone();
    r.request_id = format!("bench-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    engine.admit(&r).await.cache.outcome
}

/// Closed loop: `conc` callers, each admitting the next request as soon as the last returns.
async fn run_load(
    engine: &Arc<Engine>,
    batcher: &Arc<Batcher>,
    reqs: &Arc<Vec<AdmitRequest>>,
    conc: usize,
    secs: f64,
    expect: CacheOutcome,
) -> Value {
    // Warm-up (not timed): fills caches and lets the batcher reach its steady state.
    let warm = Instant::now() + Duration::from_secs_f64((secs / 8.0).min(0.5));
    let cursor = Arc::new(AtomicU64::new(0));
    let phase = |deadline: Instant| {
        let mut set = JoinSet::new();
        for _ in 0..conc {
            let (engine, reqs, cursor) = (engine.clone(), reqs.clone(), cursor.clone());
            set.spawn(async move {
                let mut lat = Vec::new();
                let mut unexpected = 0usize;
                while Instant::now() < deadline {
                    let i = cursor.fetch_add(1, Ordering::Relaxed) as usize;
                    let req = &reqs[i % reqs.len()];
                    let t0 = Instant::now();
                    let outcome = admit_once(&engine, req).await;
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                    if outcome != expect {
                        unexpected += 1;
                    }
                }
                (lat, unexpected)
            });
        }
        set
    };
    let mut w = phase(warm);
    while w.join_next().await.is_some() {}
    let before = batcher.stats();
    let started = Instant::now();
    let mut set = phase(started + Duration::from_secs_f64(secs));
    let mut lat = Vec::new();
    let mut unexpected = 0;
    while let Some(r) = set.join_next().await {
        let (l, u) = r.unwrap();
        lat.extend(l);
        unexpected += u;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = batcher.stats();
    let batches = after.batches - before.batches;
    let items = after.items - before.items;
    let s = Summary::of(&mut lat);
    json!({
        "conc": conc,
        "latency_ms": s.json(),
        "per_s": s.n as f64 / elapsed,
        "mean_batch": if batches > 0 { items as f64 / batches as f64 } else { 0.0 },
        "unexpected": unexpected,
    })
}

/// Returns freed heap memory to the OS (all glibc arenas), so RSS shows what is live. Without
/// it, the entries a scan decoded and dropped stay resident in whichever thread's arena decoded
/// them (the engine's scan runs on another blocking thread than ours).
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: `malloc_trim` only releases free memory; it takes no pointers and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn gauge(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

async fn child_measure(a: &Args) -> Value {
    let root = workspace_root();
    let dir = store_dir(a, a.n);
    let rss_start = common::rss_mib();
    let model = tokio::task::spawn_blocking(load_model).await.unwrap();
    let batch_config = BatchConfig {
        window: Duration::from_millis(a.window_ms),
        ..BatchConfig::default()
    };
    let batcher = Arc::new(Batcher::new(model, batch_config));
    batcher.embed("warm-up".into()).await.unwrap();
    let rss_model = common::rss_mib();

    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.join("cache.redb")).await.unwrap());
    let stored = store.len().await.unwrap();
    assert_eq!(
        stored, a.n as u64,
        "store holds {stored} entries, expected {}",
        a.n
    );
    // A first scan (timed): reads the file into redb's page cache (up to its 1 GiB default) as
    // the engine's own scan would, so the RSS step across `Engine::start` below is the engine's
    // memory (index, entry metadata, allocator slack), not the store's cache.
    let t = Instant::now();
    let scanned = store.scan().await.unwrap().len();
    let scan_s = t.elapsed().as_secs_f64();
    trim_heap();
    let rss_store = common::rss_mib();

    let file: FileConfig =
        serde_json::from_value(json!({"cache": {"maxEntries": 10_000_000u64}})).unwrap();
    let settings = file.cache.compile().unwrap();
    let metrics = Arc::new(Metrics::new());
    eprintln!(
        "[measure n={}] engine start (rebuild from the store)...",
        a.n
    );
    let t = Instant::now();
    let engine = Engine::start(
        settings,
        store.clone(),
        Some(batcher.clone()),
        metrics.clone(),
    )
    .await
    .unwrap();
    let rebuild_s = t.elapsed().as_secs_f64();
    let rss_engine_untrimmed = common::rss_mib();
    trim_heap();
    let rss_engine = common::rss_mib();
    let index_bytes = gauge(&metrics, "tollgate_cache_index_bytes");
    let index_entries = gauge(&metrics, "tollgate_cache_index_entries");
    eprintln!(
        "[measure n={}] rebuilt in {rebuild_s:.1} s; index {index_entries} entries, {:.0} MiB own; RSS {rss_engine:.0} MiB; load {}",
        a.n,
        index_bytes / 1048576.0,
        common::load_average()
    );

    // Real question/answer pairs: warm `a` of the first `real` pairs; their rewordings are the
    // semantic-hit candidates, the questions of the next `real` pairs the misses.
    let pairs = paraphrase_pairs(&root);
    let real = a.real.min(pairs.len() / 2);
    let t = Instant::now();
    let mut warmed = Vec::new();
    for (q, _) in &pairs[..real] {
        let id = engine
            .warm(&WarmItem {
                tenant: TENANT.into(),
                model: MODEL.into(),
                api: None,
                system: Some(SYSTEM.into()),
                question: q.clone(),
                answer: ANSWER.into(),
                ttl_seconds: Some(0),
                usage: None,
                params: Some(json!({"temperature": 0}).as_object().unwrap().clone()),
            })
            .await
            .unwrap();
        warmed.push(id);
    }
    let warm_s = t.elapsed().as_secs_f64();
    let mut hits = Vec::new();
    let mut hit_outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for (_, b) in &pairs[..real] {
        let r = request_for(b);
        let o = admit_once(&engine, &r).await;
        *hit_outcomes.entry(o.header_value()).or_default() += 1;
        if o == CacheOutcome::HitSemantic {
            hits.push(r);
        }
    }
    let mut misses = Vec::new();
    let mut miss_outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for (q, _) in &pairs[real..2 * real] {
        let r = request_for(q);
        let o = admit_once(&engine, &r).await;
        *miss_outcomes.entry(o.header_value()).or_default() += 1;
        if o == CacheOutcome::Miss {
            misses.push(r);
        }
    }
    let mean_chars = |v: &[AdmitRequest]| {
        v.iter()
            .map(|r| r.cache.as_ref().map_or(0, |c| c.query.len()))
            .sum::<usize>() as f64
            / v.len().max(1) as f64
    };
    eprintln!(
        "[measure n={}] warmed {real} pairs in {warm_s:.1} s; rewordings: {hit_outcomes:?}; other questions: {miss_outcomes:?}",
        a.n
    );
    let exact: Vec<AdmitRequest> = if a.n > 0 {
        let mut rng = tollgate_cache_service::index::synth::Rng::new(7);
        (0..4000)
            .map(|_| synthetic_request(rng.below(a.n)))
            .collect()
    } else {
        let mut v = Vec::new();
        for (q, _) in &pairs[..real] {
            let r = request_for(q);
            if admit_once(&engine, &r).await == CacheOutcome::HitExact {
                v.push(r);
            }
        }
        v
    };
    let workloads = [
        (
            "exact",
            "exact hit",
            Arc::new(exact),
            CacheOutcome::HitExact,
        ),
        (
            "miss",
            "semantic miss",
            Arc::new(misses.clone()),
            CacheOutcome::Miss,
        ),
        (
            "hit",
            "semantic hit",
            Arc::new(hits.clone()),
            CacheOutcome::HitSemantic,
        ),
    ];
    let mut runs = Vec::new();
    for (key, name, reqs, expect) in &workloads {
        if reqs.is_empty() || !a.workloads.iter().any(|w| w == key) {
            continue;
        }
        for &c in &a.conc {
            let load_before = common::load_average();
            let mut r = run_load(&engine, &batcher, reqs, c, a.secs, *expect).await;
            r["workload"] = json!(name);
            r["load"] = json!(load_before);
            eprintln!("[measure n={}] {name} c={c}: {r}", a.n);
            runs.push(r);
        }
    }
    let rss_end = common::rss_mib();
    // Leave the store as filled, so the next run (or `cache_e2e --data-dir`) can reuse it.
    store.delete(&warmed).await.unwrap();
    let n = a.n.max(1) as f64;
    json!({
        "n": a.n,
        "layout": a.layout,
        "rebuild_s": rebuild_s,
        "scan_s": scan_s,
        "scanned": scanned,
        "index_entries": index_entries,
        "index_bytes": index_bytes,
        "index_bytes_per_entry": index_bytes / n,
        "rss_start_mib": rss_start,
        "rss_model_mib": rss_model,
        "rss_store_mib": rss_store,
        "rss_engine_untrimmed_mib": rss_engine_untrimmed,
        "rss_engine_mib": rss_engine,
        "rss_engine_bytes_per_entry": (rss_engine - rss_store) * 1048576.0 / n,
        "rss_end_mib": rss_end,
        "peak_rss_mib": common::peak_rss_mib(),
        "file_bytes": file_bytes(&dir),
        "real_warmed": real,
        "warm_s": warm_s,
        "rewordings": hit_outcomes,
        "other_questions": miss_outcomes,
        "hit_query_chars": mean_chars(&hits),
        "miss_query_chars": mean_chars(&misses),
        "batch_config": format!("{batch_config:?}"),
        "runs": runs,
    })
}

// ---------------------------------------------------------------------------------------------
// Driver

fn run_child(a: &Args, n: usize, mode: &str) -> Value {
    let exe = std::env::current_exe().unwrap();
    let conc: Vec<String> = a.conc.iter().map(|c| c.to_string()).collect();
    let out = Command::new(exe)
        .args([
            mode,
            "--n",
            &n.to_string(),
            "--layout",
            &a.layout,
            "--conc",
            &conc.join(","),
            "--secs",
            &a.secs.to_string(),
            "--real",
            &a.real.to_string(),
            "--data",
            &a.data.to_string_lossy(),
            "--window-ms",
            &a.window_ms.to_string(),
            "--workloads",
            &a.workloads.join(","),
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{mode} n={n} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result from {mode} n={n}:\n{text}"));
    serde_json::from_str(line).unwrap()
}

fn fmt_n(n: usize) -> String {
    match n {
        0 => "0".into(),
        n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn per_entry(n: usize, v: f64) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{v:.0}")
    }
}

fn report(a: &Args, results: &[(usize, Value, Value)]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    writeln!(
        s,
        "\n### Setup and memory (layout `{}`)\n\n| entries | fill s (puts/s) | store file MiB | scan alone s | engine start (scan + index) s | index entries | index own B/entry | RSS after model load MiB | RSS after scan (redb cache) MiB | RSS after engine start MiB (before heap trim) | engine RSS B/entry | peak RSS MiB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        a.layout
    )
    .unwrap();
    for (n, fill, m) in results {
        let fill_txt = if fill["reused"] == json!(true) {
            "reused".to_string()
        } else {
            format!("{:.1} ({:.0})", f(&fill["fill_s"]), f(&fill["puts_per_s"]))
        };
        writeln!(
            s,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {} | {:.0} | {:.0} | {:.0} ({:.0}) | {} | {:.0} |",
            fmt_n(*n),
            fill_txt,
            f(&m["file_bytes"]) / 1048576.0,
            f(&m["scan_s"]),
            f(&m["rebuild_s"]),
            f(&m["index_entries"]),
            per_entry(*n, f(&m["index_bytes_per_entry"])),
            f(&m["rss_model_mib"]),
            f(&m["rss_store_mib"]),
            f(&m["rss_engine_mib"]),
            f(&m["rss_engine_untrimmed_mib"]),
            per_entry(*n, f(&m["rss_engine_bytes_per_entry"])),
            f(&m["peak_rss_mib"]),
        )
        .unwrap();
    }
    writeln!(
        s,
        "\n### Admit latency (in-process `Engine::admit`, closed loop, {} s per row, batcher window {} ms, max batch 32)\n\n| entries | workload | concurrency | admits | p50 ms | p90 ms | p99 ms | max ms | admits/s | mean embed batch | unexpected outcome | load avg |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        a.secs, a.window_ms
    )
    .unwrap();
    for (n, _, m) in results {
        for r in m["runs"].as_array().into_iter().flatten() {
            let l = &r["latency_ms"];
            writeln!(
                s,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {} | {} |",
                fmt_n(*n),
                r["workload"].as_str().unwrap_or(""),
                r["conc"],
                l["n"],
                f(&l["p50"]),
                f(&l["p90"]),
                f(&l["p99"]),
                f(&l["max"]),
                f(&r["per_s"]),
                f(&r["mean_batch"]),
                r["unexpected"],
                r["load"].as_str().unwrap_or(""),
            )
            .unwrap();
        }
    }
    writeln!(s, "\nQueries and outcomes of the calibration pass:").unwrap();
    for (n, _, m) in results {
        writeln!(
            s,
            "- {}: {} pairs warmed; rewordings {} (mean {:.0} chars); other questions {} (mean {:.0} chars)",
            fmt_n(*n),
            m["real_warmed"],
            m["rewordings"],
            f(&m["hit_query_chars"]),
            m["other_questions"],
            f(&m["miss_query_chars"]),
        )
        .unwrap();
    }
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    if a.fill || a.measure {
        let r = if a.fill {
            child_fill(&a).await
        } else {
            child_measure(&a).await
        };
        println!("RESULT {r}");
        return;
    }
    eprintln!(
        "admit bench: load average {} at start",
        common::load_average()
    );
    let mut results = Vec::new();
    for &n in &a.sizes {
        let fill = run_child(&a, n, "--fill");
        let m = run_child(&a, n, "--measure");
        println!("RAW {}", json!({"n": n, "fill": fill, "measure": m}));
        if a.clean {
            let _ = std::fs::remove_dir_all(store_dir(&a, n));
        }
        results.push((n, fill, m));
    }
    eprintln!(
        "admit bench: load average {} at the end",
        common::load_average()
    );
    println!("{}", report(&a, &results));
}
