//! Org-wide spend protection that budgets alone do not give:
//!
//! - the **spend circuit breaker** trips when the org's spend over a sliding window exceeds a
//!   threshold (a runaway loop burns money faster than any daily budget notices), and then
//!   rejects or downgrades non-exempt traffic until the rate falls back below the threshold;
//! - the **anomaly signal** flags a team whose spend today exceeds N times its trailing daily
//!   average (a metric and a log line; nothing is blocked).
//!
//! Both are fed by settle records (actual spend). The breaker's window lives in memory in
//! embedded mode ([`SpendBreaker::new`]) and in Redis when the service runs with `--redis-url`
//! ([`SpendBreaker::shared`]): replicas sharing a Redis namespace then share one window, so the
//! threshold applies to the spend of all of them together.
//!
//! The shared window is a ring of bucket counters, `{ns}:b:brk:{bucket seconds}:{bucket index}`
//! (pico-USD, `INCRBY`, expiring one bucket after they leave the window; no tenant, key or
//! prompt in the key). A bucket is 1 s for windows up to 60 s and `ceil(window / 60)` s above,
//! so a sum reads at most 60 keys (one `MGET`); the window then ends on a bucket boundary, i.e.
//! it is up to one bucket longer than configured. Admits read the sum from a copy refreshed at
//! most every [`SHARED_REFRESH_MS`]: one admit refreshes it (one round trip) while the others
//! use the copy, so the breaker adds no Redis call to most admits. A replica sees its own spend
//! at once and other replicas' within that interval. The anomaly detector stays per replica.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use serde::Deserialize;

/// `budgets.breaker` in the service configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakerConfig {
    /// Sliding window length.
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// Spend over the window (USD) above which the breaker trips.
    pub max_usd: f64,
    /// `reject` (429 budget_exceeded) or `downgrade` (to `downgradeTo`).
    #[serde(default = "default_action")]
    pub action: BreakerAction,
    #[serde(default)]
    pub downgrade_to: Option<String>,
    /// Teams never affected (e.g. production paths that must not degrade).
    #[serde(default)]
    pub exempt_teams: Vec<String>,
}

fn default_window() -> u64 {
    60
}

fn default_action() -> BreakerAction {
    BreakerAction::Reject
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BreakerAction {
    Reject,
    Downgrade,
}

/// `budgets.anomaly` in the service configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Flag a team whose spend today exceeds `factor` times its trailing daily average.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Days in the trailing average (only days with spend count; at least one is needed).
    #[serde(default = "default_trailing")]
    pub trailing_days: u32,
    /// Ignore days below this spend (USD), so tiny teams do not flap.
    #[serde(default = "default_min_usd")]
    pub min_usd: f64,
}

fn default_factor() -> f64 {
    3.0
}
fn default_trailing() -> u32 {
    7
}
fn default_min_usd() -> f64 {
    1.0
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_usd.is_finite() && self.max_usd > 0.0) {
            return Err("budgets.breaker.maxUsd must be positive".into());
        }
        if self.window_seconds == 0 || self.window_seconds > 86_400 {
            return Err("budgets.breaker.windowSeconds must be between 1 and 86400".into());
        }
        if self.action == BreakerAction::Downgrade && self.downgrade_to.is_none() {
            return Err("budgets.breaker.action downgrade needs downgradeTo".into());
        }
        Ok(())
    }
}

impl AnomalyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.factor.is_finite() && self.factor > 1.0) {
            return Err("budgets.anomaly.factor must be above 1".into());
        }
        if self.trailing_days == 0 || self.trailing_days > 90 {
            return Err("budgets.anomaly.trailingDays must be between 1 and 90".into());
        }
        Ok(())
    }
}

/// What the breaker says about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakerVerdict {
    Pass,
    Reject { retry_after_seconds: u64 },
    Downgrade { model: String },
}

/// How long a replica uses its copy of the shared window's sum before reading Redis again.
pub const SHARED_REFRESH_MS: u64 = 200;
/// Most buckets a shared window is read from.
const SHARED_MAX_BUCKETS: u64 = 60;
/// A single record adds at most this (pico-USD, 1M USD) to a Redis bucket: Redis counters are
/// signed 64-bit.
const MAX_RECORD_PICO: u64 = 1_000_000_000_000_000_000;

/// Sliding-window spend rate, in memory (one bucket per second) or shared through Redis.
#[derive(Debug)]
pub struct SpendBreaker {
    config: BreakerConfig,
    max_pico: u128,
    window: Window,
}

#[derive(Debug)]
enum Window {
    Local(Mutex<VecDeque<(u64, u128)>>),
    Shared(SharedWindow),
}

