//! Prefix-cache hints: make the providers' (and self-hosted pools') prompt caches hit.
//!
//! The **stable prefix** of a request is everything but its final turn: tools, system prompt /
//! instructions and all earlier messages. It is rendered canonically (fixed markers per part,
//! object keys sorted, text parts as text) so key order and whitespace in the client's JSON do
//! not matter.
//!
//! - [`prefix_key`]: token-exact key for `x-tollgate-prefix-key`. The rendered prefix is encoded
//!   with the model's BPE and hashed in fixed blocks of `block_tokens` tokens, each block's hash
//!   chained on the previous one (like vLLM's block hashes); the key is the hash of the last full
//!   block. Two requests with the same prefix get the same key whatever their final turn, so a
//!   ring-hash/maglev load balancer keeps them on the replica whose KV cache holds the prefix. A
//!   prefix shorter than one block has no key (nothing worth pinning).
//! - [`prompt_cache_key_edit`]: OpenAI `prompt_cache_key` (hash of the stable prefix) when the
//!   client did not set one.
//! - [`anthropic_breakpoints`]: `cache_control: {"type":"ephemeral"}` on the last tool, the last
//!   system block and the end of a long message prefix, at most 4 in the request (Anthropic's
//!   limit), never on a block that already has one; only when the caller says the prefix is hot.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tollgate_bpe::Encoding;
use tollgate_wire::Api;

use crate::json::Edit;

/// Default block size of the prefix key, in tokens.
pub const DEFAULT_BLOCK_TOKENS: usize = 256;
/// Anthropic accepts at most this many `cache_control` breakpoints per request.
pub const MAX_BREAKPOINTS: usize = 4;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Text of a content value; non-text parts as compact JSON (sorted keys).
fn render_content(out: &mut String, c: &Value) {
    match c {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        Value::Array(parts) => {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text" | "input_text" | "output_text"), Some(t)) => out.push_str(t),
                    _ => out.push_str(&strip_cache_control(p).to_string()),
                }
            }
        }
        other => out.push_str(&strip_cache_control(other).to_string()),
    }
}

/// A copy without `cache_control` markers (they are hints, not content).
fn strip_cache_control(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "cache_control")
                .map(|(k, v)| (k.clone(), strip_cache_control(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_cache_control).collect()),
        other => other.clone(),
    }
}

fn render_message(out: &mut String, m: &Value) {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("item");
    out.push_str("<|");
    out.push_str(role);
    out.push_str("|>\n");
    render_content(out, m.get("content").unwrap_or(&Value::Null));
    // Tool calls, tool results and Responses items (function_call, function_call_output).
    for key in [
        "name",
        "tool_calls",
        "function_call",
        "tool_call_id",
        "type",
        "call_id",
        "arguments",
        "output",
    ] {
        match m.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                out.push_str("\n<|");
                out.push_str(key);
                out.push_str("|>");
                out.push_str(s);
            }
            Some(v) => {
                out.push_str("\n<|");
                out.push_str(key);
                out.push_str("|>");
                out.push_str(&strip_cache_control(v).to_string());
            }
        }
    }
    out.push('\n');
}

/// The canonical text of a request's stable prefix; `None` for APIs without one (completions)
/// or bodies without a conversation. May be empty (a single-turn request with no system).
pub fn stable_prefix(api: Api, body: &Value) -> Option<String> {
    let mut out = String::new();
    for key in ["tools", "functions"] {
        if let Some(t) = body.get(key).filter(|t| !t.is_null()) {
            out.push_str("<|tools|>\n");
            out.push_str(&strip_cache_control(t).to_string());
            out.push('\n');
        }
    }
    let items: &[Value] = match api {
        Api::OpenAiCompletions => return None,
        Api::OpenAiChat | Api::AnthropicMessages => {
            if let Some(s) = body.get("system") {
                out.push_str("<|system|>\n");
                render_content(&mut out, s);
                out.push('\n');
            }
            body.get("messages")?.as_array()?
        }
        Api::OpenAiResponses => {
            if let Some(s) = body.get("instructions").and_then(Value::as_str) {
                out.push_str("<|system|>\n");
                out.push_str(s);
                out.push('\n');
            }
            match body.get("input")? {
                Value::String(_) => &[],
                Value::Array(a) => a,
                _ => return None,
            }
        }
    };
    let prefix = items.split_last().map(|(_, rest)| rest).unwrap_or(&[]);
    for m in prefix {
        render_message(&mut out, m);
    }
    Some(out)
}

