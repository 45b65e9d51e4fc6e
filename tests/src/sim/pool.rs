//! A simulated pool of self-hosted inference replicas (vLLM/SGLang style)
//! with a KV prefix cache, to measure what prefix-aware routing
//! (`x-tollgate-prefix-key` + Envoy ring hash) buys over round robin.
//!
//! Each replica serves the full simulated provider ([`super::app`]: OpenAI
//! and Anthropic wire formats, JSON and SSE, `x-sim-*` injection) behind a
//! layer that models the replica's KV cache:
//!
//! * **Prompt tokens**: the prompt is rendered to tokens with the model's
//!   encoding ([`prompt_tokens`]): Chat Completions = tokens of
//!   `canonical_json(tools)` (when present), then per message the tokens of
//!   its role and of its text content (each part encoded separately, as a
//!   chat template's special tokens would separate them); legacy Completions
//!   = the tokens of the prompt string. This rendering never counts more
//!   than the simulator's billed `prompt_tokens`. Other paths are served
//!   without the cache model.
//! * **Blocks**: the tokens are cut into blocks of
//!   [`PoolConfig::block_tokens`] (16, as vLLM); only full blocks are cached.
//!   Block `i`'s hash chains the previous hash with the block's tokens, so a
//!   block is reusable only after the same whole prefix ([`block_hashes`]).
//! * **Cache**: per replica, an LRU of block hashes with
//!   [`PoolConfig::capacity_blocks`] ([`KvCache`]). A request's cached prefix
//!   is the number of leading blocks present; all its blocks are then
//!   touched (inserted when missing), the tail of the chain being the first
//!   to go (vLLM frees a request's blocks in reverse order), so eviction
//!   trims prefixes from the end. Lookup and insertion happen when the
//!   request arrives: a concurrent request with the same prefix counts as a
//!   hit even though the first one is still in prefill (slightly optimistic;
//!   vLLM would share the blocks once computed).
//! * **Latency**: `base_latency + prefill_per_token × uncached prompt tokens`
//!   before the first byte, then `decode_per_token × completion tokens`
//!   (plain JSON: added before the body; SSE: spread over the chunks as the
//!   chunk delay, rounded to whole ms, unless the request sets
//!   `x-sim-chunk-delay-ms`). Queueing and batching between concurrent
//!   requests are not modelled: every request runs as if alone.
//! * **Usage**: `usage.prompt_tokens_details.cached_tokens` = cached blocks ×
//!   block size (the simulator's `x-sim-cached-tokens`, set by the pool).
//! * **Response headers**: `x-sim-replica: <id>` (on every response),
//!   `x-sim-prefix-hit-tokens: <cached tokens>` on modelled requests.
//!
//! # Endpoints (besides the simulator's)
//!
//! | method + path | does |
//! | --- | --- |
//! | `GET /_sim/pool-stats` | the whole pool's [`PoolStats`] as JSON (any replica answers for all, as they share one process) |
//! | `DELETE /_sim/pool-stats` | zeroes every replica's counters and empties its KV cache (a cold pool) |

use super::inject::{self, Provider};
use super::tokens::{Encoding, canonical_json};
use super::{MAX_BODY, SimConfig};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tiktoken_rs::Rank;

/// Response header: the replica that served the request.
pub const H_REPLICA: &str = "x-sim-replica";
/// Response header: prompt tokens served from the replica's KV cache.
pub const H_PREFIX_HIT_TOKENS: &str = "x-sim-prefix-hit-tokens";
/// Request header Tollgate sets for consistent-hash load balancing
/// (contract, see DESIGN.md).
pub const H_PREFIX_KEY: &str = "x-tollgate-prefix-key";

/// How every replica of a pool behaves.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Tokens per KV block (vLLM: 16).
    pub block_tokens: usize,
    /// KV cache capacity of one replica, in blocks.
    pub capacity_blocks: usize,
    /// Fixed time before the first byte (scheduling, network).
    pub base_latency: Duration,
    /// Prefill time per prompt token not found in the KV cache.
    pub prefill_per_token: Duration,
    /// Decode time per completion token.
    pub decode_per_token: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            block_tokens: 16,
            capacity_blocks: 2000,
            base_latency: Duration::from_millis(10),
            prefill_per_token: Duration::from_micros(200),
            decode_per_token: Duration::from_millis(2),
        }
    }
}

