//! The shared budget backend: replicas sharing one Redis (and namespace) share budgets.
//!
//! Keys (`{p}` is the namespace; ids and request ids appear only as hashes):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{p}:b:defs` | hash | budget id -> [`BudgetDef`] JSON |
//! | `{p}:b:defsver` | string | definitions version: a random u64, replaced (in the same transaction) by every put and delete |
//! | `{p}:b:brk:{bucket seconds}:{bucket}` | string | spend circuit breaker window bucket, pico-USD (see `crate::breaker`) |
//! | `{p}:b:w:{hash(budget, scope)}:{start}` | hash | `b`, `s`, `st`, `en`: budget, scope, start, end; `sc si so`: spent cost/input/output; `rc ri ro`: reserved |
//! | `{p}:b:widx` | sorted set | window keys scored by keep-until (usage listing, cleanup) |
//! | `{p}:b:r:{reservation id}` | hash | `st` (`a` active, `s` settled, `x` expired), `c i o` reserved amounts, `ex` expiry, `w` window keys |
//! | `{p}:b:rexp` | sorted set | active reservation ids scored by expiry |
//! | `{p}:b:c:{hash(request id)}` | string | marks an unreserved charge (idempotency) |
//!
//! Each operation is one Lua script, so the check of every window and the reservation in all
//! of them happen atomically: replicas never over-admit, whatever their number. Counters are
//! Redis 64-bit integers (`HINCRBY`); the scripts compare them exactly in two base-10^9 limbs
//! (Lua numbers are doubles). TTLs are relative to the caller's clock (`now_ms`), so window keys
//! expire one period after their window ends, settled reservations and charge markers after
//! [`TOMBSTONE_RETENTION_MS`]. Scripts reach window keys named inside reservations, so this
//! scheme needs a single Redis (or a primary with replicas), not Redis Cluster.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::BudgetError;
use super::decide::{Amounts, Counters, LimitKind};
use super::def::BudgetDef;
use super::store::{
    BudgetStore, ReserveOutcome, SettleStatus, TOMBSTONE_RETENTION_MS, UsageFilter, WindowKey,
    WindowSpec, WindowUsage, hash_hex, valid_reservation_id,
};

/// Exact integer helpers and counter updates shared by the scripts.
const LUA_LIB: &str = r"
local B = 1000000000
-- A non-negative integer string (< 2^63) as {hi, lo} in base 10^9: exact in doubles.
local function big(s)
  if not s or s == '' or string.sub(s, 1, 1) == '-' then return {0, 0} end
  local n = #s
  if n <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))}
end
local function add(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= B then lo = lo - B; hi = hi + 1 end
  return {hi, lo}
end
local function ge(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] >= b[2]) end
local function gt(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2]) end
-- decide::exceeded: over when used up, or when the request would pass the limit.
local function over(used, req, limit) return ge(used, limit) or gt(add(used, req), limit) end
local function counters(k)
  local v = redis.call('HMGET', k, 'sc', 'si', 'so', 'rc', 'ri', 'ro')
  for j = 1, 6 do if not v[j] then v[j] = '0' end end
  return v
end
-- Adds an integer string to a counter: never below 0, never above 9e18 (Redis integers are
-- signed 64-bit; HINCRBY past them would fail the script).
local CAP = {9000000000, 0}
local function incr(k, f, by)
  if by == '0' or by == '-0' then return end
  if string.sub(by, 1, 1) == '-' then
    if redis.call('HINCRBY', k, f, by) < 0 then redis.call('HSET', k, f, '0') end
  elseif gt(add(big(redis.call('HGET', k, f) or '0'), big(by)), CAP) then
    redis.call('HSET', k, f, '9000000000000000000')
  else
    redis.call('HINCRBY', k, f, by)
  end
end
local function release(k, c, i, o)
  if redis.call('EXISTS', k) == 1 then
    incr(k, 'rc', '-' .. c); incr(k, 'ri', '-' .. i); incr(k, 'ro', '-' .. o)
  end
end
-- Creates or updates a window's description, keeps it for at least ttl ms and indexes it.
local function touch(k, widx, b, s, st, en, ttl, keep)
  redis.call('HSET', k, 'b', b, 's', s, 'st', st, 'en', en)
  if redis.call('PTTL', k) < tonumber(ttl) then redis.call('PEXPIRE', k, ttl) end
  redis.call('ZADD', widx, keep, k)
