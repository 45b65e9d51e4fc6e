//! Budgets: reserve-then-settle spend control and token rate limits per org, team, user and API
//! key (issue 4, service side).
//!
//! - [`def`]: budget definitions as the admin API writes them ([`BudgetDef`], camelCase JSON),
//!   validated into [`Budget`]; which budgets apply to an [`Identity`] (all of them must have
//!   room: nested scopes all apply).
//! - [`window`]: the UTC window of a period at an instant (reset hour/day, month lengths, leap
//!   years) and `retry-after`.
//! - [`decide`]: what a request reserves, the room rule, and the [`BudgetDecision`] (rejection
//!   code, message, downgrade, remaining USD).
//! - [`store`]: the [`BudgetStore`] trait; backends [`EmbeddedBudgetStore`] (a local `redb`
//!   file, the default) and [`RedisBudgetStore`] (one Lua script per operation, so replicas
//!   sharing a Redis never over-admit).
//! - [`Budgets`]: the façade the service calls on admit, settle, a periodic sweep and the admin
//!   API. Every time-dependent call takes `now_ms` (Unix ms), so tests choose the clock.
//!
//! Money is integer pico-USD (1 USD = 10^12) everywhere.

pub mod decide;
pub mod def;
pub mod embedded;
pub mod redis_store;
pub mod store;
pub mod window;

pub use decide::{Amounts, Charge, Counters, LimitKind};
pub use def::{Budget, BudgetDef, BudgetSet, Limits, Period, ScopeKind, Target};
pub use embedded::EmbeddedBudgetStore;
pub use redis_store::RedisBudgetStore;
pub use store::{
    BudgetStore, ReserveOutcome, SettleStatus, UsageFilter, WindowKey, WindowSpec, WindowUsage,
};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tollgate_wire::admit::{BudgetDecision, BudgetQuery, Identity};

use decide::Applied;
use window::window_at;

#[derive(Clone, Debug, thiserror::Error)]
pub enum BudgetError {
    /// A definition (or request) was refused; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error("budget store unavailable: {0}")]
    Unavailable(String),
    #[error("budget store data corrupt: {0}")]
    Corrupt(String),
}

/// Which backend to open.
#[derive(Clone, Debug)]
pub enum BudgetConfig {
    /// A local file, e.g. `<data_dir>/budgets.redb`.
    Embedded { path: PathBuf },
    /// A Redis shared by the replicas that use the same namespace.
    Redis { url: String, namespace: String },
}

/// Tunables of [`Budgets`].
#[derive(Clone, Debug)]
pub struct BudgetOptions {
    /// How long a reservation holds budget if its request never settles (`sweep` then
    /// releases it; a later settle still charges). Longer than the longest request.
    pub reservation_ttl_ms: u64,
    /// How long definitions are cached before the store is asked again (how soon a replica
    /// sees another replica's changes; its own are seen at once). 0: ask on every admit.
    /// Asking is cheap: the store's definitions version is compared first, and definitions
    /// are read again only when it changed. One task asks; the others keep using the current
    /// definitions meanwhile.
    pub defs_refresh_ms: u64,
    /// Definitions are read in full at least this often even when the store's version did not
    /// change (a safety net for writers that do not bump it, e.g. older replicas mid-upgrade).
    pub defs_full_reload_ms: u64,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        BudgetOptions {
            reservation_ttl_ms: 10 * 60 * 1000,
            defs_refresh_ms: 1000,
            defs_full_reload_ms: 60_000,
        }
    }
}

/// How a settle was accounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The reservation was released and the charge added to its windows.
    Reservation,
    /// Charged to the current windows of the identity without a reservation (fail-open admits,
    /// or a reservation forgotten since).
    Unreserved,
    /// Settled before (same reservation or request id): nothing changed.
    Duplicate,
    /// No reservation and no budget applies.
    NoBudget,
}

/// Current usage of one budget window (admin API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub budget_id: String,
    /// `team:search`
    pub scope: String,
    pub period: Period,
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    pub limits: Limits,
    pub spent: Amounts,
    pub reserved: Amounts,
    /// USD left (limit minus spent and reserved), when the budget limits USD.
    pub remaining_pico: Option<u64>,
}

/// The validated definitions as last read, and when.
struct DefCache {
    /// Last time the store confirmed these are current (version check or full read).
    checked_at_ms: u64,
    /// Last full read.
    loaded_at_ms: u64,
    /// The store's definitions version they were read at.
    version: Option<u64>,
    /// [`Budgets::generation`] when the read started (a local change since makes them unusable).
    generation: u64,
    budgets: Arc<BudgetSet>,
}