/// A prefix key for `x-tollgate-prefix-key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixKey {
    /// 32 hex digits.
    pub key: String,
    /// Full blocks hashed.
    pub blocks: usize,
    /// Tokens in the stable prefix (the partial last block included).
    pub prefix_tokens: usize,
}

/// Chained block hashes of `tokens`: one 32-byte hash per full block of `block_tokens`.
pub fn block_hashes(seed: &[u8], tokens: &[u32], block_tokens: usize) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    if block_tokens == 0 {
        return out;
    }
    let mut prev: [u8; 32] = Sha256::digest(seed).into();
    for block in tokens.chunks_exact(block_tokens) {
        let mut h = Sha256::new();
        h.update(prev);
        for t in block {
            h.update(t.to_le_bytes());
        }
        prev = h.finalize().into();
        out.push(prev);
    }
    out
}

/// Token-exact prefix key of a request for `model` (the model actually sent upstream), or `None`
/// when the stable prefix is shorter than one block.
pub fn prefix_key(
    api: Api,
    body: &Value,
    model: &str,
    encoding: Encoding,
    block_tokens: usize,
) -> Option<PrefixKey> {
    let text = stable_prefix(api, body)?;
    let tokens = encoding.encode(&text);
    let seed = format!("tollgate-prefix/v1\n{}\n{model}", encoding.name());
    let hashes = block_hashes(seed.as_bytes(), &tokens, block_tokens);
    let last = hashes.last()?;
    Some(PrefixKey {
        key: hex(last.get(..16).unwrap_or(last)),
        blocks: hashes.len(),
        prefix_tokens: tokens.len(),
    })
}

/// OpenAI `prompt_cache_key` edit (`"tg-" + 32 hex` of the model and stable prefix), when the
/// request has none and has a non-empty stable prefix. Chat and Responses only.
pub fn prompt_cache_key_edit(api: Api, body: &Value, model: &str) -> Option<Edit> {
    if !matches!(api, Api::OpenAiChat | Api::OpenAiResponses)
        || body.get("prompt_cache_key").is_some()
    {
        return None;
    }
    let text = stable_prefix(api, body)?;
    if text.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    h.update(b"tollgate-pck/v1\n");
    h.update(model.as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    let d = h.finalize();
    let key = format!("tg-{}", hex(d.get(..16).unwrap_or(&d)));
    Some(Edit::Set {
        key: "prompt_cache_key".into(),
        raw: Value::String(key).to_string(),
    })
}

fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// Counts `cache_control` markers anywhere in `v`.
fn count_markers(v: &Value) -> usize {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| usize::from(k == "cache_control") + count_markers(v))
            .fold(0, usize::saturating_add),
        Value::Array(a) => a.iter().map(count_markers).fold(0, usize::saturating_add),
        _ => 0,
    }
}

/// Blocks that may carry a breakpoint (not thinking blocks, not empty text).
fn markable(block: &Value) -> bool {
    let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
    if matches!(kind, "thinking" | "redacted_thinking") {
        return false;
    }
    if kind == "text" {
        return block
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
    }
    block.is_object()
}

