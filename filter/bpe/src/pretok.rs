//! Hand-written pre-tokenizers equivalent to tiktoken's split regexes (as run
//! by fancy-regex: leftmost-first alternation, backtracking, `$` = end of text).
//!
//! cl100k_base:
//! ```text
//! '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s
//! ```
//! o200k_base:
//! ```text
//! [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! Every character is matched by some alternative, so the matches tile the
//! text and each `next_*` call returns the end of the match starting at `i`.
//!
//! Notation below: L = \p{L}, N = \p{N}, S = \s (White_Space), U = the o200k
//! "upper" set, W = the o200k "lower" set, P = [^\s\p{L}\p{N}],
//! X = [^\r\n\p{L}\p{N}]. Marks (\p{M}) are in P, X, U and W.

use crate::generated::{CLASS_ASCII, CLASS_STAGE1, CLASS_STAGE2, fold_contraction};

pub(crate) const L: u8 = 1;
pub(crate) const N: u8 = 2;
pub(crate) const S: u8 = 4;
pub(crate) const U: u8 = 8;
pub(crate) const W: u8 = 16;
pub(crate) const CRLF: u8 = 32;
/// Class of the (virtual) character past the end of the text.
pub(crate) const END: u8 = 64;

#[inline(always)]
fn is_p(c: u8) -> bool {
    c & (L | N | S | END) == 0
}

#[inline(always)]
fn is_x(c: u8) -> bool {
    c & (L | N | CRLF | END) == 0
}

#[inline(always)]
fn byte(s: &[u8], i: usize) -> u32 {
    u32::from(s.get(i).copied().unwrap_or(0))
}

/// Decodes the (valid UTF-8) character at `i`: (code point, length).
/// At the end of `s` returns length 0.
#[inline(always)]
fn decode(s: &[u8], i: usize) -> (u32, usize) {
    let Some(&b0) = s.get(i) else {
        return (0, 0);
    };
    if b0 < 0x80 {
        (u32::from(b0), 1)
    } else {
        decode_multi(s, i, b0)
    }
}

#[inline]
fn decode_multi(s: &[u8], i: usize, b0: u8) -> (u32, usize) {
    let b0 = u32::from(b0);
    if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (byte(s, i + 1) & 0x3F), 2)
    } else if b0 < 0xF0 {
        (
            ((b0 & 0x0F) << 12) | ((byte(s, i + 1) & 0x3F) << 6) | (byte(s, i + 2) & 0x3F),
            3,
        )
    } else {
        (
            ((b0 & 0x07) << 18)
                | ((byte(s, i + 1) & 0x3F) << 12)
                | ((byte(s, i + 2) & 0x3F) << 6)
                | (byte(s, i + 3) & 0x3F),
            4,
        )
    }
}

#[inline(always)]
fn class_of_cp(cp: u32) -> u8 {
    let blk = CLASS_STAGE1.get((cp >> 8) as usize).copied().unwrap_or(0);
    CLASS_STAGE2
        .get(usize::from(blk) * 256 + (cp & 0xFF) as usize)
        .copied()
        .unwrap_or(0)
}

/// Class bits and byte length of the character at `i` ((END, 0) at the end).
#[inline(always)]
fn class_at(s: &[u8], i: usize) -> (u8, usize) {
    match s.get(i) {
        Some(&b) if b < 0x80 => (CLASS_ASCII[usize::from(b)], 1),
        Some(&b) => class_multi(s, i, b),
        None => (END, 0),
    }
}

#[inline]
fn class_multi(s: &[u8], i: usize, b0: u8) -> (u8, usize) {
    let (cp, n) = decode_multi(s, i, b0);
    (class_of_cp(cp), n)
}

/// End of the run of characters whose class intersects `mask`, from `i`.
#[inline(always)]
fn run(s: &[u8], mut i: usize, mask: u8) -> usize {
    // ASCII fast path.
    while let Some(&b) = s.get(i) {
        if b >= 0x80 {
            break;
        }
        if CLASS_ASCII[usize::from(b)] & mask == 0 {
            return i;
        }
        i += 1;
    }
    loop {
        let (c, n) = class_at(s, i);
        if c & mask == 0 {
            return i;
        }
        i += n;
    }
}

