//! Renders a cached completion as the API the client called: JSON, or an SSE stream chunked like
//! the provider's own (role/start events, text deltas of a few words, finish and usage events,
//! terminator), so unmodified SDKs parse a cache hit exactly like a live answer.

use serde_json::{Value, json};
use tollgate_wire::Api;
use tollgate_wire::admit::CachedCompletion;

/// Splits text into stream deltas of about three words (whitespace stays attached).
pub fn deltas(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space && !in_space {
            words += 1;
            if words == 3 {
                if let Some(piece) = text.get(start..i) {
                    out.push(piece);
                }
                start = i;
                words = 0;
            }
        }
        in_space = space;
    }
    if let Some(rest) = text.get(start..)
        && (!rest.is_empty() || out.is_empty())
    {
        out.push(rest);
    }
    out
}

fn sse_data(out: &mut String, v: &Value) {
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

fn sse_event(out: &mut String, event: &str, v: &Value) {
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    sse_data(out, v);
}

/// Provider-style finish reason for the API.
fn finish(api: Api, reason: &str) -> &'static str {
    let length = reason == "length" || reason == "max_tokens";
    match (api, length) {
        (Api::AnthropicMessages, true) => "max_tokens",
        (Api::AnthropicMessages, false) => "end_turn",
        (_, true) => "length",
        (_, false) => "stop",
    }
}

