//! Approximate nearest-neighbour search over cached queries' embeddings (owner: index work).
//!
//! Contract: one [`VectorIndex`] per cache partition (created on demand by [`Partitions`]);
//! cosine similarity on L2-normalised vectors; ids are the store's entry ids.
//!
//! - [`BruteForceIndex`]: exact scan (f32). Used for small partitions and as the test oracle.
//! - [`AnnIndex`]: HNSW graph from `usearch` (f16 vectors, inner product by default). Chosen
//!   after measuring `usearch`, `hnsw_rs` and brute force at 10k/100k/1M entries
//!   (`benches/results/ann.md`).
//! - [`Partitions`]: partition key → index, brute force while small, switching to ANN above a
//!   threshold; totals for metrics.
//!
//! Inputs are checked and normalised: a vector of the wrong dimension, with a non-finite value
//! or of zero length is rejected ([`IndexError`]); other vectors are scaled to unit length, so
//! the similarity returned is always a cosine. `u64::MAX` ([`RESERVED_ID`]) cannot be stored
//! (usearch uses it to mark deleted slots); store ids are below 2^63.

mod ann;
mod brute;
mod partitions;
pub mod synth;

use std::borrow::Cow;

pub use ann::{AnnConfig, AnnIndex, Quantization};
pub use brute::BruteForceIndex;
pub use partitions::{PartitionPolicy, PartitionStats, Partitions};

/// Search result: (entry id, cosine similarity), best first.
pub type Hit = (u64, f32);

/// The one id no index accepts.
pub const RESERVED_ID: u64 = u64::MAX;

/// Why an index refused a vector or an operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    #[error("vector has {got} dimensions, index expects {expected}")]
    Dimension { expected: usize, got: usize },
    #[error("vector is zero or not finite")]
    InvalidVector,
    #[error("id {0} is reserved")]
    ReservedId(u64),
    #[error("index backend error: {0}")]
    Backend(String),
}

/// A vector index of one partition. Implementations are internally synchronised.
pub trait VectorIndex: Send + Sync {
    /// Inserts `vector` under `id`, replacing any vector already stored under `id`.
    fn try_add(&self, id: u64, vector: &[f32]) -> Result<(), IndexError>;
    /// [`VectorIndex::try_add`], logging (at warn) instead of returning a refusal.
    fn add(&self, id: u64, vector: &[f32]) {
        if let Err(e) = self.try_add(id, vector) {
            tracing::warn!(id, error = %e, "vector index refused an entry");
        }
    }
    /// Removes `id`; once this returns, no search returns `id`. Unknown ids are ignored.
    fn remove(&self, id: u64);
    /// Up to `k` nearest entries, best first. An invalid query (wrong dimension, zero, NaN)
    /// finds nothing: for a cache a miss is always the safe answer.
    fn search(&self, vector: &[f32], k: usize) -> Vec<Hit>;
    fn contains(&self, id: u64) -> bool;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Vector dimension this index accepts.
    fn dim(&self) -> usize;
    /// Approximate heap bytes used (for metrics and benchmarks).
    fn memory_bytes(&self) -> usize;
}

/// Dot product written so that the compiler vectorises it on any x86_64 (16 independent
/// accumulators: SSE2 by default, wider with `-C target-cpu`). Extra elements of the longer
/// slice are ignored.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    // Pairwise reduction of the accumulators.
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// Checks `vector` and returns it at unit length (borrowed when it already is).
pub fn normalized(vector: &[f32], dim: usize) -> Result<Cow<'_, [f32]>, IndexError> {
    if vector.len() != dim {
        return Err(IndexError::Dimension {
            expected: dim,
            got: vector.len(),
        });
    }
    let sq = dot(vector, vector);
    if !sq.is_finite() || sq <= f32::MIN_POSITIVE {
        return Err(IndexError::InvalidVector);
    }
    if (sq - 1.0).abs() <= 1e-5 {
        return Ok(Cow::Borrowed(vector));
    }
    let inv = 1.0 / sq.sqrt();
    Ok(Cow::Owned(vector.iter().map(|x| x * inv).collect()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dot_matches_naive_for_all_lengths() {
        let mut rng = synth::Rng::new(3);
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let naive: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn normalized_checks_and_scales() {
        assert_eq!(
            normalized(&[1.0, 0.0], 3).unwrap_err(),
            IndexError::Dimension {
                expected: 3,
                got: 2
            }
        );
        assert_eq!(
            normalized(&[0.0, 0.0], 2).unwrap_err(),
            IndexError::InvalidVector
        );
        assert_eq!(
            normalized(&[f32::NAN, 1.0], 2).unwrap_err(),
            IndexError::InvalidVector
        );
        assert!(matches!(
            normalized(&[1.0, 0.0], 2).unwrap(),
            Cow::Borrowed(_)
        ));
        let v = normalized(&[3.0, 4.0], 2).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
