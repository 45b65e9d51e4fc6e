//! Model routing: ordered rules that send a request to a cheaper (or other) model and cluster,
//! with fallback chains and cheap-first cascades.
//!
//! Config (`routing` in the filter config; camelCase, unknown fields refused):
//!
//! ```json
//! {"routeHeader": "x-tollgate-route", "expectedOutputTokens": 256,
//!  "rules": [
//!   {"name": "small-gpt4o-to-mini",
//!    "match": {"models": ["gpt-4o"], "maxPromptTokens": 300, "complexityBelow": 0.3},
//!    "model": "gpt-4o-mini", "cluster": "openai",
//!    "fallbacks": [{"model": "claude-haiku-4-5", "cluster": "anthropic"}],
//!    "fallbackOn": ["429", "5xx", "timeout"]},
//!   {"name": "cheap-first",
//!    "match": {"routePrefix": "/v1/chat", "tenants": ["acme"], "hasImages": false},
//!    "model": "gpt-4o-mini",
//!    "cascade": {"strong": {"model": "gpt-4o"}, "checks": ["empty", "refusal", "truncated"]}}]}
//! ```
//!
//! The first rule whose every condition holds wins; a rule with no conditions matches all.
//! [`decide`] is pure: the exchange applies the decision (rewrite `model`, set the route header),
//! walks the fallback chain with [`next_fallback`] and runs cascade checks with [`check_answer`].

use serde::Deserialize;
use serde_json::Value;
use tollgate_wire::Usage;

use crate::config::Pattern;
use crate::pricing::PriceTable;

/// Default header that carries the chosen cluster to Envoy's router.
pub const DEFAULT_ROUTE_HEADER: &str = "x-tollgate-route";
/// Default output-token guess for savings estimates when the request sets no bound.
pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u64 = 256;
/// Longest fallback chain accepted.
pub const MAX_FALLBACKS: usize = 8;
/// Default time allowed for one fallback or cascade attempt (a whole non-streamed answer, or a
/// whole stream that is relayed once complete).
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 60_000;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRouting {
    #[serde(default)]
    pub route_header: Option<String>,
    #[serde(default)]
    pub expected_output_tokens: Option<u64>,
    /// Time allowed for each fallback or cascade attempt, in ms.
    #[serde(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// Where the complexity score of `complexityBelow`/`complexityAbove` comes from: `heuristic`
    /// (the filter's own, default) or `service` (the cache service's learned classifier, asked
    /// on admit; needs `cache`; the heuristic stands in when the service gives no score).
    #[serde(default)]
    pub complexity_source: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub route_prefix: Option<String>,
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// Requested model names, exact or `prefix*`.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub min_prompt_tokens: Option<u64>,
    #[serde(default)]
    pub max_prompt_tokens: Option<u64>,
    #[serde(default)]
    pub has_tools: Option<bool>,
    #[serde(default)]
    pub has_images: Option<bool>,
    /// Matches when the complexity score is strictly below this.
    #[serde(default)]
    pub complexity_below: Option<f64>,
    /// Matches when the complexity score is at or above this.
    #[serde(default)]
    pub complexity_above: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTarget {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCascade {
    pub strong: RawTarget,
    /// `empty`, `refusal`, `invalidJson`, `truncated`; all four when absent.
    #[serde(default)]
    pub checks: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    #[serde(default, rename = "match")]
    pub when: RawMatch,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub fallbacks: Vec<RawTarget>,
    /// `429`, `5xx`, `timeout` (all three when absent).
    #[serde(default)]
    pub fallback_on: Option<Vec<String>>,
    #[serde(default)]
    pub cascade: Option<RawCascade>,
}

/// Conditions of one rule; `None` means "any".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Match {
    pub route_prefix: Option<String>,
    pub tenants: Option<Vec<String>>,
    pub models: Option<Vec<Pattern>>,
    pub min_prompt_tokens: Option<u64>,
    pub max_prompt_tokens: Option<u64>,
    pub has_tools: Option<bool>,
    pub has_images: Option<bool>,
    pub complexity_below: Option<f32>,
    pub complexity_above: Option<f32>,
}

/// Where a request goes: a model (rewritten into the body) and/or a cluster (route header).
/// A missing model keeps the requested one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub model: Option<String>,
    pub cluster: Option<String>,
}

