//! Accuracy of the learned complexity classifier with the real embedding model
//! (all-MiniLM-L6-v2 via ONNX Runtime), on the held-out `data/complexity/test.jsonl`, next to the
//! filter's heuristic score on the same prompts. `k` is chosen by leave-one-out on the training
//! set only; the test set is used once, for the report.
//!
//! Needs the model and ONNX Runtime from `make setup`; fails (does not skip) without them.
//! Prints the report (`cargo test --release -p tollgate-cache-service --test complexity --
//! --nocapture`); `benches/results/complexity.md` quotes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use tollgate_cache_service::complexity::{
    Classifier, DEFAULT_EXAMPLES, DEFAULT_K, Example, Label, SUGGESTED_THRESHOLD, parse_examples,
};
use tollgate_cache_service::embed::{Embedder, OnnxConfig, OnnxEmbedder};

const TEST: &str = include_str!("../data/complexity/test.jsonl");

/// Held-out accuracy measured when the classifier was built (0.839 with k = 11 at 0.4, 155
/// prompts), minus a margin for model or runtime drift.
const ACCURACY_FLOOR: f64 = 0.78;

#[derive(Default, Debug, Clone, Copy)]
struct Confusion {
    /// (actual complex, predicted complex)
    tp: usize,
    fp: usize,
    tn: usize,
    fn_: usize,
}

impl Confusion {
    fn add(&mut self, actual_complex: bool, predicted_complex: bool) {
        match (actual_complex, predicted_complex) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
            (true, false) => self.fn_ += 1,
        }
    }
    fn n(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }
    fn accuracy(&self) -> f64 {
        (self.tp + self.tn) as f64 / self.n().max(1) as f64
    }
    fn ratio(a: usize, b: usize) -> f64 {
        a as f64 / (a + b).max(1) as f64
    }
    fn report(&self, name: &str) -> String {
        format!(
            "{name}: accuracy {:.3} (n={}) | complex: precision {:.3} recall {:.3} | simple: \
             precision {:.3} recall {:.3} | confusion [actual complex: {} predicted complex, {} \
             predicted simple; actual simple: {} predicted complex, {} predicted simple]",
            self.accuracy(),
            self.n(),
            Self::ratio(self.tp, self.fp),
            Self::ratio(self.tp, self.fn_),
            Self::ratio(self.tn, self.fn_),
            Self::ratio(self.tn, self.fp),
            self.tp,
            self.fn_,
            self.fp,
            self.tn,
        )
    }
}

fn model() -> OnnxEmbedder {
    let cfg = OnnxConfig {
        intra_threads: 2,
        ..OnnxConfig::default()
    };
    OnnxEmbedder::load(&cfg).unwrap_or_else(|e| {
        panic!("cannot load the embedding model ({e}); run `make setup` to fetch it")
    })
}

fn embed_all(m: &OnnxEmbedder, ex: &[Example]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for chunk in ex.chunks(32) {
        let texts: Vec<&str> = chunk.iter().map(|e| e.prompt.as_str()).collect();
        out.extend(m.embed_batch(&texts).unwrap());
    }
    out
}

/// The filter's heuristic on a prompt sent as the only user turn (prompt tokens ≈ bytes / 4, as
/// the heuristic itself estimates the final turn).
fn heuristic(prompt: &str) -> f32 {
    tollgate_core::complexity::score(prompt, prompt.len().div_ceil(4) as u64)
}