// ---------------------------------------------------------------------------
// The KV cache model (pure).

/// Chained hashes of the full `block`-token blocks of `tokens`.
pub fn block_hashes(tokens: &[Rank], block: usize) -> Vec<u64> {
    let block = block.max(1);
    let mut prev: u64 = 0;
    tokens
        .chunks_exact(block)
        .map(|b| {
            let bytes: Vec<u8> = b.iter().flat_map(|t| t.to_le_bytes()).collect();
            prev = super::text::fnv1a(&[&prev.to_le_bytes(), &bytes]);
            prev
        })
        .collect()
}

/// An LRU set of block hashes with a fixed capacity.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    capacity: usize,
    clock: u64,
    /// hash -> last-use stamp
    stamps: HashMap<u64, u64>,
    /// last-use stamp -> hash (oldest first)
    order: BTreeMap<u64, u64>,
    evictions: u64,
}

impl KvCache {
    /// An empty cache holding at most `capacity` blocks.
    pub fn new(capacity: usize) -> KvCache {
        KvCache {
            capacity,
            ..KvCache::default()
        }
    }

    /// Serve one request's chain of block hashes: returns how many leading
    /// blocks were cached, then marks all of them used (inserting the
    /// missing ones), the last block as least recently used of the chain.
    pub fn serve(&mut self, chain: &[u64]) -> usize {
        let hit = chain
            .iter()
            .take_while(|h| self.stamps.contains_key(h))
            .count();
        // A chain longer than the cache keeps its head.
        let keep = chain.len().min(self.capacity);
        for h in chain[..keep].iter().rev() {
            self.touch(*h);
        }
        hit
    }

    fn touch(&mut self, h: u64) {
        self.clock += 1;
        if let Some(old) = self.stamps.insert(h, self.clock) {
            self.order.remove(&old);
        }
        self.order.insert(self.clock, h);
        while self.stamps.len() > self.capacity {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            self.stamps.remove(&victim);
            self.evictions += 1;
        }
    }

    /// Blocks currently cached.
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }

    /// Blocks evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Forget everything (counters included).
    pub fn clear(&mut self) {
        *self = KvCache::new(self.capacity);
    }
}

// ---------------------------------------------------------------------------
// Prompt rendering.

fn content_tokens(enc: Encoding, content: &Value, out: &mut Vec<Rank>) {
    match content {
        Value::String(s) => out.extend(enc.encode(s)),
        Value::Array(parts) => {
            for p in parts {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => out.extend(enc.encode(t)),
                    None => out.extend(enc.encode(&canonical_json(p))),
                }
            }
        }
        _ => {}
    }
}