/// The Redis-backed window and this replica's copy of its sum.
struct SharedWindow {
    conn: ConnectionManager,
    /// `{ns}:b:brk:{bucket_s}:`
    prefix: String,
    bucket_s: u64,
    buckets: u64,
    refresh_ms: u64,
    copy: Mutex<SumCopy>,
    /// One refresh at a time; the others use the copy.
    refreshing: AtomicBool,
    reads: AtomicU64,
}

impl std::fmt::Debug for SharedWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWindow")
            .field("prefix", &self.prefix)
            .field("bucket_s", &self.bucket_s)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct SumCopy {
    /// Sum of the window read at `read_at_ms`, plus what this replica recorded since.
    sum: u128,
    read_at_ms: Option<u64>,
}

/// Clears the refresh flag when the refresh ends (also if its future is dropped).
struct Refreshing<'a>(&'a AtomicBool);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn valid_namespace(ns: &str) -> bool {
    (1..=64).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Bucket length (s) and number of buckets of a shared window: 1 s buckets up to 60 s, then
/// at most [`SHARED_MAX_BUCKETS`] buckets covering at least the window.
fn bucketing(window_seconds: u64) -> (u64, u64) {
    let bucket_s = window_seconds.div_ceil(SHARED_MAX_BUCKETS).max(1);
    (bucket_s, window_seconds.div_ceil(bucket_s).max(1))
}

impl SharedWindow {
    fn new(conn: ConnectionManager, namespace: &str, window_seconds: u64) -> Self {
        let (bucket_s, buckets) = bucketing(window_seconds);
        SharedWindow {
            conn,
            prefix: format!("{namespace}:b:brk:{bucket_s}:"),
            bucket_s,
            buckets,
            refresh_ms: SHARED_REFRESH_MS,
            copy: Mutex::new(SumCopy::default()),
            refreshing: AtomicBool::new(false),
            reads: AtomicU64::new(0),
        }
    }

    fn bucket_key(&self, index: u64) -> String {
        format!("{}{index}", self.prefix)
    }

    fn copy(&self) -> std::sync::MutexGuard<'_, SumCopy> {
        self.copy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn record(&self, cost_pico: u64, now_ms: u64) {
        let cost = cost_pico.min(MAX_RECORD_PICO);
        let index = now_ms / 1000 / self.bucket_s;
        // Kept one bucket (and a minute of clock skew between replicas) past the window.
        let ttl_ms = (self.buckets + 1) * self.bucket_s * 1000 + 60_000;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(self.bucket_key(index), cost)
            .ignore()
            .pexpire(self.bucket_key(index), ttl_ms as i64)
            .ignore();
        let mut conn = self.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => self.copy().sum += u128::from(cost),
            Err(e) => tracing::warn!(error = %e, "spend breaker: recording spend in redis failed"),
        }
    }

    /// The window's sum: the copy while it is fresh or while another task refreshes it.
    async fn sum(&self, now_ms: u64) -> u128 {
        {
            let c = self.copy();
            let fresh = c
                .read_at_ms
                .is_some_and(|t| now_ms >= t && now_ms - t < self.refresh_ms);
            if fresh {
                return c.sum;
            }
        }
        if self
            .refreshing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return self.copy().sum;
        }
        let _flag = Refreshing(&self.refreshing);
        let last = now_ms / 1000 / self.bucket_s;
        let keys: Vec<String> = (0..self.buckets)
            .map(|i| self.bucket_key(last.saturating_sub(i)))
            .collect();
        let mut conn = self.conn.clone();
        let read: Result<Vec<Option<u64>>, _> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut c = self.copy();
        match read {
            Ok(values) => {
                c.sum = values.into_iter().flatten().map(u128::from).sum();
                c.read_at_ms = Some(now_ms);
            }
            // Keep the last sum; try again after the refresh interval.
            Err(e) => {
                tracing::warn!(error = %e, "spend breaker: reading the shared window failed");
                c.read_at_ms = Some(now_ms);
            }
        }
        c.sum
    }
}

impl SpendBreaker {
    /// A window kept in this process's memory (embedded mode).
    pub fn new(config: BreakerConfig) -> Self {
        let max_pico = (config.max_usd * 1e12) as u128;
        SpendBreaker {
            config,
            max_pico,
            window: Window::Local(Mutex::new(VecDeque::new())),
        }
    }

