//! Per-request behaviour injection (`x-sim-*` request headers) and the
//! providers' error shapes.

use super::SimConfig;
use super::ids;
use super::wire::{J, obj};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Error status to return instead of a completion (`x-sim-status`).
pub const H_STATUS: &str = "x-sim-status";
/// Delay before the first byte, in ms (`x-sim-latency-ms`).
pub const H_LATENCY: &str = "x-sim-latency-ms";
/// Delay between stream events, in ms (`x-sim-chunk-delay-ms`).
pub const H_CHUNK_DELAY: &str = "x-sim-chunk-delay-ms";
/// `1`/`true`: report no usage at all (`x-sim-omit-usage`).
pub const H_OMIT_USAGE: &str = "x-sim-omit-usage";
/// Cached prompt tokens to report (`x-sim-cached-tokens`).
pub const H_CACHED: &str = "x-sim-cached-tokens";
/// Anthropic cache-creation tokens to report (`x-sim-cache-creation-tokens`).
pub const H_CACHE_CREATION: &str = "x-sim-cache-creation-tokens";
/// Abort the connection after K content chunks (`x-sim-fail-mid-stream`).
pub const H_FAIL_MID_STREAM: &str = "x-sim-fail-mid-stream";
/// Exact number of completion tokens wanted (`x-sim-completion-tokens`).
pub const H_COMPLETION_TOKENS: &str = "x-sim-completion-tokens";
/// Answer with a refusal instead of generated text (`x-sim-refuse`), for cascade tests.
pub const H_REFUSE: &str = "x-sim-refuse";
/// Scope every injected behaviour (status, latency, refusal, mid-stream failure) to requests
/// whose `model` starts with one of these comma-separated prefixes (`x-sim-fault-model`); other
/// models answer normally.
/// Lets one client request exercise a fallback chain or a cascade: the first model fails, the
/// next one does not.
pub const H_FAULT_MODEL: &str = "x-sim-fault-model";
/// The refusal sent under `x-sim-refuse`.
pub const REFUSAL_TEXT: &str = "I'm sorry, but I can't help with that request.";
/// Response header: the request's model.
pub const H_MODEL: &str = "x-sim-model";
/// Response header: the prompt tokens the simulator counted (before any
/// cache split).
pub const H_PROMPT_TOKENS: &str = "x-sim-prompt-tokens";

/// The API family whose shapes (errors, ids, headers) a path uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI (`/v1/chat/completions`, `/v1/completions`, `/v1/responses`, ...).
    OpenAi,
    /// Anthropic (`/v1/messages...`).
    Anthropic,
}

impl Provider {
    /// The provider whose shapes a request path uses.
    pub fn for_path(path: &str) -> Provider {
        if path.starts_with("/v1/messages") {
            Provider::Anthropic
        } else {
            Provider::OpenAi
        }
    }
}

/// Options of one request: the config's defaults overridden by headers.
#[derive(Clone, Debug, Default)]
pub struct SimOpts {
    /// Delay before the first byte.
    pub latency: Duration,
    /// Delay between stream events.
    pub chunk_delay: Duration,
    /// Injected error status.
    pub status: Option<StatusCode>,
    /// Report no usage.
    pub omit_usage: bool,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// Anthropic cache-creation tokens.
    pub cache_creation_tokens: u64,
    /// Abort after this many content chunks.
    pub fail_mid_stream: Option<usize>,
    /// Exact completion tokens wanted.
    pub completion_tokens: Option<usize>,
    /// Answer with [`REFUSAL_TEXT`].
    pub refuse: bool,
}

fn header_flag(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    let raw = headers.get(name)?.to_str().ok()?.trim();
    match raw.parse::<u64>() {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(
                header = name,
                value = raw,
                "ignoring non-numeric sim header"
            );
            None
        }
    }
}

impl SimOpts {
    /// Read the `x-sim-*` headers.
    pub fn from_headers(headers: &HeaderMap, config: &SimConfig) -> SimOpts {
        let status = header_u64(headers, H_STATUS)
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(|s| s.is_client_error() || s.is_server_error());
        let omit_usage = header_flag(headers, H_OMIT_USAGE);
        SimOpts {
            latency: header_u64(headers, H_LATENCY).map_or(config.latency, Duration::from_millis),
            chunk_delay: header_u64(headers, H_CHUNK_DELAY)
                .map_or(config.chunk_delay, Duration::from_millis),
            status,
            omit_usage,
            cached_tokens: header_u64(headers, H_CACHED).unwrap_or(0),
            cache_creation_tokens: header_u64(headers, H_CACHE_CREATION).unwrap_or(0),
            fail_mid_stream: header_u64(headers, H_FAIL_MID_STREAM)
                .and_then(|v| usize::try_from(v).ok()),
            completion_tokens: header_u64(headers, H_COMPLETION_TOKENS)
                .and_then(|v| usize::try_from(v).ok()),
            refuse: header_flag(headers, H_REFUSE),
        }
    }

