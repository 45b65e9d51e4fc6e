//! OpenAI endpoints: Chat Completions, legacy Completions, Responses, Models.

use super::inject::{self, Provider, SimOpts};
use super::stream::{Phase, SseEvent, json_response, sse, sse_done, sse_response};
use super::tokens::{self, Encoding};
use super::wire::{J, NULL, arr, obj};
use super::{AppState, Generated, begin, generate, ids, seed_of, sim_headers, text, token_limit};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

const P: Provider = Provider::OpenAi;

fn missing_param(name: &str) -> Response {
    inject::error_response(
        P,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        &format!("Missing required parameter: '{name}'."),
        Some(name),
        Some("missing_required_parameter"),
    )
}

fn finish_reason(g: &Generated) -> &'static str {
    if g.truncated { "length" } else { "stop" }
}

fn stream_flags(req: &Value) -> (bool, bool) {
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    (stream, include_usage)
}

fn choice_count(req: &Value) -> Result<usize, Response> {
    match req.get("n").filter(|v| !v.is_null()) {
        None => Ok(1),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=128).contains(&n) => Ok(n as usize),
            _ => Err(inject::error_response(
                P,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!(
                    "Invalid 'n': expected an integer between 1 and 128, but got {v} instead."
                ),
                Some("n"),
                Some("invalid_value"),
            )),
        },
    }
}

/// Chat/legacy usage object.
fn chat_usage(prompt: usize, completion: usize, cached: u64, details: bool) -> J {
    let mut u = obj! {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    };
    if details {
        u.set(
            "prompt_tokens_details",
            obj! {"cached_tokens": cached, "audio_tokens": 0u64},
        );
        u.set(
            "completion_tokens_details",
            obj! {
                "reasoning_tokens": 0u64,
                "audio_tokens": 0u64,
                "accepted_prediction_tokens": 0u64,
                "rejected_prediction_tokens": 0u64,
            },
        );
    }
    u
}

