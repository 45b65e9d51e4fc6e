//! The learned complexity score on admit (`AdmitRequest.complexity` ->
//! `AdmitResponse.complexity`): reuse of the cache lookup's embedding, embedding only when the
//! lookup made none, and what happens without a classifier. Uses the fake embedder; accuracy
//! with the real model is `complexity.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::TempDir;
use std::sync::Arc;

use serde_json::json;
use tollgate_cache_service::complexity::{Classifier, parse_examples};
use tollgate_cache_service::embed::{BatchConfig, Batcher, Embedder, FakeEmbedder};
use tollgate_cache_service::engine::Engine;
use tollgate_cache_service::metrics::Metrics;
use tollgate_cache_service::service::FileConfig;
use tollgate_cache_service::store::EmbeddedStore;
use tollgate_wire::admit::{AdmitRequest, CacheQuery};

const EXAMPLES: &str = r#"{"prompt": "Prove that there are infinitely many primes.", "label": "complex"}
{"prompt": "Design a distributed rate limiter and analyse its failure modes.", "label": "complex"}
{"prompt": "What is the capital of France?", "label": "simple"}
{"prompt": "Translate hello into Spanish.", "label": "simple"}
"#;

async fn engine(dir: &TempDir, semantic: &str) -> (Arc<Engine>, Arc<FakeEmbedder>, Arc<Metrics>) {
    let file: FileConfig =
        serde_json::from_value(json!({"cache": {"semantic": {"mode": semantic}}})).unwrap();
    let fake = Arc::new(FakeEmbedder::new(64));
    let batcher = Arc::new(Batcher::new(fake.clone(), BatchConfig::default()));
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(EmbeddedStore::open(dir.0.join("cache.redb")).await.unwrap());
    let engine = Engine::start(
        file.cache.compile().unwrap(),
        store,
        Some(batcher),
        metrics.clone(),
    )
    .await
    .unwrap();
    (engine, fake, metrics)
}

fn classifier(fake: &FakeEmbedder) -> Arc<Classifier> {
    let ex = parse_examples(EXAMPLES).unwrap();
    Arc::new(Classifier::train(fake, &ex, 1, "test").unwrap())
}

fn request(query: &str, complexity: bool) -> AdmitRequest {
    AdmitRequest {
        request_id: format!("r-{query}"),
        tenant: "t".into(),
        model: "gpt-4o".into(),
        route: "/v1/chat/completions".into(),
        cache: Some(CacheQuery {
            exact_key: "a".repeat(64),
            partition: "b".repeat(64),
            query: query.into(),
            lookup: true,
            store: true,
            ..CacheQuery::default()
        }),
        complexity,
        ..AdmitRequest::default()
    }
}

#[tokio::test]
async fn score_reuses_the_lookup_embedding() {
    let dir = TempDir::new("reuse");
    let (engine, fake, metrics) = engine(&dir, "serve").await;
    assert!(engine.set_complexity(classifier(&fake)));
    let before = fake.texts_embedded();

    let resp = engine
        .admit(&request(
            "Prove that there are infinitely many primes.",
            true,
        ))
        .await;
    let s = resp.complexity.expect("a score");
    assert!(s > 0.99, "{s}");
    // One embedding for the lookup, none for the score.
    assert_eq!(fake.texts_embedded() - before, 1);
    assert_eq!(
        metrics.counter(
            "tollgate_complexity_embeddings_total",
            &[("source", "reused")]
        ),
        1
    );

    let resp = engine
        .admit(&request("What is the capital of France?", true))
        .await;
    assert!(resp.complexity.unwrap() < 0.01);
    assert_eq!(
        metrics.counter("tollgate_complexity_scores_total", &[("bucket", "0.0")]),
        1
    );
    assert_eq!(
        metrics.counter("tollgate_complexity_scores_total", &[("bucket", "0.9")]),
        1
    );
    assert!(metrics.render().contains("tollgate_complexity_seconds"));
}