/// How often the definitions cache went to the store (see [`Budgets::definition_reads`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefinitionReads {
    /// Every definition read, validated and sorted.
    pub full: u64,
    /// Only the store's definitions version read (unchanged: nothing else read).
    pub version_checks: u64,
}

enum Cached {
    Fresh(Arc<BudgetSet>),
    Stale(Arc<BudgetSet>),
    Missing,
}

/// The budget façade: definitions, admit (reserve), settle, sweep, usage.
pub struct Budgets {
    store: Arc<dyn BudgetStore>,
    opts: BudgetOptions,
    defs: Mutex<Option<DefCache>>,
    /// Held by the one task refreshing the definitions (single flight).
    refresh: tokio::sync::Mutex<()>,
    /// Bumped by every change made through this instance.
    generation: AtomicU64,
    full_reads: AtomicU64,
    version_checks: AtomicU64,
    seed: [u64; 2],
    seq: AtomicU64,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState is seeded from the OS's randomness (then stepped per instance).
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Budgets {
    pub fn new(store: Arc<dyn BudgetStore>, opts: BudgetOptions) -> Self {
        Budgets {
            store,
            opts,
            defs: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            full_reads: AtomicU64::new(0),
            version_checks: AtomicU64::new(0),
            seed: [random_u64(), random_u64()],
            seq: AtomicU64::new(0),
        }
    }

    /// Opens the configured backend with default options.
    pub async fn open(config: &BudgetConfig) -> Result<Self, BudgetError> {
        Self::open_with(config, BudgetOptions::default()).await
    }

    pub async fn open_with(
        config: &BudgetConfig,
        opts: BudgetOptions,
    ) -> Result<Self, BudgetError> {
        let store: Arc<dyn BudgetStore> = match config {
            BudgetConfig::Embedded { path } => Arc::new(EmbeddedBudgetStore::open(path).await?),
            BudgetConfig::Redis { url, namespace } => {
                Arc::new(RedisBudgetStore::connect(url, namespace).await?)
            }
        };
        Ok(Self::new(store, opts))
    }

    /// A local file (e.g. `<data_dir>/budgets.redb`).
    pub async fn open_embedded(path: impl Into<PathBuf>) -> Result<Self, BudgetError> {
        Self::open(&BudgetConfig::Embedded { path: path.into() }).await
    }

    /// A Redis shared by replicas using the same `namespace` (`[A-Za-z0-9_.-]`, 1-64).
    pub async fn open_redis(url: &str, namespace: &str) -> Result<Self, BudgetError> {
        Self::open(&BudgetConfig::Redis {
            url: url.to_owned(),
            namespace: namespace.to_owned(),
        })
        .await
    }

    pub fn store(&self) -> &Arc<dyn BudgetStore> {
        &self.store
    }

    pub fn options(&self) -> &BudgetOptions {
        &self.opts
    }

    // ------------------------------------------------------------------ definitions

    /// Validates and stores a definition (insert or replace by id); returns it normalised.
    pub async fn put(&self, def: BudgetDef) -> Result<BudgetDef, BudgetError> {
        let def = Budget::try_from(def)?.to_def();
        self.store.put_def(&def).await?;
        self.invalidate();
        Ok(def)
    }

    /// Deletes a definition; false if there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, BudgetError> {
        let found = self.store.delete_def(id).await?;
        self.invalidate();
        Ok(found)
    }

    /// Every definition, by id (read from the store).
    pub async fn list(&self) -> Result<Vec<BudgetDef>, BudgetError> {
        let mut defs = self.store.list_defs().await?;
        defs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(defs)
    }

    pub async fn get(&self, id: &str) -> Result<Option<BudgetDef>, BudgetError> {
        Ok(self.list().await?.into_iter().find(|d| d.id == id))
    }

    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        *self.defs.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// How often the definitions were read in full, and how often only their version was
    /// checked, since this instance was created.
    pub fn definition_reads(&self) -> DefinitionReads {
        DefinitionReads {
            full: self.full_reads.load(Ordering::Relaxed),
            version_checks: self.version_checks.load(Ordering::Relaxed),
        }
    }

    fn cached(&self, now_ms: u64, generation: u64) -> Cached {
        let cache = self.defs.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.as_ref() {
            Some(c) if c.generation == generation => {
                if now_ms.saturating_sub(c.checked_at_ms) < self.opts.defs_refresh_ms {
                    Cached::Fresh(c.budgets.clone())
                } else {
                    Cached::Stale(c.budgets.clone())
                }
            }
            _ => Cached::Missing,
        }
    }

