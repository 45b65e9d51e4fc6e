//! The labelled pairs in `cache-service/data/pairs/`: well formed, balanced, split by the rule
//! the README documents (so `test.jsonl` stays a held-out set).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

const SAME_KINDS: &[&str] = &["repeat", "paraphrase"];
const OTHER_KINDS: &[&str] = &[
    "negation",
    "number",
    "date",
    "entity",
    "swap",
    "different",
    "unrelated",
];

/// Every pairs file (`sources/` excepted: `dev` and `test` are its split).
fn files() -> Vec<String> {
    let mut f = vec!["dev.jsonl".to_string(), "test.jsonl".to_string()];
    f.extend(holdouts());
    f
}

/// The sets written after a version of the guards, each evaluated once while unseen.
fn holdouts() -> Vec<String> {
    let h = tollgate_cache_service::semantic::calibrate::holdout_files(&dir());
    assert!(h.len() >= 10, "{h:?}");
    h
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pairs")
}

fn load(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}:{}: {e}", i + 1)))
        .collect()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{v}: `{k}` is not a string"))
}

#[test]
fn pairs_are_well_formed_and_labels_match_kinds() {
    let mut ids = HashSet::new();
    for name in &files() {
        for p in load(name) {
            let (a, b, kind) = (s(&p, "a"), s(&p, "b"), s(&p, "kind"));
            let same = p["same"].as_bool().unwrap();
            assert!(!a.trim().is_empty() && !b.trim().is_empty(), "{p}");
            assert_ne!(a, b, "{p}");
            assert!(
                SAME_KINDS.contains(&kind) || OTHER_KINDS.contains(&kind),
                "unknown kind in {p}"
            );
            assert_eq!(
                same,
                SAME_KINDS.contains(&kind),
                "label does not match kind: {p}"
            );
            let source = s(&p, "source");
            match name.strip_suffix(".jsonl") {
                Some(stem) if stem.starts_with("holdout") => {
                    assert_eq!(source, format!("tollgate-{stem}"), "{p}")
                }
                _ => assert!(matches!(source, "fow-cache" | "tollgate"), "{p}"),
            }
            assert!(
                ids.insert(s(&p, "id").to_string()),
                "duplicate id {}",
                s(&p, "id")
            );
        }
    }
}

#[test]
fn enough_pairs_balanced_with_hard_negatives() {
    let all: Vec<Value> = load("dev.jsonl")
        .into_iter()
        .chain(load("test.jsonl"))
        .collect();
    assert!(all.len() >= 800, "{} pairs", all.len());
    let same = all.iter().filter(|p| p["same"].as_bool().unwrap()).count();
    let share = same as f64 / all.len() as f64;
    assert!(
        (0.4..=0.6).contains(&share),
        "share of true duplicates {share:.2}"
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &all {
        *kinds.entry(s(p, "kind")).or_default() += 1;
    }
    for k in SAME_KINDS.iter().chain(OTHER_KINDS) {
        assert!(
            kinds.get(k).copied().unwrap_or(0) >= 40,
            "too few `{k}` pairs: {kinds:?}"
        );
    }
    let hard: usize = ["negation", "number", "date", "entity", "swap", "different"]
        .iter()
        .map(|k| kinds[k])
        .sum();
    assert!(
        hard * 2 >= all.len() - same,
        "hard negatives are most of the negatives: {kinds:?}"
    );
}

#[test]
fn holdouts_are_half_true_duplicates_with_every_kind() {
    for name in &holdouts() {
        let rows = load(name);
        let same = rows.iter().filter(|p| p["same"].as_bool().unwrap()).count();
        assert_eq!(
            same * 2,
            rows.len(),
            "{name}: {same} of {} same",
            rows.len()
        );
        let kinds: HashSet<&str> = rows.iter().map(|p| s(p, "kind")).collect();
        for k in SAME_KINDS.iter().chain(OTHER_KINDS) {
            assert!(kinds.contains(k), "{name}: no `{k}` pair");
        }
    }
}

#[test]
fn split_follows_the_documented_rule() {
    // Within each (source, kind) group, ordered by SHA-256 of the id: first half dev, rest test.
    let mut groups: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for name in ["fow-cache.jsonl", "tollgate.jsonl"] {
        for p in load(&format!("sources/{name}")) {
            groups
                .entry((s(&p, "source").to_string(), s(&p, "kind").to_string()))
                .or_default()
                .push(p);
        }
    }
    let (mut dev, mut test) = (Vec::new(), Vec::new());
    for (_, mut rows) in groups {
        rows.sort_by_key(|r| hex(&Sha256::digest(s(r, "id").as_bytes())));
        let half = rows.len() / 2;
        test.extend(rows.split_off(half));
        dev.extend(rows);
    }
    for (name, mut expected) in [("dev.jsonl", dev), ("test.jsonl", test)] {
        expected.sort_by(|x, y| s(x, "id").cmp(s(y, "id")));
        let got = load(name);
        assert_eq!(got.len(), expected.len(), "{name}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(
                g, e,
                "{name} differs from the split of sources/ (run split.py)"
            );
        }
    }
}

#[test]
fn no_pair_is_in_two_files() {
    let key = |p: &Value| {
        let (a, b) = (s(p, "a").to_lowercase(), s(p, "b").to_lowercase());
        if a < b { (a, b) } else { (b, a) }
    };
    let all = files();
    let mut seen: std::collections::HashMap<(String, String), &str> = Default::default();
    for name in &all {
        for p in load(name) {
            if let Some(other) = seen.insert(key(&p), name) {
                panic!("in {other} and {name}: {p}");
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
