//! Static, build-time generated rank tables (see `build.rs`).
//!
//! * `table`: Robin Hood open-addressing hash table, 16-byte little-endian
//!   slots `[u64 key][u32 rank | len << 18][u32 hash32]`, home slot = top bits
//!   of `hash32`. `key` holds the token bytes packed ([`pack_short`]) for
//!   tokens of up to 8 bytes (about 75% of them, verified without touching
//!   any other memory), else the offset of the bytes in `blob`;
//! * `blob`: bytes of the tokens longer than 8 bytes;
//! * `pairs`: rank of every 2-byte token, indexed by `b0 << 8 | b1`
//!   (`u32::MAX` = none), the most frequent lookup while merging.

use crate::generated as g;
use crate::hash::{EMPTY, LEN_SHIFT, RANK_MASK, SLOT, filter_pos, hash_bytes, pack_short};

pub(crate) struct Vocab {
    #[cfg_attr(not(feature = "memo"), allow(dead_code))]
    id: u8,
    blob: &'static [u8],
    table: &'static [u8],
    pairs: &'static [u8],
    filter: &'static [u8],
    pub(crate) byte_rank: &'static [u32; 256],
    bits: u32,
    mask: usize,
    n_tokens: usize,
    max_len: usize,
}

pub(crate) static CL100K: Vocab = Vocab {
    id: 0,
    blob: g::CL100K_BLOB,
    table: g::CL100K_TABLE,
    pairs: g::CL100K_PAIRS,
    filter: g::CL100K_FILTER,
    byte_rank: &g::CL100K_BYTE_RANK,
    bits: g::CL100K_TABLE_BITS,
    mask: (1 << g::CL100K_TABLE_BITS) - 1,
    n_tokens: g::CL100K_N_TOKENS,
    max_len: g::CL100K_MAX_LEN,
};

pub(crate) static O200K: Vocab = Vocab {
    id: 1,
    blob: g::O200K_BLOB,
    table: g::O200K_TABLE,
    pairs: g::O200K_PAIRS,
    filter: g::O200K_FILTER,
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
        None => NONE,
    }
}

impl Vocab {
    /// Small distinct id of the encoding.
    #[cfg_attr(not(feature = "memo"), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn id(&self) -> u8 {
        self.id
    }

    /// Length of the longest token.
    #[inline(always)]
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }

    pub(crate) fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    pub(crate) fn table_bytes(&self) -> usize {
        self.blob.len() + self.table.len() + self.pairs.len() + self.filter.len() + 256 * 4
    }

    /// Rank of a 2-byte string.
    #[inline(always)]
    pub(crate) fn pair(&self, a: u8, b: u8) -> u32 {
        rd(self.pairs, (usize::from(a) << 8) | usize::from(b))
    }

    /// Rank of `s`, or [`NONE`].
    #[inline(always)]
    pub(crate) fn rank(&self, s: &[u8]) -> u32 {
        match s.len() {
            0 => NONE,
            1 => self.byte_rank[usize::from(s[0])],
            2 => self.pair(s[0], s[1]),
            n if n > self.max_len => NONE,
            _ => self.rank_hashed(s),
        }
    }

    /// Like [`Vocab::rank`], but first consults the Bloom filter: for the
    /// merge loop, where most candidates are not tokens.
    #[inline(always)]
    pub(crate) fn rank_filtered(&self, s: &[u8]) -> u32 {
        match s.len() {
            0 => NONE,
            1 => self.byte_rank[usize::from(s[0])],
            2 => self.pair(s[0], s[1]),
            n if n > self.max_len => NONE,
            _ => {
                let h = hash_bytes(s);
                let (w, m) = filter_pos(h);
                let word = match self.filter.get(w * 8..).and_then(|t| t.first_chunk::<8>()) {
                    Some(a) => u64::from_le_bytes(*a),
                    None => u64::MAX,
                };
                if word & m != m {
                    return NONE;
                }
                self.probe(s, h)
            }
        }
    }

    /// Rank of `s` (any length >= 1) through the hash table, or [`NONE`].
    #[inline(always)]
    pub(crate) fn rank_hashed(&self, s: &[u8]) -> u32 {
        self.probe(s, hash_bytes(s))
    }

    /// Rank of `s` whose [`hash_bytes`] is `h`, or [`NONE`].
    #[inline(always)]
    pub(crate) fn probe(&self, s: &[u8], h: u64) -> u32 {
        let n = s.len();
        let h32 = (h >> 32) as u32;
        let shift = 32 - self.bits;
        let mut idx = (h32 >> shift) as usize;
        let mut dist = 0usize;
        let short = n <= 8;
        let key = if short { pack_short(s) } else { 0 };
        let want_len = (n as u32) << LEN_SHIFT;
        loop {
            let Some(slot) = self
                .table
                .get(idx * SLOT..)
                .and_then(|t| t.first_chunk::<SLOT>())
            else {
                return NONE;
            };
            let [
                k0,
                k1,
                k2,
                k3,
                k4,
                k5,
                k6,
                k7,
                r0,
                r1,
                r2,
                r3,
                h0,
                h1,
                h2,
                h3,
            ] = *slot;
            let rl = u32::from_le_bytes([r0, r1, r2, r3]);
            if rl == EMPTY {
                return NONE;
            }
            let sh = u32::from_le_bytes([h0, h1, h2, h3]);
            if sh == h32 && rl & !RANK_MASK == want_len {
                let k = u64::from_le_bytes([k0, k1, k2, k3, k4, k5, k6, k7]);
                let eq = if short {
                    k == key
                } else {
                    let off = k as usize;
                    self.blob.get(off..off + n) == Some(s)
                };
                if eq {
                    return rl & RANK_MASK;
                }
            }
            // Robin Hood invariant: entries are ordered by probe distance, so
            // once a resident is closer to its home than we are, stop.
            let their = idx.wrapping_sub((sh >> shift) as usize) & self.mask;
            if their < dist {
                return NONE;
            }
            idx = (idx + 1) & self.mask;
            dist += 1;
        }
    }
}
