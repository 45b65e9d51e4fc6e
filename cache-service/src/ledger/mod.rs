//! The spend ledger: one [`LedgerRecord`] per metered request, persisted, queryable and
//! exportable (issue 4).
//!
//! - [`LedgerRecord::from_settle`] turns a settle record from the filter into a ledger row.
//! - [`Ledger`] is the storage trait, with two backends: [`EmbeddedLedger`] (a local `redb`
//!   file, the default) and [`RedisLedger`] (shared by service replicas). Both store a record once
//!   per `request_id` (the filter re-sends settle batches after failures) and keep records in
//!   [`Position`] order: time, then a hash of the request id.
//! - Backends implement only `append` and `scan` (one page of records in order); spend queries
//!   ([`Ledger::query`], grouping and totals in [`query`]) and exports ([`Export`], CSV/JSONL in
//!   [`export`]) are built on `scan`, so every backend answers them the same way.
//! - [`SpendQuery::from_query_pairs`] parses the `/v1/spend` query string.
//! - [`MemoryLedger`] is a fake for tests of code that takes an `Arc<dyn Ledger>`.

pub mod embedded;
pub mod export;
pub mod memory;
pub mod query;
pub mod redis_ledger;
pub mod time;

pub use embedded::EmbeddedLedger;
pub use export::{Export, ExportPage, csv_header, csv_row, jsonl_row, render_csv, render_jsonl};
pub use memory::MemoryLedger;
pub use query::{
    Format, GroupBy, QueryError, SpendFilter, SpendQuery, SpendReport, SpendRow, TimeRange,
};
pub use redis_ledger::{RedisLedger, RedisLedgerOptions};

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_wire::UsageSource;
use tollgate_wire::admit::SettleRecord;

/// Records kept by default: 400 days (a calendar year plus a month of slack for year-end).
pub const DEFAULT_RETENTION_DAYS: u32 = 400;

/// One metered request. Field names are the JSON/JSONL export format (stable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// When the response finished, unix milliseconds (UTC).
    pub time_ms: u64,
    pub request_id: String,
    pub org: String,
    /// The team (tenant).
    pub team: String,
    #[serde(default)]
    pub user: Option<String>,
    /// Salted hash of the API key (`key:<16 hex>`), never the key.
    #[serde(default)]
    pub key: Option<String>,
    /// API family (`openai_chat`, `anthropic_messages`, ...).
    #[serde(default)]
    pub api: Option<String>,
    /// The model the client asked for.
    pub model_requested: String,
    /// The model actually used (after routing or a downgrade).
    pub model_used: String,
    /// All prompt tokens: uncached + cache reads + cache writes.
    pub tokens_in: u64,
    /// Generated tokens (reasoning included).
    pub tokens_out: u64,
    /// Prompt tokens read from the provider's prompt cache (part of `tokens_in`).
    pub tokens_cached: u64,
    /// Prompt tokens written to the provider's prompt cache (part of `tokens_in`).
    pub tokens_cache_write: u64,
    /// Reasoning tokens (part of `tokens_out`), when reported.
    #[serde(default)]
    pub tokens_reasoning: u64,
    /// Cost as charged, pico-USD; `None` when the model has no price.
    #[serde(default)]
    pub cost_pico: Option<u64>,
    /// What a cache hit or a downgrade saved, pico-USD.
    #[serde(default)]
    pub saved_pico: u64,
    /// `x-tollgate-cache` value: `hit-exact`, `hit-semantic`, `miss`, `bypass`, `error`.
    pub cache: String,
    /// Why the model changed (`downgrade:soft_limit`, a route name), if it did.
    #[serde(default)]
    pub route: Option<String>,
    /// HTTP status of the response.
    pub status: u16,
    pub stream: bool,
    /// `provider`, `counted` or `estimated`.
    pub usage_source: String,
}

impl LedgerRecord {
    /// The ledger row of a settled request. Without an identity the tenant is the team and the
    /// org is `default`.
    pub fn from_settle(r: &SettleRecord) -> LedgerRecord {
        let (org, team, user, key) = match &r.identity {
            Some(id) => (
                id.org.clone(),
                id.team.clone(),
                id.user.clone(),
                id.key.clone(),
            ),
            None => ("default".to_owned(), r.tenant.clone(), None, None),
        };
        LedgerRecord {
            time_ms: r.finished_at_ms,
            request_id: r.request_id.clone(),
            org,
            team,
            user,
            key,
            api: r.api.map(|a| a.as_str().to_owned()),
            model_requested: r.requested_model.clone().unwrap_or_else(|| r.model.clone()),
            model_used: r.model.clone(),
            tokens_in: r.usage.prompt_tokens(),
            tokens_out: r.usage.output_tokens,
            tokens_cached: r.usage.cache_read_tokens,
            tokens_cache_write: r.usage.cache_write_tokens,
            tokens_reasoning: r.usage.reasoning_tokens,
            cost_pico: r.cost_pico,
            saved_pico: r.saved_pico,
            cache: r.cache.header_value().to_owned(),
            route: r.route.clone(),
            status: r.status,
            stream: r.stream,
            usage_source: usage_source_str(r.usage_source).to_owned(),
        }
    }