    /// The validated definitions, cached for `defs_refresh_ms`. When they are due, one task
    /// refreshes them while concurrent callers keep using the current ones (with
    /// `defs_refresh_ms` 0, or after a change made through this instance, callers wait).
    async fn budgets(&self, now_ms: u64) -> Result<Arc<BudgetSet>, BudgetError> {
        let stale = match self.cached(now_ms, self.generation.load(Ordering::Acquire)) {
            Cached::Fresh(b) => return Ok(b),
            Cached::Stale(b) if self.opts.defs_refresh_ms > 0 => Some(b),
            _ => None,
        };
        let _flight = match (self.refresh.try_lock(), stale) {
            (Ok(guard), _) => guard,
            (Err(_), Some(b)) => return Ok(b),
            (Err(_), None) => self.refresh.lock().await,
        };
        // Refreshed by another task while this one waited?
        let generation = self.generation.load(Ordering::Acquire);
        if let Cached::Fresh(b) = self.cached(now_ms, generation) {
            return Ok(b);
        }
        self.refresh_defs(now_ms, generation).await
    }

    /// Asks the store for its definitions version and reads every definition only if it
    /// changed (or no version is known, or the last full read is `defs_full_reload_ms` old).
    async fn refresh_defs(
        &self,
        now_ms: u64,
        generation: u64,
    ) -> Result<Arc<BudgetSet>, BudgetError> {
        let current = {
            let cache = self.defs.lock().unwrap_or_else(PoisonError::into_inner);
            cache
                .as_ref()
                .filter(|c| {
                    c.generation == generation
                        && c.version.is_some()
                        && now_ms.saturating_sub(c.loaded_at_ms) < self.opts.defs_full_reload_ms
                })
                .map(|c| (c.version, c.budgets.clone()))
        };
        if let Some((version, budgets)) = current {
            self.version_checks.fetch_add(1, Ordering::Relaxed);
            if self.store.defs_version().await? == version {
                let mut cache = self.defs.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(c) = cache.as_mut().filter(|c| c.generation == generation) {
                    c.checked_at_ms = c.checked_at_ms.max(now_ms);
                }
                return Ok(budgets);
            }
        }
        self.full_reads.fetch_add(1, Ordering::Relaxed);
        let (version, defs) = self.store.list_defs_versioned().await?;
        let mut budgets = Vec::with_capacity(defs.len());
        for d in defs {
            let id = d.id.clone();
            match Budget::try_from(d) {
                Ok(b) => budgets.push(b),
                Err(e) => {
                    tracing::warn!(id, error = %e, "budgets: skipped invalid stored definition")
                }
            }
        }
        let budgets = Arc::new(BudgetSet::new(budgets));
        // Kept under the generation the read started at: a local change made meanwhile makes
        // the next caller read again.
        *self.defs.lock().unwrap_or_else(PoisonError::into_inner) = Some(DefCache {
            checked_at_ms: now_ms,
            loaded_at_ms: now_ms,
            version,
            generation,
            budgets: budgets.clone(),
        });
        Ok(budgets)
    }

