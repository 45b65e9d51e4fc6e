//! Byte-pair merging, exactly as tiktoken: repeatedly merge the adjacent pair
//! of parts whose concatenated bytes have the lowest rank (leftmost on ties)
//! until no adjacent pair is a token.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hash::hash_bytes;
use crate::vocab::{NONE, Vocab};

/// Receives the token ids of a piece.
pub(crate) trait Sink {
    fn push(&mut self, rank: u32);
    /// Adds `n` tokens whose ids are not needed (only called by counting).
    fn add_count(&mut self, n: usize);
    /// Whether the ids are needed.
    const IDS: bool;
}

pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    #[inline(always)]
    fn push(&mut self, _rank: u32) {
        self.0 += 1;
    }
    #[inline(always)]
    fn add_count(&mut self, n: usize) {
        self.0 += n;
    }
    const IDS: bool = false;
}

impl Sink for Vec<u32> {
    #[inline(always)]
    fn push(&mut self, rank: u32) {
        Vec::push(self, rank);
    }
    #[inline(always)]
    fn add_count(&mut self, _n: usize) {}
    const IDS: bool = true;
}

/// Pieces up to this length use the simple O(n^2) merge on stack arrays.
const SMALL: usize = 32;
/// Pieces up to this length use a linked list with a tournament tree
/// (stack arrays of 64, 128, 256 or 512 entries). At most 512 (see `key9`).
const MID: usize = 512;

#[inline(always)]
pub(crate) fn encode_piece<S: Sink>(v: &Vocab, piece: &[u8], sink: &mut S) {
    let n = piece.len();
    if n <= 2 || n > v.max_len() {
        let r = v.rank(piece);
        if r != NONE {
            sink.push(r);
        } else {
            merge(v, piece, sink);
        }
        return;
    }
    let h = hash_bytes(piece);
    #[cfg(feature = "memo")]
    let key = if n <= 8 {
        let key = crate::hash::pack_short(piece);
        if let Some(r) = crate::memo::hot_get(v.id(), key, n, h) {
            sink.push(r);
            return;
        }
        Some(key)
    } else {
        None
    };
    let r = v.probe(piece, h);
    if r != NONE {
        #[cfg(feature = "memo")]
        if let Some(key) = key {
            crate::memo::hot_put(v.id(), key, n, h, r);
        }
        sink.push(r);
        return;
    }
    #[cfg(feature = "memo")]
    if !S::IDS && n <= crate::memo::MAX_LEN {
        if let Some(c) = crate::memo::get(v.id(), piece, h) {
            sink.add_count(c);
            return;
        }
        let mut c = Counter(0);
        merge(v, piece, &mut c);
        crate::memo::put(v.id(), piece, h, c.0);
        sink.add_count(c.0);
        return;
    }
    merge(v, piece, sink);
}

/// Byte-pair merges a piece that is not a single token.
#[inline(always)]
fn merge<S: Sink>(v: &Vocab, piece: &[u8], sink: &mut S) {
    if piece.len() <= SMALL {
        merge_small(v, piece, sink);
    } else if piece.len() <= 64 {
        merge_tree::<S, 64, 128>(v, piece, sink);
    } else if piece.len() <= 128 {
        merge_tree::<S, 128, 256>(v, piece, sink);
    } else if piece.len() <= 256 {
        merge_tree::<S, 256, 512>(v, piece, sink);
    } else if piece.len() <= MID {
        merge_tree::<S, MID, { 2 * MID }>(v, piece, sink);
    } else {
        merge_large(v, piece, sink);
    }
}

/// Rank of `piece[a..b]`, or NONE.
#[inline(always)]
fn rank_of(v: &Vocab, piece: &[u8], a: usize, b: usize) -> u32 {
    match piece.get(a..b) {
        Some(t) => v.rank_filtered(t),
        None => NONE,
    }
}

