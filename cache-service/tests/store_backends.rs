//! One conformance suite for every `Store` backend (embedded file, Redis), plus what only one of
//! them can show: reopening the file, a Redis restart, two replicas on one Redis, the key scheme.
//!
//! Redis tests start their own `redis-server` on a free loopback port (see `tests/src/redis.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../tests/src/redis.rs"]
mod redis_server;

mod common;
use common::{TempDir, temp_path};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis_server::RedisServer;
use tokio::sync::broadcast;
use tollgate_cache_service::model::{Entry, InvalidateFilter, StoreEvent};
use tollgate_cache_service::store::{
    self, EmbeddedStore, RedisOptions, RedisStore, Store, StoreConfig,
};
use tollgate_wire::Usage;
use tollgate_wire::admit::CachedCompletion;

const DIMS: usize = 384;

fn entry(tenant: &str, key: &str, model: &str, created_at: u64) -> Entry {
    let id = Entry::id_for(tenant, key);
    let embedding = (0..DIMS)
        .map(|i| ((id as usize + i) % 97) as f32 / 97.0 - 0.5)
        .collect();
    Entry {
        id,
        tenant: tenant.into(),
        partition: format!("{:064x}", created_at),
        exact_key: key.into(),
        model: model.into(),
        query: format!("What did {tenant} ask about {key}?"),
        embedding: Some(embedding),
        embedding_model: "all-MiniLM-L6-v2".into(),
        completion: CachedCompletion {
            entry_id: id.to_string(),
            model: model.into(),
            text: format!("Answer about {key}."),
            finish_reason: "stop".into(),
            usage: Usage {
                input_tokens: 20,
                output_tokens: 5,
                ..Usage::default()
            },
            cost_pico: Some(1234),
            created_at,
        },
        created_at,
        expires_at: 0,
    }
}

