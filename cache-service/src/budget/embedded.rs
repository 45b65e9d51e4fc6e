//! The default budget backend: an in-memory state, written through to one local `redb` file.
//!
//! Every operation runs under one mutex: it checks and changes the memory state, queues the rows
//! it changed (whole new values, or deletions) to the writer thread, releases the lock and waits
//! until they are committed. The writer groups whatever is queued into one transaction (group
//! commit, as in [`crate::store::EmbeddedStore`]), in queue order, which is the order the changes
//! were made in, so one process never over-admits and the file always holds a prefix of the
//! changes.
//!
//! Durability: definitions, settles and charges are committed with an `fsync` before they are
//! acknowledged (money must not be lost). Reservations are acknowledged once queued (the admit
//! path must not wait behind an `fsync`, which costs milliseconds), and they and expiries are
//! committed without an `fsync`: they become durable with the next durable commit, at the
//! latest [`SYNC_EVERY`] later, and on a clean shutdown. A crash can thus lose the last moment's
//! reservations, which costs no money: their settles find no reservation and charge the
//! identity's windows by request id instead (see `Budgets::settle`); until then the in-flight
//! requests are not counted as reserved.
//!
//! If a commit fails the caller gets the error while the memory keeps the change (a reservation
//! then holds budget until it expires; a charge may be lost at the next restart).
//!
//! Tables (`budget_` prefix, values JSON):
//!
//! | table | key | value |
//! |---|---|---|
//! | `budget_defs` | budget id | [`BudgetDef`] |
//! | `budget_windows` | budget id, scope, start (`\x1f`-separated) | window and its counters |
//! | `budget_reservations` | reservation id | state, amounts, windows, expiry |
//! | `budget_charged` | hash of a request id | forget-after time (ms) |
//! | `budget_meta` | `"format"` | [`FORMAT`] |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::BudgetError;
use super::decide::{Amounts, Counters, exceeded};
use super::def::BudgetDef;
use super::store::{
    BudgetStore, ReserveOutcome, SettleStatus, TOMBSTONE_RETENTION_MS, UsageFilter, WindowKey,
    WindowSpec, WindowUsage, hash_hex,
};

const DEFS: TableDefinition<&str, &[u8]> = TableDefinition::new("budget_defs");
const WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("budget_windows");
const RESERVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("budget_reservations");
const CHARGED: TableDefinition<&str, u64> = TableDefinition::new("budget_charged");
const META: TableDefinition<&str, u64> = TableDefinition::new("budget_meta");

/// Version of the table layout; a file of another version is refused.
pub const FORMAT: u64 = 1;

/// Most jobs one write transaction takes from the queue.
const MAX_BATCH: usize = 512;
/// Longest time non-durable commits (reservations, expiries) wait for a durable one.
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredWindow {
    key: WindowKey,
    end_ms: u64,
    keep_until_ms: u64,
    counters: Counters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ResState {
    Active,
    Settled,
    Expired,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredReservation {
    state: ResState,
    amounts: Amounts,
    windows: Vec<WindowKey>,
    expires_at_ms: u64,
    /// When a settled or expired reservation is forgotten.
    #[serde(default)]
    forget_at_ms: u64,
}

/// Shards of the maps that grow with traffic (reservations, charge markers).
const SHARDS: usize = 256;

/// A map from string keys split into [`SHARDS`] hash maps. A `HashMap` grows by moving every
/// entry into a table twice the size, in one go: at a million reservations that stopped every
/// admit (they all wait for the store's lock) for 0.3-1.7 s (`benches/results/budgets.md`).
/// Split, each shard grows on its own, at 1/[`SHARDS`] of the cost.
struct Sharded<V> {
    shards: Vec<HashMap<String, V>>,
}

impl<V> Default for Sharded<V> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
        }
    }
}

impl<V> Sharded<V> {
    fn shard(key: &str) -> usize {
        // FNV-1a: keys are random hex ids or hashes, any mix of their bytes spreads them.
        let h = key.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        h as usize % SHARDS
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.shards.get(Self::shard(key))?.get(key)
    }

    fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn insert(&mut self, key: String, value: V) -> Option<V> {
        let i = Self::shard(&key);
        self.shards.get_mut(i)?.insert(key, value)
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        self.shards.get_mut(Self::shard(key))?.remove(key)
    }
}

