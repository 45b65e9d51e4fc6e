//! Context trimming: drop the oldest turns of a conversation until it fits `maxInputTokens`.
//!
//! A conversation is cut into *exchanges*: each starts at a user message that asks something
//! (not an Anthropic `tool_result` carrier) and runs up to the next one, so an assistant's tool
//! calls and their results always go together, and what remains still starts with a user turn
//! (Anthropic requires it). Exchanges are dropped oldest first. Never dropped: OpenAI `system` /
//! `developer` messages (kept in place), Anthropic's top-level `system`, tools, and the final
//! exchange (the final user turn and anything after it, e.g. a running tool loop). When even that
//! does not fit, the body is left unchanged and the outcome says so.
//!
//! Token counts follow the chat-format estimate of [`crate::request`] (per-message overhead,
//! role, text, compact JSON of tool calls and non-text parts, images at a fixed estimate), scaled
//! for estimated tokenizers, so they are comparable to `ParsedRequest::prompt_tokens`.

use serde_json::Value;
use tollgate_wire::Api;

use crate::count::{
    ANTHROPIC_BASE_TOKENS, ANTHROPIC_TOKENS_PER_MESSAGE, IMAGE_DEFAULT_TOKENS, REPLY_PRIMING,
    TOKENS_PER_MESSAGE, Tokenizer,
};
use crate::json::Edit;

/// What trimming did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrimOutcome {
    /// Body edits (a new `messages` array); empty when nothing was dropped.
    pub edits: Vec<Edit>,
    pub tokens_before: u64,
    pub tokens_after: u64,
    /// `tokens_before - tokens_after`: the value for the "tokens cut" header.
    pub tokens_cut: u64,
    pub messages_dropped: usize,
    /// False when the pinned part alone exceeds the limit (then nothing is dropped).
    pub fits: bool,
}

fn is_pinned_role(role: &str) -> bool {
    matches!(role, "system" | "developer")
}

fn role(m: &Value) -> &str {
    m.get("role").and_then(Value::as_str).unwrap_or("")
}

/// A user message that asks something (not only carrying Anthropic tool results).
fn starts_exchange(m: &Value) -> bool {
    if role(m) != "user" {
        return false;
    }
    match m.get("content") {
        Some(Value::Array(parts)) => !parts
            .iter()
            .any(|p| p.get("type").and_then(Value::as_str) == Some("tool_result")),
        _ => true,
    }
}

struct Counter {
    tokenizer: Tokenizer,
}

impl Counter {
    fn text(&self, s: &str) -> u64 {
        self.tokenizer.encoding().count(s) as u64
    }

    fn json(&self, v: &Value) -> u64 {
        self.text(&v.to_string())
    }

    fn content(&self, c: &Value) -> u64 {
        match c {
            Value::Null => 0,
            Value::String(s) => self.text(s),
            Value::Array(parts) => parts
                .iter()
                .map(|p| {
                    let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                    match kind {
                        "image_url" | "image" | "input_image" | "document" | "input_audio"
                        | "file" => IMAGE_DEFAULT_TOKENS,
                        _ => match p.get("text").and_then(Value::as_str) {
                            Some(t) => self.text(t),
                            None => self.json(p),
                        },
                    }
                })
                .fold(0u64, u64::saturating_add),
            other => self.json(other),
        }
    }

    /// Raw (unscaled) tokens of one message.
    fn message(&self, api: Api, m: &Value) -> u64 {
        let overhead = if api.is_anthropic() {
            ANTHROPIC_TOKENS_PER_MESSAGE
        } else {
            TOKENS_PER_MESSAGE
        };
        let mut n = overhead
            .saturating_add(self.text(role(m)))
            .saturating_add(self.content(m.get("content").unwrap_or(&Value::Null)));
        for key in ["name", "tool_calls", "function_call", "tool_call_id"] {
            match m.get(key) {
                Some(Value::String(s)) => n = n.saturating_add(self.text(s)),
                Some(v @ (Value::Array(_) | Value::Object(_))) => {
                    n = n.saturating_add(self.json(v))
                }
                _ => {}
            }
        }
        n
    }
}

