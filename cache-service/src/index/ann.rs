//! HNSW index backed by `usearch` (C++ via `cxx`), chosen in `benches/results/ann.md`.
//!
//! usearch allows concurrent searches as long as (1) no `reserve` runs at the same time and
//! (2) no more callers are inside it than thread contexts were reserved (it fails the call, it
//! does not wait). It also allows adds concurrent with searches, but in our stress test
//! (`tests/index_ann.rs`) searches overlapping adds sometimes returned truncated result sets
//! (1 hit for k = 5 with ~600 entries): a wrong miss is cheap, a racy graph is not, so adds
//! do not overlap searches here. [`AnnIndex`]:
//! - an `RwLock` around the native index: searches share it; adds, capacity growth (`reserve`)
//!   and removals take it exclusively. An add costs ~0.1–0.5 ms (see the bench), so a search
//!   waits at most about that long; removal is O(1) (the slot is tombstoned, filtered from
//!   results, and reused by a later add);
//! - a counting semaphore with as many permits as reserved thread contexts, so excess searches
//!   wait instead of failing;
//! - a writer mutex serialising adds and removes (replace = remove + add, and the capacity
//!   check before an add, must not interleave).

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::{Hit, IndexError, RESERVED_ID, VectorIndex, normalized};

/// How vectors are stored in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantization {
    /// Half precision: half the memory, similarity within ~1e-3 of f32 (see the bench).
    F16,
    F32,
}

/// HNSW parameters (usearch names).
#[derive(Clone, Debug, PartialEq)]
pub struct AnnConfig {
    pub quantization: Quantization,
    /// Graph degree (`M`).
    pub connectivity: usize,
    /// Beam width while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Beam width while searching (`ef`) up to 200k entries; raised to `k` when a search asks
    /// for more, and by [`AnnConfig::expansion_search_for`] on large indexes.
    pub expansion_search: usize,
    /// Slots reserved at creation; the index doubles its capacity when full.
    pub initial_capacity: usize,
    /// Concurrent operations inside the native index (reserved thread contexts). Callers
    /// beyond this wait.
    pub max_concurrency: usize,
}

impl Default for AnnConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        AnnConfig {
            quantization: Quantization::F16,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
            initial_capacity: 1024,
            max_concurrency: (cores * 2).max(8),
        }
    }
}

impl AnnConfig {
    /// Search beam width for an index of `len` entries. Measured on clustered 384-d data
    /// (`benches/results/ann.md`): ef 128 gives paraphrase recall@1 1.000 at 100k but 0.927 at
    /// 1M, where ef 512 gives 0.989 (p50 2.4 ms) and ef 1024 0.996 (p50 5.8 ms). Hence a step
    /// rule: the configured ef below 200k entries, at least 256 up to 500k, at least 512 above.
    pub fn expansion_search_for(&self, len: usize) -> usize {
        let floor = match len {
            0..200_000 => 0,
            200_000..500_000 => 256,
            _ => 512,
        };
        self.expansion_search.max(floor).max(1)
    }
}

