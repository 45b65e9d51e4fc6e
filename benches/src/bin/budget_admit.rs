//! Latency of the budget check on admit (`Budgets::admit`) and of admit + settle, in-process (no
//! HTTP), for both backends: the embedded store (redb in a temporary directory) and Redis (a
//! throwaway `redis-server` on loopback, append-only file on).
//!
//! Per number of scopes N: N team budgets (`team:t<i>`, daily, 1M USD), one org budget
//! (`org:acme`, daily, 9M USD) and one per-user budget (`user:*`, daily, 1M USD), so every
//! request reserves in 3 windows and none is rejected. Requests pick a team uniformly from the N
//! and one of its 4 users (4N user windows), org `acme`, no API key. Wall-clock `now_ms`, default
//! `BudgetOptions` (definitions cached 1 s, then refreshed by one task: a version check, and a
//! full read only if they changed or every 60 s), and the service's
//! sweeper every 5 s, as in the service.
//!
//! Workloads, on the default multi-thread tokio runtime (one worker per core):
//! - `admit` (closed loop, c tasks): admits only. The reservations are settled after the timed
//!   window (untimed), so active reservations stay few, as in the service.
//! - `admit+settle` (closed loop, c tasks): admit, then settle the reservation at a smaller actual
//!   cost (what every request does; settle is the durable step: an fsync in the embedded store).
//! - `open R/s`: a request every 1/R s (tokio interval), each a task doing admit then settle;
//!   latency from the moment the generator issues the request.
//!
//! After every run one admit + settle (the settle is durable and queued behind everything else)
//! waits until the embedded writer has caught up, so one run's backlog does not land in the next.
//! Admits slower than 20 ms are listed per run with the number of admits the store had seen
//! before them.
//! Every decision is checked: `Allow` with a reservation id, settle `Reservation` (or
//! `Duplicate` after the Redis store's retry of a timed-out call: counted). Store errors
//! (timeouts) are counted per run and left out of the latencies.
//!
//! Usage: budget_admit [--scopes 10,1000,10000] [--backends embedded,redis] [--conc 1,16]
//!                     [--rate 500] [--secs 5] [--runs 3] [--warmup-secs 1]
//!                     [--defs-refresh-ms 1000]
//! (`--rate 0`: no open-loop rows; `--defs-refresh-ms`: how long definitions are cached, the
//! service's default 1000 unless given.) Build with `--release`. Prints every run to stderr, then
//! Markdown tables of the median run to stdout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tollgate_cache_service::budget::{
    BudgetConfig, BudgetDef, BudgetError, BudgetOptions, Budgets, Charge, Period, ScopeKind,
    SettleOutcome, now_ms, spawn_sweeper,
};
use tollgate_tests::redis::RedisServer;
use tollgate_wire::admit::{BudgetQuery, BudgetVerdict, Identity};

const USERS_PER_TEAM: u64 = 4;
/// Admits slower than this are listed with the number of admits the store had seen before them
/// (to relate stalls to the store's size).
const STALL: Duration = Duration::from_millis(20);

/// Admits since the store was opened (reset per store).
static ADMITS: AtomicU64 = AtomicU64::new(0);
/// (admits before, latency) of the admits slower than [`STALL`] since the last run.
static STALLS: Mutex<Vec<(u64, Duration)>> = Mutex::new(Vec::new());
/// Settles of a fresh reservation that reported `Duplicate` (since the last run).
static DUPLICATES: AtomicU64 = AtomicU64::new(0);
const QUERY: BudgetQuery = BudgetQuery {
    input_tokens: 500,
    max_output_tokens: 1000,
    // 0.01 USD
    max_cost_pico: Some(10_000_000_000),
};
const CHARGE: Charge = Charge {
    cost_pico: 4_000_000_000,
    input_tokens: 500,
    output_tokens: 300,
};

#[derive(Clone, Debug)]
struct Args {
    scopes: Vec<usize>,
    backends: Vec<String>,
    conc: Vec<usize>,
    rate: f64,
    secs: f64,
    runs: usize,
    warmup_secs: f64,
    /// `BudgetOptions::defs_refresh_ms` (the service's default unless given).
    defs_refresh_ms: u64,
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.trim().parse().ok().expect("bad list value"))
        .collect()
}

