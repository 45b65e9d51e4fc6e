//! One request/response exchange as a state machine with one transition per host callback.
//!
//! The glue calls the `on_*` methods from the matching proxy-wasm callbacks and turns the returned
//! verdicts into host actions; all decisions live here and are unit-tested natively.

use tollgate_wire::admit::{
    AdmitRequest, AdmitResponse, BudgetQuery, BudgetVerdict, CacheOutcome, CacheQuery,
    CachedCompletion, Identity as WireIdentity, SettleRecord, StoreRequest,
};
use tollgate_wire::{Api, Usage, UsageSource};

use crate::cachekey;
use crate::config::Config;
use crate::count::CountCache;
use crate::error::{ErrorKind, LocalReply, Rejection};
use crate::governance::{MaxTokensDecision, govern};
use crate::json;
use crate::metrics::{Cardinality, Counter, Tags};
use crate::pricing::{Price, format_usd};
use crate::render::render;
use crate::request::{ParsedRequest, parse};
use crate::routing::UpstreamFailure;
use crate::tenant::{Identity, identify};
use crate::usage::{Framing, ResponseMeter, UsageParser};

/// Classifies a request by method and path (query string ignored). Prefixes are allowed
/// (`/openai/v1/chat/completions`), so gateways that mount providers under a path still match.
pub fn classify(method: &str, path: &str) -> Option<Api> {
    if !method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions") {
        Some(Api::OpenAiChat)
    } else if path.ends_with("/v1/completions") {
        Some(Api::OpenAiCompletions)
    } else if path.ends_with("/v1/responses") {
        Some(Api::OpenAiResponses)
    } else if path.ends_with("/v1/messages") {
        Some(Api::AnthropicMessages)
    } else {
        None
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Headers a further upstream attempt carries: the client's, minus hop-by-hop and framing
/// headers and Envoy's own, with `:method`, `:path` and `:authority` first.
fn retry_headers(headers: &[(String, String)], path: &str) -> Vec<(String, String)> {
    let authority = header(headers, ":authority")
        .or_else(|| header(headers, "host"))
        .unwrap_or("");
    let mut out = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), authority.to_string()),
    ];
    out.extend(
        headers
            .iter()
            .filter(|(k, _)| {
                !k.starts_with(':')
                    && !k.starts_with("x-envoy-")
                    && !matches!(
                        k.as_str(),
                        "host"
                            | "content-length"
                            | "transfer-encoding"
                            | "connection"
                            | "keep-alive"
                            | "proxy-connection"
                            | "te"
                            | "upgrade"
                            | "expect"
                    )
            })
            .cloned(),
    );
    out
}

/// What to do after request headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadersVerdict {
    /// Not LLM traffic (or not meterable): continue untouched.
    PassThrough,
    /// LLM traffic: continue now, the body callbacks buffer the body. Remove these headers first.
    Continue { remove: Vec<&'static str> },
    /// LLM traffic, `stopOnHeaders`: stop iteration until the body has been decided.
    Pause { remove: Vec<&'static str> },
    /// Answer locally.
    Reply(LocalReply),
}

/// What to do after a request body callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyVerdict {
    /// Keep buffering (the whole body is needed).
    Buffer,
    /// Send upstream, replacing the body if given.
    Continue { body: Option<Vec<u8>> },
    /// Replace the body if given, then call the cache service (`POST /v1/admit` with `call` as
    /// the JSON body) and wait for [`Exchange::on_admit_response`].
    Admit {
        body: Option<Vec<u8>>,
        call: Vec<u8>,
    },
    /// Answer locally.
    Reply(LocalReply),
}

/// What to do once the admit call-out answered (or failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmitVerdict {
    /// Resume the request towards the upstream.
    Continue,
    /// Replace the (paused) request body, then resume: a budget downgrade rewrote the model.
    Rewrite { body: Vec<u8> },
    /// Answer locally (a cache hit).
    Reply(LocalReply),
}

/// What to do after response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHeadersVerdict {
    /// Hold the headers until the body has been metered (needs `stopOnHeaders`).
    pub hold: bool,
    /// Headers to add now.
    pub add: Vec<(String, String)>,
    /// The upstream failed and a fallback is due: hold the response, send this call and hand
    /// its answer to [`Exchange::on_call_response`]. The held response is never sent on.
    pub call: Option<UpstreamCall>,
}

/// What to do after a response body callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBodyVerdict {
    /// Keep buffering (held response, not finished).
    Hold,
    /// Pass on; when the response was held, set these headers first.
    Continue { set_headers: Vec<(String, String)> },
    /// A cheap-first answer failed its checks: keep the held response back, send this call
    /// (the strong model) and hand its answer to [`Exchange::on_call_response`].
    Call(UpstreamCall),
}

/// One more upstream attempt (a fallback or a cascade escalation), sent by the glue as an HTTP
/// call-out; the client then gets a local reply built from its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamCall {
    /// Envoy cluster; `None`: the cluster the first attempt went to.
    pub cluster: Option<String>,
    /// Request headers, pseudo-headers (`:method`, `:path`, `:authority`) first.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// What to do with the answer of an [`UpstreamCall`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallVerdict {
    /// That attempt failed too: try the next one.
    Call(UpstreamCall),
    /// Answer the client with this (the first response is dropped).
    Reply(LocalReply),
    /// Nothing was waiting for a call (stale answer).
    Ignore,
}

/// The final metering record of an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub api: Api,
    pub tenant: String,
    pub model: String,
    pub stream: bool,
    /// HTTP status returned to the client (0 if the exchange ended before a response).
    pub status: u16,
    pub usage: Usage,
    pub usage_source: UsageSource,
    /// The filter's own prompt count (or estimate) before the provider answered.
    pub prompt_counted: u64,
    /// `None` when the model has no price.
    pub cost_pico: Option<u64>,
    /// Provider's end-of-response marker seen.
    pub complete: bool,
    pub rejected: Option<ErrorKind>,
    pub max_tokens: MaxTokensDecision,
    pub request_id: String,
    /// Cache result (`None` when no cache service is configured).
    pub cache: Option<CacheOutcome>,
    /// What a cache hit saved, pico-USD.
    pub saved_pico: u64,
    /// The answer to store in the cache, when admit asked for it and the response qualifies.
    pub store: Option<StoreRequest>,
    /// Budget and ledger details echoed to the service on settle.
    pub budget: BudgetInfo,
}

/// What the settle record tells the service about budgets and routing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BudgetInfo {
    pub identity: Option<WireIdentity>,
    pub reservation_id: Option<String>,
    /// Remaining USD budget of the tightest scope after admit (pico-USD).
    pub remaining_pico: Option<u64>,
    /// The model the client asked for, when a downgrade or a routing rule changed it.
    pub requested_model: Option<String>,
    pub route: Option<String>,
    /// Estimated saving of a routing decision (pico-USD).
    pub routing_saved_pico: u64,
    /// Prompt tokens removed by context trimming.
    pub trimmed_tokens: u64,
    /// Stable-prefix key (prefix hints on).
    pub prefix_key: Option<String>,
    /// Anthropic `cache_control` breakpoints inserted for a hot prefix.
    pub breakpoints: usize,
    /// Upstream attempts that failed over to the next model: (model, reason `429`/`5xx`/`timeout`).
    pub fallbacks: Vec<(String, &'static str)>,
    /// A cheap-first answer escalated to the strong model: (cheap model, failed check).
    pub escalated: Option<(String, &'static str)>,
}

impl Outcome {
    /// Access-log properties (`tollgate.<key>`), strings only.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tenant", self.tenant.clone()),
            ("api", self.api.as_str().to_string()),
            ("model", self.model.clone()),
            ("prompt_tokens", self.usage.prompt_tokens().to_string()),
            ("completion_tokens", self.usage.output_tokens.to_string()),
            ("cached_tokens", self.usage.cache_read_tokens.to_string()),
            (
                "cost_usd",
                self.cost_pico
                    .map_or_else(|| "unknown".to_string(), format_usd),
            ),
            (
                "usage_source",
                usage_source_str(self.usage_source).to_string(),
            ),
            ("stream", self.stream.to_string()),
            ("result", self.result().to_string()),
        ]
    }

    /// The access-log properties as one logfmt line (`key=value` pairs separated by spaces;
    /// values with spaces, quotes, `=` or nothing at all are quoted).
    pub fn log_line(&self) -> String {
        let mut line = String::with_capacity(192);
        for (k, v) in self.properties() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(k);
            line.push('=');
            if !v.is_empty()
                && !v.contains([' ', '"', '=', '\\'])
                && !v.chars().any(char::is_control)
            {
                line.push_str(&v);
                continue;
            }
            line.push('"');
            for c in v.chars() {
                match c {
                    '"' => line.push_str("\\\""),
                    '\\' => line.push_str("\\\\"),
                    c if c.is_control() => line.push(' '),
                    c => line.push(c),
                }
            }
            line.push('"');
        }
        line
    }

    /// `ok`, `upstream_error`, `incomplete`, or the rejection code.
    pub fn result(&self) -> &'static str {
        if let Some(k) = self.rejected {
            k.code()
        } else if self.status >= 400 || self.status == 0 {
            "upstream_error"
        } else if !self.complete {
            "incomplete"
        } else {
            "ok"
        }
    }

    /// Counter increments for this outcome, with bounded tags.
    pub fn counters(&self, card: &mut Cardinality) -> Vec<(Counter, Tags, u64)> {
        let mut v = Vec::new();
        self.each_counter(card, |c, t, n| v.push((c, t.clone(), n)));
        v
    }

    /// Calls `f` for every counter increment (no per-increment allocation: the hot path).
    pub fn each_counter(&self, card: &mut Cardinality, mut f: impl FnMut(Counter, &Tags, u64)) {
        if let Some(kind) = self.rejected {
            f(
                Counter::Rejected,
                &Tags {
                    reason: Some(kind.code()),
                    ..Tags::default()
                },
                1,
            );
            if kind == ErrorKind::InvalidRequest {
                f(
                    Counter::ParseErrors,
                    &Tags {
                        api: Some(self.api.as_str()),
                        ..Tags::default()
                    },
                    1,
                );
            }
            return;
        }
        let tm = Tags {
            tenant: Some(card.tenant(&self.tenant)),
            model: Some(card.model(&self.model)),
            ..Tags::default()
        };
        let m = Tags {
            model: tm.model.clone(),
            ..Tags::default()
        };
        f(Counter::Requests, &tm, 1);
        if self.status >= 400 || self.status == 0 {
            f(Counter::UpstreamErrors, &tm, 1);
        }
        f(Counter::TokensIn, &tm, self.usage.prompt_tokens());
        f(Counter::TokensOut, &tm, self.usage.output_tokens);
        if self.usage.cache_read_tokens > 0 {
            f(Counter::TokensCached, &tm, self.usage.cache_read_tokens);
        }
        match self.cost_pico {
            Some(c) => f(Counter::CostMicroUsd, &tm, crate::pricing::pico_to_micro(c)),
            None => f(Counter::Unpriced, &m, 1),
        }
        if self.max_tokens.clamped_from.is_some() {
            f(Counter::MaxTokensClamped, &tm, 1);
        }
        if self.max_tokens.inserted {
            f(Counter::MaxTokensInserted, &tm, 1);
        }
        if self.usage_source != UsageSource::Provider && self.status < 400 && self.status != 0 {
            f(Counter::UsageCounted, &m, 1);
        }
        if !self.complete && self.status < 400 {
            f(Counter::Incomplete, &m, 1);
        }
        if let Some(c) = self.cache {
            let tc = Tags {
                cache: Some(c.header_value()),
                ..tm.clone()
            };
            f(Counter::CacheRequests, &tc, 1);
        }
        if self
            .budget
            .route
            .as_deref()
            .is_some_and(|r| r.starts_with("rule:"))
        {
            f(Counter::Routed, &tm, 1);
            if self.budget.routing_saved_pico > 0 {
                f(
                    Counter::RoutingSavedMicroUsd,
                    &tm,
                    crate::pricing::pico_to_micro(self.budget.routing_saved_pico),
                );
            }
        }
        if self.budget.trimmed_tokens > 0 {
            f(Counter::TrimmedTokens, &tm, self.budget.trimmed_tokens);
        }
        for (model, reason) in &self.budget.fallbacks {
            let t = Tags {
                tenant: tm.tenant.clone(),
                model: Some(card.model(model)),
                reason: Some(reason),
                ..Tags::default()
            };
            f(Counter::Fallbacks, &t, 1);
        }
        if let Some((model, reason)) = &self.budget.escalated {
            let t = Tags {
                tenant: tm.tenant.clone(),
                model: Some(card.model(model)),
                reason: Some(reason),
                ..Tags::default()
            };
            f(Counter::CascadeEscalations, &t, 1);
        }
        if self.saved_pico > 0 {
            f(
                Counter::SavedMicroUsd,
                &tm,
                crate::pricing::pico_to_micro(self.saved_pico),
            );
        }
    }
}

pub fn usage_source_str(s: UsageSource) -> &'static str {
    match s {
        UsageSource::Provider => "provider",
        UsageSource::Counted => "counted",
        UsageSource::Estimated => "estimated",
    }
}

#[derive(Debug)]
struct Flight {
    identity: Identity,
    req: ParsedRequest,
    decision: MaxTokensDecision,
    price: Option<Price>,
    request_id: String,
    cache: Option<CacheOutcome>,
    /// Keys for storing the answer, when the service asked for it.
    store: Option<PendingStore>,
    /// Keys of the lookup (kept while admit is in flight).
    keys: Option<PendingStore>,
    budget: BudgetInfo,
    /// The request body as sent upstream, kept while admit is in flight when a budget
    /// downgrade may have to rewrite it.
    body: Option<Vec<u8>>,
    /// What is needed to send the request again (the routing rule has fallbacks or a cascade).
    retry: Option<Box<Retry>>,
    /// Routing waits for the cache service's learned complexity score.
    deferred: Option<Box<DeferredRoute>>,
}

/// What routing looks at, kept until the admit call returns the learned complexity score.
#[derive(Debug)]
struct DeferredRoute {
    path: String,
    tenant: String,
    /// The requested model.
    model: String,
    prompt_tokens: u64,
    has_tools: bool,
    has_images: bool,
    /// The filter's own score, used when the service gives none.
    heuristic: f32,
    /// The final user turn (sent for scoring when the admit carries no cache query).
    final_text: String,
    json_requested: bool,
    effective_max_tokens: Option<u64>,
}

