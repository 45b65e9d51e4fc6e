//! Org-wide spend protection that budgets alone do not give:
//!
//! - the **spend circuit breaker** trips when the org's spend over a sliding window exceeds a
//!   threshold (a runaway loop burns money faster than any daily budget notices), and then
//!   rejects or downgrades non-exempt traffic until the rate falls back below the threshold;
//! - the **anomaly signal** flags a team whose spend today exceeds N times its trailing daily
//!   average (a metric and a log line; nothing is blocked).
//!
//! Both are fed by settle records (actual spend) and kept in memory per service replica: with
//! several replicas behind one load balancer each sees its share of the traffic, so the breaker
//! threshold applies per replica (documented in the README).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

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

/// Sliding-window spend rate: one bucket per second.
#[derive(Debug)]
pub struct SpendBreaker {
    config: BreakerConfig,
    max_pico: u128,
    buckets: Mutex<VecDeque<(u64, u128)>>,
}

impl SpendBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        let max_pico = (config.max_usd * 1e12) as u128;
        SpendBreaker {
            config,
            max_pico,
            buckets: Mutex::new(VecDeque::new()),
        }
    }

    fn trim(&self, b: &mut VecDeque<(u64, u128)>, now_s: u64) {
        let start = now_s.saturating_sub(self.config.window_seconds - 1);
        while b.front().is_some_and(|(t, _)| *t < start) {
            b.pop_front();
        }
    }

    /// Records actual spend at `now_ms`.
    pub fn record(&self, cost_pico: u64, now_ms: u64) {
        if cost_pico == 0 {
            return;
        }
        let now_s = now_ms / 1000;
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match b.back_mut() {
            Some((t, v)) if *t == now_s => *v += u128::from(cost_pico),
            // Out-of-order records (batched settles) land in the newest bucket.
            Some((t, v)) if *t > now_s => *v += u128::from(cost_pico),
            _ => b.push_back((now_s, u128::from(cost_pico))),
        }
        self.trim(&mut b, now_s);
    }

    /// Spend in the current window, pico-USD.
    pub fn window_spend(&self, now_ms: u64) -> u128 {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        self.trim(&mut b, now_ms / 1000);
        b.iter().map(|(_, v)| v).sum()
    }

    pub fn tripped(&self, now_ms: u64) -> bool {
        self.window_spend(now_ms) > self.max_pico
    }

    /// The verdict for a request of `team` at `now_ms`.
    pub fn check(&self, team: &str, now_ms: u64) -> BreakerVerdict {
        if self.config.exempt_teams.iter().any(|t| t == team) || !self.tripped(now_ms) {
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

    #[test]
    fn trips_above_the_window_rate_and_recovers_when_it_slides_out() {
        let b = breaker("reject");
        let t0 = 1_700_000_000_000;
        b.record(3 * USD, t0);
        assert_eq!(b.check("search", t0), BreakerVerdict::Pass);
        b.record(3 * USD, t0 + 30_000);
        assert_eq!(
            b.check("search", t0 + 30_000),
            BreakerVerdict::Reject {
                retry_after_seconds: 60
            }
        );
        assert_eq!(b.check("checkout", t0 + 30_000), BreakerVerdict::Pass);
        // 61 s after the first record it has left the window: 3 USD < 5 USD.
        assert_eq!(b.check("search", t0 + 61_000), BreakerVerdict::Pass);
        assert_eq!(b.window_spend(t0 + 61_000), u128::from(3 * USD));
    }

    #[test]
    fn downgrade_action_names_the_model() {
        let b = breaker("downgrade");
        b.record(6 * USD, 1_000);
        assert_eq!(
            b.check("search", 1_000),
            BreakerVerdict::Downgrade {
                model: "gpt-4o-mini".into()
            }
        );
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
