//! [`BudgetStore`]: where definitions, window counters and reservations live, with the atomic
//! check-and-reserve that keeps several replicas from over-admitting.
//!
//! Semantics every backend follows (the conformance suite in `tests/budget_backends.rs` checks
//! both):
//! - A window is keyed by (budget id, scope id, window start) and holds `spent` and `reserved`
//!   [`Amounts`]. Every window of a request tracks all three amounts, whatever it limits.
//! - `reserve` checks every window with [`decide::exceeded`](super::decide::exceeded) and
//!   either reserves the amounts in all of them or in none. Reserving an id again changes
//!   nothing and answers `Reserved` with the current counters (safe to retry).
//! - `settle` releases what the reservation holds (unless it expired already) and adds the
//!   actual charge to each window it touched. A reservation settles once; it is then kept as a
//!   tombstone for [`TOMBSTONE_RETENTION_MS`] so a repeated settle is a no-op.
//! - `charge_unreserved` adds a charge without a reservation, once per request id (same
//!   retention). It checks no limit: the money is spent.
//! - `expire` releases active reservations whose `expires_at_ms` has passed (their requests
//!   never settled); a later settle still charges their windows. It also forgets windows past
//!   their `keep_until_ms` and tombstones past their retention.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BudgetError;
use super::decide::{Amounts, Counters, LimitKind};
use super::def::{BudgetDef, Limits};

/// How long settled/expired reservations and charged request ids are remembered (repeated
/// settles within it are no-ops).
pub const TOMBSTONE_RETENTION_MS: u64 = 3_600_000;

/// Identifies one window of one budget for one scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowKey {
    pub budget_id: String,
    /// `team:search`
    pub scope: String,
    pub start_ms: u64,
}

/// A window a request reserves in or is charged to, with the limits to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub key: WindowKey,
    pub end_ms: u64,
    /// After this the store may forget the window.
    pub keep_until_ms: u64,
    pub limits: Limits,
}

/// The answer of [`BudgetStore::reserve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Reserved in every window; the counters include the reservation (same order as the
    /// windows).
    Reserved { windows: Vec<Counters> },
    /// Window `index` has no room for `limit`; nothing was reserved. The counters are the
    /// current ones.
    Exceeded {
        index: usize,
        limit: LimitKind,
        windows: Vec<Counters>,
    },
}

/// The answer of [`BudgetStore::settle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleStatus {
    /// Released (if still active) and charged.
    Settled,
    /// Settled before: nothing changed.
    AlreadySettled,
    /// No such reservation (never made, or forgotten after its retention).
    Unknown,
}

/// Which windows [`BudgetStore::usage`] returns (`None`: any).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageFilter {
    #[serde(default)]
    pub budget_id: Option<String>,
    /// `team:search`
    #[serde(default)]
    pub scope: Option<String>,
}

impl UsageFilter {
    pub fn matches(&self, key: &WindowKey) -> bool {
        self.budget_id.as_ref().is_none_or(|b| *b == key.budget_id)
            && self.scope.as_ref().is_none_or(|s| *s == key.scope)
    }
}

/// The counters of one stored window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowUsage {
    pub key: WindowKey,
    pub end_ms: u64,
    pub counters: Counters,
}

#[async_trait]
pub trait BudgetStore: Send + Sync + 'static {
    /// Inserts or replaces a definition (by id).
    async fn put_def(&self, def: &BudgetDef) -> Result<(), BudgetError>;
    /// Deletes a definition; false if there was none. Its windows stay until they expire.
    async fn delete_def(&self, id: &str) -> Result<bool, BudgetError>;
    /// Every definition, by id.
    async fn list_defs(&self) -> Result<Vec<BudgetDef>, BudgetError>;
    /// A token that changes whenever a definition is put or deleted (by any replica sharing
    /// the store), so a definitions cache can skip reading unchanged definitions. `None`: the
    /// backend keeps none (every refresh then reads every definition).
    async fn defs_version(&self) -> Result<Option<u64>, BudgetError> {
        Ok(None)
    }
    /// Every definition with the [`defs_version`](Self::defs_version) they were read at (read
    /// together atomically: a change after the version was read is not in the list).
    async fn list_defs_versioned(&self) -> Result<(Option<u64>, Vec<BudgetDef>), BudgetError> {
        Ok((None, self.list_defs().await?))
    }
    /// Atomically checks every window and reserves `amounts` in all of them, or in none.
    async fn reserve(
        &self,
        windows: &[WindowSpec],
        amounts: Amounts,
        reservation_id: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<ReserveOutcome, BudgetError>;
    /// Releases the reservation and charges `charge` to the windows it touched (once).
    async fn settle(
        &self,
        reservation_id: &str,
        charge: Amounts,
        now_ms: u64,
    ) -> Result<SettleStatus, BudgetError>;
    /// Charges `charge` to `windows` without a reservation, once per `request_id`; false if
    /// that request was charged before.
    async fn charge_unreserved(
        &self,
        windows: &[WindowSpec],
        charge: Amounts,
        request_id: &str,
        now_ms: u64,
    ) -> Result<bool, BudgetError>;
    /// Releases reservations past their expiry and forgets old windows and tombstones; returns
    /// how many reservations expired.
    async fn expire(&self, now_ms: u64) -> Result<u64, BudgetError>;
    /// The stored windows matching `filter`.
    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<WindowUsage>, BudgetError>;
    /// Checks the backend is reachable (readiness).
    async fn ping(&self) -> Result<(), BudgetError>;
}

/// 128-bit SHA-256 digest of length-prefixed parts under a domain tag, as 32 lower-case hex
/// digits (storage keys hold no ids or request ids in clear text).
pub(crate) fn hash_hex(domain: &str, parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    crate::store::codec::hex(&h.finalize()[..16])
}

/// Reservation ids are 32 lower-case hex digits (see `Budgets::admit`); anything else is
/// unknown to every store.
pub fn valid_reservation_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
