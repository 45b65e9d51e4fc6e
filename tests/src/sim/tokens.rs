//! Token counting used by the simulator for the usage it reports.
//!
//! The formulas are documented in the module docs of [`crate::sim`]; every
//! function here is public so that tests (and the filter's estimator tests) can
//! compute the very same numbers independently of the HTTP layer.

use serde_json::Value;
use tiktoken_rs::{CoreBPE, Rank};

/// Fixed overhead added once when an OpenAI request carries a non-empty
/// `tools` (or legacy `functions`) array.
pub const OPENAI_TOOLS_OVERHEAD: usize = 8;
/// Tokens per message in the OpenAI cookbook formula.
pub const OPENAI_TOKENS_PER_MESSAGE: usize = 3;
/// Extra token when a message carries a `name`.
pub const OPENAI_TOKENS_PER_NAME: usize = 1;
/// Reply priming (`<|start|>assistant<|message|>`).
pub const OPENAI_REPLY_PRIMING: usize = 3;
/// Image part with `detail: "low"`.
pub const OPENAI_IMAGE_LOW: usize = 85;
/// Image part with any other detail (`high`, `auto`, absent).
pub const OPENAI_IMAGE_HIGH: usize = 765;
/// Claude: fixed base per request.
pub const CLAUDE_BASE: usize = 7;
/// Claude: overhead per message.
pub const CLAUDE_PER_MESSAGE: usize = 4;
/// Claude: tokens charged for one image block (any size; Anthropic's own
/// formula, width*height/750, caps around this value).
pub const CLAUDE_IMAGE: usize = 1600;

/// The tiktoken encodings the simulator uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `cl100k_base`: gpt-4, gpt-4-turbo, gpt-3.5*, unknown models, Claude.
    Cl100kBase,
    /// `o200k_base`: gpt-4o*, gpt-4.1*, gpt-5*, o1*/o3*/o4*, chatgpt-4o*.
    O200kBase,
}

const O200K_PREFIXES: [&str; 7] = ["gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o"];

impl Encoding {
    /// The encoding for a model name (a fine-tune `ft:BASE:...` uses BASE's).
    pub fn for_model(model: &str) -> Encoding {
        let lower = model.to_ascii_lowercase();
        let base = match lower.strip_prefix("ft:") {
            Some(rest) => rest.split(':').next().unwrap_or(rest).to_string(),
            None => lower,
        };
        if O200K_PREFIXES.iter().any(|p| base.starts_with(p)) {
            Encoding::O200kBase
        } else {
            Encoding::Cl100kBase
        }
    }

    /// The tiktoken name of the encoding.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
        }
    }

    /// The (lazily built, process-wide) tokenizer.
    pub fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        }
    }

    /// Ordinary encoding (special-token text is treated as plain text).
    pub fn encode(self, text: &str) -> Vec<Rank> {
        self.bpe().encode_ordinary(text)
    }

    /// Number of tokens of `text` (ordinary encoding).
    pub fn count(self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        self.bpe().encode_ordinary(text).len()
    }

    /// Decode tokens; invalid UTF-8 is replaced (never happens for the
    /// ASCII text the simulator generates).
    pub fn decode(self, tokens: &[Rank]) -> String {
        match self.bpe().decode_bytes(tokens) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => String::new(),
        }
    }
}

/// Whether a model is an Anthropic Claude model (`claude-*`).
pub fn is_claude(model: &str) -> bool {
    model.to_ascii_lowercase().starts_with("claude")
}

/// Compact JSON with object keys sorted, independent of serde_json features.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn str_tokens(enc: Encoding, v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, |s| enc.count(s))
}

/// OpenAI `tools` / `functions` cost: tokens of the canonical JSON of the
/// array plus [`OPENAI_TOOLS_OVERHEAD`]; 0 when absent or empty.
pub fn openai_tools_tokens(enc: Encoding, tools: Option<&Value>) -> usize {
    match tools {
        Some(Value::Array(items)) if !items.is_empty() => {
            enc.count(&canonical_json(&Value::Array(items.clone()))) + OPENAI_TOOLS_OVERHEAD
        }
        _ => 0,
    }
}

