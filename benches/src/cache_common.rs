//! Shared by the response-cache benchmarks (`admit`, `cache_e2e`): the request shape (so both
//! benches, the filter and warmed entries compute the same cache keys), the question pairs,
//! percentiles and process memory.

#![allow(dead_code)] // each bin uses a part

use std::path::Path;

use serde_json::{Value, json};

pub const TENANT: &str = "bench";
pub const MODEL: &str = "gpt-4o-mini";
pub const SYSTEM: &str = "You are a concise assistant.";

/// The chat request body a client sends (`temperature: 0`, so it is cacheable).
pub fn chat_body(question: &str) -> Value {
    json!({"model": MODEL, "temperature": 0, "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question}
    ]})
}

/// Labelled paraphrase pairs (`same: true`) from the semantic data sets: (question, rewording).
pub fn paraphrase_pairs(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for file in ["dev.jsonl", "test.jsonl"] {
        let path = root.join("cache-service/data/pairs").join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["same"] != json!(true) {
                continue;
            }
            let (a, b) = (
                v["a"].as_str().unwrap_or_default().to_string(),
                v["b"].as_str().unwrap_or_default().to_string(),
            );
            if a.is_empty() || b.is_empty() || a == b || !seen.insert(a.clone()) {
                continue;
            }
            out.push((a, b));
        }
    }
    out
}

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(samples_ms: &mut [f64]) -> Summary {
        if samples_ms.is_empty() {
            return Summary::default();
        }
        samples_ms.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let i = ((samples_ms.len() as f64 - 1.0) * p).round() as usize;
            samples_ms[i.min(samples_ms.len() - 1)]
        };
        Summary {
            n: samples_ms.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            max: samples_ms[samples_ms.len() - 1],
            mean: samples_ms.iter().sum::<f64>() / samples_ms.len() as f64,
        }
    }

    pub fn json(&self) -> Value {
        json!({"n": self.n, "p50": self.p50, "p90": self.p90, "p99": self.p99,
               "max": self.max, "mean": self.mean})
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

pub fn rss_mib() -> f64 {
    proc_status_kib("VmRSS") as f64 / 1024.0
}

pub fn peak_rss_mib() -> f64 {
    proc_status_kib("VmHWM") as f64 / 1024.0
}

/// `uptime`'s load averages (1, 5, 15 min).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