/// Short pieces: parts form a linked list over byte positions (no shifting);
/// `rank[k]` is the rank of merging the part starting at `k` with the next
/// one (NONE when impossible or when `k` is not a part start); each step
/// scans for the leftmost minimum.
#[inline(never)]
fn merge_small<S: Sink>(v: &Vocab, piece: &[u8], sink: &mut S) {
    let n = piece.len();
    if !(2..=SMALL).contains(&n) {
        return merge_large(v, piece, sink);
    }
    let mut rank = [NONE; SMALL];
    let mut next = [0u8; SMALL];
    let mut prev = [0u8; SMALL];
    let mut tok = [0u32; SMALL];
    for k in 0..n {
        next[k] = (k + 1) as u8;
        prev[k] = k.wrapping_sub(1) as u8;
        if S::IDS {
            tok[k] = v.byte_rank[usize::from(piece[k])];
        }
    }
    // key = rank << 5 | position: the plain minimum is the leftmost lowest rank.
    for k in 0..n - 1 {
        rank[k] = key5(v.pair(piece[k], piece[k + 1]), k);
    }
    let mut parts = n;
    let live = &mut rank[..n - 1];
    loop {
        let best = min_key(live);
        if best == NONE {
            break;
        }
        let m = best >> 5;
        let k = (best & 31) as usize;
        let r = usize::from(next[k]) % SMALL;
        let nn = usize::from(next[r]);
        if S::IDS {
            tok[k] = m;
        }
        parts -= 1;
        next[k] = nn as u8;
        if let Some(x) = live.get_mut(r) {
            *x = NONE;
        }
        let nr = if nn < n {
            prev[nn % SMALL] = k as u8;
            rank_of(v, piece, k, usize::from(next[nn % SMALL]))
        } else {
            NONE
        };
        if let Some(x) = live.get_mut(k) {
            *x = key5(nr, k);
        }
        if k > 0 {
            let p = usize::from(prev[k]);
            let pr = rank_of(v, piece, p, nn);
            if let Some(x) = live.get_mut(p) {
                *x = key5(pr, p);
            }
        }
    }
    if S::IDS {
        let mut k = 0;
        while k < n {
            sink.push(tok[k % SMALL]);
            k = usize::from(next[k % SMALL]);
        }
    } else {
        sink.add_count(parts);
    }
}

/// Sort key `rank << 5 | k` (NONE stays NONE); ranks < 2^18, k < 32.
#[inline(always)]
fn key5(rank: u32, k: usize) -> u32 {
    if rank == NONE {
        NONE
    } else {
        (rank << 5) | (k as u32 & 31)
    }
}

/// Sort key `rank << 9 | k` (NONE stays NONE); ranks < 2^18, k < 512.
#[inline(always)]
fn key9(rank: u32, k: usize) -> u32 {
    if rank == NONE {
        NONE
    } else {
        (rank << 9) | (k as u32 & 511)
    }
}

/// Minimum of `a` (NONE if empty).
#[inline(always)]
fn min_key(a: &[u32]) -> u32 {
    let mut m = NONE;
    for &x in a {
        m = m.min(x);
    }
    m
}

/// Sets leaf `k` of the min-tournament `tree` (leaves at `M + k`) and
/// updates its ancestors, stopping early once an ancestor is unchanged.
#[inline(always)]
fn tree_set<const M2: usize>(tree: &mut [u32; M2], k: usize, key: u32) {
    let m = M2 / 2;
    let mut i = (m + k) % M2;
    tree[i] = key;
    while i > 1 {
        let sib = tree[i ^ 1];
        let cur = tree[i];
        let parent = i / 2;
        let v = cur.min(sib);
        if tree[parent] == v {
            break;
        }
        tree[parent] = v;
        i = parent;
    }
}

