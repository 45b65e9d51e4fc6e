//! Metric names and bounded tag values.
//!
//! Envoy stats carry tags inside the name; the Envoy config extracts them with
//! `stats_tags` regexes (see `envoy/`), e.g. `tollgate_requests_total;tenant=acme;model=gpt-4o`
//! becomes `tollgate_requests_total{tenant="acme",model="gpt-4o"}` in `/stats/prometheus`.
//! Cardinality is bounded: past `maxTenants`/`maxModels` distinct values, new ones are `other`.

use std::collections::HashSet;

/// Counters the filter exports (contract prefix `tollgate_`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Metered LLM requests (tenant, model).
    Requests,
    /// Prompt tokens, all kinds (tenant, model).
    TokensIn,
    /// Completion tokens (tenant, model).
    TokensOut,
    /// Prompt tokens read from the provider's prompt cache (tenant, model).
    TokensCached,
    /// Cost in micro-USD (tenant, model).
    CostMicroUsd,
    /// Requests for models without a price (model).
    Unpriced,
    /// Requests rejected by the filter (reason).
    Rejected,
    /// Request bodies that failed to parse (api).
    ParseErrors,
    /// Requests passed through unmetered (reason).
    PassThrough,
    /// Upstream answered with an error status (tenant, model).
    UpstreamErrors,
    /// `max_tokens` clamped to a cap (tenant, model).
    MaxTokensClamped,
    /// `max_tokens` inserted (tenant, model).
    MaxTokensInserted,
    /// Responses without provider usage, metered by counting (model).
    UsageCounted,
    /// Responses that ended before the provider's end marker (model).
    Incomplete,
    /// Requests by cache result: `cache` = hit-exact, hit-semantic, miss, bypass, error
    /// (tenant, model, cache).
    CacheRequests,
    /// USD saved by cache hits, in micro-USD (tenant, model).
    SavedMicroUsd,
    /// Settle records dropped because the cache service stayed unreachable (no tags).
    SettleDropped,
    /// Failed settle call-outs (retried) (no tags).
    SettleFailures,
    /// Requests whose model a routing rule changed (tenant, routed model).
    Routed,
    /// Estimated saving of routing decisions, micro-USD (tenant, routed model).
    RoutingSavedMicroUsd,
    /// Prompt tokens removed by context trimming (tenant, model).
    TrimmedTokens,
    /// Upstream attempts that failed and moved on to the next model of a fallback chain
    /// (tenant, the model that failed, reason = 429 / 5xx / timeout).
    Fallbacks,
    /// Cheap-first answers that failed a check and were escalated to the strong model
    /// (tenant, the cheap model, reason = empty / refusal / invalid_json / truncated).
    CascadeEscalations,
}

impl Counter {
    /// Number of counters (for per-tag-set id arrays).
    pub const COUNT: usize = 23;

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn base(self) -> &'static str {
        match self {
            Counter::Requests => "tollgate_requests_total",
            Counter::TokensIn => "tollgate_tokens_in_total",
            Counter::TokensOut => "tollgate_tokens_out_total",
            Counter::TokensCached => "tollgate_tokens_cached_total",
            Counter::CostMicroUsd => "tollgate_cost_micro_usd_total",
            Counter::Unpriced => "tollgate_unpriced_requests_total",
            Counter::Rejected => "tollgate_rejected_total",
            Counter::ParseErrors => "tollgate_parse_errors_total",
            Counter::PassThrough => "tollgate_passthrough_total",
            Counter::UpstreamErrors => "tollgate_upstream_errors_total",
            Counter::MaxTokensClamped => "tollgate_max_tokens_clamped_total",
            Counter::MaxTokensInserted => "tollgate_max_tokens_inserted_total",
            Counter::UsageCounted => "tollgate_usage_counted_total",
            Counter::Incomplete => "tollgate_incomplete_responses_total",
            Counter::CacheRequests => "tollgate_cache_requests_total",
            Counter::SavedMicroUsd => "tollgate_saved_micro_usd_total",
            Counter::SettleDropped => "tollgate_settle_dropped_total",
            Counter::SettleFailures => "tollgate_settle_failures_total",
            Counter::Routed => "tollgate_routed_requests_total",
            Counter::RoutingSavedMicroUsd => "tollgate_routing_saved_micro_usd_total",
            Counter::TrimmedTokens => "tollgate_trimmed_tokens_total",
            Counter::Fallbacks => "tollgate_fallbacks_total",
            Counter::CascadeEscalations => "tollgate_cascade_escalations_total",
        }
    }
}

