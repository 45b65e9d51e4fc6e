//! Deterministic randomized differential test against tiktoken-rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use tollgate_bpe::Encoding;

/// xorshift64* — tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 33) as usize % n
    }
    fn pick<'a>(&mut self, v: &'a [&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

const ASCII_LOWER: &[&str] = &[
    "a", "b", "c", "e", "h", "i", "n", "o", "q", "x", "z", "the", "ing", "hello", "world",
];
const ASCII_UPPER: &[&str] = &[
    "A", "B", "E", "I", "O", "Q", "X", "Z", "THE", "Hello", "HTTP", "McD",
];
const DIGITS: &[&str] = &["0", "1", "7", "42", "123", "2024", "31415926535", "00"];
const PUNCT: &[&str] = &[
    ".",
    ",",
    "!",
    "?",
    ";",
    ":",
    "-",
    "_",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    "/",
    "\\",
    "\"",
    "#",
    "$",
    "%",
    "&",
    "*",
    "+",
    "=",
    "@",
    "^",
    "`",
    "|",
    "~",
    "...",
    "//",
    "/*",
    "*/",
    "->",
    "=>",
    "<|endoftext|>",
    "<|fim_prefix|>",
];
const SPACE: &[&str] = &[
    " ", " ", " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\t\n", "\n ", "\u{b}",
    "\u{c}",
];
const CONTRACTION: &[&str] = &[
    "'", "'", "'s", "'S", "'t", "'T", "'d", "'D", "'m", "'M", "'ll", "'LL", "'lL", "'ve", "'VE",
    "'vE", "'re", "'RE", "'Re", "'ſ", "s", "S", "ſ", "t", "d", "m", "l", "L", "v", "V", "r", "e",
    "E", "K", "\u{212a}", "'k", "''", "’s", "'ſt",
];
const MARKS: &[&str] = &[
    "\u{301}",
    "\u{308}",
    "\u{327}",
    "\u{20d7}",
    "\u{e31}",
    "\u{93e}",
    "\u{94d}",
    "\u{fe0f}",
    "\u{fe0e}",
    "\u{1ab0}",
    "\u{1f3fb}",
    "\u{302}\u{303}",
];
const LM: &[&str] = &[
    "\u{2b0}", "\u{2c6}", "\u{3005}", "\u{ff70}", "\u{1d2c}", "\u{a67f}",
];
const LO: &[&str] = &[
    "\u{5d0}", "\u{627}", "\u{4e2d}", "\u{6587}", "\u{3042}", "\u{30ab}", "\u{ac00}", "\u{e01}",
    "\u{905}", "\u{1200}", "\u{aa}", "\u{ba}", "\u{1c4}",
];
const LT: &[&str] = &[
    "\u{1c5}", "\u{1c8}", "\u{1cb}", "\u{1f2}", "\u{1f88}", "\u{1ffc}",
];
const LU: &[&str] = &[
    "\u{c0}",
    "\u{3a3}",
    "\u{414}",
    "\u{10a0}",
    "\u{1e9e}",
    "\u{130}",
    "\u{ff21}",
    "\u{1d400}",
];
const LL: &[&str] = &[
    "\u{e9}",
    "\u{3c3}",
    "\u{3c2}",
    "\u{434}",
    "\u{df}",
    "\u{fb00}",
    "\u{131}",
    "\u{ff41}",
    "\u{1d41a}",
    "\u{101}",
    "\u{1e9b}",
];
const SCRIPTS: &[&str] = &[
    "Grüße",
    "français",
    "España",
    "Привет",
    "мир",
    "中文字符",
    "日本語のテキスト",
    "한국어",
    "مرحبا",
    "नमस्ते",
    "ภาษาไทย",
    "Tiếng Việt",
    "Ελληνικά",
    "עברית",
    "ქართული",
    "Ꭰ",
];
const USPACE: &[&str] = &[
    "\u{a0}",
    "\u{2003}",
    "\u{3000}",
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\u{1680}",
    "\u{202f}",
    "\u{205f}",
    "\u{180e}",
    "\u{200b}",
    "\u{2009}",
    "\u{a0}\u{a0}",
];
const NUMBERS: &[&str] = &[
    "\u{663}",
    "\u{bd}",
    "\u{216b}",
    "\u{b2}",
    "\u{1d7d9}",
    "\u{ff13}",
    "\u{96f6}",
    "\u{2460}",
];
const EMOJI: &[&str] = &[
    "😀",
    "👍🏽",
    "👨‍👩‍👧",
    "🇺🇸",
    "❤️",
    "🏳️‍🌈",
    "🤷🏻‍♀️",
    "✅",
    "🚀",
    "\u{200d}",
    "©",
    "€",
    "∑",
    "“",
    "”",
    "’",
    "—",
    "…",
];
const ODD: &[&str] = &[
    "\u{378}",
    "\u{e000}",
    "\u{f8ff}",
    "\u{10ffff}",
    "\u{fffd}",
    "\u{fffe}",
    "\u{1}",
    "\u{7f}",
    "\u{80}",
    "\u{ad}",
    "\u{e0001}",
    "\u{d7ff}",
    "\u{f0000}",
];

const POOLS: &[(&[&str], u32)] = &[
    (ASCII_LOWER, 20),
    (ASCII_UPPER, 8),
    (DIGITS, 6),
    (PUNCT, 8),
    (SPACE, 14),
    (CONTRACTION, 10),
    (MARKS, 5),
    (LM, 3),
    (LO, 4),
    (LT, 2),
    (LU, 3),
    (LL, 3),
    (SCRIPTS, 4),
    (USPACE, 5),
    (NUMBERS, 3),
    (EMOJI, 4),
    (ODD, 2),
];

fn make(rng: &mut Rng) -> String {
    let total: u32 = POOLS.iter().map(|p| p.1).sum();
    let items = 1 + rng.below(24);
    let mut s = String::new();
    for _ in 0..items {
        let mut x = rng.below(total as usize) as u32;
        let mut pool = POOLS[0].0;
        for &(p, w) in POOLS {
            if x < w {
                pool = p;
                break;
            }
            x -= w;
        }
        let item = rng.pick(pool);
        // Occasionally repeat an item to create long runs.
        let reps = if rng.below(10) == 0 {
            1 + rng.below(12)
        } else {
            1
        };
        for _ in 0..reps {
            s.push_str(item);
        }
    }
    s
}

#[test]
fn random_strings_match_tiktoken() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut failures = Vec::new();
    for case in 0..6000 {
        let s = make(&mut rng);
        for enc in Encoding::ALL {
            if let Some(m) = common::diff(enc, &s) {
                failures.push(format!("case {case}: {m}"));
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_splits_match_regex() {
    // Splits only (cheap), many more cases.
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut failures = Vec::new();
    for case in 0..20000 {
        let s = make(&mut rng);
        for enc in Encoding::ALL {
            let want = common::reference_split(enc, &s);
            let got = tollgate_bpe::split(enc, &s);
            if want != got {
                failures.push(format!(
                    "case {case} {}: {s:?}\n  want {want:?}\n  got  {got:?}",
                    enc.name()
                ));
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Random byte-level-ish strings of single random code points from all planes.
#[test]
fn random_code_points_match_tiktoken() {
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let mut failures = Vec::new();
    for case in 0..3000 {
        let n = 1 + rng.below(12);
        let mut s = String::new();
        for _ in 0..n {
            let cp = match rng.below(4) {
                0 => rng.below(0x80) as u32,
                1 => rng.below(0x800) as u32,
                2 => rng.below(0x10000) as u32,
                _ => rng.below(0x110000) as u32,
            };
            if let Some(c) = char::from_u32(cp) {
                s.push(c);
            }
        }
        for enc in Encoding::ALL {
            if let Some(m) = common::diff(enc, &s) {
                failures.push(format!("case {case}: {m}"));
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Long randomized run (not part of the default suite):
/// `RANDOM_CASES=200000 cargo test --release -p tollgate-bpe --test random -- --ignored`.
#[test]
#[ignore]
fn random_strings_long_run() {
    let cases: usize = std::env::var("RANDOM_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC0FF_EE00_D15E_A5E5);
    let mut rng = Rng(seed | 1);
    let mut failures = Vec::new();
    for case in 0..cases {
        // Concatenate a few generated strings to get longer inputs too.
        let mut s = make(&mut rng);
        for _ in 0..rng.below(4) {
            s.push_str(&make(&mut rng));
        }
        for enc in Encoding::ALL {
            if let Some(m) = common::diff(enc, &s) {
                failures.push(format!("case {case}: {m}"));
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
