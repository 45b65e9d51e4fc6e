//! The simulated self-hosted pool (`tollgate_tests::sim::pool`) and the prefix-hint
//! measurement of issue 5: shared system prompts × many users with short final turns, sent
//! through Envoy to 4 replicas with a KV prefix cache, once hashed on `x-tollgate-prefix-key`
//! (ring hash) and once round robin.
//!
//! Until the filter emits `x-tollgate-prefix-key`, the client sets it itself: the hash of the
//! system prompt, i.e. of the stable prefix the filter will hash.
//!
//! Run with `--nocapture` to see the numbers (they go to the README).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::harness;
use tollgate_tests::sim::pool::{self, KvCache, PoolConfig, PoolStats};
use tollgate_tests::sim::text::{self, Rng};
use tollgate_tests::sim::tokens::Encoding;

const MODEL: &str = "llama-3.1-8b-instruct";
const REPLICAS: usize = 4;

// ---------------------------------------------------------------------------
// Workload

/// Shared system prompts × users with short final turns.
#[derive(Clone, Copy, Debug)]
struct Workload {
    /// Distinct system prompts (apps / tenants).
    prompts: usize,
    /// Requests; each picks a system prompt uniformly and has its own final user turn.
    requests: usize,
    seed: u64,
}

struct Req {
    body: Value,
    /// Which shared prefix the request uses (groups requests for the stickiness check; the
    /// filter computes the real `x-tollgate-prefix-key`).
    prefix_key: String,
}

impl Workload {
    /// System prompt `i`: 1000..2000 tokens of distinct text.
    fn system_prompt(&self, i: usize) -> String {
        let enc = Encoding::for_model(MODEL);
        let len = 1000 + (i * 397 + 151) % 1000;
        format!(
            "You are the assistant of application number {i}. Follow these instructions. {}",
            text::generate(enc, self.seed ^ ((i as u64 + 1) << 8), len, true)
        )
    }

    fn build(&self) -> Vec<Req> {
        let enc = Encoding::for_model(MODEL);
        let systems: Vec<String> = (0..self.prompts).map(|i| self.system_prompt(i)).collect();
        let mut rng = Rng::new(self.seed);
        (0..self.requests)
            .map(|r| {
                let p = rng.below(self.prompts);
                let user_len = 20 + rng.below(41);
                let user =
                    text::generate(enc, self.seed.wrapping_mul(31) + r as u64, user_len, true);
                let system = &systems[p];
                Req {
                    // The filter will compute this from the prompt's stable prefix in token
                    // blocks; the client stands in for it with a hash of the system prompt.
                    prefix_key: format!("{:016x}", text::fnv1a(&[system.as_bytes()])),
                    body: json!({
                        "model": MODEL,
                        "max_tokens": 64,
                        "messages": [
                            {"role": "system", "content": system},
                            {"role": "user", "content": user},
                        ],
                    }),
                }
            })
            .collect()
    }

    /// Distinct full blocks of the system prompts: the reusable working set a pool must hold
    /// (each request adds a few one-off blocks of its own final turn on top).
    fn working_set_blocks(&self) -> usize {
        (0..self.prompts)
            .map(|i| {
                let body = json!({"model": MODEL, "messages": [
                    {"role": "system", "content": self.system_prompt(i)}]});
                let t = pool::prompt_tokens("/v1/chat/completions", &body).unwrap();
                t.len() / 16
            })
            .sum()
    }
}

// ---------------------------------------------------------------------------
// The cache model alone (no HTTP): a capacity sweep.

/// Token hit rate of `reqs` over `n` replicas of `capacity` blocks, routed by `route`.
fn model_hit_rate(
    chains: &[(Vec<u64>, usize, String)],
    n: usize,
    capacity: usize,
    route: impl Fn(usize, &str) -> usize,
) -> f64 {
    let mut caches: Vec<KvCache> = (0..n).map(|_| KvCache::new(capacity)).collect();
    let (mut cached, mut total) = (0usize, 0usize);
    for (i, (chain, len, key)) in chains.iter().enumerate() {
        cached += caches[route(i, key) % n].serve(chain) * 16;
        total += len;
    }
    cached as f64 / total as f64
}

