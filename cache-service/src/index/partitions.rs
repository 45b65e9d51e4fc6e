//! Partition key → vector index, created on demand.
//!
//! A partition starts as an exact [`BruteForceIndex`] (cheap to create, exact, tiny memory:
//! most partitions — one per tenant × model × sampling × conversation prefix — hold a handful
//! of entries) and is rebuilt as an [`AnnIndex`] once it holds more than
//! [`PartitionPolicy::ann_threshold`] entries (the crossover measured in
//! `benches/results/ann.md`). A partition that becomes empty is dropped.
//!
//! Every id lives in at most one partition: adding an id under another partition moves it,
//! and [`Partitions::remove_id`] finds the partition itself (the store's delete events carry
//! ids only).
//!
//! Concurrency: searches take shared locks only (the partition map, then the partition) and
//! run in parallel with each other and with adds. Mutations (add, remove, drop, clear) are
//! serialised by one writer mutex; the ANN rebuild of a growing partition runs under it while
//! searches keep using the brute-force index, which is swapped out at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::{AnnConfig, AnnIndex, BruteForceIndex, Hit, IndexError, RESERVED_ID, VectorIndex};

/// When a partition switches to ANN, and how that ANN index is built.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionPolicy {
    /// Vector dimension; `None`: taken from the first vector added (and forgotten by
    /// [`Partitions::clear`]). Vectors of another dimension are refused.
    pub dim: Option<usize>,
    /// A partition with more entries than this is served by an [`AnnIndex`].
    pub ann_threshold: usize,
    pub ann: AnnConfig,
}

impl PartitionPolicy {
    /// Crossover measured in `benches/results/ann.md`: below this, the exact scan is about as
    /// fast as the graph search, uses less memory, and is exact.
    pub const DEFAULT_ANN_THRESHOLD: usize = 2048;

    /// Default policy with a fixed dimension.
    pub fn with_dim(dim: usize) -> Self {
        PartitionPolicy {
            dim: Some(dim),
            ..Self::default()
        }
    }
}

impl Default for PartitionPolicy {
    fn default() -> Self {
        PartitionPolicy {
            dim: None,
            ann_threshold: Self::DEFAULT_ANN_THRESHOLD,
            ann: AnnConfig::default(),
        }
    }
}

/// Totals for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub partitions: usize,
    /// Partitions served by an ANN index (the rest are brute force).
    pub ann_partitions: usize,
    pub entries: usize,
    /// Approximate heap bytes of all indexes plus the id → partition map.
    pub memory_bytes: usize,
}

enum Kind {
    Brute(BruteForceIndex),
    Ann(AnnIndex),
}

struct Partition {
    kind: RwLock<Kind>,
}

impl Partition {
    fn with<R>(&self, f: impl FnOnce(&dyn VectorIndex) -> R) -> R {
        let kind = self.kind.read().unwrap_or_else(|p| p.into_inner());
        match &*kind {
            Kind::Brute(b) => f(b),
            Kind::Ann(a) => f(a),
        }
    }

    fn is_ann(&self) -> bool {
        let kind = self.kind.read().unwrap_or_else(|p| p.into_inner());
        matches!(&*kind, Kind::Ann(_))
    }
}

/// State changed only under the writer mutex.
#[derive(Default)]
struct Owners {
    /// id → partition holding it.
    of: HashMap<u64, Arc<str>>,
}

/// Partition key → index. See the module docs.
pub struct Partitions {
    policy: PartitionPolicy,
    /// Dimension in force (0: not known yet); changed only under the writer mutex.
    dim: AtomicUsize,
    /// Number of ids indexed (mirrors `Owners::of.len()`, readable without the writer mutex).
    entries: AtomicUsize,
    map: RwLock<HashMap<Arc<str>, Arc<Partition>>>,
    writer: Mutex<Owners>,
}

impl std::fmt::Debug for Partitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partitions")
            .field("policy", &self.policy)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Partitions {
    fn default() -> Self {
        Self::new()
    }
}