/// A routing rule's fallback chain and cascade, and what a further attempt needs.
#[derive(Debug)]
struct Retry {
    chain: crate::routing::FallbackChain,
    cascade: Option<crate::routing::Cascade>,
    /// Fallback targets tried so far.
    tried: usize,
    /// The cascade moved on to its strong model.
    escalated: bool,
    /// The request body as last sent upstream.
    body: Vec<u8>,
    /// Headers for a further attempt (pseudo-headers first).
    headers: Vec<(String, String)>,
    /// The request asked for JSON output (the cascade's `invalidJson` check applies).
    json_requested: bool,
    timeout_ms: u64,
    /// A cascade's cheap answer, kept while the strong model is asked: it is the answer if the
    /// strong call fails. With its model, usage and cost (metered either way).
    cheap: Option<CheapAnswer>,
    /// Prices of the chain's and the cascade's models.
    prices: Vec<(String, Option<Price>)>,
}

#[derive(Debug)]
struct CheapAnswer {
    reply: LocalReply,
    model: String,
    usage: Usage,
    cost_pico: Option<u64>,
    source: UsageSource,
}

/// What shaping returns: the (re-parsed) request, the max-tokens decision, the body to send when
/// changed, and what was done.
type Shaped = (
    ParsedRequest,
    MaxTokensDecision,
    Option<Vec<u8>>,
    BudgetInfo,
);

/// The routing decision's retry plan, from `shape` to the flight.
#[derive(Debug)]
struct RetrySeed {
    chain: crate::routing::FallbackChain,
    cascade: Option<crate::routing::Cascade>,
    json_requested: bool,
    timeout_ms: u64,
}

#[derive(Clone, Debug)]
struct PendingStore {
    exact_key: String,
    partition: String,
    query: String,
    shadow_entry_id: Option<String>,
    ttl_seconds: Option<u64>,
}

#[derive(Debug)]
struct Responding {
    flight: Flight,
    status: u16,
    parser: Option<UsageParser>,
    hold: bool,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Bypass,
    ReadingBody {
        api: Api,
        identity: Identity,
        route: String,
        no_cache: bool,
        no_store: bool,
    },
    /// Waiting for the cache service's admit answer.
    Admitting(Box<Flight>),
    Upstream(Box<Flight>),
    Responding(Box<Responding>),
    /// A fallback or cascade call-out is in flight; the first response is held back.
    Retrying(Box<Flight>),
    Done,
}

/// One exchange.
#[derive(Debug, Default)]
pub struct Exchange {
    state: State,
    outcome: Option<Outcome>,
    /// Why the request was passed through unmetered, for the pass-through counter.
    pub passthrough_reason: Option<&'static str>,
    /// Used when the request carries no `x-request-id`.
    fallback_id: String,
    request_id: String,
    /// Request headers to set before the request goes upstream (route header, prefix key).
    upstream_headers: Vec<(String, String)>,
    /// Request headers kept for a further attempt (only when routing has retries).
    retry_headers: Vec<(String, String)>,
    retry_seed: Option<RetrySeed>,
    deferred_route: Option<DeferredRoute>,
}