#[derive(Default)]
struct Mem {
    defs: BTreeMap<String, BudgetDef>,
    windows: HashMap<WindowKey, StoredWindow>,
    reservations: Sharded<StoredReservation>,
    charged: Sharded<u64>,
    // Time indexes, so a sweep touches only what is due (the lock is held meanwhile).
    /// Windows by keep-until.
    windows_by_time: BTreeSet<(u64, WindowKey)>,
    /// Active reservations by expiry.
    expiring: BTreeSet<(u64, String)>,
    /// Settled or expired reservations by forget time.
    forgetting: BTreeSet<(u64, String)>,
    /// Charge markers by forget time.
    charged_by_time: BTreeSet<(u64, String)>,
}

/// One row to upsert (`Some`) or delete (`None`).
enum Write {
    Def(String, Option<Vec<u8>>),
    Window(String, Option<Vec<u8>>),
    Reservation(String, Option<Vec<u8>>),
    Charged(String, Option<u64>),
}

struct Job {
    writes: Vec<Write>,
    /// Needs an `fsync` before the reply.
    durable: bool,
    reply: oneshot::Sender<Result<(), BudgetError>>,
}

fn unavailable(e: impl std::fmt::Display) -> BudgetError {
    BudgetError::Unavailable(format!("embedded budget store: {e}"))
}

fn storage(e: redb::StorageError) -> BudgetError {
    match e {
        redb::StorageError::Corrupted(m) => BudgetError::Corrupt(m),
        e => unavailable(e),
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, BudgetError> {
    serde_json::to_vec(v).map_err(unavailable)
}

fn window_row(key: &WindowKey) -> String {
    format!("{}\x1f{}\x1f{:020}", key.budget_id, key.scope, key.start_ms)
}

/// The embedded budget store. Dropping it waits for queued writes and closes the file, so the
/// same path can be reopened at once.
pub struct EmbeddedBudgetStore {
    mem: Mutex<Mem>,
    /// Definitions version (see [`BudgetStore::defs_version`]); changed under the `mem` lock.
    defs_version: AtomicU64,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedBudgetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBudgetStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedBudgetStore {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            tracing::error!("embedded budget store writer thread panicked");
        }
    }
}

impl EmbeddedBudgetStore {
    /// Opens (or creates) the file at `path`, creating parent directories, and loads it.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, BudgetError> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let (db, mem) = tokio::task::spawn_blocking(move || open_db(&p))
            .await
            .map_err(unavailable)??;
        let (jobs, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("tollgate-budget-writer".into())
            .spawn(move || writer_loop(&db, &rx))
            .map_err(unavailable)?;
        Ok(EmbeddedBudgetStore {
            mem: Mutex::new(mem),
            defs_version: AtomicU64::new(super::random_u64()),
            jobs: Some(jobs),
            writer: Some(writer),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Mem> {
        // The state is only changed by code that cannot panic half-way; a poisoned lock (a
        // panic elsewhere while holding it) leaves consistent data.
        self.mem.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `writes` (call with the lock held, so the queue order is the change order) and
    /// returns the receiver of the commit result.
    fn queue(&self, writes: Vec<Write>, durable: bool) -> Commit {
        if writes.is_empty() {
            return Commit(None);
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            writes,
            durable,
            reply,
        };
        match self.jobs.as_ref() {
            Some(jobs) if jobs.send(job).is_ok() => Commit(Some(rx)),
            _ => Commit(Some({
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(unavailable("writer stopped")));
                rx
            })),
        }
    }
}

/// A pending commit.
struct Commit(Option<oneshot::Receiver<Result<(), BudgetError>>>);

impl Commit {
    async fn wait(self) -> Result<(), BudgetError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.map_err(|_| unavailable("writer stopped"))?,
        }
    }
}

fn open_db(path: &Path) -> Result<(Database, Mem), BudgetError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
    }
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::Storage(s) => storage(s),
        e => unavailable(format!("{}: {e}", path.display())),
    })?;
    let tx = db.begin_write().map_err(unavailable)?;
    {
        tx.open_table(DEFS).map_err(unavailable)?;
        tx.open_table(WINDOWS).map_err(unavailable)?;
        tx.open_table(RESERVATIONS).map_err(unavailable)?;
        tx.open_table(CHARGED).map_err(unavailable)?;
        let mut meta = tx.open_table(META).map_err(unavailable)?;
        let format = meta.get("format").map_err(storage)?.map(|g| g.value());
        match format {
            None => {
                meta.insert("format", FORMAT).map_err(storage)?;
            }
            Some(FORMAT) => {}
            Some(other) => {
                return Err(BudgetError::Corrupt(format!(
                    "{}: budget store format {other}, this build reads {FORMAT}",
                    path.display()
                )));
            }
        }
    }
    tx.commit().map_err(unavailable)?;
    let mem = load(&db)?;
    Ok((db, mem))
}