/// Approximate index (HNSW, inner product on unit vectors = cosine). See the module docs.
pub struct AnnIndex {
    dim: usize,
    config: AnnConfig,
    native: RwLock<Index>,
    writer: Mutex<()>,
    permits: Permits,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("dim", &self.dim)
            .field("config", &self.config)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> IndexError {
    IndexError::Backend(e.to_string())
}

impl AnnIndex {
    pub fn new(dim: usize, config: AnnConfig) -> Result<Self, IndexError> {
        let options = IndexOptions {
            dimensions: dim,
            metric: MetricKind::IP,
            quantization: match config.quantization {
                Quantization::F16 => ScalarKind::F16,
                Quantization::F32 => ScalarKind::F32,
            },
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.expansion_search,
            multi: false,
        };
        let native = Index::new(&options).map_err(backend)?;
        let threads = config.max_concurrency.max(1);
        native
            .reserve_capacity_and_threads(config.initial_capacity.max(1), threads)
            .map_err(backend)?;
        Ok(AnnIndex {
            dim,
            permits: Permits::new(threads),
            config,
            native: RwLock::new(native),
            writer: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &AnnConfig {
        &self.config
    }

    /// Slots currently reserved (grows by doubling).
    pub fn capacity(&self) -> usize {
        self.read().capacity()
    }

    /// Changes the search beam width (recall/latency trade-off) on a live index, until the next
    /// add re-applies [`AnnConfig::expansion_search_for`].
    pub fn set_expansion_search(&self, ef: usize) {
        self.read().change_expansion_search(ef.max(1));
    }

    // The native index has no Rust-side invariants a panic could break, so a poisoned lock
    // is still usable.
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.native.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.native.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes `id` from the native index; the caller holds the writer mutex.
    fn remove_locked(&self, id: u64) -> Result<(), IndexError> {
        let native = self.write();
        if native.contains(id) {
            native.remove(id).map_err(backend)?;
        }
        Ok(())
    }
}

impl VectorIndex for AnnIndex {
    fn try_add(&self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        if id == RESERVED_ID {
            return Err(IndexError::ReservedId(id));
        }
        let v = normalized(vector, self.dim)?;
        let _writer = self.lock_writer();
        // Replace: usearch refuses duplicate keys; the tombstoned slot is reused just below.
        if self.read().contains(id) {
            self.remove_locked(id)?;
        }
        {
            let native = self.read();
            let full = native.size() >= native.capacity();
            drop(native);
            if full {
                let native = self.write();
                let target = (native.capacity() * 2).max(self.config.initial_capacity.max(16));
                native
                    .reserve_capacity_and_threads(target, self.config.max_concurrency.max(1))
                    .map_err(backend)?;
            }
        }
        // Exclusive: no search is inside the native index, so a thread context is free.
        let native = self.write();
        native.add(id, &v[..]).map_err(backend)?;
        let ef = self.config.expansion_search_for(native.size());
        if native.expansion_search() != ef {
            native.change_expansion_search(ef);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.read().size()
    }

    fn remove(&self, id: u64) {
        let _writer = self.lock_writer();
        if let Err(e) = self.remove_locked(id) {
            // Only an allocation failure of usearch's free list gets here; the id may still
            // be returned by searches. Callers re-check entries against the store.
            tracing::error!(id, error = %e, "usearch remove failed");
        }
    }

    fn search(&self, vector: &[f32], k: usize) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        let Ok(q) = normalized(vector, self.dim) else {
            return Vec::new();
        };
        let _permit = self.permits.acquire();
        let native = self.read();
        if native.size() == 0 {
            return Vec::new();
        }
        match native.search(&q[..], k) {
            Ok(m) => m
                .keys
                .iter()
                .zip(&m.distances)
                .filter(|(key, _)| **key != RESERVED_ID)
                .map(|(key, d)| (*key, 1.0 - d))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "usearch search failed");
                Vec::new()
            }
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.read().contains(id)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes in use. usearch's own `memory_usage` also counts the unused rest of its arenas
    /// (mmap'd in 8 MiB+ steps per tape, ~16 MiB of address space for even a tiny index, but
    /// only touched pages become resident), so that reserve is subtracted here.
    fn memory_bytes(&self) -> usize {
        let native = self.read();
        let stats = native.memory_stats();
        std::mem::size_of::<Self>()
            + native
                .memory_usage()
                .saturating_sub(stats.graph_reserved)
                .saturating_sub(stats.vectors_reserved)
    }
}

/// Counting semaphore (std only): at most `n` holders at a time, others wait.
struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(n: usize) -> Self {
        Permits {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beam_width_grows_with_the_index() {
        let c = AnnConfig::default();
        assert_eq!(c.expansion_search_for(0), 128);
        assert_eq!(c.expansion_search_for(199_999), 128);
        assert_eq!(c.expansion_search_for(200_000), 256);
        assert_eq!(c.expansion_search_for(1_000_000), 512);
        let wide = AnnConfig {
            expansion_search: 1024,
            ..AnnConfig::default()
        };
        assert_eq!(wide.expansion_search_for(1_000_000), 1024);
    }
}
