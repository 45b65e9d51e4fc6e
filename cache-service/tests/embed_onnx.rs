//! Behaviour of the real embedder (ONNX Runtime + all-MiniLM-L6-v2): batching, similarity,
//! edge cases, the async Batcher under concurrency, device selection.
//! Needs the model and ONNX Runtime from `make setup`; fails (does not skip) without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tollgate_cache_service::embed::{
    BatchConfig, Batcher, Device, EmbedError, Embedder, OnnxConfig, OnnxEmbedder, cosine,
};

fn model() -> Arc<OnnxEmbedder> {
    static MODEL: OnceLock<Arc<OnnxEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let cfg = OnnxConfig {
                intra_threads: 2,
                ..OnnxConfig::default()
            };
            Arc::new(OnnxEmbedder::load(&cfg).unwrap_or_else(|e| {
                panic!("cannot load the embedding model ({e}); run `make setup` to fetch it")
            }))
        })
        .clone()
}

fn one(m: &OnnxEmbedder, text: &str) -> Vec<f32> {
    m.embed_batch(&[text]).unwrap().pop().unwrap()
}

const TEXTS: &[&str] = &[
    "What is the capital of France?",
    "",
    "How do I reset my password?",
    "Explain the difference between TCP and UDP in two sentences, with an example of when to \
     prefer each one for a real-time multiplayer game.",
    "Hi",
    "¿Dónde está la estación de tren más cercana?",
    "Refund order #12345 placed on 2024-03-07.",
];

#[test]
fn batched_vectors_equal_single_ones_in_order() {
    let m = model();
    let singles: Vec<Vec<f32>> = TEXTS.iter().map(|t| one(&m, t)).collect();
    let batched = m.embed_batch(TEXTS).unwrap();
    assert_eq!(batched.len(), TEXTS.len());
    for (i, (b, s)) in batched.iter().zip(&singles).enumerate() {
        assert!(cosine(b, s) > 0.9999, "{:?}: {}", TEXTS[i], cosine(b, s));
    }
    // Reversed order: still one vector per text, in the caller's order.
    let rev: Vec<&str> = TEXTS.iter().rev().copied().collect();
    let batched = m.embed_batch(&rev).unwrap();
    for (b, t) in batched.iter().zip(&rev) {
        let s = &singles[TEXTS.iter().position(|x| x == t).unwrap()];
        assert!(cosine(b, s) > 0.9999, "{t:?}");
    }
    assert!(m.embed_batch(&[]).unwrap().is_empty());
}

