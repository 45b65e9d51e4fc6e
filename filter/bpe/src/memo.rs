//! Small bounded memo of `piece -> token count` for pieces that needed
//! byte-pair merging (i.e. are not a single token), used by counting only.
//!
//! LLM API traffic is highly repetitive (system prompts, tool schemas and the
//! whole conversation are re-sent on every turn), and merging is ~50x more
//! expensive than a memo hit. Direct-mapped, 2048 entries of <= 32-byte
//! pieces (~100 KB per thread, allocated on first use), keyed by the full
//! 64-bit hash and verified byte for byte, so results stay exact.
//! Thread-local: no locking natively; a plain static in single-threaded wasm.
//!
//! Also a second, smaller cache for the most common case, a piece that *is* one token: the
//! rank table is several MiB, so each lookup of a 3-8 byte piece lands on its own cache line
//! and page; the last 4,096 such pieces seen (each slot verified by the packed bytes, length
//! and encoding) sit in 64 KiB instead. Texts repeat their vocabulary (Zipf), so most lookups
//! hit it: counting en+code text is ~20-25% faster in V8 (`benches/results/core.md`).

use std::cell::RefCell;

/// Longest piece that is memoized.
pub(crate) const MAX_LEN: usize = 32;
const SIZE_LOG2: u32 = 11;

#[derive(Clone, Copy)]
struct Entry {
    h: u64,
    /// `len | enc << 8 | count << 16` (0 = empty: no piece has length 0).
    meta: u32,
    /// Generation the entry was written in (see [`clear`]).
    generation: u32,
    bytes: [u8; MAX_LEN],
}

const EMPTY: Entry = Entry {
    h: 0,
    meta: 0,
    generation: 0,
    bytes: [0; MAX_LEN],
};

struct Memo {
    entries: Vec<Entry>,
    generation: u32,
}

thread_local! {
    static MEMO: RefCell<Memo> = const {
        RefCell::new(Memo {
            entries: Vec::new(),
            generation: 0,
        })
    };
}

/// Forgets all memoized pieces of this thread, in O(1).
pub(crate) fn clear() {
    MEMO.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.generation = m.generation.wrapping_add(1);
            if m.generation == 0 {
                // Wrapped: old entries could look current again.
                m.entries.iter_mut().for_each(|e| *e = EMPTY);
                m.generation = 1;
            }
        }
    });
}

#[inline(always)]
fn slot(h: u64) -> usize {
    ((h >> 7) as usize) & ((1 << SIZE_LOG2) - 1)
}

/// Memoized count of `piece` (hash `h`) for encoding `enc`.
#[inline]
pub(crate) fn get(enc: u8, piece: &[u8], h: u64) -> Option<usize> {
    MEMO.with(|m| {
        let m = m.try_borrow().ok()?;
        let e = m.entries.get(slot(h))?;
        let want = piece.len() as u32 | u32::from(enc) << 8;
        if e.h == h
            && e.meta & 0xFFFF == want
            && e.generation == m.generation
            && e.bytes.get(..piece.len()) == Some(piece)
        {
            Some((e.meta >> 16) as usize)
        } else {
            None
        }
    })
}

/// Remembers the count of `piece` (replacing whatever was in its slot).
#[inline]
pub(crate) fn put(enc: u8, piece: &[u8], h: u64, count: usize) {
    let n = piece.len();
    if n == 0 || n > MAX_LEN || count > 0xFFFF {
        return;
    }
    MEMO.with(|m| {
        let Ok(mut m) = m.try_borrow_mut() else {
            return;
        };
        if m.entries.is_empty() {
            m.entries.resize(1 << SIZE_LOG2, EMPTY);
        }
        let generation = m.generation;
        if let Some(e) = m.entries.get_mut(slot(h)) {
            let mut bytes = [0u8; MAX_LEN];
            if let Some(dst) = bytes.get_mut(..n) {
                dst.copy_from_slice(piece);
            }
            *e = Entry {
                h,
                meta: n as u32 | u32::from(enc) << 8 | (count as u32) << 16,
                generation,
                bytes,
            };
        }
    });
}

/// Direct-mapped cache of recently seen whole-token pieces of 3..=8 bytes: `(packed bytes,
/// len | enc << 8, rank)`, 16 bytes each, so the hot vocabulary of a text sits in 64 KiB
/// instead of being spread over the multi-MiB rank table.
const HOT_LOG2: u32 = 12;

#[derive(Clone, Copy)]
struct Hot {
    key: u64,
    tag: u32,
    rank: u32,
}

thread_local! {
    static HOT: RefCell<Vec<Hot>> = const { RefCell::new(Vec::new()) };
}

#[inline(always)]
fn hot_slot(h: u64) -> usize {
    ((h >> 20) as usize) & ((1 << HOT_LOG2) - 1)
}

#[inline]
pub(crate) fn hot_get(enc: u8, key: u64, len: usize, h: u64) -> Option<u32> {
    HOT.with(|t| {
        let t = t.try_borrow().ok()?;
        let e = t.get(hot_slot(h))?;
        (e.key == key && e.tag == (len as u32 | u32::from(enc) << 8)).then_some(e.rank)
    })
}

#[inline]
pub(crate) fn hot_put(enc: u8, key: u64, len: usize, h: u64, rank: u32) {
    HOT.with(|t| {
        let Ok(mut t) = t.try_borrow_mut() else {
            return;
        };
        if t.is_empty() {
            t.resize(
                1 << HOT_LOG2,
                Hot {
                    key: 0,
                    tag: 0,
                    rank: 0,
                },
            );
        }
        if let Some(e) = t.get_mut(hot_slot(h)) {
            *e = Hot {
                key,
                tag: len as u32 | u32::from(enc) << 8,
                rank,
            };
        }
    });
}
