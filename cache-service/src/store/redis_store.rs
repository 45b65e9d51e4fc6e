//! The shared backend: entries in Redis, so several service replicas share one cache.
//!
//! Key scheme (`{p}` is the namespace; every other part is an id or a hex hash, see
//! [`codec::Hashes`], so no prompt, tenant name or API key appears in a key):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{p}:e:{id}` | hash | `v`: encoded entry ([`codec`]); `x`, `t`, `m`: its exact, tenant and model hashes |
//! | `{p}:x:{hash(tenant, exact_key)}` | string | id (exact lookups) |
//! | `{p}:by_time` | sorted set | id scored by `created_at` (eviction, scan, count) |
//! | `{p}:by_id` | sorted set | ids zero-padded to 20 digits, all scored 0: id order by lex range (paged rebuilds) |
//! | `{p}:t:{hash(tenant)}` | set | ids of the tenant (invalidation) |
//! | `{p}:m:{hash(model)}` | set | ids of the model (invalidation) |
//! | `{p}:events` | stream | every change, trimmed to about [`RedisOptions::events_maxlen`] |
//!
//! Each write is one Lua script, so an entry, its index rows and its event change atomically
//! and in one round trip, whichever replica writes. Events carry ids, not entries: a replica's
//! reader task (`XREAD BLOCK` on its own connection, from the stream position at connect time)
//! fetches the entries of `Put` events in one pipeline per batch. The writer sees its own events
//! the same way, about one round trip after the write returns.
//!
//! Both connections are `redis` connection managers: after a Redis restart the next command
//! reconnects, and the reader resumes from the last event it delivered. If the stream was
//! trimmed past that position while it was away, the gap is logged and counted
//! ([`Store::missed_events`]); callers should then rebuild from [`Store::scan`].
//!
//! Scripts build the keys they touch from the namespace, so this scheme needs a single Redis
//! (or a primary with replicas), not Redis Cluster.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::codec::{self, Hashes, hex};
use super::{Store, StoreError};
use crate::model::{Entry, InvalidateFilter, StoreEvent};