impl Exchange {
    /// Request headers the glue must set on the (paused) request after the body callback.
    pub fn take_upstream_headers(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.upstream_headers)
    }

    pub fn new() -> Self {
        Exchange::default()
    }

    /// An exchange whose request id, absent an `x-request-id` header, is `id`.
    pub fn with_id(id: String) -> Self {
        Exchange {
            fallback_id: id,
            ..Exchange::default()
        }
    }

    /// Whether the exchange waits for the admit call-out.
    pub fn is_admitting(&self) -> bool {
        matches!(self.state, State::Admitting(_))
    }

    /// Whether this exchange is LLM traffic being metered.
    pub fn is_metered(&self) -> bool {
        !matches!(self.state, State::Bypass)
    }

    /// Whether the request body is still being buffered.
    pub fn is_awaiting_request_body(&self) -> bool {
        matches!(self.state, State::ReadingBody { .. })
    }

    /// The outcome, once (after the response ended or the exchange was rejected/finished).
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    fn reject(&mut self, api: Api, tenant: &str, rej: Rejection) -> LocalReply {
        self.outcome = Some(Outcome {
            api,
            tenant: tenant.to_string(),
            model: String::new(),
            stream: false,
            status: rej.status(),
            usage: Usage::default(),
            usage_source: UsageSource::Counted,
            prompt_counted: 0,
            cost_pico: Some(0),
            complete: true,
            rejected: Some(rej.kind),
            max_tokens: MaxTokensDecision::default(),
            request_id: self.request_id.clone(),
            cache: None,
            saved_pico: 0,
            store: None,
            budget: BudgetInfo::default(),
        });
        self.state = State::Done;
        rej.into_reply()
    }

    /// Request headers arrived. `end_of_stream` is true when the request has no body.
    pub fn on_request_headers(
        &mut self,
        cfg: &Config,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        end_of_stream: bool,
    ) -> HeadersVerdict {
        let Some(api) = classify(method, path) else {
            self.passthrough_reason = Some("not_llm");
            return HeadersVerdict::PassThrough;
        };
        if let Some(enc) = header(headers, "content-encoding")
            && !enc.trim().eq_ignore_ascii_case("identity")
        {
            // Compressed request bodies are rare for LLM APIs; pass them on rather than guess.
            self.passthrough_reason = Some("content_encoding");
            return HeadersVerdict::PassThrough;
        }
        let identity = match identify(&cfg.tenant, headers) {
            Ok(id) => id,
            Err(msg) => {
                let t = cfg.tenant.default.clone();
                return HeadersVerdict::Reply(self.reject(
                    api,
                    &t,
                    Rejection::new(api, ErrorKind::InvalidRequest, msg),
                ));
            }
        };
        if end_of_stream {
            let rej = Rejection::new(api, ErrorKind::InvalidRequest, "request body is required");
            return HeadersVerdict::Reply(self.reject(api, &identity.tenant, rej));
        }
        if let Some(len) =
            header(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok())
            && len > cfg.max_request_bytes
        {
            return HeadersVerdict::Reply(self.reject(api, &identity.tenant, too_large(api, cfg)));
        }
        self.request_id = header(headers, "x-request-id")
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(|| self.fallback_id.clone(), str::to_string);
        if cfg.routing.as_ref().is_some_and(|r| r.has_retries()) {
            self.retry_headers = retry_headers(headers, path);
        }
        let cc = header(headers, "cache-control")
            .unwrap_or("")
            .to_ascii_lowercase();
        let directive = |d: &str| cc.split(',').any(|p| p.trim() == d);
        self.state = State::ReadingBody {
            api,
            identity,
            route: path.split('?').next().unwrap_or(path).to_string(),
            no_cache: directive("no-cache"),
            no_store: directive("no-store"),
        };
        // The body may be rewritten (max_tokens), so its length may change.
        let remove = vec!["content-length"];
        if cfg.stop_on_headers {
            HeadersVerdict::Pause { remove }
        } else {
            HeadersVerdict::Continue { remove }
        }
    }

    /// A request body callback. `body_size` is the size buffered so far; `read` returns the
    /// whole buffered body (called only at end of stream).
    pub fn on_request_body(
        &mut self,
        cfg: &Config,
        cache: &mut CountCache,
        body_size: usize,
        end_of_stream: bool,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> BodyVerdict {
        let State::ReadingBody { api, .. } = &self.state else {
            return BodyVerdict::Continue { body: None };
        };
        let api = *api;
        if body_size as u64 > cfg.max_request_bytes {
            let tenant = self.tenant().unwrap_or_default();
            return BodyVerdict::Reply(self.reject(api, &tenant, too_large(api, cfg)));
        }
        if !end_of_stream {
            return BodyVerdict::Buffer;
        }
        let State::ReadingBody {
            api,
            identity,
            route,
            no_cache,
            no_store,
        } = std::mem::take(&mut self.state)
        else {
            return BodyVerdict::Continue { body: None };
        };
        let body = read().unwrap_or_default();
        let req = match parse(api, &body, cfg, cache) {
            Ok(r) => r,
            Err(rej) => return BodyVerdict::Reply(self.reject(api, &identity.tenant, rej)),
        };
        let decision = match govern(&req, &identity.tenant, cfg) {
            Ok(d) => d,
            Err(rej) => return BodyVerdict::Reply(self.reject(api, &identity.tenant, rej)),
        };
        let new_body = if decision.edits.is_empty() {
            None
        } else {
            json::apply(&body, &decision.edits)
        };
        let shaped = self.shape(
            cfg,
            cache,
            api,
            &route,
            &identity.tenant,
            &body,
            new_body,
            req,
            decision,
        );
        let (req, decision, new_body, shaping) = match shaped {
            Ok(x) => x,
            Err(rej) => return BodyVerdict::Reply(self.reject(api, &identity.tenant, rej)),
        };
        let price = cfg.prices.lookup(&req.model).map(|(_, info)| info.price);
        let mut flight = Flight {
            identity,
            req,
            decision,
            price,
            request_id: self.request_id.clone(),
            cache: None,
            store: None,
            keys: None,
            budget: shaping,
            body: None,
            retry: None,
            deferred: self.deferred_route.take().map(Box::new),
        };
        if let Some(seed) = self.retry_seed.take() {
            let headers = std::mem::take(&mut self.retry_headers);
            let sent = new_body.clone().unwrap_or_else(|| body.clone());
            flight.retry = Some(Box::new(make_retry(cfg, seed, sent, headers)));
        }
        let Some(cache_cfg) = &cfg.cache else {
            self.state = State::Upstream(Box::new(flight));
            return BodyVerdict::Continue { body: new_body };
        };
        // Cache keys come from the request as the client sent it (max_tokens is not part of them).
        let query = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| cachekey::keys(api, &flight.identity.tenant, &flight.req.model, &v))
            .map(|k| {
                let q = if k.query.chars().count() > cache_cfg.max_query_chars {
                    String::new()
                } else {
                    k.query
                };
                CacheQuery {
                    exact_key: k.exact_key,
                    partition: k.partition,
                    query: q,
                    temperature: k.temperature,
                    has_tools: k.has_tools,
                    lookup: !no_cache,
                    store: !no_store,
                    prompt_tokens: flight.req.prompt_tokens,
                    max_tokens: flight.decision.effective,
                }
            });
        flight.keys = query.as_ref().map(|q| PendingStore {
            exact_key: q.exact_key.clone(),
            partition: q.partition.clone(),
            query: q.query.clone(),
            shadow_entry_id: None,
            ttl_seconds: None,
        });
        let admit = AdmitRequest {
            request_id: self.request_id.clone(),
            tenant: flight.identity.tenant.clone(),
            api: Some(api),
            model: flight.req.model.clone(),
            stream: flight.req.stream,
            route,
            cache: query,
            identity: None,
            budget: None,
            prefix_key: flight.budget.prefix_key.clone(),
            ..AdmitRequest::default()
        };
        let mut admit = admit;
        if let Some(d) = &flight.deferred {
            admit.complexity = true;
            if admit.cache.as_ref().is_none_or(|c| c.query.is_empty()) {
                admit.complexity_query = Some(
                    d.final_text
                        .chars()
                        .take(cache_cfg.max_query_chars)
                        .collect(),
                );
            }
            flight.body = Some(new_body.clone().unwrap_or_else(|| body.clone()));
        }
        let wire_id = wire_identity(cfg, &flight.identity);
        flight.budget.identity = Some(wire_id.clone());
        admit.identity = Some(wire_id);
        if let Some(b) = &cfg.budgets {
            let max_output_tokens = flight
                .decision
                .effective
                .or_else(|| {
                    cfg.prices
                        .lookup(&flight.req.model)
                        .and_then(|(_, info)| info.max_output_tokens)
                })
                .unwrap_or(b.default_max_output_tokens);
            let input_tokens = flight.req.prompt_tokens;
            admit.budget = Some(BudgetQuery {
                input_tokens,
                max_output_tokens,
                max_cost_pico: flight.price.map(|p| {
                    p.cost(&Usage {
                        input_tokens,
                        output_tokens: max_output_tokens,
                        ..Usage::default()
                    })
                }),
            });
            flight.body = Some(new_body.clone().unwrap_or_else(|| body.clone()));
        }
        if cfg.prefix.is_some() && api.is_anthropic() && flight.budget.prefix_key.is_some() {
            flight.body = Some(new_body.clone().unwrap_or_else(|| body.clone()));
        }
        let call = match serde_json::to_vec(&admit) {
            Ok(c) => c,
            Err(_) => {
                flight.cache = Some(CacheOutcome::Error);
                if cfg.budgets.as_ref().is_some_and(|b| !b.fail_open) {
                    let rej = budget_unavailable(api);
                    let tenant = flight.identity.tenant.clone();
                    return BodyVerdict::Reply(self.reject(api, &tenant, rej));
                }
                self.state = State::Upstream(Box::new(flight));
                return BodyVerdict::Continue { body: new_body };
            }
        };
        self.state = State::Admitting(Box::new(flight));
        BodyVerdict::Admit {
            body: new_body,
            call,
        }
    }

    /// Context trimming, model routing and prefix-cache hints, in that order, on the body as
    /// governance left it. Returns the (re-parsed) request, the max-tokens decision, the body to
    /// send (when changed) and what was done; request headers to set go to `upstream_headers`.
    #[allow(clippy::too_many_arguments)]
    fn shape(
        &mut self,
        cfg: &Config,
        cache: &mut CountCache,
        api: Api,
        route: &str,
        tenant: &str,
        original: &[u8],
        new_body: Option<Vec<u8>>,
        req: ParsedRequest,
        decision: MaxTokensDecision,
    ) -> Result<Shaped, Rejection> {
        let mut info = BudgetInfo::default();
        if cfg.routing.is_none() && cfg.trimming.is_none() && cfg.prefix.is_none() {
            return Ok((req, decision, new_body, info));
        }
        let mut current = new_body.clone().unwrap_or_else(|| original.to_vec());
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&current) else {
            return Ok((req, decision, new_body, info));
        };
        let mut changed = false;
        // 1. Trimming.
        if let Some(limit) = cfg.trimming.as_ref().and_then(|t| t.limit_for(route))
            && req.prompt_tokens > limit
            && let Some(t) = crate::trim::trim(api, &value, req.tokenizer, limit)
            && !t.edits.is_empty()
            && let Some(b) = json::apply(&current, &t.edits)
        {
            current = b;
            info.trimmed_tokens = t.tokens_cut;
            changed = true;
        }
        // 2. Routing.
        let mut routed = None;
        if cfg.routing.as_ref().is_some_and(|p| p.defers_to_service()) && cfg.cache.is_some() {
            let final_text = crate::complexity::final_user_text(api, &value);
            self.deferred_route = Some(DeferredRoute {
                path: route.to_string(),
                tenant: tenant.to_string(),
                model: req.model.clone(),
                prompt_tokens: req.prompt_tokens,
                has_tools: req.has_tools,
                has_images: req.has_images,
                heuristic: crate::complexity::score(&final_text, req.prompt_tokens),
                final_text,
                json_requested: json_requested(&value),
                effective_max_tokens: decision.effective,
            });
        } else if let Some(policy) = &cfg.routing {
            let complexity = if policy.needs_complexity() {
                crate::complexity::score(
                    &crate::complexity::final_user_text(api, &value),
                    req.prompt_tokens,
                )
            } else {
                0.0
            };
            let d = crate::routing::decide(
                policy,
                &crate::routing::RouteInput {
                    path: route,
                    tenant,
                    model: &req.model,
                    prompt_tokens: req.prompt_tokens,
                    has_tools: req.has_tools,
                    has_images: req.has_images,
                    complexity,
                },
            );
            if let Some(h) = &d.route_header {
                self.upstream_headers.push(h.clone());
            }
            if !d.fallbacks.targets.is_empty() || d.cascade.is_some() {
                self.retry_seed = Some(RetrySeed {
                    chain: d.fallbacks.clone(),
                    cascade: d.cascade.clone(),
                    json_requested: json_requested(&value),
                    timeout_ms: policy.attempt_timeout_ms,
                });
            }
            if d.model_changed
                && let Some(edit) = crate::routing::model_edit(&d)
                && let Some(b) = json::apply(&current, &[edit])
            {
                current = b;
                changed = true;
                record_route(
                    &mut info,
                    cfg,
                    policy,
                    &req.model,
                    &d,
                    req.prompt_tokens,
                    decision.effective,
                );
                routed = Some(d.model);
            }
        }
        // Re-read what will be sent: the prompt count and encoding may have changed.
        let (mut req, mut decision) = (req, decision);
        if changed {
            req = parse(api, &current, cfg, cache)?;
            let again = govern(&req, tenant, cfg)?;
            if !again.edits.is_empty()
                && let Some(b) = json::apply(&current, &again.edits)
            {
                current = b;
            }
            decision = MaxTokensDecision {
                clamped_from: decision.clamped_from.or(again.clamped_from),
                inserted: decision.inserted || again.inserted,
                ..again
            };
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&current) {
                value = v;
            }
        }
        debug_assert!(routed.as_deref().is_none_or(|m| m == req.model));
        // 3. Prefix-cache hints.
        if let Some(p) = &cfg.prefix {
            if let Some(k) = crate::prefix::prefix_key(
                api,
                &value,
                &req.model,
                req.tokenizer.encoding(),
                p.block_tokens,
            ) {
                if p.header {
                    self.upstream_headers
                        .push(("x-tollgate-prefix-key".to_string(), k.key.clone()));
                }
                info.prefix_key = Some(k.key);
            }
            if p.openai_prompt_cache_key
                && let Some(edit) = crate::prefix::prompt_cache_key_edit(api, &value, &req.model)
                && let Some(b) = json::apply(&current, &[edit])
            {
                current = b;
                changed = true;
            }
        }
        let out = if changed || new_body.is_some() {
            Some(current)
        } else {
            None
        };
        Ok((req, decision, out, info))
    }

    /// The admit call-out answered: `status` is its HTTP status, or `None` when it failed or
    /// timed out. Any failure or garbage sends the request upstream (`x-tollgate-cache: error`).
    pub fn on_admit_response(
        &mut self,
        cfg: &Config,
        status: Option<u16>,
        body: &[u8],
        now_secs: u64,
    ) -> AdmitVerdict {
        let State::Admitting(mut flight) = std::mem::take(&mut self.state) else {
            return AdmitVerdict::Continue;
        };
        let response = match status {
            Some(200) => serde_json::from_slice::<AdmitResponse>(body).ok(),
            _ => None,
        };
        let Some(response) = response else {
            flight.cache = Some(CacheOutcome::Error);
            if cfg.budgets.as_ref().is_some_and(|b| !b.fail_open) {
                let api = flight.req.api;
                let tenant = flight.identity.tenant.clone();
                return AdmitVerdict::Reply(self.reject(api, &tenant, budget_unavailable(api)));
            }
            // No learned score: route on the filter's own.
            let rewrite = self.route_after_admit(cfg, &mut flight, None, None);
            flight.body = None;
            self.state = State::Upstream(flight);
            return match rewrite {
                Some(body) => AdmitVerdict::Rewrite { body },
                None => AdmitVerdict::Continue,
            };
        };
        let decision = response.cache;
        let mut rewrite = None;
        let mut downgraded = false;
        if let Some(b) = response.budget.filter(|_| cfg.budgets.is_some()) {
            flight.budget.reservation_id = b.reservation_id;
            flight.budget.remaining_pico = b.remaining_pico;
            match b.verdict {
                BudgetVerdict::Reject => {
                    let api = flight.req.api;
                    let tenant = flight.identity.tenant.clone();
                    let r = b.rejection.unwrap_or_default();
                    let kind = if r.code == "rate_limited" {
                        ErrorKind::RateLimited
                    } else {
                        ErrorKind::BudgetExceeded
                    };
                    let message = if r.message.is_empty() {
                        "budget exceeded".to_string()
                    } else {
                        r.message
                    };
                    let mut rej = Rejection::new(api, kind, message);
                    rej.retry_after = r.retry_after_seconds;
                    let mut reply = self.reject(api, &tenant, rej);
                    if let Some(rem) = b.remaining_pico {
                        reply
                            .headers
                            .push(("x-tollgate-budget-remaining-usd".into(), format_usd(rem)));
                    }
                    return AdmitVerdict::Reply(reply);
                }
                BudgetVerdict::Downgrade => {
                    if let Some(to) = b.downgrade_model.filter(|m| *m != flight.req.model) {
                        let raw = serde_json::Value::String(to.clone()).to_string();
                        let edit = [json::Edit::Set {
                            key: "model".into(),
                            raw,
                        }];
                        if let Some(new) =
                            flight.body.as_deref().and_then(|b| json::apply(b, &edit))
                        {
                            if flight.budget.requested_model.is_none() {
                                flight.budget.requested_model = Some(flight.req.model.clone());
                            }
                            flight.budget.route = Some("downgrade:budget".into());
                            flight.price = cfg.prices.lookup(&to).map(|(_, info)| info.price);
                            flight.req.model = to;
                            rewrite = Some(new);
                            downgraded = true;
                        }
                    }
                }
                BudgetVerdict::Allow => {}
            }
        }
        // Deferred routing on the learned score (a budget downgrade has already chosen the model).
        let mut routed_now = false;
        if downgraded {
            flight.deferred = None;
        } else if let Some(b) =
            self.route_after_admit(cfg, &mut flight, response.complexity, rewrite.as_deref())
        {
            rewrite = Some(b);
            routed_now = true;
        }
        if response.prefix_hot
            && flight.req.api.is_anthropic()
            && cfg.prefix.is_some()
            && let Some(current) = rewrite.as_deref().or(flight.body.as_deref())
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(current)
        {
            let edits = crate::prefix::anthropic_breakpoints(
                &v,
                true,
                flight.req.tokenizer.encoding(),
                ANTHROPIC_MIN_CACHE_TOKENS,
            );
            if !edits.is_empty()
                && let Some(b) = json::apply(current, &edits)
            {
                flight.budget.breakpoints = edits.len();
                rewrite = Some(b);
            }
        }
        flight.body = None;
        let servable = |e: &CachedCompletion| {
            !e.text.is_empty()
                && flight
                    .decision
                    .effective
                    .is_none_or(|max| e.usage.output_tokens <= max)
        };
        match (decision.outcome, decision.entry) {
            (outcome, Some(entry)) if outcome.is_hit() && servable(&entry) => {
                let reply = self.hit(cfg, *flight, outcome, &entry, now_secs);
                AdmitVerdict::Reply(reply)
            }
            (outcome, _) => {
                // A hit we cannot serve counts as a miss.
                flight.cache = Some(if outcome.is_hit() {
                    CacheOutcome::Miss
                } else {
                    outcome
                });
                // A downgraded request's answer must not be stored under the keys of the model
                // the client asked for.
                if decision.store && !downgraded && !routed_now {
                    flight.store = flight.keys.take().map(|mut k| {
                        k.shadow_entry_id = decision.shadow_entry_id;
                        k.ttl_seconds = decision.ttl_seconds;
                        k
                    });
                }
                if let (Some(r), Some(b)) = (flight.retry.as_mut(), rewrite.as_ref()) {
                    r.body = b.clone();
                }
                self.state = State::Upstream(flight);
                match rewrite {
                    Some(body) => AdmitVerdict::Rewrite { body },
                    None => AdmitVerdict::Continue,
                }
            }
        }
    }

    /// Routing deferred to the admit answer: decides on the learned score (`None`: the filter's
    /// heuristic) and returns the rewritten body when the model changed. `current`: the body as
    /// it stands (after a rewrite on this admit), else the kept one.
    fn route_after_admit(
        &mut self,
        cfg: &Config,
        flight: &mut Flight,
        learned: Option<f32>,
        current: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let d = flight.deferred.take()?;
        let policy = cfg.routing.as_ref()?;
        let complexity = learned.unwrap_or(d.heuristic);
        let decision = crate::routing::decide(
            policy,
            &crate::routing::RouteInput {
                path: &d.path,
                tenant: &d.tenant,
                model: &d.model,
                prompt_tokens: d.prompt_tokens,
                has_tools: d.has_tools,
                has_images: d.has_images,
                complexity,
            },
        );
        if let Some(h) = &decision.route_header {
            self.upstream_headers.push(h.clone());
        }
        let base = current.or(flight.body.as_deref())?.to_vec();
        if !decision.fallbacks.targets.is_empty() || decision.cascade.is_some() {
            let seed = RetrySeed {
                chain: decision.fallbacks.clone(),
                cascade: decision.cascade.clone(),
                json_requested: d.json_requested,
                timeout_ms: policy.attempt_timeout_ms,
            };
            let headers = std::mem::take(&mut self.retry_headers);
            flight.retry = Some(Box::new(make_retry(cfg, seed, base.clone(), headers)));
        }
        if !decision.model_changed {
            return None;
        }
        let edit = crate::routing::model_edit(&decision)?;
        let new = json::apply(&base, &[edit])?;
        record_route(
            &mut flight.budget,
            cfg,
            policy,
            &d.model,
            &decision,
            d.prompt_tokens,
            d.effective_max_tokens,
        );
        flight.price = cfg
            .prices
            .lookup(&decision.model)
            .map(|(_, info)| info.price);
        flight.req.model = decision.model;
        if let Some(r) = flight.retry.as_mut() {
            r.body = new.clone();
        }
        Some(new)
    }

    fn hit(
        &mut self,
        _cfg: &Config,
        flight: Flight,
        outcome: CacheOutcome,
        entry: &CachedCompletion,
        now: u64,
    ) -> LocalReply {
        let req = &flight.req;
        let (body, content_type) = render(
            req.api,
            req.stream,
            req.include_usage,
            &req.model,
            entry,
            now,
        );
        // What this request would have cost: the cached answer's usage at this model's price.
        let saved_pico = flight
            .price
            .map(|p| p.cost(&entry.usage))
            .or(entry.cost_pico)
            .unwrap_or(0);
        let headers = vec![
            ("content-type".to_string(), content_type.to_string()),
            (
                "x-tollgate-cache".to_string(),
                outcome.header_value().to_string(),
            ),
            ("x-tollgate-model".to_string(), req.model.clone()),
            (
                "x-tollgate-prompt-tokens".to_string(),
                entry.usage.prompt_tokens().to_string(),
            ),
            (
                "x-tollgate-completion-tokens".to_string(),
                entry.usage.output_tokens.to_string(),
            ),
            ("x-tollgate-cost-usd".to_string(), "0".to_string()),
            ("x-tollgate-saved-usd".to_string(), format_usd(saved_pico)),
            ("x-tollgate-usage-source".to_string(), "cache".to_string()),
        ];
        let mut headers = headers;
        if let Some(rem) = flight.budget.remaining_pico {
            headers.push((
                "x-tollgate-budget-remaining-usd".to_string(),
                format_usd(rem),
            ));
        }
        self.outcome = Some(Outcome {
            api: req.api,
            tenant: flight.identity.tenant.clone(),
            model: req.model.clone(),
            stream: req.stream,
            status: 200,
            usage: Usage::default(),
            usage_source: UsageSource::Provider,
            prompt_counted: req.prompt_tokens,
            cost_pico: Some(0),
            complete: true,
            rejected: None,
            max_tokens: flight.decision,
            request_id: flight.request_id,
            cache: Some(outcome),
            saved_pico,
            store: None,
            budget: flight.budget.clone(),
        });
        self.state = State::Done;
        LocalReply {
            status: 200,
            headers,
            body: body.into_bytes(),
        }
    }

    fn tenant(&self) -> Option<String> {
        match &self.state {
            State::ReadingBody { identity, .. } => Some(identity.tenant.clone()),
            State::Upstream(f) | State::Admitting(f) => Some(f.identity.tenant.clone()),
            State::Responding(r) => Some(r.flight.identity.tenant.clone()),
            _ => None,
        }
    }

    /// Response headers arrived.
    pub fn on_response_headers(
        &mut self,
        cfg: &Config,
        status: u16,
        headers: &[(String, String)],
        end_of_stream: bool,
    ) -> ResponseHeadersVerdict {
        let State::Upstream(flight) = std::mem::take(&mut self.state) else {
            // Not metered, or a local reply passing back through the filter chain.
            if matches!(self.state, State::Bypass) {
                return ResponseHeadersVerdict::default();
            }
            self.state = State::Done;
            return ResponseHeadersVerdict::default();
        };
        let mut flight = *flight;
        if let Some(failure) = failure_of(status)
            && let Some(retry) = flight.retry.as_ref()
            && let Some(target) =
                crate::routing::next_fallback(&retry.chain, retry.tried, failure).cloned()
            && let Some(call) = fall_back(&mut flight, &target, failure)
        {
            self.state = State::Retrying(Box::new(flight));
            return ResponseHeadersVerdict {
                hold: true,
                add: Vec::new(),
                call: Some(call),
            };
        }
        let framing = header(headers, "content-type").and_then(Framing::from_content_type);
        let length = header(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let ok = (200..300).contains(&status);
        // Cheap-first: a non-streamed answer is held and checked before the client sees it.
        let cascade = ok
            && !end_of_stream
            && !flight.req.stream
            && framing == Some(Framing::Json)
            && length.is_none_or(|l| l <= cfg.max_response_buffer_bytes)
            && flight
                .retry
                .as_ref()
                .is_some_and(|r| r.cascade.is_some() && !r.escalated);
        let parser = match framing {
            Some(f) if ok => {
                let mut p = UsageParser::new(
                    flight.req.api,
                    f,
                    flight.req.tokenizer.encoding(),
                    cfg.max_response_buffer_bytes as usize,
                );
                p.capture_text(flight.store.is_some() || cascade);
                Some(p)
            }
            _ => None,
        };
        let hold = cascade
            || (cfg.stop_on_headers
                && !end_of_stream
                && framing == Some(Framing::Json)
                && ok
                && length.is_none_or(|l| l <= cfg.max_response_buffer_bytes));
        let mut add = vec![("x-tollgate-model".to_string(), flight.req.model.clone())];
        if let Some(c) = flight.cache {
            add.push(("x-tollgate-cache".to_string(), c.header_value().to_string()));
        }
        if !hold {
            // What is known now; the rest goes to stats and the access log.
            add.push((
                "x-tollgate-prompt-tokens".to_string(),
                flight.req.prompt_tokens.to_string(),
            ));
            add.push((
                "x-tollgate-usage-source".to_string(),
                if flight.req.prompt_estimated {
                    "estimated"
                } else {
                    "counted"
                }
                .to_string(),
            ));
        }
        if let Some(from) = flight.decision.clamped_from {
            add.push((
                "x-tollgate-max-tokens-clamped".to_string(),
                from.to_string(),
            ));
        }
        if let Some(rem) = flight.budget.remaining_pico {
            add.push((
                "x-tollgate-budget-remaining-usd".to_string(),
                format_usd(rem),
            ));
        }
        if flight.budget.trimmed_tokens > 0 {
            add.push((
                "x-tollgate-trimmed-tokens".to_string(),
                flight.budget.trimmed_tokens.to_string(),
            ));
        }
        if let Some(rule) = flight
            .budget
            .route
            .as_deref()
            .and_then(|r| r.strip_prefix("rule:"))
        {
            add.push(("x-tollgate-route-rule".to_string(), rule.to_string()));
        }
        let responding = Responding {
            flight,
            status,
            parser,
            hold,
        };
        if end_of_stream {
            self.outcome = Some(settle(responding, None));
            self.state = State::Done;
        } else {
            self.state = State::Responding(Box::new(responding));
        }
        ResponseHeadersVerdict {
            hold,
            add,
            call: None,
        }
    }

    /// The answer of an [`UpstreamCall`]: `status` `None` when the call failed or timed out.
    /// Either the next attempt, or the reply for the client (metered here: the first response
    /// never reaches the client).
    pub fn on_call_response(
        &mut self,
        cfg: &Config,
        status: Option<u16>,
        headers: &[(String, String)],
        body: &[u8],
    ) -> CallVerdict {
        let State::Retrying(flight) = std::mem::take(&mut self.state) else {
            return CallVerdict::Ignore;
        };
        let mut flight = *flight;
        let failure = match status {
            None => Some(UpstreamFailure::Timeout),
            Some(s) => failure_of(s),
        };
        if let Some(failure) = failure {
            // A cascade whose strong call failed answers with the cheap answer it has.
            if let Some(cheap) = flight.retry.as_mut().and_then(|r| r.cheap.take()) {
                flight
                    .budget
                    .fallbacks
                    .push((flight.req.model.clone(), failure_label(failure)));
                return CallVerdict::Reply(self.reply_cheap(flight, cheap));
            }
            if let Some(retry) = flight.retry.as_ref()
                && let Some(target) =
                    crate::routing::next_fallback(&retry.chain, retry.tried, failure).cloned()
                && let Some(call) = fall_back(&mut flight, &target, failure)
            {
                self.state = State::Retrying(Box::new(flight));
                return CallVerdict::Call(call);
            }
        }
        let Some(status) = status else {
            // Out of fallbacks and the last attempt timed out.
            flight
                .budget
                .fallbacks
                .push((flight.req.model.clone(), "timeout"));
            let api = flight.req.api;
            let reply = upstream_timeout(api);
            let responding = Responding {
                flight,
                status: reply.status,
                parser: None,
                hold: false,
            };
            let mut reply = reply;
            let outcome = settle(responding, None);
            reply.headers.extend(attempt_headers(&outcome));
            self.outcome = Some(outcome);
            self.state = State::Done;
            return CallVerdict::Reply(reply);
        };
        let framing = header(headers, "content-type").and_then(Framing::from_content_type);
        let ok = (200..300).contains(&status);
        let parser = match framing {
            Some(f) if ok => {
                let mut p = UsageParser::new(
                    flight.req.api,
                    f,
                    flight.req.tokenizer.encoding(),
                    cfg.max_response_buffer_bytes as usize,
                );
                p.feed(body);
                Some(p)
            }
            _ => None,
        };
        let cheap = flight.retry.as_mut().and_then(|r| r.cheap.take());
        let responding = Responding {
            flight,
            status,
            parser,
            hold: false,
        };
        let mut outcome = settle(responding, None);
        if let Some(c) = cheap {
            // Both answers are paid for.
            outcome.usage = add_usage(outcome.usage, c.usage);
            outcome.cost_pico = match (outcome.cost_pico, c.cost_pico) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            };
        }
        let mut out: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| {
                !k.starts_with(':')
                    && !k.starts_with("x-tollgate-")
                    && !matches!(
                        k.as_str(),
                        "content-length" | "transfer-encoding" | "connection" | "keep-alive"
                    )
            })
            .cloned()
            .collect();
        out.push(("x-tollgate-model".to_string(), outcome.model.clone()));
        if let Some(c) = outcome.cache {
            out.push(("x-tollgate-cache".to_string(), c.header_value().to_string()));
        }
        if let Some(rem) = outcome.budget.remaining_pico {
            out.push((
                "x-tollgate-budget-remaining-usd".to_string(),
                format_usd(rem),
            ));
        }
        out.extend(usage_headers(&outcome));
        out.extend(attempt_headers(&outcome));
        self.outcome = Some(outcome);
        self.state = State::Done;
        CallVerdict::Reply(LocalReply {
            status,
            headers: out,
            body: body.to_vec(),
        })
    }

    /// The strong call of a cascade failed: the client gets the cheap answer after all.
    fn reply_cheap(&mut self, flight: Flight, cheap: CheapAnswer) -> LocalReply {
        let CheapAnswer {
            mut reply,
            model,
            usage,
            cost_pico,
            source,
        } = cheap;
        let mut outcome = settle(
            Responding {
                flight,
                status: reply.status,
                parser: None,
                hold: false,
            },
            None,
        );
        outcome.model = model;
        outcome.usage = usage;
        outcome.cost_pico = cost_pico;
        outcome.usage_source = source;
        outcome.complete = true;
        reply
            .headers
            .push(("x-tollgate-model".to_string(), outcome.model.clone()));
        if let Some(rem) = outcome.budget.remaining_pico {
            reply.headers.push((
                "x-tollgate-budget-remaining-usd".to_string(),
                format_usd(rem),
            ));
        }
        reply.headers.extend(usage_headers(&outcome));
        reply.headers.extend(attempt_headers(&outcome));
        self.outcome = Some(outcome);
        self.state = State::Done;
        reply
    }

    /// A response body callback: `chunk` is the new data (or, for a held response at end of
    /// stream, the whole buffered body).
    pub fn on_response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> ResponseBodyVerdict {
        if matches!(self.state, State::Retrying(_)) {
            // The failed attempt's body: never sent on.
            return ResponseBodyVerdict::Hold;
        }
        let State::Responding(r) = &mut self.state else {
            return ResponseBodyVerdict::Continue {
                set_headers: Vec::new(),
            };
        };
        if r.hold && !end_of_stream {
            return ResponseBodyVerdict::Hold;
        }
        if let Some(p) = r.parser.as_mut() {
            p.feed(chunk);
        }
        if !end_of_stream {
            return ResponseBodyVerdict::Continue {
                set_headers: Vec::new(),
            };
        }
        let State::Responding(r) = std::mem::replace(&mut self.state, State::Done) else {
            return ResponseBodyVerdict::Continue {
                set_headers: Vec::new(),
            };
        };
        let hold = r.hold;
        let (r, meter) = match self.cascade_check(*r, chunk) {
            Ok(x) => x,
            Err(call) => return ResponseBodyVerdict::Call(call),
        };
        let outcome = settle(r, meter);
        let set_headers = if hold {
            usage_headers(&outcome)
        } else {
            Vec::new()
        };
        self.outcome = Some(outcome);
        ResponseBodyVerdict::Continue { set_headers }
    }

    /// Cheap-first: checks a held, complete answer of the cascade's cheap model. `Ok`: it
    /// stands (settle it). `Err`: it failed a check; the exchange now waits for this call to
    /// the strong model (the cheap answer is kept and metered).
    fn cascade_check(
        &mut self,
        r: Responding,
        body: &[u8],
    ) -> Result<(Responding, Option<ResponseMeter>), UpstreamCall> {
        let pending = r.hold
            && (200..300).contains(&r.status)
            && r.flight
                .retry
                .as_ref()
                .is_some_and(|x| x.cascade.is_some() && !x.escalated);
        if !pending {
            return Ok((r, None));
        }
        let Responding {
            mut flight,
            status,
            parser,
            hold,
        } = r;
        let meter = parser.map(UsageParser::finish);
        let verdict = match (&meter, flight.retry.as_ref()) {
            (Some(m), Some(retry)) if !m.unparsed => match &retry.cascade {
                Some(c) => crate::routing::check_answer_with(
                    &c.checks,
                    m.text.as_deref().unwrap_or(""),
                    m.finish_reason.as_deref(),
                    retry.json_requested,
                )
                .err()
                .map(|f| (f, c.strong.clone())),
                None => None,
            },
            _ => None,
        };
        let Some((failed, strong)) = verdict else {
            return Ok((
                Responding {
                    flight,
                    status,
                    parser: None,
                    hold,
                },
                meter,
            ));
        };
        let (usage, source, _) = metered(&flight.req, meter.as_ref(), status);
        let cheap = CheapAnswer {
            reply: LocalReply {
                status,
                headers: vec![("content-type".to_string(), "application/json".to_string())],
                body: body.to_vec(),
            },
            model: flight.req.model.clone(),
            usage,
            cost_pico: flight.price.map(|p| p.cost(&usage)),
            source,
        };
        flight.budget.escalated = Some((flight.req.model.clone(), failed.as_str()));
        let call = match flight.retry.as_mut() {
            Some(retry) => {
                retry.escalated = true;
                retry.cheap = Some(cheap);
                retarget(&mut flight, &strong)
            }
            None => None,
        };
        match call {
            Some(call) => {
                self.state = State::Retrying(Box::new(flight));
                Err(call)
            }
            None => Ok((
                Responding {
                    flight,
                    status,
                    parser: None,
                    hold,
                },
                meter,
            )),
        }
    }

    /// Whether the current response is being held (the glue must read the whole buffered body
    /// at end of stream rather than the last chunk).
    pub fn is_holding(&self) -> bool {
        matches!(&self.state, State::Responding(r) if r.hold)
            || matches!(self.state, State::Retrying(_))
    }

    /// Whether a fallback or cascade call-out is in flight.
    pub fn is_retrying(&self) -> bool {
        matches!(self.state, State::Retrying(_))
    }

    /// The stream ended (`on_log`/`on_done`): finish whatever is in flight, e.g. a client that
    /// disconnected mid-stream or an upstream reset. No-op if already finished.
    pub fn on_end(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Upstream(f) | State::Admitting(f) | State::Retrying(f) => {
                let r = Responding {
                    flight: *f,
                    status: 0,
                    parser: None,
                    hold: false,
                };
                self.outcome = Some(settle(r, None));
            }
            State::Responding(r) => self.outcome = Some(settle(*r, None)),
            State::Bypass => self.state = State::Bypass,
            _ => {}
        }
    }
}

