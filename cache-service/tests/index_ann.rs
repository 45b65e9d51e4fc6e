//! The ANN index against the exact one: recall on clustered data, removal, replacement,
//! capacity growth, empty index, concurrent searches while adding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tollgate_cache_service::index::synth::Synth;
use tollgate_cache_service::index::{
    AnnConfig, AnnIndex, BruteForceIndex, RESERVED_ID, VectorIndex,
};

const DIM: usize = 384;

fn row(data: &[f32], i: usize) -> &[f32] {
    &data[i * DIM..(i + 1) * DIM]
}

fn ann(initial_capacity: usize) -> AnnIndex {
    AnnIndex::new(
        DIM,
        AnnConfig {
            initial_capacity,
            ..AnnConfig::default()
        },
    )
    .unwrap()
}

/// Runs `f` on another thread and fails (instead of hanging) if it takes too long.
fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: surface its message.
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("deadlock? not done in {secs}s"),
    }
}

/// Exact top-k by usearch's own brute-force scan in f32 (optimised C++ even in debug test
/// builds, where our f32 scan is ~100x slower); checked against [`BruteForceIndex`] below.
struct Oracle(usearch::Index);

impl Oracle {
    fn new(data: &[f32]) -> Self {
        let idx = usearch::Index::new(&usearch::IndexOptions {
            dimensions: DIM,
            metric: usearch::MetricKind::IP,
            quantization: usearch::ScalarKind::F32,
            connectivity: 0,
            expansion_add: 0,
            expansion_search: 0,
            multi: false,
        })
        .unwrap();
        idx.reserve(data.len() / DIM).unwrap();
        for (i, v) in data.chunks_exact(DIM).enumerate() {
            idx.add(i as u64, v).unwrap();
        }
        Oracle(idx)
    }

    fn search(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let m = self.0.exact_search(q, k).unwrap();
        m.keys
            .iter()
            .zip(&m.distances)
            .map(|(k, d)| (*k, 1.0 - d))
            .collect()
    }
}

#[test]
fn recall_at_1_vs_exact_search_on_clustered_data() {
    let n = 20_000;
    let mut s = Synth::new(DIM, 1024, 11);
    let data = s.points(n);
    let exact = Oracle::new(&data);
    let approx = ann(n);
    for i in 0..n {
        approx.try_add(i as u64, row(&data, i)).unwrap();
    }
    assert_eq!(approx.len(), n);

    // The oracle agrees with our exact index (a few queries: it is slow in debug builds).
    let brute = BruteForceIndex::new(DIM);
    for i in 0..n {
        brute.try_add(i as u64, row(&data, i)).unwrap();
    }
    for i in 0..5 {
        let q = s.paraphrase(row(&data, i * 997));
        let (a, b) = (exact.search(&q, 3), brute.search(&q, 3));
        assert_eq!(
            a.iter().map(|h| h.0).collect::<Vec<_>>(),
            b.iter().map(|h| h.0).collect::<Vec<_>>()
        );
        assert!((a[0].1 - b[0].1).abs() < 1e-4);
    }

    let (mut para_hits, mut para) = (0, 0);
    let (mut far_hits10, mut far10) = (0, 0);
    let mut far_gaps = Vec::new();
    for i in 0..600 {
        if i % 6 == 5 {
            // Far query: no close neighbour, many near-ties. What matters to the cache: the
            // best similarity found is close to the true best (a far query is a miss anyway).
            let q = s.far();
            let want = exact.search(&q, 10);
            let got = approx.search(&q, 10);
            far_hits10 += got
                .iter()
                .filter(|h| want.iter().any(|w| w.0 == h.0))
                .count();
            far10 += want.len();
            far_gaps.push(want[0].1 - got[0].1);
        } else {
            let src = s.rng().below(n);
            let q = s.paraphrase(row(&data, src));
            let want = exact.search(&q, 1)[0];
            let got = approx.search(&q, 1);
            para += 1;
            if got.first().map(|h| h.0) == Some(want.0) {
                para_hits += 1;
                // f16 storage: the similarity stays close to the exact cosine.
                assert!((got[0].1 - want.1).abs() < 2e-3, "{got:?} vs {want:?}");
            }
        }
    }
    let r1 = para_hits as f64 / para as f64;
    let r10 = far_hits10 as f64 / far10 as f64;
    let mean_gap = far_gaps.iter().sum::<f32>() / far_gaps.len() as f32;
    let max_gap = far_gaps.iter().fold(0.0f32, |a, b| a.max(*b));
    eprintln!(
        "paraphrase recall@1 {r1:.4}; far queries: recall@10 {r10:.4}, top-1 similarity gap mean {mean_gap:.4} max {max_gap:.4}"
    );
    assert!(r1 >= 0.98, "paraphrase recall@1 {r1}");
    assert!(r10 >= 0.6, "far-query recall@10 {r10}");
    assert!(mean_gap < 0.01, "far-query mean similarity gap {mean_gap}");
    assert!(max_gap < 0.1, "far-query max similarity gap {max_gap}");
}

