//! The async Batcher with the FakeEmbedder test double: no model files, runs in milliseconds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tollgate_cache_service::embed::{BatchConfig, Batcher, EmbedError, FakeEmbedder};

/// Polls `cond` every millisecond, up to 5 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_callers_each_get_their_own_vector() {
    let fake = Arc::new(FakeEmbedder::new(64).with_delay(Duration::from_millis(2)));
    let batcher = Arc::new(Batcher::new(fake.clone(), BatchConfig::default()));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(
                async move { (i, b.embed(format!("query {i} about topic {}", i % 7)).await) },
            )
        })
        .collect();
    for t in tasks {
        let (i, v) = t.await.unwrap();
        assert_eq!(
            v.unwrap(),
            fake.vector(&format!("query {i} about topic {}", i % 7)),
            "caller {i}"
        );
    }
    let s = batcher.stats();
    assert_eq!(s.items, 200);
    assert_eq!(fake.texts_embedded(), 200);
    assert_eq!(s.batches, fake.calls());
    assert!(s.largest_batch > 1, "{s:?}");
    assert!(s.largest_batch <= 32 && fake.largest_batch() <= 32, "{s:?}");
    assert!(s.mean_batch_size() > 1.0, "{s:?}");
    assert_eq!(
        (s.failed_batches, s.rejected, s.cancelled, s.queued),
        (0, 0, 0, 0)
    );
}

#[tokio::test]
async fn max_batch_is_respected() {
    let fake = Arc::new(FakeEmbedder::new(8).with_delay(Duration::from_millis(1)));
    let batcher = Arc::new(Batcher::new(
        fake.clone(),
        BatchConfig {
            max_batch: 8,
            window: Duration::from_millis(5),
            queue: 1024,
        },
    ));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move { b.embed(i.to_string()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.texts_embedded(), 100);
    assert!(
        fake.largest_batch() <= 8 && fake.largest_batch() > 1,
        "{}",
        fake.largest_batch()
    );
    assert!(fake.calls() >= 13, "{}", fake.calls()); // at least ceil(100 / 8)
}

#[tokio::test]
async fn requests_within_the_window_share_a_batch() {
    let fake = Arc::new(FakeEmbedder::new(8));
    let batcher = Batcher::new(
        fake.clone(),
        BatchConfig {
            max_batch: 64,
            window: Duration::from_millis(200),
            queue: 64,
        },
    );
    let (a, b, c) = tokio::join!(
        batcher.embed("a".into()),
        batcher.embed("b".into()),
        batcher.embed("c".into())
    );
    assert_eq!(a.unwrap(), fake.vector("a"));
    assert_eq!(b.unwrap(), fake.vector("b"));
    assert_eq!(c.unwrap(), fake.vector("c"));
    assert_eq!(fake.calls(), 1);
    assert_eq!(fake.largest_batch(), 3);
}

#[tokio::test]
async fn a_full_batch_does_not_wait_for_the_window() {
    let fake = Arc::new(FakeEmbedder::new(8));
    let batcher = Batcher::new(
        fake.clone(),
        BatchConfig {
            max_batch: 4,
            window: Duration::from_secs(60),
            queue: 64,
        },
    );
    let all = async {
        tokio::join!(
            batcher.embed("a".into()),
            batcher.embed("b".into()),
            batcher.embed("c".into()),
            batcher.embed("d".into())
        )
    };
    // Far below the window: a full batch is sent at once.
    let (a, b, c, d) = tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("a full batch waited for the window");
    for r in [a, b, c, d] {
        r.unwrap();
    }
    assert_eq!((fake.calls(), fake.largest_batch()), (1, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_at_once() {
    let fake = Arc::new(FakeEmbedder::new(8).with_delay(Duration::from_millis(300)));
    let batcher = Arc::new(Batcher::new(
        fake.clone(),
        BatchConfig {
            max_batch: 4,
            window: Duration::ZERO,
            queue: 4,
        },
    ));
    // One request in the model...
    let first = {
        let b = batcher.clone();
        tokio::spawn(async move { b.embed("first".into()).await })
    };
    wait_until("the first batch to start", || fake.calls() == 1).await;
    // ...four waiting: the queue is full...
    let queued: Vec<_> = (0..4)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move { b.embed(format!("queued {i}")).await })
        })
        .collect();
    wait_until("four queued requests", || batcher.stats().queued == 4).await;
    // ...so the next one is refused without waiting.
    let refused = batcher.embed("one too many".into()).await;
    assert_eq!(refused, Err(EmbedError::Overloaded(4)));
    assert_eq!(batcher.stats().rejected, 1);
    // Everything accepted is still answered.
    first.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap().unwrap();
    }
    assert_eq!(fake.texts_embedded(), 5);
    assert_eq!(fake.calls(), 2); // the four queued ones went together
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_are_not_computed() {
    let fake = Arc::new(FakeEmbedder::new(8).with_delay(Duration::from_millis(200)));
    let batcher = Arc::new(Batcher::new(
        fake.clone(),
        BatchConfig {
            max_batch: 8,
            window: Duration::ZERO,
            queue: 16,
        },
    ));
    let first = {
        let b = batcher.clone();
        tokio::spawn(async move { b.embed("first".into()).await })
    };
    wait_until("the first batch to start", || fake.calls() == 1).await;
    // Enqueued behind the running batch, then given up on by its caller.
    let gave_up = tokio::time::timeout(Duration::from_millis(5), batcher.embed("abandoned".into()));
    assert!(gave_up.await.is_err());
    first.await.unwrap().unwrap();
    wait_until("the abandoned request to be dropped", || {
        batcher.stats().cancelled == 1
    })
    .await;
    assert_eq!(fake.calls(), 1);
    assert_eq!(fake.texts_embedded(), 1);
    // The batcher keeps serving.
    assert_eq!(
        batcher.embed("next".into()).await.unwrap(),
        fake.vector("next")
    );
}

#[tokio::test]
async fn model_errors_reach_the_caller() {
    let fake = Arc::new(FakeEmbedder::new(8));
    let batcher = Batcher::new(fake.clone(), BatchConfig::default());
    fake.set_failing(true);
    assert!(matches!(
        batcher.embed("x".into()).await,
        Err(EmbedError::Failed(_))
    ));
    assert_eq!(batcher.stats().failed_batches, 1);
    fake.set_failing(false);
    assert_eq!(batcher.embed("x".into()).await.unwrap(), fake.vector("x"));
}