#[tokio::test]
async fn score_embeds_when_the_lookup_did_not() {
    let dir = TempDir::new("compute");
    // Semantic lookups off: the lookup embeds nothing, the score embeds the final turn itself.
    let (engine, fake, metrics) = engine(&dir, "off").await;
    assert!(engine.set_complexity(classifier(&fake)));
    let before = fake.texts_embedded();
    let resp = engine
        .admit(&request(
            "Prove that there are infinitely many primes.",
            true,
        ))
        .await;
    assert!(resp.complexity.unwrap() > 0.99);
    assert_eq!(fake.texts_embedded() - before, 1);
    assert_eq!(
        metrics.counter(
            "tollgate_complexity_embeddings_total",
            &[("source", "computed")]
        ),
        1
    );

    // Not cacheable (no cache query): the filter sends the final turn in complexity_query.
    let req = AdmitRequest {
        cache: None,
        complexity: true,
        complexity_query: Some("Translate hello into Spanish.".into()),
        ..AdmitRequest::default()
    };
    assert!(engine.admit(&req).await.complexity.unwrap() < 0.01);
    assert_eq!(
        metrics.counter(
            "tollgate_complexity_embeddings_total",
            &[("source", "computed")]
        ),
        2
    );

    // Nothing to score.
    let req = AdmitRequest {
        complexity: true,
        ..AdmitRequest::default()
    };
    assert_eq!(engine.admit(&req).await.complexity, None);
    assert_eq!(
        metrics.counter(
            "tollgate_complexity_unscored_total",
            &[("reason", "no_text")]
        ),
        1
    );
}

#[tokio::test]
async fn no_score_unless_asked_or_before_training() {
    let dir = TempDir::new("unasked");
    let (engine, fake, metrics) = engine(&dir, "serve").await;
    // Not trained yet.
    let resp = engine.admit(&request("Prove it.", true)).await;
    assert_eq!(resp.complexity, None);
    assert_eq!(
        metrics.counter(
            "tollgate_complexity_unscored_total",
            &[("reason", "no_classifier")]
        ),
        1
    );
    assert!(engine.set_complexity(classifier(&fake)));
    // Installed once only.
    assert!(!engine.set_complexity(classifier(&fake)));
    // Not asked: no score, no extra embedding.
    let before = fake.texts_embedded();
    let resp = engine.admit(&request("Prove it again.", false)).await;
    assert_eq!(resp.complexity, None);
    assert_eq!(fake.texts_embedded() - before, 1);
    // The answer's JSON carries the field only as null when absent.
    let v = serde_json::to_value(&resp).unwrap();
    assert!(v["complexity"].is_null());
}

#[tokio::test]
async fn a_classifier_from_another_model_is_refused() {
    let dir = TempDir::new("model");
    let (engine, _fake, _) = engine(&dir, "serve").await;
    let other = FakeEmbedder::new(64).with_model_id("another-model");
    let ex = parse_examples(EXAMPLES).unwrap();
    let c = Classifier::train(&other, &ex, 1, "test").unwrap();
    assert_eq!(c.model_id(), other.model_id());
    assert!(!engine.set_complexity(Arc::new(c)));
    assert!(engine.complexity().is_none());
}

/// `data/complexity/build.py` puts a prompt in test.jsonl when SHA-256(prompt) mod 100 < 30;
/// nothing is in both files.
#[test]
fn shipped_split_follows_the_hash_rule() {
    use sha2::{Digest, Sha256};
    fn in_test(prompt: &str) -> bool {
        // The hash as a big-endian integer, mod 100 (fold byte by byte).
        let h = Sha256::digest(prompt.as_bytes());
        h.iter()
            .fold(0u32, |acc, b| (acc * 256 + u32::from(*b)) % 100)
            < 30
    }
    let train = parse_examples(include_str!("../data/complexity/train.jsonl")).unwrap();
    let test = parse_examples(include_str!("../data/complexity/test.jsonl")).unwrap();
    assert!(train.len() + test.len() >= 400);
    assert!(train.iter().all(|e| !in_test(&e.prompt)));
    assert!(test.iter().all(|e| in_test(&e.prompt)));
    let train_prompts: std::collections::HashSet<&str> =
        train.iter().map(|e| e.prompt.as_str()).collect();
    assert!(
        test.iter()
            .all(|e| !train_prompts.contains(e.prompt.as_str()))
    );
}