#[test]
fn removed_entries_are_never_returned() {
    let n = 2000;
    let mut s = Synth::new(DIM, 64, 5);
    let data = s.points(n);
    let exact = BruteForceIndex::new(DIM);
    let approx = ann(n);
    for i in 0..n {
        exact.try_add(i as u64, row(&data, i)).unwrap();
        approx.try_add(i as u64, row(&data, i)).unwrap();
    }
    // Remove every other entry, then query with the removed vectors themselves.
    for i in (0..n).step_by(2) {
        exact.remove(i as u64);
        approx.remove(i as u64);
        approx.remove(i as u64); // twice: no-op
    }
    assert_eq!(approx.len(), n / 2);
    assert_eq!(exact.len(), n / 2);
    let mut agree = 0;
    for i in (0..n).step_by(2) {
        assert!(!approx.contains(i as u64));
        let hits = approx.search(row(&data, i), 10);
        assert!(!hits.is_empty());
        assert!(
            hits.iter().all(|h| h.0 % 2 == 1),
            "removed id returned: {hits:?}"
        );
        let want = exact.search(row(&data, i), 10);
        assert!(want.iter().all(|h| h.0 % 2 == 1));
        agree += (hits[0].0 == want[0].0) as usize;
    }
    // Tombstones keep the graph navigable: still finds the true nearest survivor.
    assert!(agree as f64 / (n / 2) as f64 >= 0.95, "agree {agree}");
    // Re-adding reuses the freed slots and the entries come back.
    let cap = approx.capacity();
    for i in (0..n).step_by(2) {
        approx.try_add(i as u64, row(&data, i)).unwrap();
    }
    assert_eq!(approx.len(), n);
    assert_eq!(approx.capacity(), cap);
    assert_eq!(approx.search(row(&data, 10), 1)[0].0, 10);
}

#[test]
fn adding_an_existing_id_replaces_its_vector() {
    let mut s = Synth::new(DIM, 8, 9);
    let a = s.point();
    let b = s.far();
    for idx in [
        Box::new(ann(16)) as Box<dyn VectorIndex>,
        Box::new(BruteForceIndex::new(DIM)),
    ] {
        idx.try_add(7, &a).unwrap();
        idx.try_add(7, &b).unwrap();
        assert_eq!(idx.len(), 1);
        let hits = idx.search(&b, 5);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].0, 7);
        assert!(hits[0].1 > 0.999, "{hits:?}");
    }
}