/// The prompt of a request as the replica's tokens (see the module docs), or
/// `None` for paths and bodies the cache model does not cover.
pub fn prompt_tokens(path: &str, req: &Value) -> Option<Vec<Rank>> {
    let model = req.get("model").and_then(Value::as_str)?;
    let enc = Encoding::for_model(model);
    let mut out = Vec::new();
    match path {
        "/v1/chat/completions" => {
            if let Some(tools) = req
                .get("tools")
                .or_else(|| req.get("functions"))
                .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
            {
                out.extend(enc.encode(&canonical_json(tools)));
            }
            for m in req.get("messages")?.as_array()? {
                if let Some(role) = m.get("role").and_then(Value::as_str) {
                    out.extend(enc.encode(role));
                }
                if let Some(c) = m.get("content") {
                    content_tokens(enc, c, &mut out);
                }
            }
        }
        "/v1/completions" => out.extend(enc.encode(req.get("prompt")?.as_str()?)),
        _ => return None,
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Stats.

/// Counters of one replica (or the pool's sum, `id` = `None`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicaStats {
    /// Replica index (absent for the total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<usize>,
    /// Requests run through the cache model.
    pub requests: u64,
    /// Of those, requests with at least one cached block.
    pub hit_requests: u64,
    /// Requests with no cached block.
    pub miss_requests: u64,
    /// Prompt tokens (the replica's rendering).
    pub prompt_tokens: u64,
    /// Prompt tokens served from the KV cache.
    pub cached_tokens: u64,
    /// Full blocks found in the cache (leading blocks only).
    pub hit_blocks: u64,
    /// Full blocks that had to be computed.
    pub miss_blocks: u64,
    /// Blocks evicted.
    pub evictions: u64,
    /// Blocks cached now.
    pub resident_blocks: u64,
    /// Capacity in blocks.
    pub capacity_blocks: u64,
}

impl ReplicaStats {
    /// Cached share of prompt tokens (0 when there were none).
    pub fn token_hit_rate(&self) -> f64 {
        ratio(self.cached_tokens, self.prompt_tokens)
    }

    /// Cached share of full blocks.
    pub fn block_hit_rate(&self) -> f64 {
        ratio(self.hit_blocks, self.hit_blocks + self.miss_blocks)
    }

    fn add(&mut self, o: &ReplicaStats) {
        self.requests += o.requests;
        self.hit_requests += o.hit_requests;
        self.miss_requests += o.miss_requests;
        self.prompt_tokens += o.prompt_tokens;
        self.cached_tokens += o.cached_tokens;
        self.hit_blocks += o.hit_blocks;
        self.miss_blocks += o.miss_blocks;
        self.evictions += o.evictions;
        self.resident_blocks += o.resident_blocks;
        self.capacity_blocks += o.capacity_blocks;
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// `GET /_sim/pool-stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PoolStats {
    /// Tokens per block.
    pub block_tokens: usize,
    /// One entry per replica, by id.
    pub replicas: Vec<ReplicaStats>,
    /// Sum over the replicas.
    pub total: ReplicaStats,
    /// `total.cached_tokens / total.prompt_tokens`.
    pub token_hit_rate: f64,
}

// ---------------------------------------------------------------------------
// Replicas.

#[derive(Debug)]
struct ReplicaState {
    cache: KvCache,
    stats: ReplicaStats,
}

#[derive(Debug)]
struct Pool {
    config: PoolConfig,
    replicas: Vec<Mutex<ReplicaState>>,
}

impl Pool {
    fn new(n: usize, config: PoolConfig) -> Arc<Pool> {
        let replicas = (0..n)
            .map(|id| {
                Mutex::new(ReplicaState {
                    cache: KvCache::new(config.capacity_blocks),
                    stats: ReplicaStats {
                        id: Some(id),
                        capacity_blocks: config.capacity_blocks as u64,
                        ..ReplicaStats::default()
                    },
                })
            })
            .collect();
        Arc::new(Pool { config, replicas })
    }

    fn replica(&self, id: usize) -> Option<MutexGuard<'_, ReplicaState>> {
        self.replicas
            .get(id)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Run a prompt through replica `id`'s cache: the cached tokens.
    fn serve(&self, id: usize, tokens: &[Rank]) -> usize {
        let block = self.config.block_tokens.max(1);
        let chain = block_hashes(tokens, block);
        let Some(mut r) = self.replica(id) else {
            return 0;
        };
        let hit = r.cache.serve(&chain);
        let (resident, evictions) = (r.cache.len() as u64, r.cache.evictions());
        let s = &mut r.stats;
        s.requests += 1;
        if hit > 0 {
            s.hit_requests += 1;
        } else {
            s.miss_requests += 1;
        }
        s.prompt_tokens += tokens.len() as u64;
        s.cached_tokens += (hit * block) as u64;
        s.hit_blocks += hit as u64;
        s.miss_blocks += (chain.len() - hit) as u64;
        s.evictions = evictions;
        s.resident_blocks = resident;
        hit * block
    }

    fn stats(&self) -> PoolStats {
        let replicas: Vec<ReplicaStats> = (0..self.replicas.len())
            .filter_map(|id| self.replica(id).map(|r| r.stats.clone()))
            .collect();
        let mut total = ReplicaStats::default();
        for r in &replicas {
            total.add(r);
        }
        PoolStats {
            block_tokens: self.config.block_tokens,
            token_hit_rate: total.token_hit_rate(),
            replicas,
            total,
        }
    }

    fn reset(&self) {
        for id in 0..self.replicas.len() {
            if let Some(mut r) = self.replica(id) {
                r.cache.clear();
                r.stats = ReplicaStats {
                    id: Some(id),
                    capacity_blocks: self.config.capacity_blocks as u64,
                    ..ReplicaStats::default()
                };
            }
        }
    }
}

#[derive(Clone, Debug)]
struct ReplicaCtx {
    pool: Arc<Pool>,
    id: usize,
}

/// Replica `id`'s router: the simulator behind the KV-cache layer.
fn replica_router(pool: Arc<Pool>, id: usize) -> Router {
    let ctx = ReplicaCtx { pool, id };
    Router::new()
        .route(
            "/_sim/pool-stats",
            get(get_stats).delete(delete_stats).with_state(ctx.clone()),
        )
        .fallback_service(super::app(SimConfig::default()))
        .layer(axum::middleware::from_fn_with_state(ctx, kv_layer))
}

async fn get_stats(State(ctx): State<ReplicaCtx>) -> Response {
    axum::Json(ctx.pool.stats()).into_response()
}

async fn delete_stats(State(ctx): State<ReplicaCtx>) -> Response {
    ctx.pool.reset();
    StatusCode::NO_CONTENT.into_response()
}

fn set_header(resp: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

async fn kv_layer(State(ctx): State<ReplicaCtx>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let modelled = req.method() == Method::POST
        && matches!(path.as_str(), "/v1/chat/completions" | "/v1/completions");
    if !modelled {
        let mut resp = next.run(req).await;
        set_header(&mut resp, H_REPLICA, ctx.id.to_string());
        return resp;
    }
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return inject::error_response(
            Provider::OpenAi,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
            None,
            None,
        );
    };
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let tokens = parsed.as_ref().and_then(|v| prompt_tokens(&path, v));
    let stream = parsed
        .as_ref()
        .and_then(|v| v.get("stream"))
        .and_then(Value::as_bool)
        == Some(true);
    let cfg = &ctx.pool.config;
    let (cached, uncached) = match &tokens {
        Some(t) => {
            let cached = ctx.pool.serve(ctx.id, t);
            (cached, t.len().saturating_sub(cached))
        }
        None => (0, 0),
    };
    if tokens.is_some()
        && let Ok(v) = HeaderValue::from_str(&cached.to_string())
    {
        parts.headers.insert(inject::H_CACHED, v);
    }
    if stream
        && !cfg.decode_per_token.is_zero()
        && !parts.headers.contains_key(inject::H_CHUNK_DELAY)
    {
        // OpenAI chunks carry 1-3 tokens: two tokens' worth per chunk.
        let ms = (cfg.decode_per_token * 2).as_secs_f64() * 1000.0;
        if let Ok(v) = HeaderValue::from_str(&format!("{}", ms.round() as u64)) {
            parts.headers.insert(inject::H_CHUNK_DELAY, v);
        }
    }
    sleep(cfg.base_latency + cfg.prefill_per_token * u32::try_from(uncached).unwrap_or(u32::MAX))
        .await;
    let mut resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !stream && resp.status() == StatusCode::OK && !cfg.decode_per_token.is_zero() {
        let (rparts, rbody) = resp.into_parts();
        let body = axum::body::to_bytes(rbody, MAX_BODY)
            .await
            .unwrap_or_default();
        let completion = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/usage/completion_tokens")
                    .and_then(Value::as_u64)
            })
            .unwrap_or(0);
        sleep(cfg.decode_per_token * u32::try_from(completion).unwrap_or(u32::MAX)).await;
        resp = Response::from_parts(rparts, Body::from(body));
    }
    set_header(&mut resp, H_REPLICA, ctx.id.to_string());
    if tokens.is_some() {
        set_header(&mut resp, H_PREFIX_HIT_TOKENS, cached.to_string());
    }
    resp
}

