// Shared between `build.rs` (which builds the static rank tables) and the
// runtime lookup: both MUST hash token bytes identically.

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xD6E8_FEB8_6659_FD93;

/// Little-endian u32 at `i`, or 0 when out of range (never for our callers).
#[inline(always)]
pub(crate) fn load4(s: &[u8], i: usize) -> u64 {
    match s.get(i..).and_then(|t| t.first_chunk::<4>()) {
        Some(a) => u64::from(u32::from_le_bytes(*a)),
        None => 0,
    }
}

/// Little-endian u64 at `i`, or 0 when out of range (never for our callers).
#[inline(always)]
pub(crate) fn load8(s: &[u8], i: usize) -> u64 {
    match s.get(i..).and_then(|t| t.first_chunk::<8>()) {
        Some(a) => u64::from_le_bytes(*a),
        None => 0,
    }
}

/// Packs a slice of at most 8 bytes into a u64 (injective for a fixed length).
#[inline(always)]
pub(crate) fn pack_short(s: &[u8]) -> u64 {
    let n = s.len();
    if n >= 4 {
        (load4(s, 0) << 32) | load4(s, n - 4)
    } else if n > 0 {
        let a = u64::from(s.first().copied().unwrap_or(0));
        let b = u64::from(s.get(n / 2).copied().unwrap_or(0));
        let c = u64::from(s.last().copied().unwrap_or(0));
        (a << 16) | (b << 8) | c
    } else {
        0
    }
}

/// Fast non-cryptographic hash of a byte string. The top bits are well mixed
/// (used for the slot index and the tag).
#[inline(always)]
pub(crate) fn hash_bytes(s: &[u8]) -> u64 {
    let n = s.len();
    let mut h = (n as u64).wrapping_mul(K1);
    if n <= 8 {
        h ^= pack_short(s);
    } else {
        let mut i = 0;
        while i + 8 < n {
            h = (h ^ load8(s, i)).wrapping_mul(K2);
            h ^= h >> 29;
            i += 8;
        }
        h ^= load8(s, n - 8);
    }
    h = h.wrapping_mul(K2);
    h ^= h >> 32;
    h.wrapping_mul(K1)
}

/// Bytes per hash table slot: u64 key (packed bytes if len <= 8, else blob
/// offset), u32 `rank | len << LEN_SHIFT` (`u32::MAX` = empty), u32 hash32.
pub(crate) const SLOT: usize = 16;
pub(crate) const LEN_SHIFT: u32 = 18;
/// Rank bits (ranks < 2^18 = 262144).
pub(crate) const RANK_MASK: u32 = (1 << LEN_SHIFT) - 1;
/// Empty slot marker (in the rank/len word).
pub(crate) const EMPTY: u32 = u32::MAX;

/// Blocked Bloom filter over all tokens of 3+ bytes: `FILTER_WORDS` u64
/// words; a string may be a token only if both its bits are set in its word.
/// It lives in cache and spares most unsuccessful table probes while merging.
pub(crate) const FILTER_WORDS_LOG2: u32 = 15;

/// (word index, bit mask) of `h` in the filter.
#[inline(always)]
pub(crate) fn filter_pos(h: u64) -> (usize, u64) {
    let w = (h as usize) & ((1 << FILTER_WORDS_LOG2) - 1);
    let b1 = (h >> FILTER_WORDS_LOG2) & 63;
    let b2 = (h >> (FILTER_WORDS_LOG2 + 6)) & 63;
    (w, (1u64 << b1) | (1u64 << b2))
}