fn pieces(enc: Encoding, g: &Generated) -> Vec<String> {
    text::chunk_pieces(enc, &g.tokens, g.seed, 1, 3)
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (opts, req) = match begin(P, &st, &headers, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return inject::invalid_request(P, "you must provide a model parameter", None);
    };
    let messages_value = match req.get("messages") {
        Some(v @ Value::Array(m)) if !m.is_empty() => v,
        Some(Value::Array(_)) => {
            return inject::error_response(
                P,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                Some("messages"),
                Some("empty_array"),
            );
        }
        _ => return missing_param("messages"),
    };
    let messages = messages_value.as_array().map_or(&[][..], Vec::as_slice);
    let limit = match token_limit(P, &req, &["max_completion_tokens", "max_tokens"], 1) {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    let n = match choice_count(&req) {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    let (stream, include_usage) = stream_flags(&req);
    let enc = Encoding::for_model(model);
    let tools = req.get("tools").or_else(|| req.get("functions"));
    let prompt_tokens = tokens::openai_chat_prompt_tokens(enc, messages, tools);
    let gens: Vec<Generated> = (0..n)
        .map(|i| generate(enc, seed_of(model, &[messages_value], i), &opts, limit))
        .collect();
    let completion_tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();
    let usage = chat_usage(prompt_tokens, completion_tokens, opts.cached_tokens, true);
    let id = ids::chat_completion_id();
    let created = ids::now_secs();
    let extra = sim_headers(model, prompt_tokens);

    if !stream {
        let choices: Vec<J> = gens
            .iter()
            .enumerate()
            .map(|(i, g)| {
                obj! {
                    "index": i,
                    "message": obj! {
                        "role": "assistant",
                        "content": &g.text,
                        "refusal": NULL,
                        "annotations": arr![],
                    },
                    "logprobs": NULL,
                    "finish_reason": finish_reason(g),
                }
            })
            .collect();
        let mut body = obj! {
            "id": &id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": ids::SYSTEM_FINGERPRINT,
        };
        if opts.omit_usage {
            body.remove("usage");
        }
        return json_response(StatusCode::OK, &body, P, &opts, &extra);
    }

    let with_usage = include_usage && !opts.omit_usage;
    let chunk = |choices: J| {
        let mut c = obj! {
            "id": &id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": ids::SYSTEM_FINGERPRINT,
            "choices": choices,
        };
        if with_usage {
            c.set("usage", NULL);
        }
        c
    };
    let mut events: Vec<SseEvent> = Vec::new();
    for i in 0..gens.len() {
        events.push(sse(
            None,
            &chunk(arr![obj! {
                "index": i,
                "delta": obj! {"role": "assistant", "content": "", "refusal": NULL},
                "logprobs": NULL,
                "finish_reason": NULL,
            }]),
            Phase::Preamble,
        ));
    }
    for (i, g) in gens.iter().enumerate() {
        for piece in pieces(enc, g) {
            events.push(sse(
                None,
                &chunk(arr![obj! {
                    "index": i,
                    "delta": obj! {"content": piece},
                    "logprobs": NULL,
                    "finish_reason": NULL,
                }]),
                Phase::Content,
            ));
        }
    }
    for (i, g) in gens.iter().enumerate() {
        events.push(sse(
            None,
            &chunk(arr![obj! {
                "index": i,
                "delta": obj! {},
                "logprobs": NULL,
                "finish_reason": finish_reason(g),
            }]),
            Phase::Tail,
        ));
    }
    if with_usage {
        let mut last = chunk(arr![]);
        last.set("usage", usage);
        events.push(sse(None, &last, Phase::Tail));
    }
    events.push(sse_done());
    sse_response(events, P, &opts, &extra)
}

/// `POST /v1/completions` (legacy).
pub async fn completions(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (opts, req) = match begin(P, &st, &headers, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return inject::invalid_request(P, "you must provide a model parameter", None);
    };
    let Some(prompt) = req.get("prompt").filter(|p| !p.is_null()) else {
        return missing_param("prompt");
    };
    let enc = Encoding::for_model(model);
    let prompts = tokens::openai_completion_prompts(enc, prompt);
    if prompts.is_empty() {
        return inject::invalid_request(
            P,
            "Invalid 'prompt': expected a string, an array of strings, or token arrays.",
            Some("prompt"),
        );
    }
    // the legacy endpoint defaults max_tokens to 16
    let limit = match token_limit(P, &req, &["max_tokens"], 0) {
        Ok(l) => Some(l.unwrap_or(16)),
        Err(resp) => return resp,
    };
    let n = match choice_count(&req) {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    let (stream, include_usage) = stream_flags(&req);
    let prompt_tokens: usize = prompts.iter().map(|(_, c)| c).sum();
    let mut gens: Vec<Generated> = Vec::new();
    for (text, _) in &prompts {
        let pv = Value::String(text.clone());
        for j in 0..n {
            gens.push(generate(enc, seed_of(model, &[&pv], j), &opts, limit));
        }
    }
    let completion_tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();
    let usage = chat_usage(prompt_tokens, completion_tokens, 0, false);
    let id = ids::completion_id();
    let created = ids::now_secs();
    let extra = sim_headers(model, prompt_tokens);

    if !stream {
        let choices: Vec<J> = gens
            .iter()
            .enumerate()
            .map(|(i, g)| {
                obj! {
                    "text": &g.text,
                    "index": i,
                    "logprobs": NULL,
                    "finish_reason": finish_reason(g),
                }
            })
            .collect();
        let mut body = obj! {
            "id": &id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": ids::SYSTEM_FINGERPRINT,
            "choices": choices,
            "usage": usage,
        };
        if opts.omit_usage {
            body.remove("usage");
        }
        return json_response(StatusCode::OK, &body, P, &opts, &extra);
    }

    let with_usage = include_usage && !opts.omit_usage;
    let chunk = |choices: J| {
        let mut c = obj! {
            "id": &id,
            "object": "text_completion",
            "created": created,
            "choices": choices,
            "model": model,
            "system_fingerprint": ids::SYSTEM_FINGERPRINT,
        };
        if with_usage {
            c.set("usage", NULL);
        }
        c
    };
    let mut events = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        for piece in pieces(enc, g) {
            events.push(sse(
                None,
                &chunk(arr![
                    obj! {"text": piece, "index": i, "logprobs": NULL, "finish_reason": NULL}
                ]),
                Phase::Content,
            ));
        }
        events.push(sse(
            None,
            &chunk(arr![
                obj! {"text": "", "index": i, "logprobs": NULL, "finish_reason": finish_reason(g)}
            ]),
            Phase::Tail,
        ));
    }
    if with_usage {
        let mut last = chunk(arr![]);
        last.set("usage", usage);
        events.push(sse(None, &last, Phase::Tail));
    }
    events.push(sse_done());
    sse_response(events, P, &opts, &extra)
}

struct ResponseCtx<'a> {
    id: String,
    created: u64,
    model: &'a str,
    req: &'a Value,
    omit_usage: bool,
}

impl ResponseCtx<'_> {
    fn echo(&self, key: &str, default: J) -> J {
        self.req
            .get(key)
            .filter(|v| !v.is_null())
            .map_or(default, J::from)
    }

    fn object(&self, status: &str, output: Vec<J>, usage: Option<&J>) -> J {
        let incomplete = if status == "incomplete" {
            obj! {"reason": "max_output_tokens"}
        } else {
            NULL
        };
        let mut o = obj! {
            "id": &self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": false,
            "error": NULL,
            "incomplete_details": incomplete,
            "instructions": self.echo("instructions", NULL),
            "max_output_tokens": self.echo("max_output_tokens", NULL),
            "max_tool_calls": NULL,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": self.echo("previous_response_id", NULL),
            "prompt_cache_key": NULL,
            "reasoning": obj! {"effort": NULL, "summary": NULL},
            "safety_identifier": NULL,
            "service_tier": "default",
            "store": self.echo("store", J::from(true)),
            "temperature": self.echo("temperature", J::from(1.0)),
            "text": obj! {"format": obj! {"type": "text"}, "verbosity": "medium"},
            "tool_choice": self.echo("tool_choice", J::from("auto")),
            "tools": self.echo("tools", arr![]),
            "top_logprobs": 0u64,
            "top_p": self.echo("top_p", J::from(1.0)),
            "truncation": "disabled",
            "usage": usage.cloned(),
            "user": NULL,
            "metadata": self.echo("metadata", obj! {}),
        };
        if self.omit_usage {
            o.remove("usage");
        }
        o
    }
}