// ---------------------------------------------------------------------------
// Running a pool.

/// Serve a pool, one replica per listener (replica `i` on `listeners[i]`),
/// until `shutdown` resolves; in-flight responses finish.
pub async fn serve_pool(
    listeners: Vec<tokio::net::TcpListener>,
    config: PoolConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let pool = Pool::new(listeners.len(), config);
    run(pool, listeners, shutdown).await
}

async fn run(
    pool: Arc<Pool>,
    listeners: Vec<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let mut stop = stop_tx.subscribe();
        let app = replica_router(pool.clone(), id);
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
            result = Err(e);
        }
    }
    result
}

/// A pool running in the current tokio runtime; stops on drop.
#[derive(Debug)]
pub struct PoolHandle {
    /// Replica `i` listens on `addrs[i]` (127.0.0.1, ephemeral ports).
    pub addrs: Vec<SocketAddr>,
    pool: Arc<Pool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl PoolHandle {
    /// Counters of every replica (same as `GET /_sim/pool-stats`).
    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Zero the counters and empty every KV cache.
    pub fn reset(&self) {
        self.pool.reset();
    }

    /// `http://ADDR` of replica `i`.
    pub fn base_url(&self, i: usize) -> Option<String> {
        self.addrs.get(i).map(|a| format!("http://{a}"))
    }

    /// Stop gracefully (in-flight responses finish) and wait.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Start `n` replicas on 127.0.0.1 (ephemeral ports) in the current tokio
/// runtime.
pub async fn spawn_pool(n: usize, config: PoolConfig) -> std::io::Result<PoolHandle> {
    let mut listeners = Vec::with_capacity(n);
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        addrs.push(l.local_addr()?);
        listeners.push(l);
    }
    let pool = Pool::new(n, config);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(pool.clone(), listeners, async move {
        let _ = rx.await;
    }));
    Ok(PoolHandle {
        addrs,
        pool,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// The `lb_endpoints` YAML of an Envoy cluster for `addrs` (flow style, one
/// line), each endpoint with `envoy.lb` `hash_key: replica-<i>` so a replica
/// keeps its place on the hash ring when its address changes. Substitute it
/// for `${POOL_ENDPOINTS}` in `envoy/pool.yaml.tmpl`.
pub fn envoy_endpoints(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "{{endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}, \
                 metadata: {{filter_metadata: {{envoy.lb: {{hash_key: \"replica-{i}\"}}}}}}}}",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chain_hashes_depend_on_the_whole_prefix() {
        let a: Vec<Rank> = (0..40).collect();
        let mut b = a.clone();
        b[0] = 999;
        let (ha, hb) = (block_hashes(&a, 16), block_hashes(&b, 16));
        assert_eq!(ha.len(), 2, "only full blocks");
        assert_ne!(ha[1], hb[1], "block 1 differs once block 0 does");
        let mut c = a.clone();
        c[39] = 7;
        assert_eq!(block_hashes(&c, 16), ha, "partial tail not hashed");
    }

    #[test]
    fn lru_counts_leading_hits_and_evicts_tails_first() {
        let mut kv = KvCache::new(4);
        assert_eq!(kv.serve(&[1, 2, 3]), 0);
        assert_eq!(kv.serve(&[1, 2, 9]), 2);
        assert_eq!(kv.serve(&[5, 2, 3]), 0, "a hit must be a leading block");
        // capacity 4: the last insertions pushed out tails before heads
        assert_eq!(kv.len(), 4);
        assert!(kv.evictions() > 0);
        assert_eq!(kv.serve(&[5]), 1, "the newest head survives");
        let mut long = KvCache::new(2);
        assert_eq!(long.serve(&[1, 2, 3, 4]), 0);
        assert_eq!(
            long.serve(&[1, 2, 3, 4]),
            2,
            "an oversize chain keeps its head"
        );
    }

    #[test]
    fn chat_rendering_is_stable_in_the_prefix() {
        let req = |user: &str| {
            serde_json::json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You are a careful assistant. ".repeat(20)},
                {"role": "user", "content": user}]})
        };
        let a = prompt_tokens("/v1/chat/completions", &req("hi")).unwrap();
        let b = prompt_tokens("/v1/chat/completions", &req("what is the weather")).unwrap();
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        assert!(common >= 100, "system prompt shared ({common} tokens)");
        assert_eq!(prompt_tokens("/v1/responses", &req("x")), None);
    }
}
