//! The default backend: one local `redb` file (pure Rust, crash-safe B-trees, no server).
//!
//! Tables (all keys are ids or 128-bit hashes, see [`codec::Hashes`]):
//!
//! | table | key | value |
//! |---|---|---|
//! | `entries` | id | encoded entry ([`codec`]) |
//! | `exact` | hash(tenant, exact_key) | id |
//! | `by_time` | (created_at, id) | () |
//! | `by_tenant` | (hash(tenant), id) | hash(model) |
//! | `by_model` | (hash(model), id) | hash(tenant) |
//! | `meta` | `"format"` | [`FORMAT`] |
//!
//! Disk use: an entry with a 384-float embedding encodes to ~2.2–2.6 KB, more than half a 4 KB
//! page, so each takes about a page (~4.3 KB per entry allocated, measured; the file grows in
//! steps, 6.7 KB per entry at 20k entries). Storing embeddings in a table of their own was tried
//! and measured no smaller: random ids leave leaves half full either way.
//!
//! Writes go to one writer thread that groups whatever is queued into one write transaction and
//! one `fsync` (group commit): every acknowledged write is durable, and concurrent writers share
//! the cost of the sync. Reads run on tokio's blocking pool (`spawn_blocking`): a read is usually a
//! few page-cache lookups, but a cold page is disk I/O, which must not stall an async worker.
//! Events are broadcast by the writer thread after the commit, in commit order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::codec::{self, Hashes};
use super::{Store, StoreError};
use crate::model::{Entry, InvalidateFilter, StoreEvent};

type H16 = [u8; 16];

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const EXACT: TableDefinition<H16, u64> = TableDefinition::new("exact");
const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("by_time");
const BY_TENANT: TableDefinition<(H16, u64), H16> = TableDefinition::new("by_tenant");
const BY_MODEL: TableDefinition<(H16, u64), H16> = TableDefinition::new("by_model");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Version of the table layout and value encoding; a file of another version is refused.
pub const FORMAT: u64 = 1;

/// Most operations one write transaction takes from the queue.
const MAX_BATCH: usize = 256;
/// Capacity of the event channel (a receiver that falls further behind gets `Lagged`).
pub const EVENT_CAPACITY: usize = 4096;

/// The embedded store. Dropping it waits for the queued writes (a few ms each) and closes the
/// file, so the same path can be reopened at once.
pub struct EmbeddedStore {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    events: broadcast::Sender<StoreEvent>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

enum Op {
    Put(Box<Entry>, Vec<u8>, Hashes),
    Delete(Vec<u64>),
    Invalidate(InvalidateFilter),
    Evict(u64),
}

enum Done {
    Unit,
    Count(u64),
    Ids(Vec<u64>),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

fn storage(e: redb::StorageError) -> StoreError {
    match e {
        redb::StorageError::Corrupted(m) => StoreError::Corrupt(m),
        e => unavailable(e),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, creating parent directories.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let db = tokio::task::spawn_blocking(move || open_db(&p))
            .await
            .map_err(unavailable)??;
        let db = Arc::new(db);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (jobs, rx) = mpsc::channel(1024);
        let writer = {
            let db = db.clone();
            let events = events.clone();
            std::thread::Builder::new()
                .name("tollgate-store-writer".into())
                .spawn(move || writer_loop(&db, rx, &events))
                .map_err(unavailable)?
        };
        Ok(EmbeddedStore {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
            events,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, rx) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or_else(|| unavailable("closed"))?;
        jobs.send(Job { op, reply })
            .await
            .map_err(|_| unavailable("writer stopped"))?;
        rx.await.map_err(|_| unavailable("writer stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(unavailable)?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; joining it releases
        // its handle on the file, so the same path can be reopened right away.
        self.jobs = None;
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            tracing::error!("embedded store writer thread panicked");
        }
    }
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
    }
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::Storage(s) => storage(s),
        e => unavailable(format!("{}: {e}", path.display())),
    })?;
    // Create the tables so that read transactions always find them, and check the format.
    let tx = db.begin_write().map_err(unavailable)?;
    {
        tx.open_table(ENTRIES).map_err(unavailable)?;
        tx.open_table(EXACT).map_err(unavailable)?;
        tx.open_table(BY_TIME).map_err(unavailable)?;
        tx.open_table(BY_TENANT).map_err(unavailable)?;
        tx.open_table(BY_MODEL).map_err(unavailable)?;
        let mut meta = tx.open_table(META).map_err(unavailable)?;
        let format = meta.get("format").map_err(storage)?.map(|g| g.value());
        match format {
            None => {
                meta.insert("format", FORMAT).map_err(storage)?;
            }
            Some(FORMAT) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "{}: store format {other}, this build reads {FORMAT}",
                    path.display()
                )));
            }
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(db)
}

fn writer_loop(db: &Database, mut rx: mpsc::Receiver<Job>, events: &broadcast::Sender<StoreEvent>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match apply_batch(db, &mut batch) {
            Ok(outcomes) => {
                for (job, (done, event)) in batch.drain(..).zip(outcomes) {
                    if let Some(ev) = event {
                        // No receiver is not an error.
                        let _ = events.send(ev);
                    }
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, ops = batch.len(), "embedded store write failed");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(clone_err(&e)));
                }
            }
        }
    }
}

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    }
}

