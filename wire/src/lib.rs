//! Wire types shared by the Tollgate filter (wasm32-wasip1) and the cache service (native).
//!
//! Serde only: this crate must stay dependency-light so that it compiles into the filter's `.wasm`
//! without cost. Anything that is logic rather than shape belongs in `tollgate-core` or the service.

use serde::{Deserialize, Serialize};

/// Token usage of one request, normalised across providers.
///
/// OpenAI reports `prompt_tokens` *including* cached tokens; Anthropic reports `input_tokens`
/// *excluding* cache reads and cache writes. Here `input_tokens` is always the uncached,
/// non-cache-write part, so `prompt_tokens()` is the total the model read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens billed at the normal input price.
    pub input_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache (billed at the cached-input price).
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (billed at the cache-write price).
    pub cache_write_tokens: u64,
    /// Generated tokens (including reasoning tokens, which providers bill as output).
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on hidden reasoning, when reported.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// All prompt tokens: uncached + cache reads + cache writes.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }
}

/// Where a usage figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// Reported by the provider (authoritative).
    Provider,
    /// Counted by Tollgate with the model's exact BPE (prompt) or over the streamed text (output).
    Counted,
    /// Estimated (e.g. Claude, whose tokenizer is not public; images; tool definitions).
    Estimated,
}

/// The API family a request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    #[serde(rename = "openai_chat")]
    OpenAiChat,
    /// OpenAI legacy `POST /v1/completions`.
    #[serde(rename = "openai_completions")]
    OpenAiCompletions,
    /// OpenAI `POST /v1/responses`.
    #[serde(rename = "openai_responses")]
    OpenAiResponses,
    /// Anthropic `POST /v1/messages`.
    #[serde(rename = "anthropic_messages")]
    AnthropicMessages,
}