/// Medium pieces: like [`merge_small`] (linked list over byte positions, no
/// shifting) but the leftmost minimum is kept in a tournament tree
/// (`tree[1]` = minimum key), so a merge costs O(log n).
#[inline(never)]
fn merge_tree<S: Sink, const M: usize, const M2: usize>(v: &Vocab, piece: &[u8], sink: &mut S) {
    let n = piece.len();
    if n > M || n < 2 || M2 != 2 * M || M > 512 {
        return merge_large(v, piece, sink);
    }
    let mut tree = [NONE; M2];
    let mut next = [0u16; M];
    let mut prev = [0u16; M];
    let mut tok = [0u32; M];
    for k in 0..n {
        next[k] = (k + 1) as u16;
        prev[k] = k.wrapping_sub(1) as u16;
        if k + 1 < n {
            tree[M + k] = key9(v.pair(piece[k], piece[k + 1]), k);
        }
        if S::IDS {
            tok[k] = v.byte_rank[usize::from(piece[k])];
        }
    }
    for i in (1..M).rev() {
        tree[i] = tree[2 * i].min(tree[2 * i + 1]);
    }
    let mut parts = n;
    loop {
        let best = tree[1];
        if best == NONE {
            break;
        }
        let k = (best & 511) as usize % M;
        let r = usize::from(next[k]) % M;
        let nn = usize::from(next[r]);
        // Merge parts k and r: the new part spans k..nn.
        if S::IDS {
            tok[k] = best >> 9;
        }
        parts -= 1;
        next[k] = nn as u16;
        tree_set(&mut tree, r, NONE);
        let nr = if nn < n {
            prev[nn % M] = k as u16;
            key9(rank_of(v, piece, k, usize::from(next[nn % M])), k)
        } else {
            NONE
        };
        tree_set(&mut tree, k, nr);
        if k > 0 {
            let p = usize::from(prev[k]) % M;
            let pr = key9(rank_of(v, piece, p, nn), p);
            tree_set(&mut tree, p, pr);
        }
    }
    if S::IDS {
        let mut k = 0;
        while k < n {
            sink.push(tok[k % M]);
            k = usize::from(next[k % M]);
        }
    } else {
        sink.add_count(parts);
    }
}

/// Heap-based merge for long pieces: O(n log n). Same result as the simple
/// loop (lowest rank first, leftmost on ties), as in tiktoken's
/// `_byte_pair_merge_large`.
#[inline(never)]
fn merge_large<S: Sink>(v: &Vocab, piece: &[u8], sink: &mut S) {
    let n = piece.len();
    if n == 0 {
        return;
    }
    struct Part {
        prev: u32,
        end: u32,       // end of this part
        next_end: u32,  // end of the following part
        next_rank: u32, // rank of merging with the following part, or NONE
        cur: u32,       // token id of this part
    }
    let mut st: Vec<Part> = Vec::with_capacity(n);
    // Reverse(rank << 32 | start): the max-heap pops the lowest rank, leftmost.
    let key = |rank: u32, start: u32| Reverse(u64::from(rank) << 32 | u64::from(start));
    let mut heap: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(n);
    for i in 0..n {
        let nr = if i + 1 < n {
            v.pair(piece[i], piece[i + 1])
        } else {
            NONE
        };
        if nr != NONE {
            heap.push(key(nr, i as u32));
        }
        st.push(Part {
            prev: if i == 0 { u32::MAX } else { (i - 1) as u32 },
            end: (i + 1) as u32,
            next_end: (i + 2) as u32,
            next_rank: nr,
            cur: v.byte_rank[usize::from(piece[i])],
        });
    }
    while let Some(Reverse(top)) = heap.pop() {
        let (r, left) = ((top >> 32) as u32, top as u32);
        let left = left as usize;
        let Some(p) = st.get(left) else { break };
        if p.next_rank != r {
            continue; // stale
        }
        let right = p.end as usize;
        let right_end = p.next_end as usize;
        let right_next_end = match st.get(right) {
            Some(q) => q.next_end,
            None => break,
        };
        // Merge left and right.
        let prev = {
            let p = &mut st[left];
            p.cur = r;
            p.end = right_end as u32;
            p.next_end = right_next_end;
            p.prev
        };
        let nr = if (right_next_end as usize) <= n && right_end < n {
            rank_of(v, piece, left, right_next_end as usize)
        } else {
            NONE
        };
        st[left].next_rank = nr;
        if nr != NONE {
            heap.push(key(nr, left as u32));
        }
        if let Some(q) = st.get_mut(right_end) {
            q.prev = left as u32;
        }
        st[right].next_rank = NONE;
        if prev != u32::MAX {
            let pv = prev as usize;
            let pr = rank_of(v, piece, pv, right_end);
            if let Some(pp) = st.get_mut(pv) {
                pp.next_end = right_end as u32;
                pp.next_rank = pr;
            }
            if pr != NONE {
                heap.push(key(pr, prev));
            }
        }
    }
    let mut i = 0;
    let mut count = 0;
    while let Some(p) = st.get(i) {
        if S::IDS {
            sink.push(p.cur);
        }
        count += 1;
        i = p.end as usize;
    }
    if !S::IDS {
        sink.add_count(count);
    }
}
