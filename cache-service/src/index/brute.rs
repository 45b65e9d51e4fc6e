//! Exact nearest-neighbour search by scanning every vector (f32 dot products).

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Hit, IndexError, RESERVED_ID, VectorIndex, dot, normalized};

/// Exact index: vectors in one contiguous row-major buffer, removal by swap-remove.
///
/// Search is O(n·dim) under a shared lock (many concurrent searches); add and remove take
/// the lock exclusively for O(dim). Ties in similarity are broken by the smaller id, so
/// results are deterministic.
#[derive(Debug)]
pub struct BruteForceIndex {
    dim: usize,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ids: Vec<u64>,
    /// `ids.len() × dim`, row `i` belongs to `ids[i]`.
    data: Vec<f32>,
    pos: HashMap<u64, usize>,
}

impl BruteForceIndex {
    pub fn new(dim: usize) -> Self {
        BruteForceIndex {
            dim,
            inner: RwLock::new(Inner::default()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that
        // breaks searches (every mutation keeps ids/data/pos consistent before it can
        // panic), so a poisoned lock is still usable.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every (id, vector) stored, in storage order (used to build an ANN index from this one).
    pub fn entries(&self) -> Vec<(u64, Vec<f32>)> {
        let inner = self.read();
        inner
            .ids
            .iter()
            .zip(inner.data.chunks_exact(self.dim.max(1)))
            .map(|(id, v)| (*id, v.to_vec()))
            .collect()
    }

    /// Removes every entry (keeps the dimension).
    pub fn clear(&self) {
        let mut inner = self.write();
        *inner = Inner::default();
    }
}

impl VectorIndex for BruteForceIndex {
    fn try_add(&self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        if id == RESERVED_ID {
            return Err(IndexError::ReservedId(id));
        }
        let v = normalized(vector, self.dim)?;
        let mut inner = self.write();
        match inner.pos.get(&id).copied() {
            Some(i) => {
                inner.data[i * self.dim..(i + 1) * self.dim].copy_from_slice(&v);
            }
            None => {
                let i = inner.ids.len();
                inner.ids.push(id);
                inner.data.extend_from_slice(&v);
                inner.pos.insert(id, i);
            }
        }
        Ok(())
    }

    fn remove(&self, id: u64) {
        let mut inner = self.write();
        let Some(i) = inner.pos.remove(&id) else {
            return;
        };
        let last = inner.ids.len() - 1;
        if i != last {
            let moved = inner.ids[last];
            inner.ids[i] = moved;
            let dim = self.dim;
            inner
                .data
                .copy_within(last * dim..(last + 1) * dim, i * dim);
            inner.pos.insert(moved, i);
        }
        inner.ids.truncate(last);
        inner.data.truncate(last * self.dim);
    }

    fn search(&self, vector: &[f32], k: usize) -> Vec<Hit> {
        if k == 0 || self.dim == 0 {
            return Vec::new();
        }
        let Ok(q) = normalized(vector, self.dim) else {
            return Vec::new();
        };
        let inner = self.read();
        let mut best = TopK::new(k);
        for (id, row) in inner.ids.iter().zip(inner.data.chunks_exact(self.dim)) {
            best.offer(*id, dot(&q, row));
        }
        best.into_sorted()
    }

    fn contains(&self, id: u64) -> bool {
        self.read().pos.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.read().ids.len()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn memory_bytes(&self) -> usize {
        let inner = self.read();
        // hashbrown: one (key, value) slot + one control byte per bucket, ~8/7 buckets/entry.
        let map = inner.pos.capacity() * (std::mem::size_of::<(u64, usize)>() + 1);
        std::mem::size_of::<Self>()
            + inner.ids.capacity() * std::mem::size_of::<u64>()
            + inner.data.capacity() * std::mem::size_of::<f32>()
            + map
    }
}

/// The `k` best (id, score) pairs seen, kept sorted best first.
struct TopK {
    k: usize,
    items: Vec<Hit>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            items: Vec::with_capacity(k.min(1024) + 1),
        }
    }

    /// `a` ranks before `b`: higher score, then smaller id.
    fn before(a: Hit, b: Hit) -> bool {
        a.1 > b.1 || (a.1 == b.1 && a.0 < b.0)
    }

    #[inline]
    fn offer(&mut self, id: u64, score: f32) {
        if self.items.len() == self.k {
            match self.items.last() {
                Some(&worst) if Self::before((id, score), worst) => {}
                _ => return,
            }
            self.items.pop();
        }
        let at = self
            .items
            .partition_point(|&h| Self::before(h, (id, score)));
        self.items.insert(at, (id, score));
    }

    fn into_sorted(self) -> Vec<Hit> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn unit(dim: usize, i: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[i] = 1.0;
        v
    }

    #[test]
    fn exact_order_replace_and_remove() {
        let idx = BruteForceIndex::new(4);
        assert!(idx.search(&unit(4, 0), 3).is_empty());
        idx.try_add(1, &unit(4, 0)).unwrap();
        idx.try_add(2, &[1.0, 1.0, 0.0, 0.0]).unwrap();
        idx.try_add(3, &unit(4, 2)).unwrap();
        let hits = idx.search(&unit(4, 0), 3);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!((hits[0].1 - 1.0).abs() < 1e-6);
        assert!((hits[1].1 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // Replace id 1: now it points along axis 3.
        idx.try_add(1, &unit(4, 3)).unwrap();
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.search(&unit(4, 3), 1)[0].0, 1);
        // Remove the first row: the last row moves into its place and stays findable.
        idx.remove(1);
        idx.remove(1);
        assert_eq!(idx.len(), 2);
        assert!(!idx.contains(1));
        assert_eq!(idx.search(&unit(4, 2), 1)[0].0, 3);
        assert!(idx.search(&unit(4, 3), 5).iter().all(|h| h.0 != 1));
    }

    #[test]
    fn ties_break_by_id_and_k_limits() {
        let idx = BruteForceIndex::new(2);
        for id in [5, 3, 9, 1] {
            idx.try_add(id, &[1.0, 0.0]).unwrap();
        }
        let hits = idx.search(&[1.0, 0.0], 3);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 3, 5]);
        assert!(idx.search(&[1.0, 0.0], 0).is_empty());
        assert_eq!(idx.search(&[1.0, 0.0], 100).len(), 4);
    }

    #[test]
    fn refuses_bad_input() {
        let idx = BruteForceIndex::new(2);
        assert!(idx.try_add(RESERVED_ID, &[1.0, 0.0]).is_err());
        assert!(idx.try_add(1, &[1.0]).is_err());
        assert!(idx.try_add(1, &[0.0, 0.0]).is_err());
        assert!(idx.is_empty());
        idx.try_add(1, &[2.0, 0.0]).unwrap();
        assert!(idx.search(&[1.0], 1).is_empty());
        assert!(idx.search(&[f32::NAN, 0.0], 1).is_empty());
        // Stored normalised: similarity is a cosine.
        assert!((idx.search(&[5.0, 0.0], 1)[0].1 - 1.0).abs() < 1e-6);
    }
}
