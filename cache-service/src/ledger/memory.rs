//! An in-memory ledger: nothing persists. For tests of code that takes an `Arc<dyn Ledger>`
//! (the HTTP API); it passes the same conformance suite as the real backends.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Ledger, LedgerError, LedgerRecord, Position, ScanFrom};

#[derive(Debug, Default)]
pub struct MemoryLedger {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<Position, LedgerRecord>,
    ids: HashSet<[u8; 16]>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one insert).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn append(&self, records: &[LedgerRecord]) -> Result<u64, LedgerError> {
        let mut inner = self.lock();
        let mut n = 0;
        for r in records {
            let pos = r.position();
            if inner.ids.insert(pos.id) {
                inner.records.insert(pos, r.clone());
                n += 1;
            }
        }
        Ok(n)
    }

    async fn scan(
        &self,
        from: ScanFrom,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<LedgerRecord>, LedgerError> {
        let lower = match from {
            ScanFrom::At(p) => Bound::Included(p),
            ScanFrom::After(p) => Bound::Excluded(p),
        };
        let (ScanFrom::At(start) | ScanFrom::After(start)) = from;
        if start.time_ms >= to_ms {
            return Ok(Vec::new());
        }
        let upper = Bound::Excluded(Position::start_of(to_ms));
        Ok(self
            .lock()
            .records
            .range((lower, upper))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn prune(&self, before_ms: u64) -> Result<u64, LedgerError> {
        let mut inner = self.lock();
        let kept = inner.records.split_off(&Position::start_of(before_ms));
        let gone = std::mem::replace(&mut inner.records, kept);
        for p in gone.keys() {
            inner.ids.remove(&p.id);
        }
        Ok(gone.len() as u64)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}
