//! Sentence embeddings for the semantic cache (owner: embeddings work).
//!
//! Contract used by the rest of the service:
//! - [`Embedder`]: a blocking, thread-safe model: `embed_batch(&[&str]) -> Vec<Vec<f32>>`, each
//!   vector L2-normalised, `dim()` long. Real implementation: ONNX Runtime via `ort` (CPU; CUDA
//!   behind the `cuda` feature) + `tokenizers`; tests may use a fake.
//! - [`Batcher`]: the async front used by request handlers: concurrent `embed(text)` calls are
//!   batched dynamically (small time window / max batch) and run off the async threads.

use std::sync::Arc;

/// Errors from loading or running an embedding model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model unavailable: {0}")]
    Unavailable(String),
    #[error("embedding failed: {0}")]
    Failed(String),
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
