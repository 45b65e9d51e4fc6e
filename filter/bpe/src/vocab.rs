//! Static, build-time generated rank tables.
//!
//! * `blob`: all token bytes concatenated in rank order;
//! * `meta`: per rank a little-endian u32 `offset << 8 | len` into `blob`;
//! * `table`: open-addressing (linear probing) hash table of little-endian
//!   u32 slots `tag << 18 | rank` (`u32::MAX` = empty), indexed by the top bits
//!   of [`hash_bytes`]; the tag (next 14 hash bits) skips almost all
//!   non-matching slots without touching the blob;
//! * `pairs`: rank of every 2-byte token, indexed by `b0 << 8 | b1`
//!   (`u32::MAX` = none), the most frequent lookup while merging.

use crate::generated as g;
use crate::hash::{EMPTY, RANK_BITS, RANK_MASK, hash_bytes, pack_short, slot_and_tag};

pub(crate) struct Vocab {
    blob: &'static [u8],
    meta: &'static [u8],
    table: &'static [u8],
    pairs: &'static [u8],
    pub(crate) byte_rank: &'static [u32; 256],
    bits: u32,
    mask: usize,
    n_tokens: usize,
    pub(crate) max_len: usize,
}

pub(crate) static CL100K: Vocab = Vocab {
    blob: g::CL100K_BLOB,
    meta: g::CL100K_META,
    table: g::CL100K_TABLE,
    pairs: g::CL100K_PAIRS,
    byte_rank: &g::CL100K_BYTE_RANK,
    bits: g::CL100K_TABLE_BITS,
    mask: (1 << g::CL100K_TABLE_BITS) - 1,
    n_tokens: g::CL100K_N_TOKENS,
    max_len: g::CL100K_MAX_LEN,
};

pub(crate) static O200K: Vocab = Vocab {
    blob: g::O200K_BLOB,
    meta: g::O200K_META,
    table: g::O200K_TABLE,
    pairs: g::O200K_PAIRS,
    byte_rank: &g::O200K_BYTE_RANK,
    bits: g::O200K_TABLE_BITS,
    mask: (1 << g::O200K_TABLE_BITS) - 1,
    n_tokens: g::O200K_N_TOKENS,
    max_len: g::O200K_MAX_LEN,
};

/// Rank value meaning "not a token".
pub(crate) const NONE: u32 = u32::MAX;

#[inline(always)]
fn rd(b: &[u8], i: usize) -> u32 {
    match b.get(i * 4..).and_then(|t| t.first_chunk::<4>()) {
        Some(a) => u32::from_le_bytes(*a),
        None => EMPTY,
    }
}

impl Vocab {
    pub(crate) fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    pub(crate) fn table_bytes(&self) -> usize {
        self.blob.len() + self.meta.len() + self.table.len() + self.pairs.len() + 256 * 4
    }

    #[inline(always)]
    fn meta_of(&self, rank: u32) -> (usize, usize) {
        let m = rd(self.meta, rank as usize);
        ((m >> 8) as usize, (m & 0xFF) as usize)
    }

    pub(crate) fn token_bytes(&self, rank: u32) -> Option<&'static [u8]> {
        if rank as usize >= self.n_tokens {
            return None;
        }
        let (off, len) = self.meta_of(rank);
        self.blob.get(off..off + len)
    }

    /// Rank of a 2-byte string.
    #[inline(always)]
    pub(crate) fn pair(&self, a: u8, b: u8) -> u32 {
        rd(self.pairs, (usize::from(a) << 8) | usize::from(b))
    }

    /// Rank of `s`, or [`NONE`].
    #[inline(always)]
    pub(crate) fn rank(&self, s: &[u8]) -> u32 {
        let n = s.len();
        if n > self.max_len {
            return NONE;
        }
        if n == 2 {
            return self.pair(s[0], s[1]);
        }
        if n == 1 {
            return self.byte_rank[usize::from(s[0])];
        }
        self.rank_hashed(s)
    }

    /// Rank of `s` (any length) through the hash table, or [`NONE`].
    #[inline(always)]
    pub(crate) fn rank_hashed(&self, s: &[u8]) -> u32 {
        let (mut idx, tag) = slot_and_tag(hash_bytes(s), self.bits);
        loop {
            let e = rd(self.table, idx);
            if e == EMPTY {
                return NONE;
            }
            if e >> RANK_BITS == tag {
                let r = e & RANK_MASK;
                if self.eq(r, s) {
                    return r;
                }
            }
            idx = (idx + 1) & self.mask;
        }
    }

    #[inline(always)]
    fn eq(&self, rank: u32, s: &[u8]) -> bool {
        let (off, len) = self.meta_of(rank);
        if len != s.len() {
            return false;
        }
        let Some(t) = self.blob.get(off..off + len) else {
            return false;
        };
        if len <= 8 {
            pack_short(t) == pack_short(s)
        } else {
            t == s
        }
    }
}
