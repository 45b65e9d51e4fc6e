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

/// Posts with extra headers (`x-sim-*` fault injection).
async fn post_with(envoy: &Envoy, body: &Value, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut b = reqwest::Client::new()
        .post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-tollgate-tenant", "team-a");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(body.to_string()).send().await.unwrap()
}

fn chain_policy() -> Value {
    json!({"routing": {"rules": [{
        "name": "mini-with-fallback",
        "match": {"models": ["gpt-4o-mini"]},
        "fallbacks": [{"model": "gpt-4.1-mini", "cluster": "anthropic"}, {"model": "gpt-4o"}]
    }]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_falls_back_to_the_next_model_and_the_client_sees_one_answer() {
    let (sim, envoy) = stack(chain_policy()).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "Name three rivers in France."}]});
    let r = post_with(
        &envoy,
        &body,
        &[
            ("x-sim-status", "429"),
            ("x-sim-fault-model", "gpt-4o-mini"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-tollgate-model").as_deref(), Some("gpt-4.1-mini"));
    assert_eq!(h(&r, "x-tollgate-attempts").as_deref(), Some("2"));
    let cost: f64 = h(&r, "x-tollgate-cost-usd").unwrap().parse().unwrap();
    assert!(cost > 0.0, "the fallback's answer is metered");
    let prompt: u64 = h(&r, "x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    let j: Value = r.json().await.unwrap();
    assert!(
        j["model"].as_str().unwrap().starts_with("gpt-4.1-mini"),
        "{j}"
    );
    assert!(
        !j["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(j["usage"]["prompt_tokens"].as_u64(), Some(prompt));
    let reqs = sim.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body["model"], "gpt-4o-mini");
    assert_eq!(reqs[1].body["model"], "gpt-4.1-mini");
    // The attempt carries the client's request otherwise unchanged.
    assert_eq!(reqs[1].body["messages"], body["messages"]);
    assert_eq!(
        reqs[1].headers.get("x-sim-fault-model").map(String::as_str),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        envoy
            .counter(
                "tollgate_fallbacks_total",
                &["model=gpt-4o-mini", "reason=429"]
            )
            .await,
        1
    );
    assert_eq!(
        envoy
            .counter(
                "tollgate_requests_total",
                &["tenant=team-a", "model=gpt-4.1-mini"]
            )
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_before_its_first_byte_falls_back_and_streams_the_next_answer() {
    let (sim, envoy) = stack(chain_policy()).await;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Write a haiku about rain."}]});
    // The first two models fail with 500: the chain's last model answers.
    let r = post_with(
        &envoy,
        &body,
        &[
            ("x-sim-status", "500"),
            ("x-sim-fault-model", "gpt-4o-mini,gpt-4.1-mini"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        h(&r, "content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(h(&r, "x-tollgate-model").as_deref(), Some("gpt-4o"));
    assert_eq!(h(&r, "x-tollgate-attempts").as_deref(), Some("3"));
    let completion: u64 = h(&r, "x-tollgate-completion-tokens")
        .unwrap()
        .parse()
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(text.contains("\"usage\""));
    assert!(completion > 0);
    let models: Vec<_> = sim
        .requests()
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert_eq!(models, ["gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"]);
    assert_eq!(
        envoy
            .counter(
                "tollgate_fallbacks_total",
                &["model=gpt-4.1-mini", "reason=5xx"]
            )
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_model_fails_the_client_gets_the_last_error() {
    let (sim, envoy) = stack(chain_policy()).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "Hello?"}]});
    let r = post_with(&envoy, &body, &[("x-sim-status", "429")]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(h(&r, "x-tollgate-attempts").as_deref(), Some("3"));
    assert_eq!(h(&r, "x-tollgate-model").as_deref(), Some("gpt-4o"));
    let j: Value = r.json().await.unwrap();
    assert!(j["error"]["message"].is_string(), "{j}");
    assert_eq!(sim.requests().len(), 3);
    // A 400 is the client's fault: no fallback.
    let r = post_with(
        &envoy,
        &json!({"model": "gpt-4o-mini", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(h(&r, "x-tollgate-attempts").is_none());
    assert_eq!(sim.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_timeout_falls_back() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let mut opts = EnvoyOptions::new(sim.addr, true).config(chain_policy());
    opts.route_timeout_ms = Some(400);
    let envoy = Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "Quick question: what is 2 + 2?"}]});
    let started = std::time::Instant::now();
    let r = post_with(
        &envoy,
        &body,
        &[
            ("x-sim-latency-ms", "5000"),
            ("x-sim-fault-model", "gpt-4o-mini"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-tollgate-model").as_deref(), Some("gpt-4.1-mini"));
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert_eq!(
        envoy
            .counter(
                "tollgate_fallbacks_total",
                &["model=gpt-4o-mini", "reason=timeout"]
            )
            .await,
        1
    );
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheap_first_cascade_escalates_a_refusal_and_meters_both_answers() {
    let (sim, envoy) = stack(json!({"routing": {"rules": [{
        "name": "cheap-first",
        "match": {"models": ["gpt-4o"]},
        "model": "gpt-4o-mini",
        "cascade": {"strong": {"model": "gpt-4o"}}
    }]}}))
    .await;
    let body = json!({"model": "gpt-4o", "max_tokens": 200, "messages": [
        {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}]});
    // A good cheap answer stands.
    let r = post_with(&envoy, &body, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-tollgate-model").as_deref(), Some("gpt-4o-mini"));
    assert!(h(&r, "x-tollgate-cascade").is_none());
    let cheap_cost: f64 = h(&r, "x-tollgate-cost-usd").unwrap().parse().unwrap();
    assert_eq!(sim.requests().len(), 1);

    // A refusal from the cheap model goes to the strong one.
    let r = post_with(
        &envoy,
        &body,
        &[("x-sim-refuse", "1"), ("x-sim-fault-model", "gpt-4o-mini")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-tollgate-model").as_deref(), Some("gpt-4o"));
    assert_eq!(
        h(&r, "x-tollgate-cascade").as_deref(),
        Some("escalated; check=refusal")
    );
    assert_eq!(h(&r, "x-tollgate-attempts").as_deref(), Some("2"));
    let prompt: u64 = h(&r, "x-tollgate-prompt-tokens").unwrap().parse().unwrap();
    let cost: f64 = h(&r, "x-tollgate-cost-usd").unwrap().parse().unwrap();
    let j: Value = r.json().await.unwrap();
    let answer = j["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!answer.starts_with("I'm sorry"), "{answer}");
    // Both prompts are metered: the cheap one and the strong one.
    assert_eq!(prompt, 2 * j["usage"]["prompt_tokens"].as_u64().unwrap());
    assert!(cost > cheap_cost, "{cost} vs {cheap_cost}");
    let models: Vec<_> = sim
        .requests()
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert_eq!(models, ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]);
    assert_eq!(
        envoy
            .counter(
                "tollgate_cascade_escalations_total",
                &["model=gpt-4o-mini", "reason=refusal"]
            )
            .await,
        1
    );
}

/// Sum of a Prometheus counter in the service's `/metrics` text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_can_use_the_cache_services_learned_complexity_score() {
    use tollgate_tests::cache::{CacheOptions, CacheService};
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let cache = CacheService::start(&CacheOptions {
        config: json!({"complexity": {"trainAtStart": true}}),
        ..CacheOptions::default()
    })
    .unwrap();
    let mut opts = EnvoyOptions::new(sim.addr, true).config(json!({
        "cache": {"cluster": "tollgate_cache", "timeoutMs": 2000},
        "routing": {"complexitySource": "service", "rules": [{
            "name": "easy-to-mini",
            "match": {"models": ["gpt-4o"], "complexityBelow": 0.4},
            "model": "gpt-4o-mini"
        }]}
    }));
    opts.cache = cache.addr;
    let envoy = Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    // The examples are embedded in the background at start (real ONNX model).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while metric_sum(
        &cache.metrics(),
        "tollgate_complexity_training_seconds_count",
    ) < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "classifier not trained in 120 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let ask = |q: &str| json!({"model": "gpt-4o", "messages": [{"role": "user", "content": q}]});
    let easy = post_with(
        &envoy,
        &ask("What is the capital of Portugal?"),
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(easy.status(), 200);
    assert_eq!(h(&easy, "x-tollgate-model").as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        h(&easy, "x-tollgate-route-rule").as_deref(),
        Some("easy-to-mini")
    );
    let hard = post_with(
        &envoy,
        &ask(
            "Write a Python function that takes a list of intervals and merges all overlapping \
             intervals, returning them sorted. Explain the time complexity.",
        ),
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(hard.status(), 200);
    assert_eq!(h(&hard, "x-tollgate-model").as_deref(), Some("gpt-4o"));
    let reqs = sim.requests();
    assert_eq!(reqs[0].body["model"], "gpt-4o-mini");
    assert_eq!(reqs[1].body["model"], "gpt-4o");
    // Both decisions were taken on the service's scores.
    assert_eq!(
        metric_sum(&cache.metrics(), "tollgate_complexity_scores_total"),
        2.0
    );
}
