//! Routing, context trimming and prefix-cache hints end to end: the real Envoy with the real
//! filter in front of the simulated provider, which records what actually reached it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_tests::harness::{Envoy, EnvoyOptions};
use tollgate_tests::sim::{self, SimConfig, SimHandle};

async fn stack(config: Value) -> (SimHandle, Envoy) {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let opts = EnvoyOptions::new(sim.addr, true).config(config);
    let envoy = Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    (sim, envoy)
}

async fn post(envoy: &Envoy, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-tollgate-tenant", "team-a")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn h(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_requests_are_routed_to_the_cheaper_model_and_hard_ones_are_not() {
    let (sim, envoy) = stack(json!({
        "routing": {"rules": [{
            "name": "small-to-mini",
            "match": {"models": ["gpt-4o"], "maxPromptTokens": 300, "complexityBelow": 0.3},
            "model": "gpt-4o-mini"
        }]}
    }))
    .await;
    let easy = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "What is the capital of Portugal?"}]});
    let r = post(&envoy, &easy).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-tollgate-model").as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        h(&r, "x-tollgate-route-rule").as_deref(),
        Some("small-to-mini")
    );
    let cost: f64 = h(&r, "x-tollgate-cost-usd").unwrap().parse().unwrap();
    let j: Value = r.json().await.unwrap();
    assert!(j["model"].as_str().unwrap().starts_with("gpt-4o-mini"));
    assert_eq!(sim.requests()[0].body["model"], "gpt-4o-mini");
    assert!(cost > 0.0);

    let hard = json!({"model": "gpt-4o", "messages": [{"role": "user", "content":
        "Prove step by step that the square root of 2 is irrational, then analyze why the same \
         argument fails for 4, and compare it with a proof by infinite descent. ```python\n\
         def f(x):\n    return x*x\n```"}]});
    let r = post(&envoy, &hard).await;
    assert_eq!(h(&r, "x-tollgate-model").as_deref(), Some("gpt-4o"));
    assert!(h(&r, "x-tollgate-route-rule").is_none());
    assert_eq!(sim.requests()[1].body["model"], "gpt-4o");

    assert_eq!(
        envoy
            .counter("tollgate_routed_requests_total", &["model=gpt-4o-mini"])
            .await,
        1
    );
    assert!(
        envoy
            .counter("tollgate_routing_saved_micro_usd_total", &["tenant=team-a"])
            .await
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_are_trimmed_but_the_system_prompt_and_final_turn_stay() {
    let (sim, envoy) = stack(json!({"trimming": {"routes": {"/v1/chat/completions": 300}}})).await;
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for i in 0..30 {
        messages.push(json!({"role": "user", "content": format!("Earlier question number {i} about the history of the Roman empire and its roads?")}));
        messages.push(json!({"role": "assistant", "content": format!("Earlier answer number {i}: the roads were long and straight and well built.")}));
    }
    messages.push(
        json!({"role": "user", "content": "And the final question: who built the Via Appia?"}),
    );
    let r = post(&envoy, &json!({"model": "gpt-4o", "messages": messages})).await;
    assert_eq!(r.status(), 200);
    let cut: u64 = h(&r, "x-tollgate-trimmed-tokens").unwrap().parse().unwrap();
    let prompt: u64 = h(&r, "x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    assert!(prompt <= 300, "{prompt}");
    assert!(cut > 500, "{cut}");
    let sent = &sim.requests()[0].body["messages"];
    let sent = sent.as_array().unwrap();
    assert!(sent.len() < 62);
    assert_eq!(sent[0]["role"], "system");
    assert_eq!(
        sent.last().unwrap()["content"],
        "And the final question: who built the Via Appia?"
    );
    assert_eq!(sent[1]["role"], "user");
    assert!(
        envoy
            .counter("tollgate_trimmed_tokens_total", &["tenant=team-a"])
            .await
            >= cut
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_hints_reach_the_upstream() {
    let (sim, envoy) = stack(json!({"prefixHints": {"blockTokens": 64}})).await;
    let system = "You are the support assistant of a large retailer. ".repeat(20);
    let ask = |q: &str| {
        json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": q}]})
    };
    assert_eq!(
        post(&envoy, &ask("Where is my parcel?")).await.status(),
        200
    );
    assert_eq!(
        post(&envoy, &ask("Can I return shoes?")).await.status(),
        200
    );
    let other = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a pirate. ".repeat(60)},
        {"role": "user", "content": "Where is my parcel?"}]});
    assert_eq!(post(&envoy, &other).await.status(), 200);
    let reqs = sim.requests();
    let key = |i: usize| reqs[i].headers.get("x-tollgate-prefix-key").cloned();
    let k0 = key(0).expect("prefix key header sent upstream");
    assert_eq!(k0.len(), 32);
    assert_eq!(
        key(1).as_deref(),
        Some(k0.as_str()),
        "same prefix, same key"
    );
    assert_ne!(key(2).as_deref(), Some(k0.as_str()));
    // OpenAI's own prompt cache is keyed too.
    let pck = reqs[0].body["prompt_cache_key"].as_str().unwrap();
    assert!(pck.starts_with("tg-"));
    assert_eq!(reqs[1].body["prompt_cache_key"], pck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_cache_breakpoints_are_added_once_the_prefix_is_hot() {
    use tollgate_tests::cache::{CacheOptions, CacheService};
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let cache = CacheService::start(&CacheOptions {
        config: json!({"cache": {"semantic": {"mode": "off"}}}),
        ..CacheOptions::default()
    })
    .unwrap();
    let mut opts = EnvoyOptions::new(sim.addr, true).config(json!({
        "cache": {"cluster": "tollgate_cache", "timeoutMs": 2000},
        "prefixHints": {}
    }));
    opts.cache = cache.addr;
    let envoy = Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let system = "You answer questions about the employee handbook, citing sections. ".repeat(150);
    for q in ["What is the leave policy?", "How do I claim expenses?"] {
        let r = reqwest::Client::new()
            .post(envoy.url("/v1/messages"))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .header("cache-control", "no-cache, no-store")
            .body(
                json!({"model": "claude-haiku-4-5", "max_tokens": 50, "system": system,
                       "messages": [{"role": "user", "content": q}]})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let reqs = sim.requests();
    // Cold prefix: the request goes as sent.
    assert!(reqs[0].body["system"].is_string(), "{}", reqs[0].body);
    // Seen again within Anthropic's cache lifetime: a breakpoint on the system prompt.
    let sys = reqs[1].body["system"].as_array().unwrap();
    assert_eq!(sys.last().unwrap()["cache_control"]["type"], "ephemeral");
    assert_eq!(
        reqs[0].headers.get("x-tollgate-prefix-key"),
        reqs[1].headers.get("x-tollgate-prefix-key")
    );
}
