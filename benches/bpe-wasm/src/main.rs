//! Throughput benchmark: `bpe-wasm-bench CORPUS_DIR [SECONDS_PER_CASE]`.
//!
//! Builds distinct ~2 KB and ~32 KB prompts (windows over a mix of prose in
//! several languages, code, JSON and Markdown from the test corpus), checks
//! that tollgate-bpe and tiktoken-rs agree on every prompt, then reports MB/s
//! of `count()` for each encoding and size.

use std::time::{Duration, Instant};

use tollgate_bpe::Encoding;

/// Prose in many languages, code, JSON, Markdown, emoji, whitespace, digits.
const MIXED: &[&str] = &[
    "en_prose.txt",
    "code_rust.rs.txt",
    "json_api.json",
    "zh.txt",
    "markdown.md",
    "code_python.py.txt",
    "de.txt",
    "ja.txt",
    "code_js.js.txt",
    "fr.txt",
    "ko.txt",
    "html_css.txt",
    "es.txt",
    "ar.txt",
    "code_go_c_sql.txt",
    "ru.txt",
    "hi.txt",
    "contractions.txt",
    "th.txt",
    "digits.txt",
    "vi.txt",
    "emoji.txt",
    "whitespace.txt",
    "mixed_languages.txt",
    "minified_js.txt",
];

/// The common case for LLM API traffic: English prose, code, JSON, Markdown.
const ENGLISH_CODE: &[&str] = &[
    "en_prose.txt",
    "code_rust.rs.txt",
    "json_api.json",
    "markdown.md",
    "code_python.py.txt",
    "code_js.js.txt",
    "html_css.txt",
    "contractions.txt",
    "code_go_c_sql.txt",
    "minified_js.txt",
];

fn read_mix(dir: &str, files: &[&str]) -> String {
    let mut mix = String::new();
    for f in files {
        match std::fs::read_to_string(format!("{dir}/{f}")) {
            Ok(t) => {
                mix.push_str(&t);
                mix.push('\n');
            }
            Err(e) => {
                eprintln!("cannot read {dir}/{f}: {e}");
                std::process::exit(2);
            }
        }
    }
    mix
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `n` distinct prompts of about `size` bytes: windows over the mixed text at
/// different offsets.
fn prompts(mix: &str, size: usize, n: usize) -> Vec<String> {
    let doubled = format!("{mix}{mix}");
    (0..n)
        .map(|k| {
            let start = floor_boundary(&doubled, (k * 7919 * 13) % mix.len());
            let end = floor_boundary(&doubled, start + size);
            doubled[start..end].to_string()
        })
        .collect()
}

/// Runs `f` over all prompts for about `secs` as many short trials; returns
/// the best trial's MB/s (robust against other load on a small machine).
fn measure(prompts: &[String], secs: f64, mut f: impl FnMut(&str) -> usize) -> f64 {
    // Warm-up (lets V8 tier up to optimized code).
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs_f64(secs / 5.0) {
        for p in prompts {
            std::hint::black_box(f(std::hint::black_box(p)));
        }
    }
    let bytes: usize = prompts.iter().map(|p| p.len()).sum();
    let mut best: f64 = 0.0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs_f64(secs) {
        let t = Instant::now();
        let mut rounds = 0usize;
        while rounds == 0 || t.elapsed() < Duration::from_millis(50) {
            for p in prompts {
                std::hint::black_box(f(std::hint::black_box(p)));
            }
            rounds += 1;
        }
        best = best.max((bytes * rounds) as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "filter/bpe/tests/corpus".into());
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let mixed = read_mix(&dir, MIXED);
    let english = read_mix(&dir, ENGLISH_CODE);
    let target = if cfg!(target_family = "wasm") {
        "wasm32-wasip1"
    } else {
        "native"
    };
    println!(
        "target: {target}; memo: {}; corpus: mixed {} bytes, english+code {} bytes",
        if cfg!(feature = "memo") { "on" } else { "off" },
        mixed.len(),
        english.len()
    );
    let sets = [
        ("mixed 2KB", prompts(&mixed, 2 * 1024, 64)),
        ("mixed 32KB", prompts(&mixed, 32 * 1024, 8)),
        ("en+code 2KB", prompts(&english, 2 * 1024, 64)),
        ("en+code 32KB", prompts(&english, 32 * 1024, 8)),
    ];

    for enc in Encoding::ALL {
        let t = Instant::now();
        let n = enc.count("warm up");
        println!(
            "{}: first call {:?} ({n} tokens), tables {} bytes",
            enc.name(),
            t.elapsed(),
            enc.table_bytes()
        );
        #[cfg(feature = "tiktoken")]
        let reference = {
            let t = Instant::now();
            let r = match enc {
                Encoding::Cl100kBase => tiktoken_rs::cl100k_base(),
                Encoding::O200kBase => tiktoken_rs::o200k_base(),
            };
            let Ok(r) = r else {
                eprintln!("tiktoken-rs init failed");
                std::process::exit(2);
            };
            println!("{}: tiktoken-rs construction {:?}", enc.name(), t.elapsed());
            r
        };
        for (label, ps) in &sets {
            #[cfg(feature = "tiktoken")]
            for p in ps {
                let want = reference.encode_ordinary(p);
                if enc.encode(p) != want || enc.count(p) != want.len() {
                    eprintln!("MISMATCH {} on a {label} prompt", enc.name());
                    std::process::exit(1);
                }
            }
            // Memo cleared before each prompt: what a never-seen prompt gets.
            let cold = measure(ps, secs, |p| {
                tollgate_bpe::clear_memo();
                enc.count(p)
            });
            // Memo kept across prompts (they overlap: upper bound for
            // repetitive traffic such as multi-turn conversations).
            let warm = if cfg!(feature = "memo") {
                format!(" (memo warm {:>5.0})", measure(ps, secs, |p| enc.count(p)))
            } else {
                String::new()
            };
            let tokens: usize = ps.iter().map(|p| enc.count(p)).sum();
            let bytes: usize = ps.iter().map(|p| p.len()).sum();
            #[cfg(feature = "tiktoken")]
            let theirs = {
                let t = measure(ps, secs, |p| reference.encode_ordinary(p).len());
                format!("   tiktoken-rs {t:>5.1} MB/s ({:.1}x)", cold / t)
            };
            #[cfg(not(feature = "tiktoken"))]
            let theirs = String::new();
            println!(
                "{:<11} {:>12} x{:<2} ({:.2} B/token): tollgate-bpe {cold:>6.1} MB/s{warm}{theirs}",
                enc.name(),
                label,
                ps.len(),
                bytes as f64 / tokens as f64,
            );
        }
    }
}