fn image_detail_tokens(detail: Option<&str>) -> usize {
    if detail == Some("low") {
        OPENAI_IMAGE_LOW
    } else {
        OPENAI_IMAGE_HIGH
    }
}

/// Tokens of an OpenAI message `content` (chat or Responses API): a string,
/// or an array of parts where `text`/`input_text`/`output_text` parts count
/// their `text`, `refusal` parts their `refusal`, `image_url` parts 85
/// (`detail: "low"`) or 765, `input_image` parts likewise (their `detail`),
/// and any other part 0.
pub fn openai_content_tokens(enc: Encoding, content: &Value) -> usize {
    match content {
        Value::String(s) => enc.count(s),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text" | "input_text" | "output_text") => str_tokens(enc, part.get("text")),
                Some("refusal") => str_tokens(enc, part.get("refusal")),
                Some("image_url") => image_detail_tokens(
                    part.get("image_url")
                        .and_then(|i| i.get("detail"))
                        .and_then(Value::as_str),
                ),
                Some("input_image") => {
                    image_detail_tokens(part.get("detail").and_then(Value::as_str))
                }
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

fn function_call_tokens(enc: Encoding, call: &Value) -> usize {
    str_tokens(enc, call.get("name")) + str_tokens(enc, call.get("arguments"))
}

/// Tokens of one chat message, without the per-message 3.
pub fn openai_message_body_tokens(enc: Encoding, message: &Value) -> usize {
    let Some(map) = message.as_object() else {
        return 0;
    };
    map.iter()
        .map(|(key, value)| match key.as_str() {
            "content" => openai_content_tokens(enc, value),
            "name" => str_tokens(enc, Some(value)) + OPENAI_TOKENS_PER_NAME,
            "tool_calls" => value.as_array().map_or(0, |calls| {
                calls
                    .iter()
                    .map(|c| {
                        c.get("function")
                            .map_or(0, |f| function_call_tokens(enc, f))
                    })
                    .sum()
            }),
            "function_call" => function_call_tokens(enc, value),
            _ => str_tokens(enc, Some(value)),
        })
        .sum()
}

/// Chat Completions prompt tokens (see the module docs of [`crate::sim`]).
pub fn openai_chat_prompt_tokens(
    enc: Encoding,
    messages: &[Value],
    tools: Option<&Value>,
) -> usize {
    let messages_tokens: usize = messages
        .iter()
        .map(|m| OPENAI_TOKENS_PER_MESSAGE + openai_message_body_tokens(enc, m))
        .sum();
    messages_tokens + OPENAI_REPLY_PRIMING + openai_tools_tokens(enc, tools)
}

/// Legacy Completions prompt: per prompt, its token count. A string is one
/// prompt, an array of strings several, an array of integers one
/// pre-tokenised prompt (its length), an array of integer arrays several.
pub fn openai_completion_prompts(enc: Encoding, prompt: &Value) -> Vec<(String, usize)> {
    match prompt {
        Value::String(s) => vec![(s.clone(), enc.count(s))],
        Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![(canonical_json(prompt), items.len())]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => (s.clone(), enc.count(s)),
                Value::Array(toks) => (canonical_json(item), toks.len()),
                other => (canonical_json(other), 0),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Responses API prompt tokens (see the module docs of [`crate::sim`]).
pub fn openai_responses_prompt_tokens(
    enc: Encoding,
    instructions: Option<&Value>,
    input: Option<&Value>,
    tools: Option<&Value>,
) -> usize {
    let mut total = OPENAI_REPLY_PRIMING;
    if let Some(Value::String(instr)) = instructions {
        total += OPENAI_TOKENS_PER_MESSAGE + enc.count("system") + enc.count(instr);
    }
    match input {
        Some(Value::String(s)) => {
            total += OPENAI_TOKENS_PER_MESSAGE + enc.count("user") + enc.count(s);
        }
        Some(Value::Array(items)) => {
            for item in items {
                total += OPENAI_TOKENS_PER_MESSAGE + responses_item_tokens(enc, item);
            }
        }
        _ => {}
    }
    total + openai_tools_tokens(enc, tools)
}

fn responses_item_tokens(enc: Encoding, item: &Value) -> usize {
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        None | Some("message") => {
            str_tokens(enc, item.get("role"))
                + item
                    .get("content")
                    .map_or(0, |c| openai_content_tokens(enc, c))
        }
        Some("function_call") => function_call_tokens(enc, item),
        Some("function_call_output") => match item.get("output") {
            Some(Value::String(s)) => enc.count(s),
            Some(other) => openai_content_tokens(enc, other),
            None => 0,
        },
        Some(_) => enc.count(&canonical_json(item)),
    }
}

/// Tokens of an Anthropic `content` (string or blocks) or `system`.
pub fn claude_content_tokens(enc: Encoding, content: &Value) -> usize {
    match content {
        Value::String(s) => enc.count(s),
        Value::Array(blocks) => blocks.iter().map(|b| claude_block_tokens(enc, b)).sum(),
        _ => 0,
    }
}

fn claude_block_tokens(enc: Encoding, block: &Value) -> usize {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => str_tokens(enc, block.get("text")),
        Some("image") => CLAUDE_IMAGE,
        Some("tool_use") => {
            str_tokens(enc, block.get("name"))
                + block
                    .get("input")
                    .map_or(0, |i| enc.count(&canonical_json(i)))
        }
        Some("tool_result") => block
            .get("content")
            .map_or(0, |c| claude_content_tokens(enc, c)),
        Some("thinking") => str_tokens(enc, block.get("thinking")),
        _ => enc.count(&canonical_json(block)),
    }
}

/// Claude prompt tokens (see the module docs of [`crate::sim`]), before any
/// cache split.
pub fn claude_prompt_tokens(
    system: Option<&Value>,
    messages: &[Value],
    tools: Option<&Value>,
) -> usize {
    let enc = Encoding::Cl100kBase;
    let system_tokens = system.map_or(0, |s| claude_content_tokens(enc, s));
    let messages_tokens: usize = messages
        .iter()
        .map(|m| {
            CLAUDE_PER_MESSAGE
                + m.get("content")
                    .map_or(0, |c| claude_content_tokens(enc, c))
        })
        .sum();
    let tools_tokens = match tools {
        Some(Value::Array(items)) if !items.is_empty() => {
            enc.count(&canonical_json(&Value::Array(items.clone())))
        }
        _ => 0,
    };
    CLAUDE_BASE + system_tokens + messages_tokens + tools_tokens
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn encodings_by_model() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1-nano",
            "gpt-5",
            "o1",
            "o3-mini",
            "o4-mini",
            "chatgpt-4o-latest",
            "ft:gpt-4o-mini:org::abc",
        ] {
            assert_eq!(Encoding::for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "llama-3",
            "claude-3-5-haiku",
        ] {
            assert_eq!(Encoding::for_model(m), Encoding::Cl100kBase, "{m}");
        }
    }

    #[test]
    fn canonical_sorted() {
        let v = json!({"b": [1, {"d": null, "c": "x\"y"}], "a": true});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":true,"b":[1,{"c":"x\"y","d":null}]}"#
        );
    }

    #[test]
    fn cookbook_example() {
        // The OpenAI cookbook's example: 129 prompt tokens for gpt-4/gpt-3.5
        // (cl100k_base).
        let messages = json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ]);
        let n = openai_chat_prompt_tokens(Encoding::Cl100kBase, messages.as_array().unwrap(), None);
        assert_eq!(n, 129);
        let n = openai_chat_prompt_tokens(Encoding::O200kBase, messages.as_array().unwrap(), None);
        assert_eq!(n, 124);
    }
}
