//! Shared helpers for the differential tests against tiktoken-rs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use fancy_regex::Regex;
use tiktoken_rs::CoreBPE;
use tollgate_bpe::Encoding;

pub const CL100K_PAT: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

pub fn reference(enc: Encoding) -> &'static CoreBPE {
    match enc {
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
    }
}

fn regex(enc: Encoding) -> &'static Regex {
    static CL: OnceLock<Regex> = OnceLock::new();
    static O2: OnceLock<Regex> = OnceLock::new();
    let (cell, pat) = match enc {
        Encoding::Cl100kBase => (&CL, CL100K_PAT),
        Encoding::O200kBase => (&O2, tiktoken_rs::O200K_BASE_PAT_STR),
    };
    cell.get_or_init(|| Regex::new(pat).expect("pattern"))
}

/// The reference split (tiktoken's regex through fancy-regex).
pub fn reference_split(enc: Encoding, text: &str) -> Vec<&str> {
    regex(enc)
        .find_iter(text)
        .map(|m| m.expect("regex").as_str())
        .collect()
}

/// Checks encode() and count() against tiktoken-rs; returns a description of
/// the first mismatch.
pub fn diff(enc: Encoding, text: &str) -> Option<String> {
    let want = reference(enc).encode_ordinary(text);
    let got = enc.encode(text);
    let count = enc.count(text);
    if got == want && count == want.len() {
        return None;
    }
    let ws = reference_split(enc, text);
    let gs = tollgate_bpe::split(enc, text);
    let mut msg = format!(
        "{}: mismatch on {:?}\n  tokens want {} got {} (count {})",
        enc.name(),
        abbreviate(text),
        want.len(),
        got.len(),
        count
    );
    if ws != gs {
        let k = ws.iter().zip(&gs).take_while(|(a, b)| a == b).count();
        msg.push_str(&format!(
            "\n  split differs at piece {k}: want {:?} got {:?}",
            ws.get(k.saturating_sub(1)..(k + 2).min(ws.len())),
            gs.get(k.saturating_sub(1)..(k + 2).min(gs.len()))
        ));
    } else {
        for p in &ws {
            let w = reference(enc).encode_ordinary(p);
            let g = enc.encode(p);
            if w != g {
                msg.push_str(&format!(
                    "\n  piece {:?}: want {w:?} got {g:?}",
                    abbreviate(p)
                ));
                break;
            }
        }
    }
    Some(msg)
}

pub fn abbreviate(s: &str) -> String {
    if s.chars().count() <= 200 {
        return s.to_string();
    }
    let head: String = s.chars().take(100).collect();
    let tail: String = s
        .chars()
        .rev()
        .take(100)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}...({} chars)...{tail}", s.chars().count())
}

/// Asserts exactness for both encodings.
pub fn check_all(text: &str) {
    for enc in Encoding::ALL {
        if let Some(m) = diff(enc, text) {
            panic!("{m}");
        }
    }
}