    /// Where this record sorts in the ledger.
    pub fn position(&self) -> Position {
        Position {
            time_ms: self.time_ms,
            id: request_hash(&self.request_id),
        }
    }

    /// Whether this was answered from Tollgate's response cache.
    pub fn is_cache_hit(&self) -> bool {
        self.cache.starts_with("hit")
    }
}

fn usage_source_str(s: UsageSource) -> &'static str {
    match s {
        UsageSource::Provider => "provider",
        UsageSource::Counted => "counted",
        UsageSource::Estimated => "estimated",
    }
}

/// 128-bit digest of a request id (storage keys never carry ids as text).
pub fn request_hash(request_id: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"tollgate/ledger/request");
    h.update(request_id.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A record's place in ledger order: finish time, then the hash of its request id (so records
/// of the same millisecond have a stable order, the same in every backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub time_ms: u64,
    pub id: [u8; 16],
}

impl Position {
    /// The first position at `time_ms`.
    pub fn start_of(time_ms: u64) -> Position {
        Position {
            time_ms,
            id: [0; 16],
        }
    }

    /// Opaque text form (`<time_ms>-<32 hex>`), e.g. an export cursor.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.time_ms, crate::store::codec::hex(&self.id))
    }

    pub fn decode(s: &str) -> Option<Position> {
        let (t, h) = s.split_once('-')?;
        let time_ms = t.parse().ok()?;
        if h.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Position { time_ms, id })
    }
}

/// Serialized as its text form ([`Position::encode`]).
impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Position::decode(&s).ok_or_else(|| serde::de::Error::custom("invalid ledger position"))
    }
}

/// Where a scan starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanFrom {
    /// At this position, inclusive.
    At(Position),
    /// Just after this position (the last one of the previous page).
    After(Position),
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    #[error("ledger data corrupt: {0}")]
    Corrupt(String),
}

impl LedgerError {
    fn duplicate(&self) -> LedgerError {
        match self {
            LedgerError::Unavailable(m) => LedgerError::Unavailable(m.clone()),
            LedgerError::Corrupt(m) => LedgerError::Corrupt(m.clone()),
        }
    }
}

/// Records scanned per page by [`Ledger::query`].
pub const QUERY_PAGE: usize = 2000;

/// Durable, append-only storage of ledger records.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Stores the records whose `request_id` is not stored yet (a re-sent record, also one
    /// repeated within `records`, is skipped; the first write wins). Returns how many were new.
    /// When it returns `Ok`, the records are durable. On `Err`, some of them may be stored
    /// (Redis writes a large batch in several scripts): retrying the whole batch is safe.
    async fn append(&self, records: &[LedgerRecord]) -> Result<u64, LedgerError>;

    /// Up to `limit` records in [`Position`] order, from `from`, with `time_ms < to_ms`.
    async fn scan(
        &self,
        from: ScanFrom,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<LedgerRecord>, LedgerError>;

    /// Deletes records older than `before_ms`; returns how many (retention).
    async fn prune(&self, before_ms: u64) -> Result<u64, LedgerError>;

    /// Checks the backend is reachable (readiness).
    async fn ping(&self) -> Result<(), LedgerError>;

    /// Spend grouped and summed over the query's range and filters. Reads every record in the
    /// range once, page by page (memory: one page plus one row per group).
    async fn query(&self, q: &SpendQuery) -> Result<SpendReport, LedgerError> {
        let mut agg = query::Aggregator::new(q);
        let mut from = ScanFrom::At(Position::start_of(q.range.from_ms));
        loop {
            let page = self.scan(from, q.range.to_ms, QUERY_PAGE).await?;
            let Some(last) = page.last() else { break };
            from = ScanFrom::After(last.position());
            let full = page.len() >= QUERY_PAGE;
            for r in &page {
                agg.add(r);
            }
            if !full {
                break;
            }
        }
        Ok(agg.finish())
    }
}

/// Which backend to open (from the service's settings).
#[derive(Clone, Debug)]
pub enum LedgerConfig {
    /// `<data_dir>/ledger.redb` (the default).
    Embedded { path: PathBuf, retention_days: u32 },
    /// A Redis shared by the replicas that use the same namespace.
    Redis {
        url: String,
        namespace: String,
        retention_days: u32,
    },
}