impl Partitions {
    /// Default policy; the dimension is taken from the first vector added.
    pub fn new() -> Self {
        Self::with_policy(PartitionPolicy::default())
    }

    pub fn with_policy(policy: PartitionPolicy) -> Self {
        Partitions {
            dim: AtomicUsize::new(policy.dim.unwrap_or(0)),
            entries: AtomicUsize::new(0),
            policy,
            map: RwLock::new(HashMap::new()),
            writer: Mutex::new(Owners::default()),
        }
    }

    /// Dimension in force (`None` until the first vector when the policy leaves it open).
    pub fn dim(&self) -> Option<usize> {
        match self.dim.load(Ordering::Acquire) {
            0 => None,
            d => Some(d),
        }
    }

    pub fn policy(&self) -> &PartitionPolicy {
        &self.policy
    }

    fn lock_writer(&self) -> MutexGuard<'_, Owners> {
        // Owners is updated after the index it describes, each step complete on its own, so
        // a poisoned lock still holds a usable (at worst slightly stale) map.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, partition: &str) -> Option<Arc<Partition>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(partition).cloned()
    }

    /// Inserts (or replaces) `id` in `partition`, creating the partition on demand. If `id`
    /// was in another partition, it is moved.
    pub fn add(&self, partition: &str, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        if id == RESERVED_ID {
            return Err(IndexError::ReservedId(id));
        }
        let mut owners = self.lock_writer();
        let dim = match self.dim.load(Ordering::Acquire) {
            0 => vector.len(),
            d => d,
        };
        // Check before touching anything, so a refused vector leaves no trace.
        super::normalized(vector, dim)?;
        self.dim.store(dim, Ordering::Release);
        let (key, part) = {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            match map.get_key_value(partition) {
                Some((k, p)) => (k.clone(), p.clone()),
                None => {
                    drop(map);
                    let key: Arc<str> = Arc::from(partition);
                    let part = Arc::new(Partition {
                        kind: RwLock::new(Kind::Brute(BruteForceIndex::new(dim))),
                    });
                    let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
                    map.insert(key.clone(), part.clone());
                    (key, part)
                }
            }
        };
        if let Some(old) = owners.of.get(&id).cloned()
            && *old != *partition
        {
            self.remove_from(&mut owners, &old, id);
        }
        if let Err(e) = part.with(|idx| idx.try_add(id, vector)) {
            // Only a backend failure gets here (the vector was checked); replacing in place
            // may have dropped the old vector, so drop the id entirely (index and owner map)
            // and any partition left empty.
            part.with(|idx| idx.remove(id));
            owners.of.remove(&id);
            self.entries.store(owners.of.len(), Ordering::Release);
            if part.with(|idx| idx.is_empty()) {
                let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
                map.remove(partition);
            }
            return Err(e);
        }
        owners.of.insert(id, key);
        self.entries.store(owners.of.len(), Ordering::Release);
        self.maybe_upgrade(&part, dim);
        Ok(())
    }

    /// Rebuilds a brute-force partition grown past the threshold as an ANN index. Runs under
    /// the writer mutex (no concurrent mutation), searches continue on the old index.
    fn maybe_upgrade(&self, part: &Partition, dim: usize) {
        let snapshot = {
            let kind = part.kind.read().unwrap_or_else(|p| p.into_inner());
            match &*kind {
                Kind::Brute(b) if b.len() > self.policy.ann_threshold => b.entries(),
                _ => return,
            }
        };
        let mut config = self.policy.ann.clone();
        config.initial_capacity = config
            .initial_capacity
            .max((snapshot.len() * 2).next_power_of_two());
        let ann = match AnnIndex::new(dim, config) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "ANN index unavailable; partition stays brute force");
                return;
            }
        };
        for (id, v) in &snapshot {
            if let Err(e) = ann.try_add(*id, v) {
                tracing::warn!(error = %e, "ANN rebuild failed; partition stays brute force");
                return;
            }
        }
        let mut kind = part.kind.write().unwrap_or_else(|p| p.into_inner());
        *kind = Kind::Ann(ann);
    }

    /// Removes `id` from `partition` (the store says which). No-op if it is not there.
    pub fn remove(&self, partition: &str, id: u64) {
        let mut owners = self.lock_writer();
        if owners.of.get(&id).is_some_and(|p| **p == *partition) {
            self.remove_from(&mut owners, partition, id);
        }
    }

    /// Removes `id` from whichever partition holds it. Returns whether it was indexed.
    pub fn remove_id(&self, id: u64) -> bool {
        let mut owners = self.lock_writer();
        match owners.of.get(&id).cloned() {
            Some(p) => {
                self.remove_from(&mut owners, &p, id);
                true
            }
            None => false,
        }
    }

    fn remove_from(&self, owners: &mut Owners, partition: &str, id: u64) {
        if let Some(part) = self.get(partition) {
            part.with(|idx| idx.remove(id));
            if part.with(|idx| idx.is_empty()) {
                let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
                map.remove(partition);
            }
        }
        owners.of.remove(&id);
        self.entries.store(owners.of.len(), Ordering::Release);
    }

    /// Up to `k` nearest entries of `partition`, best first; nothing for an unknown partition
    /// or an invalid query.
    pub fn search(&self, partition: &str, vector: &[f32], k: usize) -> Vec<Hit> {
        match self.get(partition) {
            Some(part) => part.with(|idx| idx.search(vector, k)),
            None => Vec::new(),
        }
    }

    /// Drops a whole partition; returns how many entries it held.
    pub fn drop_partition(&self, partition: &str) -> usize {
        let mut owners = self.lock_writer();
        let removed = {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            map.remove(partition)
        };
        match removed {
            Some(_) => {
                let before = owners.of.len();
                owners.of.retain(|_, p| **p != *partition);
                self.entries.store(owners.of.len(), Ordering::Release);
                before - owners.of.len()
            }
            None => 0,
        }
    }

    /// Drops every partition (and forgets a dimension learnt from the data).
    pub fn clear(&self) {
        let mut owners = self.lock_writer();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.clear();
        owners.of.clear();
        self.entries.store(0, Ordering::Release);
        self.dim
            .store(self.policy.dim.unwrap_or(0), Ordering::Release);
    }

    /// Entries in all partitions (cheap: no walk).
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes of all indexes (walks the partitions, see [`Partitions::stats`]).
    pub fn memory_bytes(&self) -> usize {
        self.stats().memory_bytes
    }

    /// Entries in one partition (0 if unknown).
    pub fn partition_len(&self, partition: &str) -> usize {
        self.get(partition).map_or(0, |p| p.with(|idx| idx.len()))
    }

    /// The partition holding `id`, if any.
    pub fn partition_of(&self, id: u64) -> Option<String> {
        self.lock_writer().of.get(&id).map(|p| p.to_string())
    }

    /// Whether `partition` is currently served by an ANN index.
    pub fn is_ann(&self, partition: &str) -> bool {
        self.get(partition).is_some_and(|p| p.is_ann())
    }

    /// Totals for metrics (walks every partition: call it at scrape time, not per request).
    pub fn stats(&self) -> PartitionStats {
        let parts: Vec<(Arc<str>, Arc<Partition>)> = {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut stats = PartitionStats {
            partitions: parts.len(),
            ..PartitionStats::default()
        };
        for (key, part) in &parts {
            let (len, mem) = part.with(|idx| (idx.len(), idx.memory_bytes()));
            stats.entries += len;
            stats.memory_bytes += mem + key.len() + std::mem::size_of::<Partition>();
            if part.is_ann() {
                stats.ann_partitions += 1;
            }
        }
        let owners_cap = self.lock_writer().of.capacity();
        stats.memory_bytes += owners_cap * (std::mem::size_of::<(u64, Arc<str>)>() + 1);
        stats
    }
}
