//! Response metering: usage from JSON bodies and from SSE streams, fed chunk by chunk.
//!
//! Shape: `feed(&mut self, chunk)` for every body chunk as it passes (nothing is held back),
//! `finish(self)` at end of stream. When the provider reports no usage, the output text seen in
//! the stream (or JSON body) is counted with the model's BPE, incrementally, so memory stays
//! bounded however long the stream.

use serde::Deserialize;
use serde_json::Value;
use tollgate_bpe::Encoding;
use tollgate_wire::{Api, Usage};

/// How the response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Json,
    Sse,
}

impl Framing {
    /// From a `content-type` header value; `None` for bodies we do not meter (e.g. HTML errors).
    pub fn from_content_type(ct: &str) -> Option<Framing> {
        let ct = ct.trim().to_ascii_lowercase();
        if ct.starts_with("text/event-stream") {
            Some(Framing::Sse)
        } else if ct.starts_with("application/json") || ct.contains("+json") {
            Some(Framing::Json)
        } else {
            None
        }
    }
}

/// What a finished response told us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseMeter {
    /// Usage as reported by the provider, normalised.
    pub usage: Option<Usage>,
    /// Output tokens counted from the text; computed only when `usage` is `None`.
    pub counted_output_tokens: u64,
    /// The `model` the provider says answered.
    pub model: Option<String>,
    /// Saw the provider's end-of-response marker (`[DONE]`, `message_stop`, `response.completed`,
    /// or a complete JSON body).
    pub complete: bool,
    /// The body could not be parsed (e.g. too large to buffer, or not JSON).
    pub unparsed: bool,
    /// The answer text, when capture was on, the answer was plain text (no tool calls,
    /// refusals or thinking blocks) and fit the capture limit.
    pub text: Option<String>,
    /// Provider-neutral finish reason: `stop`, `length`, `tool_calls`, or the provider's own.
    pub finish_reason: Option<String>,
}

/// Largest answer kept for the cache.
pub const MAX_CAPTURE_BYTES: usize = 1 << 20;

#[derive(Default, Deserialize)]
struct RawDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// The union of OpenAI chat/completions, Responses and Anthropic usage objects.
#[derive(Default, Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<RawDetails>,
    #[serde(default)]
    completion_tokens_details: Option<RawDetails>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<RawDetails>,
    #[serde(default)]
    output_tokens_details: Option<RawDetails>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

fn cached(d: &Option<RawDetails>) -> u64 {
    d.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0)
}

fn reasoning(d: &Option<RawDetails>) -> u64 {
    d.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0)
}

impl RawUsage {
    /// Normalises; `None` when the object carries no token counts at all.
    fn normalise(&self, api: Api) -> Option<Usage> {
        if api.is_anthropic() {
            if self.input_tokens.is_none() && self.output_tokens.is_none() {
                return None;
            }
            return Some(Usage {
                input_tokens: self.input_tokens.unwrap_or(0),
                cache_read_tokens: self.cache_read_input_tokens.unwrap_or(0),
                cache_write_tokens: self.cache_creation_input_tokens.unwrap_or(0),
                output_tokens: self.output_tokens.unwrap_or(0),
                reasoning_tokens: 0,
            });
        }
        if let Some(prompt) = self.prompt_tokens {
            let c = cached(&self.prompt_tokens_details).min(prompt);
            return Some(Usage {
                input_tokens: prompt - c,
                cache_read_tokens: c,
                cache_write_tokens: 0,
                output_tokens: self.completion_tokens.unwrap_or(0),
                reasoning_tokens: reasoning(&self.completion_tokens_details),
            });
        }
        if let Some(input) = self.input_tokens {
            let c = cached(&self.input_tokens_details).min(input);
            return Some(Usage {
                input_tokens: input - c,
                cache_read_tokens: c,
                cache_write_tokens: 0,
                output_tokens: self.output_tokens.unwrap_or(0),
                reasoning_tokens: reasoning(&self.output_tokens_details),
            });
        }
        None
    }
}

/// The parts of a JSON response read on the fast path.
#[derive(Deserialize)]
struct JsonHead {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

/// Counts text incrementally: text is cut only before a single ASCII space that follows a
/// non-space character and precedes an ASCII letter. Both the cl100k and o200k pre-tokenizers
/// always start a new piece there, so the sum of the parts equals the count of the whole.
#[derive(Debug)]
struct TextCounter {
    encoding: Encoding,
    pending: String,
    counted: u64,
}

const COUNT_CHUNK: usize = 16 * 1024;

impl TextCounter {
    fn push(&mut self, s: &str) {
        self.pending.push_str(s);
        if self.pending.len() >= COUNT_CHUNK {
            self.flush(false);
        }
    }