#[test]
fn held_out_accuracy_beats_the_floor_and_the_heuristic() {
    let m = model();
    let train = parse_examples(DEFAULT_EXAMPLES).unwrap();
    let test = parse_examples(TEST).unwrap();
    let complex = |e: &Example| e.label == Label::Complex;

    let started = Instant::now();
    let clf = Classifier::train(&m, &train, DEFAULT_K, "builtin").unwrap();
    let train_ms = started.elapsed().as_millis();
    println!(
        "trained on {} examples ({} complex) in {train_ms} ms",
        train.len(),
        train.iter().filter(|e| complex(e)).count()
    );

    // Choosing k and the threshold: leave-one-out on the training set only.
    let mut best = (0usize, 0.0f32, 0.0f32);
    for k in [1, 3, 5, 7, 9, 11, 15, 21, 31] {
        let scores = clf.knn().leave_one_out_scores(k);
        let row: Vec<String> = [0.3f32, 0.4, 0.5, 0.6]
            .iter()
            .map(|&t| {
                let acc = clf.knn().accuracy_at(&scores, t);
                if acc > best.2 {
                    best = (k, t, acc);
                }
                format!("t={t:.1}: {acc:.3}")
            })
            .collect();
        println!("leave-one-out on train: k={k:>2} {}", row.join("  "));
    }
    let default_loo = clf
        .knn()
        .leave_one_out_accuracy(DEFAULT_K, SUGGESTED_THRESHOLD);
    assert!(
        default_loo + 0.015 >= best.2,
        "DEFAULT_K={DEFAULT_K} at {SUGGESTED_THRESHOLD} ({default_loo:.3}) is no longer near \
         the best k={} at {} ({:.3})",
        best.0,
        best.1,
        best.2
    );

    // The heuristic's own threshold, chosen on train too (and the demo policy's 0.3).
    let train_h: Vec<f32> = train.iter().map(|e| heuristic(&e.prompt)).collect();
    let mut h_best = (0.3f32, 0.0f64);
    for t in (1..=20).map(|i| i as f32 * 0.05) {
        let mut c = Confusion::default();
        for (e, s) in train.iter().zip(&train_h) {
            c.add(complex(e), *s >= t);
        }
        if c.accuracy() > h_best.1 {
            h_best = (t, c.accuracy());
        }
    }
    println!(
        "heuristic threshold chosen on train: {:.2} (train accuracy {:.3})",
        h_best.0, h_best.1
    );

    // Held-out test set: once.
    let vectors = embed_all(&m, &test);
    let (mut learned, mut learned_half, mut h_demo, mut h_tuned) = (
        Confusion::default(),
        Confusion::default(),
        Confusion::default(),
        Confusion::default(),
    );
    let mut by_source: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let mut errors = Vec::new();
    for (e, v) in test.iter().zip(&vectors) {
        let s = clf.score(v).unwrap();
        let h = heuristic(&e.prompt);
        learned.add(complex(e), s >= SUGGESTED_THRESHOLD);
        learned_half.add(complex(e), s >= 0.5);
        h_demo.add(complex(e), h >= 0.3);
        h_tuned.add(complex(e), h >= h_best.0);
        let src = e.source.split(':').next().unwrap_or("").to_string();
        let slot = by_source.entry(src).or_default();
        slot.1 += 1;
        if (s >= SUGGESTED_THRESHOLD) == complex(e) {
            slot.0 += 1;
        } else {
            let mut p: String = e.prompt.chars().take(90).collect();
            p = p.replace('\n', " ");
            errors.push(format!(
                "  {:?} label={:?} score={s:.2} {p}",
                e.source, e.label
            ));
        }
    }
    println!(
        "{}",
        learned.report(&format!(
            "learned k-NN (k={DEFAULT_K}, score >= {SUGGESTED_THRESHOLD})"
        ))
    );
    println!(
        "{}",
        learned_half.report(&format!("learned k-NN (k={DEFAULT_K}, score >= 0.5)"))
    );
    println!(
        "{}",
        h_demo.report("heuristic (score >= 0.30, the demo policy)")
    );
    println!(
        "{}",
        h_tuned.report(&format!(
            "heuristic (score >= {:.2}, tuned on train)",
            h_best.0
        ))
    );
    for (src, (right, n)) in &by_source {
        println!("learned by source: {src}: {right}/{n}");
    }
    println!("learned errors:\n{}", errors.join("\n"));

    // Cost per request: the k-NN alone (the embedding is reused from the cache lookup).
    let n = if cfg!(debug_assertions) { 500 } else { 20_000 };
    let started = Instant::now();
    let mut sink = 0.0f32;
    for i in 0..n {
        sink += clf.score(&vectors[i % vectors.len()]).unwrap();
    }
    let per = started.elapsed().as_secs_f64() / n as f64;
    println!(
        "k-NN score: {:.1} µs per request over {} examples x {} dims (checksum {sink:.1})",
        per * 1e6,
        clf.knn().len(),
        m.dim()
    );
    // One embedding when the lookup did not make one.
    let started = Instant::now();
    for e in test.iter().take(50) {
        m.embed_batch(&[e.prompt.as_str()]).unwrap();
    }
    println!(
        "embedding one final turn (when not reused): {:.2} ms mean over 50 test prompts",
        started.elapsed().as_secs_f64() * 1e3 / 50.0
    );

    assert!(
        learned.accuracy() >= ACCURACY_FLOOR,
        "held-out accuracy {:.3} < floor {ACCURACY_FLOOR}",
        learned.accuracy()
    );
    assert!(
        learned.accuracy() > h_demo.accuracy(),
        "the learned classifier should beat the heuristic at the demo policy's threshold"
    );
    if !cfg!(debug_assertions) {
        assert!(per < 200e-6, "k-NN scoring took {:.1} µs", per * 1e6);
    }
}

/// The assembled service (`service::build`, real model, `complexity.trainAtStart`): `/v1/admit`
/// with `complexity: true` answers with a score, and the metrics show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_scores_admits_over_http() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let dir = std::env::temp_dir().join(format!(
        "tollgate-complexity-service-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, r#"{"complexity": {"trainAtStart": true}}"#).unwrap();
    let args = tollgate_cache_service::service::ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        redis_url: None,
        redis_namespace: "tollgate".into(),
        config: Some(config),
        admin_token: None,
        model_dir: None,
        ort_dylib: None,
        embed_threads: 2,
        embed_batch_window_ms: 0,
        device: "cpu".into(),
    };
    let state = tollgate_cache_service::service::build(&args)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while state.engine.complexity().is_none() && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(state.engine.complexity().is_some(), "not trained in 120 s");

    let post = |body: serde_json::Value| {
        let state = state.clone();
        async move {
            let resp = tollgate_cache_service::app(state)
                .oneshot(
                    Request::post("/v1/admit")
                        .header("content-type", "application/json")
                        .body(Body::from(body.to_string()))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    let base = serde_json::json!({"request_id": "r1", "tenant": "t", "api": "openai_chat",
        "model": "gpt-4o", "stream": false, "route": "/v1/chat/completions"});
    let mut hard = base.clone();
    hard["complexity"] = true.into();
    hard["complexity_query"] = "Prove that every bipartite graph has no odd cycle, and design \
        an algorithm that finds an odd cycle when the graph is not bipartite."
        .into();
    let v = post(hard).await;
    let s = v["complexity"].as_f64().unwrap();
    assert!(s >= 0.5, "{v}");
    let mut easy = base.clone();
    easy["complexity"] = true.into();
    easy["complexity_query"] = "What time does the pharmacy open on Sunday?".into();
    let v = post(easy).await;
    let s = v["complexity"].as_f64().unwrap();
    assert!(s < 0.4, "{v}");
    // Not asked: the field is null (older filters ignore it).
    let v = post(base).await;
    assert!(v["complexity"].is_null(), "{v}");
    let m = state.metrics.render();
    assert!(
        m.contains("tollgate_complexity_embeddings_total{source=\"computed\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_complexity_training_seconds_count 1"),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
