//! Calibration with the real model (all-MiniLM-L6-v2) on the development pairs: the guards must
//! let a low threshold serve many more true duplicates than plain cosine at the same bound on
//! wrong answers. Needs `make setup`; fails (never skips) when the model is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use tollgate_cache_service::embed::{OnnxConfig, OnnxEmbedder};
use tollgate_cache_service::semantic::calibrate::{
    CalibrationReport, ScoredPair, choose_by_false_hits, default_thresholds, load_pairs,
    score_pairs, sweep, thresholds,
};

fn embedder() -> OnnxEmbedder {
    let config = OnnxConfig::default();
    if let Err(e) = config.check_files() {
        panic!("{e}\nrun `make setup` to fetch the embedding model and ONNX Runtime");
    }
    OnnxEmbedder::load(&config).unwrap_or_else(|e| panic!("{e}\nrun `make setup`"))
}

#[test]
fn guards_lift_the_hit_rate_at_one_percent_false_hits() {
    let pairs =
        load_pairs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pairs/dev.jsonl")).unwrap();
    let scored = score_pairs(&embedder(), &pairs).unwrap();
    assert_eq!(scored.len(), pairs.len());
    // true duplicates and hard negatives (everything but `unrelated`)
    let hard: Vec<ScoredPair> = scored
        .iter()
        .filter(|p| p.kind != "unrelated")
        .cloned()
        .collect();
    let grid = thresholds(0.70, 0.999, 0.001);
    let plain = choose_by_false_hits(&sweep(&hard, &grid, false), 0.01);
    let guarded =
        choose_by_false_hits(&sweep(&hard, &grid, true), 0.01).expect("a threshold with guards");
    let plain_recall = plain.map_or(0.0, |p| p.recall);
    assert!(
        guarded.recall >= 0.40,
        "hit rate with guards {:.3} at {:.3}",
        guarded.recall,
        guarded.threshold
    );
    assert!(guarded.false_hit_rate <= 0.01);
    assert!(
        guarded.recall >= plain_recall + 0.25,
        "guards {:.3} vs plain {plain_recall:.3}",
        guarded.recall
    );

    // the report used by the `calibrate` command
    let report = CalibrationReport::new(&scored, &default_thresholds(), true, 0.99);
    let chosen = report
        .chosen
        .clone()
        .expect("a threshold with precision 0.99");
    assert!(
        chosen.precision >= 0.99 && chosen.recall > 0.3,
        "{chosen:?}"
    );
    let md = report.to_markdown();
    assert!(
        md.contains("chosen threshold:") && md.contains("| repeat |"),
        "{md}"
    );
}
