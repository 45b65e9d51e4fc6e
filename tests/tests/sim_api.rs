//! Tests of the simulated provider over HTTP (and once through `app()`
//! without sockets): every endpoint plain and streaming, usage against
//! independent tiktoken-rs counts, truncation, injection headers, errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tiktoken_rs::CoreBPE;
use tollgate_tests::sim::{self, SimConfig, SimHandle};

// ---------------------------------------------------------------- helpers

fn o200k() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}
fn cl100k() -> &'static CoreBPE {
    tiktoken_rs::cl100k_base_singleton()
}
fn count(bpe: &CoreBPE, s: &str) -> usize {
    bpe.encode_ordinary(s).len()
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no header {name}"))
            .to_str()
            .unwrap()
    }
}

async fn start() -> SimHandle {
    sim::spawn(SimConfig::default()).await.unwrap()
}

async fn post(sim: &SimHandle, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    post_raw(sim, path, headers, body.to_string()).await
}

async fn post_raw(sim: &SimHandle, path: &str, headers: &[(&str, &str)], body: String) -> Resp {
    let mut req = reqwest::Client::new()
        .post(sim.url(path))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

async fn get(sim: &SimHandle, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = reqwest::Client::new().get(sim.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

#[derive(Debug)]
struct Ev {
    event: Option<String>,
    data: String,
}

impl Ev {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// Strict SSE framing: blocks separated by a blank line, each with an
/// optional `event:` line and exactly one `data:` line.
fn parse_sse(body: &str) -> Vec<Ev> {
    assert!(body.ends_with("\n\n"), "stream must end with a blank line");
    parse_sse_prefix(body)
}

/// Complete blocks of a possibly cut stream.
fn parse_sse_prefix(body: &str) -> Vec<Ev> {
    let complete = match body.rfind("\n\n") {
        Some(i) => &body[..i + 2],
        None => "",
    };
    complete
        .split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.split('\n') {
                if let Some(v) = line.strip_prefix("event: ") {
                    assert!(event.is_none(), "two event lines: {block:?}");
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            assert_eq!(data.len(), 1, "one data line per event: {block:?}");
            Ev {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

fn assert_sse(r: &Resp) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type").starts_with("text/event-stream"),
        "{:?}",
        r.headers
    );
}

fn chat_body(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "name": "alice", "content": "What does an API gateway do?"}
        ]
    })
}

fn chat_expected_prompt(bpe: &CoreBPE) -> usize {
    3 + (3 + count(bpe, "system") + count(bpe, "You are a helpful assistant."))
        + (3 + count(bpe, "user")
            + count(bpe, "alice")
            + 1
            + count(bpe, "What does an API gateway do?"))
}

/// Content of OpenAI chat chunks, concatenated.
fn chat_stream_text(events: &[Ev]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .flat_map(|e| {
            e.json()["choices"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

// ------------------------------------------------------ chat completions

#[tokio::test]
async fn chat_plain_usage_matches_tiktoken() {
    let sim = start().await;
    for (model, bpe) in [
        ("gpt-4o-mini", o200k()),
        ("gpt-4", cl100k()),
        ("gpt-5", o200k()),
    ] {
        let r = post(&sim, "/v1/chat/completions", &[], &chat_body(model)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-sim-model"), model);
        let v = r.json();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], model);
        assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
        assert!(v["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
        let choice = &v["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["message"]["role"], "assistant");
        assert!(choice["message"]["refusal"].is_null());
        assert!(choice["logprobs"].is_null());
        assert_eq!(choice["finish_reason"], "stop");
        let text = choice["message"]["content"].as_str().unwrap();
        let completion = count(bpe, text);
        assert!((20..=60).contains(&completion), "{completion}: {text}");
        assert!(text.ends_with('.'), "{text}");
        let prompt = chat_expected_prompt(bpe);
        let u = &v["usage"];
        assert_eq!(u["prompt_tokens"], prompt, "{model}");
        assert_eq!(u["completion_tokens"], completion);
        assert_eq!(u["total_tokens"], prompt + completion);
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
        assert_eq!(u["prompt_tokens_details"]["audio_tokens"], 0);
        assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 0);
        assert_eq!(r.header("x-sim-prompt-tokens"), prompt.to_string());
    }
}

#[tokio::test]
async fn chat_key_order_is_openai_like() {
    let sim = start().await;
    let r = post(&sim, "/v1/chat/completions", &[], &chat_body("gpt-4o")).await;
    assert!(r.body.starts_with(r#"{"id":"chatcmpl-"#), "{}", r.body);
    assert!(r.body.contains(r#""object":"chat.completion","created":"#));
}

#[tokio::test]
async fn chat_multipart_tools_and_tool_calls() {
    let sim = start().await;
    let body = json!({
        "model": "gpt-4.1-mini",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Describe these pictures."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    });
    let r = post(&sim, "/v1/chat/completions", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = o200k();
    let tools_json = r#"[{"function":{"name":"get_weather","parameters":{"properties":{"city":{"type":"string"}},"type":"object"}},"type":"function"}]"#;
    let expected = 3
        + (3 + count(b, "user") + count(b, "Describe these pictures.") + 85 + 765)
        + (3 + count(b, "assistant") + count(b, "get_weather") + count(b, "{\"city\":\"Paris\"}"))
        + (3 + count(b, "tool") + count(b, "call_1") + count(b, "sunny"))
        + count(b, tools_json)
        + 8;
    assert_eq!(r.json()["usage"]["prompt_tokens"], expected);
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let sim = start().await;
    let plain = post(&sim, "/v1/chat/completions", &[], &chat_body("gpt-4o")).await;
    let plain_text = plain.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&sim, "/v1/chat/completions", &[], &body).await;
    assert_sse(&r);
    let events = parse_sse(&r.body);
    assert!(events.iter().all(|e| e.event.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Ev::json).collect();
    let id = chunks[0]["id"].as_str().unwrap();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert!(c.as_object().unwrap().contains_key("usage"));
    }
    // first delta carries the role, then content pieces of a few tokens
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    let content: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .is_some_and(|s| !s.is_empty())
        })
        .collect();
    for c in &content {
        let piece = c["choices"][0]["delta"]["content"].as_str().unwrap();
        assert!(
            (1..=3).contains(&count(o200k(), piece)) || piece.len() < 3,
            "{piece:?}"
        );
        assert!(c["usage"].is_null());
        assert!(c["choices"][0]["finish_reason"].is_null());
    }
    let n = chunks.len();
    let finish = &chunks[n - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let last = &chunks[n - 1];
    assert_eq!(last["choices"], json!([]));
    let text = chat_stream_text(&events);
    assert_eq!(text, plain_text, "stream and plain give the same text");
    assert_eq!(last["usage"]["completion_tokens"], count(o200k(), &text));
    assert_eq!(
        last["usage"]["prompt_tokens"],
        chat_expected_prompt(o200k())
    );
}

#[tokio::test]
async fn chat_stream_without_include_usage_has_no_usage() {
    let sim = start().await;
    let mut body = chat_body("gpt-3.5-turbo");
    body["stream"] = json!(true);
    let r = post(&sim, "/v1/chat/completions", &[], &body).await;
    assert_sse(&r);
    let events = parse_sse(&r.body);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    for e in &events[..events.len() - 1] {
        let v = e.json();
        assert!(!v.as_object().unwrap().contains_key("usage"), "{v}");
        assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn completion_tokens_header_is_exact() {
    let sim = start().await;
    for (model, bpe) in [("gpt-4o", o200k()), ("gpt-3.5-turbo", cl100k())] {
        for n in [0usize, 1, 2, 3, 7, 64, 250] {
            let h = n.to_string();
            let r = post(
                &sim,
                "/v1/chat/completions",
                &[("x-sim-completion-tokens", &h)],
                &chat_body(model),
            )
            .await;
            let v = r.json();
            let text = v["choices"][0]["message"]["content"].as_str().unwrap();
            assert_eq!(count(bpe, text), n, "{model} {n}: {text:?}");
            assert_eq!(v["usage"]["completion_tokens"], n);
            assert_eq!(v["choices"][0]["finish_reason"], "stop");
        }
    }
}

#[tokio::test]
async fn chat_max_tokens_truncates() {
    let sim = start().await;
    let ct = [("x-sim-completion-tokens", "40")];
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut body = chat_body("gpt-4o");
        body[field] = json!(7);
        let v = post(&sim, "/v1/chat/completions", &ct, &body).await.json();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 7);
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(count(o200k(), text), 7);
    }
    // under the limit: stop
    let mut body = chat_body("gpt-4o");
    body["max_tokens"] = json!(100);
    let v = post(&sim, "/v1/chat/completions", &ct, &body).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 40);
    // max_completion_tokens wins over max_tokens
    let mut body = chat_body("gpt-4o");
    body["max_tokens"] = json!(100);
    body["max_completion_tokens"] = json!(5);
    let v = post(&sim, "/v1/chat/completions", &ct, &body).await.json();
    assert_eq!(v["usage"]["completion_tokens"], 5);
    // streaming truncation
    let mut body = chat_body("gpt-4o");
    body["max_tokens"] = json!(9);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&sim, "/v1/chat/completions", &ct, &body).await;
    let events = parse_sse(&r.body);
    let n = events.len();
    assert_eq!(
        events[n - 3].json()["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(events[n - 2].json()["usage"]["completion_tokens"], 9);
    assert_eq!(count(o200k(), &chat_stream_text(&events)), 9);
    // invalid limit
    let mut body = chat_body("gpt-4o");
    body["max_tokens"] = json!(0);
    let r = post(&sim, "/v1/chat/completions", &[], &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    assert_eq!(r.json()["error"]["code"], "integer_below_min_value");
}

#[tokio::test]
async fn chat_n_choices_and_determinism() {
    let sim = start().await;
    let mut body = chat_body("gpt-4o");
    body["n"] = json!(3);
    let v = post(&sim, "/v1/chat/completions", &[], &body).await.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let total: usize = choices
        .iter()
        .map(|c| count(o200k(), c["message"]["content"].as_str().unwrap()))
        .sum();
    assert_eq!(v["usage"]["completion_tokens"], total);
    let a = post(&sim, "/v1/chat/completions", &[], &chat_body("gpt-4o"))
        .await
        .json();
    let b = post(&sim, "/v1/chat/completions", &[], &chat_body("gpt-4o"))
        .await
        .json();
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    let mut other = chat_body("gpt-4o");
    other["messages"][1]["content"] = json!("Something else entirely?");
    let c = post(&sim, "/v1/chat/completions", &[], &other).await.json();
    assert_ne!(
        a["choices"][0]["message"]["content"],
        c["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn chat_validation_errors() {
    let sim = start().await;
    let r = post(
        &sim,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-4o"}),
    )
    .await;
    assert_eq!(r.status, 400);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "messages");
    assert_eq!(e["code"], "missing_required_parameter");
    let r = post(&sim, "/v1/chat/completions", &[], &json!({"messages": []})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "you must provide a model parameter"
    );
}

// --------------------------------------------------------- completions

#[tokio::test]
async fn legacy_completions() {
    let sim = start().await;
    let b = cl100k();
    let body =
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 30});
    let r = post(&sim, "/v1/completions", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(v["choices"][0]["logprobs"].is_null());
    assert_eq!(v["usage"]["prompt_tokens"], count(b, "Once upon a time"));
    assert_eq!(v["usage"]["completion_tokens"], count(b, text));
    assert!(v["usage"].get("prompt_tokens_details").is_none());

    // default max_tokens is 16, as on the real endpoint
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time"});
    let v = post(
        &sim,
        "/v1/completions",
        &[("x-sim-completion-tokens", "30")],
        &body,
    )
    .await
    .json();
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // array prompt: one choice per prompt
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["Hello", "World peace"], "max_tokens": 100});
    let v = post(
        &sim,
        "/v1/completions",
        &[("x-sim-completion-tokens", "5")],
        &body,
    )
    .await
    .json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(
        v["usage"]["prompt_tokens"],
        count(b, "Hello") + count(b, "World peace")
    );
    assert_eq!(v["usage"]["completion_tokens"], 10);

    // streaming with usage
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 50,
        "stream": true, "stream_options": {"include_usage": true}});
    let r = post(
        &sim,
        "/v1/completions",
        &[("x-sim-completion-tokens", "12")],
        &body,
    )
    .await;
    assert_sse(&r);
    let events = parse_sse(&r.body);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Ev::json).collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["text"].as_str())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(count(b, &text), 12);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
}

// ----------------------------------------------------------- responses

fn responses_expected(bpe: &CoreBPE) -> usize {
    3 + (3 + count(bpe, "system") + count(bpe, "Be brief."))
        + (3 + count(bpe, "user") + count(bpe, "Explain rate limiting."))
}

#[tokio::test]
async fn responses_plain() {
    let sim = start().await;
    let body =
        json!({"model": "gpt-4.1", "instructions": "Be brief.", "input": "Explain rate limiting."});
    let r = post(&sim, "/v1/responses", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["instructions"], "Be brief.");
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["status"], "completed");
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["annotations"], json!([]));
    let text = item["content"][0]["text"].as_str().unwrap();
    let u = &v["usage"];
    let input = responses_expected(o200k());
    assert_eq!(u["input_tokens"], input);
    assert_eq!(u["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(u["output_tokens"], count(o200k(), text));
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(u["total_tokens"], input + count(o200k(), text));

    // array input with parts
    let body = json!({"model": "gpt-4o", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Hello"},
                                     {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]},
        {"role": "user", "content": "Bye"}
    ]});
    let v = post(&sim, "/v1/responses", &[], &body).await.json();
    let b = o200k();
    let expected = 3
        + (3 + count(b, "user") + count(b, "Hello") + 85)
        + (3 + count(b, "assistant") + count(b, "Hi"))
        + (3 + count(b, "user") + count(b, "Bye"));
    assert_eq!(v["usage"]["input_tokens"], expected);
}

#[tokio::test]
async fn responses_truncation_and_limits() {
    let sim = start().await;
    let ct = [("x-sim-completion-tokens", "30")];
    let body = json!({"model": "gpt-4.1", "input": "Hi", "max_output_tokens": 16});
    let v = post(&sim, "/v1/responses", &ct, &body).await.json();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["usage"]["output_tokens"], 16);
    assert_eq!(v["output"][0]["status"], "incomplete");
    // the real API rejects max_output_tokens below 16
    let body = json!({"model": "gpt-4.1", "input": "Hi", "max_output_tokens": 5});
    let r = post(&sim, "/v1/responses", &ct, &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "max_output_tokens");
}

#[tokio::test]
async fn responses_stream() {
    let sim = start().await;
    let ct = [("x-sim-completion-tokens", "25")];
    let body = json!({"model": "gpt-4.1", "instructions": "Be brief.", "input": "Explain rate limiting.", "stream": true});
    let r = post(&sim, "/v1/responses", &ct, &body).await;
    assert_sse(&r);
    let events = parse_sse(&r.body);
    let types: Vec<String> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    let datas: Vec<Value> = events.iter().map(Ev::json).collect();
    for (i, (t, d)) in types.iter().zip(&datas).enumerate() {
        assert_eq!(&d["type"], t.as_str(), "event line matches data.type");
        assert_eq!(d["sequence_number"], i, "sequence numbers count up");
    }
    let n = types.len();
    assert_eq!(
        &types[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        &types[n - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert!(
        types[4..n - 4]
            .iter()
            .all(|t| t == "response.output_text.delta")
    );
    assert!(n - 8 >= 25 / 3);
    assert_eq!(datas[0]["response"]["status"], "in_progress");
    let deltas: String = datas[4..n - 4]
        .iter()
        .map(|d| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(datas[n - 4]["text"], deltas.as_str());
    assert_eq!(count(o200k(), &deltas), 25);
    let done = &datas[n - 1]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], deltas.as_str());
    assert_eq!(done["usage"]["output_tokens"], 25);
    assert_eq!(done["usage"]["input_tokens"], responses_expected(o200k()));
    // truncated stream ends with response.incomplete
    let body = json!({"model": "gpt-4.1", "input": "x", "stream": true, "max_output_tokens": 16});
    let r = post(&sim, "/v1/responses", &ct, &body).await;
    let events = parse_sse(&r.body);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("response.incomplete"));
    assert_eq!(last.json()["response"]["usage"]["output_tokens"], 16);
}

// ----------------------------------------------------------- anthropic

fn claude_body() -> Value {
    json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there"},
            {"role": "user", "content": [
                {"type": "text", "text": "How are you?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]}
        ]
    })
}

fn claude_expected() -> usize {
    let b = cl100k();
    7 + count(b, "Be brief.")
        + (4 + count(b, "Hello"))
        + (4 + count(b, "Hi there"))
        + (4 + count(b, "How are you?") + 1600)
}

#[tokio::test]
async fn anthropic_plain() {
    let sim = start().await;
    let r = post(&sim, "/v1/messages", &[], &claude_body()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains_key("request-id"));
    let v = r.json();
    assert!(r.body.starts_with(r#"{"id":"msg_"#), "{}", r.body);
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-6");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    let text = v["content"][0]["text"].as_str().unwrap();
    let u = &v["usage"];
    assert_eq!(u["input_tokens"], claude_expected());
    assert_eq!(u["output_tokens"], count(cl100k(), text));
    assert_eq!(u["cache_creation_input_tokens"], 0);
    assert_eq!(u["cache_read_input_tokens"], 0);

    // system blocks, tool_use/tool_result and tools
    let body = json!({
        "model": "claude-haiku-4-5", "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
        ]
    });
    let v = post(&sim, "/v1/messages", &[], &body).await.json();
    let b = cl100k();
    let expected = 7
        + count(b, "Be brief.")
        + count(b, "Be kind.")
        + (4 + count(b, "Weather?"))
        + (4 + count(b, "get_weather") + count(b, r#"{"city":"Paris"}"#))
        + (4 + count(b, "sunny"))
        + count(
            b,
            r#"[{"input_schema":{"type":"object"},"name":"get_weather"}]"#,
        );
    assert_eq!(v["usage"]["input_tokens"], expected);
}

#[tokio::test]
async fn anthropic_requires_max_tokens_and_truncates() {
    let sim = start().await;
    let mut body = claude_body();
    body.as_object_mut().unwrap().remove("max_tokens");
    let r = post(&sim, "/v1/messages", &[], &body).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );

    let mut body = claude_body();
    body["max_tokens"] = json!(6);
    let v = post(
        &sim,
        "/v1/messages",
        &[("x-sim-completion-tokens", "50")],
        &body,
    )
    .await
    .json();
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 6);
    assert_eq!(
        count(cl100k(), v["content"][0]["text"].as_str().unwrap()),
        6
    );
}

#[tokio::test]
async fn anthropic_stream() {
    let sim = start().await;
    let mut body = claude_body();
    body["stream"] = json!(true);
    let r = post(
        &sim,
        "/v1/messages",
        &[("x-sim-completion-tokens", "33")],
        &body,
    )
    .await;
    assert_sse(&r);
    let events = parse_sse(&r.body);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    let datas: Vec<Value> = events.iter().map(Ev::json).collect();
    for (n, d) in names.iter().zip(&datas) {
        assert_eq!(&d["type"], *n);
    }
    let k = names.len();
    assert_eq!(
        &names[..3],
        ["message_start", "content_block_start", "ping"]
    );
    assert_eq!(
        &names[k - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(names[3..k - 3].iter().all(|n| *n == "content_block_delta"));
    let start = &datas[0]["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null());
    assert_eq!(start["usage"]["input_tokens"], claude_expected());
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(start["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(
        datas[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = datas[3..k - 3]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            assert_eq!(d["index"], 0);
            d["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(count(cl100k(), &text), 33);
    let delta = &datas[k - 2];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["delta"]["stop_sequence"].is_null());
    assert_eq!(delta["usage"]["output_tokens"], 33);
    // same text as the plain request
    let mut plain = claude_body();
    plain["stream"] = json!(false);
    let v = post(
        &sim,
        "/v1/messages",
        &[("x-sim-completion-tokens", "33")],
        &plain,
    )
    .await
    .json();
    assert_eq!(v["content"][0]["text"], text.as_str());
}

#[tokio::test]
async fn anthropic_count_tokens() {
    let sim = start().await;
    let mut body = claude_body();
    body.as_object_mut().unwrap().remove("max_tokens");
    let r = post(&sim, "/v1/messages/count_tokens", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"input_tokens": claude_expected()}));
}

// ------------------------------------------------------------ injection

#[tokio::test]
async fn cached_tokens_headers() {
    let sim = start().await;
    let h = [
        ("x-sim-cached-tokens", "10"),
        ("x-sim-cache-creation-tokens", "4"),
    ];
    let v = post(&sim, "/v1/chat/completions", &h, &chat_body("gpt-4o"))
        .await
        .json();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 10);
    assert_eq!(v["usage"]["prompt_tokens"], chat_expected_prompt(o200k()));
    let body = json!({"model": "gpt-4.1", "input": "Hi"});
    let v = post(&sim, "/v1/responses", &h, &body).await.json();
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 10);
    let r = post(&sim, "/v1/messages", &h, &claude_body()).await;
    assert_eq!(
        r.header("x-sim-prompt-tokens"),
        claude_expected().to_string()
    );
    let v = r.json();
    assert_eq!(v["usage"]["cache_read_input_tokens"], 10);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 4);
    assert_eq!(v["usage"]["input_tokens"], claude_expected() - 14);
    let mut body = claude_body();
    body["stream"] = json!(true);
    let r = post(&sim, "/v1/messages", &h, &body).await;
    let start = parse_sse(&r.body)[0].json();
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 10);
    assert_eq!(
        start["message"]["usage"]["input_tokens"],
        claude_expected() - 14
    );
}

#[tokio::test]
async fn omit_usage_everywhere() {
    let sim = start().await;
    let h = [("x-sim-omit-usage", "1")];
    let v = post(&sim, "/v1/chat/completions", &h, &chat_body("gpt-4o"))
        .await
        .json();
    assert!(v.get("usage").is_none());
    assert!(v["choices"][0]["message"]["content"].is_string());

    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&sim, "/v1/chat/completions", &h, &body).await;
    let events = parse_sse(&r.body);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    for e in &events[..events.len() - 1] {
        let v = e.json();
        assert!(v.get("usage").is_none(), "{v}");
        assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    }

    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Hi"});
    let v = post(&sim, "/v1/completions", &h, &body).await.json();
    assert!(v.get("usage").is_none());

    let body = json!({"model": "gpt-4.1", "input": "Hi"});
    let v = post(&sim, "/v1/responses", &h, &body).await.json();
    assert!(v.get("usage").is_none());
    let body = json!({"model": "gpt-4.1", "input": "Hi", "stream": true});
    let r = post(&sim, "/v1/responses", &h, &body).await;
    assert!(!r.body.contains("\"usage\""), "{}", r.body);

    let v = post(&sim, "/v1/messages", &h, &claude_body()).await.json();
    assert!(v.get("usage").is_none());
    let mut body = claude_body();
    body["stream"] = json!(true);
    let r = post(&sim, "/v1/messages", &h, &body).await;
    let events = parse_sse(&r.body);
    assert!(events[0].json()["message"].get("usage").is_none());
    let delta = events
        .iter()
        .find(|e| e.event.as_deref() == Some("message_delta"))
        .unwrap()
        .json();
    assert!(delta.get("usage").is_none());
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn injected_errors_openai() {
    let sim = start().await;
    let cases = [
        ("429", "requests", Some("rate_limit_exceeded")),
        ("500", "server_error", None),
        ("503", "server_error", None),
        ("529", "server_error", None),
        ("400", "invalid_request_error", None),
    ];
    for path in ["/v1/chat/completions", "/v1/responses", "/v1/completions"] {
        for (status, kind, code) in cases {
            let r = post(
                &sim,
                path,
                &[("x-sim-status", status)],
                &chat_body("gpt-4o"),
            )
            .await;
            assert_eq!(r.status.to_string(), status, "{path}");
            let v = r.json();
            let e = &v["error"];
            assert_eq!(e["type"], kind, "{path} {status}");
            assert!(e["message"].is_string());
            assert!(e.as_object().unwrap().contains_key("param"));
            assert_eq!(e["code"], json!(code));
            assert_eq!(r.headers.contains_key("retry-after"), status == "429");
        }
    }
    let r = post(
        &sim,
        "/v1/chat/completions",
        &[("x-sim-status", "429")],
        &chat_body("gpt-4o"),
    )
    .await;
    assert_eq!(r.header("retry-after"), "1");
}

#[tokio::test]
async fn injected_errors_anthropic() {
    let sim = start().await;
    for (status, kind) in [
        ("429", "rate_limit_error"),
        ("529", "overloaded_error"),
        ("500", "api_error"),
        ("400", "invalid_request_error"),
    ] {
        let r = post(
            &sim,
            "/v1/messages",
            &[("x-sim-status", status)],
            &claude_body(),
        )
        .await;
        assert_eq!(r.status.to_string(), status);
        let v = r.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind);
        assert!(v["error"]["message"].is_string());
        assert_eq!(r.headers.contains_key("retry-after"), status == "429");
    }
}

#[tokio::test]
async fn malformed_json_and_unknown_paths() {
    let sim = start().await;
    let r = post_raw(&sim, "/v1/chat/completions", &[], "{not json".into()).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("parse the JSON")
    );
    let r = post_raw(&sim, "/v1/messages", &[], "{not json".into()).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = post_raw(&sim, "/v1/nope", &[], "{}".into()).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn latency_and_chunk_delay() {
    let sim = start().await;
    let t = Instant::now();
    let r = post(
        &sim,
        "/v1/chat/completions",
        &[("x-sim-latency-ms", "150")],
        &chat_body("gpt-4o"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    let t = Instant::now();
    let r = post(
        &sim,
        "/v1/chat/completions",
        &[
            ("x-sim-chunk-delay-ms", "20"),
            ("x-sim-completion-tokens", "6"),
        ],
        &body,
    )
    .await;
    let events = parse_sse(&r.body);
    let gaps = (events.len() - 1) as u32;
    assert!(
        t.elapsed() >= Duration::from_millis(20) * gaps,
        "{:?} {gaps}",
        t.elapsed()
    );

    // config latency, overridden by the header
    let slow = sim::spawn(SimConfig {
        latency: Duration::from_millis(120),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let t = Instant::now();
    post(&slow, "/v1/messages", &[], &claude_body()).await;
    assert!(t.elapsed() >= Duration::from_millis(120));
    let t = Instant::now();
    post(
        &slow,
        "/v1/messages",
        &[("x-sim-latency-ms", "0")],
        &claude_body(),
    )
    .await;
    assert!(t.elapsed() < Duration::from_millis(120));
}

/// Read a streaming body until it ends or fails: (bytes, failed).
async fn read_until_error(
    sim: &SimHandle,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (String, bool) {
    let mut req = reqwest::Client::new()
        .post(sim.url(path))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut stream = r.bytes_stream();
    let mut buf = Vec::new();
    let mut failed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => buf.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    (String::from_utf8(buf).unwrap(), failed)
}

#[tokio::test]
async fn fail_mid_stream() {
    let sim = start().await;
    let h = [
        ("x-sim-fail-mid-stream", "3"),
        ("x-sim-completion-tokens", "40"),
    ];
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (text, failed) = read_until_error(&sim, "/v1/chat/completions", &h, &body).await;
    assert!(failed, "the connection must be aborted");
    assert!(!text.contains("[DONE]"));
    let events = parse_sse_prefix(&text);
    assert_eq!(events.len(), 1 + 3, "role chunk + 3 content chunks: {text}");

    let mut body = claude_body();
    body["stream"] = json!(true);
    let (text, failed) = read_until_error(&sim, "/v1/messages", &h, &body).await;
    assert!(failed);
    let events = parse_sse_prefix(&text);
    let deltas = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .count();
    assert_eq!(deltas, 3);
    assert!(!text.contains("message_stop"));

    let body = json!({"model": "gpt-4.1", "input": "Hi", "stream": true});
    let (text, failed) = read_until_error(
        &sim,
        "/v1/responses",
        &[("x-sim-fail-mid-stream", "0")],
        &body,
    )
    .await;
    assert!(failed);
    assert!(!text.contains("output_text.delta"));
    assert!(text.contains("response.content_part.added"));

    // a plain JSON response is cut in the middle
    let (text, failed) =
        read_until_error(&sim, "/v1/chat/completions", &h, &chat_body("gpt-4o")).await;
    assert!(failed);
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

// -------------------------------------------------------- introspection

#[tokio::test]
async fn recorded_requests() {
    let sim = start().await;
    let mut body = chat_body("gpt-4o");
    body["max_tokens"] = json!(42);
    post(&sim, "/v1/chat/completions", &[("x-test", "yes")], &body).await;
    post_raw(&sim, "/v1/messages", &[], "not json".into()).await;
    get(&sim, "/healthz", &[]).await;
    let r = get(&sim, "/_sim/requests", &[]).await;
    assert_eq!(r.status, 200);
    let list = r.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "healthz and /_sim are not recorded");
    assert_eq!(list[0]["method"], "POST");
    assert_eq!(list[0]["path"], "/v1/chat/completions");
    assert_eq!(list[0]["headers"]["x-test"], "yes");
    assert_eq!(list[0]["body"]["max_tokens"], 42);
    assert_eq!(list[1]["body"], "not json");
    assert_eq!(sim.requests().len(), 2);
    let typed: Vec<sim::RecordedRequest> = serde_json::from_str(&r.body).unwrap();
    assert_eq!(typed[0].body["model"], "gpt-4o");

    let del = reqwest::Client::new()
        .delete(sim.url("/_sim/requests"))
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success());
    assert_eq!(get(&sim, "/_sim/requests", &[]).await.json(), json!([]));

    // keeps the last 200
    for i in 0..205 {
        get(&sim, &format!("/v1/models?i={i}"), &[]).await;
    }
    let list = sim.requests();
    assert_eq!(list.len(), 200);
    assert_eq!(list[0].query.as_deref(), Some("i=5"));
    assert_eq!(list[199].query.as_deref(), Some("i=204"));
    sim.clear_requests();
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn models_and_health() {
    let sim = start().await;
    let v = get(&sim, "/v1/models", &[]).await.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert!(data.iter().any(|m| m["id"] == "gpt-4o"));
    assert!(
        data.iter()
            .all(|m| m["object"] == "model" && m["owned_by"].is_string())
    );
    let v = get(&sim, "/v1/models", &[("anthropic-version", "2023-06-01")])
        .await
        .json();
    assert_eq!(v["has_more"], false);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["type"] == "model")
    );
    let v = get(&sim, "/v1/models/gpt-4o-mini", &[]).await.json();
    assert_eq!(v["id"], "gpt-4o-mini");
    let r = get(&sim, "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
}

#[tokio::test]
async fn app_without_sockets() {
    use tower::ServiceExt;
    let app = sim::app(SimConfig::default());
    let req = axum::http::Request::post("/v1/messages")
        .header("content-type", "application/json")
        .header("x-sim-completion-tokens", "5")
        .body(axum::body::Body::from(claude_body().to_string()))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sim-model"], "claude-sonnet-4-6");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sim::serve(listener, SimConfig::default(), async {
        let _ = rx.await;
    }));
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