#[test]
fn vectors_are_unit_length_and_finite() {
    let m = model();
    for v in m.embed_batch(TEXTS).unwrap() {
        assert_eq!(v.len(), m.dim());
        assert!(v.iter().all(|x| x.is_finite()));
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
}

#[test]
fn paraphrases_score_higher_than_unrelated_sentences() {
    let m = model();
    let pairs = [
        (
            "What is the capital of France?",
            "Tell me the name of France's capital city.",
            "How do I bake sourdough bread at home?",
        ),
        (
            "How do I reset my password?",
            "I forgot my password, how can I change it?",
            "What is the boiling point of water at sea level?",
        ),
        (
            "Write a Python function that reverses a string.",
            "Give me Python code to reverse a string.",
            "Recommend a good science fiction novel.",
        ),
    ];
    for (q, para, other) in pairs {
        let (q, p, o) = (one(&m, q), one(&m, para), one(&m, other));
        let (cp, co) = (cosine(&q, &p), cosine(&q, &o));
        assert!(cp > 0.7, "paraphrase cosine {cp}");
        assert!(co < 0.3, "unrelated cosine {co}");
        assert!(cp > co + 0.4, "paraphrase {cp} vs unrelated {co}");
    }
}

#[test]
fn empty_and_whitespace_texts_embed() {
    let m = model();
    let e = one(&m, "");
    assert_eq!(m.token_ids("").unwrap(), vec![101, 102]); // [CLS] [SEP]
    let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    // Whitespace tokenizes to nothing, like the empty string.
    assert!(cosine(&e, &one(&m, "  \n\t ")) > 0.9999);
}

#[test]
fn long_texts_are_truncated_to_256_tokens() {
    let m = model();
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(60);
    let ids = m.token_ids(&long).unwrap();
    assert_eq!(ids.len(), 256);
    assert_eq!((ids[0], ids[255]), (101, 102));
    // Text after the cut does not change the vector; text before it does.
    let a = one(&m, &long);
    let b = one(
        &m,
        &format!("{long} Completely different ending about databases."),
    );
    let c = one(&m, &format!("Databases. {long}"));
    assert!(cosine(&a, &b) > 0.99999, "{}", cosine(&a, &b));
    assert!(cosine(&a, &c) < 0.9999, "{}", cosine(&a, &c));
    // Megabyte inputs are bounded too.
    let huge = "word ".repeat(400_000);
    assert_eq!(m.token_ids(&huge).unwrap().len(), 256);
}

#[test]
fn model_id_names_the_model_and_limit() {
    let id = model().model_id().to_string();
    assert!(id.starts_with("all-MiniLM-L6-v2@8199be6f699a"), "{id}");
    assert!(id.ends_with("/t256"), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batcher_answers_200_concurrent_callers_with_their_own_vectors() {
    let m = model();
    let texts: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "Question number {i}: how many apples are in basket {}?",
                i * 7
            )
        })
        .collect();
    // Expected vectors, in fixed chunks (batched == single is checked above).
    let expected: Vec<Vec<f32>> = {
        let m = m.clone();
        let texts = texts.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            refs.chunks(25)
                .flat_map(|c| m.embed_batch(c).unwrap())
                .collect()
        })
        .await
        .unwrap()
    };
    let batcher = Arc::new(Batcher::new(m.clone(), BatchConfig::default()));
    let tasks: Vec<_> = texts
        .iter()
        .cloned()
        .map(|t| {
            let b = batcher.clone();
            tokio::spawn(async move { b.embed(t).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let v = task.await.unwrap().unwrap();
        let c = cosine(&v, &expected[i]);
        assert!(
            c > 0.9999,
            "caller {i} got cosine {c} with its own text's vector"
        );
    }
    let s = batcher.stats();
    assert_eq!(s.items, 200);
    assert!(s.largest_batch > 1, "no batching happened: {s:?}");
    assert!(s.largest_batch <= 32, "{s:?}");
    assert!(s.batches < 200, "{s:?}");
    assert_eq!((s.failed_batches, s.rejected, s.queued), (0, 0, 0));
    eprintln!(
        "200 callers: {} batches, mean size {:.1}",
        s.batches,
        s.mean_batch_size()
    );
}

#[tokio::test]
async fn batcher_with_short_window_still_answers() {
    let batcher = Batcher::new(
        model(),
        BatchConfig {
            max_batch: 4,
            window: Duration::ZERO,
            queue: 16,
        },
    );
    let v = batcher.embed("hello".into()).await.unwrap();
    assert_eq!(v.len(), 384);
}

#[test]
fn cuda_without_a_usable_provider_fails_at_load() {
    model(); // ONNX Runtime (CPU build) loaded in this process
    let cfg = OnnxConfig {
        device: Device::Cuda,
        ..OnnxConfig::default()
    };
    let err = OnnxEmbedder::load(&cfg).unwrap_err();
    assert!(matches!(err, EmbedError::Unavailable(_)), "{err:?}");
    let msg = err.to_string();
    eprintln!("device=cuda refused as expected: {msg}");
    #[cfg(not(feature = "cuda"))]
    assert!(msg.contains("without the `cuda` feature"), "{msg}");
    #[cfg(feature = "cuda")]
    assert!(msg.contains("device=cuda") && msg.contains("CUDA"), "{msg}");
}

#[test]
fn a_second_onnx_runtime_library_is_refused() {
    model();
    let other = std::env::temp_dir().join("tollgate-not-onnxruntime.so");
    std::fs::write(&other, b"not a library").unwrap();
    let cfg = OnnxConfig {
        ort_dylib: other.clone(),
        ..OnnxConfig::default()
    };
    let err = OnnxEmbedder::load(&cfg).unwrap_err().to_string();
    assert!(err.contains("already loaded"), "{err}");
    let _ = std::fs::remove_file(other);
}