/// Tag values of one increment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tags {
    pub tenant: Option<String>,
    pub model: Option<String>,
    pub reason: Option<&'static str>,
    pub api: Option<&'static str>,
    pub cache: Option<&'static str>,
}

/// Tag keys, in the order they appear in names (and in the Envoy `stats_tags` config).
pub const TAG_KEYS: [&str; 5] = ["tenant", "model", "reason", "api", "cache"];

/// Builds the Envoy stat name: `base;key=value;…`.
pub fn stat_name(counter: Counter, tags: &Tags) -> String {
    let mut s = String::from(counter.base());
    let values = [
        tags.tenant.as_deref(),
        tags.model.as_deref(),
        tags.reason,
        tags.api,
        tags.cache,
    ];
    for (k, v) in TAG_KEYS.iter().zip(values) {
        if let Some(v) = v {
            s.push(';');
            s.push_str(k);
            s.push('=');
            s.push_str(&sanitize(v));
        }
    }
    s
}

/// Keeps tag values to `[A-Za-z0-9._:@-]`, at most 64 bytes.
pub fn sanitize(v: &str) -> String {
    let s: String = v
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// Bounds the number of distinct tenant and model tag values.
#[derive(Debug)]
pub struct Cardinality {
    tenants: HashSet<String>,
    models: HashSet<String>,
    max_tenants: usize,
    max_models: usize,
}

impl Cardinality {
    pub fn new(max_tenants: usize, max_models: usize) -> Self {
        Cardinality {
            tenants: HashSet::new(),
            models: HashSet::new(),
            max_tenants,
            max_models,
        }
    }

    fn admit(set: &mut HashSet<String>, max: usize, v: &str) -> String {
        let v = sanitize(v);
        if set.contains(&v) {
            return v;
        }
        if set.len() < max {
            set.insert(v.clone());
            return v;
        }
        "other".to_string()
    }

    pub fn tenant(&mut self, t: &str) -> String {
        Self::admit(&mut self.tenants, self.max_tenants, t)
    }

    pub fn model(&mut self, m: &str) -> String {
        Self::admit(&mut self.models, self.max_models, m)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_carry_tags_in_a_fixed_order() {
        let tags = Tags {
            tenant: Some("acme".into()),
            model: Some("gpt-4.1".into()),
            ..Tags::default()
        };
        assert_eq!(
            stat_name(Counter::Requests, &tags),
            "tollgate_requests_total;tenant=acme;model=gpt-4.1"
        );
        let tags = Tags {
            reason: Some("invalid_request"),
            ..Tags::default()
        };
        assert_eq!(
            stat_name(Counter::Rejected, &tags),
            "tollgate_rejected_total;reason=invalid_request"
        );
        assert_eq!(
            stat_name(Counter::PassThrough, &Tags::default()),
            "tollgate_passthrough_total"
        );
    }

    #[test]
    fn tag_values_cannot_break_the_name() {
        assert_eq!(sanitize("a;b=c d"), "a_b_c_d");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn cardinality_is_bounded() {
        let mut c = Cardinality::new(2, 1);
        assert_eq!(c.tenant("a"), "a");
        assert_eq!(c.tenant("b"), "b");
        assert_eq!(c.tenant("c"), "other");
        assert_eq!(c.tenant("a"), "a");
        assert_eq!(c.model("m1"), "m1");
        assert_eq!(c.model("m2"), "other");
    }
}