fn too_large(api: Api, cfg: &Config) -> Rejection {
    Rejection::new(
        api,
        ErrorKind::RequestTooLarge,
        format!(
            "request body exceeds the {} byte limit",
            cfg.max_request_bytes
        ),
    )
}

/// Usage of a response: the provider's, else counted from the streamed text; nothing for
/// errors and unmeterable bodies. With its source and whether the response completed.
fn metered(
    req: &ParsedRequest,
    meter: Option<&ResponseMeter>,
    status: u16,
) -> (Usage, UsageSource, bool) {
    let ok = (200..300).contains(&status);
    match meter {
        Some(m) => match m.usage {
            Some(u) => (u, UsageSource::Provider, m.complete),
            None => {
                let counted = Usage {
                    input_tokens: req.prompt_tokens,
                    output_tokens: req.tokenizer.scale(m.counted_output_tokens),
                    ..Usage::default()
                };
                let src = if req.prompt_estimated || !req.tokenizer.is_exact() {
                    UsageSource::Estimated
                } else {
                    UsageSource::Counted
                };
                (counted, src, m.complete)
            }
        },
        // Errors (not billed by providers), unmeterable bodies, or no response at all.
        None => (Usage::default(), UsageSource::Counted, ok),
    }
}

/// Final usage and cost of a response. `meter`: the finished parser's result when the caller
/// already finished it (else the parser is finished here).
fn settle(r: Responding, meter: Option<ResponseMeter>) -> Outcome {
    let Responding {
        flight,
        status,
        parser,
        ..
    } = r;
    let req = &flight.req;
    let meter = meter.or_else(|| parser.map(UsageParser::finish));
    let ok = (200..300).contains(&status);
    let (usage, source, complete) = metered(req, meter.as_ref(), status);
    let cost_pico = flight.price.map(|p| p.cost(&usage));
    // Only complete, successful, plain-text answers that stopped on their own are stored.
    let store = match (&flight.store, &meter) {
        (Some(keys), Some(m)) if ok && m.complete && m.finish_reason.as_deref() == Some("stop") => {
            m.text
                .as_ref()
                .filter(|t| !t.is_empty())
                .map(|text| StoreRequest {
                    exact_key: keys.exact_key.clone(),
                    partition: keys.partition.clone(),
                    query: keys.query.clone(),
                    completion: CachedCompletion {
                        entry_id: String::new(),
                        model: m.model.clone().unwrap_or_else(|| req.model.clone()),
                        text: text.clone(),
                        finish_reason: "stop".to_string(),
                        usage,
                        cost_pico,
                        created_at: 0,
                    },
                    shadow_entry_id: keys.shadow_entry_id.clone(),
                    ttl_seconds: keys.ttl_seconds,
                })
        }
        _ => None,
    };
    Outcome {
        request_id: flight.request_id.clone(),
        cache: flight.cache,
        saved_pico: 0,
        store,
        budget: flight.budget.clone(),
        api: req.api,
        tenant: flight.identity.tenant.clone(),
        model: req.model.clone(),
        stream: req.stream,
        status,
        usage,
        usage_source: source,
        prompt_counted: req.prompt_tokens,
        cost_pico,
        complete,
        rejected: None,
        max_tokens: flight.decision,
    }
}