/// The body and content type of a cache hit.
pub fn render(
    api: Api,
    stream: bool,
    include_usage: bool,
    model: &str,
    c: &CachedCompletion,
    now: u64,
) -> (String, &'static str) {
    let id_tail: String = c
        .entry_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    let u = &c.usage;
    let prompt = u.prompt_tokens();
    let out_tokens = u.output_tokens;
    let fin = finish(api, &c.finish_reason);
    match (api, stream) {
        (Api::OpenAiChat, false) => (
            json!({
                "id": format!("chatcmpl-tg{id_tail}"), "object": "chat.completion", "created": now, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text, "refusal": null, "annotations": []},
                             "logprobs": null, "finish_reason": fin}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": out_tokens, "total_tokens": prompt + out_tokens,
                          "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
                "system_fingerprint": "tollgate-cache"
            })
            .to_string(),
            "application/json",
        ),
        (Api::OpenAiChat, true) => {
            let id = format!("chatcmpl-tg{id_tail}");
            let chunk = |delta: Value, finish_reason: Value| {
                let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": now, "model": model,
                    "system_fingerprint": "tollgate-cache",
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]});
                if include_usage {
                    v["usage"] = Value::Null;
                }
                v
            };
            let mut out = String::new();
            sse_data(&mut out, &chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null));
            for d in deltas(&c.text) {
                sse_data(&mut out, &chunk(json!({"content": d}), Value::Null));
            }
            sse_data(&mut out, &chunk(json!({}), json!(fin)));
            if include_usage {
                sse_data(&mut out, &json!({"id": id, "object": "chat.completion.chunk", "created": now, "model": model,
                    "system_fingerprint": "tollgate-cache", "choices": [],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": out_tokens, "total_tokens": prompt + out_tokens,
                              "prompt_tokens_details": {"cached_tokens": 0}}}));
            }
            out.push_str("data: [DONE]\n\n");
            (out, "text/event-stream; charset=utf-8")
        }
        (Api::OpenAiCompletions, false) => (
            json!({"id": format!("cmpl-tg{id_tail}"), "object": "text_completion", "created": now, "model": model,
                   "choices": [{"text": c.text, "index": 0, "logprobs": null, "finish_reason": fin}],
                   "usage": {"prompt_tokens": prompt, "completion_tokens": out_tokens, "total_tokens": prompt + out_tokens}})
            .to_string(),
            "application/json",
        ),
        (Api::OpenAiCompletions, true) => {
            let id = format!("cmpl-tg{id_tail}");
            let mut out = String::new();
            let parts = deltas(&c.text);
            let last = parts.len().saturating_sub(1);
            for (i, d) in parts.iter().enumerate() {
                let f = if i == last { json!(fin) } else { Value::Null };
                sse_data(&mut out, &json!({"id": id, "object": "text_completion", "created": now, "model": model,
                    "choices": [{"text": d, "index": 0, "logprobs": null, "finish_reason": f}]}));
            }
            if include_usage {
                sse_data(&mut out, &json!({"id": id, "object": "text_completion", "created": now, "model": model, "choices": [],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": out_tokens, "total_tokens": prompt + out_tokens}}));
            }
            out.push_str("data: [DONE]\n\n");
            (out, "text/event-stream; charset=utf-8")
        }
        (Api::OpenAiResponses, _) => {
            let rid = format!("resp_tg{id_tail}");
            let mid = format!("msg_tg{id_tail}");
            let status = if fin == "length" { "incomplete" } else { "completed" };
            let usage = json!({"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                               "output_tokens": out_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                               "total_tokens": prompt + out_tokens});
            let item = json!({"type": "message", "id": mid, "status": "completed", "role": "assistant",
                              "content": [{"type": "output_text", "text": c.text, "annotations": []}]});
            let response = |status: &str, output: Value, usage: Value| {
                json!({"id": rid, "object": "response", "created_at": now, "status": status, "model": model,
                       "output": output, "usage": usage, "error": null, "incomplete_details": null})
            };
            if !stream {
                return (response(status, json!([item]), usage).to_string(), "application/json");
            }
            let mut out = String::new();
            let mut seq = 0u64;
            let mut ev = |out: &mut String, kind: &str, mut v: Value| {
                v["type"] = json!(kind);
                v["sequence_number"] = json!(seq);
                seq += 1;
                sse_event(out, kind, &v);
            };
            ev(&mut out, "response.created", json!({"response": response("in_progress", json!([]), Value::Null)}));
            ev(&mut out, "response.in_progress", json!({"response": response("in_progress", json!([]), Value::Null)}));
            ev(&mut out, "response.output_item.added", json!({"output_index": 0,
                "item": {"type": "message", "id": mid, "status": "in_progress", "role": "assistant", "content": []}}));
            ev(&mut out, "response.content_part.added", json!({"item_id": mid, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}));
            for d in deltas(&c.text) {
                ev(&mut out, "response.output_text.delta", json!({"item_id": mid, "output_index": 0, "content_index": 0, "delta": d, "logprobs": []}));
            }
            ev(&mut out, "response.output_text.done", json!({"item_id": mid, "output_index": 0, "content_index": 0, "text": c.text, "logprobs": []}));
            ev(&mut out, "response.content_part.done", json!({"item_id": mid, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": c.text, "annotations": []}}));
            ev(&mut out, "response.output_item.done", json!({"output_index": 0, "item": item}));
            let done = if status == "completed" { "response.completed" } else { "response.incomplete" };
            ev(&mut out, done, json!({"response": response(status, json!([item]), usage)}));
            (out, "text/event-stream; charset=utf-8")
        }
        (Api::AnthropicMessages, false) => (
            json!({"id": format!("msg_tg{id_tail}"), "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": c.text}], "stop_reason": fin, "stop_sequence": null,
                   "usage": {"input_tokens": prompt, "output_tokens": out_tokens,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
            .to_string(),
            "application/json",
        ),
        (Api::AnthropicMessages, true) => {
            let mut out = String::new();
            sse_event(&mut out, "message_start", &json!({"type": "message_start", "message": {
                "id": format!("msg_tg{id_tail}"), "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": prompt, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}));
            sse_event(&mut out, "content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
            sse_event(&mut out, "ping", &json!({"type": "ping"}));
            for d in deltas(&c.text) {
                sse_event(&mut out, "content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}));
            }
            sse_event(&mut out, "content_block_stop", &json!({"type": "content_block_stop", "index": 0}));
            sse_event(&mut out, "message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": fin, "stop_sequence": null},
                "usage": {"output_tokens": out_tokens}}));
            sse_event(&mut out, "message_stop", &json!({"type": "message_stop"}));
            (out, "text/event-stream; charset=utf-8")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::usage::{Framing, UsageParser};
    use tollgate_bpe::Encoding;
    use tollgate_wire::Usage;

    fn entry() -> CachedCompletion {
        CachedCompletion {
            entry_id: "42".into(),
            model: "gpt-4o".into(),
            text: "Paris is the capital of France, and it is lovely in spring.".into(),
            finish_reason: "stop".into(),
            usage: Usage {
                input_tokens: 20,
                output_tokens: 14,
                ..Usage::default()
            },
            cost_pico: Some(1),
            created_at: 1,
        }
    }

    #[test]
    fn deltas_rebuild_the_text() {
        for t in [
            "",
            "one",
            "one two three four five six seven",
            "  lead and trail  ",
            "multi\nline\n\ntext here",
        ] {
            assert_eq!(deltas(t).concat(), t);
        }
        assert!(deltas("a b c d e f g h i").len() >= 3);
    }

    /// Every rendering is read back by the filter's own response parser (the one that meters
    /// live provider traffic): same text, same usage, complete.
    #[test]
    fn renderings_parse_back_as_the_same_answer() {
        let e = entry();
        for api in [
            Api::OpenAiChat,
            Api::OpenAiCompletions,
            Api::OpenAiResponses,
            Api::AnthropicMessages,
        ] {
            for stream in [false, true] {
                let (body, ct) = render(api, stream, true, "gpt-4o", &e, 1_700_000_000);
                let framing = Framing::from_content_type(ct).unwrap();
                assert_eq!(framing == Framing::Sse, stream);
                let mut p = UsageParser::new(api, framing, Encoding::O200kBase, 1 << 20);
                p.capture_text(true);
                for chunk in body.as_bytes().chunks(37) {
                    p.feed(chunk);
                }
                let m = p.finish();
                assert!(m.complete, "{api:?} stream={stream}: {body}");
                let u = m
                    .usage
                    .unwrap_or_else(|| panic!("{api:?} {stream}: no usage in {body}"));
                assert_eq!(u.output_tokens, 14, "{api:?} {stream}");
                assert_eq!(m.text.as_deref(), Some(e.text.as_str()), "{api:?} {stream}");
                assert_eq!(m.finish_reason.as_deref(), Some("stop"), "{api:?} {stream}");
            }
        }
    }

    #[test]
    fn length_finish_maps_per_api() {
        let mut e = entry();
        e.finish_reason = "length".into();
        let (b, _) = render(Api::AnthropicMessages, false, false, "m", &e, 0);
        assert!(b.contains("\"stop_reason\":\"max_tokens\""));
        let (b, _) = render(Api::OpenAiChat, false, false, "m", &e, 0);
        assert!(b.contains("\"finish_reason\":\"length\""));
    }
}
