//! Data shared by the service's parts: cache entries and store events.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_wire::admit::CachedCompletion;

/// One cached answer.
///
/// Storage keys are derived from hashes only (`exact_key` and `partition` are SHA-256 hex from
/// the filter; `id` is derived from them): no prompt or API key appears in a key. The query text
/// is stored as a value, because the guards and shadow-mode review need it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub tenant: String,
    pub partition: String,
    pub exact_key: String,
    /// Model that answered (for invalidation by model).
    pub model: String,
    /// The final user turn this answer was for.
    pub query: String,
    /// Embedding of `query` (`None`: exact-only entry).
    pub embedding: Option<Vec<f32>>,
    /// Model id of the embedder that produced `embedding`.
    pub embedding_model: String,
    pub completion: CachedCompletion,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; 0 = never expires.
    pub expires_at: u64,
}

impl Entry {
    /// Deterministic id: two replicas storing the same request produce the same entry.
    pub fn id_for(tenant: &str, exact_key: &str) -> u64 {
        let mut h = Sha256::new();
        h.update(tenant.as_bytes());
        h.update([0]);
        h.update(exact_key.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b) & (u64::MAX >> 1) // fits i64 for any backend that needs it
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at != 0 && now >= self.expires_at
    }

    /// Approximate size in bytes (for size limits).
    pub fn size_bytes(&self) -> usize {
        self.query.len()
            + self.completion.text.len()
            + self.embedding.as_ref().map_or(0, |e| e.len() * 4)
            + self.tenant.len()
            + self.partition.len()
            + self.exact_key.len()
            + self.model.len()
            + 128
    }
}

/// What to invalidate: by tenant and/or model; both `None` means everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidateFilter {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

impl InvalidateFilter {
    pub fn matches(&self, e: &Entry) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == e.tenant)
            && self.model.as_ref().is_none_or(|m| *m == e.model)
    }
}

/// A change to the store, seen by every replica (including the writer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StoreEvent {
    Put(Box<Entry>),
    Deleted(Vec<u64>),
    Invalidated(InvalidateFilter),
}
