//! Savings from complexity routing: replays the held-out labelled prompts
//! (`cache-service/data/complexity/test.jsonl`: HumanEval, GSM8K, FAQ questions and
//! project-written prompts, each labelled simple or complex) through the real Envoy with the real
//! filter (`.wasm`) in front of the simulated provider, every request asking for `gpt-4o`:
//!
//! - **A, no routing**: everything is answered by gpt-4o;
//! - **B, routing**: the demo policy's rule (gpt-4o with at most `--max-prompt-tokens` prompt
//!   tokens and a heuristic complexity below `--below` goes to gpt-4o-mini), decided by the filter;
//! - **C, all mini**: a rule sending every gpt-4o request to gpt-4o-mini (the price of each prompt
//!   on the small model, to cost other policies without another run).
//!
//! Costs are the filter's own `x-tollgate-cost-usd`, the model the one in `x-tollgate-model`.
//! The simulator's answers are synthetic, so their length is fixed per label with
//! `x-sim-completion-tokens` (`--simple-tokens`, `--complex-tokens`): identical in every run, so
//! the runs differ only by the model (and its price) that answered.
//!
//! From A and C it also costs, offline, two policies the filter cannot apply by itself yet: the
//! cache service's learned classifier (same prompt-token limit, score below its suggested
//! threshold; needs the ONNX model from `make setup`, skipped with `--no-learned`) and an oracle
//! that routes exactly the prompts labelled simple.
//!
//! Usage: savings [--simple-tokens 150] [--complex-tokens 600] [--max-prompt-tokens 300]
//!                [--below 0.3] [--no-learned] [--out benches/results/savings.md]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};
use tollgate_cache_service::complexity::{
    Classifier, DEFAULT_EXAMPLES, DEFAULT_K, Example, Label, SUGGESTED_THRESHOLD, parse_examples,
};
use tollgate_cache_service::embed::{Embedder, OnnxConfig, OnnxEmbedder};
use tollgate_tests::cache::{CacheOptions, CacheService};
use tollgate_tests::harness::{Envoy, EnvoyOptions, workspace_root};
use tollgate_tests::sim::{self, SimConfig};

struct Args {
    simple_tokens: u64,
    complex_tokens: u64,
    max_prompt_tokens: u64,
    below: f64,
    learned: bool,
    out: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        simple_tokens: 150,
        complex_tokens: 600,
        max_prompt_tokens: 300,
        below: 0.3,
        learned: true,
        out: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--simple-tokens" => a.simple_tokens = v.parse().unwrap(),
            "--complex-tokens" => a.complex_tokens = v.parse().unwrap(),
            "--max-prompt-tokens" => a.max_prompt_tokens = v.parse().unwrap(),
            "--below" => a.below = v.parse().unwrap(),
            "--out" => a.out = Some(PathBuf::from(v)),
            "--no-learned" => {
                a.learned = false;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// One answered request.
#[derive(Clone, Debug)]
struct Answer {
    model: String,
    cost: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// Replays every prompt once through a fresh Envoy with `config` (and the cache service at
/// `cache`, asked neither to look up nor to store: `cache-control: no-cache, no-store`).
async fn replay(
    config: Value,
    prompts: &[Example],
    a: &Args,
    cache: Option<std::net::SocketAddr>,
) -> Vec<Answer> {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let mut opts = EnvoyOptions::new(sim.addr, true).config(config);
    opts.log_level = "warning";
    if let Some(addr) = cache {
        opts.cache = addr;
    }
    let envoy = Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let client = reqwest::Client::new();
    let mut out = Vec::with_capacity(prompts.len());
    for e in prompts {
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "user", "content": e.prompt}]});
        let tokens = match e.label {
            Label::Simple => a.simple_tokens,
            Label::Complex => a.complex_tokens,
        };
        let r = client
            .post(envoy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-tollgate-tenant", "bench")
            .header("x-sim-completion-tokens", tokens.to_string())
            .header("cache-control", "no-cache, no-store")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let h = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let status = r.status().as_u16();
        let (model, cost) = (h("x-tollgate-model"), h("x-tollgate-cost-usd"));
        let (pt, ct) = (
            h("x-tollgate-prompt-tokens"),
            h("x-tollgate-completion-tokens"),
        );
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        out.push(Answer {
            model,
            cost: cost
                .parse()
                .unwrap_or_else(|_| panic!("x-tollgate-cost-usd {cost:?}")),
            prompt_tokens: pt.parse().unwrap_or(0),
            completion_tokens: ct.parse().unwrap_or(0),
        });
    }
    out
}

/// What one policy did: which prompts it routed down, and its cost (from the runs A and C).
struct Outcome {
    name: String,
    routed: Vec<bool>,
    cost: f64,
}

