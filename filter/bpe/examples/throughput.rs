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
