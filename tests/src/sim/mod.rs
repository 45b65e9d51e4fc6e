//! Simulated LLM provider: speaks the OpenAI and Anthropic wire formats
//! (JSON and SSE streaming) closely enough for the official SDKs, with
//! realistic token usage and fault injection. Used by the demo, the
//! integration tests and the load benchmarks in place of the real APIs.
//!
//! # Endpoints
//!
//! | method + path | behaves like |
//! | --- | --- |
//! | `POST /v1/chat/completions` | OpenAI Chat Completions (plain and `stream`, `stream_options.include_usage`, `n`) |
//! | `POST /v1/completions` | OpenAI legacy Completions (`prompt` string/array; `max_tokens` defaults to 16 as there) |
//! | `POST /v1/responses` | OpenAI Responses API (plain and streaming; `max_output_tokens` must be >= 16 as there) |
//! | `POST /v1/messages` | Anthropic Messages (plain and streaming; `max_tokens` required) |
//! | `POST /v1/messages/count_tokens` | Anthropic token counting (`{"input_tokens": N}`) |
//! | `GET /v1/models`, `GET /v1/models/{id}` | OpenAI model list/object (Anthropic's shape when the request has `anthropic-version`) |
//! | `GET /healthz` | `{"status":"ok"}` |
//! | `GET /_sim/requests` | JSON array of the last 200 requests (see [`RecordedRequest`]); `/_sim/*` and `/healthz` are not recorded |
//! | `DELETE /_sim/requests` | clears that list |
//!
//! A body that is not a JSON object gets a 400 in the shape of the path's
//! provider (Anthropic for `/v1/messages*`, OpenAI elsewhere); unknown paths
//! a 404 likewise.
//!
//! # Token counting (what the simulator reports as usage)
//!
//! All counts use tiktoken's *ordinary* encoding (special-token text counts
//! as plain text), `count(s)` below. See [`tokens`] for the code.
//!
//! **Encoding by model** ([`tokens::Encoding::for_model`], case-insensitive,
//! `ft:BASE:...` uses BASE): `o200k_base` for names starting with `gpt-4o`,
//! `gpt-4.1`, `gpt-5`, `o1`, `o3`, `o4`, `chatgpt-4o`; `cl100k_base` for
//! everything else (gpt-4, gpt-4-turbo, gpt-3.5*, unknown models, Claude).
//!
//! **Chat Completions** (OpenAI cookbook formula):
//! `prompt_tokens = 3 + Σ_messages (3 + Σ_fields f) + tools`, where for each
//! key of a message: `content` = string → `count`, array of parts → Σ parts
//! (`text` part: `count(text)`; `image_url` part: 85 if `detail` is `"low"`,
//! else 765; `refusal` part: `count(refusal)`; other parts 0); `name` →
//! `count(name) + 1`; `tool_calls` → Σ `count(function.name) +
//! count(function.arguments)`; `function_call` likewise; any other
//! string-valued key (`role`, `tool_call_id`, ...) → `count(value)`; other
//! values 0. `tools = count(canonical_json(tools)) + 8` when `tools` (or
//! legacy `functions`) is a non-empty array, else 0, where `canonical_json` is
//! the compact JSON serialisation with object keys sorted
//! ([`tokens::canonical_json`]).
//!
//! **Completions**: `prompt_tokens = Σ_prompts count(prompt)` (a
//! pre-tokenised prompt counts its length).
//!
//! **Responses API**: `input_tokens = 3 + instructions + input + tools`,
//! with `instructions = 3 + count("system") + count(instructions)` when it is
//! a string; a string `input` is one user message, `3 + count("user") +
//! count(input)`; an array `input` is Σ items `3 + item`, where a message
//! item (`type` absent or `"message"`) is `count(role) + content` (content as
//! for chat, `input_text`/`output_text` parts count their `text`,
//! `input_image` parts 85/765 by `detail`), a `function_call` item
//! `count(name) + count(arguments)`, a `function_call_output` item
//! `count(output)`, and any other item `count(canonical_json(item))`; `tools`
//! as for chat.
//!
//! **Claude** (`claude-*`; Anthropic's tokenizer is not public, so
//! `cl100k_base` stands in):
//! `input_tokens_total = 7 + system + Σ_messages (4 + content) + tools`, with
//! `tools = count(canonical_json(tools))` when a non-empty array, else 0,
//! where `system`/`content` = string → `count`, blocks → Σ (`text`:
//! `count(text)`; `image`: 1600; `tool_use`:
//! `count(name) + count(canonical_json(input))`; `tool_result`: its `content` recursively;
//! `thinking`: `count(thinking)`; any other block
//! `count(canonical_json(block))`). Roles are not counted. The reported
//! `input_tokens` is `input_tokens_total - cache_read - cache_creation`
//! (saturating), as Anthropic reports uncached input only.
//!
//! **Completion text**: deterministic English sentences seeded from the
//! model and the prompt content (so a streamed and a plain request get the
//! same text). Its length is `x-sim-completion-tokens` when given, else
//! 20..=60 tokens derived from the seed; it is cut to `max_tokens` /
//! `max_completion_tokens` / `max_output_tokens` when longer (finish reason
//! `length`, stop reason `max_tokens`, Responses status `incomplete`).
//! Reported completion/output tokens are always the real token count of the
//! returned text under the model's encoding (Claude: cl100k_base). Streams
//! split the text at token boundaries: 1-3 tokens per chunk for OpenAI, 2-6
//! for Anthropic.
//!
//! # Injection headers
//!
//! See [`inject`]: `x-sim-status` (error in the provider's shape,
//! `retry-after: 1` on 429), `x-sim-latency-ms`, `x-sim-chunk-delay-ms`,
//! `x-sim-omit-usage`, `x-sim-cached-tokens`, `x-sim-cache-creation-tokens`,
//! `x-sim-fail-mid-stream` (K content chunks, then the connection is aborted;
//! a plain JSON response sends half its body, then aborts),
//! `x-sim-completion-tokens`, `x-sim-refuse` (a refusal as the answer) and
//! `x-sim-fault-model` (status, latency, refusal and mid-stream failure then
//! apply only to models starting with its value). Responses carry
//! `x-sim-model` and `x-sim-prompt-tokens` (the total prompt count before any
//! cache split).

