//! Sentence embeddings for the semantic cache (owner: embeddings work).
//!
//! Contract used by the rest of the service:
//! - [`Embedder`]: a blocking, thread-safe model: `embed_batch(&[&str]) -> Vec<Vec<f32>>`, each
//!   vector L2-normalised, `dim()` long. Real implementation: [`OnnxEmbedder`], ONNX Runtime via
//!   `ort` (CPU; CUDA behind the `cuda` feature) + `tokenizers`; tests use [`FakeEmbedder`].
//! - [`Batcher`]: the async front used by request handlers: concurrent `embed(text)` calls are
//!   batched dynamically (small time window / max batch) and run off the async threads.
//!
//! Wiring it up:
//! ```no_run
//! # async fn demo() -> Result<(), tollgate_cache_service::embed::EmbedError> {
//! use std::sync::Arc;
//! use tollgate_cache_service::embed::{BatchConfig, Batcher, OnnxConfig, OnnxEmbedder};
//!
//! // Blocking (loads ONNX Runtime and the model, runs one warm-up inference): call it at
//! // start-up, before serving, or inside `spawn_blocking`.
//! let model = OnnxEmbedder::load(&OnnxConfig::default())?;
//! let batcher = Batcher::new(Arc::new(model), BatchConfig::default());
//! let v = batcher.embed("What is the capital of France?".to_string()).await?;
//! assert_eq!(v.len(), 384);
//! # Ok(()) }
//! ```

use std::sync::Arc;

mod batcher;
mod fake;
mod onnx;

pub use batcher::{BatchConfig, BatchStats, Batcher};
pub use fake::FakeEmbedder;
pub use onnx::{
    DEFAULT_MAX_TOKENS, Device, MODEL_SUBDIR, ORT_SUBPATH, OnnxConfig, OnnxEmbedder,
    default_model_dir, default_ort_dylib,
};

/// Errors from loading or running an embedding model.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The model or runtime cannot be loaded (missing files, wrong library, CUDA requested but
    /// not usable). Not retryable without operator action.
    #[error("embedding model unavailable: {0}")]
    Unavailable(String),
    /// One inference failed.
    #[error("embedding failed: {0}")]
    Failed(String),
    /// The [`Batcher`]'s queue is full: shed load (treat as a cache miss), do not wait.
    #[error("embedding queue full ({0} requests pending)")]
    Overloaded(usize),
}

/// A sentence-embedding model.
pub trait Embedder: Send + Sync + 'static {
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Identifies the model (entries embedded with another model are re-embedded or dropped).
    fn model_id(&self) -> &str;
    /// Embeds a batch (blocking; call off the async threads). Vectors are L2-normalised.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

pub type SharedEmbedder = Arc<dyn Embedder>;

/// Cosine similarity of two vectors (for L2-normalised vectors: their dot product).
/// Returns 0 for vectors of different lengths or with a zero norm.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Scales `v` to unit L2 norm in place (a zero vector stays zero).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn normalize_gives_unit_norm() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