/// Trims a chat (`messages`) body to `max_input_tokens`. `None` when the API has no message list
/// to trim (completions, responses) or the body has no `messages` array.
pub fn trim(
    api: Api,
    body: &Value,
    tokenizer: Tokenizer,
    max_input_tokens: u64,
) -> Option<TrimOutcome> {
    if !matches!(api, Api::OpenAiChat | Api::AnthropicMessages) {
        return None;
    }
    let messages = body.get("messages")?.as_array()?;
    let c = Counter { tokenizer };
    let mut fixed = if api.is_anthropic() {
        ANTHROPIC_BASE_TOKENS
    } else {
        REPLY_PRIMING
    };
    if let Some(s) = body.get("system") {
        fixed = fixed.saturating_add(c.content(s));
    }
    for key in ["tools", "functions"] {
        if let Some(t) = body.get(key) {
            fixed = fixed.saturating_add(c.json(t));
        }
    }
    let sizes: Vec<u64> = messages.iter().map(|m| c.message(api, m)).collect();
    let raw_total = sizes.iter().fold(fixed, |a, &b| a.saturating_add(b));
    let tokens_before = tokenizer.scale(raw_total);
    let unchanged = |fits| TrimOutcome {
        tokens_before,
        tokens_after: tokens_before,
        fits,
        ..TrimOutcome::default()
    };
    if tokens_before <= max_input_tokens {
        return Some(unchanged(true));
    }

    // Droppable exchanges: message indices from one exchange start to the next, excluding
    // pinned roles. The final exchange is never dropped.
    let Some(last_start) = messages.iter().rposition(starts_exchange) else {
        return Some(unchanged(false));
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, m) in messages.iter().enumerate().take(last_start) {
        if is_pinned_role(role(m)) {
            continue;
        }
        if starts_exchange(m) || groups.is_empty() {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push(i);
        }
    }

    let mut drop = vec![false; messages.len()];
    let mut raw = raw_total;
    let mut dropped = 0usize;
    for g in &groups {
        if tokenizer.scale(raw) <= max_input_tokens {
            break;
        }
        for &i in g {
            if let Some(d) = drop.get_mut(i) {
                *d = true;
            }
            raw = raw.saturating_sub(sizes.get(i).copied().unwrap_or(0));
            dropped += 1;
        }
    }
    let tokens_after = tokenizer.scale(raw);
    if tokens_after > max_input_tokens || dropped == 0 {
        return Some(unchanged(false));
    }
    let kept: Vec<&Value> = messages
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(m, _)| m)
        .collect();
    let raw_json = serde_json::to_string(&kept).ok()?;
    Some(TrimOutcome {
        edits: vec![Edit::Set {
            key: "messages".into(),
            raw: raw_json,
        }],
        tokens_before,
        tokens_after,
        tokens_cut: tokens_before.saturating_sub(tokens_after),
        messages_dropped: dropped,
        fits: true,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::count::CountCache;
    use crate::json::apply;
    use serde_json::json;
    use tollgate_bpe::Encoding;

    const EXACT: Tokenizer = Tokenizer::Exact(Encoding::O200kBase);

    fn long(tag: &str) -> String {
        format!("{tag}: {}", "lorem ipsum dolor sit amet ".repeat(40))
    }

    fn run(api: Api, body: &Value, max: u64) -> (TrimOutcome, Value) {
        let out = trim(api, body, EXACT, max).unwrap();
        let bytes = body.to_string();
        let new = apply(bytes.as_bytes(), &out.edits).unwrap();
        (out, serde_json::from_slice(&new).unwrap())
    }

    fn roles_and_tags(v: &Value) -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let c = m["content"].to_string();
                let tag = c.get(1..3).unwrap_or("").to_string();
                format!("{}:{tag}", m["role"].as_str().unwrap())
            })
            .collect()
    }

    fn chat() -> Value {
        json!({"model":"gpt-4o","messages":[
            {"role":"system","content":"You are terse."},
            {"role":"user","content":long("u1")},
            {"role":"assistant","content":long("a1")},
            {"role":"user","content":long("u2")},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":long("t2")},
            {"role":"assistant","content":long("a2")},
            {"role":"user","content":"u3: final question"}]})
    }

    #[test]
    fn fitting_bodies_are_left_alone() {
        let (out, _) = run(Api::OpenAiChat, &chat(), 1_000_000);
        assert!(out.fits && out.edits.is_empty());
        assert_eq!((out.tokens_cut, out.tokens_after), (0, out.tokens_before));
    }

    #[test]
    fn count_matches_the_request_parser_for_plain_chat() {
        let body = chat();
        let cfg = crate::config::Config::from_json(b"").unwrap();
        let parsed = crate::request::parse(
            Api::OpenAiChat,
            body.to_string().as_bytes(),
            &cfg,
            &mut CountCache::new(8, 1),
        )
        .unwrap();
        let out = trim(Api::OpenAiChat, &body, EXACT, u64::MAX).unwrap();
        // Same ballpark (the parser counts tool calls field by field).
        let diff = out.tokens_before.abs_diff(parsed.prompt_tokens);
        assert!(
            diff < 30,
            "{} vs {}",
            out.tokens_before,
            parsed.prompt_tokens
        );
    }

    #[test]
    fn drops_oldest_exchanges_keeping_system_and_final_turn() {
        let body = chat();
        let full = trim(Api::OpenAiChat, &body, EXACT, u64::MAX)
            .unwrap()
            .tokens_before;
        // Room for everything but the first exchange.
        let (out, new) = run(Api::OpenAiChat, &body, full - 100);
        assert!(out.fits);
        assert_eq!(out.messages_dropped, 2);
        assert!(out.tokens_after <= full - 100);
        assert_eq!(out.tokens_cut, out.tokens_before - out.tokens_after);
        assert_eq!(
            roles_and_tags(&new),
            [
                "system:Yo",
                "user:u2",
                "assistant:ul",
                "tool:t2",
                "assistant:a2",
                "user:u3"
            ]
        );
        // Tighter: the tool exchange goes as a whole.
        let (out, new) = run(Api::OpenAiChat, &body, 200);
        assert!(out.fits);
        assert_eq!(out.messages_dropped, 6);
        assert_eq!(roles_and_tags(&new), ["system:Yo", "user:u3"]);
        assert_eq!(new["model"], "gpt-4o");
    }

    #[test]
    fn cannot_fit_leaves_the_body_and_reports() {
        let body = json!({"model":"gpt-4o","messages":[
            {"role":"system","content":long("sys")},
            {"role":"user","content":long("u1")},
            {"role":"user","content":long("u2")}]});
        let out = trim(Api::OpenAiChat, &body, EXACT, 50).unwrap();
        assert!(!out.fits);
        assert!(out.edits.is_empty());
        assert_eq!((out.tokens_cut, out.messages_dropped), (0, 0));
        // Only a final turn: nothing droppable.
        let body = json!({"model":"gpt-4o","messages":[{"role":"user","content":long("u")}]});
        let out = trim(Api::OpenAiChat, &body, EXACT, 10).unwrap();
        assert!(!out.fits && out.edits.is_empty());
    }

    #[test]
    fn anthropic_keeps_tool_use_with_tool_result_and_starts_with_user() {
        let body = json!({"model":"claude-sonnet-4-5","max_tokens":100,"system":long("sys"),
            "tools":[{"name":"look","input_schema":{"type":"object"}}],
            "messages":[
            {"role":"user","content":long("u1")},
            {"role":"assistant","content":[{"type":"text","text":long("a1")},{"type":"tool_use","id":"t1","name":"look","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":long("r1")}]},
            {"role":"assistant","content":long("a1b")},
            {"role":"user","content":long("u2")},
            {"role":"assistant","content":long("a2")},
            {"role":"user","content":"u3 final"}]});
        let tok = Tokenizer::Estimate {
            encoding: Encoding::Cl100kBase,
            ratio_milli: 1100,
        };
        let full = trim(Api::AnthropicMessages, &body, tok, u64::MAX)
            .unwrap()
            .tokens_before;
        let out = trim(Api::AnthropicMessages, &body, tok, full - 10).unwrap();
        assert!(out.fits);
        assert_eq!(
            out.messages_dropped, 4,
            "tool_use and tool_result go together"
        );
        let new: Value =
            serde_json::from_slice(&apply(body.to_string().as_bytes(), &out.edits).unwrap())
                .unwrap();
        let msgs = new["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0]["role"], "user");
        assert!(msgs[0]["content"].as_str().unwrap().starts_with("u2"));
        assert_eq!(new["system"], body["system"]);
        assert_eq!(new["tools"], body["tools"]);
    }

    #[test]
    fn final_tool_loop_is_never_split() {
        let body = json!({"model":"gpt-4o","messages":[
            {"role":"user","content":long("u1")},
            {"role":"user","content":"do it"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c","content":long("big")}]});
        let (out, new) = run(Api::OpenAiChat, &body, 300);
        assert!(out.fits);
        assert_eq!(out.messages_dropped, 1);
        assert_eq!(new["messages"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn other_apis_and_odd_bodies() {
        assert!(trim(Api::OpenAiCompletions, &json!({"prompt":"x"}), EXACT, 1).is_none());
        assert!(trim(Api::OpenAiResponses, &json!({"input":"x"}), EXACT, 1).is_none());
        assert!(trim(Api::OpenAiChat, &json!({"messages":"x"}), EXACT, 1).is_none());
        // No user message at all: nothing to anchor on.
        let body = json!({"messages":[{"role":"assistant","content":long("a")}]});
        let out = trim(Api::OpenAiChat, &body, EXACT, 1).unwrap();
        assert!(!out.fits && out.edits.is_empty());
        let body = json!({"messages":[{"role":5,"content":{"weird":true}},{"role":"user","content":[1,2]}]});
        let out = trim(Api::OpenAiChat, &body, EXACT, 1).unwrap();
        assert!(out.tokens_before > 0);
    }
}