#[test]
fn grows_past_the_initial_reservation() {
    let idx = ann(16);
    assert!(idx.capacity() >= 16 && idx.capacity() < 1000);
    let mut s = Synth::new(DIM, 32, 3);
    let data = s.points(1500);
    for i in 0..1500 {
        idx.try_add(i as u64, row(&data, i)).unwrap();
    }
    assert_eq!(idx.len(), 1500);
    assert!(idx.capacity() >= 1500);
    // Every entry is still its own nearest neighbour.
    let found = (0..1500)
        .filter(|&i| idx.search(row(&data, i), 1).first().map(|h| h.0) == Some(i as u64))
        .count();
    assert!(found >= 1490, "found {found}");
}

#[test]
fn empty_index_and_bad_input() {
    for idx in [
        Box::new(ann(4)) as Box<dyn VectorIndex>,
        Box::new(BruteForceIndex::new(DIM)),
    ] {
        let q = vec![1.0; DIM];
        assert!(idx.is_empty());
        assert!(idx.search(&q, 5).is_empty());
        assert!(idx.search(&q, 0).is_empty());
        idx.remove(42);
        assert!(!idx.contains(42));
        assert!(idx.try_add(RESERVED_ID, &q).is_err());
        assert!(idx.try_add(1, &q[..10]).is_err());
        assert!(idx.try_add(1, &vec![0.0; DIM]).is_err());
        assert!(idx.try_add(1, &vec![f32::INFINITY; DIM]).is_err());
        idx.add(1, &q[..3]); // logged, not stored
        assert!(idx.is_empty());
        // Unnormalised input is normalised: the similarity is a cosine.
        idx.try_add(1, &vec![3.0; DIM]).unwrap();
        let hits = idx.search(&q, 5);
        assert_eq!(hits.len(), 1);
        assert!((hits[0].1 - 1.0).abs() < 1e-3, "{hits:?}");
        assert!(idx.search(&q[..5], 5).is_empty());
        assert!(idx.memory_bytes() > 0);
        idx.remove(1);
        assert!(idx.is_empty());
        assert!(idx.search(&q, 5).is_empty());
    }
}

#[test]
fn concurrent_searches_while_adding_and_removing() {
    within(120, || {
        let n = 4000;
        let mut s = Synth::new(DIM, 64, 21);
        let data = Arc::new(s.points(n));
        // Few thread contexts and a small start: searches wait for permits, growth takes
        // the exclusive lock while searches are running.
        let idx = Arc::new(
            AnnIndex::new(
                DIM,
                AnnConfig {
                    initial_capacity: 64,
                    max_concurrency: 2,
                    ..AnnConfig::default()
                },
            )
            .unwrap(),
        );
        let added = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let searchers: Vec<_> = (0..4)
            .map(|t| {
                let (idx, data, added, done) =
                    (idx.clone(), data.clone(), added.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut searches = 0u64;
                    let mut i = t;
                    while !done.load(Ordering::Acquire) {
                        let before = added.load(Ordering::Acquire);
                        let hits = idx.search(row(&data, i % n), 5);
                        let after = added.load(Ordering::Acquire);
                        // Only ids added at some point: at most the one being added now.
                        assert!(hits.iter().all(|h| h.0 <= after), "{hits:?} after {after}");
                        // At least 9 of every 10 added are live: a full result set.
                        if before >= 10 {
                            assert_eq!(hits.len(), 5, "{hits:?} with {before} added");
                        }
                        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
                        searches += 1;
                        i += 7;
                    }
                    searches
                })
            })
            .collect();
        for i in 0..n {
            idx.try_add(i as u64, row(&data, i)).unwrap();
            added.store(i as u64 + 1, Ordering::Release);
            if i % 10 == 9 {
                idx.remove(i as u64 - 4);
            }
        }
        done.store(true, Ordering::Release);
        let total: u64 = searchers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(total > 0);
        assert_eq!(idx.len(), n - n / 10);
        for i in (5..n).step_by(10) {
            assert!(
                idx.search(row(&data, i), 10)
                    .iter()
                    .all(|h| h.0 != i as u64)
            );
        }
    });
}