#![allow(clippy::result_large_err)] // handlers return early with a full Response

mod anthropic;
mod ids;
pub mod inject;
mod openai;
pub mod pool;
mod stream;
pub mod text;
pub mod tokens;
pub mod wire;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use inject::{Provider, SimOpts};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tiktoken_rs::Rank;
use tokens::Encoding;

/// How many requests `GET /_sim/requests` keeps.
pub const RECORDED_REQUESTS: usize = 200;
/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Simulator configuration (per-request headers override it).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Added latency before the first byte of every response.
    pub latency: Duration,
    /// Delay between stream events.
    pub chunk_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// One request as received by the simulator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Headers, names lower-cased, repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The body as JSON when it parses, else as a (lossy UTF-8) string;
    /// `null` when empty.
    pub body: Value,
}

pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    requests: Mutex<VecDeque<RecordedRequest>>,
}

impl Shared {
    fn new(config: SimConfig) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            requests: Mutex::new(VecDeque::new()),
        })
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, req: RecordedRequest) {
        let mut list = self.requests();
        if list.len() >= RECORDED_REQUESTS {
            list.pop_front();
        }
        list.push_back(req);
    }
}

pub(crate) type AppState = Arc<Shared>;

/// The simulator's router (testable without sockets).
pub fn app(config: SimConfig) -> Router {
    router(Shared::new(config))
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/responses", post(openai::responses))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/healthz", get(healthz))
        .route("/_sim/requests", get(list_requests).delete(clear_requests))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            record_request,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn list_requests(State(st): State<AppState>) -> Response {
    let list: Vec<RecordedRequest> = st.requests().iter().cloned().collect();
    axum::Json(list).into_response()
}

async fn clear_requests(State(st): State<AppState>) -> Response {
    st.requests().clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let provider = Provider::for_path(uri.path());
    let (kind, message) = match provider {
        Provider::OpenAi => (
            "invalid_request_error",
            format!("Invalid URL ({method} {})", uri.path()),
        ),
        Provider::Anthropic => ("not_found_error", "Not Found".to_string()),
    };
    inject::error_response(provider, StatusCode::NOT_FOUND, kind, &message, None, None)
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    map
}

async fn record_request(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim/") || path == "/healthz" {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return inject::error_response(
                Provider::for_path(&path),
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
                None,
                None,
            );
        }
    };
    let body_value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    tracing::debug!(method = %parts.method, path = %path, "request");
    st.record(RecordedRequest {
        method: parts.method.to_string(),
        path,
        query: parts.uri.query().map(str::to_string),
        headers: header_map(&parts.headers),
        body: body_value,
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Serve the simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: SimConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A simulator running in the current tokio runtime; stops on drop.
#[derive(Debug)]
pub struct SimHandle {
    /// The bound address (127.0.0.1, ephemeral port).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The recorded requests (same as `GET /_sim/requests`).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests().iter().cloned().collect()
    }

    /// Clear the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.requests().clear();
    }

    /// Stop gracefully (in-flight responses finish) and wait.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Start a simulator on 127.0.0.1 with an ephemeral port in the current
/// tokio runtime.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let shared = Shared::new(config);
    let app = router(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Ok(SimHandle {
        addr,
        shared,
        shutdown: Some(tx),
        task: Some(task),
    })
}

// ---------------------------------------------------------------------------
// Shared helpers for the provider modules.

/// A request body parsed as a JSON object, or the provider's 400.
pub(crate) fn parse_object(provider: Provider, body: &[u8]) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(inject::malformed_json(provider)),
    }
}