/// Which upstream failures move on to the next fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryOn {
    pub too_many_requests: bool,
    pub server_error: bool,
    pub timeout: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            too_many_requests: true,
            server_error: true,
            timeout: true,
        }
    }
}

/// Targets tried in order after the primary fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FallbackChain {
    pub targets: Vec<Target>,
    pub on: RetryOn,
}

/// Cheap-first answer checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    pub empty: bool,
    pub refusal: bool,
    pub invalid_json: bool,
    pub truncated: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            empty: true,
            refusal: true,
            invalid_json: true,
            truncated: true,
        }
    }
}

/// Cascade: the decision's model answers first; on a failed check, `strong` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cascade {
    pub strong: Target,
    pub checks: Checks,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub when: Match,
    pub target: Target,
    pub fallbacks: FallbackChain,
    pub cascade: Option<Cascade>,
}

/// The validated routing policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingPolicy {
    pub route_header: String,
    pub expected_output_tokens: u64,
    /// Time allowed for each fallback or cascade attempt, in ms.
    pub attempt_timeout_ms: u64,
    /// Complexity from the cache service's learned classifier (routing then happens once the
    /// admit call answered).
    pub learned_complexity: bool,
    pub rules: Vec<Rule>,
}

impl Default for RoutingPolicy {
    fn default() -> Self {
        RoutingPolicy {
            route_header: DEFAULT_ROUTE_HEADER.to_string(),
            expected_output_tokens: DEFAULT_EXPECTED_OUTPUT_TOKENS,
            attempt_timeout_ms: DEFAULT_ATTEMPT_TIMEOUT_MS,
            learned_complexity: false,
            rules: Vec::new(),
        }
    }
}

fn valid_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Cluster names travel in a header and name an Envoy cluster: keep them plain.
fn valid_cluster(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

fn valid_model(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)
}

fn compile_target(raw: &RawTarget, what: &str) -> Result<Target, String> {
    if let Some(m) = &raw.model
        && !valid_model(m)
    {
        return Err(format!("{what}: invalid model {m:?}"));
    }
    if let Some(c) = &raw.cluster
        && !valid_cluster(c)
    {
        return Err(format!(
            "{what}: invalid cluster {c:?} (letters, digits, - _ . : /)"
        ));
    }
    if raw.model.is_none() && raw.cluster.is_none() {
        return Err(format!("{what}: needs a model or a cluster"));
    }
    Ok(Target {
        model: raw.model.clone(),
        cluster: raw.cluster.clone(),
    })
}

fn complexity_bound(v: Option<f64>, what: &str) -> Result<Option<f32>, String> {
    match v {
        Some(x) if !(0.0..=1.0).contains(&x) => Err(format!("{what} must be in [0, 1], got {x}")),
        Some(x) => Ok(Some(x as f32)),
        None => Ok(None),
    }
}