impl LedgerConfig {
    /// The embedded ledger's file in a data directory, default retention.
    pub fn embedded_in(data_dir: impl Into<PathBuf>) -> LedgerConfig {
        LedgerConfig::Embedded {
            path: data_dir.into().join("ledger.redb"),
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

/// Opens the configured backend.
pub async fn open(config: &LedgerConfig) -> Result<Arc<dyn Ledger>, LedgerError> {
    Ok(match config {
        LedgerConfig::Embedded {
            path,
            retention_days,
        } => Arc::new(EmbeddedLedger::open_with(path, *retention_days).await?),
        LedgerConfig::Redis {
            url,
            namespace,
            retention_days,
        } => {
            let mut opts = RedisLedgerOptions::new(namespace.clone());
            opts.retention_days = *retention_days;
            Arc::new(RedisLedger::connect_with(url, opts).await?)
        }
    })
}

/// The records of `range` matching `filter`, in ledger order, page by page (see [`Export`]).
pub fn export(ledger: Arc<dyn Ledger>, range: TimeRange, filter: SpendFilter) -> Export {
    Export::new(ledger, range, filter)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tollgate_wire::admit::{CacheOutcome, Identity};
    use tollgate_wire::{Api, Usage};

    fn settle() -> SettleRecord {
        SettleRecord {
            request_id: "req-1".into(),
            tenant: "payments".into(),
            api: Some(Api::OpenAiChat),
            model: "gpt-4o-mini".into(),
            stream: true,
            status: 200,
            usage: Usage {
                input_tokens: 100,
                cache_read_tokens: 20,
                cache_write_tokens: 5,
                output_tokens: 50,
                reasoning_tokens: 10,
            },
            usage_source: UsageSource::Provider,
            cost_pico: Some(1_500_000),
            cache: CacheOutcome::Miss,
            saved_pico: 7,
            finished_at_ms: 1_735_689_600_000,
            store: None,
            identity: None,
            reservation_id: Some("res".into()),
            requested_model: None,
            route: None,
        }
    }

    #[test]
    fn from_settle_without_identity() {
        let r = LedgerRecord::from_settle(&settle());
        assert_eq!(r.org, "default");
        assert_eq!(r.team, "payments");
        assert_eq!((r.user.as_deref(), r.key.as_deref()), (None, None));
        assert_eq!(r.api.as_deref(), Some("openai_chat"));
        assert_eq!(r.model_requested, "gpt-4o-mini");
        assert_eq!(r.model_used, "gpt-4o-mini");
        assert_eq!(
            (
                r.tokens_in,
                r.tokens_out,
                r.tokens_cached,
                r.tokens_cache_write
            ),
            (125, 50, 20, 5)
        );
        assert_eq!(r.tokens_reasoning, 10);
        assert_eq!(r.cost_pico, Some(1_500_000));
        assert_eq!(r.cache, "miss");
        assert_eq!(r.usage_source, "provider");
        assert!(r.stream);
        assert_eq!(r.time_ms, 1_735_689_600_000);
    }

    #[test]
    fn from_settle_with_identity_and_routing() {
        let mut s = settle();
        s.identity = Some(Identity {
            org: "acme".into(),
            team: "search".into(),
            user: Some("ann".into()),
            key: Some("key:0123456789abcdef".into()),
        });
        s.requested_model = Some("gpt-4o".into());
        s.route = Some("downgrade:soft_limit".into());
        s.cache = CacheOutcome::HitSemantic;
        s.cost_pico = None;
        s.usage_source = UsageSource::Estimated;
        let r = LedgerRecord::from_settle(&s);
        assert_eq!((r.org.as_str(), r.team.as_str()), ("acme", "search"));
        assert_eq!(r.user.as_deref(), Some("ann"));
        assert_eq!(r.key.as_deref(), Some("key:0123456789abcdef"));
        assert_eq!(r.model_requested, "gpt-4o");
        assert_eq!(r.model_used, "gpt-4o-mini");
        assert_eq!(r.route.as_deref(), Some("downgrade:soft_limit"));
        assert_eq!(r.cache, "hit-semantic");
        assert!(r.is_cache_hit());
        assert_eq!(r.cost_pico, None);
        assert_eq!(r.usage_source, "estimated");
    }

    #[test]
    fn positions_order_and_encode() {
        let a = Position {
            time_ms: 5,
            id: [0xff; 16],
        };
        let b = Position {
            time_ms: 6,
            id: [0; 16],
        };
        assert!(a < b);
        assert!(Position::start_of(5) < a);
        let s = a.encode();
        assert_eq!(s, format!("5-{}", "ff".repeat(16)));
        assert_eq!(Position::decode(&s), Some(a));
        for bad in ["", "5", "x-00", "5-0", &format!("5-{}", "zz".repeat(16))] {
            assert_eq!(Position::decode(bad), None, "{bad}");
        }
    }
}
