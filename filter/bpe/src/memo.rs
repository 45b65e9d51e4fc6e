//! Small bounded memo of `piece -> token count` for pieces that needed
//! byte-pair merging (i.e. are not a single token), used by counting only.
//!
//! LLM API traffic is highly repetitive (system prompts, tool schemas and the
//! whole conversation are re-sent on every turn), and merging is ~50x more
//! expensive than a memo hit. Direct-mapped, 2048 entries of <= 32-byte
//! pieces (~100 KB per thread, allocated on first use), keyed by the full
//! 64-bit hash and verified byte for byte, so results stay exact.
//! Thread-local: no locking natively; a plain static in single-threaded wasm.

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