/// Reads the whole file into memory; undecodable rows are logged and skipped.
fn load(db: &Database) -> Result<Mem, BudgetError> {
    let tx = db.begin_read().map_err(unavailable)?;
    let mut mem = Mem::default();
    for row in tx
        .open_table(DEFS)
        .map_err(unavailable)?
        .iter()
        .map_err(storage)?
    {
        let (k, v) = row.map_err(storage)?;
        match serde_json::from_slice::<BudgetDef>(v.value()) {
            Ok(d) => {
                mem.defs.insert(k.value().to_owned(), d);
            }
            Err(e) => {
                tracing::warn!(id = k.value(), error = %e, "budget store: skipped definition")
            }
        }
    }
    for row in tx
        .open_table(WINDOWS)
        .map_err(unavailable)?
        .iter()
        .map_err(storage)?
    {
        let (k, v) = row.map_err(storage)?;
        match serde_json::from_slice::<StoredWindow>(v.value()) {
            Ok(w) => {
                mem.put_window(w);
            }
            Err(e) => tracing::warn!(row = k.value(), error = %e, "budget store: skipped window"),
        }
    }
    let reservations = tx.open_table(RESERVATIONS).map_err(unavailable)?;
    for row in reservations.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        match serde_json::from_slice::<StoredReservation>(v.value()) {
            Ok(r) => {
                mem.put_reservation(k.value(), r);
            }
            Err(e) => tracing::warn!(error = %e, "budget store: skipped reservation"),
        }
    }
    for row in tx
        .open_table(CHARGED)
        .map_err(unavailable)?
        .iter()
        .map_err(storage)?
    {
        let (k, v) = row.map_err(storage)?;
        mem.put_charged(k.value().to_owned(), v.value());
    }
    Ok(mem)
}

fn writer_loop(db: &Database, rx: &mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Time of the first non-durable commit since the last durable one.
    let mut unsynced: Option<Instant> = None;
    loop {
        let first = match unsynced {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(since) => rx.recv_timeout(SYNC_EVERY.saturating_sub(since.elapsed())),
        };
        let first = match first {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                // Nothing queued for a while: make the last reservations durable.
                match apply_batch(db, &[], true) {
                    Ok(()) => unsynced = None,
                    Err(e) => tracing::warn!(error = %e, "embedded budget store sync failed"),
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|j| j.durable)
            || unsynced.is_some_and(|since| since.elapsed() >= SYNC_EVERY);
        let result = apply_batch(db, &batch, durable);
        if result.is_ok() {
            unsynced = if durable {
                None
            } else {
                unsynced.or_else(|| Some(Instant::now()))
            };
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, jobs = batch.len(), "embedded budget store write failed");
        }
        for job in batch.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(e.clone()),
            };
            let _ = job.reply.send(r);
        }
    }
    // Closed (the store was dropped): a clean shutdown keeps everything.
    if unsynced.is_some()
        && let Err(e) = apply_batch(db, &[], true)
    {
        tracing::warn!(error = %e, "embedded budget store final sync failed");
    }
}

