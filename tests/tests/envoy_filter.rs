//! The real Envoy with the real `tollgate_filter.wasm` in front of the simulated provider:
//! headers, stats and access-log output for plain and streaming OpenAI and Anthropic calls, and
//! every kind of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tollgate_tests::harness::{Envoy, EnvoyOptions};
use tollgate_tests::sim::{self, SimConfig, SimHandle};

struct Stack {
    sim: SimHandle,
    envoy: Envoy,
    http: reqwest::Client,
}

async fn stack(stop_on_headers: bool, config: Value) -> Stack {
    let sim = sim::spawn(SimConfig::default()).await.expect("sim");
    let opts = EnvoyOptions::new(sim.addr, stop_on_headers).config(config);
    let envoy = Envoy::start(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    Stack {
        sim,
        envoy,
        http: reqwest::Client::new(),
    }
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn h(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
    fn hu(&self, name: &str) -> u64 {
        self.h(name)
            .unwrap_or_else(|| panic!("missing header {name}; have {:?}", self.headers))
            .parse()
            .unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Stack {
    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        let mut req = self
            .http
            .post(self.envoy.url(path))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        self.post(path, headers, body.to_string()).await
    }
}

/// Price per token in USD from the shipped LiteLLM table (read independently of the filter).
fn price(model: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(
        tollgate_tests::harness::workspace_root().join("filter/data/prices.json"),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["models"][model][field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} for {model}"))
}

fn assert_usd(header: &str, want: f64) {
    let got: f64 = header.parse().unwrap();
    assert!((got - want).abs() < 1e-12, "cost {got} != {want}");
}

fn chat(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "You are a concise assistant. Réponds en une phrase. 简短回答。"},
        {"role": "user", "content": content}
    ]})
}