/// Waits (up to 2 s) for an event matching `want`, skipping others.
async fn expect_event(
    rx: &mut broadcast::Receiver<StoreEvent>,
    what: &str,
    want: impl Fn(&StoreEvent) -> bool,
) {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(ev) if want(&ev) => return,
                Ok(_) => {}
                Err(e) => panic!("event channel: {e} (waiting for {what})"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .unwrap_or_else(|_| panic!("no event within 2 s: {what}"));
}

fn ids(entries: &[Entry]) -> BTreeSet<u64> {
    entries.iter().map(|e| e.id).collect()
}

/// The behaviour every backend must have. `store` must start empty.
async fn conformance(store: Arc<dyn Store>) {
    let mut rx = store.subscribe();
    store.ping().await.unwrap();

    // Empty.
    assert_eq!(store.len().await.unwrap(), 0);
    assert!(store.is_empty().await.unwrap());
    assert!(store.scan().await.unwrap().is_empty());
    assert_eq!(store.get(1).await.unwrap(), None);
    assert_eq!(store.get_exact("acme", "k1").await.unwrap(), None);
    assert!(store.evict_to(0).await.unwrap().is_empty());

    // Put, get, get_exact, event.
    let a = entry("acme", "k1", "m1", 100);
    store.put(&a).await.unwrap();
    assert_eq!(store.get(a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(
        store.get_exact("acme", "k1").await.unwrap().as_ref(),
        Some(&a)
    );
    assert_eq!(store.len().await.unwrap(), 1);
    expect_event(
        &mut rx,
        "Put(a)",
        |ev| matches!(ev, StoreEvent::Put(e) if **e == a),
    )
    .await;

    // Tenant isolation: same exact key, another tenant.
    let b = entry("globex", "k1", "m1", 101);
    assert_ne!(a.id, b.id);
    store.put(&b).await.unwrap();
    assert_eq!(
        store.get_exact("acme", "k1").await.unwrap().as_ref(),
        Some(&a)
    );
    assert_eq!(
        store.get_exact("globex", "k1").await.unwrap().as_ref(),
        Some(&b)
    );
    assert_eq!(store.get_exact("initech", "k1").await.unwrap(), None);
    assert_eq!(store.get_exact("acme", "k2").await.unwrap(), None);

    // Replace by id: new answer and model; the count stays, the model index follows.
    let mut a2 = a.clone();
    a2.completion.text = "A better answer.".into();
    a2.model = "m2".into();
    a2.created_at = 102;
    store.put(&a2).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 2);
    assert_eq!(store.get(a.id).await.unwrap().as_ref(), Some(&a2));
    assert_eq!(
        store.get_exact("acme", "k1").await.unwrap().as_ref(),
        Some(&a2)
    );
    expect_event(
        &mut rx,
        "Put(a2)",
        |ev| matches!(ev, StoreEvent::Put(e) if **e == a2),
    )
    .await;

    // Replace by id under another exact key: the old exact key no longer resolves.
    let mut a3 = a2.clone();
    a3.exact_key = "k9".into();
    store.put(&a3).await.unwrap();
    assert_eq!(store.get_exact("acme", "k1").await.unwrap(), None);
    assert_eq!(
        store.get_exact("acme", "k9").await.unwrap().as_ref(),
        Some(&a3)
    );
    store.put(&a2).await.unwrap();
    assert_eq!(store.get_exact("acme", "k9").await.unwrap(), None);
    assert_eq!(
        store.get_exact("acme", "k1").await.unwrap().as_ref(),
        Some(&a2)
    );

    // Expired entries are still returned (callers check).
    let mut exp = entry("acme", "expired", "m1", 103);
    exp.expires_at = 104;
    store.put(&exp).await.unwrap();
    assert!(
        store
            .get_exact("acme", "expired")
            .await
            .unwrap()
            .unwrap()
            .is_expired(200)
    );

    // Delete (unknown ids are ignored), announced.
    store.delete(&[b.id, exp.id, 42]).await.unwrap();
    assert_eq!(store.get(b.id).await.unwrap(), None);
    assert_eq!(store.get_exact("globex", "k1").await.unwrap(), None);
    assert_eq!(store.len().await.unwrap(), 1);
    expect_event(&mut rx, "Deleted(b, exp)", |ev| {
        matches!(ev, StoreEvent::Deleted(d) if d.contains(&b.id) && d.contains(&exp.id) && !d.contains(&42))
    })
    .await;
    store.delete(&[]).await.unwrap();

    // Invalidation by tenant and model, tenant, model; then everything.
    let mut grid = Vec::new();
    for t in ["t1", "t2"] {
        for m in ["m1", "m2"] {
            for i in 0..3 {
                let e = entry(t, &format!("{m}-{i}"), m, 200 + i);
                store.put(&e).await.unwrap();
                grid.push(e);
            }
        }
    }
    assert_eq!(store.len().await.unwrap(), 13);
    let t1m1 = InvalidateFilter {
        tenant: Some("t1".into()),
        model: Some("m1".into()),
    };
    assert_eq!(store.invalidate(&t1m1).await.unwrap(), 3);
    expect_event(
        &mut rx,
        "Invalidated(t1, m1)",
        |ev| matches!(ev, StoreEvent::Invalidated(f) if *f == t1m1),
    )
    .await;
    let remaining = store.scan().await.unwrap();
    assert_eq!(remaining.len(), 10);
    assert!(remaining.iter().all(|e| !t1m1.matches(e)));
    assert_eq!(store.get_exact("t1", "m1-0").await.unwrap(), None);
    assert!(store.get_exact("t1", "m2-0").await.unwrap().is_some());

    let m2 = InvalidateFilter {
        tenant: None,
        model: Some("m2".into()),
    };
    // t1/m2, t2/m2 and acme's a2 (moved to m2 by the replace above).
    assert_eq!(store.invalidate(&m2).await.unwrap(), 7);
    expect_event(
        &mut rx,
        "Invalidated(m2)",
        |ev| matches!(ev, StoreEvent::Invalidated(f) if *f == m2),
    )
    .await;
    assert_eq!(store.get(a.id).await.unwrap(), None);

    let t2 = InvalidateFilter {
        tenant: Some("t2".into()),
        model: None,
    };
    assert_eq!(store.invalidate(&t2).await.unwrap(), 3);
    assert_eq!(store.len().await.unwrap(), 0);
    assert_eq!(store.invalidate(&t2).await.unwrap(), 0);

    for e in &grid[..5] {
        store.put(e).await.unwrap();
    }
    let all = InvalidateFilter::default();
    assert_eq!(store.invalidate(&all).await.unwrap(), 5);
    expect_event(
        &mut rx,
        "Invalidated(all)",
        |ev| matches!(ev, StoreEvent::Invalidated(f) if *f == all),
    )
    .await;
    assert_eq!(store.len().await.unwrap(), 0);
    assert!(store.scan().await.unwrap().is_empty());
    assert_eq!(store.get_exact("t1", "m2-0").await.unwrap(), None);

    // Eviction keeps the newest (inserted out of order).
    let mut timed: Vec<Entry> = (1..=10)
        .map(|t| entry("acme", &format!("evict-{t}"), "m1", 1000 + t))
        .collect();
    timed.reverse();
    timed.swap(2, 7);
    for e in &timed {
        store.put(e).await.unwrap();
    }
    let evicted: BTreeSet<u64> = store.evict_to(4).await.unwrap().into_iter().collect();
    let oldest: BTreeSet<u64> = timed
        .iter()
        .filter(|e| e.created_at <= 1006)
        .map(|e| e.id)
        .collect();
    assert_eq!(evicted, oldest);
    let kept = store.scan().await.unwrap();
    assert_eq!(kept.len(), 4);
    assert!(kept.iter().all(|e| e.created_at > 1006));
    expect_event(&mut rx, "Deleted(evicted)", |ev| {
        matches!(ev, StoreEvent::Deleted(d) if d.iter().copied().collect::<BTreeSet<_>>() == oldest)
    })
    .await;
    assert!(store.evict_to(4).await.unwrap().is_empty());
    assert!(store.evict_to(100).await.unwrap().is_empty());
    assert_eq!(store.evict_to(0).await.unwrap().len(), 4);
    assert_eq!(store.len().await.unwrap(), 0);

    // Scan returns every entry (more than one page of the Redis scan).
    let many: Vec<Entry> = (0..300)
        .map(|i| {
            entry(
                &format!("tenant-{}", i % 7),
                &format!("scan-{i}"),
                "m1",
                5000 + i,
            )
        })
        .collect();
    for e in &many {
        store.put(e).await.unwrap();
    }
    assert_eq!(store.len().await.unwrap(), 300);
    let scanned = store.scan().await.unwrap();
    assert_eq!(scanned.len(), 300);
    assert_eq!(ids(&scanned), ids(&many));
    let by_id: std::collections::HashMap<u64, &Entry> = many.iter().map(|e| (e.id, e)).collect();
    assert!(scanned.iter().all(|e| by_id[&e.id] == e));
    // Exact-only entries (no embedding) round-trip too.
    let mut plain = entry("acme", "plain", "m1", 6000);
    plain.embedding = None;
    store.put(&plain).await.unwrap();
    assert_eq!(store.get(plain.id).await.unwrap(), Some(plain));
}

fn redis() -> RedisServer {
    RedisServer::start().expect("cannot start redis-server (run `make setup`)")
}

/// Small pages, so the suite's 300-entry scan and batch deletes cross page boundaries.
fn small_pages(ns: &str) -> RedisOptions {
    RedisOptions {
        batch: 64,
        ..RedisOptions::new(ns)
    }
}

// ---------------------------------------------------------------- embedded

#[tokio::test]
async fn embedded_conformance() {
    let dir = TempDir(temp_path("conf"));
    let store = EmbeddedStore::open(dir.0.join("nested/cache.redb"))
        .await
        .unwrap();
    conformance(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_conformance_multi_thread_runtime() {
    let dir = TempDir(temp_path("conf-mt"));
    let store = EmbeddedStore::open(dir.0.join("cache.redb")).await.unwrap();
    conformance(Arc::new(store)).await;
}

#[tokio::test]
async fn embedded_survives_reopen() {
    let dir = TempDir(temp_path("reopen"));
    let path = dir.0.join("cache.redb");
    let entries: Vec<Entry> = (0..50)
        .map(|i| entry("acme", &format!("k{i}"), "m1", 100 + i))
        .collect();
    {
        let store = EmbeddedStore::open(&path).await.unwrap();
        for e in &entries {
            store.put(e).await.unwrap();
        }
        store.delete(&[entries[0].id]).await.unwrap();
    } // dropped: reopening at once must work
    let store = EmbeddedStore::open(&path).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 49);
    assert_eq!(ids(&store.scan().await.unwrap()), ids(&entries[1..]));
    assert_eq!(
        store.get_exact("acme", "k7").await.unwrap().as_ref(),
        Some(&entries[7])
    );
    assert_eq!(store.get_exact("acme", "k0").await.unwrap(), None);
    // Indexes survived too: eviction order and invalidation.
    assert_eq!(store.evict_to(48).await.unwrap(), vec![entries[1].id]);
    drop(store);
    let store = EmbeddedStore::open(&path).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 48);
}

/// Run as a child process by `embedded_acknowledged_writes_survive_a_crash`: writes until killed,
/// printing each acknowledged write.
#[tokio::test]
#[ignore = "child process of embedded_acknowledged_writes_survive_a_crash"]
async fn crash_child_writer() {
    let Ok(path) = std::env::var("TOLLGATE_CRASH_DB") else {
        return;
    };
    let store = EmbeddedStore::open(&path).await.unwrap();
    for i in 0.. {
        store
            .put(&entry("acme", &format!("k{i}"), "m1", i))
            .await
            .unwrap();
        println!("acked {i}");
    }
}

#[tokio::test]
async fn embedded_acknowledged_writes_survive_a_crash() {
    use std::io::BufRead;
    let dir = TempDir(temp_path("crash"));
    let path = dir.0.join("cache.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("TOLLGATE_CRASH_DB", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(i) = line.unwrap().strip_prefix("acked ") {
            let i: u64 = i.parse().unwrap();
            acked = Some(i);
            if i >= 30 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-write
    child.wait().unwrap();
    let acked = acked.expect("child wrote nothing");
    let store = EmbeddedStore::open(&path).await.unwrap();
    for i in 0..=acked {
        assert!(
            store
                .get_exact("acme", &format!("k{i}"))
                .await
                .unwrap()
                .is_some(),
            "acknowledged write {i} lost in the crash"
        );
    }
}

#[tokio::test]
async fn embedded_open_twice_is_refused_while_open() {
    let dir = TempDir(temp_path("twice"));
    let path = dir.0.join("cache.redb");
    let first = EmbeddedStore::open(&path).await.unwrap();
    let err = EmbeddedStore::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("store unavailable"), "{err}");
    drop(first);
    EmbeddedStore::open(&path).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_writers_are_group_committed() {
    let dir = TempDir(temp_path("concurrent"));
    let store = Arc::new(EmbeddedStore::open(dir.0.join("cache.redb")).await.unwrap());
    let mut rx = store.subscribe();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    store
                        .put(&entry(&format!("t{t}"), &format!("k{i}"), "m", i))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.len().await.unwrap(), 320);
    let mut puts = HashSet::new();
    while let Ok(ev) = rx.try_recv() {
        if let StoreEvent::Put(e) = ev {
            puts.insert(e.id);
        }
    }
    assert_eq!(puts.len(), 320);
}

#[tokio::test]
async fn embedded_refuses_a_file_of_another_format() {
    let dir = TempDir(temp_path("format"));
    let path = dir.0.join("cache.redb");
    drop(EmbeddedStore::open(&path).await.unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            tx.open_table(meta).unwrap().insert("format", 99).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = EmbeddedStore::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("format 99"), "{err}");
}

#[tokio::test]
async fn embedded_rejects_a_path_it_cannot_create() {
    let dir = TempDir(temp_path("bad"));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    assert!(EmbeddedStore::open(file.join("cache.redb")).await.is_err());
    // Not a redb file.
    assert!(EmbeddedStore::open(&file).await.is_err());
}

// ---------------------------------------------------------------- redis

#[tokio::test]
async fn redis_conformance() {
    let server = redis();
    let store = RedisStore::connect_with(&server.url(), small_pages("conf"))
        .await
        .unwrap();
    conformance(Arc::new(store)).await;
}

#[tokio::test]
async fn open_picks_the_configured_backend() {
    let dir = TempDir(temp_path("open"));
    let embedded = StoreConfig::Embedded {
        path: dir.0.join("cache.redb"),
    };
    let store = store::open(&embedded).await.unwrap();
    store.put(&entry("acme", "k", "m", 1)).await.unwrap();
    drop(store);
    assert_eq!(
        store::open(&embedded).await.unwrap().len().await.unwrap(),
        1
    );

    let server = redis();
    let shared = StoreConfig::Redis {
        url: server.url(),
        namespace: "tg".into(),
    };
    let a = store::open(&shared).await.unwrap();
    let b = store::open(&shared).await.unwrap();
    a.put(&entry("acme", "k", "m", 1)).await.unwrap();
    assert_eq!(b.len().await.unwrap(), 1);
}

#[tokio::test]
async fn redis_keys_hold_no_text() {
    let server = redis();
    let store = RedisStore::connect(&server.url(), "tg").await.unwrap();
    let secrets = [
        "Tenant-Confidential",
        "Model-Confidential",
        "ExactKey-Confidential",
    ];
    let mut e = entry(secrets[0], secrets[2], secrets[1], 7);
    e.query = "Query-Confidential: how do I reset my password?".into();
    store.put(&e).await.unwrap();
    store.put(&entry("plain", "k", "m", 8)).await.unwrap();
    store
        .invalidate(&InvalidateFilter {
            tenant: Some("plain".into()),
            model: None,
        })
        .await
        .unwrap();

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 6, "{keys:?}");
    for k in &keys {
        assert!(k.starts_with("tg:"), "{k}");
        let lower = k.to_lowercase();
        for s in secrets
            .iter()
            .chain(&["query-confidential", "password", "plain"])
        {
            assert!(!lower.contains(&s.to_lowercase()), "key {k} holds {s}");
        }
        // Only the namespace, kinds, ids and hex hashes.
        assert!(
            k.split(':').skip(1).all(|p| p
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b.is_ascii_lowercase() || b == b'_')),
            "{k}"
        );
    }
    // The value does hold the query (the guards need it).
    assert_eq!(store.get(e.id).await.unwrap().unwrap().query, e.query);
}