#[test]
fn kv_model_capacity_sweep() {
    let w = Workload {
        prompts: 32,
        requests: 1200,
        seed: 7,
    };
    let reqs = w.build();
    let chains: Vec<(Vec<u64>, usize, String)> = reqs
        .iter()
        .map(|r| {
            let t = pool::prompt_tokens("/v1/chat/completions", &r.body).unwrap();
            (pool::block_hashes(&t, 16), t.len(), r.prefix_key.clone())
        })
        .collect();
    let ws = w.working_set_blocks();
    println!(
        "KV model, {} system prompts ({ws} blocks), {} requests, {REPLICAS} replicas (hash = key mod n)",
        w.prompts, w.requests
    );
    println!("capacity/working set | hash hit | round robin hit | ratio");
    let mut at_quarter = None;
    for frac in [0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0, 1.5] {
        let cap = (ws as f64 * frac) as usize;
        let hash = model_hit_rate(&chains, REPLICAS, cap, |_, k| {
            text::fnv1a(&[k.as_bytes()]) as usize
        });
        let rr = model_hit_rate(&chains, REPLICAS, cap, |i, _| i);
        println!(
            "{frac:>20.2} | {:>7.1}% | {:>14.1}% | {:.2}x",
            hash * 100.0,
            rr * 100.0,
            hash / rr.max(1e-9)
        );
        if frac == 0.3 {
            at_quarter = Some((hash, rr));
        }
        // Hash routing never does worse than round robin on this workload.
        assert!(hash + 0.02 >= rr, "capacity {frac}: hash {hash} < rr {rr}");
    }
    let (hash, rr) = at_quarter.unwrap();
    assert!(
        hash >= 3.0 * rr,
        "at 0.3 of the working set: {hash} vs {rr}"
    );
}

// ---------------------------------------------------------------------------
// Envoy in front of the pool (envoy/pool.yaml.tmpl, without the filter).