/// Common start of every completion handler: the options, the latency, the
/// parsed body, and an injected error if asked for.
pub(crate) async fn begin(
    provider: Provider,
    st: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(SimOpts, Value), Response> {
    let parsed = parse_object(provider, body);
    let model = parsed
        .as_ref()
        .ok()
        .and_then(|v| v.get("model"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let opts =
        SimOpts::from_headers(headers, &st.config).scoped_to(headers, model.as_deref(), &st.config);
    opts.wait_latency().await;
    if let Some(status) = opts.status {
        let mut resp = inject::injected_error(provider, status, model.as_deref());
        if let Some(m) = model
            && let Ok(v) = axum::http::HeaderValue::from_str(&m)
        {
            resp.headers_mut().insert(inject::H_MODEL, v);
        }
        return Err(resp);
    }
    let req = parsed?;
    Ok((opts, req))
}

/// An optional token limit: the first present, non-null field of `names`;
/// must be an integer >= `min`.
pub(crate) fn token_limit(
    provider: Provider,
    req: &Value,
    names: &[&str],
    min: u64,
) -> Result<Option<usize>, Response> {
    for name in names {
        let Some(v) = req.get(*name).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(n) = v.as_u64().or_else(|| {
            // a negative integer: report below minimum
            v.as_i64().map(|_| 0)
        }) else {
            let msg = match provider {
                Provider::OpenAi => format!(
                    "Invalid type for '{name}': expected an integer, but got {} instead.",
                    json_type(v)
                ),
                Provider::Anthropic => format!("{name}: Input should be a valid integer"),
            };
            let code = (provider == Provider::OpenAi).then_some("invalid_type");
            return Err(inject::error_response(
                provider,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &msg,
                Some(name),
                code,
            ));
        };
        if n < min || (v.as_i64().is_some_and(|i| i < 0)) {
            let shown = v.to_string();
            let msg = match provider {
                Provider::OpenAi => format!(
                    "Invalid '{name}': integer below minimum value. Expected a value >= {min}, but got {shown} instead."
                ),
                Provider::Anthropic => {
                    format!("{name}: Input should be greater than or equal to {min}")
                }
            };
            let code = (provider == Provider::OpenAi).then_some("integer_below_min_value");
            return Err(inject::error_response(
                provider,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &msg,
                Some(name),
                code,
            ));
        }
        return Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)));
    }
    Ok(None)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One generated completion.
#[derive(Clone, Debug)]
pub(crate) struct Generated {
    pub(crate) text: String,
    pub(crate) tokens: Vec<Rank>,
    /// Cut by the token limit.
    pub(crate) truncated: bool,
    pub(crate) seed: u64,
}

/// Generate the completion for a seed: `x-sim-completion-tokens` or the
/// natural length, cut at `limit`.
pub(crate) fn generate(
    enc: Encoding,
    seed: u64,
    opts: &SimOpts,
    limit: Option<usize>,
) -> Generated {
    if opts.refuse {
        let text = inject::REFUSAL_TEXT.to_string();
        let tokens = enc.encode(&text);
        return Generated {
            text,
            tokens,
            truncated: false,
            seed,
        };
    }
    let target = opts
        .completion_tokens
        .unwrap_or_else(|| text::natural_len(seed));
    let (text, truncated) = match limit {
        Some(l) if target > l => (text::generate(enc, seed, l, false), true),
        _ => (text::generate(enc, seed, target, true), false),
    };
    let tokens = enc.encode(&text);
    Generated {
        text,
        tokens,
        truncated,
        seed,
    }
}

/// Seed of a request: model + prompt content (+ choice index).
pub(crate) fn seed_of(model: &str, parts: &[&Value], index: usize) -> u64 {
    let mut buf = Vec::new();
    for p in parts {
        buf.extend_from_slice(tokens::canonical_json(p).as_bytes());
        buf.push(0);
    }
    text::fnv1a(&[model.as_bytes(), &buf, &(index as u64).to_le_bytes()])
}

/// The `x-sim-model` / `x-sim-prompt-tokens` response headers.
pub(crate) fn sim_headers(model: &str, prompt_tokens: usize) -> stream::Extra {
    vec![
        (inject::H_MODEL, model.to_string()),
        (inject::H_PROMPT_TOKENS, prompt_tokens.to_string()),
    ]
}

/// Resolves on SIGINT or SIGTERM (the simulator binaries stop gracefully on either).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
