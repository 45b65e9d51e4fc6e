//! Anthropic endpoints: Messages (plain and streaming) and token counting.

use super::inject::{self, Provider};
use super::stream::{Phase, json_response, sse, sse_response};
use super::tokens::{self, Encoding};
use super::wire::{NULL, arr, obj};
use super::{AppState, begin, generate, ids, seed_of, sim_headers, text, token_limit};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

const P: Provider = Provider::Anthropic;

fn field_required(name: &str) -> Response {
    inject::invalid_request(P, &format!("{name}: Field required"), None)
}

/// Validated `model` and `messages` of a Messages request.
fn model_and_messages(req: &Value) -> Result<(&str, &Value), Response> {
    let model = match req.get("model") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => {
            return Err(inject::invalid_request(
                P,
                "model: Input should be a valid string",
                None,
            ));
        }
        None => return Err(field_required("model")),
    };
    let messages = match req.get("messages") {
        Some(v @ Value::Array(_)) => v,
        Some(_) => {
            return Err(inject::invalid_request(
                P,
                "messages: Input should be a valid list",
                None,
            ));
        }
        None => return Err(field_required("messages")),
    };
    Ok((model, messages))
}

fn prompt_tokens(req: &Value, messages: &Value) -> usize {
    tokens::claude_prompt_tokens(
        req.get("system"),
        messages.as_array().map_or(&[][..], Vec::as_slice),
        req.get("tools"),
    )
}

/// `POST /v1/messages`
pub async fn messages(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (opts, req) = match begin(P, &st, &headers, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (model, messages) = match model_and_messages(&req) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let max_tokens = match token_limit(P, &req, &["max_tokens"], 1) {
        Ok(Some(n)) => n,
        Ok(None) => return field_required("max_tokens"),
        Err(resp) => return resp,
    };
    if messages.as_array().is_some_and(Vec::is_empty) {
        return inject::invalid_request(P, "messages: at least one message is required", None);
    }
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    let total = prompt_tokens(&req, messages);
    let cache_read = opts.cached_tokens;
    let cache_creation = opts.cache_creation_tokens;
    let input_tokens = (total as u64).saturating_sub(cache_read.saturating_add(cache_creation));
    let enc = Encoding::for_model(model);
    let null = Value::Null;
    let g = generate(
        enc,
        seed_of(model, &[req.get("system").unwrap_or(&null), messages], 0),
        &opts,
        Some(max_tokens),
    );
    let output_tokens = g.tokens.len();
    let stop_reason = if g.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    let usage = |output: usize| {
        obj! {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_creation,
            "cache_read_input_tokens": cache_read,
            "cache_creation": obj! {
                "ephemeral_5m_input_tokens": cache_creation,
                "ephemeral_1h_input_tokens": 0u64,
            },
            "output_tokens": output,
            "service_tier": "standard",
        }
    };
    let id = ids::message_id();
    let extra = sim_headers(model, total);

    if !stream {
        let mut body = obj! {
            "id": &id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": arr![obj! {"type": "text", "text": &g.text}],
            "stop_reason": stop_reason,
            "stop_sequence": NULL,
            "usage": usage(output_tokens),
        };
        if opts.omit_usage {
            body.remove("usage");
        }
        return json_response(StatusCode::OK, &body, P, &opts, &extra);
    }

    let mut start_message = obj! {
        "id": &id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": arr![],
        "stop_reason": NULL,
        "stop_sequence": NULL,
        "usage": usage(1),
    };
    let mut delta = obj! {
        "type": "message_delta",
        "delta": obj! {"stop_reason": stop_reason, "stop_sequence": NULL},
        "usage": obj! {"output_tokens": output_tokens},
    };
    if opts.omit_usage {
        start_message.remove("usage");
        delta.remove("usage");
    }
    let mut events = vec![
        sse(
            Some("message_start"),
            &obj! {"type": "message_start", "message": start_message},
            Phase::Preamble,
        ),
        sse(
            Some("content_block_start"),
            &obj! {
                "type": "content_block_start",
                "index": 0u64,
                "content_block": obj! {"type": "text", "text": ""},
            },
            Phase::Preamble,
        ),
        sse(Some("ping"), &obj! {"type": "ping"}, Phase::Preamble),
    ];
    for piece in text::chunk_pieces(enc, &g.tokens, g.seed, 2, 6) {
        events.push(sse(
            Some("content_block_delta"),
            &obj! {
                "type": "content_block_delta",
                "index": 0u64,
                "delta": obj! {"type": "text_delta", "text": piece},
            },
            Phase::Content,
        ));
    }
    events.push(sse(
        Some("content_block_stop"),
        &obj! {"type": "content_block_stop", "index": 0u64},
        Phase::Tail,
    ));
    events.push(sse(Some("message_delta"), &delta, Phase::Tail));
    events.push(sse(
        Some("message_stop"),
        &obj! {"type": "message_stop"},
        Phase::Tail,
    ));
    sse_response(events, P, &opts, &extra)
}

/// `POST /v1/messages/count_tokens`
pub async fn count_tokens(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (opts, req) = match begin(P, &st, &headers, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (model, messages) = match model_and_messages(&req) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let total = prompt_tokens(&req, messages);
    json_response(
        StatusCode::OK,
        &obj! {"input_tokens": total},
        P,
        &opts,
        &sim_headers(model, total),
    )
}