fn apply_batch(db: &Database, batch: &[Job], durable: bool) -> Result<(), BudgetError> {
    let mut tx = db.begin_write().map_err(unavailable)?;
    if !durable {
        tx.set_durability(Durability::None).map_err(unavailable)?;
    }
    {
        let mut defs = tx.open_table(DEFS).map_err(unavailable)?;
        let mut windows = tx.open_table(WINDOWS).map_err(unavailable)?;
        let mut reservations = tx.open_table(RESERVATIONS).map_err(unavailable)?;
        let mut charged = tx.open_table(CHARGED).map_err(unavailable)?;
        for w in batch.iter().flat_map(|j| &j.writes) {
            match w {
                Write::Def(k, Some(v)) => {
                    drop(defs.insert(k.as_str(), v.as_slice()).map_err(storage)?)
                }
                Write::Def(k, None) => drop(defs.remove(k.as_str()).map_err(storage)?),
                Write::Window(k, Some(v)) => {
                    drop(windows.insert(k.as_str(), v.as_slice()).map_err(storage)?)
                }
                Write::Window(k, None) => drop(windows.remove(k.as_str()).map_err(storage)?),
                Write::Reservation(k, Some(v)) => drop(
                    reservations
                        .insert(k.as_str(), v.as_slice())
                        .map_err(storage)?,
                ),
                Write::Reservation(k, None) => {
                    drop(reservations.remove(k.as_str()).map_err(storage)?)
                }
                Write::Charged(k, Some(v)) => {
                    drop(charged.insert(k.as_str(), *v).map_err(storage)?)
                }
                Write::Charged(k, None) => drop(charged.remove(k.as_str()).map_err(storage)?),
            }
        }
    }
    tx.commit().map_err(unavailable)
}

impl Mem {
    fn put_window(&mut self, w: StoredWindow) {
        if let Some(old) = self.windows.get(&w.key) {
            self.windows_by_time
                .remove(&(old.keep_until_ms, old.key.clone()));
        }
        self.windows_by_time
            .insert((w.keep_until_ms, w.key.clone()));
        self.windows.insert(w.key.clone(), w);
    }

    fn remove_window(&mut self, key: &WindowKey) {
        if let Some(old) = self.windows.remove(key) {
            self.windows_by_time.remove(&(old.keep_until_ms, old.key));
        }
    }

    fn put_reservation(&mut self, id: &str, r: StoredReservation) {
        self.remove_reservation(id);
        let entry = (
            if r.state == ResState::Active {
                r.expires_at_ms
            } else {
                r.forget_at_ms
            },
            id.to_owned(),
        );
        if r.state == ResState::Active {
            self.expiring.insert(entry);
        } else {
            self.forgetting.insert(entry);
        }
        self.reservations.insert(id.to_owned(), r);
    }

    fn remove_reservation(&mut self, id: &str) {
        if let Some(old) = self.reservations.remove(id) {
            if old.state == ResState::Active {
                self.expiring.remove(&(old.expires_at_ms, id.to_owned()));
            } else {
                self.forgetting.remove(&(old.forget_at_ms, id.to_owned()));
            }
        }
    }

    fn put_charged(&mut self, marker: String, forget_at_ms: u64) {
        if let Some(old) = self.charged.insert(marker.clone(), forget_at_ms) {
            self.charged_by_time.remove(&(old, marker.clone()));
        }
        self.charged_by_time.insert((forget_at_ms, marker));
    }