    fn flush(&mut self, all: bool) {
        let cut = if all {
            Some(self.pending.len())
        } else {
            safe_cut(&self.pending)
        };
        if let Some(cut) = cut {
            let (head, _) = self.pending.split_at(cut);
            self.counted += self.encoding.count(head) as u64;
            self.pending.drain(..cut);
        }
    }

    fn total(mut self) -> u64 {
        self.flush(true);
        self.counted
    }
}

fn safe_cut(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (1..b.len().saturating_sub(1)).rev().find(|&i| {
        b.get(i) == Some(&b' ')
            && b.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
            && b.get(i - 1)
                .is_some_and(|c| !c.is_ascii_whitespace() && c.is_ascii())
    })
}

/// Incremental response parser.
#[derive(Debug)]
pub struct UsageParser {
    api: Api,
    framing: Framing,
    max_json_bytes: usize,
    json: Vec<u8>,
    json_overflow: bool,
    /// SSE: bytes of the current, not yet terminated line.
    line: Vec<u8>,
    event: String,
    data: String,
    text: TextCounter,
    usage: Option<Usage>,
    model: Option<String>,
    complete: bool,
    capture: bool,
    captured: String,
    /// Something other than plain answer text was seen (tool calls, refusal, thinking), or the
    /// capture overflowed: the answer is not cacheable.
    uncacheable: bool,
    finish_reason: Option<String>,
}

impl UsageParser {
    pub fn new(api: Api, framing: Framing, encoding: Encoding, max_json_bytes: usize) -> Self {
        UsageParser {
            api,
            framing,
            max_json_bytes,
            json: Vec::new(),
            json_overflow: false,
            line: Vec::new(),
            event: String::new(),
            data: String::new(),
            text: TextCounter {
                encoding,
                pending: String::new(),
                counted: 0,
            },
            usage: None,
            model: None,
            complete: false,
            capture: false,
            captured: String::new(),
            uncacheable: false,
            finish_reason: None,
        }
    }

    /// Keep the answer text (for storing it in the response cache).
    pub fn capture_text(&mut self, on: bool) {
        self.capture = on;
    }

    /// Output text seen in the response. `answer`: plain answer text (cacheable); otherwise
    /// tool-call arguments, refusals or thinking (counted, but the response is not cacheable).
    fn out(&mut self, t: &str, answer: bool) {
        self.text.push(t);
        if !answer {
            self.uncacheable = true;
        } else if self.capture && !self.uncacheable {
            if self.captured.len() + t.len() > MAX_CAPTURE_BYTES {
                self.uncacheable = true;
                self.captured = String::new();
            } else {
                self.captured.push_str(t);
            }
        }
    }

    fn set_finish(&mut self, reason: &str) {
        let r = match reason {
            "end_turn" | "stop_sequence" | "stop" | "completed" => "stop",
            "max_tokens" | "length" | "incomplete" => "length",
            "tool_use" | "tool_calls" | "function_call" => "tool_calls",
            other => other,
        };
        self.finish_reason = Some(r.chars().take(32).collect());
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Feeds the next body chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        match self.framing {
            Framing::Json => {
                if self.json.len() + chunk.len() > self.max_json_bytes {
                    self.json_overflow = true;
                    self.json = Vec::new();
                } else if !self.json_overflow {
                    self.json.extend_from_slice(chunk);
                }
            }
            Framing::Sse => {
                let mut rest = chunk;
                while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                    let (line, tail) = rest.split_at(pos);
                    rest = tail.get(1..).unwrap_or(&[]);
                    if self.line.is_empty() {
                        self.sse_line(line);
                    } else {
                        let mut full = std::mem::take(&mut self.line);
                        full.extend_from_slice(line);
                        self.sse_line(&full);
                    }
                }
                if self.line.len() + rest.len() <= self.max_json_bytes {
                    self.line.extend_from_slice(rest);
                }
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
            return;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                if self.data.len() + value.len() <= self.max_json_bytes {
                    self.data.push_str(value);
                }
            }
            _ => {} // id, retry, comments (":")
        }
    }

