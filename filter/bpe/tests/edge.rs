//! Edge cases: empty input, every single character, very long inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use tollgate_bpe::Encoding;

#[test]
fn api_basics() {
    for enc in Encoding::ALL {
        assert_eq!(Encoding::from_name(enc.name()), Some(enc));
        assert_eq!(enc.count(""), 0);
        assert!(enc.encode("").is_empty());
    }
    assert_eq!(Encoding::from_name("p50k_base"), None);
    assert_eq!(Encoding::from_name("CL100K_BASE"), None);
    assert_eq!(Encoding::Cl100kBase.vocab_size(), 100_256);
    assert_eq!(Encoding::O200kBase.vocab_size(), 199_998);
    assert_eq!(
        Encoding::Cl100kBase.encode("hello world"),
        vec![15339, 1917]
    );
    assert_eq!(Encoding::O200kBase.encode("hello world"), vec![24912, 2375]);
    // Special tokens are ordinary text.
    common::check_all("<|endoftext|>");
    common::check_all("a<|endofprompt|>b<|fim_prefix|>");
    for enc in Encoding::ALL {
        assert!(enc.count("<|endoftext|>") > 1);
        for id in enc.encode("Hello, wörld! 你好") {
            assert!((id as usize) < enc.vocab_size());
        }
        assert!(enc.table_bytes() < 10 << 20);
    }
}

#[test]
fn every_single_char_matches() {
    let mut failures = Vec::new();
    let cps = (0..0x3400u32)
        .chain((0x3400..0x11_0000).step_by(97))
        .chain([0xFFFD, 0xFEFF, 0x10FFFF, 0xE0001]);
    for cp in cps {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let s = c.to_string();
        // Alone, and in a context that exercises the prefix/suffix rules.
        for t in [
            s.clone(),
            format!(" {s}{s}a'S"),
            format!("a{s}\n"),
            format!("A{s}{s}b"),
        ] {
            for enc in Encoding::ALL {
                if let Some(m) = common::diff(enc, &t) {
                    failures.push(m);
                }
            }
        }
        if failures.len() > 10 {
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn timed(enc: Encoding, s: &str, limit: Duration) -> usize {
    let t = Instant::now();
    let n = enc.count(s);
    let el = t.elapsed();
    assert!(el < limit, "{}: {} bytes took {el:?}", enc.name(), s.len());
    n
}

/// Very long inputs must finish fast (no quadratic behavior), and still match.
/// 1 MB each with `--release`; 256 KB in unoptimized builds (plus one 1 MB
/// input), which still exposes any quadratic blowup.
#[test]
fn long_inputs() {
    let mb = if cfg!(debug_assertions) {
        1 << 18
    } else {
        1 << 20
    };
    // Pseudo-random base64 without spaces or newlines.
    let mut x: u64 = 0x1234_5678;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b64: String = (0..mb)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(alphabet[(x % 64) as usize])
        })
        .collect();
    let letters_only: String = b64.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    let one_mb: String = b64.chars().cycle().take(1 << 20).collect();
    let inputs = [
        ("base64-1MB", one_mb),
        ("a*1M", "a".repeat(mb)),
        ("base64", b64),
        ("letters", letters_only),
        ("spaces", " ".repeat(mb)),
        ("newlines", "\n".repeat(mb)),
        ("crlf-spaces", " \r\n ".repeat(mb / 4)),
        ("digits", "7".repeat(mb)),
        ("cjk", "中文字符测试".repeat(mb / 18)),
        ("marks", format!("x{}", "\u{301}".repeat(mb / 2))),
        ("emoji", "👍🏽".repeat(mb / 8)),
        ("punct", "!@#$%^&*()".repeat(mb / 10)),
        ("upper-lower", "ÀÀÀÀÀǅǅǅ中中A".repeat(mb / 24)),
    ];
    // Debug builds are slow; the bound only catches quadratic blowups.
    let limit = Duration::from_secs(if cfg!(debug_assertions) { 20 } else { 2 });
    for (name, s) in &inputs {
        for enc in Encoding::ALL {
            let n = timed(enc, s, limit);
            // Compare with tiktoken on a prefix (tiktoken is slow on some of these).
            let mut cut = 64 * 1024;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let prefix = &s[..cut];
            let want = common::reference(enc).encode_ordinary(prefix);
            assert_eq!(enc.encode(prefix), want, "{name} {}", enc.name());
            assert!(n > 0, "{name}");
        }
    }
}

/// A 1 MB realistic prompt (the corpus repeated) matches tiktoken.
#[test]
fn megabyte_corpus_prompt() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut text = String::new();
    for f in [
        "en_prose.txt",
        "code_rust.rs.txt",
        "json_api.json",
        "zh.txt",
        "markdown.md",
        "ru.txt",
    ] {
        text.push_str(&std::fs::read_to_string(dir.join(f)).unwrap());
    }
    let mut big = String::new();
    while big.len() < 1 << 20 {
        big.push_str(&text);
    }
    for enc in Encoding::ALL {
        let n = timed(enc, &big, Duration::from_secs(10));
        assert_eq!(
            n,
            common::reference(enc).encode_ordinary(&big).len(),
            "{}",
            enc.name()
        );
    }
}

/// Many threads counting at once (each has its own memo) agree with encode().
#[test]
fn concurrent_counting() {
    let words: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                " Donaudampf{i}schiff слово{} 日本語{} naïveté'S",
                i % 97,
                i % 13
            )
        })
        .collect();
    let text = words.concat();
    let expect: Vec<usize> = Encoding::ALL
        .iter()
        .map(|e| e.encode(&text).len())
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (text, expect) = (&text, &expect);
            s.spawn(move || {
                for round in 0..3 {
                    if (t + round) % 2 == 0 {
                        tollgate_bpe::clear_memo();
                    }
                    for (enc, want) in Encoding::ALL.iter().zip(expect) {
                        assert_eq!(enc.count(text), *want);
                    }
                }
            });
        }
    });
    // Same as the reference.
    for (enc, want) in Encoding::ALL.iter().zip(&expect) {
        assert_eq!(common::reference(*enc).encode_ordinary(&text).len(), *want);
    }
}

/// The cache of recently seen short tokens (4,096 slots shared by both encodings) stays exact
/// when the same pieces alternate between encodings, when far more distinct pieces than slots
/// evict each other, and for pieces that differ only in length or trailing bytes.
#[test]
fn hot_token_cache_stays_exact() {
    // Thousands of distinct 3-8 byte words (more than the cache has slots), twice over.
    let words: Vec<String> = (0..12_000u32)
        .map(|i| {
            let s: String = format!("{i:x}")
                .chars()
                .map(|c| char::from(b'a' + (c.to_digit(16).unwrap_or(0) as u8 % 26)))
                .collect();
            format!(" {s}")
        })
        .collect();
    let text = words.concat();
    let twice = format!("{text}{text}");
    // Same bytes up to a length: "abc", "abc\0", "abcd"… and pieces that pack alike.
    let near = " abc abc\u{0} abcd ab\u{0}c the the\u{0} theme them\u{0}\u{0} thé thee ".repeat(50);
    for round in 0..3 {
        for text in [&twice, &near, &text] {
            for enc in Encoding::ALL {
                if let Some(m) = common::diff(enc, text) {
                    panic!("round {round}: {m}");
                }
            }
        }
    }
}
