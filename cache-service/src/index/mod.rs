//! Approximate nearest-neighbour search over cached queries' embeddings (owner: index work).
//!
//! Contract: one [`VectorIndex`] per cache partition (created on demand by [`Partitions`]);
//! cosine similarity on L2-normalised vectors; ids are the store's entry ids.

/// Search result: (entry id, cosine similarity), best first.
pub type Hit = (u64, f32);

/// A vector index of one partition. Implementations are internally synchronised.
pub trait VectorIndex: Send + Sync {
    fn add(&self, id: u64, vector: &[f32]);
    fn remove(&self, id: u64);
    fn search(&self, vector: &[f32], k: usize) -> Vec<Hit>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Approximate heap bytes used (for metrics and benchmarks).
    fn memory_bytes(&self) -> usize;
}