    fn dispatch(&mut self) {
        let data = std::mem::take(&mut self.data);
        let event = std::mem::take(&mut self.event);
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            self.complete = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.as_str());
        match self.api {
            Api::OpenAiChat | Api::OpenAiCompletions => {
                self.take_model(&v);
                if let Some(u) = v.get("usage") {
                    self.take_usage(u, false);
                }
                for c in v
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = c.get("text").and_then(Value::as_str) {
                        self.out(t, true);
                    }
                    if let Some(d) = c.get("delta") {
                        self.delta_text(d);
                    }
                    if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
                        self.set_finish(f);
                    }
                }
            }
            Api::OpenAiResponses => match kind {
                "response.output_text.delta"
                | "response.refusal.delta"
                | "response.function_call_arguments.delta" => {
                    if let Some(t) = v.get("delta").and_then(Value::as_str) {
                        self.out(t, kind == "response.output_text.delta");
                    }
                }
                "response.completed" | "response.incomplete" | "response.failed" => {
                    self.complete = true;
                    self.set_finish(kind.trim_start_matches("response."));
                    if let Some(r) = v.get("response") {
                        self.take_model(r);
                        if let Some(u) = r.get("usage") {
                            self.take_usage(u, false);
                        }
                    }
                }
                _ => {}
            },
            Api::AnthropicMessages => match kind {
                "message_start" => {
                    if let Some(m) = v.get("message") {
                        self.take_model(m);
                        if let Some(u) = m.get("usage") {
                            self.take_usage(u, false);
                        }
                    }
                }
                "message_delta" => {
                    if let Some(u) = v.get("usage") {
                        self.take_usage(u, true);
                    }
                    if let Some(r) = v
                        .get("delta")
                        .and_then(|d| d.get("stop_reason"))
                        .and_then(Value::as_str)
                    {
                        self.set_finish(r);
                    }
                }
                "content_block_delta" => {
                    if let Some(d) = v.get("delta") {
                        for key in ["text", "partial_json", "thinking"] {
                            if let Some(t) = d.get(key).and_then(Value::as_str) {
                                self.out(t, key == "text");
                            }
                        }
                    }
                }
                "message_stop" => self.complete = true,
                _ => {}
            },
        }
    }

    fn delta_text(&mut self, d: &Value) {
        for key in ["content", "refusal"] {
            if let Some(t) = d.get(key).and_then(Value::as_str) {
                self.out(t, key == "content");
            }
        }
        for call in d
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(f) = call.get("function") {
                for key in ["name", "arguments"] {
                    if let Some(t) = f.get(key).and_then(Value::as_str) {
                        self.out(t, false);
                    }
                }
            }
        }
    }

    fn take_model(&mut self, v: &Value) {
        if self.model.is_none()
            && let Some(m) = v.get("model").and_then(Value::as_str)
        {
            self.model = Some(m.chars().take(256).collect());
        }
    }

    /// Records a usage object. Anthropic's `message_delta` usage updates the running totals
    /// (output tokens are cumulative; newer API versions repeat input counts there).
    fn take_usage(&mut self, u: &Value, merge: bool) {
        let Ok(raw) = RawUsage::deserialize(u) else {
            return;
        };
        if merge {
            let mut cur = self.usage.unwrap_or_default();
            if let Some(o) = raw.output_tokens {
                cur.output_tokens = o;
            }
            if let Some(i) = raw.input_tokens {
                cur.input_tokens = i;
            }
            if let Some(r) = raw.cache_read_input_tokens {
                cur.cache_read_tokens = r;
            }
            if let Some(w) = raw.cache_creation_input_tokens {
                cur.cache_write_tokens = w;
            }
            self.usage = Some(cur);
        } else if let Some(n) = raw.normalise(self.api) {
            self.usage = Some(n);
        }
    }

    fn json_body(&mut self) -> bool {
        // Fast path: read only `model` and `usage`, skipping the rest of the body unparsed.
        if !self.capture
            && let Ok(head) = serde_json::from_slice::<JsonHead>(&self.json)
            && let Some(u) = head.usage.as_ref().and_then(|u| u.normalise(self.api))
        {
            self.usage = Some(u);
            if self.model.is_none() {
                self.model = head.model.map(|m| m.chars().take(256).collect());
            }
            return true;
        }
        // No usage: walk the body for the output text to count it.
        let Ok(v) = serde_json::from_slice::<Value>(&self.json) else {
            return false;
        };
        self.take_model(&v);
        if let Some(u) = v.get("usage") {
            self.take_usage(u, false);
        }
        match self.api {
            Api::OpenAiChat | Api::OpenAiCompletions => {
                for c in v
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = c.get("text").and_then(Value::as_str) {
                        self.out(t, true);
                    }
                    if let Some(m) = c.get("message") {
                        self.delta_text(m);
                    }
                    if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
                        self.set_finish(f);
                    }
                }
            }
            Api::OpenAiResponses => {
                for item in v
                    .get("output")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(a) = item.get("arguments").and_then(Value::as_str) {
                        self.out(a, false);
                    }
                    for part in item
                        .get("content")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(t) = part.get("text").and_then(Value::as_str) {
                            let answer =
                                part.get("type").and_then(Value::as_str) == Some("output_text");
                            self.out(t, answer);
                        }
                    }
                }
                if let Some(st) = v.get("status").and_then(Value::as_str) {
                    self.set_finish(st);
                }
            }
            Api::AnthropicMessages => {
                for block in v
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    for key in ["text", "thinking"] {
                        if let Some(t) = block.get(key).and_then(Value::as_str) {
                            self.out(t, key == "text");
                        }
                    }
                    if let Some(i) = block.get("input") {
                        self.out(&i.to_string(), false);
                    }
                }
                if let Some(r) = v.get("stop_reason").and_then(Value::as_str) {
                    self.set_finish(r);
                }
            }
        }
        true
    }

    /// Ends the response.
    pub fn finish(mut self) -> ResponseMeter {
        let mut unparsed = false;
        if self.framing == Framing::Json {
            if self.json_overflow || !self.json_body() {
                unparsed = true;
            } else {
                self.complete = true;
            }
        } else {
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.sse_line(&line);
            }
            self.dispatch();
        }
        ResponseMeter {
            usage: self.usage,
            // Counting the output is only needed when the provider reported no usage.
            counted_output_tokens: if self.usage.is_some() {
                0
            } else {
                self.text.total()
            },
            model: self.model,
            complete: self.complete,
            unparsed,
            text: (self.capture && !self.uncacheable).then_some(self.captured),
            finish_reason: self.finish_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(api: Api, framing: Framing, body: &str, chunk: usize) -> ResponseMeter {
        let mut p = UsageParser::new(api, framing, Encoding::O200kBase, 1 << 20);
        for c in body.as_bytes().chunks(chunk.max(1)) {
            p.feed(c);
        }
        p.finish()
    }

    const OPENAI_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06",
      "choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, friend."},"finish_reason":"stop"}],
      "usage":{"prompt_tokens":120,"completion_tokens":5,"total_tokens":125,
               "prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":2}}}"#;

    #[test]
    fn openai_json_usage_with_cached_tokens() {
        for chunk in [1, 7, 4096] {
            let m = run(Api::OpenAiChat, Framing::Json, OPENAI_JSON, chunk);
            let u = m.usage.unwrap();
            assert_eq!(
                (
                    u.input_tokens,
                    u.cache_read_tokens,
                    u.output_tokens,
                    u.reasoning_tokens
                ),
                (20, 100, 5, 2)
            );
            assert_eq!(u.prompt_tokens(), 120);
            assert_eq!(m.model.as_deref(), Some("gpt-4o-2024-08-06"));
            assert_eq!(
                m.counted_output_tokens, 0,
                "not counted when usage is reported"
            );
            assert!(m.complete && !m.unparsed);
        }
    }

    #[test]
    fn openai_stream_with_include_usage_split_anywhere() {
        let body = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"there\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
            "data: [DONE]\n\n"
        );
        for chunk in [1, 3, 50, 10000] {
            let m = run(Api::OpenAiChat, Framing::Sse, body, chunk);
            assert_eq!(m.usage.unwrap().output_tokens, 2, "chunk {chunk}");
            assert_eq!(m.usage.unwrap().input_tokens, 9);
            assert_eq!(
                m.counted_output_tokens, 0,
                "usage reported: nothing counted"
            );
            assert!(m.complete);
        }
        // CRLF framing too.
        let m = run(
            Api::OpenAiChat,
            Framing::Sse,
            &body.replace('\n', "\r\n"),
            5,
        );
        assert_eq!(m.usage.unwrap().output_tokens, 2);
    }

    #[test]
    fn openai_stream_without_usage_counts_text() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(2000);
        let mut body = String::new();
        for piece in text.as_bytes().chunks(7) {
            let s = std::str::from_utf8(piece).unwrap();
            body.push_str(&format!(
                "data: {}\n\n",
                serde_json::json!({"choices":[{"index":0,"delta":{"content":s}}]})
            ));
        }
        body.push_str("data: [DONE]\n\n");
        let m = run(Api::OpenAiChat, Framing::Sse, &body, 1000);
        assert!(m.usage.is_none());
        // Counted incrementally in 16 KiB slices, yet equal to counting the whole text.
        assert_eq!(
            m.counted_output_tokens,
            Encoding::O200kBase.count(&text) as u64
        );
    }

    #[test]
    fn anthropic_stream_usage_from_message_start_and_delta() {
        let body = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":300,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello!\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        for chunk in [1, 13, 9999] {
            let m = run(Api::AnthropicMessages, Framing::Sse, body, chunk);
            let u = m.usage.unwrap();
            assert_eq!(
                (
                    u.input_tokens,
                    u.cache_write_tokens,
                    u.cache_read_tokens,
                    u.output_tokens
                ),
                (25, 10, 300, 15)
            );
            assert!(m.complete);
            assert_eq!(m.model.as_deref(), Some("claude-sonnet-4-5"));
        }
    }

    #[test]
    fn anthropic_json_and_responses_json() {
        let a = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi"}],
                    "stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}"#;
        let m = run(Api::AnthropicMessages, Framing::Json, a, 5);
        assert_eq!(m.usage.unwrap().input_tokens, 12);
        assert_eq!(m.usage.unwrap().output_tokens, 3);
        let r = r#"{"id":"resp_1","object":"response","model":"gpt-4.1","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Yo","annotations":[]}]}],
                    "usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":10},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":54}}"#;
        let m = run(Api::OpenAiResponses, Framing::Json, r, 9);
        let u = m.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens, u.output_tokens),
            (40, 10, 4)
        );
        assert_eq!(m.counted_output_tokens, 0);
        // The same body without usage: the output text is counted.
        let no_usage = r#"{"id":"resp_1","object":"response","model":"gpt-4.1","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Yo","annotations":[]}]}]}"#;
        let m = run(Api::OpenAiResponses, Framing::Json, no_usage, 9);
        assert!(m.usage.is_none());
        assert_eq!(m.counted_output_tokens, 1);
        assert_eq!(m.model.as_deref(), Some("gpt-4.1"));
    }

    #[test]
    fn responses_stream_usage_in_completed_event() {
        let body = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"r\",\"model\":\"gpt-4.1\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"Hel\"}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"delta\":\"lo\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{\"id\":\"r\",\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":8,\"output_tokens\":1,\"total_tokens\":9}}}\n\n"
        );
        let m = run(Api::OpenAiResponses, Framing::Sse, body, 4);
        assert_eq!(m.usage.unwrap().output_tokens, 1);
        assert_eq!(m.usage.unwrap().input_tokens, 8);
        assert!(m.complete);
        assert_eq!(m.counted_output_tokens, 0);
        let without = body.replace(
            ",\"usage\":{\"input_tokens\":8,\"output_tokens\":1,\"total_tokens\":9}",
            "",
        );
        let m = run(Api::OpenAiResponses, Framing::Sse, &without, 4);
        assert!(m.usage.is_none());
        assert_eq!(
            m.counted_output_tokens,
            Encoding::O200kBase.count("Hello") as u64
        );
    }

    #[test]
    fn garbage_and_truncated_bodies_never_panic() {
        for body in [
            "",
            "{",
            "data: {\n\n",
            "data: [DONE",
            "\u{0}\u{1}garbage\n\n\n",
            "event: message_delta\ndata: {\"usage\":\"x\"}\n\n",
        ] {
            for framing in [Framing::Json, Framing::Sse] {
                for api in [
                    Api::OpenAiChat,
                    Api::AnthropicMessages,
                    Api::OpenAiResponses,
                ] {
                    let m = run(api, framing, body, 2);
                    assert!(m.usage.is_none());
                }
            }
        }
        let m = run(Api::OpenAiChat, Framing::Json, "not json", 3);
        assert!(m.unparsed && !m.complete);
        // A body larger than the buffer is not parsed, and memory stays bounded.
        let mut p = UsageParser::new(Api::OpenAiChat, Framing::Json, Encoding::O200kBase, 16);
        p.feed(OPENAI_JSON.as_bytes());
        assert!(p.finish().unparsed);
    }

    #[test]
    fn content_type_detection() {
        assert_eq!(
            Framing::from_content_type("text/event-stream; charset=utf-8"),
            Some(Framing::Sse)
        );
        assert_eq!(
            Framing::from_content_type("application/json"),
            Some(Framing::Json)
        );
        assert_eq!(
            Framing::from_content_type("application/problem+json"),
            Some(Framing::Json)
        );
        assert_eq!(Framing::from_content_type("text/html"), None);
    }

    #[test]
    fn safe_cut_only_before_space_letter() {
        assert_eq!(safe_cut("ab cd"), Some(2));
        assert_eq!(safe_cut("ab  cd"), None);
        assert_eq!(safe_cut("ab 12"), None);
        assert_eq!(safe_cut("x"), None);
    }
}
