//! Deterministic completion text with an exact token count.
//!
//! Text is built from "units" (a word with its leading space, or a
//! punctuation mark). Every unit is a separate piece for the tiktoken
//! pre-tokeniser of both cl100k_base and o200k_base (ASCII letters only, no
//! apostrophes, punctuation followed by a space), so the token count of the
//! text is the sum of the units' counts; the generator fills an exact budget
//! and the result is re-counted with the real tokenizer anyway.

use super::tokens::Encoding;
use tiktoken_rs::Rank;

/// SplitMix64: a tiny deterministic PRNG.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.get(self.below(items.len())).copied().unwrap_or("the")
    }
}

/// FNV-1a 64-bit hash.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // separator so that ("ab","c") != ("a","bc")
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Default completion length (in tokens) for a seed: 20..=60.
pub fn natural_len(seed: u64) -> usize {
    20 + (Rng::new(seed ^ 0x5eed).next_u64() % 41) as usize
}

const OPENERS: [&str; 12] = [
    "",
    "",
    "",
    "In short,",
    "As a result,",
    "In many cases,",
    "For example,",
    "However,",
    "Today,",
    "Overall,",
    "In practice,",
    "At the same time,",
];
const SUBJECTS: [&str; 16] = [
    "The system",
    "This approach",
    "The model",
    "Our team",
    "The proxy",
    "Each request",
    "The result",
    "A careful review",
    "The new design",
    "This feature",
    "The service",
    "The report",
    "The data",
    "Every user",
    "The network",
    "The simple plan",
];
const VERBS: [&str; 16] = [
    "handles",
    "improves",
    "supports",
    "reduces",
    "describes",
    "tracks",
    "measures",
    "explains",
    "provides",
    "connects",
    "delivers",
    "balances",
    "simplifies",
    "protects",
    "reveals",
    "shapes",
];
const OBJECTS: [&str; 16] = [
    "the incoming traffic",
    "a clear summary",
    "the overall cost",
    "several important details",
    "the main idea",
    "each step of the process",
    "a simple answer",
    "the expected results",
    "the remaining work",
    "a useful example",
    "the key metrics",
    "the original question",
    "most common cases",
    "the final output",
    "the daily budget",
    "a reliable baseline",
];
const TAILS: [&str; 14] = [
    "",
    "",
    "",
    "with great care",
    "in a few seconds",
    "for every customer",
    "without extra effort",
    "across the whole platform",
    "as expected",
    "over time",
    "at a low cost",
    "under heavy load",
    "in every region",
    "during peak hours",
];
/// Single-token words (in both encodings) used to fill an exact budget.
const FILLERS: [&str; 6] = [" now", " too", " again", " here", " today", " well"];
/// Same, to start a sentence.
const SENTENCE_FILLERS: [&str; 4] = [" Yes", " Great", " Indeed", " Thanks"];

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn sentence(rng: &mut Rng) -> String {
    let opener = rng.pick(&OPENERS);
    let subject = rng.pick(&SUBJECTS);
    let verb = rng.pick(&VERBS);
    let object = rng.pick(&OBJECTS);
    let tail = rng.pick(&TAILS);
    let mut s = String::new();
    if opener.is_empty() {
        s.push_str(subject);
    } else {
        s.push_str(opener);
        s.push(' ');
        s.push_str(&lower_first(subject));
    }
    s.push(' ');
    s.push_str(verb);
    s.push(' ');
    s.push_str(object);
    if !tail.is_empty() {
        s.push(' ');
        s.push_str(tail);
    }
    if rng.below(4) == 0 {
        s.push_str(", and ");
        s.push_str(&lower_first(rng.pick(&SUBJECTS)));
        s.push(' ');
        s.push_str(rng.pick(&VERBS));
        s.push(' ');
        s.push_str(rng.pick(&OBJECTS));
    }
    s.push('.');
    s
}

/// Split a sentence into units; `first` = this is the start of the text
/// (no leading space on the first word).
fn units(sentence: &str, first: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (i, word) in sentence.split(' ').enumerate() {
        let core = word.trim_end_matches([',', '.']);
        let punct = &word[core.len()..];
        if !core.is_empty() {
            if i == 0 && first {
                out.push(core.to_string());
            } else {
                out.push(format!(" {core}"));
            }
        }
        for p in punct.chars() {
            out.push(p.to_string());
        }
    }
    out
}