fn args() -> Args {
    let mut a = Args {
        scopes: vec![10, 1000, 10_000],
        backends: vec!["embedded".into(), "redis".into()],
        conc: vec![1, 16],
        rate: 500.0,
        secs: 5.0,
        runs: 3,
        warmup_secs: 1.0,
        defs_refresh_ms: BudgetOptions::default().defs_refresh_ms,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let v = it.next().map(String::as_str).unwrap_or_default();
        match k.as_str() {
            "--scopes" => a.scopes = list(v),
            "--backends" => a.backends = list(v),
            "--conc" => a.conc = list(v),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--secs" => a.secs = v.parse().expect("--secs"),
            "--runs" => a.runs = v.parse().expect("--runs"),
            "--warmup-secs" => a.warmup_secs = v.parse().expect("--warmup-secs"),
            "--defs-refresh-ms" => a.defs_refresh_ms = v.parse().expect("--defs-refresh-ms"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

fn def(id: String, scope: ScopeKind, target: String, usd: f64) -> BudgetDef {
    BudgetDef {
        id,
        scope,
        target,
        period: Period::Day,
        reset_hour_utc: None,
        reset_day_of_month: None,
        limit_usd: Some(usd),
        limit_input_tokens: None,
        limit_output_tokens: None,
        limit_tokens: None,
        soft_fraction: None,
        downgrade_to: None,
    }
}

fn org_def() -> BudgetDef {
    def(
        "org-daily".into(),
        ScopeKind::Org,
        "acme".into(),
        9_000_000.0,
    )
}

/// Org + `user:*` + `scopes` team budgets (puts 64 at a time: each is a durable write).
async fn define(b: &Arc<Budgets>, scopes: usize) -> Duration {
    let t = Instant::now();
    let mut defs = vec![
        org_def(),
        def(
            "user-daily".into(),
            ScopeKind::User,
            "*".into(),
            1_000_000.0,
        ),
    ];
    defs.extend((0..scopes).map(|i| {
        def(
            format!("team-{i}-daily"),
            ScopeKind::Team,
            format!("t{i}"),
            1_000_000.0,
        )
    }));
    let mut set = JoinSet::new();
    for d in defs {
        if set.len() >= 64 {
            set.join_next().await.unwrap().unwrap();
        }
        let b = b.clone();
        set.spawn(async move { b.put(d).await.unwrap() });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    assert_eq!(b.list().await.unwrap().len(), scopes + 2);
    t.elapsed()
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniformly chosen team and one of its users.
    fn identity(&mut self, scopes: usize) -> Identity {
        let r = self.next();
        let team = (r >> 8) % scopes as u64;
        let user = r % USERS_PER_TEAM;
        Identity {
            org: "acme".into(),
            team: format!("t{team}"),
            user: Some(format!("t{team}-u{user}")),
            key: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Closed loop, c tasks, admits only.
    Admit(usize),
    /// Closed loop, c tasks, admit then settle.
    AdmitSettle(usize),
    /// Open loop at R requests/s, admit then settle.
    Open(f64),
}

impl Mode {
    fn conc(self) -> String {
        match self {
            Mode::Admit(c) | Mode::AdmitSettle(c) => c.to_string(),
            Mode::Open(r) => format!("open {r:.0}/s"),
        }
    }

    fn workload(self) -> &'static str {
        match self {
            Mode::Admit(_) => "admit",
            Mode::AdmitSettle(_) | Mode::Open(_) => "admit+settle",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Pct {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

fn pct(mut d: Vec<Duration>) -> Pct {
    if d.is_empty() {
        return Pct::default();
    }
    d.sort_unstable();
    let n = d.len();
    let at = |q: f64| d[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
    Pct {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: d[n - 1],
    }
}

#[derive(Clone, Debug)]
struct Run {
    backend: String,
    scopes: usize,
    mode: Mode,
    run: usize,
    ops: usize,
    /// Requests that failed with a store error (not in the latencies).
    errors: usize,
    per_s: f64,
    admit: Pct,
    settle: Pct,
    pair: Pct,
    /// Time the writer needed to catch up after the run (embedded; a Redis round trip).
    drain: Duration,
    stalls: Vec<(u64, Duration)>,
    duplicates: u64,
    /// Definitions refreshes during the run: full reads, version-only checks.
    defs_reads: (u64, u64),
    load_start: f64,
    load_end: f64,
}

impl Run {
    /// The figure the median run is chosen by.
    fn key(&self) -> Duration {
        match self.mode {
            Mode::Admit(_) | Mode::Open(_) => self.admit.p99,
            Mode::AdmitSettle(_) => self.pair.p99,
        }
    }
}

/// Admit, settle and admit+settle latencies of the successful requests, and the number of
/// requests that failed with a store error.
type Samples = (Vec<Duration>, Vec<Duration>, Vec<Duration>, usize);

type Timed = (Duration, Option<(Duration, Duration)>, String);

/// One request: admit (and settle). A store error is returned (and counted by the caller);
/// any other outcome than a reservation that settles is a bug in the benchmark, except
/// `Duplicate`: the Redis store retries a timed-out call once, and when the first try had
/// settled, the retry reports a duplicate (counted in [`DUPLICATES`]).
async fn admit_settle(
    b: &Budgets,
    identity: &Identity,
    request_id: &str,
    settle: bool,
    t0: Instant,
) -> Result<Timed, BudgetError> {
    let d = b.admit(identity, &QUERY, now_ms()).await?;
    let t1 = Instant::now();
    let before = ADMITS.fetch_add(1, Ordering::Relaxed);
    if t1 - t0 > STALL {
        STALLS.lock().unwrap().push((before, t1 - t0));
    }
    assert_eq!(d.verdict, BudgetVerdict::Allow, "{d:?}");
    let rid = d.reservation_id.expect("a reservation");
    if !settle {
        return Ok((t1 - t0, None, rid));
    }
    let s = b
        .settle(Some(&rid), request_id, identity, CHARGE, now_ms())
        .await?;
    let t2 = Instant::now();
    check_settled(s);
    Ok((t1 - t0, Some((t2 - t1, t2 - t0)), rid))
}

fn check_settled(s: SettleOutcome) {
    match s {
        SettleOutcome::Reservation => {}
        SettleOutcome::Duplicate => {
            DUPLICATES.fetch_add(1, Ordering::Relaxed);
        }
        other => panic!("settle: {other:?}"),
    }
}

/// Settles what an `admit` run reserved (untimed), 256 at a time.
async fn settle_all(b: &Arc<Budgets>, open: Vec<(String, Identity)>) {
    let sem = Arc::new(Semaphore::new(256));
    let mut set = JoinSet::new();
    for (i, (rid, identity)) in open.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let b = b.clone();
        set.spawn(async move {
            // Store errors (timeouts) are counted by the runs; here they are ignored.
            let s = b
                .settle(
                    Some(&rid),
                    &format!("cleanup-{i}"),
                    &identity,
                    CHARGE,
                    now_ms(),
                )
                .await;
            if let Ok(s) = s {
                check_settled(s);
            }
            drop(permit);
        });
        while set.try_join_next().is_some() {}
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

async fn closed(
    b: &Arc<Budgets>,
    scopes: usize,
    conc: usize,
    settle: bool,
    secs: f64,
    seed: u64,
) -> (f64, Samples) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut set = JoinSet::new();
    for task in 0..conc as u64 {
        let b = b.clone();
        set.spawn(async move {
            let mut rng = Rng::new(seed.wrapping_mul(1000).wrapping_add(task));
            let (mut admit, mut settled, mut pair) = (Vec::new(), Vec::new(), Vec::new());
            let mut open = Vec::new();
            let (mut n, mut errors) = (0u64, 0usize);
            while Instant::now() < deadline {
                let identity = rng.identity(scopes);
                let request_id = format!("bench-{seed}-{task}-{n}");
                n += 1;
                let Ok((a, s, rid)) =
                    admit_settle(&b, &identity, &request_id, settle, Instant::now()).await
                else {
                    errors += 1;
                    continue;
                };
                admit.push(a);
                match s {
                    Some((s, p)) => {
                        settled.push(s);
                        pair.push(p);
                    }
                    None => open.push((rid, identity)),
                }
            }
            ((admit, settled, pair, errors), open)
        });
    }
    let (mut admit, mut settled, mut pair) = (Vec::new(), Vec::new(), Vec::new());
    let (mut open, mut errors) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        let ((a, s, p, e), o) = r.unwrap();
        admit.extend(a);
        settled.extend(s);
        pair.extend(p);
        open.extend(o);
        errors += e;
    }
    let per_s = admit.len() as f64 / start.elapsed().as_secs_f64();
    settle_all(b, open).await;
    (per_s, (admit, settled, pair, errors))
}

async fn open_loop(
    b: &Arc<Budgets>,
    scopes: usize,
    rate: f64,
    secs: f64,
    seed: u64,
) -> (f64, Samples) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut rng = Rng::new(seed);
    let mut set = JoinSet::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        let identity = rng.identity(scopes);
        let request_id = format!("bench-open-{seed}-{n}");
        n += 1;
        let b = b.clone();
        let t0 = Instant::now();
        set.spawn(async move { admit_settle(&b, &identity, &request_id, true, t0).await });
    }
    let (mut admit, mut settled, mut pair) = (Vec::new(), Vec::new(), Vec::new());
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        let Ok((a, s, _)) = r.unwrap() else {
            errors += 1;
            continue;
        };
        let (s, p) = s.unwrap();
        admit.push(a);
        settled.push(s);
        pair.push(p);
    }
    // Per second of the whole run, including waiting for the last requests.
    let per_s = admit.len() as f64 / start.elapsed().as_secs_f64();
    (per_s, (admit, settled, pair, errors))
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn p4(p: &Pct) -> String {
    format!("{}/{}/{}/{}", ms(p.p50), ms(p.p99), ms(p.p999), ms(p.max))
}

fn print_run(r: &Run) {
    eprintln!(
        "  run {} {} N={} c={} {}: {} ops, {} errors, {:.0}/s; admit {}; settle {}; pair {} \
         (ms p50/p99/p999/max); drain {} ms; load {:.2}->{:.2}; {} duplicate settles; \
         definitions read {} times in full, version checked {} times; {} admits > {} ms{}",
        r.run,
        r.backend,
        r.scopes,
        r.mode.conc(),
        r.mode.workload(),
        r.ops,
        r.errors,
        r.per_s,
        p4(&r.admit),
        p4(&r.settle),
        p4(&r.pair),
        ms(r.drain),
        r.load_start,
        r.load_end,
        r.duplicates,
        r.defs_reads.0,
        r.defs_reads.1,
        r.stalls.len(),
        STALL.as_millis(),
        if r.stalls.is_empty() {
            String::new()
        } else {
            let mut worst = r.stalls.clone();
            worst.sort_by_key(|&(_, d)| std::cmp::Reverse(d));
            let list: Vec<String> = worst
                .iter()
                .take(5)
                .map(|(n, d)| format!("{} ms after {n}", ms(*d)))
                .collect();
            format!(", worst: {}", list.join("; "))
        },
    );
}

async fn bench_backend(backend: &str, a: &Args, runs: &mut Vec<Run>, setup: &mut Vec<String>) {
    let redis = (backend == "redis").then(|| RedisServer::start().expect("redis-server"));
    let mut modes: Vec<Mode> = Vec::new();
    for &c in &a.conc {
        modes.push(Mode::Admit(c));
        modes.push(Mode::AdmitSettle(c));
    }
    if a.rate > 0.0 {
        modes.push(Mode::Open(a.rate));
    }
    for &scopes in &a.scopes {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-budget-bench-{}-{scopes}",
            std::process::id()
        ));
        let config = match &redis {
            Some(r) => BudgetConfig::Redis {
                url: r.url(),
                namespace: format!("bench-{scopes}"),
            },
            None => BudgetConfig::Embedded {
                path: dir.join("budgets.redb"),
            },
        };
        let opts = BudgetOptions {
            defs_refresh_ms: a.defs_refresh_ms,
            ..BudgetOptions::default()
        };
        let b = Arc::new(Budgets::open_with(&config, opts).await.unwrap());
        ADMITS.store(0, Ordering::Relaxed);
        let put = define(&b, scopes).await;
        // What a definitions refresh reads (once a second per replica): list + parse + sort.
        let mut reads = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            b.list().await.unwrap();
            reads.push(t.elapsed());
        }
        let read = pct(reads).p50;
        let sweeper = spawn_sweeper(b.clone(), Duration::from_secs(5));
        let t = Instant::now();
        let (_, (warm, ..)) = closed(&b, scopes, 16, true, a.warmup_secs, u64::MAX).await;
        let line = format!(
            "{backend} N={scopes}: {} definitions put in {:.2} s; reading them all (`list`) {} ms (median of 7); warm-up {} admit+settle in {:.2} s",
            scopes + 2,
            put.as_secs_f64(),
            ms(read),
            warm.len(),
            t.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        setup.push(line);
        // Runs interleaved, so drifting machine load spreads over every configuration.
        for run in 0..a.runs {
            for (mi, &mode) in modes.iter().enumerate() {
                STALLS.lock().unwrap().clear();
                DUPLICATES.store(0, Ordering::Relaxed);
                let load_start = load1();
                let reads_before = b.definition_reads();
                let seed = (run * 100 + mi) as u64;
                let (per_s, (admit, settle, pair, errors)) = match mode {
                    Mode::Admit(c) => closed(&b, scopes, c, false, a.secs, seed).await,
                    Mode::AdmitSettle(c) => closed(&b, scopes, c, true, a.secs, seed).await,
                    Mode::Open(r) => open_loop(&b, scopes, r, a.secs, seed).await,
                };
                let load_end = load1();
                let reads = b.definition_reads();
                let defs_reads = (
                    reads.full - reads_before.full,
                    reads.version_checks - reads_before.version_checks,
                );
                // A settle is durable and queued behind every earlier write: when it returns, the
                // embedded writer has caught up. (Not a definition write: that would empty the
                // definitions cache.)
                let t = Instant::now();
                let id = Rng::new(seed).identity(scopes);
                // (A store error here shows in the next run's numbers.)
                let _ = admit_settle(&b, &id, &format!("drain-{seed}"), true, t).await;
                let drain = t.elapsed();
                let r = Run {
                    backend: backend.into(),
                    scopes,
                    mode,
                    run,
                    ops: admit.len(),
                    errors,
                    per_s,
                    admit: pct(admit),
                    settle: pct(settle),
                    pair: pct(pair),
                    drain,
                    stalls: std::mem::take(&mut *STALLS.lock().unwrap()),
                    duplicates: DUPLICATES.swap(0, Ordering::Relaxed),
                    defs_reads,
                    load_start,
                    load_end,
                };
                print_run(&r);
                runs.push(r);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        sweeper.abort();
        let _ = sweeper.await;
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn uptime() -> String {
    std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn table(runs: &[Run]) {
    println!(
        "| backend | scopes | c | workload | ops/s | admit p50 | admit p99 [runs] | admit p999 | settle p50 / p99 / p999 | admit+settle p50 / p99 [runs] / p999 | errors (all runs) | load 1 min |"
    );
    println!("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut keys: Vec<(String, usize, String, String)> = Vec::new();
    for r in runs {
        let k = (
            r.backend.clone(),
            r.scopes,
            r.mode.conc(),
            r.mode.workload().to_owned(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (backend, scopes, conc, workload) in keys {
        let mut rs: Vec<&Run> = runs
            .iter()
            .filter(|r| {
                r.backend == backend
                    && r.scopes == scopes
                    && r.mode.conc() == conc
                    && r.mode.workload() == workload
            })
            .collect();
        rs.sort_by_key(|r| r.key());
        let m = rs[rs.len() / 2];
        let range = |f: &dyn Fn(&Run) -> Duration| {
            let v: Vec<Duration> = rs.iter().map(|r| f(r)).collect();
            let (lo, hi) = (v.iter().min().unwrap(), v.iter().max().unwrap());
            if rs.len() > 1 {
                format!("[{}–{}]", ms(*lo), ms(*hi))
            } else {
                String::new()
            }
        };
        let settled = m.settle.p50 > Duration::ZERO;
        let settle = if settled {
            format!(
                "{} / {} / {}",
                ms(m.settle.p50),
                ms(m.settle.p99),
                ms(m.settle.p999)
            )
        } else {
            "–".into()
        };
        let pair = if settled {
            format!(
                "{} / **{}** {} / {}",
                ms(m.pair.p50),
                ms(m.pair.p99),
                range(&|r| r.pair.p99),
                ms(m.pair.p999)
            )
        } else {
            "–".into()
        };
        let loads: Vec<f64> = rs.iter().flat_map(|r| [r.load_start, r.load_end]).collect();
        let lmin = loads.iter().copied().fold(f64::INFINITY, f64::min);
        let lmax = loads.iter().copied().fold(0.0, f64::max);
        println!(
            "| {backend} | {scopes} | {conc} | {workload} | {:.0} | {} | **{}** {} | {} | {settle} | {pair} | {} | {lmin:.1}–{lmax:.1} |",
            m.per_s,
            ms(m.admit.p50),
            ms(m.admit.p99),
            range(&|r| r.admit.p99),
            ms(m.admit.p999),
            rs.iter().map(|r| r.errors).sum::<usize>(),
        );
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let up_start = uptime();
    eprintln!("start: {up_start}");
    let mut runs = Vec::new();
    let mut setup = Vec::new();
    for backend in &a.backends {
        bench_backend(backend, &a, &mut runs, &mut setup).await;
    }
    let up_end = uptime();
    println!("start: {up_start}\nend:   {up_end}\n");
    for s in &setup {
        println!("- {s}");
    }
    println!(
        "- definitions cached for {} ms (`BudgetOptions::defs_refresh_ms`)",
        a.defs_refresh_ms
    );
    println!(
        "\nMedian of {} runs of {} s (chosen by p99 of admit; of admit+settle for the closed admit+settle rows); [min–max] of that p99 over the runs. ms.\n",
        a.runs, a.secs
    );
    table(&runs);
}