/// Removes one entry and its index rows (shared by the scripts below).
const LUA_REMOVE: &str = r"
local function padded(id)
  return string.rep('0', 20 - #id) .. id
end
local function remove(p, id)
  local ek = p .. ':e:' .. id
  redis.call('ZREM', p .. ':by_time', id)
  redis.call('ZREM', p .. ':by_id', padded(id))
  local old = redis.call('HMGET', ek, 'x', 't', 'm')
  if not old[1] then return false end
  local xk = p .. ':x:' .. old[1]
  if redis.call('GET', xk) == id then redis.call('DEL', xk) end
  redis.call('SREM', p .. ':t:' .. old[2], id)
  redis.call('SREM', p .. ':m:' .. old[3], id)
  redis.call('DEL', ek)
  return true
end
";

/// ARGV: prefix, maxlen, id, value, exact hash, tenant hash, model hash, created_at.
const LUA_PUT: &str = r"
local p, id = ARGV[1], ARGV[3]
remove(p, id)
redis.call('HSET', p .. ':e:' .. id, 'v', ARGV[4], 'x', ARGV[5], 't', ARGV[6], 'm', ARGV[7])
redis.call('SET', p .. ':x:' .. ARGV[5], id)
redis.call('ZADD', p .. ':by_time', ARGV[8], id)
redis.call('ZADD', p .. ':by_id', 0, padded(id))
redis.call('SADD', p .. ':t:' .. ARGV[6], id)
redis.call('SADD', p .. ':m:' .. ARGV[7], id)
redis.call('XADD', p .. ':events', 'MAXLEN', '~', ARGV[2], '*', 'k', 'p', 'v', id)
return 1
";

/// ARGV: prefix, maxlen, announce ('1' or '0'), ids... Returns the ids that existed.
const LUA_DELETE: &str = r"
local p = ARGV[1]
local deleted = {}
for i = 4, #ARGV do
  if remove(p, ARGV[i]) then deleted[#deleted + 1] = ARGV[i] end
end
if ARGV[3] == '1' and #deleted > 0 then
  redis.call('XADD', p .. ':events', 'MAXLEN', '~', ARGV[2], '*', 'k', 'd', 'v', table.concat(deleted, ','))
end
return deleted
";

/// ARGV: prefix, maxlen, max entries, batch. Deletes up to `batch` of the oldest entries above
/// `max`; returns {processed, deleted ids...}. Counting inside the script keeps concurrent
/// evictions on several replicas from evicting twice.
const LUA_EVICT: &str = r"
local p = ARGV[1]
local excess = redis.call('ZCARD', p .. ':by_time') - tonumber(ARGV[3])
if excess <= 0 then return {'0'} end
local k = math.min(excess, tonumber(ARGV[4]))
local ids = redis.call('ZRANGE', p .. ':by_time', 0, k - 1)
local out = {tostring(#ids)}
for _, id in ipairs(ids) do
  if remove(p, id) then out[#out + 1] = id end
end
if #out > 1 then
  redis.call('XADD', p .. ':events', 'MAXLEN', '~', ARGV[2], '*', 'k', 'd', 'v', table.concat(out, ',', 2))
end
return out
";

/// KEYS: exact index key. ARGV: prefix. One round trip for an exact lookup.
const LUA_GET_EXACT: &str = r"
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('HGET', ARGV[1] .. ':e:' .. id, 'v')
";

struct Scripts {
    put: Script,
    delete: Script,
    evict: Script,
    get_exact: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            put: Script::new(&format!("{LUA_REMOVE}{LUA_PUT}")),
            delete: Script::new(&format!("{LUA_REMOVE}{LUA_DELETE}")),
            evict: Script::new(&format!("{LUA_REMOVE}{LUA_EVICT}")),
            get_exact: Script::new(LUA_GET_EXACT),
        }
    }
}

/// Options of [`RedisStore::connect_with`].
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Key prefix: `[A-Za-z0-9_.-]`, 1 to 64 characters. Replicas that share a cache use the same.
    pub namespace: String,
    /// Approximate length the event stream is trimmed to. A replica disconnected for longer than
    /// it takes the others to write this many changes misses events (see
    /// [`Store::missed_events`]).
    pub events_maxlen: u64,
    /// Capacity of the local event channel.
    pub event_capacity: usize,
    /// Page size of scans, and ids per delete script call.
    pub batch: usize,
    /// Timeout of one command (a large batch may take a while on a busy server).
    pub response_timeout: Duration,
    /// How long one `XREAD` blocks.
    pub block: Duration,
    /// Connection attempts (exponential backoff from 100 ms, at most 1 s apart) before a
    /// command, or `connect`, fails while Redis is unreachable.
    pub connect_retries: usize,
}

impl RedisOptions {
    pub fn new(namespace: impl Into<String>) -> Self {
        RedisOptions {
            namespace: namespace.into(),
            events_maxlen: 100_000,
            event_capacity: super::embedded::EVENT_CAPACITY,
            batch: 1000,
            response_timeout: Duration::from_secs(5),
            block: Duration::from_secs(2),
            connect_retries: 3,
        }
    }
}

/// The Redis store. Dropping it stops its reader task.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    opts: RedisOptions,
    scripts: Arc<Scripts>,
    events: broadcast::Sender<StoreEvent>,
    missed: Arc<AtomicU64>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn valid_namespace(ns: &str) -> bool {
    (1..=64).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`) with default options.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisOptions::new(namespace)).await
    }

    pub async fn connect_with(url: &str, opts: RedisOptions) -> Result<Self, StoreError> {
        if !valid_namespace(&opts.namespace) {
            return Err(unavailable(format!(
                "invalid namespace {:?}: use 1-64 of [A-Za-z0-9_.-]",
                opts.namespace
            )));
        }
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = |response_timeout| {
            ConnectionManagerConfig::new()
                .set_response_timeout(Some(response_timeout))
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(opts.connect_retries)
                .set_max_delay(Duration::from_secs(1))
        };
        let mut conn =
            ConnectionManager::new_with_config(client.clone(), config(opts.response_timeout))
                .await
                .map_err(unavailable)?;
        // A second connection for the blocking reads: a blocked XREAD would hold up every other
        // command pipelined on a shared connection.
        let reader_conn =
            ConnectionManager::new_with_config(client, config(opts.block + opts.response_timeout))
                .await
                .map_err(unavailable)?;
        warn_on_risky_config(&mut conn).await;
        let prefix = opts.namespace.clone();
        backfill_id_index(&mut conn, &prefix, opts.batch.max(1))
            .await
            .map_err(unavailable)?;
        let stream = format!("{prefix}:events");
        // Position at connect time: events written from now on are delivered.
        let start = stream_info(&mut conn, &stream).await.map_err(unavailable)?;
        let (events, _) = broadcast::channel(opts.event_capacity.max(1));
        let missed = Arc::new(AtomicU64::new(0));
        let reader = tokio::spawn(
            Reader {
                conn: reader_conn,
                fetch: conn.clone(),
                prefix: prefix.clone(),
                stream,
                last: start.last_id,
                offset: start.added,
                block: opts.block,
                events: events.clone(),
                missed: missed.clone(),
            }
            .run(),
        );
        Ok(RedisStore {
            conn,
            prefix,
            opts,
            scripts: Arc::new(Scripts::new()),
            events,
            missed,
            reader,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    /// Runs `op` on the shared connection; once more if the connection had dropped (the first
    /// command after a Redis restart finds the old connection dead and triggers the reconnect).
    /// Every operation here is idempotent, so running it twice is safe.
    async fn run<T, Fut>(&self, op: impl Fn(ConnectionManager) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match op(self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() => {
                tracing::debug!(error = %e, "redis store: connection dropped; retrying once");
                op(self.conn.clone()).await.map_err(unavailable)
            }
            r => r.map_err(unavailable),
        }
    }

    async fn delete_batch(&self, ids: &[u64], announce: bool) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in ids.chunks(self.opts.batch.max(1)) {
            let mut inv = self.scripts.delete.prepare_invoke();
            inv.arg(&self.prefix)
                .arg(self.opts.events_maxlen)
                .arg(if announce { "1" } else { "0" });
            for id in chunk {
                inv.arg(id);
            }
            let inv = &inv;
            let deleted: Vec<String> = self
                .run(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
            n += deleted.len() as u64;
        }
        Ok(n)
    }
}

/// Logs what would make entries vanish behind the store's back: no persistence (a Redis restart
/// empties the cache; replicas' indexes then point at nothing until they rescan) or an
/// `allkeys-*` eviction policy (Redis would drop single keys, leaving index rows without entries;
/// bound the size with `evict_to` and `noeviction` instead). Managed Redis may forbid `CONFIG`:
/// then nothing is checked.
async fn warn_on_risky_config(conn: &mut ConnectionManager) {
    let config: Result<HashMap<String, String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .arg("save")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    let Ok(config) = config else { return };
    let get = |k: &str| config.get(k).map_or("", String::as_str);
    if get("appendonly") == "no" && get("save").trim().is_empty() {
        tracing::warn!(
            "redis store: Redis has no persistence (appendonly no, no save points): cached entries will not survive a Redis restart"
        );
    }
    if get("maxmemory-policy").starts_with("allkeys") {
        tracing::warn!(
            policy = get("maxmemory-policy"),
            "redis store: Redis may evict single cache keys; prefer noeviction and the service's own size limit"
        );
    }
}

/// The `{p}:by_id` member of an id: zero-padded so lexical order is numeric order.
fn padded_id(id: u64) -> String {
    format!("{id:020}")
}

/// Stores written before `{p}:by_id` existed get it built from `{p}:by_time` (idempotent; a
/// concurrent writer adds its own ids to both).
async fn backfill_id_index(
    conn: &mut ConnectionManager,
    prefix: &str,
    batch: usize,
) -> redis::RedisResult<()> {
    let by_time = format!("{prefix}:by_time");
    let by_id = format!("{prefix}:by_id");
    let (n_time, n_id): (u64, u64) = redis::pipe()
        .zcard(&by_time)
        .zcard(&by_id)
        .query_async(conn)
        .await?;
    if n_id >= n_time {
        return Ok(());
    }
    tracing::info!(entries = n_time, "redis store: building the id index");
    let mut cursor = 0u64;
    loop {
        let (next, flat): (u64, Vec<String>) = redis::cmd("ZSCAN")
            .arg(&by_time)
            .arg(cursor)
            .arg("COUNT")
            .arg(batch)
            .query_async(conn)
            .await?;
        let members: Vec<(u8, String)> = flat
            .iter()
            .step_by(2)
            .filter_map(|s| s.parse::<u64>().ok())
            .map(|id| (0u8, padded_id(id)))
            .collect();
        if !members.is_empty() {
            let _: () = conn.zadd_multiple(&by_id, &members).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Entries by id in one pipeline (missing ids are skipped, undecodable ones logged and skipped).
async fn fetch_entries(
    mut conn: ConnectionManager,
    prefix: &str,
    ids: &[u64],
) -> redis::RedisResult<Vec<Entry>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hget(format!("{prefix}:e:{id}"), "v");
    }
    let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
    let mut out = Vec::with_capacity(values.len());
    for (id, v) in ids.iter().zip(values) {
        let Some(v) = v else { continue };
        match codec::decode(&v) {
            Ok(e) => out.push(e),
            Err(e) => tracing::warn!(id, error = %e, "redis store: skipped undecodable entry"),
        }
    }
    Ok(out)
}

#[async_trait]
impl Store for RedisStore {
    async fn put(&self, entry: &Entry) -> Result<(), StoreError> {
        let h = Hashes::of(entry);
        let value = codec::encode(entry, &h)?;
        let mut inv = self.scripts.put.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(self.opts.events_maxlen)
            .arg(entry.id)
            .arg(value)
            .arg(hex(&h.exact))
            .arg(hex(&h.tenant))
            .arg(hex(&h.model))
            .arg(entry.created_at);
        let inv = &inv;
        let _: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    async fn get(&self, id: u64) -> Result<Option<Entry>, StoreError> {
        let key = &self.key("e", id);
        let v: Option<Vec<u8>> = self
            .run(|mut c| async move { c.hget(key, "v").await })
            .await?;
        v.map(|v| codec::decode(&v)).transpose()
    }

    async fn get_exact(&self, tenant: &str, exact_key: &str) -> Result<Option<Entry>, StoreError> {
        let xk = self.key("x", hex(&codec::exact_hash(tenant, exact_key)));
        let mut inv = self.scripts.get_exact.prepare_invoke();
        inv.key(xk).arg(&self.prefix);
        let inv = &inv;
        let v: Option<Vec<u8>> = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        // Check the fields, not only the 128-bit hash.
        Ok(v.map(|v| codec::decode(&v))
            .transpose()?
            .filter(|e| e.tenant == tenant && e.exact_key == exact_key))
    }

    async fn delete(&self, ids: &[u64]) -> Result<(), StoreError> {
        self.delete_batch(ids, true).await.map(|_| ())
    }

    /// Cost: one `SMEMBERS`/`SINTER` (or `ZRANGE` for everything) for the ids, then one script
    /// per `batch` ids; no value is read. Entries written while it runs may survive.
    async fn invalidate(&self, filter: &InvalidateFilter) -> Result<u64, StoreError> {
        let t = filter
            .tenant
            .as_deref()
            .map(|t| self.key("t", hex(&codec::tenant_hash(t))));
        let m = filter
            .model
            .as_deref()
            .map(|m| self.key("m", hex(&codec::model_hash(m))));
        let by_time = &format!("{}:by_time", self.prefix);
        let (t, m) = (&t, &m);
        let ids: Vec<String> = self
            .run(|mut c| async move {
                match (t, m) {
                    (None, None) => c.zrange(by_time, 0, -1).await,
                    (Some(t), None) => c.smembers(t).await,
                    (None, Some(m)) => c.smembers(m).await,
                    (Some(t), Some(m)) => c.sinter(&[t, m]).await,
                }
            })
            .await?;
        let ids: Vec<u64> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        let n = self.delete_batch(&ids, false).await?;
        let payload = serde_json::to_string(filter).map_err(unavailable)?;
        let cmd = &redis::cmd("XADD")
            .arg(format!("{}:events", self.prefix))
            .arg("MAXLEN")
            .arg("~")
            .arg(self.opts.events_maxlen)
            .arg("*")
            .arg("k")
            .arg("i")
            .arg("v")
            .arg(payload)
            .to_owned();
        let _: String = self
            .run(|mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        Ok(n)
    }

    /// Pages through `{p}:by_time` with `ZSCAN` (which returns every member present for the whole
    /// scan even while others write or evict) and fetches each page in one pipeline.
    async fn scan(&self) -> Result<Vec<Entry>, StoreError> {
        let key = &format!("{}:by_time", self.prefix);
        let batch = self.opts.batch.max(1);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, flat): (u64, Vec<String>) = self
                .run(|mut c| async move {
                    redis::cmd("ZSCAN")
                        .arg(key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(batch)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            // [member, score, member, score, ...]
            let ids: &[u64] = &flat
                .iter()
                .step_by(2)
                .filter_map(|s| s.parse().ok())
                .filter(|id| seen.insert(*id))
                .collect::<Vec<u64>>();
            let prefix = &self.prefix;
            out.extend(self.run(|c| fetch_entries(c, prefix, ids)).await?);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }

    /// One page in id order from `{p}:by_id` (`ZRANGEBYLEX`): a rebuild holds one page, not
    /// the whole store. Entries deleted between the index read and the fetch are skipped and
    /// the page is topped up, so a short page still means the end.
    async fn scan_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let key = &format!("{}:by_id", self.prefix);
        let limit = limit.max(1);
        let mut page: Vec<Entry> = Vec::new();
        let mut after = after;
        loop {
            let min = match after {
                None => "-".to_string(),
                Some(u64::MAX) => break,
                Some(a) => format!("({}", padded_id(a)),
            };
            let (min, want) = (&min, limit - page.len());
            let members: Vec<String> = self
                .run(|mut c| async move {
                    redis::cmd("ZRANGEBYLEX")
                        .arg(key)
                        .arg(min)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(want)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let ids: &[u64] = &members
                .iter()
                .filter_map(|m| m.parse::<u64>().ok())
                .collect::<Vec<u64>>();
            let prefix = &self.prefix;
            page.extend(self.run(|c| fetch_entries(c, prefix, ids)).await?);
            if members.len() < want || page.len() >= limit {
                break;
            }
            after = ids.last().copied();
        }
        page.sort_unstable_by_key(|e| e.id);
        Ok(page)
    }

    async fn len(&self) -> Result<u64, StoreError> {
        let key = &format!("{}:by_time", self.prefix);
        self.run(|mut c| async move { c.zcard(key).await }).await
    }

    async fn evict_to(&self, max_entries: u64) -> Result<Vec<u64>, StoreError> {
        let batch = self.opts.batch.max(1);
        // Lua numbers are doubles: clamp so the comparison stays exact.
        let max = max_entries.min(1 << 52);
        let mut deleted = Vec::new();
        loop {
            let mut inv = self.scripts.evict.prepare_invoke();
            inv.arg(&self.prefix)
                .arg(self.opts.events_maxlen)
                .arg(max)
                .arg(batch);
            let inv = &inv;
            let out: Vec<String> = self
                .run(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
            let processed: usize = out.first().and_then(|s| s.parse().ok()).unwrap_or(0);
            deleted.extend(out.iter().skip(1).filter_map(|s| s.parse::<u64>().ok()));
            if processed < batch {
                return Ok(deleted);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    fn missed_events(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// The background task that turns the event stream into local [`StoreEvent`]s.
struct Reader {
    conn: ConnectionManager,
    fetch: ConnectionManager,
    prefix: String,
    stream: String,
    /// Id of the last event delivered (or the stream's last id at connect time).
    last: String,
    /// The stream's `entries-added` count when `last` was added (Redis >= 7), to tell trimmed
    /// events from ids that were never used.
    offset: Option<u64>,
    block: Duration,
    events: broadcast::Sender<StoreEvent>,
    missed: Arc<AtomicU64>,
}

enum Raw {
    Put(u64),
    Deleted(Vec<u64>),
    Invalidated(InvalidateFilter),
}

/// Messages per `XREAD`.
const READ_COUNT: usize = 512;

impl Reader {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        // Whether events may have been trimmed before this reader saw them: after an outage, or
        // when a full batch says it is behind. Checked before the next read, against the
        // position it has delivered up to.
        let mut check = false;
        loop {
            let result = if check {
                self.check_gap().await.map(|()| {
                    check = false;
                    false
                })
            } else {
                self.step().await
            };
            match result {
                Ok(full) => {
                    if failures > 0 {
                        tracing::info!("redis store: event reader reconnected");
                        failures = 0;
                    }
                    check |= full;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(error = %e, "redis store: event reader failed; retrying");
                    }
                    failures = failures.saturating_add(1);
                    check = true;
                    let backoff = 50u64 << failures.min(5); // 100 ms .. 1.6 s
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
            }
        }
    }

    /// One `XREAD`: delivers its events and advances the position, or leaves the position
    /// unchanged on error (the batch is read again). Returns whether the batch was full.
    async fn step(&mut self) -> Result<bool, StoreError> {
        let opts = StreamReadOptions::default()
            .block(usize::try_from(self.block.as_millis()).unwrap_or(2000))
            .count(READ_COUNT);
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[&self.stream], &[&self.last], &opts)
            .await
            .map_err(unavailable)?;
        let Some(messages) = reply.and_then(|r| r.keys.into_iter().next()).map(|k| k.ids) else {
            return Ok(false);
        };
        let Some(last_id) = messages.last().map(|m| m.id.clone()) else {
            return Ok(false);
        };
        let raws: Vec<Raw> = messages.iter().filter_map(parse_message).collect();
        let put_ids: Vec<u64> = {
            let mut seen = HashSet::new();
            raws.iter()
                .filter_map(|r| match r {
                    Raw::Put(id) if seen.insert(*id) => Some(*id),
                    _ => None,
                })
                .collect()
        };
        let entries: HashMap<u64, Entry> =
            fetch_entries(self.fetch.clone(), &self.prefix, &put_ids)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(|e| (e.id, e))
                .collect();
        for raw in raws {
            let ev = match raw {
                // Gone since (a later event in this batch or the next says so).
                Raw::Put(id) => match entries.get(&id) {
                    Some(e) => StoreEvent::Put(Box::new(e.clone())),
                    None => continue,
                },
                Raw::Deleted(ids) => StoreEvent::Deleted(ids),
                Raw::Invalidated(f) => StoreEvent::Invalidated(f),
            };
            // No receiver is not an error.
            let _ = self.events.send(ev);
        }
        self.last = last_id;
        self.offset = self.offset.map(|o| o + messages.len() as u64);
        Ok(messages.len() >= READ_COUNT)
    }

    /// Were events newer than this reader's position trimmed from the stream (or the stream
    /// lost, with the data, in a Redis restart without persistence)? Trimming removes the oldest
    /// entries and nothing else deletes any, so the first `entries-added - length` events are
    /// gone: a gap if that passes this reader's offset.
    async fn check_gap(&mut self) -> Result<(), StoreError> {
        let info = stream_info(&mut self.conn, &self.stream)
            .await
            .map_err(unavailable)?;
        let (Some(offset), Some(added), Some(len)) = (self.offset, info.added, info.len) else {
            return Ok(());
        };
        if added < offset {
            // The stream restarted from scratch: the data it described is likely gone too.
            self.missed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("redis store: the event stream was reset; rebuild from a scan");
            self.last = info.last_id;
            self.offset = Some(added);
        } else if added.saturating_sub(len) > offset {
            self.missed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                missed = added - len - offset,
                "redis store: events were trimmed before this replica read them; rebuild from a scan"
            );
            // The next read starts at the first kept event.
            self.offset = Some(added - len);
        }
        Ok(())
    }
}

struct StreamInfo {
    last_id: String,
    /// `entries-added` (Redis >= 7).
    added: Option<u64>,
    len: Option<u64>,
}

/// The stream's last id and counters; a missing stream is empty.
async fn stream_info(conn: &mut ConnectionManager, stream: &str) -> redis::RedisResult<StreamInfo> {
    let exists: bool = conn.exists(stream).await?;
    if !exists {
        return Ok(StreamInfo {
            last_id: "0-0".into(),
            added: Some(0),
            len: Some(0),
        });
    }
    let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await?;
    fn field<T: redis::FromRedisValue>(
        info: &HashMap<String, redis::Value>,
        name: &str,
    ) -> Option<T> {
        info.get(name)
            .and_then(|v| redis::from_redis_value_ref(v).ok())
    }
    Ok(StreamInfo {
        last_id: field(&info, "last-generated-id").unwrap_or_else(|| "0-0".to_owned()),
        added: field(&info, "entries-added"),
        len: field(&info, "length"),
    })
}

fn parse_message(m: &StreamId) -> Option<Raw> {
    let kind: String = m.get("k")?;
    let v: String = m.get("v")?;
    let raw = match kind.as_str() {
        "p" => Raw::Put(v.parse().ok()?),
        "d" => Raw::Deleted(v.split(',').filter_map(|s| s.parse().ok()).collect()),
        "i" => Raw::Invalidated(serde_json::from_str(&v).ok()?),
        _ => {
            tracing::warn!(kind, "redis store: unknown event kind");
            return None;
        }
    };
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(valid_namespace("tollgate"));
        assert!(valid_namespace("t-1.a_b"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("a b"));
        assert!(!valid_namespace("a:b"));
        assert!(!valid_namespace("a*"));
        assert!(!valid_namespace(&"a".repeat(65)));
    }
}
