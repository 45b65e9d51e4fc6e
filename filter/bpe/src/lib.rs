//! Exact tiktoken-compatible BPE token counting for `cl100k_base` and
//! `o200k_base`, fast natively and in wasm (Envoy's V8).
//!
//! * Pre-tokenization is a hand-written scanner that reproduces the two
//!   tiktoken split regexes exactly (leftmost-first alternation with
//!   backtracking semantics), see `src/pretok.rs`.
//! * All tables (ranks, character classes) are generated at build time by
//!   `build.rs` and embedded as static data: there is no runtime construction.
//! * Byte-pair merging follows tiktoken exactly: repeatedly merge the adjacent
//!   pair whose concatenated bytes have the lowest rank, leftmost on ties.
//!
//! [`Encoding::count`] equals `tiktoken encode_ordinary(text).len()` and
//! [`Encoding::encode`] equals `encode_ordinary(text)` (special tokens such as
//! `<|endoftext|>` are treated as ordinary text).

mod bpe;
#[cfg(feature = "memo")]
mod memo;
mod pretok;
mod vocab;

#[allow(dead_code)]
mod hash;

#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

use bpe::{Counter, Sink};
use vocab::Vocab;

/// A tiktoken encoding supported by this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `cl100k_base` (GPT-3.5 / GPT-4 family).
    Cl100kBase,
    /// `o200k_base` (GPT-4o / GPT-4.1 / o-series / GPT-5 family).
    O200kBase,
}

impl Encoding {
    /// All supported encodings.
    pub const ALL: [Encoding; 2] = [Encoding::Cl100kBase, Encoding::O200kBase];

    /// The tiktoken name: `"cl100k_base"` or `"o200k_base"`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
        }
    }

    /// Parses a tiktoken encoding name (exact, case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "cl100k_base" => Some(Encoding::Cl100kBase),
            "o200k_base" => Some(Encoding::O200kBase),
            _ => None,
        }
    }

    /// Number of tokens; equals tiktoken `encode_ordinary(text).len()`.
    pub fn count(self, text: &str) -> usize {
        let mut c = Counter(0);
        self.run(text, &mut c);
        c.0
    }

    /// Token ids; equals tiktoken `encode_ordinary(text)`.
    pub fn encode(self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.run(text, &mut out);
        out
    }

    /// Number of tokens in the vocabulary (excluding special tokens).
    pub fn vocab_size(self) -> usize {
        self.vocab().n_tokens()
    }

    /// Size in bytes of the static tables used by this encoding (hash table,
    /// long-token bytes, pair table; the shared character class tables, about
    /// 40 KB, are not included). They are `static` data: no runtime
    /// construction, no heap allocation.
    pub fn table_bytes(self) -> usize {
        self.vocab().table_bytes()
    }

    fn vocab(self) -> &'static Vocab {
        match self {
            Encoding::Cl100kBase => &vocab::CL100K,
            Encoding::O200kBase => &vocab::O200K,
        }
    }

    fn run<S: Sink>(self, text: &str, sink: &mut S) {
        match self {
            Encoding::Cl100kBase => run::<S, true>(&vocab::CL100K, text.as_bytes(), sink),
            Encoding::O200kBase => run::<S, false>(&vocab::O200K, text.as_bytes(), sink),
        }
    }
}

#[inline(always)]
fn run<S: Sink, const CL100K: bool>(v: &Vocab, s: &[u8], sink: &mut S) {
    let mut i = 0;
    while i < s.len() {
        let e = if CL100K {
            pretok::next_cl100k(s, i)
        } else {
            pretok::next_o200k(s, i)
        };
        // Defensive: the scanner always makes progress, never past the end.
        let e = if e > i { e.min(s.len()) } else { i + 1 };
        let piece = s.get(i..e).unwrap_or_default();
        bpe::encode_piece(v, piece, sink);
        i = e;
    }
}

/// Forgets the calling thread's memo of merged pieces (feature `memo`,
/// enabled by default; a no-op without it). Never needed for correctness:
/// the memo is exact and bounded. Useful to benchmark never-seen text.
pub fn clear_memo() {
    #[cfg(feature = "memo")]
    memo::clear();
}

/// Splits `text` into pre-tokenizer pieces exactly like the encoding's
/// tiktoken regex (`find_iter`). Mostly useful for testing and debugging.
pub fn split(enc: Encoding, text: &str) -> Vec<&str> {
    let s = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let e = match enc {
            Encoding::Cl100kBase => pretok::next_cl100k(s, i),
            Encoding::O200kBase => pretok::next_o200k(s, i),
        };
        let e = if e > i { e.min(s.len()) } else { i + 1 };
        out.push(text.get(i..e).unwrap_or_default());
        i = e;
    }
    out
}
