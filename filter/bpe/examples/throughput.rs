//! Native throughput of `count()` over the test corpus:
//! `cargo run --release -p tollgate-bpe --example throughput [FILTER] [SECONDS]`.
use std::time::{Duration, Instant};

use tollgate_bpe::Encoding;

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let secs: f64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            // FILTER: substring to include, or "!substring" to exclude.
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match filter.strip_prefix('!') {
                Some(x) => !name.contains(x),
                None => name.contains(&filter),
            }
        })
        .filter(|p| !p.to_string_lossy().ends_with("README.md"))
        .collect();
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    if let Some(rounds) = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
    {
        // Fixed work, for instruction-count profiling (cachegrind).
        let enc = match std::env::var("ENC").as_deref() {
            Ok("o200k_base") => Encoding::O200kBase,
            _ => Encoding::Cl100kBase,
        };
        let cold = std::env::var_os("COLD").is_some();
        let mut total = 0;
        for _ in 0..rounds {
            for x in &texts {
                if cold {
                    tollgate_bpe::clear_memo();
                }
                total += enc.count(std::hint::black_box(x));
            }
        }
        println!("{} tokens", total);
        return;
    }
    if std::env::var_os("ADVERSARIAL").is_some() {
        // 1 MB adversarial inputs: one huge piece each (or many tiny ones).
        let mut x: u64 = 0x1234_5678;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b64: String = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(alphabet[(x % 64) as usize])
            })
            .collect();
        let letters: String = b64.chars().filter(|c| c.is_ascii_alphabetic()).collect();
        let inputs = [
            ("base64", b64),
            ("base64 letters only", letters),
            ("'a' x 1M", "a".repeat(1 << 20)),
            ("spaces", " ".repeat(1 << 20)),
            ("CJK no punctuation", "中文字符测试".repeat((1 << 20) / 18)),
            ("emoji", "👍🏽".repeat((1 << 20) / 8)),
        ];
        for (name, text) in &inputs {
            let mut line = format!("{name:<22} {:>8} bytes", text.len());
            for enc in Encoding::ALL {
                let t = Instant::now();
                let n = enc.count(text);
                let el = t.elapsed();
                line.push_str(&format!(
                    "  {}: {n} tokens in {:.1} ms ({:.1} MB/s)",
                    enc.name(),
                    el.as_secs_f64() * 1e3,
                    text.len() as f64 / el.as_secs_f64() / 1e6
                ));
            }
            println!("{line}");
        }
        return;
    }
    if std::env::var_os("PERFILE").is_some() {
        for (p, x) in files.iter().zip(&texts) {
            let mut line = format!(
                "{:<24}",
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            for enc in Encoding::ALL {
                let mut best = f64::MAX;
                for _ in 0..200 {
                    let t = Instant::now();
                    std::hint::black_box(enc.count(std::hint::black_box(x)));
                    best = best.min(t.elapsed().as_secs_f64());
                }
                line.push_str(&format!(
                    " {:>8.1}us {:>6.1}MB/s",
                    best * 1e6,
                    x.len() as f64 / best / 1e6
                ));
            }
            println!("{line}");
        }
        return;
    }
    for enc in Encoding::ALL {
        let tokens: usize = texts.iter().map(|t| enc.count(t)).sum();
        // Best of several short trials (robust against a busy machine).
        let mut mbs: f64 = 0.0;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs_f64(secs) {
            let t = Instant::now();
            let mut rounds = 0;
            while t.elapsed() < Duration::from_millis(20) {
                for x in &texts {
                    std::hint::black_box(enc.count(std::hint::black_box(x)));
                }
                rounds += 1;
            }
            mbs = mbs.max((bytes * rounds) as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        println!(
            "{} {} files {bytes} bytes {tokens} tokens: {mbs:.1} MB/s",
            enc.name(),
            texts.len()
        );
    }
}