struct PoolEnvoy {
    child: tokio::process::Child,
    listen: SocketAddr,
    dir: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl PoolEnvoy {
    async fn start(replicas: &[SocketAddr]) -> Result<PoolEnvoy, String> {
        let bin = harness::envoy_binary()?;
        let dir = std::env::temp_dir().join(format!(
            "tollgate-pool-envoy-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let template =
            std::fs::read_to_string(harness::workspace_root().join("envoy/pool.yaml.tmpl"))
                .map_err(|e| format!("read envoy/pool.yaml.tmpl: {e}"))?;
        // The real filter computes `x-tollgate-prefix-key` (prefix hints on).
        let wasm = harness::filter_wasm()?;
        let plugin = serde_json::json!({"stopOnHeaders": true, "prefixHints": {}});
        let yaml = harness::render(
            &template,
            &[
                ("LISTEN_PORT", "0".into()),
                ("ADMIN_PORT", "0".into()),
                ("POOL_ENDPOINTS", pool::envoy_endpoints(replicas)),
                ("CACHE_HOST", "127.0.0.1".into()),
                ("CACHE_PORT", "9".into()),
                ("WASM", wasm.display().to_string()),
                ("PLUGIN_CONFIG", plugin.to_string()),
                ("STOP_ON_HEADERS", "true".into()),
            ],
        );
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
        let admin_path = dir.join("admin.txt");
        let log = std::fs::File::create(dir.join("envoy.log")).map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args([
                "--concurrency",
                "2",
                "-l",
                "warning",
                "--disable-hot-restart",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut envoy = PoolEnvoy {
            child,
            listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            dir,
        };
        let client = harness::http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Instant::now() > deadline {
                return Err(format!("Envoy not ready in 60 s\n{}", envoy.log()));
            }
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("Envoy exited ({status})\n{}", envoy.log()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            let Some(admin) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            else {
                continue;
            };
            let Ok(r) = client
                .get(format!("http://{admin}/listeners?format=json"))
                .send()
                .await
            else {
                continue;
            };
            let v: Value = r.json().await.unwrap_or(Value::Null);
            let sa = &v["listener_statuses"][0]["local_address"]["socket_address"];
            let (Some(ip), Some(port)) = (sa["address"].as_str(), sa["port_value"].as_u64()) else {
                continue;
            };
            let Ok(listen) = format!("{ip}:{port}").parse::<SocketAddr>() else {
                continue;
            };
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                envoy.listen = listen;
                return Ok(envoy);
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for PoolEnvoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug)]
struct Run {
    stats: PoolStats,
    mean_latency: Duration,
    /// prefix key -> replicas that served it
    placement: BTreeMap<String, BTreeSet<String>>,
}

/// Sends `reqs` through Envoy, `concurrency` at a time, on a cold pool.
async fn drive(
    envoy: &PoolEnvoy,
    pool: &pool::PoolHandle,
    reqs: &Arc<Vec<Req>>,
    round_robin: bool,
    concurrency: usize,
) -> Run {
    pool.reset();
    let client = harness::http_client();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("http://{}/v1/chat/completions", envoy.listen);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, reqs, url) = (client.clone(), next.clone(), reqs.clone(), url.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = reqs.get(i) else { break };
                let mut b = client.post(&url).json(&r.body);
                if round_robin {
                    b = b.header("x-pool-lb", "round-robin");
                }
                // No prefix key from the client: the Tollgate filter computes and sets it.
                let t = Instant::now();
                let resp = b.send().await.expect("send");
                assert_eq!(resp.status(), 200);
                let replica = resp.headers()[pool::H_REPLICA]
                    .to_str()
                    .unwrap()
                    .to_string();
                let hit: u64 = resp.headers()[pool::H_PREFIX_HIT_TOKENS]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let body: Value = resp.json().await.expect("json");
                let elapsed = t.elapsed();
                assert_eq!(
                    body["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
                    Some(hit),
                    "usage reports the prefix hit"
                );
                out.push((r.prefix_key.clone(), replica, elapsed));
            }
            out
        });
    }
    let mut placement: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut total = Duration::ZERO;
    let mut n = 0u32;
    while let Some(r) = tasks.join_next().await {
        for (key, replica, elapsed) in r.unwrap() {
            placement.entry(key).or_default().insert(replica);
            total += elapsed;
            n += 1;
        }
    }
    Run {
        stats: pool.stats(),
        mean_latency: total / n.max(1),
        placement,
    }
}

fn report(name: &str, run: &Run) {
    let per: Vec<String> = run
        .stats
        .replicas
        .iter()
        .map(|r| format!("{:.0}%/{}", r.token_hit_rate() * 100.0, r.requests))
        .collect();
    println!(
        "{name:>12}: token hit rate {:5.1}%, block hit rate {:5.1}%, requests with a hit {:5.1}%, mean latency {:6.1} ms  (per replica hit/requests: {})",
        run.stats.token_hit_rate * 100.0,
        run.stats.total.block_hit_rate() * 100.0,
        run.stats.total.hit_requests as f64 / run.stats.total.requests.max(1) as f64 * 100.0,
        run.mean_latency.as_secs_f64() * 1000.0,
        per.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_key_hashing_beats_round_robin_through_envoy() {
    let w = Workload {
        prompts: 32,
        requests: 640,
        seed: 11,
    };
    let reqs = w.build();
    let ws = w.working_set_blocks();
    // Each replica's KV cache holds a fifth of the system prompts' blocks, so the pool together
    // holds them about once even when the ring spreads the prefixes unevenly: the regime where
    // routing matters (when every replica holds everything, round robin hits too; see
    // kv_model_capacity_sweep).
    let config = PoolConfig {
        capacity_blocks: ws / 5,
        ..PoolConfig::default()
    };
    let pool = pool::spawn_pool(REPLICAS, config.clone()).await.unwrap();
    let envoy = PoolEnvoy::start(&pool.addrs).await.unwrap();
    let reqs = Arc::new(reqs);

    let hash = drive(&envoy, &pool, &reqs, false, 16).await;
    let rr = drive(&envoy, &pool, &reqs, true, 16).await;
    println!(
        "{} system prompts (1-2k tokens, {ws} blocks), {} requests, {REPLICAS} replicas of {} blocks, \
         latency {:?} + {:?}/uncached token + {:?}/output token, 16 concurrent",
        w.prompts,
        w.requests,
        config.capacity_blocks,
        config.base_latency,
        config.prefill_per_token,
        config.decode_per_token
    );
    report("ring hash", &hash);
    report("round robin", &rr);

    // Stickiness: with hashing, every prefix stays on one replica.
    for (key, replicas) in &hash.placement {
        assert_eq!(replicas.len(), 1, "prefix {key} spread over {replicas:?}");
    }
    let used: BTreeSet<&String> = hash.placement.values().flatten().collect();
    assert!(used.len() >= 3, "ring hash uses the pool: {used:?}");
    assert!(
        hash.stats.token_hit_rate >= 3.0 * rr.stats.token_hit_rate,
        "hash {:.3} vs round robin {:.3}",
        hash.stats.token_hit_rate,
        rr.stats.token_hit_rate
    );
    assert!(hash.mean_latency < rr.mean_latency);
    assert_eq!(hash.stats.total.requests, w.requests as u64);

    // The stats endpoint serves the same numbers from any replica.
    let client = harness::http_client();
    let url = format!("{}/_sim/pool-stats", pool.base_url(2).unwrap());
    let via_http: PoolStats = client.get(&url).send().await.unwrap().json().await.unwrap();
    let direct = pool.stats();
    // (the f64 rate may differ in its last bit after a JSON round trip)
    assert_eq!(
        (&via_http.replicas, &via_http.total),
        (&direct.replicas, &direct.total)
    );
    let r = client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(pool.stats().total.requests, 0);
    drop(envoy);
    pool.shutdown().await.unwrap();
}

/// A replica straight, no Envoy: wire format, headers, stream, and a second identical prompt
/// hitting the cache.
#[tokio::test]
async fn replica_reports_prefix_hits() {
    let config = PoolConfig {
        base_latency: Duration::ZERO,
        decode_per_token: Duration::ZERO,
        ..PoolConfig::default()
    };
    let pool = pool::spawn_pool(2, config).await.unwrap();
    let client = harness::http_client();
    let url = format!("{}/v1/chat/completions", pool.base_url(1).unwrap());
    let system = "You are a terse assistant for a bank. ".repeat(30);
    let body = |user: &str, stream: bool| {
        json!({"model": "gpt-4o-mini", "stream": stream,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "system", "content": system},
                            {"role": "user", "content": user}]})
    };
    let first = client
        .post(&url)
        .json(&body("hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()[pool::H_REPLICA], "1");
    assert_eq!(first.headers()[pool::H_PREFIX_HIT_TOKENS], "0");
    let v: Value = first.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();

    let second = client
        .post(&url)
        .json(&body("what are your opening hours?", true))
        .send()
        .await
        .unwrap();
    let hit: u64 = second.headers()[pool::H_PREFIX_HIT_TOKENS]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        hit >= 16 * 15 && hit.is_multiple_of(16) && hit < prompt,
        "hit {hit} of {prompt}"
    );
    let sse = second.text().await.unwrap();
    assert!(
        sse.contains(&format!("\"cached_tokens\":{hit}")),
        "streamed usage carries the hit"
    );
    assert!(sse.trim_end().ends_with("data: [DONE]"));

    let stats = pool.stats();
    assert_eq!(stats.replicas[0].requests, 0);
    assert_eq!(stats.replicas[1].requests, 2);
    assert_eq!(stats.replicas[1].hit_requests, 1);
    assert_eq!(stats.total.cached_tokens, hit);
    // Unmodelled paths still work and name the replica.
    let models = client
        .get(format!("{}/v1/models", pool.base_url(0).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(models.headers()[pool::H_REPLICA], "0");
    pool.shutdown().await.unwrap();
}