fn compile_match(raw: &RawMatch) -> Result<Match, String> {
    if let Some(p) = &raw.route_prefix
        && !p.starts_with('/')
    {
        return Err(format!("routePrefix {p:?} must start with /"));
    }
    if let Some(t) = &raw.tenants
        && (t.is_empty() || t.iter().any(String::is_empty))
    {
        return Err("tenants must be a non-empty list of non-empty ids".into());
    }
    let models = match &raw.models {
        Some(v) if v.is_empty() => return Err("models must not be empty".into()),
        Some(v) => Some(
            v.iter()
                .map(|s| Pattern::parse(s))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    if let (Some(lo), Some(hi)) = (raw.min_prompt_tokens, raw.max_prompt_tokens)
        && lo > hi
    {
        return Err(format!(
            "minPromptTokens {lo} is above maxPromptTokens {hi}"
        ));
    }
    let below = complexity_bound(raw.complexity_below, "complexityBelow")?;
    let above = complexity_bound(raw.complexity_above, "complexityAbove")?;
    if let (Some(b), Some(a)) = (below, above)
        && a >= b
    {
        return Err(format!(
            "complexityAbove {a} must be below complexityBelow {b} (nothing would match)"
        ));
    }
    Ok(Match {
        route_prefix: raw.route_prefix.clone(),
        tenants: raw.tenants.clone(),
        models,
        min_prompt_tokens: raw.min_prompt_tokens,
        max_prompt_tokens: raw.max_prompt_tokens,
        has_tools: raw.has_tools,
        has_images: raw.has_images,
        complexity_below: below,
        complexity_above: above,
    })
}

fn compile_rule(raw: &RawRule) -> Result<Rule, String> {
    let name = &raw.name;
    let err = |e: String| format!("routing rule {name:?}: {e}");
    if name.trim().is_empty() {
        return Err("routing rule: name must not be empty".into());
    }
    let when = compile_match(&raw.when).map_err(err)?;
    let target = if raw.model.is_some() || raw.cluster.is_some() {
        compile_target(
            &RawTarget {
                model: raw.model.clone(),
                cluster: raw.cluster.clone(),
            },
            "target",
        )
        .map_err(err)?
    } else {
        Target::default()
    };
    if raw.fallbacks.len() > MAX_FALLBACKS {
        return Err(err(format!("at most {MAX_FALLBACKS} fallbacks")));
    }
    let targets = raw
        .fallbacks
        .iter()
        .enumerate()
        .map(|(i, t)| compile_target(t, &format!("fallbacks[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let on = match &raw.fallback_on {
        None => RetryOn::default(),
        Some(list) => {
            if targets.is_empty() {
                return Err(err("fallbackOn without fallbacks".into()));
            }
            let mut on = RetryOn {
                too_many_requests: false,
                server_error: false,
                timeout: false,
            };
            for s in list {
                match s.as_str() {
                    "429" => on.too_many_requests = true,
                    "5xx" => on.server_error = true,
                    "timeout" => on.timeout = true,
                    other => {
                        return Err(err(format!(
                            "fallbackOn: unknown condition {other:?} (429, 5xx, timeout)"
                        )));
                    }
                }
            }
            if list.is_empty() {
                return Err(err("fallbackOn must not be empty".into()));
            }
            on
        }
    };
    let cascade = match &raw.cascade {
        None => None,
        Some(c) => {
            let strong = compile_target(&c.strong, "cascade.strong").map_err(err)?;
            let checks = match &c.checks {
                None => Checks::default(),
                Some(list) if list.is_empty() => {
                    return Err(err("cascade.checks must not be empty".into()));
                }
                Some(list) => {
                    let mut k = Checks {
                        empty: false,
                        refusal: false,
                        invalid_json: false,
                        truncated: false,
                    };
                    for s in list {
                        match s.as_str() {
                            "empty" => k.empty = true,
                            "refusal" => k.refusal = true,
                            "invalidJson" => k.invalid_json = true,
                            "truncated" => k.truncated = true,
                            other => {
                                return Err(err(format!(
                                    "cascade.checks: unknown check {other:?} (empty, refusal, invalidJson, truncated)"
                                )));
                            }
                        }
                    }
                    k
                }
            };
            Some(Cascade { strong, checks })
        }
    };
    if target == Target::default() && targets.is_empty() && cascade.is_none() {
        return Err(err(
            "needs an action: model/cluster, fallbacks or cascade".into()
        ));
    }
    Ok(Rule {
        name: name.clone(),
        when,
        target,
        fallbacks: FallbackChain { targets, on },
        cascade,
    })
}

impl TryFrom<RawRouting> for RoutingPolicy {
    type Error = String;

    fn try_from(raw: RawRouting) -> Result<Self, String> {
        let route_header = raw
            .route_header
            .unwrap_or_else(|| DEFAULT_ROUTE_HEADER.to_string());
        if !valid_header_name(&route_header) {
            return Err(format!(
                "routing.routeHeader {route_header:?}: lower-case letters, digits, - and _ only"
            ));
        }
        let expected_output_tokens = raw
            .expected_output_tokens
            .unwrap_or(DEFAULT_EXPECTED_OUTPUT_TOKENS);
        if expected_output_tokens == 0 {
            return Err("routing.expectedOutputTokens must be at least 1".into());
        }
        let attempt_timeout_ms = raw.attempt_timeout_ms.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT_MS);
        if !(100..=3_600_000).contains(&attempt_timeout_ms) {
            return Err(format!(
                "routing.attemptTimeoutMs must be between 100 and 3600000, got {attempt_timeout_ms}"
            ));
        }
        let learned_complexity = match raw.complexity_source.as_deref() {
            None | Some("heuristic") => false,
            Some("service") => true,
            Some(other) => {
                return Err(format!(
                    "routing.complexitySource: unknown source {other:?} (heuristic, service)"
                ));
            }
        };
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rules.len());
        for r in &raw.rules {
            if rules.iter().any(|x| x.name == r.name) {
                return Err(format!("routing rule {:?} is defined twice", r.name));
            }
            rules.push(compile_rule(r)?);
        }
        Ok(RoutingPolicy {
            route_header,
            expected_output_tokens,
            attempt_timeout_ms,
            learned_complexity,
            rules,
        })
    }
}

impl RoutingPolicy {
    /// Parses and validates a `routing` JSON object.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawRouting = serde_json::from_slice(bytes).map_err(|e| format!("routing: {e}"))?;
        Self::try_from(raw)
    }

    /// Whether any rule has a fallback chain or a cascade (the filter then keeps what it needs
    /// to send the request again).
    pub fn has_retries(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !r.fallbacks.targets.is_empty() || r.cascade.is_some())
    }

    /// Whether routing waits for the cache service's learned complexity score.
    pub fn defers_to_service(&self) -> bool {
        self.learned_complexity && self.needs_complexity()
    }

    /// Whether any rule looks at the complexity score (else the caller may skip computing it).
    pub fn needs_complexity(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.when.complexity_below.is_some() || r.when.complexity_above.is_some())
    }
}

