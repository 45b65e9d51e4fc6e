//! Partitions: isolation, brute force → ANN switch, moves, removal by id, drop/clear, totals,
//! concurrent use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tollgate_cache_service::index::synth::Synth;
use tollgate_cache_service::index::{PartitionPolicy, Partitions};

const DIM: usize = 384;

fn row(data: &[f32], i: usize) -> &[f32] {
    &data[i * DIM..(i + 1) * DIM]
}

fn partitions(threshold: usize) -> Partitions {
    let mut policy = PartitionPolicy::with_dim(DIM);
    policy.ann_threshold = threshold;
    Partitions::with_policy(policy)
}

#[test]
fn partitions_are_isolated_before_and_after_the_ann_switch() {
    let p = partitions(100);
    let mut s = Synth::new(DIM, 16, 1);
    let data = s.points(300);
    // Same vectors in both partitions; A's ids are even, B's odd.
    for i in 0..300 {
        p.add("A", 2 * i as u64, row(&data, i)).unwrap();
        p.add("B", 2 * i as u64 + 1, row(&data, i)).unwrap();
    }
    assert!(p.is_ann("A") && p.is_ann("B"));
    p.add("C", 10_001, row(&data, 0)).unwrap();
    assert!(!p.is_ann("C"));
    for i in 0..300 {
        let q = s.paraphrase(row(&data, i));
        let a = p.search("A", &q, 10);
        let b = p.search("B", &q, 10);
        let c = p.search("C", &q, 10);
        assert!(!a.is_empty() && !b.is_empty());
        assert!(a.iter().all(|h| h.0 % 2 == 0), "{a:?}");
        assert!(b.iter().all(|h| h.0 % 2 == 1), "{b:?}");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, 10_001);
    }
    assert!(p.search("nope", row(&data, 0), 5).is_empty());
}

#[test]
fn switches_to_ann_above_the_threshold_and_keeps_answers() {
    let p = partitions(200);
    let mut s = Synth::new(DIM, 32, 2);
    let data = s.points(500);
    for i in 0..200 {
        p.add("t", i as u64, row(&data, i)).unwrap();
    }
    assert!(!p.is_ann("t"));
    let before: Vec<u64> = (0..200)
        .map(|i| p.search("t", row(&data, i), 1)[0].0)
        .collect();
    p.add("t", 200, row(&data, 200)).unwrap();
    assert!(p.is_ann("t"));
    let after: Vec<u64> = (0..200)
        .map(|i| p.search("t", row(&data, i), 1)[0].0)
        .collect();
    assert_eq!(before, after);
    for i in 201..500 {
        p.add("t", i as u64, row(&data, i)).unwrap();
    }
    assert_eq!(p.partition_len("t"), 500);
    let st = p.stats();
    assert_eq!((st.partitions, st.ann_partitions, st.entries), (1, 1, 500));
    assert!(st.memory_bytes > 500 * DIM * 2, "{st:?}");
}

#[test]
fn moves_removes_drops_and_clears() {
    let p = partitions(50);
    let mut s = Synth::new(DIM, 8, 3);
    let data = s.points(200);
    for i in 0..100 {
        p.add("x", i as u64, row(&data, i)).unwrap();
    }
    p.add("y", 500, row(&data, 150)).unwrap();
    assert_eq!(p.stats().entries, 101);

    // Adding an id under another partition moves it.
    p.add("y", 3, row(&data, 3)).unwrap();
    assert_eq!(p.partition_of(3).as_deref(), Some("y"));
    assert!(p.search("x", row(&data, 3), 10).iter().all(|h| h.0 != 3));
    assert_eq!(p.search("y", row(&data, 3), 1)[0].0, 3);
    assert_eq!(p.stats().entries, 101);

    // remove() needs the right partition; remove_id finds it.
    p.remove("x", 3);
    assert_eq!(p.partition_of(3).as_deref(), Some("y"));
    p.remove("y", 3);
    assert_eq!(p.partition_of(3), None);
    assert!(p.remove_id(4));
    assert!(!p.remove_id(4));
    assert!(p.search("x", row(&data, 4), 10).iter().all(|h| h.0 != 4));
    assert_eq!(p.partition_len("x"), 98);

    // A partition emptied by removals disappears.
    p.remove_id(500);
    assert_eq!(p.stats().partitions, 1);
    assert!(p.search("y", row(&data, 150), 1).is_empty());

    assert_eq!(p.drop_partition("x"), 98);
    assert_eq!(p.drop_partition("x"), 0);
    assert_eq!(p.partition_of(10), None);
    assert!(p.search("x", row(&data, 10), 1).is_empty());
    let st = p.stats();
    assert_eq!((st.partitions, st.ann_partitions, st.entries), (0, 0, 0));

    p.add("z", 1, row(&data, 1)).unwrap();
    p.clear();
    assert_eq!(p.stats().entries, 0);
    assert!(p.search("z", row(&data, 1), 1).is_empty());

    // A refused vector leaves nothing behind.
    assert!(p.add("w", 9, &[1.0; 3]).is_err());
    assert_eq!(p.stats().partitions, 0);
}

#[test]
fn concurrent_searches_while_partitions_grow_and_switch() {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let p = Arc::new(partitions(64));
        let mut s = Synth::new(DIM, 16, 4);
        let data = Arc::new(s.points(800));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|t| {
                let (p, data, done) = (p.clone(), data.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut i = t;
                    while !done.load(Ordering::Acquire) {
                        let part = if i % 2 == 0 { "even" } else { "odd" };
                        let hits = p.search(part, row(&data, i % 800), 3);
                        assert!(hits.iter().all(|h| h.0 % 2 == (i % 2) as u64), "{hits:?}");
                        i += 1;
                    }
                })
            })
            .collect();
        for i in 0..800 {
            let part = if i % 2 == 0 { "even" } else { "odd" };
            p.add(part, i as u64, row(&data, i)).unwrap();
            if i % 50 == 49 {
                p.remove_id(i as u64 - 20);
            }
        }
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().unwrap();
        }
        assert!(p.is_ann("even") && p.is_ann("odd"));
        assert_eq!(p.stats().entries, 800 - 16);
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: surface its message.
            if let Err(e) = worker.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("deadlock? not done in 120s"),
    }
}

#[test]
fn dimension_is_learnt_from_the_first_vector() {
    let p = Partitions::new();
    assert_eq!(p.dim(), None);
    assert!(p.is_empty());
    p.add("a", 1, &[1.0, 0.0, 0.0]).unwrap();
    assert_eq!(p.dim(), Some(3));
    assert!(p.add("a", 2, &[1.0; 4]).is_err());
    assert!(p.add("b", 2, &[0.0, 2.0, 0.0]).is_ok());
    assert_eq!(p.len(), 2);
    assert!(p.memory_bytes() > 0);
    assert_eq!(p.search("b", &[0.0, 1.0, 0.0], 3)[0].0, 2);
    assert!(p.search("b", &[0.0, 1.0], 3).is_empty());
    p.clear();
    assert_eq!(p.dim(), None);
    p.add("a", 1, &[1.0; 5]).unwrap();
    assert_eq!(p.dim(), Some(5));
}