#[tokio::test]
async fn redis_survives_new_instance_and_server_restart() {
    let mut server = redis();
    let a = entry("acme", "k1", "m1", 1);
    let b = entry("acme", "k2", "m1", 2);
    {
        let store = RedisStore::connect(&server.url(), "tg").await.unwrap();
        store.put(&a).await.unwrap();
    }
    // A new instance (another replica, or this one restarted) sees it.
    let store = RedisStore::connect(&server.url(), "tg").await.unwrap();
    assert_eq!(
        store.get_exact("acme", "k1").await.unwrap(),
        Some(a.clone())
    );
    store.put(&b).await.unwrap();

    // The server restarts (append-only file): data is there, and this instance reconnects
    // without failing a call (a dropped connection is retried once).
    server.restart().unwrap();
    let got = store.get_exact("acme", "k2").await.unwrap();
    assert_eq!(got, Some(b.clone()));
    assert_eq!(store.len().await.unwrap(), 2);
    assert_eq!(ids(&store.scan().await.unwrap()), ids(&[a, b]));
    let fresh = RedisStore::connect(&server.url(), "tg").await.unwrap();
    assert_eq!(fresh.len().await.unwrap(), 2);
}

#[tokio::test]
async fn redis_replicas_see_each_others_changes() {
    let server = redis();
    let a = RedisStore::connect(&server.url(), "shared").await.unwrap();
    let b = RedisStore::connect(&server.url(), "shared").await.unwrap();
    let mut rx_a = a.subscribe();
    let mut rx_b = b.subscribe();

    let e = entry("acme", "k1", "m1", 1);
    let t = std::time::Instant::now();
    a.put(&e).await.unwrap();
    expect_event(
        &mut rx_b,
        "B sees A's put",
        |ev| matches!(ev, StoreEvent::Put(x) if **x == e),
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    expect_event(
        &mut rx_a,
        "A sees its own put",
        |ev| matches!(ev, StoreEvent::Put(x) if **x == e),
    )
    .await;
    assert_eq!(b.get_exact("acme", "k1").await.unwrap(), Some(e.clone()));

    b.delete(&[e.id]).await.unwrap();
    expect_event(
        &mut rx_a,
        "A sees B's delete",
        |ev| matches!(ev, StoreEvent::Deleted(d) if *d == vec![e.id]),
    )
    .await;

    let f = InvalidateFilter {
        tenant: Some("acme".into()),
        model: None,
    };
    a.invalidate(&f).await.unwrap();
    expect_event(
        &mut rx_b,
        "B sees A's invalidation",
        |ev| matches!(ev, StoreEvent::Invalidated(x) if *x == f),
    )
    .await;

    for i in 0..3 {
        b.put(&entry("acme", &format!("e{i}"), "m1", 10 + i))
            .await
            .unwrap();
    }
    let evicted = a.evict_to(1).await.unwrap();
    assert_eq!(evicted.len(), 2);
    expect_event(
        &mut rx_b,
        "B sees A's eviction",
        |ev| matches!(ev, StoreEvent::Deleted(d) if *d == evicted),
    )
    .await;

    // Another namespace on the same server is another cache.
    let other = RedisStore::connect(&server.url(), "other").await.unwrap();
    assert_eq!(other.len().await.unwrap(), 0);
    let mut rx_other = other.subscribe();
    a.put(&e).await.unwrap();
    expect_event(&mut rx_b, "B sees the put", |ev| {
        matches!(ev, StoreEvent::Put(_))
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx_other.recv())
            .await
            .is_err(),
        "another namespace got an event"
    );
}

#[tokio::test]
async fn redis_event_reader_survives_a_server_restart() {
    let mut server = redis();
    let a = RedisStore::connect(&server.url(), "tg").await.unwrap();
    let mut rx = a.subscribe();
    let before = entry("acme", "before", "m1", 1);
    a.put(&before).await.unwrap();
    expect_event(
        &mut rx,
        "put before restart",
        |ev| matches!(ev, StoreEvent::Put(x) if **x == before),
    )
    .await;

    server.stop().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // the reader notices
    server.resume().unwrap();

    // Another replica writes after the restart; A's reader picks it up.
    let b = RedisStore::connect(&server.url(), "tg").await.unwrap();
    let after = entry("acme", "after", "m1", 2);
    b.put(&after).await.unwrap();
    let wait = async {
        loop {
            match rx.recv().await.unwrap() {
                StoreEvent::Put(x) if *x == after => return,
                StoreEvent::Put(x) if *x == before => panic!("replayed an event already delivered"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("reader did not resume within 10 s after the restart");
    assert_eq!(a.missed_events(), 0);
}

/// A TCP forwarder to Redis that the test can cut (closing every forwarded connection and
/// refusing new ones), so that one replica loses Redis while another keeps writing.
struct Proxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target_port: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection closed
                }
                let mut cut_rx = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            cut,
            task,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn redis_reports_events_trimmed_while_disconnected() {
    let server = redis();
    let proxy = Proxy::start(server.port()).await;
    let opts = RedisOptions {
        events_maxlen: 10,
        ..RedisOptions::new("tg")
    };
    // A reaches Redis through the proxy, B directly.
    let a = RedisStore::connect_with(&proxy.url(), opts.clone())
        .await
        .unwrap();
    let b = RedisStore::connect_with(&server.url(), opts).await.unwrap();
    let mut rx = a.subscribe();
    let first = entry("acme", "first", "m1", 1);
    b.put(&first).await.unwrap();
    expect_event(
        &mut rx,
        "first put",
        |ev| matches!(ev, StoreEvent::Put(x) if **x == first),
    )
    .await;

    proxy.set_up(false);
    assert!(a.ping().await.is_err(), "A should have lost Redis");
    // Far more changes than the stream keeps (trimming is approximate: whole 100-entry nodes).
    for i in 0..500 {
        b.put(&entry("acme", &format!("k{i}"), "m1", 2))
            .await
            .unwrap();
    }
    assert_eq!(a.missed_events(), 0);
    proxy.set_up(true);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.missed_events() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.missed_events(), 1, "gap not detected");
    // A works again, and still gets the events that were kept.
    a.ping().await.unwrap();
    let last = entry("acme", "last", "m1", 3);
    b.put(&last).await.unwrap();
    expect_event(
        &mut rx,
        "put after the outage",
        |ev| matches!(ev, StoreEvent::Put(x) if **x == last),
    )
    .await;
    assert_eq!(a.len().await.unwrap(), 502);
}

#[tokio::test]
async fn redis_outage_without_trimming_loses_no_event() {
    let server = redis();
    let proxy = Proxy::start(server.port()).await;
    let a = RedisStore::connect(&proxy.url(), "tg").await.unwrap();
    let b = RedisStore::connect(&server.url(), "tg").await.unwrap();
    let mut rx = a.subscribe();
    proxy.set_up(false);
    let written: Vec<Entry> = (0..50)
        .map(|i| entry("acme", &format!("k{i}"), "m1", i))
        .collect();
    for e in &written {
        b.put(e).await.unwrap();
    }
    b.delete(&[written[0].id]).await.unwrap();
    proxy.set_up(true);
    let mut puts = BTreeSet::new();
    let wait = async {
        loop {
            match rx.recv().await.unwrap() {
                StoreEvent::Put(e) => {
                    puts.insert(e.id);
                }
                StoreEvent::Deleted(d) if d == vec![written[0].id] => return,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("events after the outage");
    // The first entry was deleted before A read its Put: that Put is skipped, not served stale.
    assert_eq!(puts, ids(&written[1..]));
    assert_eq!(a.missed_events(), 0);
}

#[tokio::test]
async fn redis_connect_fails_cleanly() {
    let server = redis();
    let port = server.port();
    drop(server);
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"), "tg")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("store unavailable"), "{err}");
    assert!(RedisStore::connect("not a url", "tg").await.is_err());
    let server = redis();
    assert!(
        RedisStore::connect(&server.url(), "bad namespace")
            .await
            .is_err()
    );
}

/// `scan_page` walks every entry once, in id order, a page at a time (both backends: the
/// embedded one by key range, Redis by lex range over its `{p}:by_id` index).
async fn pages_cover_everything(store: Arc<dyn Store>) {
    let mut want = BTreeSet::new();
    for i in 0..25u64 {
        let e = entry("pager", &format!("{i:064x}"), "m1", 1000 + i);
        want.insert(e.id);
        store.put(&e).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan_page(after, 10).await.unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.iter().map(|e| e.id));
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(seen, sorted, "id order");
    let got: BTreeSet<u64> = seen
        .iter()
        .copied()
        .filter(|id| want.contains(id))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        seen.len(),
        store.len().await.unwrap() as usize,
        "each entry once"
    );
}

#[tokio::test]
async fn embedded_scan_pages() {
    let dir = TempDir(temp_path("pages"));
    let store = EmbeddedStore::open(dir.0.join("cache.redb")).await.unwrap();
    pages_cover_everything(Arc::new(store)).await;
}

#[tokio::test]
async fn redis_scan_pages() {
    let server = redis();
    let store = RedisStore::connect(&server.url(), "pages").await.unwrap();
    pages_cover_everything(Arc::new(store)).await;
}

/// A store written before the id index existed gets it built when a replica connects.
#[tokio::test]
async fn redis_id_index_is_backfilled_for_older_stores() {
    let server = redis();
    {
        let store = RedisStore::connect(&server.url(), "old").await.unwrap();
        for i in 0..30u64 {
            store
                .put(&entry("old", &format!("{i:064x}"), "m1", 1000 + i))
                .await
                .unwrap();
        }
    }
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg("old:by_id")
        .query_async(&mut conn)
        .await
        .unwrap();
    let store = RedisStore::connect(&server.url(), "old").await.unwrap();
    let n: u64 = redis::cmd("ZCARD")
        .arg("old:by_id")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 30);
    let mut seen = 0;
    let mut after = None;
    while let Some(last) = {
        let page = store.scan_page(after, 7).await.unwrap();
        seen += page.len();
        page.last().map(|e| e.id)
    } {
        after = Some(last);
    }
    assert_eq!(seen, 30);
    // Deletes keep the index in step.
    let ids: Vec<u64> = store
        .scan_page(None, 5)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    store.delete(&ids).await.unwrap();
    let n: u64 = redis::cmd("ZCARD")
        .arg("old:by_id")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 25);
}