/// What routing looks at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteInput<'a> {
    /// Request path (`:path` without the query is fine either way: prefix match).
    pub path: &'a str,
    pub tenant: &'a str,
    /// The model the client asked for.
    pub model: &'a str,
    pub prompt_tokens: u64,
    pub has_tools: bool,
    pub has_images: bool,
    /// Complexity score in `[0, 1]` (see [`crate::complexity`]).
    pub complexity: f32,
}

impl Match {
    pub fn matches(&self, i: &RouteInput<'_>) -> bool {
        self.route_prefix
            .as_deref()
            .is_none_or(|p| i.path.starts_with(p))
            && self
                .tenants
                .as_ref()
                .is_none_or(|t| t.iter().any(|t| t == i.tenant))
            && self
                .models
                .as_ref()
                .is_none_or(|m| m.iter().any(|p| p.matches(i.model)))
            && self.min_prompt_tokens.is_none_or(|n| i.prompt_tokens >= n)
            && self.max_prompt_tokens.is_none_or(|n| i.prompt_tokens <= n)
            && self.has_tools.is_none_or(|b| b == i.has_tools)
            && self.has_images.is_none_or(|b| b == i.has_images)
            && self.complexity_below.is_none_or(|c| i.complexity < c)
            && self.complexity_above.is_none_or(|c| i.complexity >= c)
    }
}

/// The routing decision for one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDecision {
    /// The model to send (the requested one when no rule rewrote it).
    pub model: String,
    /// True when `model` differs from the requested model (the body needs a `model` edit).
    pub model_changed: bool,
    /// `(header name, cluster)` to set on the upstream request.
    pub route_header: Option<(String, String)>,
    /// The rule that matched.
    pub rule_name: Option<String>,
    pub fallbacks: FallbackChain,
    pub cascade: Option<Cascade>,
}

/// Applies the first matching rule.
pub fn decide(policy: &RoutingPolicy, input: &RouteInput<'_>) -> RouteDecision {
    let Some(rule) = policy.rules.iter().find(|r| r.when.matches(input)) else {
        return RouteDecision {
            model: input.model.to_string(),
            ..RouteDecision::default()
        };
    };
    let model = rule
        .target
        .model
        .clone()
        .unwrap_or_else(|| input.model.to_string());
    RouteDecision {
        model_changed: model != input.model,
        model,
        route_header: rule
            .target
            .cluster
            .as_ref()
            .map(|c| (policy.route_header.clone(), c.clone())),
        rule_name: Some(rule.name.clone()),
        fallbacks: rule.fallbacks.clone(),
        cascade: rule.cascade.clone(),
    }
}

/// The JSON value to splice as `model` (a `json::Edit::Set` raw value).
pub fn model_edit(decision: &RouteDecision) -> Option<crate::json::Edit> {
    decision.model_changed.then(|| crate::json::Edit::Set {
        key: "model".into(),
        raw: Value::String(decision.model.clone()).to_string(),
    })
}

/// Estimated cost of the requested and the routed model, in pico-USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Savings {
    pub requested_cost: u64,
    pub routed_cost: u64,
    /// `requested - routed`, 0 when routing made it dearer.
    pub saved: u64,
}

