//! Cache store numbers for both backends: put/get latency, bulk load, scan, eviction and
//! invalidation of N entries, each with a 384-float embedding.
//!
//! `cargo run --release -p tollgate-benches --bin store [N] [--only embedded|redis]`
//! (N defaults to 100000; Redis runs on a throwaway `redis-server`, append-only file on).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_cache_service::model::{Entry, InvalidateFilter};
use tollgate_cache_service::store::{EmbeddedStore, RedisStore, Store};
use tollgate_tests::redis::RedisServer;

const DIMS: usize = 384;
const TENANTS: u64 = 10;
const SAMPLES: usize = 2000;
const CONCURRENCY: usize = 64;

fn entry(i: u64) -> Entry {
    let tenant = format!("tenant-{}", i % TENANTS);
    let key = format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let id = Entry::id_for(&tenant, &key);
    // Deterministic, normalised-looking components.
    let mut x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let embedding = (0..DIMS)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) / 10.0
        })
        .collect();
    Entry {
        id,
        tenant,
        partition: format!("{:064x}", i % 50),
        exact_key: key,
        model: if i.is_multiple_of(2) {
            "gpt-4o-mini"
        } else {
            "claude-haiku"
        }
        .into(),
        query: format!("Question number {i}: how do I configure the thing for my use case?"),
        embedding: Some(embedding),
        embedding_model: "all-MiniLM-L6-v2".into(),
        // (Built from JSON: this crate does not depend on the wire crate.)
        completion: serde_json::from_value(serde_json::json!({
            "entry_id": id.to_string(),
            "model": "gpt-4o-mini",
            "text": "A typical answer of a few sentences. ".repeat(8),
            "finish_reason": "stop",
            "usage": {"input_tokens": 40, "cache_read_tokens": 0, "cache_write_tokens": 0,
                      "output_tokens": 80, "reasoning_tokens": 0},
            "cost_pico": 123_456,
            "created_at": 1_700_000_000 + i,
        }))
        .unwrap(),
        created_at: 1_700_000_000 + i,
        expires_at: 0,
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut d: Vec<Duration>) -> Stats {
    d.sort();
    let n = d.len().max(1);
    Stats {
        p50: d[n / 2],
        p99: d[(n * 99 / 100).min(n - 1)],
        mean: d.iter().sum::<Duration>() / n as u32,
    }
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

async fn bench(
    name: &str,
    store: Arc<dyn Store>,
    n: u64,
    rows: &mut Vec<String>,
    size: impl Fn() -> String,
) {
    eprintln!("[{name}] sequential puts");
    // Sequential put latency (ids above the bulk range, so they are all inserts).
    let mut lat = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES as u64 {
        let e = entry(n + i);
        let t = Instant::now();
        store.put(&e).await.unwrap();
        lat.push(t.elapsed());
    }
    let put = stats(lat);

    eprintln!("[{name}] bulk load of {n} with {CONCURRENCY} writers");
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY as u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < n {
                    store.put(&entry(i)).await.unwrap();
                    i += CONCURRENCY as u64;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let load = t.elapsed();
    let total = n + SAMPLES as u64;
    assert_eq!(store.len().await.unwrap(), total);
    let size_after_load = size();

    eprintln!("[{name}] gets");
    let mut get_lat = Vec::with_capacity(SAMPLES);
    let mut exact_lat = Vec::with_capacity(SAMPLES);
    let mut miss_lat = Vec::with_capacity(SAMPLES);
    for s in 0..SAMPLES as u64 {
        let i = s.wrapping_mul(7919) % n;
        let e = entry(i);
        let t = Instant::now();
        assert!(store.get(e.id).await.unwrap().is_some());
        get_lat.push(t.elapsed());
        let t = Instant::now();
        assert!(
            store
                .get_exact(&e.tenant, &e.exact_key)
                .await
                .unwrap()
                .is_some()
        );
        exact_lat.push(t.elapsed());
        let t = Instant::now();
        assert!(
            store
                .get_exact(&e.tenant, "missing")
                .await
                .unwrap()
                .is_none()
        );
        miss_lat.push(t.elapsed());
    }
    let (get, exact, miss) = (stats(get_lat), stats(exact_lat), stats(miss_lat));

    eprintln!("[{name}] scan");
    let t = Instant::now();
    let all = store.scan().await.unwrap();
    let scan = t.elapsed();
    assert_eq!(all.len() as u64, total);
    drop(all);

    eprintln!("[{name}] evict and invalidate");
    let t = Instant::now();
    let evicted = store.evict_to(total - 10_000.min(total / 2)).await.unwrap();
    let evict = t.elapsed();
    let t = Instant::now();
    let invalidated = store
        .invalidate(&InvalidateFilter {
            tenant: Some("tenant-3".into()),
            model: None,
        })
        .await
        .unwrap();
    let invalidate = t.elapsed();

    rows.push(format!(
        "| {name} | {} / {} | {} / {} | {} / {} | {} / {} | {:.0} | {} | {} ({}) | {} ({}) | {size_after_load} |",
        us(put.p50),
        us(put.p99),
        us(get.p50),
        us(get.p99),
        us(exact.p50),
        us(exact.p99),
        us(miss.p50),
        us(miss.p99),
        n as f64 / load.as_secs_f64(),
        ms(scan),
        ms(evict),
        evicted.len(),
        ms(invalidate),
        invalidated,
    ));
    eprintln!(
        "[{name}] put mean {} us, get mean {} us, exact mean {} us",
        us(put.mean),
        us(get.mean),
        us(exact.mean)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut rows = Vec::new();

    if only.as_deref().is_none_or(|o| o == "embedded") {
        let dir = std::env::temp_dir().join(format!("tollgate-store-bench-{}", std::process::id()));
        let path = dir.join("cache.redb");
        {
            let store = Arc::new(EmbeddedStore::open(&path).await.unwrap());
            let file = path.clone();
            let size = move || {
                let b = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                format!("file {:.0} MiB", b as f64 / (1u64 << 20) as f64)
            };
            bench("embedded (redb)", store, n, &mut rows, size).await;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let t = Instant::now();
        let store = EmbeddedStore::open(&path).await.unwrap();
        let reopen = t.elapsed();
        let t = Instant::now();
        let len = store.scan().await.unwrap().len();
        eprintln!(
            "[embedded] file {:.0} MiB; reopen {} ms; scan after reopen {} ms ({len} entries)",
            size as f64 / (1 << 20) as f64,
            ms(reopen),
            ms(t.elapsed())
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    if only.as_deref().is_none_or(|o| o == "redis") {
        let server = RedisServer::start().expect("redis-server (run `make setup`)");
        let store = Arc::new(RedisStore::connect(&server.url(), "bench").await.unwrap());
        let port = server.port();
        let size = move || format!("used_memory {}", redis_used_memory(port));
        bench("redis", store.clone(), n, &mut rows, size).await;
    }

    println!(
        "N = {n} entries (384-float embedding, ~2.2 KB encoded each); latencies in µs (p50 / p99), {SAMPLES} samples each.\n"
    );
    println!(
        "| backend | put | get | get_exact hit | get_exact miss | bulk load puts/s ({CONCURRENCY} writers) | scan ms | evict 10k ms (n) | invalidate tenant ms (n) | size after load |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}

/// `used_memory_human` from `INFO memory` (std only).
fn redis_used_memory(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return "?".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"INFO memory\r\n");
    let mut buf = vec![0u8; 16384];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_human:").map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