/// Smallest prompt part worth an Anthropic cache breakpoint (Anthropic caches prefixes of at
/// least 1024 tokens on most models).
const ANTHROPIC_MIN_CACHE_TOKENS: u64 = 1024;

/// The scopes of a request as the service sees them.
fn wire_identity(cfg: &Config, id: &Identity) -> WireIdentity {
    WireIdentity {
        org: cfg.tenant.org.clone(),
        team: id.tenant.clone(),
        user: id.user.clone(),
        key: id.key_hash.as_ref().map(|h| format!("key:{h}")),
    }
}

/// Budgets fail closed and the service could not be asked.
fn budget_unavailable(api: Api) -> Rejection {
    Rejection::new(
        api,
        ErrorKind::BudgetUnavailable,
        "the budget service is unavailable and budgets fail closed: retry shortly",
    )
}

/// Records a routing rule's model change: the requested model, the rule, and the estimated
/// saving (prompt plus the expected output, bounded by the request's `max_tokens`).
fn record_route(
    info: &mut BudgetInfo,
    cfg: &Config,
    policy: &crate::routing::RoutingPolicy,
    requested: &str,
    decision: &crate::routing::RouteDecision,
    prompt_tokens: u64,
    max_tokens: Option<u64>,
) {
    let expected = max_tokens
        .unwrap_or(policy.expected_output_tokens)
        .min(policy.expected_output_tokens);
    info.routing_saved_pico = crate::routing::estimate_savings(
        &cfg.prices,
        requested,
        &decision.model,
        prompt_tokens,
        expected,
    )
    .map_or(0, |s| s.saved);
    info.requested_model = Some(requested.to_string());
    info.route = Some(format!(
        "rule:{}",
        decision.rule_name.clone().unwrap_or_default()
    ));
}

/// A retry plan for a routing decision with fallbacks or a cascade.
fn make_retry(
    cfg: &Config,
    seed: RetrySeed,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
) -> Retry {
    let prices = seed
        .chain
        .targets
        .iter()
        .chain(seed.cascade.as_ref().map(|c| &c.strong))
        .filter_map(|t| t.model.clone())
        .map(|m| {
            let p = cfg.prices.lookup(&m).map(|(_, i)| i.price);
            (m, p)
        })
        .collect();
    Retry {
        chain: seed.chain,
        cascade: seed.cascade,
        tried: 0,
        escalated: false,
        body,
        headers,
        json_requested: seed.json_requested,
        timeout_ms: seed.timeout_ms,
        cheap: None,
        prices,
    }
}

/// The upstream failures a fallback chain reacts to. A 504 is what Envoy answers when the
/// route's timeout fires (and what gateways answer for a slow origin): a timeout.
fn failure_of(status: u16) -> Option<UpstreamFailure> {
    match status {
        504 => Some(UpstreamFailure::Timeout),
        429 | 500..=599 => Some(UpstreamFailure::Status(status)),
        _ => None,
    }
}

/// Metric/header label of a failure.
fn failure_label(f: UpstreamFailure) -> &'static str {
    match f {
        UpstreamFailure::Status(429) => "429",
        UpstreamFailure::Status(_) => "5xx",
        UpstreamFailure::Timeout => "timeout",
    }
}

/// Points the flight at `target` (the model spliced into the body) and builds the call.
/// `None` when the flight keeps nothing to retry with.
fn retarget(flight: &mut Flight, target: &crate::routing::Target) -> Option<UpstreamCall> {
    let retry = flight.retry.as_mut()?;
    if let Some(m) = target.model.as_ref().filter(|m| **m != flight.req.model) {
        let edit = [json::Edit::Set {
            key: "model".into(),
            raw: serde_json::Value::String(m.clone()).to_string(),
        }];
        if let Some(b) = json::apply(&retry.body, &edit) {
            retry.body = b;
        }
        if flight.budget.requested_model.is_none() {
            flight.budget.requested_model = Some(flight.req.model.clone());
        }
        flight.price = retry
            .prices
            .iter()
            .find(|(name, _)| name == m)
            .and_then(|(_, p)| *p);
        flight.req.model = m.clone();
    }
    // The answer of another model must not be stored under the keys of the one asked for.
    flight.store = None;
    Some(UpstreamCall {
        cluster: target.cluster.clone(),
        headers: retry.headers.clone(),
        body: retry.body.clone(),
        timeout_ms: retry.timeout_ms,
    })
}

/// Records the failed attempt and moves on to the next target of the chain.
fn fall_back(
    flight: &mut Flight,
    target: &crate::routing::Target,
    failure: UpstreamFailure,
) -> Option<UpstreamCall> {
    let failed = flight.req.model.clone();
    let call = retarget(flight, target)?;
    flight
        .budget
        .fallbacks
        .push((failed, failure_label(failure)));
    if let Some(r) = flight.retry.as_mut() {
        r.tried += 1;
    }
    Some(call)
}

fn add_usage(a: Usage, b: Usage) -> Usage {
    Usage {
        input_tokens: a.input_tokens.saturating_add(b.input_tokens),
        cache_read_tokens: a.cache_read_tokens.saturating_add(b.cache_read_tokens),
        cache_write_tokens: a.cache_write_tokens.saturating_add(b.cache_write_tokens),
        output_tokens: a.output_tokens.saturating_add(b.output_tokens),
        reasoning_tokens: a.reasoning_tokens.saturating_add(b.reasoning_tokens),
    }
}

/// `x-tollgate-attempts` (upstream calls made) and `x-tollgate-cascade` headers.
fn attempt_headers(o: &Outcome) -> Vec<(String, String)> {
    let mut h = Vec::new();
    let attempts = 1 + o.budget.fallbacks.len() + usize::from(o.budget.escalated.is_some());
    if attempts > 1 {
        h.push(("x-tollgate-attempts".to_string(), attempts.to_string()));
    }
    if let Some((_, reason)) = &o.budget.escalated {
        h.push((
            "x-tollgate-cascade".to_string(),
            format!("escalated; check={reason}"),
        ));
    }
    h
}

/// Every attempt of a fallback chain timed out.
fn upstream_timeout(api: Api) -> LocalReply {
    let message = "every model of the fallback chain timed out";
    let code = "upstream_timeout";
    let v = if api.is_anthropic() {
        serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}})
    } else {
        serde_json::json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}})
    };
    LocalReply {
        status: 504,
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-tollgate-error".to_string(), code.to_string()),
        ],
        body: v.to_string().into_bytes(),
    }
}