/// Generated text with exactly `budget` tokens (when achievable; the caller
/// always re-counts). With `end_with_period` the text ends with a full stop
/// (budgets of 3 and more); otherwise it stops wherever the budget runs out,
/// possibly mid-word, as a `max_tokens` truncation does.
pub fn generate(enc: Encoding, seed: u64, budget: usize, end_with_period: bool) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::new();
    let mut used = 0usize;
    let period = end_with_period && budget >= 3;
    // tokens that words may use; with `period` the final "." takes the last one
    let word_budget = if period { budget - 1 } else { budget };
    let mut last_is_period = false;
    'outer: while used < word_budget {
        let s = sentence(&mut rng);
        for unit in units(&s, out.is_empty()) {
            if unit == "." || unit == "," {
                if period && unit == "." && used + 1 == budget {
                    out.push('.');
                    used += 1;
                    break 'outer;
                }
                // leave room for at least one word before a final period
                let fits = if period {
                    used + 1 < word_budget
                } else {
                    used < budget
                };
                if !fits {
                    break 'outer;
                }
                out.push_str(&unit);
                used += 1;
                last_is_period = unit == ".";
                continue;
            }
            let remaining = word_budget.saturating_sub(used);
            let c = enc.count(&unit);
            if c <= remaining {
                out.push_str(&unit);
                used += c;
                last_is_period = false;
                continue;
            }
            // this word does not fit
            if !period && remaining > 0 {
                // cut the word at a token boundary, like a max_tokens stop
                let toks = enc.encode(&unit);
                let cut = enc.decode(toks.get(..remaining).unwrap_or(&toks));
                if enc.count(&cut) == remaining {
                    out.push_str(&cut);
                    used += remaining;
                }
            }
            break 'outer;
        }
    }
    // fill what is left with single-token words, then the final period
    while used < word_budget {
        let pool: &[&str] = if last_is_period || out.is_empty() {
            &SENTENCE_FILLERS
        } else {
            &FILLERS
        };
        let filler = pool.get(rng.below(pool.len())).copied().unwrap_or(" and");
        if out.is_empty() {
            out.push_str(filler.trim_start());
        } else {
            out.push_str(filler);
        }
        used += 1;
        last_is_period = false;
    }
    if period && used < budget {
        out.push('.');
    }
    fix_up(enc, out, budget)
}

/// Guarantee the exact budget when the unit arithmetic was off (should not
/// happen): pad with fillers, then cut at the token boundary.
fn fix_up(enc: Encoding, mut text: String, budget: usize) -> String {
    let mut tokens = enc.encode(&text);
    if tokens.len() == budget {
        return text;
    }
    while tokens.len() < budget {
        text.push_str(" and");
        tokens = enc.encode(&text);
    }
    enc.decode(tokens.get(..budget).unwrap_or(&tokens))
}

/// Split tokens into stream pieces of `min..=max` tokens each
/// (deterministic from the seed). Concatenated, the pieces are the text.
pub fn chunk_pieces(
    enc: Encoding,
    tokens: &[Rank],
    seed: u64,
    min: usize,
    max: usize,
) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0xc4u64);
    let min = min.max(1);
    let max = max.max(min);
    let mut pieces = Vec::new();
    let mut rest = tokens;
    while !rest.is_empty() {
        let n = (min + rng.below(max - min + 1)).min(rest.len());
        let (head, tail) = rest.split_at(n);
        pieces.push(enc.decode(head));
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn exact_budgets() {
        for enc in [Encoding::Cl100kBase, Encoding::O200kBase] {
            for seed in 0..8u64 {
                for budget in 0..=130usize {
                    for period in [true, false] {
                        let t = generate(enc, seed * 7919 + budget as u64, budget, period);
                        assert_eq!(
                            enc.count(&t),
                            budget,
                            "{enc:?} {seed} {budget} {period}: {t:?}"
                        );
                        if period && budget >= 3 {
                            assert!(t.ends_with('.'), "{t:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fillers_single_token() {
        for enc in [Encoding::Cl100kBase, Encoding::O200kBase] {
            for f in FILLERS.iter().chain(SENTENCE_FILLERS.iter()) {
                assert_eq!(enc.count(f), 1, "{f}");
                assert_eq!(enc.count(f.trim_start()), 1, "{f}");
            }
        }
    }

    #[test]
    fn deterministic_and_pieces() {
        let enc = Encoding::O200kBase;
        let a = generate(enc, 42, 50, true);
        assert_eq!(a, generate(enc, 42, 50, true));
        assert_ne!(a, generate(enc, 43, 50, true));
        let toks = enc.encode(&a);
        let pieces = chunk_pieces(enc, &toks, 1, 1, 4);
        assert!(pieces.len() >= 50 / 4);
        assert_eq!(pieces.concat(), a);
    }
}
