//! Byte-pair merging, exactly as tiktoken: repeatedly merge the adjacent pair
//! of parts whose concatenated bytes have the lowest rank (leftmost on ties)
//! until no adjacent pair is a token.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

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
const SMALL: usize = 128;

#[inline(always)]
pub(crate) fn encode_piece<S: Sink>(v: &Vocab, piece: &[u8], sink: &mut S) {
    let r = v.rank(piece);
    if r != NONE {
        sink.push(r);
        return;
    }
    if piece.len() <= SMALL {
        merge_small(v, piece, sink);
    } else {
        merge_large(v, piece, sink);
    }
}

/// Rank of `piece[a..b]`, or NONE.
#[inline(always)]
fn rank_of(v: &Vocab, piece: &[u8], a: usize, b: usize) -> u32 {
    match piece.get(a..b) {
        Some(t) => v.rank(t),
        None => NONE,
    }
}

#[inline(never)]
fn merge_small<S: Sink>(v: &Vocab, piece: &[u8], sink: &mut S) {
    let n = piece.len();
    if n == 0 {
        return;
    }
    if n > SMALL {
        return merge_large(v, piece, sink);
    }
    // Part k spans start[k]..start[k+1]; rank[k] = rank of merging parts k, k+1.
    let mut start = [0u8; SMALL + 1];
    let mut rank = [NONE; SMALL];
    let mut tok = [0u32; SMALL];
    for k in 0..n {
        start[k] = k as u8;
        if S::IDS {
            tok[k] = v.byte_rank[usize::from(piece[k])];
        }
    }
    start[n] = n as u8; // n <= 128 fits (start values are < 256)
    for k in 0..n - 1 {
        rank[k] = v.pair(piece[k], piece[k + 1]);
    }
    let mut m = n; // number of parts
    loop {
        // Leftmost minimum.
        let mut best = NONE;
        let mut bk = 0;
        for (k, &r) in rank[..m - 1].iter().enumerate() {
            if r < best {
                best = r;
                bk = k;
            }
        }
        if best == NONE {
            break;
        }
        let k = bk;
        // Merge parts k and k+1.
        if S::IDS {
            tok[k] = best;
            tok.copy_within(k + 2..m, k + 1);
        }
        start.copy_within(k + 2..=m, k + 1);
        rank.copy_within(k + 2..m, k + 1);
        m -= 1;
        rank[k] = if k + 1 < m {
            rank_of(v, piece, usize::from(start[k]), usize::from(start[k + 2]))
        } else {
            NONE
        };
        if k > 0 {
            rank[k - 1] = rank_of(
                v,
                piece,
                usize::from(start[k - 1]),
                usize::from(start[k + 1]),
            );
        }
        if m == 1 {
            break;
        }
    }
    if S::IDS {
        for &t in &tok[..m] {
            sink.push(t);
        }
    } else {
        sink.add_count(m);
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
    // (Reverse(rank), Reverse(start)): max-heap pops the lowest rank, leftmost.
    let mut heap: BinaryHeap<(Reverse<u32>, Reverse<u32>)> = BinaryHeap::with_capacity(n);
    for i in 0..n {
        let nr = if i + 1 < n {
            v.pair(piece[i], piece[i + 1])
        } else {
            NONE
        };
        if nr != NONE {
            heap.push((Reverse(nr), Reverse(i as u32)));
        }
        st.push(Part {
            prev: if i == 0 { u32::MAX } else { (i - 1) as u32 },
            end: (i + 1) as u32,
            next_end: (i + 2) as u32,
            next_rank: nr,
            cur: v.byte_rank[usize::from(piece[i])],
        });
    }
    while let Some((Reverse(r), Reverse(left))) = heap.pop() {
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
            heap.push((Reverse(nr), Reverse(left as u32)));
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
                heap.push((Reverse(pr), Reverse(prev)));
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
