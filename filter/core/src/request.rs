//! Request parsing and prompt token counting for the four API shapes.
//!
//! Bodies are deserialised into borrowed views (no copies of unescaped message text); fields the
//! filter does not need are ignored, as providers add fields all the time.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use tollgate_wire::Api;

use crate::config::Config;
use crate::count::{
    ANTHROPIC_BASE_TOKENS, ANTHROPIC_TOKENS_PER_MESSAGE, CountCache, IMAGE_DEFAULT_TOKENS,
    IMAGE_LOW_DETAIL_TOKENS, REPLY_PRIMING, TOKENS_PER_MESSAGE, TOKENS_PER_NAME, Tokenizer,
    render_functions, tokenizer_for,
};
use crate::error::{ErrorKind, Rejection};

/// What the filter learned from a request body.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedRequest {
    pub api: Api,
    pub model: String,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_tokens`-like fields present in the request: (field, value).
    pub max_tokens: Vec<(&'static str, u64)>,
    pub prompt_tokens: u64,
    /// True when the count is an estimate (no public tokenizer, images, tool schemas).
    pub prompt_estimated: bool,
    pub tokenizer: Tokenizer,
    pub messages: usize,
    pub has_tools: bool,
    pub has_images: bool,
}

type Text<'a> = Cow<'a, str>;

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    messages: Vec<ChatMessage<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    functions: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    role: Text<'a>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] Text<'a>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(default)]
    image_url: Option<Value>,
    /// Anthropic `tool_result` content (string or blocks) and similar nested content.
    #[serde(borrow, default)]
    content: Option<Box<Content<'a>>>,
    /// Anthropic `tool_use` input.
    #[serde(default)]
    input: Option<Value>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    arguments: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct CompletionsRequest<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    prompt: Prompt<'a>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt<'a> {
    Text(#[serde(borrow)] Text<'a>),
    Texts(#[serde(borrow)] Vec<Text<'a>>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    input: ResponsesInput<'a>,
    #[serde(borrow, default)]
    instructions: Option<Text<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ResponsesInput<'a> {
    Text(#[serde(borrow)] Text<'a>),
    Items(#[serde(borrow)] Vec<ResponsesItem<'a>>),
}

#[derive(Deserialize)]
struct ResponsesItem<'a> {
    #[serde(borrow, default)]
    role: Option<Text<'a>>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    /// `function_call_output` items.
    #[serde(borrow, default)]
    output: Option<Text<'a>>,
    /// `function_call` items.
    #[serde(borrow, default)]
    arguments: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct AnthropicRequest<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    messages: Vec<AnthropicMessage<'a>>,
    #[serde(borrow, default)]
    system: Option<Content<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct AnthropicMessage<'a> {
    #[serde(borrow)]
    role: Text<'a>,
    #[serde(borrow)]
    content: Content<'a>,
}

fn invalid(api: Api, message: impl Into<String>) -> Rejection {
    Rejection::new(api, ErrorKind::InvalidRequest, message)
}

/// Validates a `max_tokens`-like value: absent/null, or a positive integer.
fn max_tokens_value(
    api: Api,
    field: &'static str,
    v: Option<Value>,
) -> Result<Option<(&'static str, u64)>, Rejection> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Err(invalid(api, format!("`{field}` must be at least 1"))),
            Some(v) => Ok(Some((field, v))),
            None => Err(invalid(
                api,
                format!("`{field}` must be a positive integer, got {n}"),
            )),
        },
        Some(other) => Err(invalid(
            api,
            format!(
                "`{field}` must be a positive integer, got a {}",
                json_type(&other)
            ),
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Running prompt count.
struct Tally<'c> {
    tokenizer: Tokenizer,
    cache: &'c mut CountCache,
    raw: u64,
    /// Tokens that are estimates regardless of tokenizer (images).
    fixed: u64,
    estimated: bool,
    images: bool,
}

impl Tally<'_> {
    fn text(&mut self, s: &str) {
        self.raw = self
            .raw
            .saturating_add(self.cache.count(self.tokenizer.encoding(), s));
    }

    fn overhead(&mut self, n: u64) {
        self.raw = self.raw.saturating_add(n);
    }

    fn image(&mut self, detail_low: bool) {
        self.images = true;
        self.estimated = true;
        self.fixed += if detail_low {
            IMAGE_LOW_DETAIL_TOKENS
        } else {
            IMAGE_DEFAULT_TOKENS
        };
    }

    fn json(&mut self, v: &Value) {
        // Tool inputs and schemas: count their compact JSON text.
        let s = v.to_string();
        self.text(&s);
    }

    fn content(&mut self, c: &Content<'_>) {
        match c {
            Content::Text(t) => self.text(t),
            Content::Parts(parts) => {
                for p in parts {
                    self.part(p);
                }
            }
        }
    }

    fn part(&mut self, p: &Part<'_>) {
        match p.kind.as_ref() {
            "image_url" => {
                let low = p
                    .image_url
                    .as_ref()
                    .and_then(|u| u.get("detail"))
                    .and_then(Value::as_str)
                    == Some("low");
                self.image(low);
            }
            "image" | "input_image" | "document" | "input_file" | "file" | "input_audio" => {
                self.image(false)
            }
            _ => {
                if let Some(t) = &p.text {
                    self.text(t);
                }
                if let Some(n) = &p.name {
                    self.text(n);
                }
                if let Some(i) = &p.input {
                    self.json(i);
                }
                if let Some(c) = &p.content {
                    self.content(c);
                }
            }
        }
    }

    fn total(&self) -> u64 {
        self.tokenizer.scale(self.raw).saturating_add(self.fixed)
    }
}

/// Parses a request body of `api` and counts its prompt tokens.
pub fn parse(
    api: Api,
    body: &[u8],
    cfg: &Config,
    cache: &mut CountCache,
) -> Result<ParsedRequest, Rejection> {
    // Validated once here; `from_str` then parses without checking each string again.
    let Ok(body) = std::str::from_utf8(body) else {
        return Err(invalid(api, "request body is not valid UTF-8"));
    };
    let de_err = |e: serde_json::Error| invalid(api, format!("invalid request body: {e}"));
    match api {
        Api::OpenAiChat => {
            let r: ChatRequest<'_> = serde_json::from_str(body).map_err(de_err)?;
            let model = model_name(api, &r.model)?;
            let tokenizer = tokenizer_for(&model, &cfg.tokenizer);
            let mut t = Tally {
                tokenizer,
                cache,
                raw: REPLY_PRIMING,
                fixed: 0,
                estimated: false,
                images: false,
            };
            for m in &r.messages {
                t.overhead(TOKENS_PER_MESSAGE);
                t.text(&m.role);
                if let Some(c) = &m.content {
                    t.content(c);
                }
                if let Some(n) = &m.name {
                    t.text(n);
                    t.overhead(TOKENS_PER_NAME);
                }
                let calls = m
                    .tool_calls
                    .iter()
                    .flatten()
                    .filter_map(|c| c.function.as_ref());
                for f in calls.chain(m.function_call.as_ref()) {
                    t.text(f.name.as_deref().unwrap_or(""));
                    t.text(f.arguments.as_deref().unwrap_or(""));
                    t.overhead(3);
                }
            }
            let tool_fns: Vec<&Value> = r
                .tools
                .iter()
                .flatten()
                .filter_map(|tool| tool.get("function"))
                .chain(r.functions.iter().flatten())
                .collect();
            let has_tools = !tool_fns.is_empty();
            if has_tools {
                t.estimated = true;
                t.text(&render_functions(&tool_fns));
                t.overhead(9);
                if r.messages.iter().any(|m| m.role == "system") {
                    t.raw = t.raw.saturating_sub(4);
                }
            }
            let mut max_tokens = Vec::new();
            max_tokens.extend(max_tokens_value(
                api,
                "max_completion_tokens",
                r.max_completion_tokens,
            )?);
            max_tokens.extend(max_tokens_value(api, "max_tokens", r.max_tokens)?);
            let stream = r.stream.unwrap_or(false);
            Ok(ParsedRequest {
                api,
                prompt_tokens: t.total(),
                prompt_estimated: t.estimated || !tokenizer.is_exact(),
                has_images: t.images,
                model,
                stream,
                include_usage: stream
                    && r.stream_options
                        .and_then(|o| o.include_usage)
                        .unwrap_or(false),
                max_tokens,
                tokenizer,
                messages: r.messages.len(),
                has_tools,
            })
        }
        Api::OpenAiCompletions => {
            let r: CompletionsRequest<'_> = serde_json::from_str(body).map_err(de_err)?;
            let model = model_name(api, &r.model)?;
            let tokenizer = tokenizer_for(&model, &cfg.tokenizer);
            let mut t = Tally {
                tokenizer,
                cache,
                raw: 0,
                fixed: 0,
                estimated: false,
                images: false,
            };
            match &r.prompt {
                Prompt::Text(s) => t.text(s),
                Prompt::Texts(v) => v.iter().for_each(|s| t.text(s)),
                Prompt::Tokens(v) => t.overhead(v.len() as u64),
                Prompt::TokenLists(v) => v.iter().for_each(|l| t.overhead(l.len() as u64)),
            }
            let stream = r.stream.unwrap_or(false);
            Ok(ParsedRequest {
                api,
                prompt_tokens: t.total(),
                prompt_estimated: !tokenizer.is_exact(),
                model,
                stream,
                include_usage: stream
                    && r.stream_options
                        .and_then(|o| o.include_usage)
                        .unwrap_or(false),
                max_tokens: max_tokens_value(api, "max_tokens", r.max_tokens)?
                    .into_iter()
                    .collect(),
                tokenizer,
                messages: 1,
                has_tools: false,
                has_images: false,
            })
        }
        Api::OpenAiResponses => {
            let r: ResponsesRequest<'_> = serde_json::from_str(body).map_err(de_err)?;
            let model = model_name(api, &r.model)?;
            let tokenizer = tokenizer_for(&model, &cfg.tokenizer);
            let mut t = Tally {
                tokenizer,
                cache,
                raw: REPLY_PRIMING,
                fixed: 0,
                estimated: false,
                images: false,
            };
            let mut messages = 0;
            if let Some(i) = &r.instructions {
                messages += 1;
                t.overhead(TOKENS_PER_MESSAGE);
                t.text("system");
                t.text(i);
            }
            match &r.input {
                ResponsesInput::Text(s) => {
                    messages += 1;
                    t.overhead(TOKENS_PER_MESSAGE);
                    t.text("user");
                    t.text(s);
                }
                ResponsesInput::Items(items) => {
                    for it in items {
                        messages += 1;
                        t.overhead(TOKENS_PER_MESSAGE);
                        if let Some(role) = &it.role {
                            t.text(role);
                        }
                        if let Some(c) = &it.content {
                            t.content(c);
                        }
                        for s in [&it.output, &it.arguments, &it.name].into_iter().flatten() {
                            t.text(s);
                        }
                    }
                }
            }
            let tools: Vec<&Value> = r.tools.iter().flatten().collect();
            let has_tools = !tools.is_empty();
            if has_tools {
                t.estimated = true;
                t.text(&render_functions(&tools));
                t.overhead(9);
            }
            Ok(ParsedRequest {
                api,
                prompt_tokens: t.total(),
                prompt_estimated: t.estimated || !tokenizer.is_exact(),
                has_images: t.images,
                model,
                stream: r.stream.unwrap_or(false),
                // The Responses API always reports usage in `response.completed`.
                include_usage: r.stream.unwrap_or(false),
                max_tokens: max_tokens_value(api, "max_output_tokens", r.max_output_tokens)?
                    .into_iter()
                    .collect(),
                tokenizer,
                messages,
                has_tools,
            })
        }
        Api::AnthropicMessages => {
            let r: AnthropicRequest<'_> = serde_json::from_str(body).map_err(de_err)?;
            let model = model_name(api, &r.model)?;
            let tokenizer = tokenizer_for(&model, &cfg.tokenizer);
            let mut t = Tally {
                tokenizer,
                cache,
                raw: ANTHROPIC_BASE_TOKENS,
                fixed: 0,
                estimated: true,
                images: false,
            };
            if let Some(s) = &r.system {
                t.content(s);
            }
            for m in &r.messages {
                if m.role != "user" && m.role != "assistant" {
                    return Err(invalid(
                        api,
                        format!("messages: unexpected role {:?} (user or assistant)", m.role),
                    ));
                }
                t.overhead(ANTHROPIC_TOKENS_PER_MESSAGE);
                t.content(&m.content);
            }
            let has_tools = r.tools.as_ref().is_some_and(|v| !v.is_empty());
            for tool in r.tools.iter().flatten() {
                t.json(tool);
            }
            Ok(ParsedRequest {
                api,
                prompt_tokens: t.total(),
                prompt_estimated: true,
                has_images: t.images,
                model,
                stream: r.stream.unwrap_or(false),
                include_usage: r.stream.unwrap_or(false),
                max_tokens: max_tokens_value(api, "max_tokens", r.max_tokens)?
                    .into_iter()
                    .collect(),
                tokenizer,
                messages: r.messages.len(),
                has_tools,
            })
        }
    }
}

fn model_name(api: Api, model: &str) -> Result<String, Rejection> {
    if model.trim().is_empty() {
        return Err(invalid(api, "`model` must not be empty"));
    }
    if model.len() > 256 {
        return Err(invalid(api, "`model` is too long"));
    }
    Ok(model.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tollgate_bpe::Encoding;

    fn cfg() -> Config {
        Config::from_json(b"").unwrap()
    }

    fn p(api: Api, body: &str) -> Result<ParsedRequest, Rejection> {
        parse(api, body.as_bytes(), &cfg(), &mut CountCache::new(64, 1))
    }

    fn n(enc: Encoding, s: &str) -> u64 {
        enc.count(s) as u64
    }

    #[test]
    fn chat_count_follows_the_cookbook_formula() {
        let r = p(
            Api::OpenAiChat,
            r#"{"model":"gpt-4o","messages":[
            {"role":"system","content":"You are terse."},
            {"role":"user","content":"Hello, world!","name":"bob"}]}"#,
        )
        .unwrap();
        let e = Encoding::O200kBase;
        let want = 3
            + (3 + n(e, "system") + n(e, "You are terse."))
            + (3 + n(e, "user") + n(e, "Hello, world!") + n(e, "bob") + 1);
        assert_eq!(r.prompt_tokens, want);
        assert!(!r.prompt_estimated);
        assert_eq!(r.messages, 2);
        assert_eq!(r.model, "gpt-4o");
        assert!(!r.stream);
    }

    #[test]
    fn chat_count_matches_tiktoken_rs_reference_formula() {
        use tiktoken_rs::ChatCompletionRequestMessage as M;
        let msgs = vec![
            M {
                role: "system".into(),
                content: Some("Du bist ein hilfreicher Assistent. 日本語も話せます。".into()),
                ..Default::default()
            },
            M {
                role: "user".into(),
                content: Some("Wie viel kostet 1 kg Äpfel? 🍎🍏".into()),
                ..Default::default()
            },
            M {
                role: "assistant".into(),
                content: Some("Etwa 2,99 €.".into()),
                ..Default::default()
            },
        ];
        for model in ["gpt-4o", "gpt-4"] {
            let want = tiktoken_rs::num_tokens_from_messages(model, &msgs).unwrap() as u64;
            let body = serde_json::json!({"model": model, "messages": msgs.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect::<Vec<_>>()});
            let got = p(Api::OpenAiChat, &body.to_string()).unwrap();
            assert_eq!(got.prompt_tokens, want, "{model}");
        }
    }

    #[test]
    fn multipart_content_counts_text_and_estimates_images() {
        let r = p(
            Api::OpenAiChat,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":[
            {"type":"text","text":"What is in this image?"},
            {"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]}]}"#,
        )
        .unwrap();
        let e = Encoding::O200kBase;
        assert_eq!(
            r.prompt_tokens,
            3 + 3 + n(e, "user") + n(e, "What is in this image?") + 85
        );
        assert!(r.prompt_estimated && r.has_images);
    }

    #[test]
    fn tools_add_their_rendered_definitions() {
        let base =
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Weather in Paris?"}]}"#;
        let with = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Weather in Paris?"}],
            "tools":[{"type":"function","function":{"name":"get_weather","description":"Get weather",
            "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}"#;
        let a = p(Api::OpenAiChat, base).unwrap();
        let b = p(Api::OpenAiChat, with).unwrap();
        assert!(b.has_tools && b.prompt_estimated);
        assert!(
            b.prompt_tokens > a.prompt_tokens + 15,
            "{} vs {}",
            b.prompt_tokens,
            a.prompt_tokens
        );
    }

    #[test]
    fn stream_flags_and_max_tokens_fields_are_read() {
        let r = p(
            Api::OpenAiChat,
            r#"{"model":"gpt-4o","messages":[],"stream":true,
            "stream_options":{"include_usage":true},"max_tokens":50,"max_completion_tokens":60}"#,
        )
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(
            r.max_tokens,
            vec![("max_completion_tokens", 60), ("max_tokens", 50)]
        );
        let r = p(Api::OpenAiChat, r#"{"model":"gpt-4o","messages":[],"stream":false,"stream_options":{"include_usage":true},"max_tokens":null}"#).unwrap();
        assert!(!r.include_usage);
        assert!(r.max_tokens.is_empty());
    }

    #[test]
    fn completions_and_responses_shapes() {
        let r = p(Api::OpenAiCompletions, r#"{"model":"gpt-3.5-turbo-instruct","prompt":["Say this","is a test"],"max_tokens":7}"#).unwrap();
        let e = Encoding::Cl100kBase;
        assert_eq!(r.prompt_tokens, n(e, "Say this") + n(e, "is a test"));
        let r = p(
            Api::OpenAiCompletions,
            r#"{"model":"davinci-002","prompt":[1,2,3]}"#,
        )
        .unwrap();
        assert_eq!(r.prompt_tokens, 3);
        let r = p(Api::OpenAiResponses, r#"{"model":"gpt-4.1","instructions":"Be brief.","input":"Tell me a joke","max_output_tokens":30,"stream":true}"#).unwrap();
        let e = Encoding::O200kBase;
        assert_eq!(
            r.prompt_tokens,
            3 + 3 + n(e, "system") + n(e, "Be brief.") + 3 + n(e, "user") + n(e, "Tell me a joke")
        );
        assert_eq!(r.max_tokens, vec![("max_output_tokens", 30)]);
        assert!(r.stream && r.include_usage);
        let r = p(Api::OpenAiResponses, r#"{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}]}"#).unwrap();
        assert_eq!(r.prompt_tokens, 3 + 3 + n(e, "user") + n(e, "hi"));
    }

    #[test]
    fn anthropic_is_estimated_and_includes_system_blocks_and_tools() {
        let r = p(Api::AnthropicMessages, r#"{"model":"claude-sonnet-4-5","max_tokens":100,
            "system":[{"type":"text","text":"You are a pirate."}],
            "messages":[{"role":"user","content":"Ahoy there, how are you?"},
                        {"role":"assistant","content":[{"type":"text","text":"Arr!"},{"type":"tool_use","id":"t1","name":"look","input":{"dir":"north"}}]},
                        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"Land ho"}]}],
            "tools":[{"name":"look","description":"Look around","input_schema":{"type":"object"}}]}"#).unwrap();
        assert!(r.prompt_estimated && r.has_tools);
        assert_eq!(r.max_tokens, vec![("max_tokens", 100)]);
        let e = Encoding::Cl100kBase;
        let raw = 5 + n(e, "You are a pirate.") + 3 * 3 + n(e, "Ahoy there, how are you?") + n(e, "Arr!")
            + n(e, "look") + n(e, r#"{"dir":"north"}"#) + n(e, "Land ho")
            + n(e, &serde_json::json!({"name":"look","description":"Look around","input_schema":{"type":"object"}}).to_string());
        assert_eq!(r.prompt_tokens, (raw * 1100).div_ceil(1000));
    }

    #[test]
    fn bad_bodies_are_rejected_with_clear_messages() {
        let cases: &[(Api, &[u8], &str)] = &[
            (Api::OpenAiChat, b"{not json", "invalid request body"),
            (
                Api::OpenAiChat,
                br#"{"messages":[]}"#,
                "missing field `model`",
            ),
            (
                Api::OpenAiChat,
                br#"{"model":"gpt-4o"}"#,
                "missing field `messages`",
            ),
            (
                Api::OpenAiChat,
                br#"{"model":5,"messages":[]}"#,
                "invalid type",
            ),
            (
                Api::OpenAiChat,
                br#"{"model":"gpt-4o","messages":"hi"}"#,
                "invalid type",
            ),
            (
                Api::OpenAiChat,
                br#"{"model":"","messages":[]}"#,
                "must not be empty",
            ),
            (
                Api::OpenAiChat,
                br#"{"model":"gpt-4o","messages":[],"max_tokens":-1}"#,
                "positive integer",
            ),
            (
                Api::OpenAiChat,
                br#"{"model":"gpt-4o","messages":[],"max_tokens":1.5}"#,
                "positive integer",
            ),
            (
                Api::OpenAiChat,
                br#"{"model":"gpt-4o","messages":[],"max_tokens":"10"}"#,
                "got a string",
            ),
            (
                Api::OpenAiChat,
                br#"{"model":"gpt-4o","messages":[],"max_tokens":0}"#,
                "at least 1",
            ),
            (
                Api::OpenAiChat,
                b"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
                "UTF-8",
            ),
            (Api::OpenAiChat, b"[]", "invalid request body"),
            (
                Api::AnthropicMessages,
                br#"{"model":"claude-haiku-4-5","messages":[{"role":"system","content":"x"}]}"#,
                "unexpected role",
            ),
            (
                Api::AnthropicMessages,
                br#"{"model":"claude-haiku-4-5"}"#,
                "missing field `messages`",
            ),
            (
                Api::OpenAiResponses,
                br#"{"model":"gpt-4.1"}"#,
                "missing field `input`",
            ),
            (
                Api::OpenAiCompletions,
                br#"{"model":"gpt-4","prompt":{"a":1}}"#,
                "invalid request body",
            ),
        ];
        for (api, body, want) in cases {
            let err = parse(*api, body, &cfg(), &mut CountCache::new(8, 1)).unwrap_err();
            assert_eq!(err.status(), 400);
            assert!(
                err.message.contains(want),
                "{:?}: {:?} should mention {want:?}",
                String::from_utf8_lossy(body),
                err.message
            );
        }
    }

    #[test]
    fn escaped_strings_are_counted_unescaped() {
        let r = p(Api::OpenAiChat, r#"{"model":"gpt-4o","messages":[{"role":"user","content":"line1\nline2 \"q\" \u00e9"}]}"#).unwrap();
        let e = Encoding::O200kBase;
        assert_eq!(
            r.prompt_tokens,
            3 + 3 + n(e, "user") + n(e, "line1\nline2 \"q\" é")
        );
    }
}