    /// A window shared by every replica using the same Redis and `namespace`.
    pub async fn shared(config: BreakerConfig, url: &str, namespace: &str) -> Result<Self, String> {
        if !valid_namespace(namespace) {
            return Err(format!(
                "invalid redis namespace {namespace:?}: use 1-64 of [A-Za-z0-9_.-]"
            ));
        }
        let client = redis::Client::open(url).map_err(|e| format!("spend breaker: {e}"))?;
        let cfg = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, cfg)
            .await
            .map_err(|e| format!("spend breaker: {e}"))?;
        let max_pico = (config.max_usd * 1e12) as u128;
        let window = Window::Shared(SharedWindow::new(conn, namespace, config.window_seconds));
        Ok(SpendBreaker {
            config,
            max_pico,
            window,
        })
    }

    /// True when the window is shared through Redis.
    pub fn is_shared(&self) -> bool {
        matches!(self.window, Window::Shared(_))
    }

    /// How many times the shared window's sum was read from Redis (0 for a local window).
    pub fn shared_reads(&self) -> u64 {
        match &self.window {
            Window::Local(_) => 0,
            Window::Shared(w) => w.reads.load(Ordering::Relaxed),
        }
    }

    fn trim(&self, b: &mut VecDeque<(u64, u128)>, now_s: u64) {
        let start = now_s.saturating_sub(self.config.window_seconds - 1);
        while b.front().is_some_and(|(t, _)| *t < start) {
            b.pop_front();
        }
    }

    /// Records actual spend at `now_ms`.
    pub async fn record(&self, cost_pico: u64, now_ms: u64) {
        if cost_pico == 0 {
            return;
        }
        let b = match &self.window {
            Window::Local(b) => b,
            Window::Shared(w) => return w.record(cost_pico, now_ms).await,
        };
        let now_s = now_ms / 1000;
        let mut b = b.lock().unwrap_or_else(PoisonError::into_inner);
        match b.back_mut() {
            Some((t, v)) if *t == now_s => *v += u128::from(cost_pico),
            // Out-of-order records (batched settles) land in the newest bucket.
            Some((t, v)) if *t > now_s => *v += u128::from(cost_pico),
            _ => b.push_back((now_s, u128::from(cost_pico))),
        }
        self.trim(&mut b, now_s);
    }

    /// Spend in the current window, pico-USD (shared: as this replica last read it, at most
    /// [`SHARED_REFRESH_MS`] old, plus its own spend since).
    pub async fn window_spend(&self, now_ms: u64) -> u128 {
        let b = match &self.window {
            Window::Local(b) => b,
            Window::Shared(w) => return w.sum(now_ms).await,
        };
        let mut b = b.lock().unwrap_or_else(PoisonError::into_inner);
        self.trim(&mut b, now_ms / 1000);
        b.iter().map(|(_, v)| v).sum()
    }

    pub async fn tripped(&self, now_ms: u64) -> bool {
        self.window_spend(now_ms).await > self.max_pico
    }

    /// The verdict for a request of `team` at `now_ms`.
    pub async fn check(&self, team: &str, now_ms: u64) -> BreakerVerdict {
        if self.config.exempt_teams.iter().any(|t| t == team) || !self.tripped(now_ms).await {
            return BreakerVerdict::Pass;
        }
        match (&self.config.action, &self.config.downgrade_to) {
            (BreakerAction::Downgrade, Some(m)) => BreakerVerdict::Downgrade { model: m.clone() },
            _ => BreakerVerdict::Reject {
                retry_after_seconds: self.config.window_seconds.min(60),
            },
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }
}

/// Daily spend per team, for the anomaly signal.
#[derive(Debug)]
pub struct AnomalyDetector {
    config: AnomalyConfig,
    /// team -> day number (days since the epoch) -> pico-USD.
    days: Mutex<HashMap<String, BTreeMap<u64, u128>>>,
}

/// A team spending far above its usual.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    pub team: String,
    pub today_usd: f64,
    pub trailing_average_usd: f64,
}

impl AnomalyDetector {
    pub fn new(config: AnomalyConfig) -> Self {
        AnomalyDetector {
            config,
            days: Mutex::new(HashMap::new()),
        }
    }

