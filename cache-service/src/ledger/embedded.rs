//! The default ledger backend: a local `redb` file (`<data_dir>/ledger.redb`).
//!
//! | table | key | value |
//! |---|---|---|
//! | `ledger_records` | (time_ms, hash(request_id)) | the record as JSON |
//! | `ledger_ids` | hash(request_id) | time_ms (idempotency: a known id is skipped) |
//! | `ledger_meta` | `"format"` | [`FORMAT`] |
//!
//! Records are keyed by their [`Position`], so a time range is one B-tree range scan. Appends go
//! to one writer thread that takes whatever is queued (up to [`MAX_BATCH_RECORDS`]) into one
//! write transaction and one `fsync` (group commit, as the cache store does): an acknowledged
//! append is durable, also across a crash. Reads run on tokio's blocking pool. With a retention,
//! records older than it are deleted when the file is opened, then at most hourly (by the
//! writer, with an append).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::time::MS_PER_DAY;
use super::{Ledger, LedgerError, LedgerRecord, Position, ScanFrom};

type H16 = [u8; 16];

const RECORDS: TableDefinition<(u64, H16), &[u8]> = TableDefinition::new("ledger_records");
const IDS: TableDefinition<H16, u64> = TableDefinition::new("ledger_ids");
const META: TableDefinition<&str, u64> = TableDefinition::new("ledger_meta");

/// Version of the table layout and value encoding; a file of another version is refused.
pub const FORMAT: u64 = 1;

/// Most records one write transaction takes from the queue (a single larger append is still
/// written in one transaction).
pub const MAX_BATCH_RECORDS: usize = 20_000;
/// Records deleted per transaction by a prune.
const PRUNE_CHUNK: usize = 20_000;
/// How often the writer applies the retention.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The embedded ledger. Dropping it waits for queued appends and closes the file, so the same
/// path can be reopened at once.
pub struct EmbeddedLedger {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLedger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

enum Op {
    /// Encoded records with their positions.
    Append(Vec<(Position, Vec<u8>)>),
    Prune(u64),
}

impl Op {
    fn records(&self) -> usize {
        match self {
            Op::Append(v) => v.len(),
            Op::Prune(_) => 1,
        }
    }
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<u64, LedgerError>>,
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(format!("embedded ledger: {e}"))
}

fn storage(e: redb::StorageError) -> LedgerError {
    match e {
        redb::StorageError::Corrupted(m) => LedgerError::Corrupt(m),
        e => unavailable(e),
    }
}

impl EmbeddedLedger {
    /// Opens (or creates) the ledger file at `path` with the default retention
    /// ([`super::DEFAULT_RETENTION_DAYS`]).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        Self::open_with(path, super::DEFAULT_RETENTION_DAYS).await
    }

    /// Opens (or creates) the ledger file at `path`, creating parent directories. Records older
    /// than `retention_days` are deleted (0: kept forever).
    pub async fn open_with(
        path: impl AsRef<Path>,
        retention_days: u32,
    ) -> Result<Self, LedgerError> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let retention = (retention_days > 0).then(|| u64::from(retention_days) * MS_PER_DAY);
        let db = tokio::task::spawn_blocking(move || {
            let db = open_db(&p)?;
            if let Some(keep) = retention {
                apply_retention(&db, keep);
            }
            Ok::<_, LedgerError>(db)
        })
        .await
        .map_err(unavailable)??;
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel(1024);
        let writer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("tollgate-ledger-writer".into())
                .spawn(move || writer_loop(&db, rx, retention))
                .map_err(unavailable)?
        };
        Ok(EmbeddedLedger {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, op: Op) -> Result<u64, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or_else(|| unavailable("closed"))?;
        jobs.send(Job { op, reply })
            .await
            .map_err(|_| unavailable("writer stopped"))?;
        rx.await.map_err(|_| unavailable("writer stopped"))?
    }

    /// Number of records stored.
    pub async fn record_count(&self) -> Result<u64, LedgerError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            use redb::ReadableTableMetadata;
            let tx = db.begin_read().map_err(unavailable)?;
            let t = tx.open_table(RECORDS).map_err(unavailable)?;
            t.len().map_err(storage)
        })
        .await
        .map_err(unavailable)?
    }
}

impl Drop for EmbeddedLedger {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; joining it releases
        // its handle on the file.
        self.jobs = None;
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            tracing::error!("embedded ledger writer thread panicked");
        }
    }
}