/// Marks the last markable block of a content value (a string becomes one text block). Returns
/// the new content, or `None` when it already has a marker there or nothing can be marked.
fn mark_content(content: &Value) -> Option<Value> {
    match content {
        Value::String(s) if !s.is_empty() => {
            Some(json!([{"type": "text", "text": s, "cache_control": ephemeral()}]))
        }
        Value::Array(blocks) => {
            let idx = blocks.iter().rposition(markable)?;
            let block = blocks.get(idx)?;
            if block.get("cache_control").is_some() {
                return None;
            }
            let mut new = blocks.clone();
            if let Some(Value::Object(m)) = new.get_mut(idx) {
                m.insert("cache_control".into(), ephemeral());
            }
            Some(Value::Array(new))
        }
        _ => None,
    }
}

/// Anthropic `cache_control` breakpoints for a hot prefix, as top-level edits of `tools`,
/// `system` and `messages`. In order, while fewer than [`MAX_BREAKPOINTS`] markers are in the
/// request: the last tool; the last system block; the last message before the final turn, when
/// the messages before the final turn hold at least `min_turn_tokens` tokens (counted with
/// `encoding`). Nothing when `hot` is false.
pub fn anthropic_breakpoints(
    body: &Value,
    hot: bool,
    encoding: Encoding,
    min_turn_tokens: u64,
) -> Vec<Edit> {
    let mut edits = Vec::new();
    if !hot {
        return edits;
    }
    let mut budget = MAX_BREAKPOINTS.saturating_sub(count_markers(body));
    let set = |key: &str, v: &Value| Edit::Set {
        key: key.into(),
        raw: v.to_string(),
    };

    if budget > 0
        && let Some(tools) = body.get("tools").and_then(Value::as_array)
        && let Some(Value::Object(last)) = tools.last()
        && !last.contains_key("cache_control")
    {
        let mut new = tools.clone();
        if let Some(Value::Object(m)) = new.last_mut() {
            m.insert("cache_control".into(), ephemeral());
        }
        edits.push(set("tools", &Value::Array(new)));
        budget -= 1;
    }

    if budget > 0
        && let Some(system) = body.get("system")
        && let Some(new) = mark_content(system)
    {
        edits.push(set("system", &new));
        budget -= 1;
    }

    if budget > 0
        && let Some(messages) = body.get("messages").and_then(Value::as_array)
        && let Some((_, prefix)) = messages.split_last()
        && let Some(last) = prefix.last()
    {
        let mut text = String::new();
        for m in prefix {
            render_message(&mut text, m);
        }
        if encoding.count(&text) as u64 >= min_turn_tokens
            && let Some(new_content) = last.get("content").and_then(mark_content)
        {
            let mut new = messages.clone();
            let idx = prefix.len().saturating_sub(1);
            if let Some(Value::Object(m)) = new.get_mut(idx) {
                m.insert("content".into(), new_content);
            }
            edits.push(set("messages", &Value::Array(new)));
        }
    }
    edits
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::json::apply;

    const ENC: Encoding = Encoding::O200kBase;

    fn system_prompt() -> String {
        "You are a meticulous support agent for ACME. Follow the policy. ".repeat(60)
    }

    fn chat(final_q: &str) -> Value {
        json!({"model":"m","messages":[
            {"role":"system","content":system_prompt()},
            {"role":"user","content":"earlier question"},
            {"role":"assistant","content":"earlier answer"},
            {"role":"user","content":final_q}]})
    }

    fn applied(body: &Value, edits: &[Edit]) -> Value {
        serde_json::from_slice(&apply(body.to_string().as_bytes(), edits).unwrap()).unwrap()
    }

    #[test]
    fn prefix_key_ignores_the_final_turn_and_key_order() {
        let a = prefix_key(Api::OpenAiChat, &chat("What is X?"), "m", ENC, 64).unwrap();
        let b = prefix_key(Api::OpenAiChat, &chat("Totally different"), "m", ENC, 64).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.key.len(), 32);
        assert!(a.blocks >= 2 && a.prefix_tokens >= a.blocks * 64);
        // Same JSON with keys reordered and whitespace: same key.
        let reordered = r#"{"messages":[{"content":"SYS","role":"system"},{"content":"earlier question","role":"user"},
            {"content":"earlier answer" , "role":"assistant"},{"content":"q","role":"user"}],"model":"m"}"#
            .replace("SYS", &system_prompt());
        let v: Value = serde_json::from_str(&reordered).unwrap();
        assert_eq!(prefix_key(Api::OpenAiChat, &v, "m", ENC, 64).unwrap(), a);
        // A different earlier turn, model or encoding changes it.
        let mut other = chat("What is X?");
        // (An earlier turn inside the partial last block would not: the key is the last full block.)
        other["messages"][0]["content"] = json!(format!("Be brief. {}", system_prompt()));
        assert_ne!(
            prefix_key(Api::OpenAiChat, &other, "m", ENC, 64)
                .unwrap()
                .key,
            a.key
        );
        assert_ne!(
            prefix_key(Api::OpenAiChat, &chat("x"), "m2", ENC, 64)
                .unwrap()
                .key,
            a.key
        );
        assert_ne!(
            prefix_key(Api::OpenAiChat, &chat("x"), "m", Encoding::Cl100kBase, 64)
                .unwrap()
                .key,
            a.key
        );
    }

    #[test]
    fn key_is_the_last_full_block_so_a_shared_head_shares_blocks() {
        let tokens: Vec<u32> = (0..1000).collect();
        let h = block_hashes(b"s", &tokens, 256);
        assert_eq!(h.len(), 3);
        let mut changed_tail = tokens.clone();
        changed_tail[900] = 7; // in the partial block: no effect
        assert_eq!(block_hashes(b"s", &changed_tail, 256), h);
        let mut changed_second = tokens.clone();
        changed_second[300] = 7;
        let h2 = block_hashes(b"s", &changed_second, 256);
        assert_eq!(h2[0], h[0]);
        assert_ne!(h2[1], h[1]);
        assert_ne!(h2[2], h[2], "chained");
        assert!(block_hashes(b"s", &tokens, 0).is_empty());
        // Short prefixes have no key.
        let short =
            json!({"messages":[{"role":"system","content":"hi"},{"role":"user","content":"q"}]});
        assert!(prefix_key(Api::OpenAiChat, &short, "m", ENC, 256).is_none());
        assert!(prefix_key(Api::OpenAiCompletions, &json!({"prompt":"x"}), "m", ENC, 1).is_none());
    }

    #[test]
    fn anthropic_and_responses_prefixes() {
        let a = json!({"system":[{"type":"text","text":system_prompt()}],"messages":[{"role":"user","content":"q1"}]});
        let mut b = a.clone();
        b["system"][0]["cache_control"] = ephemeral();
        b["messages"][0]["content"] = json!("q2");
        let ka = prefix_key(Api::AnthropicMessages, &a, "c", Encoding::Cl100kBase, 32).unwrap();
        let kb = prefix_key(Api::AnthropicMessages, &b, "c", Encoding::Cl100kBase, 32).unwrap();
        assert_eq!(ka, kb, "cache_control markers are not content");
        let r = json!({"instructions":system_prompt(),"input":"q"});
        assert!(prefix_key(Api::OpenAiResponses, &r, "g", ENC, 32).is_some());
    }

    #[test]
    fn prompt_cache_key_is_set_only_when_absent() {
        let e = prompt_cache_key_edit(Api::OpenAiChat, &chat("a"), "gpt-4o").unwrap();
        assert_eq!(
            e,
            prompt_cache_key_edit(Api::OpenAiChat, &chat("b"), "gpt-4o").unwrap()
        );
        let out = applied(&chat("a"), &[e]);
        let key = out["prompt_cache_key"].as_str().unwrap();
        assert!(key.starts_with("tg-") && key.len() == 35);
        let mut has = chat("a");
        has["prompt_cache_key"] = json!("mine");
        assert!(prompt_cache_key_edit(Api::OpenAiChat, &has, "gpt-4o").is_none());
        let single = json!({"messages":[{"role":"user","content":"q"}]});
        assert!(prompt_cache_key_edit(Api::OpenAiChat, &single, "gpt-4o").is_none());
        assert!(prompt_cache_key_edit(Api::AnthropicMessages, &chat("a"), "c").is_none());
        let r = json!({"instructions":"be brief","input":"q"});
        assert!(prompt_cache_key_edit(Api::OpenAiResponses, &r, "gpt-4.1").is_some());
    }

    fn anthropic_body() -> Value {
        json!({"model":"claude-sonnet-4-5","max_tokens":10,
            "system":"You are helpful.",
            "tools":[{"name":"a","input_schema":{}},{"name":"b","input_schema":{}}],
            "messages":[
              {"role":"user","content":"long doc ".repeat(300)},
              {"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"ok"}]},
              {"role":"user","content":"final"}]})
    }

    #[test]
    fn breakpoints_on_tools_system_and_long_prefix_when_hot() {
        let body = anthropic_body();
        assert!(anthropic_breakpoints(&body, false, Encoding::Cl100kBase, 0).is_empty());
        let edits = anthropic_breakpoints(&body, true, Encoding::Cl100kBase, 500);
        assert_eq!(edits.len(), 3);
        let out = applied(&body, &edits);
        assert_eq!(out["tools"][1]["cache_control"], ephemeral());
        assert!(out["tools"][0].get("cache_control").is_none());
        assert_eq!(
            out["system"],
            json!([{"type":"text","text":"You are helpful.","cache_control":{"type":"ephemeral"}}])
        );
        // Last block of the last prefix message, not the thinking block, not the final turn.
        assert_eq!(
            out["messages"][1]["content"][1]["cache_control"],
            ephemeral()
        );
        assert!(
            out["messages"][1]["content"][0]
                .get("cache_control")
                .is_none()
        );
        assert_eq!(out["messages"][2], body["messages"][2]);
        assert_eq!(count_markers(&out), 3);
        // Applying again adds nothing (no duplicates).
        assert!(anthropic_breakpoints(&out, true, Encoding::Cl100kBase, 500).is_empty());
        // A short prefix gets no message breakpoint.
        let edits = anthropic_breakpoints(&body, true, Encoding::Cl100kBase, 100_000);
        assert_eq!(edits.len(), 2);
    }

    #[test]
    fn breakpoints_respect_the_limit_of_four() {
        let mut body = anthropic_body();
        body["system"] = json!([
            {"type":"text","text":"a","cache_control":{"type":"ephemeral"}},
            {"type":"text","text":"b","cache_control":{"type":"ephemeral"}},
            {"type":"text","text":"c"}]);
        body["messages"][0]["content"] =
            json!([{"type":"text","text":"d","cache_control":{"type":"ephemeral"}}]);
        // Three present: only the tool marker fits.
        let edits = anthropic_breakpoints(&body, true, Encoding::Cl100kBase, 0);
        assert_eq!(edits.len(), 1);
        let out = applied(&body, &edits);
        assert_eq!(count_markers(&out), MAX_BREAKPOINTS);
        assert!(anthropic_breakpoints(&out, true, Encoding::Cl100kBase, 0).is_empty());
    }

    #[test]
    fn odd_anthropic_bodies_do_not_panic() {
        for body in [
            json!({}),
            json!({"system":"","tools":[],"messages":[]}),
            json!({"system":5,"tools":[1],"messages":[{"role":"user"}]}),
            json!({"messages":[{"role":"user","content":[]},{"role":"user","content":"x"}]}),
        ] {
            let edits = anthropic_breakpoints(&body, true, ENC, 0);
            let _ = applied(&body, &edits);
        }
    }
}