    /// Drops the injected faults when `x-sim-fault-model` names another model than `model`.
    pub fn scoped_to(
        mut self,
        headers: &HeaderMap,
        model: Option<&str>,
        config: &SimConfig,
    ) -> SimOpts {
        let Some(scope) = headers.get(H_FAULT_MODEL).and_then(|v| v.to_str().ok()) else {
            return self;
        };
        if model.is_some_and(|m| {
            scope
                .split(',')
                .map(str::trim)
                .any(|p| !p.is_empty() && m.starts_with(p))
        }) {
            return self;
        }
        self.status = None;
        self.latency = config.latency;
        self.refuse = false;
        self.fail_mid_stream = None;
        self
    }

    /// Sleep the configured latency.
    pub async fn wait_latency(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

/// An error body in the provider's shape.
pub fn error_body(
    provider: Provider,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
    request_id: &str,
) -> J {
    match provider {
        Provider::OpenAi => obj! {
            "error": obj! {"message": message, "type": kind, "param": param, "code": code}
        },
        Provider::Anthropic => obj! {
            "type": "error",
            "error": obj! {"type": kind, "message": message},
            "request_id": request_id,
        },
    }
}

/// An error response in the provider's shape.
pub fn error_response(
    provider: Provider,
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let request_id = ids::request_id(provider);
    let body = error_body(provider, kind, message, param, code, &request_id);
    let mut resp = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_json(),
    )
        .into_response();
    set_request_id(provider, resp.headers_mut(), &request_id);
    resp
}

/// A 400 `invalid_request_error`.
pub fn invalid_request(provider: Provider, message: &str, param: Option<&str>) -> Response {
    let code = match provider {
        Provider::OpenAi => param.map(|_| "invalid_value"),
        Provider::Anthropic => None,
    };
    error_response(
        provider,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        param,
        code,
    )
}

/// 400 for a body that is not JSON, with the provider's wording.
pub fn malformed_json(provider: Provider) -> Response {
    match provider {
        Provider::OpenAi => error_response(
            provider,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
            None,
            None,
        ),
        Provider::Anthropic => error_response(
            provider,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "There was an issue with the formatting or content of your request. Please check your JSON.",
            None,
            None,
        ),
    }
}

/// The error for `x-sim-status`, in the provider's shape, with `retry-after`
/// on 429.
pub fn injected_error(provider: Provider, status: StatusCode, model: Option<&str>) -> Response {
    let code = status.as_u16();
    let model = model.unwrap_or("unknown");
    let mut resp = match provider {
        Provider::OpenAi => {
            let (kind, message, ecode): (&str, String, Option<&str>) = match code {
                429 => (
                    "requests",
                    format!(
                        "Rate limit reached for {model} in organization org-sim on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s."
                    ),
                    Some("rate_limit_exceeded"),
                ),
                401 => (
                    "invalid_request_error",
                    "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.".to_string(),
                    Some("invalid_api_key"),
                ),
                404 => (
                    "invalid_request_error",
                    format!("The model `{model}` does not exist or you do not have access to it."),
                    Some("model_not_found"),
                ),
                500 => (
                    "server_error",
                    "The server had an error while processing your request. Sorry about that!"
                        .to_string(),
                    None,
                ),
                c if c >= 500 => (
                    "server_error",
                    "The server is overloaded or not ready yet.".to_string(),
                    None,
                ),
                _ => (
                    "invalid_request_error",
                    format!("Simulated error (x-sim-status: {code})."),
                    None,
                ),
            };
            error_response(provider, status, kind, &message, None, ecode)
        }
        Provider::Anthropic => {
            let (kind, message) = match code {
                400 => (
                    "invalid_request_error",
                    "Simulated invalid request (x-sim-status: 400).",
                ),
                401 => ("authentication_error", "invalid x-api-key"),
                403 => (
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                404 => (
                    "not_found_error",
                    "The requested resource could not be found.",
                ),
                413 => (
                    "request_too_large",
                    "Request exceeds the maximum allowed number of bytes.",
                ),
                429 => (
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit.",
                ),
                500 => ("api_error", "Internal server error"),
                503 | 529 => ("overloaded_error", "Overloaded"),
                504 => ("timeout_error", "Request timeout"),
                c if c >= 500 => ("api_error", "Internal server error"),
                _ => ("invalid_request_error", "Simulated error."),
            };
            error_response(provider, status, kind, message, None, None)
        }
    };
    if code == 429 {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    resp
}

/// Add a new request id header in the provider's style.
pub fn add_request_id(provider: Provider, headers: &mut HeaderMap) {
    set_request_id(provider, headers, &ids::request_id(provider));
}

/// Set the provider's request-id header (`x-request-id` / `request-id`).
pub fn set_request_id(provider: Provider, headers: &mut HeaderMap, id: &str) {
    let name = match provider {
        Provider::OpenAi => "x-request-id",
        Provider::Anthropic => "request-id",
    };
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(name, v);
    }
}