impl Api {
    /// Stable short name used in logs, metrics and access-log properties.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAiChat => "openai_chat",
            Api::OpenAiCompletions => "openai_completions",
            Api::OpenAiResponses => "openai_responses",
            Api::AnthropicMessages => "anthropic_messages",
        }
    }

    /// Whether errors for this API use Anthropic's error shape.
    pub fn is_anthropic(self) -> bool {
        matches!(self, Api::AnthropicMessages)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn prompt_tokens_sum_all_prompt_parts() {
        let u = Usage {
            input_tokens: 10,
            cache_read_tokens: 5,
            cache_write_tokens: 2,
            output_tokens: 7,
            reasoning_tokens: 0,
        };
        assert_eq!(u.prompt_tokens(), 17);
    }

    #[test]
    fn complexity_fields_are_optional_both_ways() {
        use crate::admit::{AdmitRequest, AdmitResponse};
        // An older filter's admit and an older service's answer still parse.
        let req: AdmitRequest = serde_json::from_str(
            r#"{"request_id":"r","tenant":"t","api":null,"model":"m","stream":false,"route":"/"}"#,
        )
        .unwrap();
        assert!(!req.complexity && req.complexity_query.is_none());
        let resp: AdmitResponse = serde_json::from_str(r#"{"cache":{"outcome":"miss"}}"#).unwrap();
        assert_eq!(resp.complexity, None);
        // And the new fields round-trip.
        let req = AdmitRequest {
            complexity: true,
            complexity_query: Some("prove it".into()),
            ..AdmitRequest::default()
        };
        let back: AdmitRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        let resp = AdmitResponse {
            complexity: Some(0.75),
            ..AdmitResponse::default()
        };
        let json = serde_json::to_string(&resp).unwrap();
        assert!(json.contains(r#""complexity":0.75"#), "{json}");
    }

    #[test]
    fn api_names_round_trip_through_serde() {
        for api in [
            Api::OpenAiChat,
            Api::OpenAiCompletions,
            Api::OpenAiResponses,
            Api::AnthropicMessages,
        ] {
            let s = serde_json::to_string(&api).unwrap();
            assert_eq!(s, format!("\"{}\"", api.as_str()));
            assert_eq!(serde_json::from_str::<Api>(&s).unwrap(), api);
        }
    }
}

/// Filter -> service wire contract (`POST /v1/admit`, `POST /v1/settle`).
///
/// Admit is called once per metered request, before the provider, with a strict timeout; settle
/// records are batched by each Envoy VM and sent after responses complete. Every field added
/// later must be optional (`#[serde(default)]`) so filters and services of adjacent versions
/// interoperate.
pub mod admit {
    use serde::{Deserialize, Serialize};

    use crate::{Api, Usage, UsageSource};

    /// `POST /v1/admit` body.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct AdmitRequest {
        /// Filter-generated id, echoed in the settle record.
        pub request_id: String,
        pub tenant: String,
        pub api: Option<Api>,
        /// Model after routing.
        pub model: String,
        pub stream: bool,
        /// Request path (for per-route cache rules).
        pub route: String,
        /// Cache lookup; `None` when the filter knows the request cannot use the cache.
        #[serde(default)]
        pub cache: Option<CacheQuery>,
        /// Who the request belongs to (budget scopes, ledger).
        #[serde(default)]
        pub identity: Option<Identity>,
        /// Budget reservation; `None` when the filter does not enforce budgets.
        #[serde(default)]
        pub budget: Option<BudgetQuery>,
        /// The request's stable-prefix key (prefix hints on), so the service can say whether
        /// that prefix is hot (seen recently enough for a provider cache write to pay back).
        #[serde(default)]
        pub prefix_key: Option<String>,
        /// Ask for the cache service's learned complexity score
        /// ([`AdmitResponse::complexity`]). The service scores the final user turn: `cache.query`
        /// when `cache` is present and its query is not empty, else [`Self::complexity_query`].
        #[serde(default)]
        pub complexity: bool,
        /// The final user turn to score when the request carries no cache query (`cache` is
        /// `None`); ignored otherwise, and when `complexity` is false.
        #[serde(default)]
        pub complexity_query: Option<String>,
    }

    /// The scopes a request belongs to. Nested scopes all apply: org ⊃ team ⊃ user, and the API
    /// key. Ids are never secrets: API keys arrive as salted hashes (`key:<16 hex>`).
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Identity {
        pub org: String,
        /// The tenant (team) id.
        pub team: String,
        #[serde(default)]
        pub user: Option<String>,
        /// Hash of the API key, when the request carried one.
        #[serde(default)]
        pub key: Option<String>,
    }

    /// What a request may cost at most, for the reservation made on admit.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BudgetQuery {
        /// Prompt tokens (counted, or estimated for Claude).
        pub input_tokens: u64,
        /// The request's effective output limit (`max_tokens` after governance).
        pub max_output_tokens: u64,
        /// `input_tokens` at the input price + `max_output_tokens` at the output price, pico-USD;
        /// `None` when the model has no price (then only token limits apply to it).
        #[serde(default)]
        pub max_cost_pico: Option<u64>,
    }

    /// The budget verdict of an admit.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum BudgetVerdict {
        #[default]
        Allow,
        /// Allowed on a cheaper model (`downgrade_model`): a soft limit or the spend breaker.
        Downgrade,
        /// Refused before the provider is called (`rejection` says why).
        Reject,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct BudgetDecision {
        pub verdict: BudgetVerdict,
        /// Echo in the settle record to release the reservation and charge the actual cost.
        #[serde(default)]
        pub reservation_id: Option<String>,
        /// Remaining USD budget of the tightest scope after this reservation, pico-USD
        /// (`x-tollgate-budget-remaining-usd`); `None` when no USD budget applies.
        #[serde(default)]
        pub remaining_pico: Option<u64>,
        #[serde(default)]
        pub downgrade_model: Option<String>,
        #[serde(default)]
        pub rejection: Option<BudgetRejection>,
    }

    /// Why a request was refused (rendered as a 429 in the provider's error shape).
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BudgetRejection {
        /// `budget_exceeded` (USD limits, spend breaker) or `rate_limited` (token limits).
        pub code: String,
        /// `team:search`, `org:acme`, …
        pub scope: String,
        /// `minute`, `hour`, `day`, `month`.
        pub period: String,
        /// Human message naming the scope and period.
        pub message: String,
        /// Seconds until the window resets (`retry-after`).
        #[serde(default)]
        pub retry_after_seconds: Option<u64>,
    }

    /// What the cache needs to know about a request. Prompts are only sent here, never logged.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct CacheQuery {
        /// Hex SHA-256 of tenant + normalised request (model, messages, tools, answer-changing
        /// sampling parameters).
        pub exact_key: String,
        /// Hex SHA-256 of tenant + model family + sampling parameters + everything but the final
        /// user turn. Semantic matches are only searched inside one partition.
        pub partition: String,
        /// The final user turn (what the semantic lookup embeds and guards inspect). Empty when
        /// the request does not end with a user turn (then only exact hits are possible).
        pub query: String,
        #[serde(default)]
        pub temperature: Option<f64>,
        #[serde(default)]
        pub has_tools: bool,
        /// `cache-control: no-cache` from the client: do not look up.
        #[serde(default = "yes")]
        pub lookup: bool,
        /// `cache-control: no-store` from the client: do not store.
        #[serde(default = "yes")]
        pub store: bool,
        #[serde(default)]
        pub prompt_tokens: u64,
        #[serde(default)]
        pub max_tokens: Option<u64>,
    }

    fn yes() -> bool {
        true
    }

    /// Result of a cache lookup.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum CacheOutcome {
        HitExact,
        HitSemantic,
        #[default]
        Miss,
        /// Not eligible (rule, client header, tools, temperature...).
        Bypass,
        /// The cache could not be consulted (service down, timeout, garbage).
        Error,
    }

    impl CacheOutcome {
        /// Value of the `x-tollgate-cache` response header (contract).
        pub fn header_value(self) -> &'static str {
            match self {
                CacheOutcome::HitExact => "hit-exact",
                CacheOutcome::HitSemantic => "hit-semantic",
                CacheOutcome::Miss => "miss",
                CacheOutcome::Bypass => "bypass",
                CacheOutcome::Error => "error",
            }
        }

        pub fn is_hit(self) -> bool {
            matches!(self, CacheOutcome::HitExact | CacheOutcome::HitSemantic)
        }
    }

    /// A cached answer in provider-neutral form; the filter renders it as the requested API's
    /// JSON or SSE stream.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CachedCompletion {
        pub entry_id: String,
        /// Model that produced the answer.
        pub model: String,
        pub text: String,
        /// `stop` or `length`.
        pub finish_reason: String,
        /// Usage of the original call (what a hit saves).
        pub usage: Usage,
        /// Cost of the original call in pico-USD, if priced.
        #[serde(default)]
        pub cost_pico: Option<u64>,
        /// Unix seconds.
        pub created_at: u64,
    }

    /// `POST /v1/admit` response.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct AdmitResponse {
        pub cache: CacheDecision,
        /// Present when the admit carried a budget query.
        #[serde(default)]
        pub budget: Option<BudgetDecision>,
        /// The admit's `prefix_key` was seen recently: worth an explicit provider cache write
        /// (Anthropic `cache_control` breakpoints).
        #[serde(default)]
        pub prefix_hot: bool,
        /// The learned complexity score when the admit asked for it: in `[0, 1]`, how likely
        /// the final user turn needs a frontier model rather than a small one (the
        /// distance-weighted share of its nearest labelled examples that are "complex", in the
        /// semantic cache's embedding space; 0.4 is the suggested cut). `None` when not asked,
        /// on an exact cache hit (answered from the cache: nothing to route), or when the
        /// service cannot score (no embedding model, classifier still training or disabled,
        /// embedding failed, nothing to score).
        #[serde(default)]
        pub complexity: Option<f32>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct CacheDecision {
        pub outcome: CacheOutcome,
        /// The answer to serve, on a hit.
        #[serde(default)]
        pub entry: Option<CachedCompletion>,
        /// Cosine similarity of a semantic hit (or shadow candidate).
        #[serde(default)]
        pub similarity: Option<f32>,
        /// The service wants the response stored on settle.
        #[serde(default)]
        pub store: bool,
        /// Why the request bypassed the cache (rule name), for logs and metrics.
        #[serde(default)]
        pub reason: Option<String>,
        /// Shadow mode: the semantic hit that would have been served (not served).
        #[serde(default)]
        pub shadow_entry_id: Option<String>,
        /// Lifetime of the entry if the response is stored (echoed back in the settle record,
        /// since settles may reach another service replica than the admit).
        #[serde(default)]
        pub ttl_seconds: Option<u64>,
    }

    /// `POST /v1/settle` body: records batched by one VM.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct SettleBatch {
        pub records: Vec<SettleRecord>,
    }

    /// One finished request.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct SettleRecord {
        pub request_id: String,
        pub tenant: String,
        pub api: Option<Api>,
        pub model: String,
        pub stream: bool,
        pub status: u16,
        pub usage: Usage,
        pub usage_source: UsageSource,
        #[serde(default)]
        pub cost_pico: Option<u64>,
        pub cache: CacheOutcome,
        /// What a cache hit saved, pico-USD.
        #[serde(default)]
        pub saved_pico: u64,
        /// Unix milliseconds when the response finished.
        pub finished_at_ms: u64,
        /// The response to store (only when admit asked for it and the response was a success).
        #[serde(default)]
        pub store: Option<StoreRequest>,
        #[serde(default)]
        pub identity: Option<Identity>,
        /// The admit's reservation, to release (the actual cost is charged instead).
        #[serde(default)]
        pub reservation_id: Option<String>,
        /// The model the client asked for, when routing or a downgrade changed it (`model` is
        /// the one used).
        #[serde(default)]
        pub requested_model: Option<String>,
        /// Why the model was changed (`downgrade:soft_limit`, `downgrade:breaker`, a route name).
        #[serde(default)]
        pub route: Option<String>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct StoreRequest {
        pub exact_key: String,
        pub partition: String,
        pub query: String,
        pub completion: CachedCompletion,
        /// Shadow mode: the entry that would have been served instead.
        #[serde(default)]
        pub shadow_entry_id: Option<String>,
        #[serde(default)]
        pub ttl_seconds: Option<u64>,
    }
}
