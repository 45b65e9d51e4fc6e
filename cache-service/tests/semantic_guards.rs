//! The guards on the development pairs (`data/pairs/dev.jsonl`), without the model: true
//! duplicates must mostly pass and hard negatives of the kinds the guards target must mostly be
//! rejected. A regression test for the word lists; the held-out numbers are in
//! `benches/results/semantic.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use tollgate_cache_service::semantic::calibrate::load_pairs;
use tollgate_cache_service::semantic::guards::{GuardReason, check};

#[test]
fn guards_on_dev_pairs() {
    let pairs =
        load_pairs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pairs/dev.jsonl")).unwrap();
    // kind -> (pairs, passed)
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in &pairs {
        let verdict = check(&p.a, &p.b);
        assert_eq!(
            verdict.is_pass(),
            check(&p.b, &p.a).is_pass(),
            "asymmetric: {p:?}"
        );
        let e = by.entry(p.kind.clone().unwrap()).or_default();
        e.0 += 1;
        if verdict.is_pass() {
            e.1 += 1;
        }
    }
    let pass_rate = |k: &str| by[k].1 as f64 / by[k].0 as f64;
    let report = format!("{by:?}");
    // true duplicates pass
    assert!(pass_rate("repeat") >= 0.95, "{report}");
    assert!(pass_rate("paraphrase") >= 0.75, "{report}");
    // targeted hard negatives are rejected
    assert!(pass_rate("number") <= 0.05, "{report}");
    assert!(pass_rate("date") <= 0.10, "{report}");
    assert!(pass_rate("swap") <= 0.20, "{report}");
    assert!(pass_rate("entity") <= 0.15, "{report}");
    assert!(pass_rate("negation") <= 0.30, "{report}");
}

#[test]
fn reasons_match_the_kind_of_minimal_edits() {
    let pairs =
        load_pairs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pairs/dev.jsonl")).unwrap();
    let expected = |kind: &str| match kind {
        "negation" => Some(vec![GuardReason::Negation]),
        "number" => Some(vec![GuardReason::Number, GuardReason::Date]),
        "date" => Some(vec![GuardReason::Date, GuardReason::Number]),
        "swap" => Some(vec![GuardReason::Swap, GuardReason::Entity]),
        _ => None,
    };
    let (mut total, mut right) = (0, 0);
    for p in &pairs {
        let Some(reasons) = expected(p.kind.as_deref().unwrap()) else {
            continue;
        };
        if let Some(r) = check(&p.a, &p.b).reason() {
            total += 1;
            if reasons.contains(&r) {
                right += 1;
            }
        }
    }
    assert!(
        right as f64 >= 0.9 * total as f64,
        "{right}/{total} rejections name the edit's kind"
    );
}
