//! Cache keys for a request: the exact key, the semantic partition, and the query text.
//!
//! Shared by the filter (every request) and the cache service (warming entries from Q/A pairs),
//! so both derive identical keys. Keys are SHA-256 hex: no prompt text appears in them.
//!
//! - **exact key** = tenant + API + model + the request body without fields that do not change
//!   the answer (`stream`, `stream_options`, `user`, `metadata`, `store`, `max_tokens`-like
//!   fields, provider cache hints). Serialised canonically (object keys sorted), so key order
//!   and whitespace do not matter.
//! - **partition** = tenant + API + model family (date suffix dropped) + sampling parameters and
//!   tools + everything before the final user turn (system prompt, earlier turns). Semantic
//!   matches are only searched within one partition.
//! - **query** = the final user turn's text (empty when the request does not end with a plain
//!   text user turn: then only exact hits are possible).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tollgate_wire::Api;

/// Fields that never change the answer.
const IGNORED: [&str; 11] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
];

/// The conversation-carrying fields of each API (excluded from the sampling-parameter part of
/// the partition and handled separately).
fn conversation_fields(api: Api) -> &'static [&'static str] {
    match api {
        Api::OpenAiChat => &["messages"],
        Api::OpenAiCompletions => &["prompt"],
        Api::OpenAiResponses => &["input", "instructions"],
        Api::AnthropicMessages => &["messages", "system"],
    }
}

/// Keys of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheKeys {
    pub exact_key: String,
    pub partition: String,
    pub query: String,
    pub temperature: Option<f64>,
    pub has_tools: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

/// `gpt-4o-2024-08-06` -> `gpt-4o`; `claude-3-5-sonnet-20241022` -> `claude-3-5-sonnet`.
pub fn model_family(model: &str) -> &str {
    let b = model.as_bytes();
    let is_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    // -YYYY-MM-DD
    if b.len() > 11 {
        let tail = &b[b.len() - 11..];
        if tail[0] == b'-'
            && is_digits(&tail[1..5])
            && tail[5] == b'-'
            && is_digits(&tail[6..8])
            && tail[8] == b'-'
            && is_digits(&tail[9..11])
        {
            return model.get(..model.len() - 11).unwrap_or(model);
        }
    }
    // -YYYYMMDD
    if b.len() > 9 {
        let tail = &b[b.len() - 9..];
        if tail[0] == b'-' && is_digits(&tail[1..]) {
            return model.get(..model.len() - 9).unwrap_or(model);
        }
    }
    model
}