/// Applies a batch in one transaction; on any error nothing is committed.
fn apply_batch(
    db: &Database,
    batch: &mut [Job],
) -> Result<Vec<(Done, Option<StoreEvent>)>, StoreError> {
    let tx = db.begin_write().map_err(unavailable)?;
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut t = Tables {
            entries: tx.open_table(ENTRIES).map_err(unavailable)?,

            exact: tx.open_table(EXACT).map_err(unavailable)?,
            by_time: tx.open_table(BY_TIME).map_err(unavailable)?,
            by_tenant: tx.open_table(BY_TENANT).map_err(unavailable)?,
            by_model: tx.open_table(BY_MODEL).map_err(unavailable)?,
        };
        for job in batch.iter_mut() {
            // Take the op out (the job keeps its reply channel).
            let op = std::mem::replace(&mut job.op, Op::Delete(Vec::new()));
            out.push(t.apply(op)?);
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(out)
}

struct Tables<'t> {
    entries: redb::Table<'t, u64, &'static [u8]>,
    exact: redb::Table<'t, H16, u64>,
    by_time: redb::Table<'t, (u64, u64), ()>,
    by_tenant: redb::Table<'t, (H16, u64), H16>,
    by_model: redb::Table<'t, (H16, u64), H16>,
}

impl Tables<'_> {
    fn apply(&mut self, op: Op) -> Result<(Done, Option<StoreEvent>), StoreError> {
        Ok(match op {
            Op::Put(entry, bytes, h) => {
                self.put(entry.id, &bytes, &h)?;
                (Done::Unit, Some(StoreEvent::Put(entry)))
            }
            Op::Delete(ids) => {
                let mut deleted = Vec::new();
                for id in ids {
                    if self.remove(id)? {
                        deleted.push(id);
                    }
                }
                let ev = (!deleted.is_empty()).then_some(StoreEvent::Deleted(deleted));
                (Done::Unit, ev)
            }
            Op::Invalidate(filter) => {
                let n = self.invalidate(&filter)?;
                (Done::Count(n), Some(StoreEvent::Invalidated(filter)))
            }
            Op::Evict(max) => {
                let ids = self.evict(max)?;
                let ev = (!ids.is_empty()).then(|| StoreEvent::Deleted(ids.clone()));
                (Done::Ids(ids), ev)
            }
        })
    }

    fn put(&mut self, id: u64, bytes: &[u8], h: &Hashes) -> Result<(), StoreError> {
        // Replacing an entry: drop the old one's index rows first (its tenant, model, time or
        // exact key may differ).
        self.remove(id)?;
        self.entries.insert(id, bytes).map_err(storage)?;
        self.exact.insert(h.exact, id).map_err(storage)?;
        let created_at = codec::decode_prefix(bytes)?.created_at;
        self.by_time.insert((created_at, id), ()).map_err(storage)?;
        self.by_tenant
            .insert((h.tenant, id), h.model)
            .map_err(storage)?;
        self.by_model
            .insert((h.model, id), h.tenant)
            .map_err(storage)?;
        Ok(())
    }

    /// Removes an entry and its index rows; false if there was none.
    fn remove(&mut self, id: u64) -> Result<bool, StoreError> {
        let Some(old) = self.entries.remove(id).map_err(storage)? else {
            return Ok(false);
        };
        let prefix = codec::decode_prefix(old.value());
        drop(old);
        // A damaged value still goes away; its index rows (if any) are unreachable but harmless:
        // lookups through them find no entry.
        let Ok(p) = prefix else {
            tracing::warn!(id, "embedded store: removed an undecodable entry");
            return Ok(true);
        };
        let h = p.hashes;
        let exact_is_ours = self
            .exact
            .get(h.exact)
            .map_err(storage)?
            .is_some_and(|g| g.value() == id);
        if exact_is_ours {
            self.exact.remove(h.exact).map_err(storage)?;
        }
        self.by_time.remove((p.created_at, id)).map_err(storage)?;
        self.by_tenant.remove((h.tenant, id)).map_err(storage)?;
        self.by_model.remove((h.model, id)).map_err(storage)?;
        Ok(true)
    }

    fn invalidate(&mut self, f: &InvalidateFilter) -> Result<u64, StoreError> {
        let ids: Vec<u64> = match (&f.tenant, &f.model) {
            (None, None) => {
                let n = self.entries.len().map_err(storage)?;
                self.entries.retain(|_, _| false).map_err(storage)?;
                self.exact.retain(|_, _| false).map_err(storage)?;
                self.by_time.retain(|_, _| false).map_err(storage)?;
                self.by_tenant.retain(|_, _| false).map_err(storage)?;
                self.by_model.retain(|_, _| false).map_err(storage)?;
                return Ok(n);
            }
            (Some(t), m) => {
                let th = codec::tenant_hash(t);
                let mh = m.as_deref().map(codec::model_hash);
                ids_in(&self.by_tenant, th, mh)?
            }
            (None, Some(m)) => ids_in(&self.by_model, codec::model_hash(m), None)?,
        };
        let mut n = 0;
        for id in ids {
            if self.remove(id)? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn evict(&mut self, max: u64) -> Result<Vec<u64>, StoreError> {
        let n = self.entries.len().map_err(storage)?;
        let Some(excess) = n.checked_sub(max).filter(|&k| k > 0) else {
            return Ok(Vec::new());
        };
        let mut oldest = Vec::new();
        for row in self.by_time.iter().map_err(storage)? {
            let (k, _) = row.map_err(storage)?;
            oldest.push(k.value().1);
            if oldest.len() as u64 >= excess {
                break;
            }
        }
        let mut deleted = Vec::with_capacity(oldest.len());
        for id in oldest {
            if self.remove(id)? {
                deleted.push(id);
            }
        }
        Ok(deleted)
    }
}

/// Ids under `key` in a (hash, id) -> other-hash index, optionally only those whose value is
/// `other`.
fn ids_in(
    table: &impl ReadableTable<(H16, u64), H16>,
    key: H16,
    other: Option<H16>,
) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    for row in table.range((key, 0)..=(key, u64::MAX)).map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        if other.is_none_or(|o| o == v.value()) {
            ids.push(k.value().1);
        }
    }
    Ok(ids)
}

