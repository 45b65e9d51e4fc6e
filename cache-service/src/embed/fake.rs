//! [`FakeEmbedder`]: a deterministic, model-free test double.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::{EmbedError, Embedder, l2_normalize};

/// **Test double**, not a model: embeds a text as its bag of character trigrams, hashed into
/// `dim` signed buckets and L2-normalised. Deterministic across runs and platforms, fast, and
/// needs no files, so other modules' tests can use real vectors without ONNX Runtime.
///
/// What it models: strings that share most of their characters in order ("What is the capital
/// of France?" / "what is the capital of france") get a high cosine; unrelated strings a low
/// one. What it does not: meaning (paraphrases with different words score low), so thresholds
/// calibrated on it mean nothing for the real model.
///
/// Text is lowercased and whitespace runs collapsed before hashing. Counters and switches
/// ([`with_delay`](Self::with_delay), [`set_failing`](Self::set_failing)) let tests observe
/// batching and exercise error paths.
#[derive(Debug)]
pub struct FakeEmbedder {
    dim: usize,
    model_id: String,
    delay: Duration,
    fail: AtomicBool,
    calls: AtomicU64,
    texts: AtomicU64,
    largest_batch: AtomicUsize,
}

impl FakeEmbedder {
    /// A fake producing `dim`-long vectors (at least 1); model id `fake-trigram-{dim}`.
    pub fn new(dim: usize) -> Self {
        let dim = dim.max(1);
        FakeEmbedder {
            dim,
            model_id: format!("fake-trigram-{dim}"),
            delay: Duration::ZERO,
            fail: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            texts: AtomicU64::new(0),
            largest_batch: AtomicUsize::new(0),
        }
    }

    /// Sleeps this long in every `embed_batch` call (simulates inference time).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Overrides the model id (e.g. to test re-embedding on a model change).
    pub fn with_model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = id.into();
        self
    }

    /// While set, `embed_batch` returns [`EmbedError::Failed`].
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Number of `embed_batch` calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Number of texts embedded so far.
    pub fn texts_embedded(&self) -> u64 {
        self.texts.load(Ordering::SeqCst)
    }

    /// Largest batch seen so far.
    pub fn largest_batch(&self) -> usize {
        self.largest_batch.load(Ordering::SeqCst)
    }

    /// The vector of one text (no counters, no delay).
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut norm = String::with_capacity(text.len() + 2);
        norm.push('\u{2}');
        let mut space = false;
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_whitespace() {
                space = true;
                continue;
            }
            if space && norm.len() > 1 {
                norm.push(' ');
            }
            space = false;
            norm.push(c);
        }
        norm.push('\u{3}');
        let chars: Vec<char> = norm.chars().collect();
        let mut v = vec![0f32; self.dim];
        let mut buf = [0u8; 12];
        for w in chars.windows(3.min(chars.len())) {
            let mut n = 0;
            for c in w {
                n += c.encode_utf8(&mut buf[n..]).len();
            }
            let h = fnv1a(&buf[..n]);
            let bucket = (h % self.dim as u64) as usize;
            v[bucket] += if h >> 63 == 0 { 1.0 } else { -1.0 };
        }
        l2_normalize(&mut v);
        if v.iter().all(|x| *x == 0.0) {
            v[0] = 1.0;
        }
        v
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (splitmix64) so that bucket and sign bits are well mixed.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Embedder for FakeEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.largest_batch.fetch_max(texts.len(), Ordering::SeqCst);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(EmbedError::Failed("fake embedder set to fail".into()));
        }
        self.texts.fetch_add(texts.len() as u64, Ordering::SeqCst);
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::cosine;
    use super::*;

    #[test]
    fn deterministic_normalised_and_sized() {
        let f = FakeEmbedder::new(64);
        let a = f.vector("hello world");
        assert_eq!(a, FakeEmbedder::new(64).vector("hello world"));
        assert_eq!(a.len(), 64);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        for t in ["", " ", "a", "ab", "日本"] {
            let v = f.vector(t);
            let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "{t:?}");
        }
        // A known value pins the hashing, so vectors stored by one version stay comparable.
        let pinned = FakeEmbedder::new(8).vector("abc");
        let third = 1.0 / 3f32.sqrt();
        let want = [third, 0.0, third, 0.0, third, 0.0, 0.0, 0.0];
        assert!(
            pinned.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{pinned:?}"
        );
        assert_eq!(pinned, FakeEmbedder::new(8).vector("  ABC "));
    }

    #[test]
    fn similar_strings_score_higher_than_unrelated() {
        let f = FakeEmbedder::new(384);
        let q = f.vector("What is the capital of France?");
        let near = f.vector("what is the capital of france");
        let para = f.vector("What's the capital city of France?");
        let far = f.vector("How do I bake sourdough bread?");
        assert!(cosine(&q, &near) > 0.9, "{}", cosine(&q, &near));
        assert!(cosine(&q, &para) > cosine(&q, &far) + 0.3);
        assert!(cosine(&q, &far) < 0.3, "{}", cosine(&q, &far));
    }

    #[test]
    fn counts_calls_and_fails_on_demand() {
        let f = FakeEmbedder::new(16);
        let out = f.embed_batch(&["a", "b", "c"]).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[1], f.vector("b"));
        assert_eq!(
            (f.calls(), f.texts_embedded(), f.largest_batch()),
            (1, 3, 3)
        );
        f.set_failing(true);
        assert!(matches!(f.embed_batch(&["a"]), Err(EmbedError::Failed(_))));
        assert_eq!(f.calls(), 2);
        assert_eq!(f.model_id(), "fake-trigram-16");
    }
}