/// Estimates what the decision saves for `prompt_tokens` in and `output_tokens` out. `None` when
/// either model is not in the price table.
pub fn estimate_savings(
    prices: &PriceTable,
    requested_model: &str,
    routed_model: &str,
    prompt_tokens: u64,
    output_tokens: u64,
) -> Option<Savings> {
    let usage = Usage {
        input_tokens: prompt_tokens,
        output_tokens,
        ..Usage::default()
    };
    let (_, req) = prices.lookup(requested_model)?;
    let (_, routed) = prices.lookup(routed_model)?;
    let requested_cost = req.price.cost(&usage);
    let routed_cost = routed.price.cost(&usage);
    Some(Savings {
        requested_cost,
        routed_cost,
        saved: requested_cost.saturating_sub(routed_cost),
    })
}

/// How an upstream attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// A response status (only 429 and 5xx are retryable).
    Status(u16),
    /// No response (or no first byte) in time; connection resets count as timeouts.
    Timeout,
}

/// The target to try after attempt `attempt` failed with `failure` (attempt 0 is the primary,
/// attempt 1 the first fallback, ...). `None`: give the client this failure.
pub fn next_fallback(
    chain: &FallbackChain,
    attempt: usize,
    failure: UpstreamFailure,
) -> Option<&Target> {
    let retry = match failure {
        UpstreamFailure::Status(429) => chain.on.too_many_requests,
        UpstreamFailure::Status(s) => (500..600).contains(&s) && chain.on.server_error,
        UpstreamFailure::Timeout => chain.on.timeout,
    };
    if !retry {
        return None;
    }
    chain.targets.get(attempt)
}

/// Why a cheap answer was not good enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CascadeFailure {
    Empty,
    Refusal,
    InvalidJson,
    Truncated,
}

impl CascadeFailure {
    /// Stable label for metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            CascadeFailure::Empty => "empty",
            CascadeFailure::Refusal => "refusal",
            CascadeFailure::InvalidJson => "invalid_json",
            CascadeFailure::Truncated => "truncated",
        }
    }
}

/// Openings of refusals, matched case-insensitively at the start of the answer (after an
/// optional apology word). Short and conservative: a false positive costs one strong call.
const REFUSALS: [&str; 14] = [
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i can't provide",
    "i cannot provide",
    "i'm not able to help",
    "i am not able to help",
    "i'm unable to",
    "i am unable to",
    "i won't be able to",
    "i can't comply",
    "i cannot comply",
    "as an ai language model, i cannot",
];