#[tokio::test]
async fn the_first_admit_that_asks_starts_training() {
    let dir = TempDir::new("lazy");
    let (engine, _fake, metrics) = engine(&dir, "serve").await;
    engine.plan_complexity(parse_examples(EXAMPLES).unwrap(), 1, "test".into());
    assert!(engine.complexity().is_none());
    // Not asked: nothing is trained.
    engine
        .admit(&request("What is the capital of France?", false))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(engine.complexity().is_none());
    // Asked: no score yet, training starts.
    let resp = engine.admit(&request("Prove it.", true)).await;
    assert_eq!(resp.complexity, None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while engine.complexity().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(engine.complexity().unwrap().source(), "test");
    let resp = engine
        .admit(&request("Translate hello into Spanish.", true))
        .await;
    assert!(resp.complexity.unwrap() < 0.01);
    assert!(
        metrics
            .render()
            .contains("tollgate_complexity_training_seconds_count 1")
    );
}

#[tokio::test]
async fn exact_hits_are_not_scored_semantic_hits_are_for_free() {
    use tollgate_wire::admit::{
        CacheOutcome, CachedCompletion, SettleBatch, SettleRecord, StoreRequest,
    };
    use tollgate_wire::{Usage, UsageSource};
    let dir = TempDir::new("hits");
    let (engine, fake, metrics) = engine(&dir, "serve").await;
    assert!(engine.set_complexity(classifier(&fake)));
    let q = "Prove that there are infinitely many primes.";
    let first = request(q, true);
    let resp = engine.admit(&first).await;
    assert_eq!(resp.cache.outcome, CacheOutcome::Miss);
    let c = first.cache.clone().unwrap();
    let rec = SettleRecord {
        request_id: first.request_id.clone(),
        tenant: first.tenant.clone(),
        api: None,
        model: first.model.clone(),
        stream: false,
        status: 200,
        usage: Usage::default(),
        usage_source: UsageSource::Provider,
        cost_pico: None,
        cache: CacheOutcome::Miss,
        saved_pico: 0,
        finished_at_ms: 0,
        store: Some(StoreRequest {
            exact_key: c.exact_key.clone(),
            partition: c.partition.clone(),
            query: c.query.clone(),
            completion: CachedCompletion {
                model: first.model.clone(),
                text: "Euclid's argument.".into(),
                finish_reason: "stop".into(),
                ..CachedCompletion::default()
            },
            shadow_entry_id: None,
            ttl_seconds: Some(3600),
        }),
        identity: None,
        reservation_id: None,
        requested_model: None,
        route: None,
    };
    engine
        .settle(SettleBatch { records: vec![rec] })
        .await
        .unwrap();

    // Exact hit: served from the cache, no score, no embedding.
    let before = fake.texts_embedded();
    let resp = engine.admit(&request(q, true)).await;
    assert_eq!(resp.cache.outcome, CacheOutcome::HitExact);
    assert_eq!(resp.complexity, None);
    assert_eq!(fake.texts_embedded(), before);
    assert_eq!(
        metrics.counter(
            "tollgate_complexity_unscored_total",
            &[("reason", "exact_hit")]
        ),
        1
    );

    // The same question under another exact key: found by repeat key, served, not scored.
    let mut other = request(q, true);
    if let Some(c) = other.cache.as_mut() {
        c.exact_key = "c".repeat(64);
    }
    let resp = engine.admit(&other).await;
    assert_eq!(resp.cache.outcome, CacheOutcome::HitSemantic);
    assert_eq!(resp.complexity, None);
    assert_eq!(fake.texts_embedded(), before);
    assert_eq!(
        metrics.counter(
            "tollgate_complexity_unscored_total",
            &[("reason", "repeat_hit")]
        ),
        1
    );

    // Semantic hit through the embedding (a typo changes the repeat key): the lookup's
    // embedding is scored.
    let mut other = request("Prove that there are infinitly many primes.", true);
    if let Some(c) = other.cache.as_mut() {
        c.exact_key = "d".repeat(64);
    }
    let reused = metrics.counter(
        "tollgate_complexity_embeddings_total",
        &[("source", "reused")],
    );
    let resp = engine.admit(&other).await;
    assert_eq!(resp.cache.outcome, CacheOutcome::HitSemantic);
    assert!(resp.complexity.unwrap() > 0.99);
    assert_eq!(
        metrics.counter(
            "tollgate_complexity_embeddings_total",
            &[("source", "reused")]
        ),
        reused + 1
    );
}
