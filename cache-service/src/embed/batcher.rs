//! [`Batcher`]: the async front of an [`Embedder`] with dynamic batching.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{EmbedError, SharedEmbedder};

/// How a [`Batcher`] groups requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most texts per model call.
    pub max_batch: usize,
    /// How long the oldest waiting request may wait for others to join its batch. Time already
    /// spent queued (behind a running batch) counts, so a backlog is never delayed further.
    pub window: Duration,
    /// Requests that may wait (not counting the batch being computed); beyond it, `embed`
    /// fails at once with [`EmbedError::Overloaded`].
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 32,
            window: Duration::from_millis(2),
            queue: 1024,
        }
    }
}

/// Counters of a [`Batcher`] since it started (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Model calls made.
    pub batches: u64,
    /// Texts sent to the model (sum of batch sizes).
    pub items: u64,
    /// Model calls that failed (every request in them got the error).
    pub failed_batches: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
    /// Requests whose caller went away before their batch started (not computed).
    pub cancelled: u64,
    /// Largest batch so far.
    pub largest_batch: u64,
    /// Requests waiting now.
    pub queued: usize,
}

impl BatchStats {
    /// Mean texts per model call (0 before the first).
    pub fn mean_batch_size(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.items as f64 / self.batches as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    items: AtomicU64,
    failed_batches: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    largest_batch: AtomicU64,
}

struct Request {
    text: String,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// Async, batching front of an [`Embedder`](super::Embedder).
///
/// Concurrent [`embed`](Self::embed) calls are queued; one worker task takes the oldest request,
/// waits up to [`BatchConfig::window`] (from that request's arrival) for up to
/// [`BatchConfig::max_batch`] more, and runs the batch with `tokio::task::spawn_blocking`, so
/// inference never blocks the async threads. One batch runs at a time: the model already uses
/// its own threads, and requests arriving meanwhile form the next batch. A full queue is an
/// immediate [`EmbedError::Overloaded`] (callers should treat it as a cache miss).
///
/// Dropping the `Batcher` stops the worker after the queued requests are answered.
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    embedder: SharedEmbedder,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("model_id", &self.embedder.model_id())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Batcher {
    /// Starts the worker task. Must be called inside a Tokio runtime (like `tokio::spawn`).
    /// `max_batch` and `queue` below 1 are taken as 1.
    pub fn new(embedder: SharedEmbedder, config: BatchConfig) -> Self {
        let config = BatchConfig {
            max_batch: config.max_batch.max(1),
            queue: config.queue.max(1),
            ..config
        };
        let (tx, rx) = mpsc::channel(config.queue);
        let counters = Arc::new(Counters::default());
        tokio::spawn(worker(embedder.clone(), rx, config, counters.clone()));
        Batcher {
            tx,
            embedder,
            counters,
        }
    }

    /// Embeds one text (L2-normalised, [`dim`](Self::dim) long), batched with concurrent calls.
    pub async fn embed(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            text,
            enqueued: Instant::now(),
            reply,
        };
        match self.tx.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(EmbedError::Overloaded(self.tx.max_capacity()));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(EmbedError::Failed("embedding worker stopped".into()));
            }
        }
        rx.await
            .map_err(|_| EmbedError::Failed("embedding worker stopped".into()))?
    }

    /// The underlying model's vector dimension.
    pub fn dim(&self) -> usize {
        self.embedder.dim()
    }

    /// The underlying model's id.
    pub fn model_id(&self) -> &str {
        self.embedder.model_id()
    }

    /// The underlying model (e.g. for blocking bulk work such as cache warming).
    pub fn embedder(&self) -> &SharedEmbedder {
        &self.embedder
    }

    /// Counters since start.
    pub fn stats(&self) -> BatchStats {
        let c = &self.counters;
        BatchStats {
            batches: c.batches.load(Ordering::Relaxed),
            items: c.items.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            queued: self.tx.max_capacity() - self.tx.capacity(),
        }
    }
}

async fn worker(
    embedder: SharedEmbedder,
    mut rx: mpsc::Receiver<Request>,
    config: BatchConfig,
    counters: Arc<Counters>,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(config.max_batch);
    while let Some(first) = rx.recv().await {
        let deadline = first.enqueued + config.window;
        batch.push(first);
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        while batch.len() < config.max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        let before = batch.len();
        batch.retain(|r| !r.reply.is_closed());
        let cancelled = (before - batch.len()) as u64;
        if cancelled > 0 {
            counters.cancelled.fetch_add(cancelled, Ordering::Relaxed);
        }
        if batch.is_empty() {
            continue;
        }

        let n = batch.len();
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.items.fetch_add(n as u64, Ordering::Relaxed);
        counters
            .largest_batch
            .fetch_max(n as u64, Ordering::Relaxed);
        let texts: Vec<String> = batch
            .iter_mut()
            .map(|r| std::mem::take(&mut r.text))
            .collect();
        let model = embedder.clone();
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.embed_batch(&refs)
        })
        .await;
        let result = match result {
            Ok(Ok(vectors)) if vectors.len() == n => Ok(vectors),
            Ok(Ok(vectors)) => Err(EmbedError::Failed(format!(
                "model returned {} vectors for {n} texts",
                vectors.len()
            ))),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(EmbedError::Failed(format!("embedding task failed: {e}"))),
        };
        match result {
            Ok(vectors) => {
                for (req, v) in batch.drain(..).zip(vectors) {
                    let _ = req.reply.send(Ok(v));
                }
            }
            Err(e) => {
                counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, batch = n, "embedding batch failed");
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::FakeEmbedder;
    use super::*;

    #[tokio::test]
    async fn single_call_matches_the_model() {
        let fake = Arc::new(FakeEmbedder::new(32));
        let b = Batcher::new(fake.clone(), BatchConfig::default());
        let v = b.embed("hello".into()).await.unwrap();
        assert_eq!(v, fake.vector("hello"));
        assert_eq!(b.dim(), 32);
        assert_eq!(b.model_id(), "fake-trigram-32");
        let s = b.stats();
        assert_eq!((s.batches, s.items, s.largest_batch), (1, 1, 1));
        assert_eq!(s.mean_batch_size(), 1.0);
    }

    #[tokio::test]
    async fn errors_reach_every_caller_of_the_batch() {
        let fake = Arc::new(FakeEmbedder::new(8));
        fake.set_failing(true);
        let b = Arc::new(Batcher::new(fake.clone(), BatchConfig::default()));
        let (r1, r2) = tokio::join!(b.embed("a".into()), b.embed("b".into()));
        assert!(matches!(r1, Err(EmbedError::Failed(_))), "{r1:?}");
        assert!(matches!(r2, Err(EmbedError::Failed(_))), "{r2:?}");
        assert!(b.stats().failed_batches >= 1);
        fake.set_failing(false);
        assert!(b.embed("c".into()).await.is_ok());
    }

    #[tokio::test]
    async fn zero_sizes_are_clamped() {
        let fake: SharedEmbedder = Arc::new(FakeEmbedder::new(4));
        let b = Batcher::new(
            fake.clone(),
            BatchConfig {
                max_batch: 0,
                window: Duration::ZERO,
                queue: 0,
            },
        );
        assert_eq!(
            b.embed("x".into()).await.unwrap(),
            fake.embed_batch(&["x"]).unwrap()[0]
        );
    }
}