/// Whether the request asks for JSON output (OpenAI `response_format`, Responses `text.format`).
fn json_requested(v: &serde_json::Value) -> bool {
    let kind = v
        .get("response_format")
        .and_then(|r| r.get("type"))
        .or_else(|| v.pointer("/text/format/type"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    kind.starts_with("json")
}

impl Outcome {
    /// The settle record sent to the cache service (only when one is configured).
    pub fn settle_record(&self, finished_at_ms: u64) -> Option<SettleRecord> {
        let cache = self.cache?;
        Some(SettleRecord {
            request_id: self.request_id.clone(),
            tenant: self.tenant.clone(),
            api: Some(self.api),
            model: self.model.clone(),
            stream: self.stream,
            status: self.status,
            usage: self.usage,
            usage_source: self.usage_source,
            cost_pico: self.cost_pico,
            cache,
            saved_pico: self.saved_pico,
            finished_at_ms,
            store: self.store.clone(),
            identity: self.budget.identity.clone(),
            reservation_id: self.budget.reservation_id.clone(),
            requested_model: self.budget.requested_model.clone(),
            route: self.budget.route.clone(),
        })
    }
}

/// Response headers describing the metered usage (contract names).
pub fn usage_headers(o: &Outcome) -> Vec<(String, String)> {
    let mut h = vec![
        (
            "x-tollgate-prompt-tokens".to_string(),
            o.usage.prompt_tokens().to_string(),
        ),
        (
            "x-tollgate-completion-tokens".to_string(),
            o.usage.output_tokens.to_string(),
        ),
        (
            "x-tollgate-cost-usd".to_string(),
            o.cost_pico
                .map_or_else(|| "unknown".to_string(), format_usd),
        ),
        (
            "x-tollgate-usage-source".to_string(),
            usage_source_str(o.usage_source).to_string(),
        ),
    ];
    if o.usage.cache_read_tokens > 0 {
        h.push((
            "x-tollgate-cached-tokens".to_string(),
            o.usage.cache_read_tokens.to_string(),
        ));
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use tollgate_bpe::Encoding;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cfg(json: &str) -> Config {
        Config::from_json(json.as_bytes()).unwrap()
    }

    fn get<'a>(headers: &'a [(String, String)], k: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// Drives a full exchange; returns (request body sent upstream, response headers, outcome).
    fn drive(
        cfg: &Config,
        path: &str,
        body: &str,
        resp_ct: &str,
        resp: &[&str],
    ) -> (Option<Vec<u8>>, Vec<(String, String)>, Outcome) {
        let mut x = Exchange::new();
        let mut cache = CountCache::new(16, 1);
        let v = x.on_request_headers(
            cfg,
            "POST",
            path,
            &h(&[
                ("x-tollgate-tenant", "acme"),
                ("content-type", "application/json"),
            ]),
            false,
        );
        assert!(
            matches!(
                v,
                HeadersVerdict::Continue { .. } | HeadersVerdict::Pause { .. }
            ),
            "{v:?}"
        );
        assert_eq!(
            x.on_request_body(cfg, &mut cache, 10, false, || None),
            BodyVerdict::Buffer
        );
        let BodyVerdict::Continue { body: sent } =
            x.on_request_body(cfg, &mut cache, body.len(), true, || {
                Some(body.as_bytes().to_vec())
            })
        else {
            panic!("rejected")
        };
        let rh = x.on_response_headers(cfg, 200, &h(&[("content-type", resp_ct)]), false);
        let mut headers = rh.add.clone();
        if rh.hold {
            for _ in resp.iter().skip(1) {
                assert_eq!(x.on_response_body(b"", false), ResponseBodyVerdict::Hold);
            }
            let all = resp.concat();
            let ResponseBodyVerdict::Continue { set_headers } =
                x.on_response_body(all.as_bytes(), true)
            else {
                panic!()
            };
            headers.extend(set_headers);
        } else {
            for (i, c) in resp.iter().enumerate() {
                let v = x.on_response_body(c.as_bytes(), i + 1 == resp.len());
                assert_eq!(
                    v,
                    ResponseBodyVerdict::Continue {
                        set_headers: vec![]
                    }
                );
            }
        }
        (sent, headers, x.take_outcome().unwrap())
    }

    const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there"}],"max_tokens":50}"#;
    const CHAT_RESP: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":0}}}"#;

    #[test]
    fn classifies_llm_routes_only() {
        assert_eq!(
            classify("POST", "/v1/chat/completions"),
            Some(Api::OpenAiChat)
        );
        assert_eq!(
            classify("post", "/openai/v1/chat/completions?x=1"),
            Some(Api::OpenAiChat)
        );
        assert_eq!(
            classify("POST", "/v1/completions"),
            Some(Api::OpenAiCompletions)
        );
        assert_eq!(
            classify("POST", "/v1/responses"),
            Some(Api::OpenAiResponses)
        );
        assert_eq!(
            classify("POST", "/v1/messages"),
            Some(Api::AnthropicMessages)
        );
        assert_eq!(classify("GET", "/v1/chat/completions"), None);
        assert_eq!(classify("POST", "/v1/messages/count_tokens"), None);
        assert_eq!(classify("POST", "/v1/embeddings"), None);
        assert_eq!(classify("GET", "/healthz"), None);
    }

    #[test]
    fn held_json_response_gets_full_usage_headers() {
        let c = cfg(r#"{"stopOnHeaders": true}"#);
        let (sent, headers, o) = drive(
            &c,
            "/v1/chat/completions",
            CHAT,
            "application/json",
            &[&CHAT_RESP[..40], &CHAT_RESP[40..]],
        );
        assert!(sent.is_none(), "max_tokens under every cap: body untouched");
        assert_eq!(get(&headers, "x-tollgate-model"), Some("gpt-4o"));
        assert_eq!(get(&headers, "x-tollgate-prompt-tokens"), Some("11"));
        assert_eq!(get(&headers, "x-tollgate-completion-tokens"), Some("2"));
        // 11 * 2.5e-6 + 2 * 1e-5
        assert_eq!(get(&headers, "x-tollgate-cost-usd"), Some("0.0000475"));
        assert_eq!(get(&headers, "x-tollgate-usage-source"), Some("provider"));
        assert_eq!(o.tenant, "acme");
        assert_eq!(o.cost_pico, Some(47_500_000));
        assert_eq!(o.result(), "ok");
        let e = Encoding::O200kBase;
        assert_eq!(
            o.prompt_counted,
            3 + 3 + e.count("user") as u64 + e.count("Hello there") as u64
        );
    }

    #[test]
    fn without_stop_on_headers_nothing_is_held_and_known_headers_go_out_first() {
        let c = cfg("");
        let (_, headers, o) = drive(
            &c,
            "/v1/chat/completions",
            CHAT,
            "application/json",
            &[CHAT_RESP],
        );
        assert_eq!(get(&headers, "x-tollgate-completion-tokens"), None);
        assert_eq!(
            get(&headers, "x-tollgate-prompt-tokens"),
            Some(o.prompt_counted.to_string().as_str())
        );
        assert_eq!(get(&headers, "x-tollgate-usage-source"), Some("counted"));
        assert_eq!(o.usage.output_tokens, 2);
    }

    #[test]
    fn stream_without_usage_is_counted_and_marked() {
        let c = cfg(r#"{"stopOnHeaders": true}"#);
        let chunks = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello wor\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ld, again\"}}]}\n\n",
            "data: [DONE]\n\n",
        ];
        let body =
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"stream":true}"#;
        let (sent, headers, o) = drive(
            &c,
            "/v1/chat/completions",
            body,
            "text/event-stream",
            &chunks,
        );
        // Default max tokens inserted into the body.
        let sent: serde_json::Value = serde_json::from_slice(&sent.unwrap()).unwrap();
        assert_eq!(sent["max_completion_tokens"], 4096);
        assert!(get(&headers, "x-tollgate-prompt-tokens").is_some());
        assert_eq!(o.usage_source, UsageSource::Counted);
        assert_eq!(
            o.usage.output_tokens,
            Encoding::O200kBase.count("Hello world, again") as u64
        );
        assert_eq!(o.usage.input_tokens, o.prompt_counted);
        assert!(o.complete && o.stream && o.max_tokens.inserted);
    }

    #[test]
    fn anthropic_stream_uses_provider_usage_over_the_estimate() {
        let c = cfg(r#"{"stopOnHeaders": true}"#);
        let body = r#"{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
        let chunks = [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":21,\"cache_read_input_tokens\":0,\"cache_creation_input_tokens\":0,\"output_tokens\":1}}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let (_, headers, o) = drive(&c, "/v1/messages", body, "text/event-stream", &chunks);
        assert_eq!(get(&headers, "x-tollgate-usage-source"), Some("estimated"));
        assert_eq!(o.usage_source, UsageSource::Provider);
        assert_eq!((o.usage.input_tokens, o.usage.output_tokens), (21, 9));
        assert_eq!(o.cost_pico, Some(21 * 3_000_000 + 9 * 15_000_000));
    }

    #[test]
    fn unknown_model_is_metered_with_unknown_cost() {
        let c = cfg(r#"{"stopOnHeaders": true}"#);
        let body =
            r#"{"model":"acme-llm-1","messages":[{"role":"user","content":"Hi"}],"max_tokens":5}"#;
        let resp = CHAT_RESP.replace("gpt-4o", "acme-llm-1");
        let (_, headers, o) = drive(
            &c,
            "/v1/chat/completions",
            body,
            "application/json",
            &[&resp],
        );
        assert_eq!(get(&headers, "x-tollgate-cost-usd"), Some("unknown"));
        assert_eq!(o.cost_pico, None);
        let mut card = Cardinality::new(10, 10);
        assert!(
            o.counters(&mut card)
                .iter()
                .any(|(c, _, _)| *c == Counter::Unpriced)
        );
    }

    #[test]
    fn bad_requests_get_provider_shaped_errors() {
        let c = cfg("");
        let mut cache = CountCache::new(4, 1);
        // Oversized by content-length: rejected at headers.
        let mut x = Exchange::new();
        let v = x.on_request_headers(
            &c,
            "POST",
            "/v1/messages",
            &h(&[("content-length", "2000000")]),
            false,
        );
        let HeadersVerdict::Reply(r) = v else {
            panic!("{v:?}")
        };
        assert_eq!(r.status, 413);
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["error"]["type"], "request_too_large");
        assert_eq!(
            x.take_outcome().unwrap().rejected,
            Some(ErrorKind::RequestTooLarge)
        );
        // Oversized while streaming the body (chunked).
        let mut x = Exchange::new();
        x.on_request_headers(&c, "POST", "/v1/chat/completions", &[], false);
        let BodyVerdict::Reply(r) = x.on_request_body(&c, &mut cache, 2 << 20, false, || None)
        else {
            panic!()
        };
        assert_eq!(r.status, 413);
        // Malformed JSON.
        let mut x = Exchange::new();
        x.on_request_headers(&c, "POST", "/v1/chat/completions", &[], false);
        let BodyVerdict::Reply(r) =
            x.on_request_body(&c, &mut cache, 5, true, || Some(b"{oops".to_vec()))
        else {
            panic!()
        };
        assert_eq!(r.status, 400);
        let o = x.take_outcome().unwrap();
        let mut card = Cardinality::new(10, 10);
        let counters = o.counters(&mut card);
        assert!(counters.iter().any(|(c, _, _)| *c == Counter::ParseErrors));
        // Missing body.
        let mut x = Exchange::new();
        let HeadersVerdict::Reply(r) =
            x.on_request_headers(&c, "POST", "/v1/chat/completions", &[], true)
        else {
            panic!()
        };
        assert_eq!(r.status, 400);
        // Bad tenant header.
        let mut x = Exchange::new();
        let HeadersVerdict::Reply(r) = x.on_request_headers(
            &c,
            "POST",
            "/v1/messages",
            &h(&[("x-tollgate-tenant", "no spaces please")]),
            false,
        ) else {
            panic!()
        };
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["type"], "error");
        assert_eq!(j["error"]["type"], "invalid_request");
    }

    #[test]
    fn non_llm_and_compressed_requests_pass_through() {
        let c = cfg("");
        let mut x = Exchange::new();
        assert_eq!(
            x.on_request_headers(&c, "GET", "/v1/models", &[], true),
            HeadersVerdict::PassThrough
        );
        assert!(!x.is_metered());
        assert_eq!(
            x.on_request_body(&c, &mut CountCache::new(1, 1), 3, true, || None),
            BodyVerdict::Continue { body: None }
        );
        assert_eq!(
            x.on_response_headers(&c, 200, &[], false),
            ResponseHeadersVerdict::default()
        );
        x.on_end();
        assert!(x.take_outcome().is_none());
        let mut x = Exchange::new();
        let v = x.on_request_headers(
            &c,
            "POST",
            "/v1/chat/completions",
            &h(&[("content-encoding", "gzip")]),
            false,
        );
        assert_eq!(v, HeadersVerdict::PassThrough);
        assert_eq!(x.passthrough_reason, Some("content_encoding"));
    }

    #[test]
    fn upstream_errors_are_not_billed() {
        let c = cfg(r#"{"stopOnHeaders": true}"#);
        let mut x = Exchange::new();
        let mut cache = CountCache::new(4, 1);
        x.on_request_headers(&c, "POST", "/v1/chat/completions", &[], false);
        x.on_request_body(&c, &mut cache, CHAT.len(), true, || {
            Some(CHAT.as_bytes().to_vec())
        });
        let v = x.on_response_headers(&c, 429, &h(&[("content-type", "application/json")]), false);
        assert!(!v.hold);
        x.on_response_body(br#"{"error":{"message":"slow down"}}"#, true);
        let o = x.take_outcome().unwrap();
        assert_eq!(o.status, 429);
        assert_eq!(o.cost_pico, Some(0));
        assert_eq!(o.result(), "upstream_error");
    }

    #[test]
    fn aborted_stream_is_settled_with_what_was_seen() {
        let c = cfg("");
        let mut x = Exchange::new();
        let mut cache = CountCache::new(4, 1);
        let body =
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"stream":true}"#;
        x.on_request_headers(&c, "POST", "/v1/chat/completions", &[], false);
        x.on_request_body(&c, &mut cache, body.len(), true, || {
            Some(body.as_bytes().to_vec())
        });
        x.on_response_headers(&c, 200, &h(&[("content-type", "text/event-stream")]), false);
        x.on_response_body(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Partial answer\"}}]}\n\n",
            false,
        );
        x.on_end();
        let o = x.take_outcome().unwrap();
        assert!(!o.complete);
        assert_eq!(o.result(), "incomplete");
        assert_eq!(
            o.usage.output_tokens,
            Encoding::O200kBase.count("Partial answer") as u64
        );
        assert!(o.cost_pico.unwrap() > 0);
        x.on_end();
        assert!(x.take_outcome().is_none(), "settled once");
    }

    #[test]
    fn properties_for_the_access_log() {
        let c = cfg(r#"{"stopOnHeaders": true}"#);
        let (_, _, o) = drive(
            &c,
            "/v1/chat/completions",
            CHAT,
            "application/json",
            &[CHAT_RESP],
        );
        let p = o.properties();
        let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tenant"), Some("acme"));
        assert_eq!(get("model"), Some("gpt-4o"));
        assert_eq!(get("prompt_tokens"), Some("11"));
        assert_eq!(get("cost_usd"), Some("0.0000475"));
        assert_eq!(get("result"), Some("ok"));
        assert_eq!(
            o.log_line(),
            "tenant=acme api=openai_chat model=gpt-4o prompt_tokens=11 completion_tokens=2 \
             cached_tokens=0 cost_usd=0.0000475 usage_source=provider stream=false result=ok"
        );
        let mut odd = o.clone();
        odd.tenant = "team \"a\"=b".into();
        odd.model = String::new();
        assert!(
            odd.log_line()
                .starts_with(r#"tenant="team \"a\"=b" api=openai_chat model="" "#),
            "{}",
            odd.log_line()
        );
    }

    mod cache {
        use super::*;
        use tollgate_wire::admit::{AdmitResponse, CacheDecision};

        fn cfg() -> Config {
            Config::from_json(br#"{"stopOnHeaders": true, "cache": {"cluster": "tollgate_cache"}}"#)
                .unwrap()
        }

        const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":100}"#;

        fn admit(
            x: &mut Exchange,
            c: &Config,
            headers: &[(&str, &str)],
            body: &str,
        ) -> AdmitRequest {
            let mut cache = CountCache::new(4, 1);
            x.on_request_headers(c, "POST", "/v1/chat/completions?a=1", &h(headers), false);
            match x.on_request_body(c, &mut cache, body.len(), true, || {
                Some(body.as_bytes().to_vec())
            }) {
                BodyVerdict::Admit { call, .. } => serde_json::from_slice(&call).unwrap(),
                other => panic!("{other:?}"),
            }
        }

        fn entry(text: &str, out: u64) -> CachedCompletion {
            CachedCompletion {
                entry_id: "7".into(),
                model: "gpt-4o".into(),
                text: text.into(),
                finish_reason: "stop".into(),
                usage: Usage {
                    input_tokens: 14,
                    output_tokens: out,
                    ..Usage::default()
                },
                cost_pico: Some(123),
                created_at: 5,
            }
        }

        fn answer(outcome: CacheOutcome, e: Option<CachedCompletion>, store: bool) -> Vec<u8> {
            serde_json::to_vec(&AdmitResponse {
                cache: CacheDecision {
                    outcome,
                    entry: e,
                    store,
                    ..CacheDecision::default()
                },
                budget: None,
                prefix_hot: false,
                ..AdmitResponse::default()
            })
            .unwrap()
        }

        #[test]
        fn admit_request_carries_keys_flags_and_request_id() {
            let c = cfg();
            let mut x = Exchange::with_id("fallback-1".into());
            let a = admit(
                &mut x,
                &c,
                &[
                    ("x-tollgate-tenant", "t1"),
                    ("x-request-id", "rid-9"),
                    ("cache-control", "no-store"),
                ],
                BODY,
            );
            assert_eq!(a.request_id, "rid-9");
            assert_eq!(a.tenant, "t1");
            assert_eq!(a.route, "/v1/chat/completions");
            let q = a.cache.unwrap();
            assert_eq!(q.query, "What is the capital of France?");
            assert!(q.lookup && !q.store);
            assert_eq!(q.max_tokens, Some(100));
            assert!(x.is_admitting());
            let mut y = Exchange::with_id("fallback-2".into());
            assert_eq!(admit(&mut y, &c, &[], BODY).request_id, "fallback-2");
        }

        #[test]
        fn hit_is_answered_locally_in_the_provider_shape_at_zero_cost() {
            let c = cfg();
            let mut x = Exchange::new();
            admit(&mut x, &c, &[("x-tollgate-tenant", "t1")], BODY);
            let v = x.on_admit_response(
                &c,
                Some(200),
                &answer(CacheOutcome::HitSemantic, Some(entry("Paris.", 2)), false),
                1,
            );
            let AdmitVerdict::Reply(r) = v else {
                panic!("{v:?}")
            };
            assert_eq!(r.status, 200);
            assert_eq!(get(&r.headers, "x-tollgate-cache"), Some("hit-semantic"));
            assert_eq!(get(&r.headers, "x-tollgate-cost-usd"), Some("0"));
            // 14 * 2.5e-6 + 2 * 1e-5
            assert_eq!(get(&r.headers, "x-tollgate-saved-usd"), Some("0.000055"));
            let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(j["choices"][0]["message"]["content"], "Paris.");
            let o = x.take_outcome().unwrap();
            assert_eq!(
                (o.cost_pico, o.saved_pico, o.cache),
                (Some(0), 55_000_000, Some(CacheOutcome::HitSemantic))
            );
            let rec = o.settle_record(9).unwrap();
            assert!(rec.store.is_none());
            let mut card = Cardinality::new(10, 10);
            let counters = o.counters(&mut card);
            assert!(
                counters.iter().any(
                    |(c, t, _)| *c == Counter::CacheRequests && t.cache == Some("hit-semantic")
                )
            );
            assert!(
                counters
                    .iter()
                    .any(|(c, _, n)| *c == Counter::SavedMicroUsd && *n == 55)
            );
        }

        #[test]
        fn hit_longer_than_max_tokens_is_not_served() {
            let c = cfg();
            let mut x = Exchange::new();
            admit(&mut x, &c, &[], BODY);
            let v = x.on_admit_response(
                &c,
                Some(200),
                &answer(CacheOutcome::HitExact, Some(entry("long", 500)), true),
                1,
            );
            assert_eq!(v, AdmitVerdict::Continue);
            let rh =
                x.on_response_headers(&c, 200, &h(&[("content-type", "application/json")]), false);
            assert!(rh.add.contains(&("x-tollgate-cache".into(), "miss".into())));
        }

        #[test]
        fn miss_stores_the_answer_on_settle() {
            let c = cfg();
            let mut x = Exchange::new();
            admit(&mut x, &c, &[], BODY);
            assert_eq!(
                x.on_admit_response(&c, Some(200), &answer(CacheOutcome::Miss, None, true), 1),
                AdmitVerdict::Continue
            );
            x.on_response_headers(&c, 200, &h(&[("content-type", "application/json")]), false);
            x.on_response_body(br#"{"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":2}}"#, true);
            let o = x.take_outcome().unwrap();
            let rec = o.settle_record(1).unwrap();
            assert_eq!(rec.cache, CacheOutcome::Miss);
            let st = rec.store.unwrap();
            assert_eq!(st.completion.text, "Paris.");
            assert_eq!(st.query, "What is the capital of France?");
            assert_eq!(st.completion.usage.output_tokens, 2);
        }

        #[test]
        fn streamed_answers_are_assembled_and_tool_calls_or_truncation_are_not_stored() {
            let c = cfg();
            let stream_body =
                BODY.replace("\"max_tokens\":100", "\"max_tokens\":100,\"stream\":true");
            for (chunks, stored) in [
                (
                    vec![
                        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\"}}]}\n\n",
                        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"is.\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
                    ],
                    Some("Paris."),
                ),
                (
                    vec![
                        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\"},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n",
                    ],
                    None,
                ),
                (
                    vec![
                        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
                    ],
                    None,
                ),
                (
                    vec!["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\"}}]}\n\n"],
                    None,
                ),
            ] {
                let mut x = Exchange::new();
                admit(&mut x, &c, &[], &stream_body);
                x.on_admit_response(&c, Some(200), &answer(CacheOutcome::Miss, None, true), 1);
                x.on_response_headers(&c, 200, &h(&[("content-type", "text/event-stream")]), false);
                for ch in &chunks {
                    x.on_response_body(ch.as_bytes(), false);
                }
                x.on_response_body(b"", true);
                let rec = x.take_outcome().unwrap().settle_record(1).unwrap();
                assert_eq!(
                    rec.store.map(|s| s.completion.text).as_deref(),
                    stored,
                    "{chunks:?}"
                );
            }
        }

        #[test]
        fn service_failures_and_garbage_go_upstream_marked_error() {
            let c = cfg();
            for (status, body) in [
                (None, &b""[..]),
                (Some(503), b"upstream connect error"),
                (Some(200), b"{not json"),
                (Some(200), br#"{"cache":{"outcome":"weird"}}"#),
            ] {
                let mut x = Exchange::new();
                admit(&mut x, &c, &[], BODY);
                assert_eq!(
                    x.on_admit_response(&c, status, body, 1),
                    AdmitVerdict::Continue
                );
                let rh = x.on_response_headers(
                    &c,
                    200,
                    &h(&[("content-type", "application/json")]),
                    true,
                );
                assert!(
                    rh.add
                        .contains(&("x-tollgate-cache".into(), "error".into())),
                    "{status:?}"
                );
                assert_eq!(x.take_outcome().unwrap().cache, Some(CacheOutcome::Error));
            }
        }

        #[test]
        fn without_a_cache_service_there_is_no_call_out_and_no_settle_record() {
            let c = Config::from_json(b"").unwrap();
            let mut x = Exchange::new();
            let mut cache = CountCache::new(4, 1);
            x.on_request_headers(&c, "POST", "/v1/chat/completions", &[], false);
            let v = x.on_request_body(&c, &mut cache, BODY.len(), true, || {
                Some(BODY.as_bytes().to_vec())
            });
            assert!(matches!(v, BodyVerdict::Continue { .. }));
            x.on_response_headers(&c, 200, &h(&[("content-type", "application/json")]), true);
            assert!(x.take_outcome().unwrap().settle_record(1).is_none());
        }
    }

    mod budgets {
        use super::*;
        use tollgate_wire::admit::{AdmitResponse, BudgetDecision, BudgetRejection, CacheDecision};

        fn cfg(mode: &str) -> Config {
            Config::from_json(
                format!(
                    r#"{{"stopOnHeaders": true, "cache": {{"cluster": "svc"}},
                        "tenant": {{"org": "acme", "userSources": ["header:x-user", "principal"]}},
                        "budgets": {{"failureMode": "{mode}"}}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        }

        const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Summarise the meeting notes."}],"max_tokens":100}"#;

        fn admit(x: &mut Exchange, c: &Config, headers: &[(&str, &str)]) -> AdmitRequest {
            let mut cache = CountCache::new(4, 1);
            x.on_request_headers(c, "POST", "/v1/chat/completions", &h(headers), false);
            match x.on_request_body(c, &mut cache, BODY.len(), true, || {
                Some(BODY.as_bytes().to_vec())
            }) {
                BodyVerdict::Admit { call, .. } => serde_json::from_slice(&call).unwrap(),
                other => panic!("{other:?}"),
            }
        }

        fn answer(b: BudgetDecision) -> Vec<u8> {
            serde_json::to_vec(&AdmitResponse {
                cache: CacheDecision::default(),
                budget: Some(b),
                prefix_hot: false,
                ..AdmitResponse::default()
            })
            .unwrap()
        }

        #[test]
        fn admit_carries_every_scope_and_the_worst_case_cost() {
            let c = cfg("open");
            let mut x = Exchange::new();
            let a = admit(
                &mut x,
                &c,
                &[
                    ("x-tollgate-tenant", "search"),
                    ("x-user", "ann"),
                    ("authorization", "Bearer sk-secret"),
                ],
            );
            let id = a.identity.unwrap();
            assert_eq!((id.org.as_str(), id.team.as_str()), ("acme", "search"));
            assert_eq!(id.user.as_deref(), Some("ann"));
            let key = id.key.unwrap();
            assert!(key.starts_with("key:") && !key.contains("secret"), "{key}");
            let q = a.budget.unwrap();
            assert_eq!(q.max_output_tokens, 100);
            // gpt-4o: 2.5 USD / M input, 10 USD / M output.
            let want = q.input_tokens * 2_500_000 + 100 * 10_000_000;
            assert_eq!(q.max_cost_pico, Some(want));
            // The principal pseudo-header is the user when no header names one.
            let mut y = Exchange::new();
            let a = admit(
                &mut y,
                &c,
                &[(PRINCIPAL, "spiffe://cluster.local/ns/a/sa/web")],
            );
            assert_eq!(
                a.identity.unwrap().user.as_deref(),
                Some("spiffe://cluster.local/ns/a/sa/web")
            );
        }

        const PRINCIPAL: &str = crate::tenant::PRINCIPAL_PSEUDO_HEADER;

        #[test]
        fn over_budget_is_a_429_in_the_provider_shape_with_retry_after() {
            let c = cfg("open");
            let mut x = Exchange::new();
            admit(&mut x, &c, &[("x-tollgate-tenant", "search")]);
            let v = x.on_admit_response(
                &c,
                Some(200),
                &answer(BudgetDecision {
                    verdict: BudgetVerdict::Reject,
                    remaining_pico: Some(0),
                    rejection: Some(BudgetRejection {
                        code: "budget_exceeded".into(),
                        scope: "team:search".into(),
                        period: "day".into(),
                        message: "team:search has used its $10.00 daily budget".into(),
                        retry_after_seconds: Some(3600),
                    }),
                    ..BudgetDecision::default()
                }),
                1,
            );
            let AdmitVerdict::Reply(r) = v else {
                panic!("{v:?}")
            };
            assert_eq!(r.status, 429);
            assert_eq!(get(&r.headers, "retry-after"), Some("3600"));
            assert_eq!(
                get(&r.headers, "x-tollgate-budget-remaining-usd"),
                Some("0")
            );
            let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(j["error"]["code"], "budget_exceeded");
            assert!(
                j["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("team:search")
            );
            let o = x.take_outcome().unwrap();
            assert_eq!(o.rejected, Some(ErrorKind::BudgetExceeded));
            assert!(
                o.settle_record(1).is_none(),
                "nothing reserved, nothing to settle"
            );
        }

        #[test]
        fn token_limits_are_rate_limited() {
            let c = cfg("open");
            let mut x = Exchange::new();
            admit(&mut x, &c, &[]);
            let v = x.on_admit_response(
                &c,
                Some(200),
                &answer(BudgetDecision {
                    verdict: BudgetVerdict::Reject,
                    rejection: Some(BudgetRejection {
                        code: "rate_limited".into(),
                        ..BudgetRejection::default()
                    }),
                    ..BudgetDecision::default()
                }),
                1,
            );
            let AdmitVerdict::Reply(r) = v else {
                panic!("{v:?}")
            };
            let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(j["error"]["type"], "rate_limited");
        }

        #[test]
        fn soft_limit_downgrades_the_model_and_settles_both_names() {
            let c = cfg("open");
            let mut x = Exchange::new();
            admit(&mut x, &c, &[("x-tollgate-tenant", "search")]);
            let v = x.on_admit_response(
                &c,
                Some(200),
                &answer(BudgetDecision {
                    verdict: BudgetVerdict::Downgrade,
                    reservation_id: Some("r-1".into()),
                    remaining_pico: Some(1_500_000_000_000),
                    downgrade_model: Some("gpt-4o-mini".into()),
                    rejection: None,
                }),
                1,
            );
            let AdmitVerdict::Rewrite { body } = v else {
                panic!("{v:?}")
            };
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(j["model"], "gpt-4o-mini");
            assert_eq!(j["max_tokens"], 100);
            let rh =
                x.on_response_headers(&c, 200, &h(&[("content-type", "application/json")]), false);
            assert!(
                rh.add
                    .contains(&("x-tollgate-model".into(), "gpt-4o-mini".into()))
            );
            assert!(
                rh.add
                    .contains(&("x-tollgate-budget-remaining-usd".into(), "1.5".into()))
            );
            x.on_response_body(br#"{"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Done."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":2}}"#, true);
            let o = x.take_outcome().unwrap();
            // Priced at the model actually used: 14 * 0.15 + 2 * 0.6 USD / M.
            assert_eq!(o.cost_pico, Some(14 * 150_000 + 2 * 600_000));
            let rec = o.settle_record(1).unwrap();
            assert_eq!(rec.model, "gpt-4o-mini");
            assert_eq!(rec.requested_model.as_deref(), Some("gpt-4o"));
            assert_eq!(rec.reservation_id.as_deref(), Some("r-1"));
            assert_eq!(rec.route.as_deref(), Some("downgrade:budget"));
            assert_eq!(rec.identity.unwrap().team, "search");
            assert!(
                rec.store.is_none(),
                "not stored under the requested model's keys"
            );
        }

        #[test]
        fn failure_modes_open_allows_closed_rejects() {
            let open = cfg("open");
            let mut x = Exchange::new();
            admit(&mut x, &open, &[]);
            assert_eq!(
                x.on_admit_response(&open, None, &[], 1),
                AdmitVerdict::Continue
            );
            x.on_response_headers(
                &open,
                200,
                &h(&[("content-type", "application/json")]),
                false,
            );
            x.on_response_body(br#"{"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Ok."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":2}}"#, true);
            let rec = x.take_outcome().unwrap().settle_record(1).unwrap();
            assert_eq!(
                rec.reservation_id, None,
                "charged unreserved when the service is back"
            );
            assert!(rec.cost_pico.unwrap() > 0);

            let closed = cfg("closed");
            for (status, body) in [
                (None, &b""[..]),
                (Some(200), &b"garbage"[..]),
                (Some(503), &b""[..]),
            ] {
                let mut x = Exchange::new();
                admit(&mut x, &closed, &[]);
                let v = x.on_admit_response(&closed, status, body, 1);
                let AdmitVerdict::Reply(r) = v else {
                    panic!("{v:?}")
                };
                assert_eq!(r.status, 503);
                let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(j["error"]["code"], "budget_unavailable");
            }
        }
    }

    mod prefix_hints {
        use super::*;
        use tollgate_wire::admit::{AdmitResponse, CacheDecision};

        fn cfg() -> Config {
            Config::from_json(
                br#"{"stopOnHeaders": true, "cache": {"cluster": "svc"}, "prefixHints": {}}"#,
            )
            .unwrap()
        }

        fn body() -> String {
            let system = "You answer questions about the handbook. ".repeat(200);
            serde_json::json!({"model": "claude-haiku-4-5", "max_tokens": 100, "system": system,
                "messages": [{"role": "user", "content": "What is the leave policy?"}]})
            .to_string()
        }

        fn admit(x: &mut Exchange, c: &Config, body: &str) -> AdmitRequest {
            let mut cache = CountCache::new(4, 1);
            x.on_request_headers(c, "POST", "/v1/messages", &[], false);
            let v = x.on_request_body(c, &mut cache, body.len(), true, || {
                Some(body.as_bytes().to_vec())
            });
            match v {
                BodyVerdict::Admit { call, .. } => serde_json::from_slice(&call).unwrap(),
                other => panic!("{other:?}"),
            }
        }

        fn answer(hot: bool) -> Vec<u8> {
            serde_json::to_vec(&AdmitResponse {
                cache: CacheDecision::default(),
                budget: None,
                prefix_hot: hot,
                ..AdmitResponse::default()
            })
            .unwrap()
        }

        #[test]
        fn a_hot_anthropic_prefix_gets_a_cache_breakpoint_and_a_cold_one_does_not() {
            let c = cfg();
            let body = body();
            let mut x = Exchange::new();
            let a = admit(&mut x, &c, &body);
            let key = a.prefix_key.clone().unwrap();
            assert_eq!(key.len(), 32);
            let headers = x.take_upstream_headers();
            assert!(headers.contains(&("x-tollgate-prefix-key".to_string(), key.clone())));
            assert_eq!(
                x.on_admit_response(&c, Some(200), &answer(false), 1),
                AdmitVerdict::Continue
            );

            let mut y = Exchange::new();
            assert_eq!(admit(&mut y, &c, &body).prefix_key, Some(key));
            let v = y.on_admit_response(&c, Some(200), &answer(true), 1);
            let AdmitVerdict::Rewrite { body } = v else {
                panic!("{v:?}")
            };
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let system = j["system"].as_array().unwrap();
            assert_eq!(system.last().unwrap()["cache_control"]["type"], "ephemeral");
            assert_eq!(j["model"], "claude-haiku-4-5");
            assert_eq!(j["max_tokens"], 100);
        }
    }

    mod retries {
        use super::*;

        fn cfg() -> Config {
            Config::from_json(
                br#"{"routing": {"attemptTimeoutMs": 5000, "rules": [
                    {"name": "chain", "match": {"models": ["gpt-4o-mini"]},
                     "fallbacks": [{"model": "gpt-4.1-mini", "cluster": "backup"}, {"model": "gpt-4o"}],
                     "fallbackOn": ["429", "timeout"]},
                    {"name": "cheap-first", "match": {"models": ["gpt-4o"]}, "model": "gpt-4o-mini",
                     "cascade": {"strong": {"model": "gpt-4o"}, "checks": ["refusal", "invalidJson", "truncated"]}}]}}"#,
            )
            .unwrap()
        }

        fn send(x: &mut Exchange, c: &Config, body: &str) -> Vec<u8> {
            let mut cache = CountCache::new(4, 1);
            x.on_request_headers(
                c,
                "POST",
                "/v1/chat/completions?x=1",
                &h(&[
                    (":authority", "api.openai.com"),
                    ("authorization", "Bearer sk-1"),
                    ("content-length", "99"),
                    ("x-envoy-expected-rq-timeout-ms", "5"),
                ]),
                false,
            );
            match x.on_request_body(c, &mut cache, body.len(), true, || {
                Some(body.as_bytes().to_vec())
            }) {
                BodyVerdict::Continue { body: b } => b.unwrap_or_else(|| body.as_bytes().to_vec()),
                other => panic!("{other:?}"),
            }
        }

        const MINI: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}"#;
        const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

        fn answer(model: &str, text: &str, finish: &str) -> Vec<u8> {
            serde_json::json!({"model": model, "choices": [{"index": 0, "message":
                {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
            .to_string()
            .into_bytes()
        }

        fn model_of(call: &UpstreamCall) -> String {
            let v: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
            v["model"].as_str().unwrap().to_string()
        }

        #[test]
        fn a_429_walks_the_chain_with_the_clients_headers_and_meters_the_answer() {
            let c = cfg();
            let mut x = Exchange::new();
            send(&mut x, &c, MINI);
            let v = x.on_response_headers(&c, 429, &h(&JSON), false);
            assert!(v.hold && v.add.is_empty());
            let call = v.call.unwrap();
            assert_eq!(call.cluster.as_deref(), Some("backup"));
            assert_eq!(model_of(&call), "gpt-4.1-mini");
            assert_eq!(call.timeout_ms, 5000);
            assert_eq!(
                get(&call.headers, ":path"),
                Some("/v1/chat/completions?x=1")
            );
            assert_eq!(get(&call.headers, ":authority"), Some("api.openai.com"));
            assert_eq!(get(&call.headers, "authorization"), Some("Bearer sk-1"));
            assert_eq!(get(&call.headers, "content-length"), None);
            assert_eq!(get(&call.headers, "x-envoy-expected-rq-timeout-ms"), None);
            // The failed attempt's body never goes on.
            assert!(x.is_holding());
            assert_eq!(x.on_response_body(b"{}", true), ResponseBodyVerdict::Hold);
            // The first fallback times out (no answer): the next target, on the first cluster.
            let CallVerdict::Call(next) = x.on_call_response(&c, None, &[], b"") else {
                panic!()
            };
            assert_eq!(next.cluster, None);
            assert_eq!(model_of(&next), "gpt-4o");
            let body = answer("gpt-4o", "Hello!", "stop");
            let CallVerdict::Reply(r) = x.on_call_response(&c, Some(200), &h(&JSON), &body) else {
                panic!()
            };
            assert_eq!(r.status, 200);
            assert_eq!(r.body, body);
            assert_eq!(get(&r.headers, "x-tollgate-model"), Some("gpt-4o"));
            assert_eq!(get(&r.headers, "x-tollgate-attempts"), Some("3"));
            assert_eq!(get(&r.headers, "x-tollgate-completion-tokens"), Some("5"));
            let o = x.take_outcome().unwrap();
            assert_eq!(o.model, "gpt-4o");
            assert_eq!(o.budget.requested_model.as_deref(), Some("gpt-4o-mini"));
            assert_eq!(
                o.budget.fallbacks,
                vec![
                    ("gpt-4o-mini".to_string(), "429"),
                    ("gpt-4.1-mini".to_string(), "timeout")
                ]
            );
            let gpt4o = c.prices.lookup("gpt-4o").unwrap().1.price;
            assert_eq!(o.cost_pico, Some(gpt4o.cost(&o.usage)));
            let mut card = Cardinality::new(10, 10);
            let counters = o.counters(&mut card);
            let fallbacks: Vec<_> = counters
                .iter()
                .filter(|(k, _, _)| *k == Counter::Fallbacks)
                .map(|(_, t, _)| (t.model.clone().unwrap(), t.reason.unwrap()))
                .collect();
            assert_eq!(
                fallbacks,
                [
                    ("gpt-4o-mini".to_string(), "429"),
                    ("gpt-4.1-mini".to_string(), "timeout")
                ]
            );
            // Stale call answers are ignored.
            assert_eq!(
                x.on_call_response(&c, Some(200), &[], b""),
                CallVerdict::Ignore
            );
        }

        #[test]
        fn failures_outside_fallback_on_and_client_errors_go_to_the_client() {
            let c = cfg();
            for status in [400, 500, 503] {
                let mut x = Exchange::new();
                send(&mut x, &c, MINI);
                let v = x.on_response_headers(&c, status, &h(&JSON), false);
                assert!(v.call.is_none(), "{status} is not in fallbackOn");
                assert!(!v.hold);
            }
            // A chain that runs out of targets on timeouts answers 504 in the provider's shape.
            let mut x = Exchange::new();
            send(&mut x, &c, MINI);
            assert!(
                x.on_response_headers(&c, 504, &h(&JSON), false)
                    .call
                    .is_some()
            );
            assert!(matches!(
                x.on_call_response(&c, None, &[], b""),
                CallVerdict::Call(_)
            ));
            let CallVerdict::Reply(r) = x.on_call_response(&c, None, &[], b"") else {
                panic!()
            };
            assert_eq!(r.status, 504);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"]["code"], "upstream_timeout");
            let o = x.take_outcome().unwrap();
            assert_eq!(o.budget.fallbacks.len(), 3);
            assert_eq!(o.result(), "upstream_error");
        }

        #[test]
        fn a_cheap_answer_that_passes_the_checks_stands() {
            let c = cfg();
            let mut x = Exchange::new();
            let sent = send(
                &mut x,
                &c,
                r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#,
            );
            assert!(String::from_utf8(sent).unwrap().contains("gpt-4o-mini"));
            let v = x.on_response_headers(&c, 200, &h(&JSON), false);
            assert!(v.hold, "a cascade holds the cheap answer");
            let body = answer("gpt-4o-mini", "Hello! How can I help?", "stop");
            let ResponseBodyVerdict::Continue { set_headers } = x.on_response_body(&body, true)
            else {
                panic!()
            };
            assert_eq!(get(&set_headers, "x-tollgate-completion-tokens"), Some("5"));
            let o = x.take_outcome().unwrap();
            assert_eq!(o.model, "gpt-4o-mini");
            assert!(o.budget.escalated.is_none());
        }

        #[test]
        fn failed_checks_escalate_and_both_answers_are_paid_for() {
            let c = cfg();
            let mini = c.prices.lookup("gpt-4o-mini").unwrap().1.price;
            let gpt4o = c.prices.lookup("gpt-4o").unwrap().1.price;
            let cases = [
                (
                    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#,
                    answer(
                        "gpt-4o-mini",
                        "I'm sorry, but I can't help with that.",
                        "stop",
                    ),
                    "refusal",
                ),
                (
                    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#,
                    answer("gpt-4o-mini", "A long answer that was cut", "length"),
                    "truncated",
                ),
                (
                    r#"{"model":"gpt-4o","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"Hi"}]}"#,
                    answer("gpt-4o-mini", "{\"a\": 1,", "stop"),
                    "invalid_json",
                ),
            ];
            for (req, cheap, why) in cases {
                let mut x = Exchange::new();
                send(&mut x, &c, req);
                assert!(x.on_response_headers(&c, 200, &h(&JSON), false).hold);
                let ResponseBodyVerdict::Call(call) = x.on_response_body(&cheap, true) else {
                    panic!("{why}: not escalated")
                };
                assert_eq!(model_of(&call), "gpt-4o");
                let strong = answer("gpt-4o", "A fine answer.", "stop");
                let CallVerdict::Reply(r) = x.on_call_response(&c, Some(200), &h(&JSON), &strong)
                else {
                    panic!()
                };
                assert_eq!(r.body, strong);
                assert_eq!(
                    get(&r.headers, "x-tollgate-cascade"),
                    Some(format!("escalated; check={why}").as_str())
                );
                let o = x.take_outcome().unwrap();
                assert_eq!(o.model, "gpt-4o");
                assert_eq!(o.usage.input_tokens, 20, "{why}");
                assert_eq!(o.usage.output_tokens, 10);
                let one = Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    ..Usage::default()
                };
                assert_eq!(o.cost_pico, Some(mini.cost(&one) + gpt4o.cost(&one)));
                assert_eq!(o.budget.escalated, Some(("gpt-4o-mini".to_string(), why)));
            }
        }

        #[test]
        fn when_the_strong_call_fails_the_cheap_answer_is_served() {
            let c = cfg();
            let mut x = Exchange::new();
            send(
                &mut x,
                &c,
                r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#,
            );
            x.on_response_headers(&c, 200, &h(&JSON), false);
            let cheap = answer(
                "gpt-4o-mini",
                "I'm sorry, but I can't help with that.",
                "stop",
            );
            assert!(matches!(
                x.on_response_body(&cheap, true),
                ResponseBodyVerdict::Call(_)
            ));
            let CallVerdict::Reply(r) = x.on_call_response(&c, Some(503), &h(&JSON), b"{}") else {
                panic!()
            };
            assert_eq!(r.status, 200);
            assert_eq!(r.body, cheap);
            assert_eq!(get(&r.headers, "x-tollgate-model"), Some("gpt-4o-mini"));
            let o = x.take_outcome().unwrap();
            assert_eq!(o.model, "gpt-4o-mini");
            assert_eq!(o.usage.output_tokens, 5);
        }

        #[test]
        fn streams_are_not_cascaded() {
            let c = cfg();
            let mut x = Exchange::new();
            send(
                &mut x,
                &c,
                r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
            );
            let v =
                x.on_response_headers(&c, 200, &h(&[("content-type", "text/event-stream")]), false);
            assert!(!v.hold);
            assert_eq!(
                x.on_response_body(b"data: [DONE]\n\n", true),
                ResponseBodyVerdict::Continue {
                    set_headers: vec![]
                }
            );
        }

        #[test]
        fn a_client_gone_mid_retry_still_settles() {
            let c = cfg();
            let mut x = Exchange::new();
            send(&mut x, &c, MINI);
            assert!(
                x.on_response_headers(&c, 429, &h(&JSON), false)
                    .call
                    .is_some()
            );
            x.on_end();
            let o = x.take_outcome().unwrap();
            assert_eq!(o.status, 0);
            assert_eq!(o.budget.fallbacks.len(), 1);
        }
    }

    mod learned_routing {
        use super::*;
        use tollgate_wire::admit::{AdmitResponse, CacheDecision};

        fn cfg() -> Config {
            Config::from_json(
                br#"{"stopOnHeaders": true, "cache": {"cluster": "svc"},
                     "routing": {"complexitySource": "service", "rules": [
                       {"name": "easy-to-mini", "match": {"models": ["gpt-4o"], "complexityBelow": 0.4},
                        "model": "gpt-4o-mini", "cluster": "cheap"}]}}"#,
            )
            .unwrap()
        }

        const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"What is the capital of France?"}]}"#;

        fn admit(x: &mut Exchange, c: &Config) -> AdmitRequest {
            let mut cache = CountCache::new(4, 1);
            x.on_request_headers(c, "POST", "/v1/chat/completions", &h(&[]), false);
            match x.on_request_body(c, &mut cache, BODY.len(), true, || {
                Some(BODY.as_bytes().to_vec())
            }) {
                BodyVerdict::Admit { body, call } => {
                    let sent = body.unwrap_or_else(|| BODY.as_bytes().to_vec());
                    let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
                    assert_eq!(v["model"], "gpt-4o", "not routed before the score is known");
                    serde_json::from_slice(&call).unwrap()
                }
                other => panic!("{other:?}"),
            }
        }

        fn answer(score: Option<f32>) -> Vec<u8> {
            serde_json::to_vec(&AdmitResponse {
                cache: CacheDecision::default(),
                budget: None,
                prefix_hot: false,
                complexity: score,
            })
            .unwrap()
        }

        #[test]
        fn the_learned_score_decides_the_route() {
            let c = cfg();
            // Low score: routed down once the service answered.
            let mut x = Exchange::new();
            let a = admit(&mut x, &c);
            assert!(a.complexity);
            assert!(x.take_upstream_headers().is_empty());
            let AdmitVerdict::Rewrite { body } =
                x.on_admit_response(&c, Some(200), &answer(Some(0.1)), 0)
            else {
                panic!()
            };
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["model"], "gpt-4o-mini");
            assert_eq!(
                x.take_upstream_headers(),
                vec![("x-tollgate-route".to_string(), "cheap".to_string())]
            );
            let rh =
                x.on_response_headers(&c, 200, &h(&[("content-type", "application/json")]), true);
            assert_eq!(get(&rh.add, "x-tollgate-model"), Some("gpt-4o-mini"));
            assert_eq!(get(&rh.add, "x-tollgate-route-rule"), Some("easy-to-mini"));
            let o = x.take_outcome().unwrap();
            assert_eq!(o.budget.requested_model.as_deref(), Some("gpt-4o"));
            assert!(o.store.is_none());
            // High score: stays.
            let mut x = Exchange::new();
            admit(&mut x, &c);
            assert_eq!(
                x.on_admit_response(&c, Some(200), &answer(Some(0.9)), 0),
                AdmitVerdict::Continue
            );
            assert!(x.take_upstream_headers().is_empty());
        }

        #[test]
        fn without_a_learned_score_the_heuristic_decides() {
            let c = cfg();
            // "What is the capital of France?" scores low on the heuristic.
            for (status, body) in [(Some(200), answer(None)), (None, Vec::new())] {
                let mut x = Exchange::new();
                admit(&mut x, &c);
                let v = x.on_admit_response(&c, status, &body, 0);
                let AdmitVerdict::Rewrite { body } = v else {
                    panic!("{status:?}: {v:?}")
                };
                assert!(String::from_utf8(body).unwrap().contains("gpt-4o-mini"));
            }
        }
    }
}