    /// Records spend; returns an anomaly when this record takes today's spend over the line
    /// for the first time today (so the signal fires once per team per day).
    pub fn record(&self, team: &str, cost_pico: u64, now_ms: u64) -> Option<Anomaly> {
        if cost_pico == 0 {
            return None;
        }
        let day = now_ms / 86_400_000;
        let mut all = self.days.lock().unwrap_or_else(|e| e.into_inner());
        let days = all.entry(team.to_string()).or_default();
        let keep_from = day.saturating_sub(u64::from(self.config.trailing_days));
        while days.first_key_value().is_some_and(|(d, _)| *d < keep_from) {
            days.pop_first();
        }
        let before = days.get(&day).copied().unwrap_or(0);
        let after = before + u128::from(cost_pico);
        days.insert(day, after);
        let trailing: Vec<u128> = days
            .range(keep_from..day)
            .map(|(_, v)| *v)
            .filter(|v| *v > 0)
            .collect();
        if trailing.is_empty() {
            return None;
        }
        let avg = trailing.iter().sum::<u128>() as f64 / trailing.len() as f64;
        let line = (avg * self.config.factor).max(self.config.min_usd * 1e12);
        let crossed = (before as f64) <= line && (after as f64) > line;
        crossed.then(|| Anomaly {
            team: team.to_string(),
            today_usd: after as f64 / 1e12,
            trailing_average_usd: avg / 1e12,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const USD: u64 = 1_000_000_000_000;

    fn breaker(action: &str) -> SpendBreaker {
        let cfg: BreakerConfig = serde_json::from_value(serde_json::json!({
            "windowSeconds": 60, "maxUsd": 5.0, "action": action,
            "downgradeTo": "gpt-4o-mini", "exemptTeams": ["checkout"]
        }))
        .unwrap();
        cfg.validate().unwrap();
        SpendBreaker::new(cfg)
    }

    #[tokio::test]
    async fn trips_above_the_window_rate_and_recovers_when_it_slides_out() {
        let b = breaker("reject");
        let t0 = 1_700_000_000_000;
        b.record(3 * USD, t0).await;
        assert_eq!(b.check("search", t0).await, BreakerVerdict::Pass);
        b.record(3 * USD, t0 + 30_000).await;
        assert_eq!(
            b.check("search", t0 + 30_000).await,
            BreakerVerdict::Reject {
                retry_after_seconds: 60
            }
        );
        assert_eq!(b.check("checkout", t0 + 30_000).await, BreakerVerdict::Pass);
        // 61 s after the first record it has left the window: 3 USD < 5 USD.
        assert_eq!(b.check("search", t0 + 61_000).await, BreakerVerdict::Pass);
        assert_eq!(b.window_spend(t0 + 61_000).await, u128::from(3 * USD));
    }

    #[tokio::test]
    async fn downgrade_action_names_the_model() {
        let b = breaker("downgrade");
        b.record(6 * USD, 1_000).await;
        assert_eq!(
            b.check("search", 1_000).await,
            BreakerVerdict::Downgrade {
                model: "gpt-4o-mini".into()
            }
        );
    }

    #[test]
    fn shared_windows_read_at_most_60_buckets_covering_the_window() {
        assert_eq!(bucketing(1), (1, 1));
        assert_eq!(bucketing(2), (1, 2));
        assert_eq!(bucketing(60), (1, 60));
        assert_eq!(bucketing(61), (2, 31));
        assert_eq!(bucketing(3600), (60, 60));
        assert_eq!(bucketing(86_400), (1440, 60));
        for w in 1..=4000 {
            let (b, n) = bucketing(w);
            assert!(
                n <= SHARED_MAX_BUCKETS && b * n >= w && b * (n - 1) < w,
                "{w}"
            );
        }
        assert!(valid_namespace("tollgate") && !valid_namespace("a:b") && !valid_namespace(""));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad: BreakerConfig =
            serde_json::from_value(serde_json::json!({"maxUsd": 1.0, "action": "downgrade"}))
                .unwrap();
        assert!(bad.validate().unwrap_err().contains("downgradeTo"));
        let bad: BreakerConfig =
            serde_json::from_value(serde_json::json!({"maxUsd": 0.0})).unwrap();
        assert!(bad.validate().is_err());
        assert!(
            serde_json::from_value::<BreakerConfig>(serde_json::json!({"maxUsd": 1.0, "windw": 1}))
                .is_err()
        );
    }

    #[test]
    fn anomaly_fires_once_when_today_exceeds_n_times_the_trailing_average() {
        let a = AnomalyDetector::new(AnomalyConfig {
            factor: 3.0,
            trailing_days: 7,
            min_usd: 1.0,
        });
        let day = 86_400_000u64;
        let t = 20_000 * day;
        // No history: nothing to compare with.
        assert_eq!(a.record("search", 10 * USD, t - 3 * day), None);
        a.record("search", 10 * USD, t - 2 * day);
        a.record("search", 10 * USD, t - day);
        // Average 10 USD/day: 30 USD today is not yet above 3x.
        assert_eq!(a.record("search", 30 * USD, t), None);
        let hit = a.record("search", USD, t).unwrap();
        assert_eq!(hit.team, "search");
        assert!((hit.trailing_average_usd - 10.0).abs() < 1e-9);
        assert!((hit.today_usd - 31.0).abs() < 1e-9);
        assert_eq!(a.record("search", USD, t), None, "once per day");
        // Other teams are independent.
        assert_eq!(a.record("ads", 100 * USD, t), None);
    }

    #[test]
    fn small_teams_below_the_floor_do_not_flap() {
        let a = AnomalyDetector::new(AnomalyConfig {
            factor: 3.0,
            trailing_days: 7,
            min_usd: 1.0,
        });
        let day = 86_400_000u64;
        a.record("tiny", USD / 100, day);
        assert_eq!(a.record("tiny", USD / 2, 2 * day), None);
    }
}