/// Plain text of a content value (string, or text parts); `None` if it has non-text parts.
fn content_text(c: &Value) -> Option<String> {
    match c {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                if !matches!(kind, "text" | "input_text") {
                    return None;
                }
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(p.get("text").and_then(Value::as_str)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// Splits a conversation into (context, final user text).
fn split_last_user(messages: &[Value]) -> (Vec<Value>, String) {
    match messages.split_last() {
        Some((last, rest)) if last.get("role").and_then(Value::as_str) == Some("user") => {
            // A `name` on the final turn changes who asks: keep it in the context.
            let text = content_text(last.get("content").unwrap_or(&Value::Null));
            match text {
                Some(t) => {
                    let mut ctx = rest.to_vec();
                    if let Some(name) = last.get("name") {
                        ctx.push(serde_json::json!({"final_user_name": name}));
                    }
                    (ctx, t)
                }
                None => (messages.to_vec(), String::new()),
            }
        }
        _ => (messages.to_vec(), String::new()),
    }
}

/// Computes the cache keys of a parsed JSON request body.
pub fn keys(api: Api, tenant: &str, model: &str, body: &Value) -> Option<CacheKeys> {
    let obj = body.as_object()?;
    let mut exact: Map<String, Value> = Map::new();
    let mut params: Map<String, Value> = Map::new();
    let conv = conversation_fields(api);
    for (k, v) in obj {
        if IGNORED.contains(&k.as_str()) {
            continue;
        }
        exact.insert(k.clone(), v.clone());
        if !conv.contains(&k.as_str()) && k != "model" {
            params.insert(k.clone(), v.clone());
        }
    }
    let (context, query): (Value, String) = match api {
        Api::OpenAiChat | Api::AnthropicMessages => {
            let msgs = obj
                .get("messages")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let (ctx, q) = split_last_user(msgs);
            let system = obj.get("system").cloned().unwrap_or(Value::Null);
            (serde_json::json!({"system": system, "messages": ctx}), q)
        }
        Api::OpenAiCompletions => match obj.get("prompt") {
            Some(Value::String(p)) => (Value::Null, p.clone()),
            Some(other) => (other.clone(), String::new()),
            None => (Value::Null, String::new()),
        },
        Api::OpenAiResponses => {
            let instructions = obj.get("instructions").cloned().unwrap_or(Value::Null);
            match obj.get("input") {
                Some(Value::String(s)) => {
                    (serde_json::json!({"instructions": instructions}), s.clone())
                }
                Some(Value::Array(items)) => {
                    let (ctx, q) = split_last_user(items);
                    (
                        serde_json::json!({"instructions": instructions, "input": ctx}),
                        q,
                    )
                }
                _ => (
                    serde_json::json!({"instructions": instructions}),
                    String::new(),
                ),
            }
        }
    };
    let exact_json = Value::Object(exact).to_string();
    let params_json = Value::Object(params.clone()).to_string();
    let context_json = context.to_string();
    let has_tools = params
        .get("tools")
        .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()))
        || params.get("functions").is_some();
    Some(CacheKeys {
        exact_key: digest(&[
            b"exact/v1",
            tenant.as_bytes(),
            api.as_str().as_bytes(),
            model.as_bytes(),
            exact_json.as_bytes(),
        ]),
        partition: digest(&[
            b"partition/v1",
            tenant.as_bytes(),
            api.as_str().as_bytes(),
            model_family(model).as_bytes(),
            params_json.as_bytes(),
            context_json.as_bytes(),
        ]),
        query,
        temperature: obj.get("temperature").and_then(Value::as_f64),
        has_tools,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn k(api: Api, tenant: &str, body: Value) -> CacheKeys {
        let model = body["model"].as_str().unwrap().to_string();
        keys(api, tenant, &model, &body).unwrap()
    }

    fn chat(q: &str) -> Value {
        json!({"model": "gpt-4o", "temperature": 0, "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": q}]})
    }

    #[test]
    fn exact_key_ignores_streaming_limits_and_key_order() {
        let a = k(Api::OpenAiChat, "t", chat("What is Rust?"));
        let mut b = chat("What is Rust?");
        b["stream"] = json!(true);
        b["max_tokens"] = json!(77);
        b["user"] = json!("u-1");
        let b = k(Api::OpenAiChat, "t", b);
        assert_eq!(a.exact_key, b.exact_key);
        let reordered: Value = serde_json::from_str(
            r#"{"messages":[{"content":"You are helpful.","role":"system"},{"role":"user","content":"What is Rust?"}],"temperature":0,"model":"gpt-4o"}"#,
        )
        .unwrap();
        assert_eq!(a.exact_key, k(Api::OpenAiChat, "t", reordered).exact_key);
        assert_eq!(a.query, "What is Rust?");
        assert_eq!(a.exact_key.len(), 64);
    }

    #[test]
    fn tenants_never_share_keys() {
        let a = k(Api::OpenAiChat, "t1", chat("q"));
        let b = k(Api::OpenAiChat, "t2", chat("q"));
        assert_ne!(a.exact_key, b.exact_key);
        assert_ne!(a.partition, b.partition);
    }

    #[test]
    fn partition_depends_on_context_and_params_but_not_the_final_question() {
        let a = k(Api::OpenAiChat, "t", chat("What is Rust?"));
        let b = k(Api::OpenAiChat, "t", chat("Explain Rust"));
        assert_eq!(a.partition, b.partition);
        assert_ne!(a.exact_key, b.exact_key);
        let mut c = chat("What is Rust?");
        c["messages"][0]["content"] = json!("You are a pirate.");
        assert_ne!(a.partition, k(Api::OpenAiChat, "t", c).partition);
        let mut d = chat("What is Rust?");
        d["temperature"] = json!(0.9);
        assert_ne!(a.partition, k(Api::OpenAiChat, "t", d).partition);
        let mut e = chat("What is Rust?");
        e["model"] = json!("gpt-4o-2024-08-06");
        let e = k(Api::OpenAiChat, "t", e);
        assert_eq!(a.partition, e.partition, "same model family");
        assert_ne!(a.exact_key, e.exact_key, "but not the same exact request");
    }

    #[test]
    fn query_is_empty_unless_the_last_turn_is_user_text() {
        let mut a = chat("q");
        a["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "assistant", "content": "a"}));
        assert_eq!(k(Api::OpenAiChat, "t", a).query, "");
        let img = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert_eq!(k(Api::OpenAiChat, "t", img).query, "");
        let parts = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
        assert_eq!(k(Api::OpenAiChat, "t", parts).query, "a\nb");
    }

    #[test]
    fn other_apis() {
        let an = json!({"model": "claude-haiku-4-5", "max_tokens": 10, "system": "S", "messages": [{"role": "user", "content": "Hi"}]});
        let a = k(Api::AnthropicMessages, "t", an.clone());
        assert_eq!(a.query, "Hi");
        let mut an2 = an.clone();
        an2["system"] = json!("Other");
        assert_ne!(a.partition, k(Api::AnthropicMessages, "t", an2).partition);
        let r = k(
            Api::OpenAiResponses,
            "t",
            json!({"model": "gpt-4.1", "input": "Tell a joke", "instructions": "Be funny"}),
        );
        assert_eq!(r.query, "Tell a joke");
        let c = k(
            Api::OpenAiCompletions,
            "t",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon"}),
        );
        assert_eq!(c.query, "Once upon");
        // Same body on different APIs never shares keys.
        assert_ne!(
            k(Api::OpenAiChat, "t", chat("x")).exact_key,
            k(Api::AnthropicMessages, "t", chat("x")).exact_key
        );
    }

    #[test]
    fn tools_and_temperature_are_reported() {
        let mut a = chat("q");
        a["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        let a = k(Api::OpenAiChat, "t", a);
        assert!(a.has_tools);
        assert_eq!(a.temperature, Some(0.0));
    }

    #[test]
    fn model_families() {
        assert_eq!(model_family("gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(
            model_family("claude-3-5-sonnet-20241022"),
            "claude-3-5-sonnet"
        );
        assert_eq!(model_family("gpt-4o"), "gpt-4o");
        assert_eq!(model_family("o1"), "o1");
        assert_eq!(model_family("x-1234"), "x-1234");
    }
}
