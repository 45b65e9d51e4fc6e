//! Durable storage of cache entries (owner: storage work).
//!
//! [`Store`] is an async, thread-safe repository of [`Entry`] values keyed by id, with lookups by
//! (tenant, exact key), a full scan to rebuild indexes at start, invalidation, size-bounded
//! eviction, and a stream of [`StoreEvent`]s so a replica sees entries written by others.
//! Backends: embedded (default: a local file, survives restarts) and Redis (`--redis-url`, shared
//! by replicas). Keys are built from hashes only.

pub mod codec;
pub mod embedded;
pub mod redis_store;

pub use embedded::EmbeddedStore;
pub use redis_store::{RedisOptions, RedisStore};

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::model::{Entry, InvalidateFilter, StoreEvent};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts or replaces an entry (by id) and announces `StoreEvent::Put`.
    async fn put(&self, entry: &Entry) -> Result<(), StoreError>;
    async fn get(&self, id: u64) -> Result<Option<Entry>, StoreError>;
    /// The entry for (tenant, exact key), if any (expired entries may be returned; callers check).
    async fn get_exact(&self, tenant: &str, exact_key: &str) -> Result<Option<Entry>, StoreError>;
    /// Deletes entries and announces `StoreEvent::Deleted`.
    async fn delete(&self, ids: &[u64]) -> Result<(), StoreError>;
    /// Deletes matching entries, announces `StoreEvent::Invalidated`, returns how many.
    async fn invalidate(&self, filter: &InvalidateFilter) -> Result<u64, StoreError>;
    /// Every entry (to rebuild indexes at start).
    async fn scan(&self) -> Result<Vec<Entry>, StoreError>;
    /// Up to `limit` entries with ids above `after` (all ids when `None`), in id order, so a
    /// rebuild holds one page in memory rather than the whole store. The default pages over
    /// [`scan`](Store::scan) (no memory saving); backends override it.
    async fn scan_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut all = self.scan().await?;
        all.retain(|e| after.is_none_or(|a| e.id > a));
        all.sort_unstable_by_key(|e| e.id);
        all.truncate(limit.max(1));
        Ok(all)
    }
    /// Number of entries.
    async fn len(&self) -> Result<u64, StoreError>;
    async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len().await? == 0)
    }
    /// Deletes the oldest entries until at most `max_entries` remain; returns the deleted ids
    /// (also announced as `StoreEvent::Deleted`).
    async fn evict_to(&self, max_entries: u64) -> Result<Vec<u64>, StoreError>;
    /// Checks the backend is reachable (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Changes made by any replica (for Redis, including other processes), from now on.
    /// A receiver that falls more than the channel's capacity (4096) behind gets `Lagged`.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;
    /// How many times this store knows it lost events that `subscribe` should have delivered
    /// (Redis: the event stream was trimmed past this replica's position, or reset, while it
    /// was disconnected). When it grows, rebuild anything derived from events with [`scan`]
    /// (as on `Lagged`); check it after events and now and then. Never grows for the embedded
    /// store.
    ///
    /// [`scan`]: Store::scan
    fn missed_events(&self) -> u64 {
        0
    }
}

/// Which backend to open (from the service's settings).
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// A local file (the default: no server needed).
    Embedded { path: PathBuf },
    /// A Redis shared by the replicas that use the same namespace.
    Redis { url: String, namespace: String },
}

/// Opens the configured backend.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        StoreConfig::Embedded { path } => Arc::new(EmbeddedStore::open(path).await?),
        StoreConfig::Redis { url, namespace } => {
            Arc::new(RedisStore::connect(url, namespace).await?)
        }
    })
}
