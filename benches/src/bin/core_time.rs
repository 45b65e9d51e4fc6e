//! Native per-request cost of the filter core for unique prompts (no memo hits): JSON parsing,
//! UTF-8 validation and token counting, for a quick breakdown. `core_time [SIZE]`
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;
use tollgate_core::count::CountCache;
use tollgate_core::{Api, Config, Encoding};

fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(32768);
    let cfg = Config::from_json(b"").unwrap();
    let dir = tollgate_tests::harness::workspace_root().join("filter/bpe/tests/corpus");
    let corpus: String = [
        "en_prose.txt",
        "code_rust.rs.txt",
        "code_python.py.txt",
        "code_js.js.txt",
        "markdown.md",
        "json_api.json",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
    .collect::<Vec<_>>()
    .join("\n");
    let chars: Vec<char> = corpus.chars().collect();
    let n = 200;
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            let mut t = format!("Request {i}: ");
            let mut j = i * 7919;
            while t.len() < size {
                t.push(chars[j % chars.len()]);
                j += 1;
            }
            serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content": t}]})
                .to_string()
        })
        .collect();
    let time = |name: &str, f: &dyn Fn(&str)| {
        let t = Instant::now();
        for b in &bodies {
            f(b);
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "{name:<28} {us:>8.1} us/request  ({:.0} MB/s)",
            size as f64 / us
        );
    };
    time("utf-8 check", &|b| {
        let _ = std::str::from_utf8(b.as_bytes()).is_ok();
    });
    time("serde_json Value", &|b| {
        let _: serde_json::Value = serde_json::from_str(b).unwrap();
    });
    time("count (o200k)", &|b| {
        let _ = Encoding::O200kBase.count(b);
    });
    let resp = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"This is a short fixed answer from the benchmark upstream.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":500,"completion_tokens":12,"total_tokens":512,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    let stop = Config::from_json(br#"{"stopOnHeaders": true}"#).unwrap();
    let req_headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "llm"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-bench"),
        ("user-agent", "wrk"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let resp_headers: Vec<(String, String)> = [
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", "380"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    time("whole exchange (core)", &|b| {
        let mut cache = CountCache::new(0, 1);
        let mut x = tollgate_core::Exchange::new();
        let _ = x.on_request_headers(&stop, "POST", "/v1/chat/completions", &req_headers, false);
        let _ = x.on_request_body(&stop, &mut cache, b.len(), true, || {
            Some(b.as_bytes().to_vec())
        });
        let _ = x.on_response_headers(&stop, 200, &resp_headers, false);
        let _ = x.on_response_body(resp, true);
        let o = x.take_outcome().unwrap();
        let mut card = tollgate_core::metrics::Cardinality::new(100, 100);
        let _ = o.counters(&mut card);
        let _ = o.properties();
    });
    time("parse + count (filter)", &|b| {
        let mut cache = CountCache::new(0, 1);
        let _ =
            tollgate_core::request::parse(Api::OpenAiChat, b.as_bytes(), &cfg, &mut cache).unwrap();
    });
}