fn read_entry(
    entries: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<Entry>, StoreError> {
    match entries.get(id).map_err(storage)? {
        Some(v) => codec::decode(v.value()).map(Some),
        None => Ok(None),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn put(&self, entry: &Entry) -> Result<(), StoreError> {
        let h = Hashes::of(entry);
        let bytes = codec::encode(entry, &h)?;
        self.submit(Op::Put(Box::new(entry.clone()), bytes, h))
            .await
            .map(|_| ())
    }

    async fn get(&self, id: u64) -> Result<Option<Entry>, StoreError> {
        self.read(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let entries = tx.open_table(ENTRIES).map_err(unavailable)?;
            read_entry(&entries, id)
        })
        .await
    }

    async fn get_exact(&self, tenant: &str, exact_key: &str) -> Result<Option<Entry>, StoreError> {
        let h = codec::exact_hash(tenant, exact_key);
        let (tenant, exact_key) = (tenant.to_owned(), exact_key.to_owned());
        self.read(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let exact = tx.open_table(EXACT).map_err(unavailable)?;
            let Some(id) = exact.get(h).map_err(storage)?.map(|g| g.value()) else {
                return Ok(None);
            };
            let entries = tx.open_table(ENTRIES).map_err(unavailable)?;
            // Check the fields, not only the 128-bit hash.
            Ok(
                read_entry(&entries, id)?
                    .filter(|e| e.tenant == tenant && e.exact_key == exact_key),
            )
        })
        .await
    }

    async fn delete(&self, ids: &[u64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.submit(Op::Delete(ids.to_vec())).await.map(|_| ())
    }

    async fn invalidate(&self, filter: &InvalidateFilter) -> Result<u64, StoreError> {
        match self.submit(Op::Invalidate(filter.clone())).await? {
            Done::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    async fn scan(&self) -> Result<Vec<Entry>, StoreError> {
        self.read(|db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let entries = tx.open_table(ENTRIES).map_err(unavailable)?;
            let n = usize::try_from(entries.len().map_err(storage)?).unwrap_or(0);
            let mut out = Vec::with_capacity(n);
            for row in entries.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                match codec::decode(v.value()) {
                    Ok(e) => out.push(e),
                    // One damaged value must not stop the service from starting.
                    Err(e) => tracing::warn!(id = k.value(), error = %e, "scan: skipped entry"),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn scan_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let limit = limit.max(1);
        self.read(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let entries = tx.open_table(ENTRIES).map_err(unavailable)?;
            let range = match after {
                None => entries.range::<u64>(..),
                Some(a) if a == u64::MAX => return Ok(Vec::new()),
                Some(a) => entries.range::<u64>((a + 1)..),
            }
            .map_err(storage)?;
            let mut out = Vec::with_capacity(limit.min(4096));
            for row in range {
                let (k, v) = row.map_err(storage)?;
                match codec::decode(v.value()) {
                    Ok(e) => out.push(e),
                    Err(e) => tracing::warn!(id = k.value(), error = %e, "scan: skipped entry"),
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn len(&self) -> Result<u64, StoreError> {
        self.read(|db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = tx.open_table(ENTRIES).map_err(unavailable)?;
            t.len().map_err(storage)
        })
        .await
    }

    async fn evict_to(&self, max_entries: u64) -> Result<Vec<u64>, StoreError> {
        match self.submit(Op::Evict(max_entries)).await? {
            Done::Ids(ids) => Ok(ids),
            _ => Ok(Vec::new()),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.jobs.as_ref().is_some_and(|j| !j.is_closed()) {
            Ok(())
        } else {
            Err(unavailable("writer stopped"))
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}