fn is_refusal(text: &str) -> bool {
    let head: String = text
        .trim_start()
        .chars()
        .take(120)
        .map(|c| match c {
            '\u{2019}' => '\'',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let mut rest = head.as_str();
    for lead in [
        "i'm sorry, but ",
        "i'm sorry, ",
        "sorry, but ",
        "sorry, ",
        "unfortunately, ",
    ] {
        if let Some(r) = rest.strip_prefix(lead) {
            rest = r;
            break;
        }
    }
    REFUSALS.iter().any(|r| rest.starts_with(r))
}

/// Finish reasons meaning the answer hit the output limit.
fn truncated(finish_reason: Option<&str>) -> bool {
    matches!(
        finish_reason,
        Some("length" | "max_tokens" | "max_output_tokens" | "incomplete")
    )
}

/// Checks a cheap model's answer with every check on. See [`check_answer_with`].
pub fn check_answer(
    text: &str,
    finish_reason: Option<&str>,
    json_requested: bool,
) -> Result<(), CascadeFailure> {
    check_answer_with(&Checks::default(), text, finish_reason, json_requested)
}

/// Checks a cheap model's answer: truncated (finish reason `length`/`max_tokens`), empty
/// (whitespace only), refusal (a known refusal opening), invalid JSON (when the request asked
/// for JSON output). A tool-call answer has empty text: pass `finish_reason` `tool_calls` /
/// `tool_use` and it is accepted.
pub fn check_answer_with(
    checks: &Checks,
    text: &str,
    finish_reason: Option<&str>,
    json_requested: bool,
) -> Result<(), CascadeFailure> {
    if checks.truncated && truncated(finish_reason) {
        return Err(CascadeFailure::Truncated);
    }
    if matches!(
        finish_reason,
        Some("tool_calls" | "tool_use" | "function_call")
    ) {
        return Ok(());
    }
    if checks.empty && text.trim().is_empty() {
        return Err(CascadeFailure::Empty);
    }
    if checks.refusal && is_refusal(text) {
        return Err(CascadeFailure::Refusal);
    }
    if checks.invalid_json
        && json_requested
        && serde_json::from_str::<serde::de::IgnoredAny>(text.trim()).is_err()
    {
        return Err(CascadeFailure::InvalidJson);
    }
    Ok(())
}

/// Whether a request body asks for JSON output (OpenAI `response_format` json_object/json_schema,
/// Responses `text.format`).
pub fn json_requested(body: &Value) -> bool {
    let kind = body
        .get("response_format")
        .or_else(|| body.get("text").and_then(|t| t.get("format")))
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str);
    matches!(kind, Some("json_object" | "json_schema"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::json::Edit;

    fn policy(json: &str) -> RoutingPolicy {
        RoutingPolicy::from_json(json.as_bytes()).unwrap()
    }

    fn input<'a>(model: &'a str, prompt_tokens: u64, complexity: f32) -> RouteInput<'a> {
        RouteInput {
            path: "/v1/chat/completions",
            tenant: "acme",
            model,
            prompt_tokens,
            has_tools: false,
            has_images: false,
            complexity,
        }
    }

    const DOWNGRADE: &str = r#"{"rules":[
        {"name":"small-to-mini","match":{"models":["gpt-4o"],"maxPromptTokens":300,"complexityBelow":0.3},
         "model":"gpt-4o-mini","cluster":"openai",
         "fallbacks":[{"model":"claude-haiku-4-5","cluster":"anthropic"},{"cluster":"vllm"}]},
        {"name":"hard-to-strong","match":{"models":["gpt-4o*"],"complexityAbove":0.7},"model":"o3"}]}"#;

    #[test]
    fn first_matching_rule_rewrites_model_and_route() {
        let p = policy(DOWNGRADE);
        let d = decide(&p, &input("gpt-4o", 120, 0.1));
        assert_eq!(d.model, "gpt-4o-mini");
        assert!(d.model_changed);
        assert_eq!(d.rule_name.as_deref(), Some("small-to-mini"));
        assert_eq!(
            d.route_header,
            Some(("x-tollgate-route".into(), "openai".into()))
        );
        assert_eq!(d.fallbacks.targets.len(), 2);
        assert_eq!(
            model_edit(&d),
            Some(Edit::Set {
                key: "model".into(),
                raw: "\"gpt-4o-mini\"".into()
            })
        );
        // Too long, too complex, other model: no downgrade.
        for i in [
            input("gpt-4o", 301, 0.1),
            input("gpt-4o", 100, 0.3),
            input("gpt-4.1", 100, 0.1),
        ] {
            let d = decide(&p, &i);
            assert!(!d.model_changed, "{i:?}");
            assert_eq!(d.model, i.model);
            assert!(model_edit(&d).is_none());
        }
        // Prefix model pattern and complexityAbove.
        let d = decide(&p, &input("gpt-4o-2024-08-06", 5000, 0.9));
        assert_eq!(
            (d.model.as_str(), d.rule_name.as_deref()),
            ("o3", Some("hard-to-strong"))
        );
        assert!(d.route_header.is_none());
    }

    #[test]
    fn every_condition_is_checked() {
        let p = policy(
            r#"{"routeHeader":"x-cluster","rules":[{"name":"r","match":{"routePrefix":"/v1/messages",
            "tenants":["a","b"],"minPromptTokens":10,"maxPromptTokens":20,"hasTools":true,"hasImages":false},
            "cluster":"anthropic-eu"}]}"#,
        );
        assert!(!p.needs_complexity());
        let ok = RouteInput {
            path: "/v1/messages?beta=true",
            tenant: "b",
            model: "claude-sonnet-4-5",
            prompt_tokens: 15,
            has_tools: true,
            has_images: false,
            complexity: 0.5,
        };
        let d = decide(&p, &ok);
        assert_eq!(
            d.route_header,
            Some(("x-cluster".into(), "anthropic-eu".into()))
        );
        assert!(!d.model_changed);
        assert_eq!(d.model, "claude-sonnet-4-5");
        let misses = [
            RouteInput {
                path: "/v1/chat/completions",
                ..ok
            },
            RouteInput { tenant: "c", ..ok },
            RouteInput {
                prompt_tokens: 9,
                ..ok
            },
            RouteInput {
                prompt_tokens: 21,
                ..ok
            },
            RouteInput {
                has_tools: false,
                ..ok
            },
            RouteInput {
                has_images: true,
                ..ok
            },
        ];
        for m in misses {
            assert!(decide(&p, &m).rule_name.is_none(), "{m:?}");
        }
    }

    #[test]
    fn invalid_configs_are_refused_with_reasons() {
        let cases = [
            (
                r#"{"rules":[{"name":"r","model":"m","bogus":1}]}"#,
                "unknown field",
            ),
            (r#"{"rules":[{"name":"r"}]}"#, "needs an action"),
            (
                r#"{"rules":[{"name":"","model":"m"}]}"#,
                "name must not be empty",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m"},{"name":"r","model":"n"}]}"#,
                "defined twice",
            ),
            (r#"{"rules":[{"name":"r","model":" "}]}"#, "invalid model"),
            (
                r#"{"rules":[{"name":"r","cluster":"a b"}]}"#,
                "invalid cluster",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m","match":{"complexityBelow":1.5}}]}"#,
                "[0, 1]",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m","match":{"complexityBelow":0.2,"complexityAbove":0.5}}]}"#,
                "nothing would match",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m","match":{"minPromptTokens":5,"maxPromptTokens":4}}]}"#,
                "above maxPromptTokens",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m","match":{"models":["g*p*"]}}]}"#,
                "trailing *",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m","match":{"models":[]}}]}"#,
                "must not be empty",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m","match":{"routePrefix":"v1"}}]}"#,
                "start with /",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m","match":{"tenants":[]}}]}"#,
                "tenants",
            ),
            (
                r#"{"rules":[{"name":"r","model":"m","fallbackOn":["429"]}]}"#,
                "without fallbacks",
            ),
            (
                r#"{"rules":[{"name":"r","fallbacks":[{"model":"x"}],"fallbackOn":["404"]}]}"#,
                "unknown condition",
            ),
            (
                r#"{"rules":[{"name":"r","fallbacks":[{}]}]}"#,
                "needs a model or a cluster",
            ),
            (
                r#"{"rules":[{"name":"r","cascade":{"strong":{"model":"x"},"checks":["vibes"]}}]}"#,
                "unknown check",
            ),
            (
                r#"{"rules":[{"name":"r","cascade":{"strong":{"model":"x"},"checks":[]}}]}"#,
                "must not be empty",
            ),
            (r#"{"routeHeader":"X-Route","rules":[]}"#, "routeHeader"),
            (r#"{"expectedOutputTokens":0}"#, "at least 1"),
        ];
        for (json, want) in cases {
            let err = RoutingPolicy::from_json(json.as_bytes()).unwrap_err();
            assert!(
                err.contains(want),
                "{json}: {err:?} should mention {want:?}"
            );
        }
        let p = policy("{}");
        assert_eq!(p, RoutingPolicy::default());
    }

    #[test]
    fn fallback_chain_walks_targets_on_retryable_failures_only() {
        let p = policy(DOWNGRADE);
        let d = decide(&p, &input("gpt-4o", 10, 0.0));
        let c = &d.fallbacks;
        let first = next_fallback(c, 0, UpstreamFailure::Status(429)).unwrap();
        assert_eq!(first.model.as_deref(), Some("claude-haiku-4-5"));
        let second = next_fallback(c, 1, UpstreamFailure::Status(503)).unwrap();
        assert_eq!(
            (second.model.as_deref(), second.cluster.as_deref()),
            (None, Some("vllm"))
        );
        assert!(next_fallback(c, 2, UpstreamFailure::Timeout).is_none());
        assert!(next_fallback(c, 0, UpstreamFailure::Status(400)).is_none());
        assert!(next_fallback(c, 0, UpstreamFailure::Status(404)).is_none());
        assert!(next_fallback(c, usize::MAX, UpstreamFailure::Timeout).is_none());
        let only_429 =
            policy(r#"{"rules":[{"name":"r","fallbacks":[{"model":"b"}],"fallbackOn":["429"]}]}"#);
        let c = &only_429.rules[0].fallbacks;
        assert!(next_fallback(c, 0, UpstreamFailure::Status(429)).is_some());
        assert!(next_fallback(c, 0, UpstreamFailure::Status(500)).is_none());
        assert!(next_fallback(c, 0, UpstreamFailure::Timeout).is_none());
        // No rule: empty chain.
        assert!(next_fallback(&FallbackChain::default(), 0, UpstreamFailure::Timeout).is_none());
    }

    #[test]
    fn cascade_rule_keeps_cheap_model_and_carries_strong_target() {
        let p = policy(
            r#"{"rules":[{"name":"cheap-first","model":"gpt-4o-mini",
            "cascade":{"strong":{"model":"gpt-4o","cluster":"openai"},"checks":["empty","truncated"]}}]}"#,
        );
        let d = decide(&p, &input("gpt-4o", 10, 0.0));
        assert_eq!(d.model, "gpt-4o-mini");
        let c = d.cascade.unwrap();
        assert_eq!(c.strong.model.as_deref(), Some("gpt-4o"));
        assert!(
            c.checks.empty && c.checks.truncated && !c.checks.refusal && !c.checks.invalid_json
        );
        // Refusal is not checked in this cascade.
        assert_eq!(
            check_answer_with(&c.checks, "I can't help with that.", Some("stop"), false),
            Ok(())
        );
    }

    #[test]
    fn answer_checks() {
        use CascadeFailure::*;
        assert_eq!(check_answer("Paris.", Some("stop"), false), Ok(()));
        assert_eq!(check_answer("  \n", Some("stop"), false), Err(Empty));
        assert_eq!(check_answer("", None, false), Err(Empty));
        assert_eq!(check_answer("", Some("tool_calls"), false), Ok(()));
        assert_eq!(
            check_answer("The answer is", Some("length"), false),
            Err(Truncated)
        );
        assert_eq!(check_answer("x", Some("max_tokens"), false), Err(Truncated));
        for r in [
            "I'm sorry, but I can't help with that.",
            "I’m sorry, but I can’t assist with that request.",
            "Sorry, I cannot provide that information.",
            "I am unable to browse the internet.",
            "  As an AI language model, I cannot do that.",
        ] {
            assert_eq!(check_answer(r, Some("stop"), false), Err(Refusal), "{r}");
        }
        // Mentions of inability later in a helpful answer are not refusals.
        assert_eq!(
            check_answer(
                "Here is the code. Note I can't test it.",
                Some("stop"),
                false
            ),
            Ok(())
        );
        assert_eq!(check_answer(r#"{"a":1}"#, Some("stop"), true), Ok(()));
        assert_eq!(check_answer(" [1,2] \n", Some("stop"), true), Ok(()));
        assert_eq!(
            check_answer(r#"{"a":1"#, Some("stop"), true),
            Err(InvalidJson)
        );
        assert_eq!(
            check_answer("```json\n{}\n```", Some("stop"), true),
            Err(InvalidJson)
        );
        assert_eq!(check_answer(r#"{"a":1"#, Some("stop"), false), Ok(()));
        assert_eq!(Refusal.as_str(), "refusal");
    }

    #[test]
    fn json_request_detection() {
        assert!(json_requested(
            &serde_json::json!({"response_format":{"type":"json_object"}})
        ));
        assert!(json_requested(
            &serde_json::json!({"response_format":{"type":"json_schema","json_schema":{}}})
        ));
        assert!(json_requested(
            &serde_json::json!({"text":{"format":{"type":"json_schema"}}})
        ));
        assert!(!json_requested(
            &serde_json::json!({"response_format":{"type":"text"}})
        ));
        assert!(!json_requested(&serde_json::json!({})));
    }

    #[test]
    fn savings_use_the_price_table() {
        let prices = PriceTable::builtin().unwrap();
        let s = estimate_savings(&prices, "gpt-4o", "gpt-4o-mini", 1000, 256).unwrap();
        let (_, big) = prices.lookup("gpt-4o").unwrap();
        let (_, small) = prices.lookup("gpt-4o-mini").unwrap();
        assert_eq!(
            s.requested_cost,
            1000 * big.price.input + 256 * big.price.output
        );
        assert_eq!(
            s.routed_cost,
            1000 * small.price.input + 256 * small.price.output
        );
        assert!(s.saved > 0 && s.saved == s.requested_cost - s.routed_cost);
        // An upgrade saves nothing (never negative); unknown models give no estimate.
        assert_eq!(
            estimate_savings(&prices, "gpt-4o-mini", "gpt-4o", 1000, 256)
                .unwrap()
                .saved,
            0
        );
        assert!(estimate_savings(&prices, "gpt-4o", "no-such-model", 1, 1).is_none());
        // Saturates instead of overflowing.
        let s = estimate_savings(&prices, "gpt-4o", "gpt-4o-mini", u64::MAX, u64::MAX).unwrap();
        assert_eq!(s.requested_cost, u64::MAX);
    }
}