    fn counters(&self, windows: &[WindowSpec]) -> Vec<Counters> {
        windows
            .iter()
            .map(|w| {
                self.windows
                    .get(&w.key)
                    .map(|s| s.counters)
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Adds `reserve` to the reserved and `spend` to the spent counters of a window (creating
    /// it), and returns the row to write.
    fn bump(
        &mut self,
        spec: &WindowSpec,
        reserve: Amounts,
        spend: Amounts,
    ) -> Result<Write, BudgetError> {
        let mut w = self
            .windows
            .get(&spec.key)
            .cloned()
            .unwrap_or_else(|| StoredWindow {
                key: spec.key.clone(),
                end_ms: spec.end_ms,
                keep_until_ms: spec.keep_until_ms,
                counters: Counters::default(),
            });
        w.keep_until_ms = w.keep_until_ms.max(spec.keep_until_ms);
        w.counters.reserved = w.counters.reserved.plus(reserve);
        w.counters.spent = w.counters.spent.plus(spend);
        let write = Write::Window(window_row(&w.key), Some(json(&w)?));
        self.put_window(w);
        Ok(write)
    }

    /// Releases `release` from and charges `charge` to an existing window (a forgotten window
    /// stays forgotten).
    fn adjust(
        &mut self,
        key: &WindowKey,
        release: Amounts,
        charge: Amounts,
    ) -> Result<Option<Write>, BudgetError> {
        let Some(w) = self.windows.get_mut(key) else {
            return Ok(None);
        };
        w.counters.reserved = w.counters.reserved.minus(release);
        w.counters.spent = w.counters.spent.plus(charge);
        Ok(Some(Write::Window(window_row(key), Some(json(w)?))))
    }
}

#[async_trait]
impl BudgetStore for EmbeddedBudgetStore {
    async fn put_def(&self, def: &BudgetDef) -> Result<(), BudgetError> {
        let bytes = json(def)?;
        let commit = {
            let mut mem = self.lock();
            mem.defs.insert(def.id.clone(), def.clone());
            self.defs_version.fetch_add(1, Ordering::AcqRel);
            self.queue(vec![Write::Def(def.id.clone(), Some(bytes))], true)
        };
        commit.wait().await
    }

    async fn delete_def(&self, id: &str) -> Result<bool, BudgetError> {
        let (found, commit) = {
            let mut mem = self.lock();
            let found = mem.defs.remove(id).is_some();
            if found {
                self.defs_version.fetch_add(1, Ordering::AcqRel);
            }
            let writes = if found {
                vec![Write::Def(id.to_owned(), None)]
            } else {
                Vec::new()
            };
            (found, self.queue(writes, true))
        };
        commit.wait().await?;
        Ok(found)
    }

    async fn list_defs(&self) -> Result<Vec<BudgetDef>, BudgetError> {
        Ok(self.lock().defs.values().cloned().collect())
    }

    async fn defs_version(&self) -> Result<Option<u64>, BudgetError> {
        Ok(Some(self.defs_version.load(Ordering::Acquire)))
    }

    async fn list_defs_versioned(&self) -> Result<(Option<u64>, Vec<BudgetDef>), BudgetError> {
        let mem = self.lock();
        let version = self.defs_version.load(Ordering::Acquire);
        Ok((Some(version), mem.defs.values().cloned().collect()))
    }

    async fn reserve(
        &self,
        windows: &[WindowSpec],
        amounts: Amounts,
        reservation_id: &str,
        _now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<ReserveOutcome, BudgetError> {
        let (outcome, commit) = {
            let mut mem = self.lock();
            let current = mem.counters(windows);
            if mem.reservations.contains_key(reservation_id) {
                return Ok(ReserveOutcome::Reserved { windows: current });
            }
            let over = windows
                .iter()
                .zip(&current)
                .enumerate()
                .find_map(|(i, (w, c))| exceeded(&w.limits, c.used(), amounts).map(|k| (i, k)));
            if let Some((index, limit)) = over {
                return Ok(ReserveOutcome::Exceeded {
                    index,
                    limit,
                    windows: current,
                });
            }
            let mut writes = Vec::with_capacity(windows.len() + 1);
            for w in windows {
                writes.push(mem.bump(w, amounts, Amounts::default())?);
            }
            let r = StoredReservation {
                state: ResState::Active,
                amounts,
                windows: windows.iter().map(|w| w.key.clone()).collect(),
                expires_at_ms,
                forget_at_ms: 0,
            };
            writes.push(Write::Reservation(
                reservation_id.to_owned(),
                Some(json(&r)?),
            ));
            mem.put_reservation(reservation_id, r);
            let after = mem.counters(windows);
            (
                ReserveOutcome::Reserved { windows: after },
                self.queue(writes, false),
            )
        };
        // Not waited for (see the module doc); a failed commit is logged by the writer.
        drop(commit);
        Ok(outcome)
    }

    async fn settle(
        &self,
        reservation_id: &str,
        charge: Amounts,
        now_ms: u64,
    ) -> Result<SettleStatus, BudgetError> {
        let commit = {
            let mut mem = self.lock();
            let Some(r) = mem.reservations.get(reservation_id).cloned() else {
                return Ok(SettleStatus::Unknown);
            };
            if r.state == ResState::Settled {
                return Ok(SettleStatus::AlreadySettled);
            }
            let release = if r.state == ResState::Active {
                r.amounts
            } else {
                Amounts::default()
            };
            let mut writes = Vec::with_capacity(r.windows.len() + 1);
            for key in &r.windows {
                writes.extend(mem.adjust(key, release, charge)?);
            }
            // A settled reservation is only remembered (a repeated settle is a no-op): its
            // windows and amounts are not needed any more.
            let settled = StoredReservation {
                state: ResState::Settled,
                forget_at_ms: now_ms.saturating_add(TOMBSTONE_RETENTION_MS),
                windows: Vec::new(),
                amounts: Amounts::default(),
                ..r
            };
            writes.push(Write::Reservation(
                reservation_id.to_owned(),
                Some(json(&settled)?),
            ));
            mem.put_reservation(reservation_id, settled);
            self.queue(writes, true)
        };
        commit.wait().await?;
        Ok(SettleStatus::Settled)
    }

    async fn charge_unreserved(
        &self,
        windows: &[WindowSpec],
        charge: Amounts,
        request_id: &str,
        now_ms: u64,
    ) -> Result<bool, BudgetError> {
        let marker = hash_hex("tollgate/budget-request", &[request_id]);
        let commit = {
            let mut mem = self.lock();
            if mem.charged.contains_key(&marker) {
                return Ok(false);
            }
            let forget = now_ms.saturating_add(TOMBSTONE_RETENTION_MS);
            let mut writes = Vec::with_capacity(windows.len() + 1);
            for w in windows {
                writes.push(mem.bump(w, Amounts::default(), charge)?);
            }
            writes.push(Write::Charged(marker.clone(), Some(forget)));
            mem.put_charged(marker, forget);
            self.queue(writes, true)
        };
        commit.wait().await?;
        Ok(true)
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, BudgetError> {
        let (n, commit) = {
            let mut mem = self.lock();
            let mut writes = Vec::new();
            // Active reservations expired by now (inclusive).
            let due: Vec<String> = mem
                .expiring
                .range(..(now_ms.saturating_add(1), String::new()))
                .map(|(_, id)| id.clone())
                .collect();
            for id in &due {
                let Some(r) = mem.reservations.get(id).cloned() else {
                    continue;
                };
                let expired = StoredReservation {
                    state: ResState::Expired,
                    forget_at_ms: now_ms.saturating_add(TOMBSTONE_RETENTION_MS),
                    ..r
                };
                for key in &expired.windows {
                    writes.extend(mem.adjust(key, expired.amounts, Amounts::default())?);
                }
                writes.push(Write::Reservation(id.clone(), Some(json(&expired)?)));
                mem.put_reservation(id, expired);
            }
            // Windows, tombstones and markers older than now (exclusive).
            let old_windows: Vec<WindowKey> = mem
                .windows_by_time
                .range(..(now_ms, WindowKey::default()))
                .map(|(_, k)| k.clone())
                .collect();
            for key in old_windows {
                mem.remove_window(&key);
                writes.push(Write::Window(window_row(&key), None));
            }
            let forgotten: Vec<String> = mem
                .forgetting
                .range(..(now_ms, String::new()))
                .map(|(_, id)| id.clone())
                .collect();
            for id in forgotten {
                mem.remove_reservation(&id);
                writes.push(Write::Reservation(id, None));
            }
            let old_marks: Vec<(u64, String)> = mem
                .charged_by_time
                .range(..(now_ms, String::new()))
                .cloned()
                .collect();
            for (at, k) in old_marks {
                mem.charged.remove(&k);
                mem.charged_by_time.remove(&(at, k.clone()));
                writes.push(Write::Charged(k, None));
            }
            (due.len() as u64, self.queue(writes, false))
        };
        commit.wait().await?;
        Ok(n)
    }

    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<WindowUsage>, BudgetError> {
        let mut out: Vec<WindowUsage> = self
            .lock()
            .windows
            .values()
            .filter(|w| filter.matches(&w.key))
            .map(|w| WindowUsage {
                key: w.key.clone(),
                end_ms: w.end_ms,
                counters: w.counters,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn ping(&self) -> Result<(), BudgetError> {
        if self.writer.as_ref().is_some_and(|w| !w.is_finished()) {
            Ok(())
        } else {
            Err(unavailable("writer stopped"))
        }
    }
}