    fn new_reservation_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        store::hash_hex(
            "tollgate/reservation",
            &[
                &self.seed[0].to_string(),
                &self.seed[1].to_string(),
                &n.to_string(),
                &random_u64().to_string(),
            ],
        )
    }

    // ------------------------------------------------------------------ requests

    /// Checks every budget that applies to `identity` and, if all have room, reserves the
    /// request's maximum in each (atomically). Without an applicable budget: `Allow` with no
    /// reservation. Otherwise `Allow` or `Downgrade` with a `reservation_id` to settle, or
    /// `Reject` (nothing reserved).
    pub async fn admit(
        &self,
        identity: &Identity,
        q: &BudgetQuery,
        now_ms: u64,
    ) -> Result<BudgetDecision, BudgetError> {
        let budgets = self.budgets(now_ms).await?;
        let applied = applied(&budgets, identity, now_ms);
        if applied.is_empty() {
            return Ok(BudgetDecision::default());
        }
        let specs = specs(&applied);
        let amounts = Amounts::of_query(q);
        let id = self.new_reservation_id();
        let expires = now_ms.saturating_add(self.opts.reservation_ttl_ms);
        Ok(
            match self
                .store
                .reserve(&specs, amounts, &id, now_ms, expires)
                .await?
            {
                ReserveOutcome::Reserved { windows } => decide::admitted(&applied, &windows, id),
                ReserveOutcome::Exceeded {
                    index,
                    limit,
                    windows,
                } => decide::rejected(&applied, &windows, index, limit, amounts, now_ms),
            },
        )
    }

    /// Accounts a finished request: releases its reservation and charges `charge` to the
    /// windows it reserved in; without a (known) reservation, charges the identity's current
    /// windows once per `request_id`. Repeating a settle changes nothing.
    pub async fn settle(
        &self,
        reservation_id: Option<&str>,
        request_id: &str,
        identity: &Identity,
        charge: Charge,
        now_ms: u64,
    ) -> Result<SettleOutcome, BudgetError> {
        if let Some(rid) = reservation_id.filter(|r| store::valid_reservation_id(r)) {
            match self.store.settle(rid, charge, now_ms).await? {
                SettleStatus::Settled => return Ok(SettleOutcome::Reservation),
                SettleStatus::AlreadySettled => return Ok(SettleOutcome::Duplicate),
                SettleStatus::Unknown => {}
            }
        }
        let budgets = self.budgets(now_ms).await?;
        let applied = applied(&budgets, identity, now_ms);
        if applied.is_empty() {
            return Ok(SettleOutcome::NoBudget);
        }
        // Without a request id there is nothing to deduplicate on.
        let request_id = match request_id {
            "" => self.new_reservation_id(),
            r => r.to_owned(),
        };
        let charged = self
            .store
            .charge_unreserved(&specs(&applied), charge, &request_id, now_ms)
            .await?;
        Ok(if charged {
            SettleOutcome::Unreserved
        } else {
            SettleOutcome::Duplicate
        })
    }

    /// Releases reservations past their expiry and forgets old windows; returns how many
    /// reservations expired. Call every few seconds (see [`spawn_sweeper`]).
    pub async fn sweep(&self, now_ms: u64) -> Result<u64, BudgetError> {
        self.store.expire(now_ms).await
    }

    /// Current-window usage of every budget matching `filter` (definitions read from the
    /// store). Budgets for one member are listed even before their first request; `*` budgets
    /// list the members that have a current window.
    pub async fn usage(
        &self,
        filter: &UsageFilter,
        now_ms: u64,
    ) -> Result<Vec<UsageReport>, BudgetError> {
        let mut budgets = Vec::new();
        for d in self.list().await? {
            if filter.budget_id.as_ref().is_none_or(|id| *id == d.id) {
                budgets.push(Budget::try_from(d)?);
            }
        }
        let rows = self.store.usage(filter).await?;
        let mut out = Vec::new();
        for b in &budgets {
            let w = window_at(b.period, b.reset_hour_utc, b.reset_day_of_month, now_ms);
            let report = |scope: String, c: Counters| UsageReport {
                budget_id: b.id.clone(),
                scope,
                period: b.period,
                window_start_ms: w.start_ms,
                window_end_ms: w.end_ms,
                limits: b.limits,
                spent: c.spent,
                reserved: c.reserved,
                remaining_pico: b
                    .limits
                    .usd_pico
                    .map(|l| l.saturating_sub(c.used().cost_pico)),
            };
            let mut seen = false;
            for r in rows
                .iter()
                .filter(|r| r.key.budget_id == b.id && r.key.start_ms == w.start_ms)
            {
                seen = true;
                out.push(report(r.key.scope.clone(), r.counters));
            }
            if let (false, Target::One(t)) = (seen, &b.target) {
                let scope = format!("{}:{t}", b.scope.as_str());
                if filter.scope.as_ref().is_none_or(|s| *s == scope) {
                    out.push(report(scope, Counters::default()));
                }
            }
        }
        out.sort_by(|a, b| (&a.budget_id, &a.scope).cmp(&(&b.budget_id, &b.scope)));
        Ok(out)
    }

    pub async fn ping(&self) -> Result<(), BudgetError> {
        self.store.ping().await
    }
}

/// The budgets that apply to `identity`, each in its window at `now_ms`.
fn applied<'a>(budgets: &'a BudgetSet, identity: &Identity, now_ms: u64) -> Vec<Applied<'a>> {
    budgets
        .applicable(&def::scopes_of(identity))
        .into_iter()
        .map(|(b, s)| Applied {
            budget: b,
            scope: s.id,
            window: window_at(b.period, b.reset_hour_utc, b.reset_day_of_month, now_ms),
        })
        .collect()
}

fn specs(applied: &[Applied<'_>]) -> Vec<WindowSpec> {
    applied
        .iter()
        .map(|a| WindowSpec {
            key: WindowKey {
                budget_id: a.budget.id.clone(),
                scope: a.scope.clone(),
                start_ms: a.window.start_ms,
            },
            end_ms: a.window.end_ms,
            keep_until_ms: a.window.keep_until_ms(),
            limits: a.budget.limits,
        })
        .collect()
}

/// Runs [`Budgets::sweep`] on the wall clock every `every` until the task is aborted.
pub fn spawn_sweeper(budgets: Arc<Budgets>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match budgets.sweep(now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(expired = n, "budgets: released expired reservations"),
                Err(e) => tracing::warn!(error = %e, "budgets: sweep failed"),
            }
        }
    })
}