fn output_text_part(text: &str) -> J {
    obj! {"type": "output_text", "annotations": arr![], "logprobs": arr![], "text": text}
}

fn message_item(id: &str, status: &str, content: Vec<J>) -> J {
    obj! {"id": id, "type": "message", "status": status, "content": content, "role": "assistant"}
}

/// Responses API stream events, numbered in order.
struct ResponseEvents {
    seq: u64,
    events: Vec<SseEvent>,
}

impl ResponseEvents {
    fn push(&mut self, name: &str, fields: J, phase: Phase) {
        let mut data = obj! {"type": name, "sequence_number": self.seq};
        if let (J::Obj(dst), J::Obj(src)) = (&mut data, fields) {
            dst.extend(src);
        }
        self.seq += 1;
        self.events.push(sse(Some(name), &data, phase));
    }
}

/// `POST /v1/responses`
pub async fn responses(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (opts, req) = match begin(P, &st, &headers, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return missing_param("model");
    };
    let limit = match token_limit(P, &req, &["max_output_tokens"], 16) {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    let (stream, _) = stream_flags(&req);
    let enc = Encoding::for_model(model);
    let instructions = req.get("instructions").filter(|v| !v.is_null());
    let input = req.get("input").filter(|v| !v.is_null());
    let input_tokens =
        tokens::openai_responses_prompt_tokens(enc, instructions, input, req.get("tools"));
    let null = Value::Null;
    let g = generate(
        enc,
        seed_of(
            model,
            &[instructions.unwrap_or(&null), input.unwrap_or(&null)],
            0,
        ),
        &opts,
        limit,
    );
    let output_tokens = g.tokens.len();
    let usage = obj! {
        "input_tokens": input_tokens,
        "input_tokens_details": obj! {"cached_tokens": opts.cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": obj! {"reasoning_tokens": 0u64},
        "total_tokens": input_tokens + output_tokens,
    };
    let ctx = ResponseCtx {
        id: ids::response_id(),
        created: ids::now_secs(),
        model,
        req: &req,
        omit_usage: opts.omit_usage,
    };
    let item_id = ids::response_item_id();
    let final_status = if g.truncated {
        "incomplete"
    } else {
        "completed"
    };
    let final_item = message_item(&item_id, final_status, vec![output_text_part(&g.text)]);
    let final_obj = ctx.object(final_status, vec![final_item.clone()], Some(&usage));
    let extra = sim_headers(model, input_tokens);

    if !stream {
        return json_response(StatusCode::OK, &final_obj, P, &opts, &extra);
    }

    let mut ev = ResponseEvents {
        seq: 0,
        events: Vec::new(),
    };
    let in_progress = ctx.object("in_progress", vec![], None);
    ev.push(
        "response.created",
        obj! {"response": in_progress.clone()},
        Phase::Preamble,
    );
    ev.push(
        "response.in_progress",
        obj! {"response": in_progress},
        Phase::Preamble,
    );
    ev.push(
        "response.output_item.added",
        obj! {"output_index": 0u64, "item": message_item(&item_id, "in_progress", vec![])},
        Phase::Preamble,
    );
    ev.push(
        "response.content_part.added",
        obj! {
            "item_id": &item_id,
            "output_index": 0u64,
            "content_index": 0u64,
            "part": output_text_part(""),
        },
        Phase::Preamble,
    );
    for piece in pieces(enc, &g) {
        ev.push(
            "response.output_text.delta",
            obj! {
                "item_id": &item_id,
                "output_index": 0u64,
                "content_index": 0u64,
                "delta": piece,
                "logprobs": arr![],
            },
            Phase::Content,
        );
    }
    ev.push(
        "response.output_text.done",
        obj! {
            "item_id": &item_id,
            "output_index": 0u64,
            "content_index": 0u64,
            "text": &g.text,
            "logprobs": arr![],
        },
        Phase::Tail,
    );
    ev.push(
        "response.content_part.done",
        obj! {
            "item_id": &item_id,
            "output_index": 0u64,
            "content_index": 0u64,
            "part": output_text_part(&g.text),
        },
        Phase::Tail,
    );
    ev.push(
        "response.output_item.done",
        obj! {"output_index": 0u64, "item": final_item},
        Phase::Tail,
    );
    let last = if g.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    ev.push(last, obj! {"response": final_obj}, Phase::Tail);
    sse_response(ev.events, P, &opts, &extra)
}

const OPENAI_MODELS: [(&str, u64); 12] = [
    ("gpt-5", 1_754_425_777),
    ("gpt-5-mini", 1_754_425_928),
    ("gpt-4.1", 1_744_316_542),
    ("gpt-4.1-mini", 1_744_318_173),
    ("gpt-4o", 1_715_367_049),
    ("gpt-4o-mini", 1_721_172_741),
    ("o3", 1_744_225_308),
    ("o4-mini", 1_744_225_351),
    ("gpt-4-turbo", 1_712_361_441),
    ("gpt-4", 1_687_882_411),
    ("gpt-3.5-turbo", 1_677_610_602),
    ("gpt-3.5-turbo-instruct", 1_692_901_427),
];

const CLAUDE_MODELS: [(&str, &str, &str); 4] = [
    (
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    (
        "claude-opus-4-1-20250805",
        "Claude Opus 4.1",
        "2025-08-05T00:00:00Z",
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
    ),
    (
        "claude-3-5-haiku-20241022",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
    ),
];

fn openai_model(id: &str, created: u64) -> J {
    obj! {"id": id, "object": "model", "created": created, "owned_by": "system"}
}

fn claude_model(id: &str, name: &str, created: &str) -> J {
    obj! {"type": "model", "id": id, "display_name": name, "created_at": created}
}

async fn models_begin(st: &AppState, headers: &HeaderMap) -> Result<Provider, Response> {
    let provider = if headers.contains_key("anthropic-version") {
        Provider::Anthropic
    } else {
        Provider::OpenAi
    };
    let opts = SimOpts::from_headers(headers, &st.config);
    opts.wait_latency().await;
    if let Some(status) = opts.status {
        return Err(inject::injected_error(provider, status, None));
    }
    Ok(provider)
}

/// `GET /v1/models`
pub async fn models(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let provider = match models_begin(&st, &headers).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let body = match provider {
        Provider::OpenAi => obj! {
            "object": "list",
            "data": OPENAI_MODELS.iter().map(|(id, c)| openai_model(id, *c)).collect::<Vec<_>>(),
        },
        Provider::Anthropic => obj! {
            "data": CLAUDE_MODELS
                .iter()
                .map(|(id, n, c)| claude_model(id, n, c))
                .collect::<Vec<_>>(),
            "has_more": false,
            "first_id": CLAUDE_MODELS.first().map(|m| m.0),
            "last_id": CLAUDE_MODELS.last().map(|m| m.0),
        },
    };
    json_response(
        StatusCode::OK,
        &body,
        provider,
        &SimOpts::default(),
        &Vec::new(),
    )
}

/// `GET /v1/models/{id}`: any id exists.
pub async fn model(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let provider = match models_begin(&st, &headers).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let body = match provider {
        Provider::OpenAi => {
            let created = OPENAI_MODELS
                .iter()
                .find(|m| m.0 == id)
                .map_or(1_700_000_000, |m| m.1);
            openai_model(&id, created)
        }
        Provider::Anthropic => match CLAUDE_MODELS.iter().find(|m| m.0 == id) {
            Some((i, n, c)) => claude_model(i, n, c),
            None => claude_model(&id, &id, "2025-01-01T00:00:00Z"),
        },
    };
    json_response(
        StatusCode::OK,
        &body,
        provider,
        &SimOpts::default(),
        &Vec::new(),
    )
}
