//! The shared ledger backend: records in Redis, so every service replica writes and reads one
//! ledger.
//!
//! Key scheme (`{p}` is the namespace; ids are hex hashes of request ids, days are UTC day
//! numbers since 1970-01-01, so no tenant, user or key name appears in a key):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{p}:ledger:r:{hash(request_id)}` | string | the record as JSON |
//! | `{p}:ledger:d:{day}` | sorted set | hashes of the day's records, scored by `time_ms` |
//! | `{p}:ledger:days` | sorted set | days that have records (scored by the day) |
//!
//! An append is one Lua script per [`RedisLedgerOptions::batch`] records: `SET NX` of the record
//! (a request id already stored is skipped, whichever replica stored it) and, when new, its
//! day-index entry, atomically. A range query reads only the days it covers, in sorted-set order
//! (time, then hash: the [`Position`] order the embedded ledger uses too), and fetches records
//! with `MGET`. With a retention, records and day indexes expire (`EXPIREAT`) at the end of
//! their day plus the retention; the days set is trimmed on append.
//!
//! Scripts build their keys from the namespace, so this needs a single Redis (or a primary with
//! replicas), not Redis Cluster, like the cache store.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::time::MS_PER_DAY;
use super::{Ledger, LedgerError, LedgerRecord, Position, ScanFrom};
use crate::store::codec::hex;

/// ARGV: prefix, days-set cutoff day (records before it are past retention; 0: none), then per
/// record: id hash, time_ms, day, expire-at seconds (0: never), JSON. Returns how many were new.
const LUA_APPEND: &str = r"
local p = ARGV[1]
local n = 0
local days = {}
for i = 3, #ARGV, 5 do
  local id, t, day, exp, v = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local ok
  if exp == '0' then
    ok = redis.call('SET', p .. ':ledger:r:' .. id, v, 'NX')
  else
    ok = redis.call('SET', p .. ':ledger:r:' .. id, v, 'NX', 'EXAT', exp)
  end
  if ok then
    n = n + 1
    local dk = p .. ':ledger:d:' .. day
    redis.call('ZADD', dk, t, id)
    if not days[day] then
      days[day] = true
      if exp ~= '0' then redis.call('EXPIREAT', dk, exp) end
      redis.call('ZADD', p .. ':ledger:days', day, day)
    end
  end
end
if ARGV[2] ~= '0' then
  redis.call('ZREMRANGEBYSCORE', p .. ':ledger:days', '-inf', '(' .. ARGV[2])
end
return n
";

/// Options of [`RedisLedger::connect_with`].
#[derive(Clone, Debug)]
pub struct RedisLedgerOptions {
    /// Key prefix: `[A-Za-z0-9_.-]`, 1 to 64 characters (the cache store's namespace can be
    /// shared: ledger keys live under `{namespace}:ledger:`).
    pub namespace: String,
    /// Days records are kept (0: forever). Default [`super::DEFAULT_RETENTION_DAYS`].
    pub retention_days: u32,
    /// Records per append script, index entries per read.
    pub batch: usize,
    /// Timeout of one command.
    pub response_timeout: Duration,
    /// Connection attempts before a command, or `connect`, fails while Redis is unreachable.
    pub connect_retries: usize,
}

impl RedisLedgerOptions {
    pub fn new(namespace: impl Into<String>) -> Self {
        RedisLedgerOptions {
            namespace: namespace.into(),
            retention_days: super::DEFAULT_RETENTION_DAYS,
            batch: 1000,
            response_timeout: Duration::from_secs(5),
            connect_retries: 3,
        }
    }
}