#[tokio::test]
async fn openai_chat_plain_is_metered_with_full_headers_stats_and_access_log() {
    let s = stack(true, json!({})).await;
    let body = chat(
        "gpt-4o",
        "What is the capital of France? Answer with one word 🇫🇷.",
    );
    let r = s
        .post_json(
            "/v1/chat/completions",
            &[
                ("x-tollgate-tenant", "team-a"),
                ("x-sim-completion-tokens", "17"),
                ("x-sim-cached-tokens", "8"),
            ],
            &body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    // Usage headers equal the provider's usage (from the held JSON body).
    assert_eq!(
        r.hu("x-tollgate-prompt-tokens"),
        j["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert_eq!(r.hu("x-tollgate-completion-tokens"), 17);
    assert_eq!(r.hu("x-tollgate-cached-tokens"), 8);
    assert_eq!(r.h("x-tollgate-model").as_deref(), Some("gpt-4o"));
    assert_eq!(r.h("x-tollgate-usage-source").as_deref(), Some("provider"));
    let prompt = r.hu("x-tollgate-prompt-tokens") as f64;
    let want = (prompt - 8.0) * price("gpt-4o", "input_cost_per_token")
        + 8.0 * price("gpt-4o", "cache_read_input_token_cost")
        + 17.0 * price("gpt-4o", "output_cost_per_token");
    assert_usd(&r.h("x-tollgate-cost-usd").unwrap(), want);

    // Stats, with tenant/model tags extracted into Prometheus labels.
    assert_eq!(
        s.envoy
            .counter(
                "tollgate_requests_total",
                &["tenant=team-a", "model=gpt-4o"]
            )
            .await,
        1
    );
    assert_eq!(
        s.envoy
            .counter("tollgate_tokens_out_total", &["tenant=team-a"])
            .await,
        17
    );
    assert_eq!(
        s.envoy
            .counter("tollgate_tokens_cached_total", &["tenant=team-a"])
            .await,
        8
    );
    let micro = s
        .envoy
        .counter(
            "tollgate_cost_micro_usd_total",
            &["tenant=team-a", "model=gpt-4o"],
        )
        .await;
    assert_eq!(micro, (want * 1e6).round() as u64);
    let prom = s.envoy.prometheus().await.unwrap();
    assert!(
        prom.contains(r#"tollgate_requests_total{tenant="team-a",model="gpt-4o"} 1"#),
        "{prom}"
    );

    // Access log line carries tenant, model, tokens and cost.
    let log = s.envoy.access_log(1).await;
    let line = log.last().unwrap();
    assert_eq!(line["tenant"], "team-a");
    assert_eq!(line["model"], "gpt-4o");
    assert_eq!(line["api"], "openai_chat");
    assert_eq!(line["completion_tokens"], "17");
    assert_eq!(
        line["prompt_tokens"],
        r.h("x-tollgate-prompt-tokens").unwrap()
    );
    assert_eq!(line["cost_usd"], r.h("x-tollgate-cost-usd").unwrap());
    assert_eq!(line["result"], "ok");
}

#[tokio::test]
async fn prompt_counts_equal_tiktoken_through_envoy_for_both_encodings() {
    // Streaming responses go out before usage is known: the prompt-token header is the filter's
    // own count, which must equal the simulator's tiktoken-rs count exactly.
    let s = stack(true, json!({})).await;
    let texts = [
        "Explain the difference between TCP and UDP in two sentences.",
        "Schreibe ein Haiku über Kaffee und Regen. ☕🌧️",
        "用三句话解释量子纠缠。",
        "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{v:?}\");\n}",
        "Ответь коротко: сколько будет 12345 * 6789?",
        "👩‍👩‍👧‍👦 family emoji, tabs\tand   spaces\r\nand CRLF lines\n\n\nend",
    ];
    for model in ["gpt-4o-mini", "gpt-4", "gpt-3.5-turbo", "gpt-4.1"] {
        for t in texts {
            let mut body = chat(model, t);
            body["stream"] = json!(true);
            let r = s.post_json("/v1/chat/completions", &[], &body).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.h("x-tollgate-usage-source").as_deref(), Some("counted"));
            assert_eq!(
                r.hu("x-tollgate-prompt-tokens"),
                r.hu("x-sim-prompt-tokens"),
                "{model}: {t:?}"
            );
        }
    }
}

#[tokio::test]
async fn openai_stream_passes_chunk_by_chunk_and_is_metered() {
    let s = stack(true, json!({})).await;
    // With include_usage: the provider's usage is used.
    let mut body = chat("gpt-4o-mini", "Tell me a short story about a lighthouse.");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let started = Instant::now();
    let resp = s
        .http
        .post(s.envoy.url("/v1/chat/completions"))
        .header("x-tollgate-tenant", "streamer")
        .header("x-sim-completion-tokens", "40")
        .header("x-sim-chunk-delay-ms", "60")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(resp.headers().get("x-tollgate-prompt-tokens").is_some());
    let mut stream = resp.bytes_stream();
    let mut first_at = None;
    let mut text = Vec::new();
    let mut chunks = 0;
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        first_at.get_or_insert_with(|| started.elapsed());
        chunks += 1;
        text.extend_from_slice(&c);
    }
    let total = started.elapsed();
    let first = first_at.unwrap();
    // ~13 events 60 ms apart: the client sees the first long before the last.
    assert!(total >= Duration::from_millis(500), "total {total:?}");
    assert!(
        first < total / 3,
        "first chunk at {first:?} of {total:?}: the stream was held back"
    );
    assert!(chunks >= 5, "only {chunks} reads");
    let text = String::from_utf8(text).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let line = s.envoy.access_log(1).await.pop().unwrap();
    assert_eq!(line["completion_tokens"], "40");
    assert_eq!(line["usage_source"], "provider");
    assert_eq!(line["stream"], "true");
    assert_eq!(line["result"], "ok");

    // Without usage in the stream: the filter counts the streamed text itself.
    let mut body = chat("gpt-4o-mini", "Another story, please.");
    body["stream"] = json!(true);
    let r = s
        .post_json(
            "/v1/chat/completions",
            &[("x-sim-completion-tokens", "33")],
            &body,
        )
        .await;
    assert_eq!(r.status, 200);
    let line = s.envoy.access_log(2).await.pop().unwrap();
    assert_eq!(line["usage_source"], "counted");
    assert_eq!(
        line["completion_tokens"], "33",
        "counted output equals the sim's tiktoken count"
    );
    assert_eq!(
        s.envoy
            .counter("tollgate_usage_counted_total", &["model=gpt-4o-mini"])
            .await,
        1
    );
}

#[tokio::test]
async fn anthropic_plain_and_stream_replace_the_estimate_with_provider_usage() {
    let s = stack(true, json!({})).await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 300, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Name three rivers in Europe."}]});
    let r = s
        .post_json(
            "/v1/messages",
            &[
                ("x-api-key", "sk-ant-test-key"),
                ("x-sim-completion-tokens", "21"),
                ("x-sim-cached-tokens", "5"),
                ("x-sim-cache-creation-tokens", "3"),
            ],
            &body,
        )
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    let u = &j["usage"];
    let prompt = u["input_tokens"].as_u64().unwrap() + 5 + 3;
    assert_eq!(r.hu("x-tollgate-prompt-tokens"), prompt);
    assert_eq!(r.hu("x-tollgate-completion-tokens"), 21);
    assert_eq!(r.h("x-tollgate-usage-source").as_deref(), Some("provider"));
    let want = u["input_tokens"].as_f64().unwrap()
        * price("claude-sonnet-4-5", "input_cost_per_token")
        + 5.0 * price("claude-sonnet-4-5", "cache_read_input_token_cost")
        + 3.0 * price("claude-sonnet-4-5", "cache_creation_input_token_cost")
        + 21.0 * price("claude-sonnet-4-5", "output_cost_per_token");
    assert_usd(&r.h("x-tollgate-cost-usd").unwrap(), want);

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let r = s
        .post_json(
            "/v1/messages",
            &[
                ("x-api-key", "sk-ant-test-key"),
                ("x-sim-completion-tokens", "12"),
            ],
            &sbody,
        )
        .await;
    assert_eq!(r.status, 200);
    // At header time only the estimate is known, and it is marked as such.
    assert_eq!(r.h("x-tollgate-usage-source").as_deref(), Some("estimated"));
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.contains("event: message_stop"));
    let lines = s.envoy.access_log(2).await;
    let line = lines.last().unwrap();
    assert_eq!(line["usage_source"], "provider");
    assert_eq!(line["completion_tokens"], "12");
    assert_eq!(line["api"], "anthropic_messages");
    // Tenant from the hashed API key; the key itself appears nowhere.
    let tenant = line["tenant"].as_str().unwrap();
    assert!(tenant.starts_with("key:") && tenant.len() == 20, "{tenant}");
    let everything = format!(
        "{lines:?}{}{}",
        s.envoy.prometheus().await.unwrap(),
        s.envoy.log()
    );
    assert!(!everything.contains("sk-ant-test-key"));
    assert!(
        !everything.contains("Name three rivers"),
        "prompts must not be logged"
    );
}

#[tokio::test]
async fn responses_and_completions_apis_are_metered() {
    let s = stack(true, json!({})).await;
    let r = s
        .post_json(
            "/v1/responses",
            &[("x-sim-completion-tokens", "9")],
            &json!({"model": "gpt-4.1-mini", "instructions": "Be terse.", "input": "Say hi"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.hu("x-tollgate-completion-tokens"), 9);
    assert_eq!(
        r.hu("x-tollgate-prompt-tokens"),
        r.json()["usage"]["input_tokens"].as_u64().unwrap()
    );
    let r = s
        .post_json(
            "/v1/responses",
            &[("x-sim-completion-tokens", "7")],
            &json!({"model": "gpt-4.1-mini", "input": "Stream hi", "stream": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s.post_json("/v1/completions", &[("x-sim-completion-tokens", "5")], &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 20})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.hu("x-tollgate-completion-tokens"), 5);
    let log = s.envoy.access_log(3).await;
    assert_eq!(log[1]["completion_tokens"], "7");
    assert_eq!(log[1]["usage_source"], "provider");
    assert_eq!(log[2]["api"], "openai_completions");
}

#[tokio::test]
async fn max_tokens_is_inserted_and_clamped_before_the_upstream_sees_it() {
    let s = stack(
        true,
        json!({"maxTokens": {"default": 256, "cap": 1000, "tenants": {"small": {"cap": 50}}}}),
    )
    .await;
    let r = s
        .post_json("/v1/chat/completions", &[], &chat("gpt-4o", "hi"))
        .await;
    assert_eq!(r.status, 200);
    let r2 = s.post_json("/v1/chat/completions", &[("x-tollgate-tenant", "small")], &json!({"model": "gpt-3.5-turbo", "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r2.status, 200);
    assert_eq!(
        r2.h("x-tollgate-max-tokens-clamped").as_deref(),
        Some("5000")
    );
    let r3 = s
        .post_json(
            "/v1/messages",
            &[],
            &json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        r3.status, 200,
        "Anthropic requires max_tokens: the filter inserted it"
    );
    let seen: Vec<Value> = s.sim.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(seen[0]["max_completion_tokens"], 256);
    assert_eq!(seen[1]["max_tokens"], 50);
    assert_eq!(seen[2]["max_tokens"], 256);
    // Everything else in the body reached the upstream unchanged.
    assert_eq!(seen[0]["messages"], chat("gpt-4o", "hi")["messages"]);
    assert_eq!(
        s.envoy
            .counter("tollgate_max_tokens_clamped_total", &["tenant=small"])
            .await,
        1
    );
}

#[tokio::test]
async fn bad_input_gets_provider_shaped_errors_and_never_reaches_the_upstream() {
    let s = stack(true, json!({"limits": {"maxRequestBytes": 65536}})).await;
    let openai = "/v1/chat/completions";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (openai, b"{not json".to_vec(), 400, "invalid request body"),
        (openai, br#"{"model": 42, "messages": []}"#.to_vec(), 400, "invalid type"),
        (openai, br#"{"messages": [{"role":"user","content":"x"}]}"#.to_vec(), 400, "missing field `model`"),
        (openai, br#"{"model": "gpt-4o"}"#.to_vec(), 400, "missing field `messages`"),
        (openai, b"{\"model\": \"gpt-4o\", \"messages\": [{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec(), 400, "UTF-8"),
        (openai, br#"{"model": "gpt-4o", "messages": [], "max_tokens": 99999999999}"#.to_vec(), 400, "not a plausible"),
        (openai, br#"{"model": "gpt-4o", "messages": [], "max_tokens": -3}"#.to_vec(), 400, "positive integer"),
        (openai, format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(70_000)).into_bytes(), 413, "exceeds"),
    ];
    for (path, body, status, needle) in cases {
        let r = s.post(path, &[], body).await;
        assert_eq!(
            r.status,
            status,
            "{needle}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        let msg = j["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        let code = if status == 413 {
            "request_too_large"
        } else {
            "invalid_request"
        };
        assert_eq!(j["error"]["code"], code);
        assert_eq!(r.h("x-tollgate-error").as_deref(), Some(code));
    }
    // Chunked body (no content-length) over the limit.
    let big = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "y".repeat(200_000)
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .as_bytes()
        .chunks(16_384)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = s
        .post(
            openai,
            &[],
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "request_too_large");
    // Anthropic shape.
    let r = s
        .post(
            "/v1/messages",
            &[],
            br#"{"model":"claude-haiku-4-5","max_tokens":10}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["type"], "error");
    assert_eq!(j["error"]["type"], "invalid_request");
    assert!(j["error"]["message"].as_str().unwrap().contains("messages"));
    // None of them reached the provider.
    assert!(s.sim.requests().is_empty(), "{:?}", s.sim.requests());
    assert_eq!(
        s.envoy
            .counter("tollgate_rejected_total", &["reason=invalid_request"])
            .await,
        8
    );
    assert_eq!(
        s.envoy
            .counter("tollgate_rejected_total", &["reason=request_too_large"])
            .await,
        2
    );
    assert_eq!(s.envoy.counter("tollgate_parse_errors_total", &[]).await, 8);
    // The VM survived all of it.
    let r = s
        .post_json(openai, &[], &chat("gpt-4o", "still alive?"))
        .await;
    assert_eq!(r.status, 200);
    assert!(!s.envoy.log().contains("panic"));
}

#[tokio::test]
async fn unknown_model_is_metered_with_unknown_cost() {
    let s = stack(true, json!({})).await;
    let r = s
        .post_json(
            "/v1/chat/completions",
            &[("x-sim-completion-tokens", "4")],
            &chat("acme-private-llm", "hello"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("x-tollgate-cost-usd").as_deref(), Some("unknown"));
    assert_eq!(r.hu("x-tollgate-completion-tokens"), 4);
    assert_eq!(
        s.envoy
            .counter(
                "tollgate_unpriced_requests_total",
                &["model=acme-private-llm"]
            )
            .await,
        1
    );
    let line = s.envoy.access_log(1).await.pop().unwrap();
    assert_eq!(line["cost_usd"], "unknown");
}

#[tokio::test]
async fn non_llm_traffic_and_upstream_errors_pass_through_untouched() {
    let s = stack(true, json!({})).await;
    let r = s.http.get(s.envoy.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-tollgate-model").is_none());
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let raw = br#"{"input": "embed me", "model": "text-embedding-3-small"}"#.to_vec();
    let r = s.post("/v1/embeddings", &[], raw.clone()).await;
    assert!(r.h("x-tollgate-model").is_none());
    let seen = s.sim.requests();
    assert_eq!(seen.last().unwrap().path, "/v1/embeddings");
    assert_eq!(
        seen.last().unwrap().body,
        serde_json::from_slice::<Value>(&raw).unwrap(),
        "body untouched"
    );
    assert!(
        s.envoy
            .counter("tollgate_passthrough_total", &["reason=not_llm"])
            .await
            >= 2
    );

    for status in ["429", "500"] {
        let r = s
            .post_json(
                "/v1/chat/completions",
                &[("x-sim-status", status)],
                &chat("gpt-4o", "fail please"),
            )
            .await;
        assert_eq!(r.status.to_string(), status);
        assert!(
            r.json()["error"]["message"].is_string(),
            "provider's error body passes through"
        );
    }
    let r = s.post_json("/v1/messages", &[("x-sim-status", "529")], &json!({"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]})).await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    assert_eq!(
        s.envoy.counter("tollgate_upstream_errors_total", &[]).await,
        3
    );
    let line = s.envoy.access_log(5).await.pop().unwrap();
    assert_eq!(line["cost_usd"], "0");
    assert_eq!(line["result"], "upstream_error");
}

#[tokio::test]
async fn istio_mode_without_stop_iteration_still_meters_and_rewrites() {
    // Istio's WasmPlugin cannot set allow_on_headers_stop_iteration: headers continue at once,
    // the body is still buffered and rewritten, usage lands in stats and the access log.
    let s = stack(false, json!({"maxTokens": {"cap": 100}})).await;
    let mut body = chat("gpt-4o", "Summarise the plot of Hamlet.");
    body["max_tokens"] = json!(5000);
    let r = s
        .post_json(
            "/v1/chat/completions",
            &[
                ("x-tollgate-tenant", "mesh"),
                ("x-sim-completion-tokens", "30"),
            ],
            &body,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.sim.requests()[0].body["max_tokens"],
        100,
        "body rewritten in Istio mode too"
    );
    assert_eq!(
        r.hu("x-tollgate-prompt-tokens"),
        r.hu("x-sim-prompt-tokens"),
        "what is known at header time"
    );
    assert!(r.h("x-tollgate-completion-tokens").is_none());
    let line = s.envoy.access_log(1).await.pop().unwrap();
    assert_eq!(line["completion_tokens"], "30");
    assert_eq!(line["tenant"], "mesh");
    assert_eq!(
        s.envoy
            .counter("tollgate_tokens_out_total", &["tenant=mesh"])
            .await,
        30
    );
    let r = s.post("/v1/chat/completions", &[], b"{bad".to_vec()).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_still_metered() {
    let s = stack(true, json!({})).await;
    let mut body = chat("gpt-4o-mini", "A long answer please");
    body["stream"] = json!(true);
    let resp = s
        .http
        .post(s.envoy.url("/v1/chat/completions"))
        .header("x-sim-completion-tokens", "200")
        .header("x-sim-chunk-delay-ms", "50")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let _ = stream.next().await;
    let _ = stream.next().await;
    drop(stream);
    let line = s.envoy.access_log(1).await.pop().unwrap();
    assert_eq!(line["result"], "incomplete");
    let out: u64 = line["completion_tokens"].as_str().unwrap().parse().unwrap();
    assert!(out < 200, "only what was streamed is counted: {out}");
    assert_eq!(
        s.envoy
            .counter("tollgate_incomplete_responses_total", &[])
            .await,
        1
    );
}

#[tokio::test]
async fn bad_config_is_refused_with_a_logged_reason() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let opts = EnvoyOptions::new(sim.addr, true).config(json!({"maxTokens": {"default": 0}}));
    let err = Envoy::start(&opts)
        .await
        .expect_err("Envoy must refuse the config");
    assert!(
        err.contains("configuration refused") && err.contains("at least 1"),
        "{err}"
    );
    let opts = EnvoyOptions::new(sim.addr, true).config(json!({"noSuchField": true}));
    let err = Envoy::start(&opts)
        .await
        .expect_err("unknown fields are refused");
    assert!(err.contains("unknown field"), "{err}");
}
