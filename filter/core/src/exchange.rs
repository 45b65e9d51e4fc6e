//! One request/response exchange as a state machine with one transition per host callback.
//!
//! The glue calls the `on_*` methods from the matching proxy-wasm callbacks and turns the returned
//! verdicts into host actions; all decisions live here and are unit-tested natively.

use tollgate_wire::{Api, Usage, UsageSource};

use crate::config::Config;
use crate::count::CountCache;
use crate::error::{ErrorKind, LocalReply, Rejection};
use crate::governance::{MaxTokensDecision, govern};
use crate::json;
use crate::metrics::{Cardinality, Counter, Tags};
use crate::pricing::{Price, format_usd};
use crate::request::{ParsedRequest, parse};
use crate::tenant::{Identity, identify};
use crate::usage::{Framing, UsageParser};

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
    /// Answer locally.
    Reply(LocalReply),
}

/// What to do after response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHeadersVerdict {
    /// Hold the headers until the body has been metered (needs `stopOnHeaders`).
    pub hold: bool,
    /// Headers to add now.
    pub add: Vec<(String, String)>,
}

/// What to do after a response body callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBodyVerdict {
    /// Keep buffering (held response, not finished).
    Hold,
    /// Pass on; when the response was held, set these headers first.
    Continue { set_headers: Vec<(String, String)> },
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
    },
    Upstream(Box<Flight>),
    Responding(Box<Responding>),
    Done,
}

/// One exchange.
#[derive(Debug, Default)]
pub struct Exchange {
    state: State,
    outcome: Option<Outcome>,
    /// Why the request was passed through unmetered, for the pass-through counter.
    pub passthrough_reason: Option<&'static str>,
}

impl Exchange {
    pub fn new() -> Self {
        Exchange::default()
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
        self.state = State::ReadingBody { api, identity };
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
        let State::ReadingBody { api, identity } = std::mem::take(&mut self.state) else {
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
        let price = cfg.prices.lookup(&req.model).map(|(_, info)| info.price);
        self.state = State::Upstream(Box::new(Flight {
            identity,
            req,
            decision,
            price,
        }));
        BodyVerdict::Continue { body: new_body }
    }

    fn tenant(&self) -> Option<String> {
        match &self.state {
            State::ReadingBody { identity, .. } => Some(identity.tenant.clone()),
            State::Upstream(f) => Some(f.identity.tenant.clone()),
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
        let flight = *flight;
        let framing = header(headers, "content-type").and_then(Framing::from_content_type);
        let length = header(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let ok = (200..300).contains(&status);
        let parser = match framing {
            Some(f) if ok => Some(UsageParser::new(
                flight.req.api,
                f,
                flight.req.tokenizer.encoding(),
                cfg.max_response_buffer_bytes as usize,
            )),
            _ => None,
        };
        let hold = cfg.stop_on_headers
            && !end_of_stream
            && framing == Some(Framing::Json)
            && ok
            && length.is_none_or(|l| l <= cfg.max_response_buffer_bytes);
        let mut add = vec![("x-tollgate-model".to_string(), flight.req.model.clone())];
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
        ResponseHeadersVerdict { hold, add }
    }

    /// A response body callback: `chunk` is the new data (or, for a held response at end of
    /// stream, the whole buffered body).
    pub fn on_response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> ResponseBodyVerdict {
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
        let outcome = settle(*r, None);
        let set_headers = if hold {
            usage_headers(&outcome)
        } else {
            Vec::new()
        };
        self.outcome = Some(outcome);
        ResponseBodyVerdict::Continue { set_headers }
    }

    /// Whether the current response is being held (the glue must read the whole buffered body
    /// at end of stream rather than the last chunk).
    pub fn is_holding(&self) -> bool {
        matches!(&self.state, State::Responding(r) if r.hold)
    }

    /// The stream ended (`on_log`/`on_done`): finish whatever is in flight, e.g. a client that
    /// disconnected mid-stream or an upstream reset. No-op if already finished.
    pub fn on_end(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Upstream(f) => {
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

/// Final usage and cost of a response.
fn settle(r: Responding, _unused: Option<()>) -> Outcome {
    let Responding {
        flight,
        status,
        parser,
        ..
    } = r;
    let req = &flight.req;
    let meter = parser.map(UsageParser::finish);
    let ok = (200..300).contains(&status);
    let (usage, source, complete) = match &meter {
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
    };
    let cost_pico = flight.price.map(|p| p.cost(&usage));
    Outcome {
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
    }
}