fn open_db(path: &Path) -> Result<Database, LedgerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
    }
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::Storage(s) => storage(s),
        e => unavailable(format!("{}: {e}", path.display())),
    })?;
    let tx = db.begin_write().map_err(unavailable)?;
    {
        tx.open_table(RECORDS).map_err(unavailable)?;
        tx.open_table(IDS).map_err(unavailable)?;
        let mut meta = tx.open_table(META).map_err(unavailable)?;
        let format = meta.get("format").map_err(storage)?.map(|g| g.value());
        match format {
            None => {
                meta.insert("format", FORMAT).map_err(storage)?;
            }
            Some(FORMAT) => {}
            Some(other) => {
                return Err(LedgerError::Corrupt(format!(
                    "{}: ledger format {other}, this build reads {FORMAT}",
                    path.display()
                )));
            }
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(db)
}

fn writer_loop(db: &Database, mut rx: mpsc::Receiver<Job>, retention: Option<u64>) {
    let mut batch: Vec<Job> = Vec::new();
    // `open` applied it just now.
    let mut last_retention = Instant::now();
    loop {
        if let Some(keep) = retention
            && last_retention.elapsed() >= RETENTION_EVERY
        {
            last_retention = Instant::now();
            apply_retention(db, keep);
        }
        // Idle: the retention runs again with the first append after the hour.
        let Some(first) = rx.blocking_recv() else {
            return;
        };
        if let Op::Prune(before) = first.op {
            let _ = first.reply.send(prune(db, before));
            continue;
        }
        let mut n = first.op.records();
        batch.push(first);
        while n < MAX_BATCH_RECORDS {
            match rx.try_recv() {
                Ok(job) if matches!(job.op, Op::Prune(_)) => {
                    // Run after this batch.
                    let Op::Prune(before) = job.op else { break };
                    flush(db, &mut batch);
                    let _ = job.reply.send(prune(db, before));
                    break;
                }
                Ok(job) => {
                    n += job.op.records();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        flush(db, &mut batch);
    }
}

/// Deletes the records older than `keep` ms (logged, not failed: an append must not fail for
/// it).
fn apply_retention(db: &Database, keep: u64) {
    let before = super::now_ms().saturating_sub(keep);
    match prune(db, before) {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "ledger retention: deleted old records"),
        Err(e) => tracing::warn!(error = %e, "ledger retention failed"),
    }
}

/// Writes the queued appends in one transaction and answers each job.
fn flush(db: &Database, batch: &mut Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    match append_batch(db, batch) {
        Ok(counts) => {
            for (job, n) in batch.drain(..).zip(counts) {
                let _ = job.reply.send(Ok(n));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = batch.len(), "embedded ledger append failed");
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(e.duplicate()));
            }
        }
    }
}

fn append_batch(db: &Database, batch: &[Job]) -> Result<Vec<u64>, LedgerError> {
    let tx = db.begin_write().map_err(unavailable)?;
    let mut counts = Vec::with_capacity(batch.len());
    {
        let mut records = tx.open_table(RECORDS).map_err(unavailable)?;
        let mut ids = tx.open_table(IDS).map_err(unavailable)?;
        for job in batch {
            let Op::Append(items) = &job.op else {
                counts.push(0);
                continue;
            };
            let mut n = 0;
            for (pos, bytes) in items {
                if ids.get(pos.id).map_err(storage)?.is_some() {
                    continue;
                }
                ids.insert(pos.id, pos.time_ms).map_err(storage)?;
                records
                    .insert((pos.time_ms, pos.id), bytes.as_slice())
                    .map_err(storage)?;
                n += 1;
            }
            counts.push(n);
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(counts)
}

/// Deletes records with `time_ms < before`, a chunk per transaction.
fn prune(db: &Database, before: u64) -> Result<u64, LedgerError> {
    let mut total = 0u64;
    loop {
        let tx = db.begin_write().map_err(unavailable)?;
        let n = {
            let mut records = tx.open_table(RECORDS).map_err(unavailable)?;
            let mut ids = tx.open_table(IDS).map_err(unavailable)?;
            let mut gone = Vec::new();
            for row in records
                .extract_from_if(..(before, [0u8; 16]), |_, _| true)
                .map_err(storage)?
                .take(PRUNE_CHUNK)
            {
                let (k, _) = row.map_err(storage)?;
                gone.push(k.value().1);
            }
            for id in &gone {
                ids.remove(id).map_err(storage)?;
            }
            gone.len()
        };
        tx.commit().map_err(unavailable)?;
        total += n as u64;
        if n < PRUNE_CHUNK {
            return Ok(total);
        }
    }
}

fn scan_db(
    db: &Database,
    from: ScanFrom,
    to_ms: u64,
    limit: usize,
) -> Result<Vec<LedgerRecord>, LedgerError> {
    let start = match from {
        ScanFrom::At(p) => p,
        ScanFrom::After(p) => p,
    };
    if limit == 0 || start.time_ms >= to_ms {
        return Ok(Vec::new());
    }
    let lower = match from {
        ScanFrom::At(p) => Bound::Included((p.time_ms, p.id)),
        ScanFrom::After(p) => Bound::Excluded((p.time_ms, p.id)),
    };
    let upper = Bound::Excluded((to_ms, [0u8; 16]));
    let tx = db.begin_read().map_err(unavailable)?;
    let records = tx.open_table(RECORDS).map_err(unavailable)?;
    let mut out = Vec::with_capacity(limit.min(4096));
    for row in records
        .range::<(u64, H16)>((lower, upper))
        .map_err(storage)?
    {
        let (k, v) = row.map_err(storage)?;
        match serde_json::from_slice::<LedgerRecord>(v.value()) {
            Ok(r) => out.push(r),
            // One damaged value must not make a month unreadable.
            Err(e) => {
                let (t, _) = k.value();
                tracing::warn!(time_ms = t, error = %e, "ledger: skipped undecodable record");
                continue;
            }
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

#[async_trait]
impl Ledger for EmbeddedLedger {
    async fn append(&self, records: &[LedgerRecord]) -> Result<u64, LedgerError> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut items = Vec::with_capacity(records.len());
        for r in records {
            let bytes = serde_json::to_vec(r).map_err(unavailable)?;
            items.push((r.position(), bytes));
        }
        self.submit(Op::Append(items)).await
    }

    async fn scan(
        &self,
        from: ScanFrom,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<LedgerRecord>, LedgerError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || scan_db(&db, from, to_ms, limit))
            .await
            .map_err(unavailable)?
    }

    async fn prune(&self, before_ms: u64) -> Result<u64, LedgerError> {
        self.submit(Op::Prune(before_ms)).await
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        if self.jobs.as_ref().is_some_and(|j| !j.is_closed()) {
            Ok(())
        } else {
            Err(unavailable("writer stopped"))
        }
    }
}
