//! The filter core's work for one request, phase by phase, over distinct prompts shaped like the
//! load benchmark's (`benches/src/bin/load.rs`): a system turn and a ~2 KB or ~32 KB user turn
//! of the tokenizer corpus, each prompt unique. Optionally sweeps `SWEEP_KB` KiB of memory between
//! requests, as Envoy's own work does to the caches between two requests of a worker.
//!
//! `core-wasm-bench CORPUS_DIR [SIZE] [SWEEP_KB]`
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;

use tollgate_core::count::CountCache;
use tollgate_core::metrics::Cardinality;
use tollgate_core::{Config, Encoding, Exchange};

const FILES: [&str; 6] = [
    "en_prose.txt",
    "code_rust.rs.txt",
    "code_python.py.txt",
    "code_js.js.txt",
    "markdown.md",
    "json_api.json",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .expect("usage: core-wasm-bench CORPUS_DIR [SIZE] [SWEEP_KB]");
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2048);
    let sweep_kb: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let corpus: String = FILES
        .iter()
        .map(|f| std::fs::read_to_string(format!("{dir}/{f}")).expect("corpus file"))
        .collect::<Vec<_>>()
        .join("\n\n");
    let chars: Vec<char> = corpus.chars().collect();
    let n = 200;
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            let mut text = format!("Request {i}: please review the following material.\n");
            let mut j = (i * 7919) % chars.len();
            while text.len() < size.saturating_sub(120) {
                text.push(chars[j % chars.len()]);
                j += 1;
            }
            serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 64, "messages": [
                {"role": "system", "content": "You are a reviewer."},
                {"role": "user", "content": text}]})
            .to_string()
        })
        .collect();
    let cfg = Config::from_json(br#"{"metrics": {"flushIntervalMs": 1000}}"#).unwrap();
    let owned = |h: &[(&str, &str)]| -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let req_headers = owned(&[
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "llm"),
        ("content-type", "application/json"),
        ("x-tollgate-tenant", "bench"),
    ]);
    let resp_headers = owned(&[
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", "380"),
    ]);
    let resp = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"This is a short fixed answer from the benchmark upstream.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":500,"completion_tokens":12,"total_tokens":512,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    let mut sweep = vec![0u8; sweep_kb * 1024];
    let mut cache = CountCache::new(16 * 1024, 1);
    let mut card = Cardinality::new(100, 100);
    // Phases: request headers, request body (parse, count, govern), response headers, response
    // body (usage), outcome (counters, log line); then the count of the body alone.
    let mut ns = [0f64; 6];
    let rounds = 10;
    for round in 0..=rounds {
        for b in &bodies {
            for i in (0..sweep.len()).step_by(64) {
                sweep[i] = sweep[i].wrapping_add(1);
            }
            // Every request unique, as in the load benchmark.
            let body = b.replacen("Request ", &format!("Request {round}."), 1);
            let t0 = Instant::now();
            let mut x = Exchange::new();
            let _ = x.on_request_headers(&cfg, "POST", "/v1/chat/completions", &req_headers, false);
            let t1 = Instant::now();
            let _ = x.on_request_body(&cfg, &mut cache, body.len(), true, || {
                Some(body.as_bytes().to_vec())
            });
            let t2 = Instant::now();
            let _ = x.on_response_headers(&cfg, 200, &resp_headers, false);
            let t3 = Instant::now();
            let _ = x.on_response_body(resp, true);
            let t4 = Instant::now();
            let o = x.take_outcome().expect("an outcome");
            let mut k = 0;
            o.each_counter(&mut card, |_, _, _| k += 1);
            let line = o.log_line();
            let t5 = Instant::now();
            let tokens = Encoding::O200kBase.count(&body);
            let t6 = Instant::now();
            std::hint::black_box((k, line, tokens));
            if round == 0 {
                continue; // warm-up
            }
            for (i, (a, z)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)]
                .iter()
                .enumerate()
            {
                ns[i] += (*z - *a).as_secs_f64() * 1e9;
            }
        }
    }
    let per = |x: f64| x / 1e3 / (rounds * n) as f64;
    let total: f64 = ns[..5].iter().sum();
    println!(
        "size {size} B, sweep {sweep_kb} KiB: whole exchange {:.2} us (request headers {:.2}, \
         request body {:.2}, response headers {:.2}, response body {:.2}, outcome {:.2}); \
         counting the body alone {:.2} us",
        per(total),
        per(ns[0]),
        per(ns[1]),
        per(ns[2]),
        per(ns[3]),
        per(ns[4]),
        per(ns[5]),
    );
}