end
";

/// KEYS: reservation, expiry index, window index, windows...
/// ARGV: reservation id, expires at, cost, input, output, reservation ttl, then per window
/// (stride 10): budget, scope, start, end, ttl, keep until, limits usd, input, output, tokens
/// ('' = none). Returns {status ('ok' | 'over'), index, limit tag, 6 counters per window}.
const LUA_RESERVE: &str = r"
local nw = #KEYS - 3
local H, W = 6, 10
local function reply(status, index, kind)
  local out = {status, tostring(index), kind}
  for i = 1, nw do
    local c = counters(KEYS[3 + i])
    for j = 1, 6 do out[#out + 1] = c[j] end
  end
  return out
end
if redis.call('EXISTS', KEYS[1]) == 1 then return reply('ok', 0, '') end
local rc, ri, ro = big(ARGV[3]), big(ARGV[4]), big(ARGV[5])
for i = 1, nw do
  local a = H + (i - 1) * W
  local c = counters(KEYS[3 + i])
  local uc = add(big(c[1]), big(c[4]))
  local ui = add(big(c[2]), big(c[5]))
  local uo = add(big(c[3]), big(c[6]))
  local checks = {
    {ARGV[a + 7], uc, rc, 'usd'},
    {ARGV[a + 8], ui, ri, 'in'},
    {ARGV[a + 9], uo, ro, 'out'},
    {ARGV[a + 10], add(ui, uo), add(ri, ro), 'tok'},
  }
  for _, ch in ipairs(checks) do
    if ch[1] ~= '' and over(ch[2], ch[3], big(ch[1])) then return reply('over', i - 1, ch[4]) end
  end
end
local wkeys = {}
for i = 1, nw do
  local a = H + (i - 1) * W
  local k = KEYS[3 + i]
  touch(k, KEYS[3], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
  incr(k, 'rc', ARGV[3]); incr(k, 'ri', ARGV[4]); incr(k, 'ro', ARGV[5])
  wkeys[#wkeys + 1] = k
end
redis.call('HSET', KEYS[1], 'st', 'a', 'ex', ARGV[2], 'c', ARGV[3], 'i', ARGV[4], 'o', ARGV[5],
  'w', table.concat(wkeys, ' '))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return reply('ok', 0, '')
";

/// KEYS: reservation, expiry index. ARGV: reservation id, cost, input, output, tombstone ttl.
const LUA_SETTLE: &str = r"
local r = redis.call('HMGET', KEYS[1], 'st', 'c', 'i', 'o', 'w')
if not r[1] then return 'unknown' end
if r[1] == 's' then return 'dup' end
for k in string.gmatch(r[5] or '', '%S+') do
  if redis.call('EXISTS', k) == 1 then
    if r[1] == 'a' then release(k, r[2], r[3], r[4]) end
    incr(k, 'sc', ARGV[2]); incr(k, 'si', ARGV[3]); incr(k, 'so', ARGV[4])
  end
end
redis.call('HSET', KEYS[1], 'st', 's')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
return 'ok'
";

/// KEYS: marker, window index, windows... ARGV: marker ttl, cost, input, output, then per
/// window (stride 6): budget, scope, start, end, ttl, keep until. Returns 1, or 0 if charged
/// before.
const LUA_CHARGE: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
for i = 1, #KEYS - 2 do
  local a = 4 + (i - 1) * 6
  local k = KEYS[2 + i]
  touch(k, KEYS[2], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
  incr(k, 'sc', ARGV[2]); incr(k, 'si', ARGV[3]); incr(k, 'so', ARGV[4])
end
return 1
";

/// KEYS: expiry index, window index. ARGV: now, batch, tombstone ttl, key prefix of
/// reservations. Returns how many reservations it looked at (expired, or already gone).
const LUA_EXPIRE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local n = 0
for _, id in ipairs(ids) do
  local rk = ARGV[4] .. id
  local r = redis.call('HMGET', rk, 'st', 'c', 'i', 'o', 'w')
  if r[1] == 'a' then
    for k in string.gmatch(r[5] or '', '%S+') do release(k, r[2], r[3], r[4]) end
    redis.call('HSET', rk, 'st', 'x')
    redis.call('PEXPIRE', rk, ARGV[3])
    n = n + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
return {#ids, n}
";

struct Scripts {
    reserve: Script,
    settle: Script,
    charge: Script,
    expire: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            reserve: Script::new(&format!("{LUA_LIB}{LUA_RESERVE}")),
            settle: Script::new(&format!("{LUA_LIB}{LUA_SETTLE}")),
            charge: Script::new(&format!("{LUA_LIB}{LUA_CHARGE}")),
            expire: Script::new(&format!("{LUA_LIB}{LUA_EXPIRE}")),
        }
    }
}

/// Amounts passed to Redis, and its counters, are capped at 9e18 (the largest limit): Redis
/// integers are signed 64-bit. (The embedded store saturates at `u64::MAX`; both caps lie far
/// beyond any limit.)
const MAX_AMOUNT: u64 = super::def::MAX_LIMIT_TOKENS;
/// Reservations released per expire script call.
const EXPIRE_BATCH: usize = 500;
/// Windows fetched per pipeline by `usage`.
const USAGE_BATCH: usize = 1000;

fn unavailable(e: impl std::fmt::Display) -> BudgetError {
    BudgetError::Unavailable(format!("redis budgets: {e}"))
}

fn valid_namespace(ns: &str) -> bool {
    (1..=64).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The Redis budget store.
pub struct RedisBudgetStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("namespace", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBudgetStore {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`); keys start with `namespace`
    /// (`[A-Za-z0-9_.-]`, 1-64 characters; the cache store's namespace can be shared).
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, BudgetError> {
        if !valid_namespace(namespace) {
            return Err(BudgetError::Invalid(format!(
                "invalid redis namespace {namespace:?}: use 1-64 of [A-Za-z0-9_.-]"
            )));
        }
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        let store = RedisBudgetStore {
            conn,
            prefix: namespace.to_owned(),
            scripts: Scripts::new(),
        };
        // A store written before definitions had a version gets one (a no-op otherwise).
        let ver = &store.key("defsver");
        let token = super::random_u64();
        store
            .run(|mut c| async move { c.set_nx::<_, _, ()>(ver, token).await })
            .await?;
        Ok(store)
    }

    pub fn namespace(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:b:{rest}", self.prefix)
    }

    fn window_key(&self, k: &WindowKey) -> String {
        let h = hash_hex("tollgate/budget-window", &[&k.budget_id, &k.scope]);
        self.key(&format!("w:{h}:{}", k.start_ms))
    }

    /// Runs `op`; once more if the connection had dropped (after a Redis restart the first
    /// command finds the old connection dead). Every operation here is idempotent.
    async fn run<T, Fut>(&self, op: impl Fn(ConnectionManager) -> Fut) -> Result<T, BudgetError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match op(self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                tracing::debug!(error = %e, "redis budgets: connection dropped; retrying once");
                op(self.conn.clone()).await.map_err(unavailable)
            }
            r => r.map_err(unavailable),
        }
    }
}

fn ttl(until_ms: u64, now_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms).max(1000)
}

fn limit_arg(l: Option<u64>) -> String {
    l.map_or_else(String::new, |v| v.to_string())
}

fn parse_counters(flat: &[String]) -> Vec<Counters> {
    let n = |s: &String| s.parse::<u64>().unwrap_or(0);
    flat.chunks_exact(6)
        .map(|c| Counters {
            spent: Amounts {
                cost_pico: n(&c[0]),
                input_tokens: n(&c[1]),
                output_tokens: n(&c[2]),
            },
            reserved: Amounts {
                cost_pico: n(&c[3]),
                input_tokens: n(&c[4]),
                output_tokens: n(&c[5]),
            },
        })
        .collect()
}

fn parse_defs(all: HashMap<String, String>) -> Vec<BudgetDef> {
    let mut out = Vec::with_capacity(all.len());
    for (id, v) in all {
        match serde_json::from_str::<BudgetDef>(&v) {
            Ok(d) => out.push(d),
            Err(e) => tracing::warn!(id, error = %e, "redis budgets: skipped definition"),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn capped(a: Amounts) -> Amounts {
    Amounts {
        cost_pico: a.cost_pico.min(MAX_AMOUNT),
        input_tokens: a.input_tokens.min(MAX_AMOUNT),
        output_tokens: a.output_tokens.min(MAX_AMOUNT),
    }
}

#[async_trait]
impl BudgetStore for RedisBudgetStore {
    async fn put_def(&self, def: &BudgetDef) -> Result<(), BudgetError> {
        let key = &self.key("defs");
        let ver = &self.key("defsver");
        let v = &serde_json::to_string(def).map_err(unavailable)?;
        let id = &def.id;
        let token = super::random_u64();
        self.run(|mut c| async move {
            redis::pipe()
                .atomic()
                .hset(key, id, v)
                .ignore()
                .set(ver, token)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn delete_def(&self, id: &str) -> Result<bool, BudgetError> {
        let key = &self.key("defs");
        let ver = &self.key("defsver");
        let token = super::random_u64();
        let (n,): (u64,) = self
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .hdel(key, id)
                    .set(ver, token)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(n > 0)
    }

    async fn defs_version(&self) -> Result<Option<u64>, BudgetError> {
        let ver = &self.key("defsver");
        self.run(|mut c| async move { c.get(ver).await }).await
    }

    async fn list_defs_versioned(&self) -> Result<(Option<u64>, Vec<BudgetDef>), BudgetError> {
        let key = &self.key("defs");
        let ver = &self.key("defsver");
        let (version, all): (Option<u64>, HashMap<String, String>) = self
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .get(ver)
                    .hgetall(key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok((version, parse_defs(all)))
    }

    async fn list_defs(&self) -> Result<Vec<BudgetDef>, BudgetError> {
        let key = &self.key("defs");
        let all: HashMap<String, String> = self
            .run(|mut c| async move { c.hgetall(key).await })
            .await?;
        Ok(parse_defs(all))
    }

    async fn reserve(
        &self,
        windows: &[WindowSpec],
        amounts: Amounts,
        reservation_id: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<ReserveOutcome, BudgetError> {
        if !valid_reservation_id(reservation_id) {
            return Err(BudgetError::Invalid(format!(
                "reservation id {reservation_id:?} is not 32 hex digits"
            )));
        }
        let a = capped(amounts);
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.key(self.key(&format!("r:{reservation_id}")))
            .key(self.key("rexp"))
            .key(self.key("widx"));
        for w in windows {
            inv.key(self.window_key(&w.key));
        }
        inv.arg(reservation_id)
            .arg(expires_at_ms)
            .arg(a.cost_pico)
            .arg(a.input_tokens)
            .arg(a.output_tokens)
            .arg(ttl(expires_at_ms, now_ms).saturating_add(TOMBSTONE_RETENTION_MS));
        for w in windows {
            inv.arg(&w.key.budget_id)
                .arg(&w.key.scope)
                .arg(w.key.start_ms)
                .arg(w.end_ms)
                .arg(ttl(w.keep_until_ms, now_ms))
                .arg(w.keep_until_ms)
                .arg(limit_arg(w.limits.usd_pico))
                .arg(limit_arg(w.limits.input_tokens))
                .arg(limit_arg(w.limits.output_tokens))
                .arg(limit_arg(w.limits.tokens));
        }
        let inv = &inv;
        let out: Vec<String> = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let bad = || unavailable(format!("unexpected reserve reply of {} items", out.len()));
        let (Some(status), Some(index), Some(kind)) = (out.first(), out.get(1), out.get(2)) else {
            return Err(bad());
        };
        let counters = parse_counters(out.get(3..).unwrap_or_default());
        if counters.len() != windows.len() {
            return Err(bad());
        }
        match status.as_str() {
            "ok" => Ok(ReserveOutcome::Reserved { windows: counters }),
            "over" => Ok(ReserveOutcome::Exceeded {
                index: index.parse().map_err(|_| bad())?,
                limit: LimitKind::from_tag(kind).ok_or_else(bad)?,
                windows: counters,
            }),
            _ => Err(bad()),
        }
    }

    async fn settle(
        &self,
        reservation_id: &str,
        charge: Amounts,
        _now_ms: u64,
    ) -> Result<SettleStatus, BudgetError> {
        if !valid_reservation_id(reservation_id) {
            return Ok(SettleStatus::Unknown);
        }
        let a = capped(charge);
        let mut inv = self.scripts.settle.prepare_invoke();
        inv.key(self.key(&format!("r:{reservation_id}")))
            .key(self.key("rexp"))
            .arg(reservation_id)
            .arg(a.cost_pico)
            .arg(a.input_tokens)
            .arg(a.output_tokens)
            .arg(TOMBSTONE_RETENTION_MS);
        let inv = &inv;
        let s: String = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(match s.as_str() {
            "ok" => SettleStatus::Settled,
            "dup" => SettleStatus::AlreadySettled,
            _ => SettleStatus::Unknown,
        })
    }

    async fn charge_unreserved(
        &self,
        windows: &[WindowSpec],
        charge: Amounts,
        request_id: &str,
        now_ms: u64,
    ) -> Result<bool, BudgetError> {
        let a = capped(charge);
        let marker = hash_hex("tollgate/budget-request", &[request_id]);
        let mut inv = self.scripts.charge.prepare_invoke();
        inv.key(self.key(&format!("c:{marker}")))
            .key(self.key("widx"));
        for w in windows {
            inv.key(self.window_key(&w.key));
        }
        inv.arg(TOMBSTONE_RETENTION_MS)
            .arg(a.cost_pico)
            .arg(a.input_tokens)
            .arg(a.output_tokens);
        for w in windows {
            inv.arg(&w.key.budget_id)
                .arg(&w.key.scope)
                .arg(w.key.start_ms)
                .arg(w.end_ms)
                .arg(ttl(w.keep_until_ms, now_ms))
                .arg(w.keep_until_ms);
        }
        let inv = &inv;
        let n: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(n == 1)
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, BudgetError> {
        let mut expired = 0;
        loop {
            let mut inv = self.scripts.expire.prepare_invoke();
            inv.key(self.key("rexp"))
                .key(self.key("widx"))
                .arg(now_ms)
                .arg(EXPIRE_BATCH)
                .arg(TOMBSTONE_RETENTION_MS)
                .arg(self.key("r:"));
            let inv = &inv;
            let (seen, n): (usize, u64) = self
                .run(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
            expired += n;
            if seen < EXPIRE_BATCH {
                return Ok(expired);
            }
        }
    }

    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<WindowUsage>, BudgetError> {
        let widx = &self.key("widx");
        let keys: Vec<String> = self
            .run(|mut c| async move { c.zrange(widx, 0, -1).await })
            .await?;
        let mut out = Vec::new();
        for chunk in keys.chunks(USAGE_BATCH) {
            let rows: Vec<HashMap<String, String>> = self
                .run(|mut c| async move {
                    let mut pipe = redis::pipe();
                    for k in chunk {
                        pipe.hgetall(k);
                    }
                    pipe.query_async(&mut c).await
                })
                .await?;
            for row in rows {
                let get = |f: &str| row.get(f).cloned().unwrap_or_default();
                let num = |f: &str| row.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let (Some(b), Some(s)) = (row.get("b"), row.get("s")) else {
                    continue; // expired since the index was read
                };
                let key = WindowKey {
                    budget_id: b.clone(),
                    scope: s.clone(),
                    start_ms: num("st"),
                };
                if !filter.matches(&key) {
                    continue;
                }
                let flat: Vec<String> = ["sc", "si", "so", "rc", "ri", "ro"]
                    .iter()
                    .map(|f| get(f))
                    .collect();
                out.push(WindowUsage {
                    key,
                    end_ms: num("en"),
                    counters: parse_counters(&flat).pop().unwrap_or_default(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn ping(&self) -> Result<(), BudgetError> {
        let _: String = self
            .run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_args() {
        assert!(valid_namespace("tollgate"));
        assert!(!valid_namespace("a:b"));
        assert!(!valid_namespace(""));
        assert_eq!(ttl(5000, 1000), 4000);
        assert_eq!(ttl(1000, 5000), 1000);
        assert_eq!(limit_arg(None), "");
        assert_eq!(limit_arg(Some(7)), "7");
        let c = parse_counters(&["1", "2", "3", "4", "5", "x"].map(String::from));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].spent.output_tokens, 3);
        assert_eq!(c[0].reserved.output_tokens, 0);
    }
}