impl Outcome {
    fn of(name: &str, routed: Vec<bool>, big: &[Answer], small: &[Answer]) -> Outcome {
        let cost = routed
            .iter()
            .zip(big.iter().zip(small))
            .map(|(&r, (b, s))| if r { s.cost } else { b.cost })
            .sum();
        Outcome {
            name: name.to_string(),
            routed,
            cost,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let root = workspace_root();
    let test_path = root.join("cache-service/data/complexity/test.jsonl");
    let prompts =
        parse_examples(&std::fs::read_to_string(&test_path).unwrap()).unwrap_or_else(|e| {
            panic!("{}: {e}", test_path.display());
        });
    let complex: Vec<bool> = prompts.iter().map(|e| e.label == Label::Complex).collect();
    let started = Instant::now();

    let rule = json!({"name": "short-simple-to-mini",
        "match": {"models": ["gpt-4o"], "maxPromptTokens": a.max_prompt_tokens,
                  "complexityBelow": a.below},
        "model": "gpt-4o-mini"});
    let none = replay(json!({}), &prompts, &a, None).await;
    let routed = replay(json!({"routing": {"rules": [rule]}}), &prompts, &a, None).await;
    let all_mini = replay(
        json!({"routing": {"rules": [{"name": "all-mini", "match": {"models": ["gpt-4o"]},
            "model": "gpt-4o-mini"}]}}),
        &prompts,
        &a,
        None,
    )
    .await;
    // D: the same rule on the cache service's learned score (the filter asks on admit).
    let learned_run = if a.learned {
        let service = tokio::task::spawn_blocking(|| {
            CacheService::start(&CacheOptions {
                config: json!({"complexity": {"trainAtStart": true}}),
                ..CacheOptions::default()
            })
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}: run `make setup`, or pass --no-learned"));
        let deadline = Instant::now() + std::time::Duration::from_secs(300);
        while service.state.engine.complexity().is_none() {
            assert!(Instant::now() < deadline, "classifier not trained in 300 s");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let learned_rule = json!({"name": "learned-simple-to-mini",
            "match": {"models": ["gpt-4o"], "maxPromptTokens": a.max_prompt_tokens,
                      "complexityBelow": SUGGESTED_THRESHOLD},
            "model": "gpt-4o-mini"});
        let run = replay(
            json!({"cache": {"cluster": "tollgate_cache", "timeoutMs": 2000},
                   "routing": {"complexitySource": "service", "rules": [learned_rule]}}),
            &prompts,
            &a,
            Some(service.addr),
        )
        .await;
        let m = service.metrics();
        let scored: f64 = m
            .lines()
            .filter(|l| l.starts_with("tollgate_complexity_scores_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        Some((run, scored as usize))
    } else {
        None
    };
    let replay_s = started.elapsed().as_secs_f64();

    // Consistency: the same prompts and answer lengths in every run; B's cost per prompt is A's
    // or C's, as its model says.
    let check = |run: &[Answer]| {
        for (i, ((x, y), z)) in none.iter().zip(run).zip(&all_mini).enumerate() {
            assert_eq!(x.model, "gpt-4o", "prompt {i}");
            assert_eq!(z.model, "gpt-4o-mini", "prompt {i}");
            assert_eq!(x.prompt_tokens, z.prompt_tokens, "prompt {i}");
            assert_eq!(x.completion_tokens, z.completion_tokens, "prompt {i}");
            let expect = if y.model == "gpt-4o-mini" {
                z.cost
            } else {
                x.cost
            };
            assert!((y.cost - expect).abs() < 1e-9, "prompt {i}: {y:?}");
        }
    };
    check(&routed);
    if let Some((run, _)) = &learned_run {
        check(run);
    }

    let mut policies = vec![Outcome {
        name: format!(
            "heuristic in the filter (≤ {} prompt tokens, score < {})",
            a.max_prompt_tokens, a.below
        ),
        routed: routed.iter().map(|r| r.model == "gpt-4o-mini").collect(),
        cost: routed.iter().map(|r| r.cost).sum(),
    }];
    let mut scored_note = String::new();
    if let Some((run, scored)) = &learned_run {
        policies.push(Outcome {
            name: format!(
                "learned classifier in the cache service, asked by the filter (≤ {} prompt \
                 tokens, score < {SUGGESTED_THRESHOLD}; run D)",
                a.max_prompt_tokens
            ),
            routed: run.iter().map(|r| r.model == "gpt-4o-mini").collect(),
            cost: run.iter().map(|r| r.cost).sum(),
        });
        scored_note = format!(
            " In run D the service returned a learned score for {scored} of the {} requests.",
            prompts.len()
        );
    }
    let short: Vec<bool> = none
        .iter()
        .map(|r| r.prompt_tokens <= a.max_prompt_tokens)
        .collect();
    let mut learned_note = String::from("not run (`--no-learned`)");
    if a.learned {
        let t = Instant::now();
        let model = OnnxEmbedder::load(&OnnxConfig {
            intra_threads: 2,
            ..OnnxConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}: run `make setup`, or pass --no-learned"));
        let train = parse_examples(DEFAULT_EXAMPLES).unwrap();
        let clf = Classifier::train(&model, &train, DEFAULT_K, "builtin").unwrap();
        let scores: Vec<f32> = prompts
            .iter()
            .map(|e| {
                let v = model.embed_batch(&[e.prompt.as_str()]).unwrap();
                clf.score(&v[0]).unwrap()
            })
            .collect();
        learned_note = format!(
            "k = {DEFAULT_K}, threshold {SUGGESTED_THRESHOLD}, trained on the {} shipped examples \
             (none of the replayed prompts) in {:.1} s",
            train.len(),
            t.elapsed().as_secs_f64()
        );
        for threshold in [SUGGESTED_THRESHOLD, 0.5] {
            let routed_down = short
                .iter()
                .zip(&scores)
                .map(|(&s, &c)| s && c < threshold)
                .collect();
            policies.push(Outcome::of(
                &format!(
                    "learned classifier (≤ {} prompt tokens, score < {threshold}), costed offline",
                    a.max_prompt_tokens
                ),
                routed_down,
                &none,
                &all_mini,
            ));
        }
    }
    policies.push(Outcome::of(
        "oracle: exactly the prompts labelled simple, costed offline",
        complex.iter().map(|c| !c).collect(),
        &none,
        &all_mini,
    ));

    let base: f64 = none.iter().map(|r| r.cost).sum();
    let mini: f64 = all_mini.iter().map(|r| r.cost).sum();
    let n = prompts.len();
    let n_complex = complex.iter().filter(|c| **c).count();
    let n_simple = n - n_complex;

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Savings from complexity routing\n\n`cargo run --release -p tollgate-benches --bin \
         savings` ({}). Replay of the {n} held-out prompts of \
         `cache-service/data/complexity/test.jsonl` ({n_complex} labelled complex, {n_simple} \
         simple; sources and licences in its README), each once, one at a time, every request \
         asking for `gpt-4o`, through the real Envoy and the filter's `.wasm` to the simulated \
         provider. Costs are the filter's `x-tollgate-cost-usd` at its built-in prices; the \
         simulator's answers are synthetic, so their length was fixed by label with \
         `x-sim-completion-tokens`: {} tokens for a simple prompt, {} for a complex one, the same \
         in every run. Replays took {replay_s:.0} s.\n",
        chrono_free_now(),
        a.simple_tokens,
        a.complex_tokens
    );
    let _ = writeln!(
        md,
        "| run | cost (USD) | vs gpt-4o for all |\n|---|---:|---:|\n| A: no routing (gpt-4o for \
         all) | {base:.4} | — |\n| C: gpt-4o-mini for all | {mini:.4} | −{:.1}% |",
        100.0 * (1.0 - mini / base)
    );
    let _ = writeln!(
        md,
        "\n| policy | cost (USD) | saved vs A | routed down | complex prompts routed down \
         (quality risk) | simple prompts kept on gpt-4o (missed savings) |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for p in &policies {
        let down = p.routed.iter().filter(|r| **r).count();
        let risky = p
            .routed
            .iter()
            .zip(&complex)
            .filter(|(r, c)| **r && **c)
            .count();
        let missed = p
            .routed
            .iter()
            .zip(&complex)
            .filter(|(r, c)| !**r && !**c)
            .count();
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.1}% | {down}/{n} ({:.0}%) | {risky}/{n_complex} | {missed}/{n_simple} |",
            p.name,
            p.cost,
            100.0 * (1.0 - p.cost / base),
            100.0 * down as f64 / n as f64
        );
    }
    // By source, for the filter's heuristic (the policy that ran through Envoy).
    let mut by_source: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (((e, r), &c), ans) in prompts
        .iter()
        .zip(&policies[0].routed)
        .zip(&complex)
        .zip(&none)
    {
        let src = e.source.split(':').next().unwrap_or("").to_string();
        let slot = by_source.entry(format!("{src} ({})", if c { "complex" } else { "simple" }));
        let s = slot.or_default();
        s.0 += 1;
        if *r {
            s.1 += 1;
        }
        if ans.prompt_tokens > a.max_prompt_tokens {
            s.2 += 1;
        }
    }
    let _ = writeln!(
        md,
        "\nThe filter's heuristic by source and label (run B):\n\n| source (label) | prompts | \
         routed down | over {} prompt tokens |\n|---|---:|---:|---:|",
        a.max_prompt_tokens
    );
    for (k, (total, down, long)) in &by_source {
        let _ = writeln!(md, "| {k} | {total} | {down} | {long} |");
    }
    let _ = writeln!(
        md,
        "\nLearned classifier (offline rows): {learned_note}.{scored_note}"
    );
    print!("{md}");
    if let Some(out) = &a.out {
        std::fs::write(out, &md).unwrap();
        eprintln!("written to {}", out.display());
    }
}

/// `YYYY-MM-DD` (UTC) without a date crate.
fn chrono_free_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