/// End of the run of P characters from `i`.
#[inline(always)]
fn run_p(s: &[u8], mut i: usize) -> usize {
    loop {
        let (c, n) = class_at(s, i);
        if !is_p(c) {
            return i;
        }
        i += n;
    }
}

/// End of the run of bytes in `set` (ASCII) from `i`.
#[inline(always)]
fn run_bytes(s: &[u8], mut i: usize, slash: bool) -> usize {
    while let Some(&b) = s.get(i) {
        if b == b'\r' || b == b'\n' || (slash && b == b'/') {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Matches `(?i:s|d|m|t|ll|ve|re)` at `i` (just after an apostrophe).
#[inline]
fn contraction_tail(s: &[u8], i: usize) -> Option<usize> {
    let (c1, n1) = decode(s, i);
    if n1 == 0 {
        return None;
    }
    let want = match fold_contraction(c1) {
        b's' | b'd' | b'm' | b't' => return Some(i + n1),
        b'l' => b'l',
        b'v' | b'r' => b'e',
        _ => return None,
    };
    let (c2, n2) = decode(s, i + n1);
    if n2 != 0 && fold_contraction(c2) == want {
        Some(i + n1 + n2)
    } else {
        None
    }
}

/// Whitespace run handling shared by both encodings. `c0` is whitespace.
/// Returns (end of the maximal run, end after its last CR/LF (0 = none),
/// start of its last character).
#[inline(always)]
fn ws_run(s: &[u8], i: usize) -> (usize, usize, usize) {
    let mut j = i;
    let mut crlf_end = 0;
    let mut last = i;
    loop {
        let (c, n) = class_at(s, j);
        if c & S == 0 {
            break;
        }
        if c & CRLF != 0 {
            crlf_end = j + n;
        }
        last = j;
        j += n;
    }
    (j, crlf_end, last)
}

/// The cl100k_base split: end of the match starting at `i` (`i < s.len()`).
#[inline(always)]
pub(crate) fn next_cl100k(s: &[u8], i: usize) -> usize {
    let (c0, n0) = class_at(s, i);
    // \p{L}++ (empty prefix).
    if c0 & L != 0 {
        return run(s, i + n0, L);
    }
    // '(?i:[sdmt]|ll|ve|re)
    if s.get(i) == Some(&b'\'')
        && let Some(e) = contraction_tail(s, i + 1)
    {
        return e;
    }
    // \p{N}{1,3}+
    if c0 & N != 0 {
        let (c1, n1) = class_at(s, i + n0);
        if c1 & N == 0 {
            return i + n0;
        }
        let (c2, n2) = class_at(s, i + n0 + n1);
        return if c2 & N == 0 {
            i + n0 + n1
        } else {
            i + n0 + n1 + n2
        };
    }
    let j = i + n0;
    let (c1, n1) = class_at(s, j);
    // [^\r\n\p{L}\p{N}]?+\p{L}++ with a prefix.
    if c0 & CRLF == 0 && c1 & L != 0 {
        return run(s, j + n1, L);
    }
    if c0 & S == 0 {
        // [^\s\p{L}\p{N}]++[\r\n]*+
        let e = run_p(s, j);
        return run_bytes(s, e, false);
    }
    // ' ' followed by P.
    if s.get(i) == Some(&b' ') && is_p(c1) {
        let e = run_p(s, j + n1);
        return run_bytes(s, e, false);
    }
    let (end, crlf_end, last) = ws_run(s, i);
    if end >= s.len() {
        return end; // \s++$
    }
    if crlf_end != 0 {
        return crlf_end; // \s*[\r\n]
    }
    if last > i {
        return last; // \s+(?!\S)
    }
    end // \s
}

/// `U*W+` from `p` (with U* backtracking into W+), or None.
#[inline(always)]
fn o200k_alt1(s: &[u8], p: usize) -> Option<usize> {
    let mut j = p;
    let mut last_w_end = None;
    loop {
        let (c, n) = class_at(s, j);
        if c & U == 0 {
            if c & W != 0 {
                return Some(run(s, j + n, W));
            }
            return last_w_end;
        }
        if c & W != 0 {
            last_w_end = Some(j + n);
        }
        j += n;
    }
}

/// `U+W*` from `p`, or None.
#[inline(always)]
fn o200k_alt2(s: &[u8], p: usize) -> Option<usize> {
    let j = run(s, p, U);
    if j == p {
        return None;
    }
    Some(run(s, j, W))
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `e`.
#[inline(always)]
fn o200k_suffix(s: &[u8], e: usize) -> usize {
    if s.get(e) == Some(&b'\'')
        && let Some(e2) = contraction_tail(s, e + 1)
    {
        return e2;
    }
    e
}

/// The o200k_base split: end of the match starting at `i` (`i < s.len()`).
#[inline(always)]
pub(crate) fn next_o200k(s: &[u8], i: usize) -> usize {
    let (c0, n0) = class_at(s, i);
    if c0 & L != 0 {
        // No prefix possible (a letter is not in X).
        if let Some(e) = o200k_alt1(s, i) {
            return o200k_suffix(s, e);
        }
        if let Some(e) = o200k_alt2(s, i) {
            return o200k_suffix(s, e);
        }
        return i + n0; // unreachable: every letter is in U or W
    }
    if c0 & N != 0 {
        let (c1, n1) = class_at(s, i + n0);
        if c1 & N == 0 {
            return i + n0;
        }
        let (c2, n2) = class_at(s, i + n0 + n1);
        return if c2 & N == 0 {
            i + n0 + n1
        } else {
            i + n0 + n1 + n2
        };
    }
    let j = i + n0;
    let (c1, n1) = class_at(s, j);
    let mark = c0 & (U | W) != 0; // c0 is a combining mark
    if is_x(c0) && (c1 & (U | W) != 0 || mark) {
        // Alternative 1 (prefix consumed, then not), then alternative 2.
        if let Some(e) = o200k_alt1(s, j) {
            return o200k_suffix(s, e);
        }
        if mark && let Some(e) = o200k_alt1(s, i) {
            return o200k_suffix(s, e);
        }
        if let Some(e) = o200k_alt2(s, j) {
            return o200k_suffix(s, e);
        }
        if mark && let Some(e) = o200k_alt2(s, i) {
            return o200k_suffix(s, e);
        }
    }
    if c0 & S == 0 {
        // [^\s\p{L}\p{N}]+[\r\n/]*
        let e = run_p(s, j);
        return run_bytes(s, e, true);
    }
    // ' ' followed by P.
    if s.get(i) == Some(&b' ') && is_p(c1) {
        let e = run_p(s, j + n1);
        return run_bytes(s, e, true);
    }
    let (end, crlf_end, last) = ws_run(s, i);
    if crlf_end != 0 {
        return crlf_end; // \s*[\r\n]+
    }
    if end >= s.len() {
        return end; // \s+(?!\S) at the end of the text
    }
    if last > i {
        return last; // \s+(?!\S)
    }
    end // \s+
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_at(b"a", 0), (L | W, 1));
        assert_eq!(class_at(b"A", 0), (L | U, 1));
        assert_eq!(class_at(b"7", 0), (N, 1));
        assert_eq!(class_at(b"\n", 0), (S | CRLF, 1));
        assert_eq!(class_at(b" ", 0), (S, 1));
        assert_eq!(class_at("\u{a0}".as_bytes(), 0), (S, 2));
        assert_eq!(class_at("\u{301}".as_bytes(), 0), (U | W, 2));
        assert_eq!(class_at("\u{1F600}".as_bytes(), 0), (0, 4));
        assert_eq!(class_at(b"", 0), (END, 0));
        assert_eq!(fold_contraction(0x17F), b's');
        assert_eq!(fold_contraction(u32::from('S')), b's');
        assert_eq!(fold_contraction(u32::from('k')), 0);
    }
}