/// The Redis ledger.
pub struct RedisLedger {
    conn: ConnectionManager,
    prefix: String,
    opts: RedisLedgerOptions,
    append: Script,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("namespace", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(format!("redis ledger: {e}"))
}

fn valid_namespace(ns: &str) -> bool {
    (1..=64).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl RedisLedger {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`) with default options.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, LedgerError> {
        Self::connect_with(url, RedisLedgerOptions::new(namespace)).await
    }

    pub async fn connect_with(url: &str, opts: RedisLedgerOptions) -> Result<Self, LedgerError> {
        if !valid_namespace(&opts.namespace) {
            return Err(unavailable(format!(
                "invalid namespace {:?}: use 1-64 of [A-Za-z0-9_.-]",
                opts.namespace
            )));
        }
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(opts.response_timeout))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(opts.connect_retries)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(RedisLedger {
            conn,
            prefix: opts.namespace.clone(),
            opts,
            append: Script::new(LUA_APPEND),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.prefix
    }

    fn day_key(&self, day: u64) -> String {
        format!("{}:ledger:d:{day}", self.prefix)
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}:ledger:r:{id}", self.prefix)
    }

    fn days_key(&self) -> String {
        format!("{}:ledger:days", self.prefix)
    }

    /// Runs `op`; once more if the connection had dropped (the first command after a Redis
    /// restart finds the old connection dead and triggers the reconnect). Every operation here
    /// is idempotent (appends skip stored ids), so running it twice is safe.
    async fn run<T, Fut>(&self, op: impl Fn(ConnectionManager) -> Fut) -> Result<T, LedgerError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match op(self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                tracing::debug!(error = %e, "redis ledger: connection dropped; retrying once");
                op(self.conn.clone()).await.map_err(unavailable)
            }
            r => r.map_err(unavailable),
        }
    }

    /// When a record of `day` expires: the end of the day plus the retention, but not within the
    /// next hour (an old record re-sent late is still stored and deduplicated); 0: never.
    fn expire_at_s(&self, day: u64, now_ms: u64) -> u64 {
        if self.opts.retention_days == 0 {
            return 0;
        }
        let end_ms = (day + 1 + u64::from(self.opts.retention_days)).saturating_mul(MS_PER_DAY);
        (end_ms / 1000).max(now_ms / 1000 + 3600)
    }

    /// Record hashes of one day's index in `[min_score, to_ms)`, `count` from `skip`, with their
    /// times.
    async fn index_page(
        &self,
        day: u64,
        min_score: u64,
        to_ms: u64,
        skip: usize,
        count: usize,
    ) -> Result<Vec<(u64, String)>, LedgerError> {
        let key = &self.day_key(day);
        let flat: Vec<String> = self
            .run(|mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(min_score)
                    .arg(format!("({to_ms}"))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(skip)
                    .arg(count)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [member, score] = pair else { break };
            let t = score
                .parse::<f64>()
                .map_err(|_| LedgerError::Corrupt(format!("ledger index score {score:?}")))?;
            // Scores are integer milliseconds (< 2^53, exact in a double).
            out.push((t as u64, member.clone()));
        }
        Ok(out)
    }

    /// Records by id hash, in the given order; missing (expired) ones skipped, undecodable ones
    /// logged and skipped.
    async fn fetch(&self, ids: &[String]) -> Result<Vec<LedgerRecord>, LedgerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &ids.iter().map(|id| self.record_key(id)).collect::<Vec<_>>();
        let values: Vec<Option<Vec<u8>>> =
            self.run(|mut c| async move { c.mget(keys).await }).await?;
        let mut out = Vec::with_capacity(values.len());
        for (id, v) in ids.iter().zip(values) {
            let Some(v) = v else { continue };
            match serde_json::from_slice(&v) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(id = %id, error = %e, "redis ledger: skipped undecodable record");
                }
            }
        }
        Ok(out)
    }

    /// Days with records in `[first, last]`.
    async fn days(&self, first: u64, last: u64) -> Result<Vec<u64>, LedgerError> {
        let key = &self.days_key();
        let days: Vec<String> = self
            .run(|mut c| async move { c.zrangebyscore(key, first, last).await })
            .await?;
        Ok(days.iter().filter_map(|d| d.parse().ok()).collect())
    }
}

fn id_from_hex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn append(&self, records: &[LedgerRecord]) -> Result<u64, LedgerError> {
        let now = super::now_ms();
        let cutoff_day = match self.opts.retention_days {
            0 => 0,
            r => (now / MS_PER_DAY).saturating_sub(u64::from(r)),
        };
        let mut new = 0;
        for chunk in records.chunks(self.opts.batch.max(1)) {
            let mut inv = self.append.prepare_invoke();
            inv.arg(&self.prefix).arg(cutoff_day);
            for r in chunk {
                let pos = r.position();
                let day = pos.time_ms / MS_PER_DAY;
                let json = serde_json::to_vec(r).map_err(unavailable)?;
                inv.arg(hex(&pos.id))
                    .arg(pos.time_ms)
                    .arg(day)
                    .arg(self.expire_at_s(day, now))
                    .arg(json);
            }
            let inv = &inv;
            let n: u64 = self
                .run(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
            new += n;
        }
        Ok(new)
    }

    async fn scan(
        &self,
        from: ScanFrom,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<LedgerRecord>, LedgerError> {
        let (start, inclusive) = match from {
            ScanFrom::At(p) => (p, true),
            ScanFrom::After(p) => (p, false),
        };
        let mut out = Vec::new();
        if limit == 0 || start.time_ms >= to_ms {
            return Ok(out);
        }
        let after_start = |t: u64, member: &str| {
            let Some(id) = id_from_hex(member) else {
                return false;
            };
            let p = Position { time_ms: t, id };
            if inclusive { p >= start } else { p > start }
        };
        let page = self.opts.batch.max(1);
        let days = self
            .days(start.time_ms / MS_PER_DAY, (to_ms - 1) / MS_PER_DAY)
            .await?;
        for day in days {
            // Paging by (score, offset within that score) keeps progress through any number of
            // records of the same millisecond; `seen` drops the repeats an insert between two
            // pages could cause.
            let (mut min_score, mut skip) = (start.time_ms, 0usize);
            let mut seen: HashSet<String> = HashSet::new();
            loop {
                let want = (limit - out.len()).clamp(1, page);
                let entries = self.index_page(day, min_score, to_ms, skip, want).await?;
                let got = entries.len();
                let Some(&(last_t, _)) = entries.last() else {
                    break;
                };
                let ids: Vec<String> = entries
                    .iter()
                    .filter(|(t, m)| {
                        after_start(*t, m) && (*t != min_score || seen.insert(m.clone()))
                    })
                    .map(|(_, m)| m.clone())
                    .collect();
                if last_t == min_score {
                    skip += got;
                } else {
                    min_score = last_t;
                    seen = entries
                        .iter()
                        .filter(|(t, _)| *t == last_t)
                        .map(|(_, m)| m.clone())
                        .collect();
                    skip = seen.len();
                }
                out.extend(self.fetch(&ids).await?);
                if out.len() >= limit {
                    out.truncate(limit);
                    return Ok(out);
                }
                if got < want {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deletes the records older than `before_ms` day by day (not atomic with concurrent appends
    /// of such old records; retention normally expires them instead).
    async fn prune(&self, before_ms: u64) -> Result<u64, LedgerError> {
        if before_ms == 0 {
            return Ok(0);
        }
        let last_day = (before_ms - 1) / MS_PER_DAY;
        let mut total = 0;
        for day in self.days(0, last_day).await? {
            let key = &self.day_key(day);
            let ids: Vec<String> =
                self.run(|mut c| async move {
                    c.zrangebyscore(key, "-inf", format!("({before_ms}")).await
                })
                .await?;
            for chunk in ids.chunks(self.opts.batch.max(1)) {
                let keys = &chunk
                    .iter()
                    .map(|id| self.record_key(id))
                    .collect::<Vec<_>>();
                let n: u64 = self.run(|mut c| async move { c.del(keys).await }).await?;
                total += n;
                let _: u64 = self
                    .run(|mut c| async move { c.zrem(key, chunk).await })
                    .await?;
            }
            let left: u64 = self.run(|mut c| async move { c.zcard(key).await }).await?;
            if left == 0 {
                let days = &self.days_key();
                let _: u64 = self
                    .run(|mut c| async move { c.zrem(days, day).await })
                    .await?;
            }
        }
        Ok(total)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        let _: String = self
            .run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn namespaces_and_hex() {
        assert!(valid_namespace("tollgate"));
        assert!(!valid_namespace("a:b"));
        assert!(!valid_namespace(""));
        let id = [0xab; 16];
        assert_eq!(id_from_hex(&hex(&id)), Some(id));
        assert_eq!(id_from_hex("ab"), None);
    }
}
