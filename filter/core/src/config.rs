//! Filter configuration: `RawConfig` (serde, camelCase, unknown fields refused) compiled into a
//! validated `Config`. `on_configure` refuses the plugin (Envoy rejects the config) when
//! compilation fails, with the reason logged.

use std::collections::HashMap;

use serde::Deserialize;
use tollgate_bpe::Encoding;

use crate::pricing::{PriceTable, RawModelPrice};

/// Default header carrying the tenant id.
pub const DEFAULT_TENANT_HEADER: &str = "x-tollgate-tenant";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub tenant: RawTenant,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub max_tokens: RawMaxTokens,
    #[serde(default)]
    pub pricing: RawPricing,
    #[serde(default)]
    pub tokenizer: RawTokenizer,
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Pause request/response headers until the body is seen. Requires Envoy's
    /// `allow_on_headers_stop_iteration: true` in the Wasm `PluginConfig` (Envoy >= 1.35); without
    /// it a paused request hangs. Enables setting headers derived from the body (response usage
    /// headers on non-streamed responses). Istio's `WasmPlugin` cannot set that field: keep `false`.
    #[serde(default)]
    pub stop_on_headers: bool,
    /// The cache service (response cache, budgets, ledger). Absent: no call-outs.
    #[serde(default)]
    pub cache: Option<RawCache>,
    /// Budget enforcement through the cache service (needs `cache`). Absent: not enforced.
    #[serde(default)]
    pub budgets: Option<RawBudgets>,
    /// Model routing rules (rewrite `model`, set an upstream route header).
    #[serde(default)]
    pub routing: Option<crate::routing::RawRouting>,
    /// Context trimming: drop the oldest turns to fit an input-token limit.
    #[serde(default)]
    pub trimming: Option<RawTrimming>,
    /// Provider prefix-cache hints.
    #[serde(default)]
    pub prefix_hints: Option<RawPrefixHints>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTrimming {
    /// Input-token limit for every route (absent: only the routes below are trimmed).
    pub max_input_tokens: Option<u64>,
    /// Per route path prefix (`/v1/chat/completions`), overriding the global limit.
    #[serde(default)]
    pub routes: HashMap<String, u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPrefixHints {
    /// Send `x-tollgate-prefix-key` upstream (for ring-hash / maglev over self-hosted pools).
    /// Default true.
    pub header: Option<bool>,
    /// Tokens per hashed block. Default 256.
    pub block_tokens: Option<usize>,
    /// Set OpenAI's `prompt_cache_key` when the client did not. Default true.
    pub openai_prompt_cache_key: Option<bool>,
}

/// Validated trimming limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrimPolicy {
    pub max_input_tokens: Option<u64>,
    /// Longest prefix first.
    pub routes: Vec<(String, u64)>,
}

impl TrimPolicy {
    /// The limit for a request path, if any.
    pub fn limit_for(&self, path: &str) -> Option<u64> {
        self.routes
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, l)| *l)
            .or(self.max_input_tokens)
    }
}

/// Validated prefix-hint settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixPolicy {
    pub header: bool,
    pub block_tokens: usize,
    pub openai_prompt_cache_key: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCache {
    /// Envoy cluster of the cache service (required).
    pub cluster: String,
    /// `:authority` of call-outs. Default: the cluster name.
    pub authority: Option<String>,
    /// Admit call-out timeout; on timeout the request goes upstream (`x-tollgate-cache: error`).
    /// Default 100 ms.
    pub timeout_ms: Option<u64>,
    /// Settle records sent per call-out. Default 200.
    pub settle_batch: Option<usize>,
    /// Settle records kept per VM while the service is unreachable; the oldest are dropped
    /// (and counted) beyond this. Default 10000.
    pub settle_queue: Option<usize>,
    /// Longest final-user-turn text sent for semantic lookup; longer ones get exact lookup only.
    /// Default 4000 characters.
    pub max_query_chars: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTenant {
    /// Ordered sources: `"header:<name>"`, `"api-key"` (hash of `authorization: Bearer …` or
    /// `x-api-key`). First match wins. Default: `["header:x-tollgate-tenant", "api-key"]`.
    pub sources: Option<Vec<String>>,
    /// Tenant used when no source matches. Default `"anonymous"`.
    pub default: Option<String>,
    /// Salt mixed into API-key hashes (so hashes differ between deployments). Default empty.
    pub key_salt: Option<String>,
    /// Organisation id (the outermost budget scope). Default `"default"`.
    pub org: Option<String>,
    /// Ordered sources of the user id (a budget scope inside the team): `"header:<name>"` or
    /// `"principal"` (the peer's mTLS identity, Istio's `source.principal`). Default: none.
    pub user_sources: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawBudgets {
    /// When the cache service cannot be asked: `"open"` (allow; the settle record charges the
    /// spend once the service is back) or `"closed"` (reject with 503). Default `"open"`.
    pub failure_mode: Option<String>,
    /// Output tokens reserved for requests without `max_tokens` (when the model's own output
    /// limit is unknown); also sent as the request's `max_tokens` when nothing else (governance's
    /// default, a cap, the model's limit) bounds the answer, so the reservation holds. Default 4096.
    pub default_max_output_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request body accepted, in bytes (413 above). Default 1 MiB. Keep it below Envoy's
    /// `per_connection_buffer_limit_bytes`, or Envoy answers 413 itself in plain text.
    pub max_request_bytes: Option<u64>,
    /// Largest non-streamed response held back to put usage headers on it. Larger responses are
    /// passed through and metered at the end (usage then only in stats and the access log).
    pub max_response_buffer_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawMaxTokensRule {
    /// Inserted when the request has none (`null` disables insertion for OpenAI APIs).
    pub default: Option<u64>,
    /// Upper bound; larger requests are clamped to it.
    pub cap: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawMaxTokens {
    #[serde(default = "default_max_tokens_default")]
    pub default: Option<u64>,
    #[serde(default)]
    pub cap: Option<u64>,
    /// Per model (exact name, or prefix ending in `*`).
    #[serde(default)]
    pub models: HashMap<String, RawMaxTokensRule>,
    /// Per tenant.
    #[serde(default)]
    pub tenants: HashMap<String, RawMaxTokensRule>,
    /// Values above this are refused with 400 rather than clamped. Default 10,000,000.
    #[serde(default)]
    pub reject_above: Option<u64>,
}

fn default_max_tokens_default() -> Option<u64> {
    Some(4096)
}

impl Default for RawMaxTokens {
    fn default() -> Self {
        RawMaxTokens {
            default: default_max_tokens_default(),
            cap: None,
            models: HashMap::new(),
            tenants: HashMap::new(),
            reject_above: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPricing {
    /// Use the embedded LiteLLM table (default true).
    #[serde(default = "yes")]
    pub builtin: bool,
    /// Added or overriding models (LiteLLM fields, or `inputPerMillion`/`outputPerMillion`/…).
    #[serde(default)]
    pub models: HashMap<String, RawModelPrice>,
    /// Alias -> priced model name.
    #[serde(default)]
    pub aliases: HashMap<String, String>,
}

fn yes() -> bool {
    true
}

impl Default for RawPricing {
    fn default() -> Self {
        RawPricing {
            builtin: true,
            models: HashMap::new(),
            aliases: HashMap::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTokenizer {
    /// Model (exact or prefix ending in `*`) -> `"cl100k_base"` | `"o200k_base"`; these counts
    /// are then exact. Checked before the built-in families.
    #[serde(default)]
    pub models: HashMap<String, String>,
    /// Claude estimate: cl100k_base count times this ratio (default 1.1).
    pub anthropic_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawMetrics {
    /// Distinct tenants given their own metric tag; later ones are tagged `other`. Default 100.
    pub max_tenants: Option<usize>,
    /// Distinct models given their own metric tag; later ones are tagged `other`. Default 100.
    pub max_models: Option<usize>,
    /// Counter increments are summed in the VM and handed to Envoy every this many ms (host
    /// calls are the filter's main per-request cost). 0: on every request. Default 1000.
    pub flush_interval_ms: Option<u64>,
    /// Set filter-state properties for Envoy's access log. Default true.
    pub access_log: Option<bool>,
    /// How the access-log properties are set: `line` (default): one property `tollgate`
    /// holding a logfmt line (`tenant=acme model=gpt-4o prompt_tokens=812 … cost_usd=0.0012
    /// result=ok`; `%FILTER_STATE(wasm.tollgate:PLAIN)%`), one host call per request; `fields`:
    /// one property per key (`%FILTER_STATE(wasm.tollgate.cost_usd:PLAIN)%`, ...), ten host
    /// calls per request and about 5 µs more Envoy CPU.
    pub access_log_format: Option<AccessLogFormat>,
}

/// How the filter hands its outcome to Envoy's access log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One property `tollgate`: a logfmt line.
    #[default]
    Line,
    /// One property per key: `tollgate.<key>`.
    Fields,
}

/// Where the tenant id comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantSource {
    Header(String),
    ApiKey,
}

#[derive(Clone, Debug)]
pub struct TenantPolicy {
    pub sources: Vec<TenantSource>,
    pub default: String,
    pub key_salt: String,
    pub org: String,
    pub user_sources: Vec<UserSource>,
}

/// Where the user id comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSource {
    Header(String),
    /// The peer's mTLS identity (`source.principal`).
    Principal,
}

impl TenantPolicy {
    /// Whether the glue must read the peer principal for each request.
    pub fn wants_principal(&self) -> bool {
        self.user_sources.contains(&UserSource::Principal)
    }
}

/// Validated budget settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetPolicy {
    pub fail_open: bool,
    pub default_max_output_tokens: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxTokensRule {
    pub default: Option<u64>,
    pub cap: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct MaxTokensPolicy {
    pub default: Option<u64>,
    pub cap: Option<u64>,
    pub models: Vec<(Pattern, MaxTokensRule)>,
    pub tenants: HashMap<String, MaxTokensRule>,
    pub reject_above: u64,
}

/// An exact model name or a prefix (`gpt-4o*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.strip_suffix('*') {
            Some(p) if p.contains('*') => {
                Err(format!("pattern {s:?}: only a trailing * is allowed"))
            }
            Some(p) => Ok(Pattern::Prefix(p.to_string())),
            None if s.contains('*') => Err(format!("pattern {s:?}: only a trailing * is allowed")),
            None if s.is_empty() => Err("empty model pattern".into()),
            None => Ok(Pattern::Exact(s.to_string())),
        }
    }

    pub fn matches(&self, model: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == model,
            Pattern::Prefix(p) => model.starts_with(p.as_str()),
        }
    }

    /// Exact patterns first, then longer prefixes.
    fn specificity(&self) -> usize {
        match self {
            Pattern::Exact(_) => usize::MAX,
            Pattern::Prefix(p) => p.len(),
        }
    }
}

/// Sorts patterns so the most specific match is found first.
fn by_specificity<T>(mut v: Vec<(Pattern, T)>) -> Vec<(Pattern, T)> {
    v.sort_by_key(|e| std::cmp::Reverse(e.0.specificity()));
    v
}

#[derive(Clone, Debug)]
pub struct TokenizerPolicy {
    pub models: Vec<(Pattern, Encoding)>,
    /// Claude estimate ratio in thousandths (1100 = 1.1).
    pub anthropic_ratio_milli: u64,
}

#[derive(Clone, Debug)]
pub struct MetricsPolicy {
    pub max_tenants: usize,
    pub max_models: usize,
    pub flush_interval_ms: u64,
    pub access_log: bool,
    pub access_log_format: AccessLogFormat,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub tenant: TenantPolicy,
    pub max_request_bytes: u64,
    pub max_response_buffer_bytes: u64,
    pub max_tokens: MaxTokensPolicy,
    pub prices: PriceTable,
    pub tokenizer: TokenizerPolicy,
    pub metrics: MetricsPolicy,
    pub stop_on_headers: bool,
    pub cache: Option<CachePolicy>,
    pub budgets: Option<BudgetPolicy>,
    pub routing: Option<crate::routing::RoutingPolicy>,
    pub trimming: Option<TrimPolicy>,
    pub prefix: Option<PrefixPolicy>,
}

/// Validated cache-service settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    pub cluster: String,
    pub authority: String,
    pub timeout_ms: u64,
    pub settle_batch: usize,
    pub settle_queue: usize,
    pub max_query_chars: usize,
}

impl Config {
    /// Parses and compiles a JSON configuration. Empty input means all defaults.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let trimmed = bytes.iter().all(|b| b.is_ascii_whitespace());
        let raw: RawConfig = if trimmed {
            RawConfig::default()
        } else {
            serde_json::from_slice(bytes).map_err(|e| format!("invalid filter config: {e}"))?
        };
        Config::try_from(raw)
    }
}

fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Tenant ids are used in metric tags, storage keys and logs: keep them tame.
pub fn is_valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
}

fn rule(raw: &RawMaxTokensRule, what: &str) -> Result<MaxTokensRule, String> {
    for (name, v) in [("default", raw.default), ("cap", raw.cap)] {
        if v == Some(0) {
            return Err(format!("maxTokens {what}: {name} must be at least 1"));
        }
    }
    if let (Some(d), Some(c)) = (raw.default, raw.cap)
        && d > c
    {
        return Err(format!("maxTokens {what}: default {d} is above cap {c}"));
    }
    Ok(MaxTokensRule {
        default: raw.default,
        cap: raw.cap,
    })
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        // Tenant identification.
        let source_names = raw.tenant.sources.clone().unwrap_or_else(|| {
            vec![
                format!("header:{DEFAULT_TENANT_HEADER}"),
                "api-key".to_string(),
            ]
        });
        let mut sources = Vec::new();
        for s in &source_names {
            let src = if s == "api-key" {
                TenantSource::ApiKey
            } else if let Some(h) = s.strip_prefix("header:") {
                let h = h.to_ascii_lowercase();
                if !is_valid_header_name(&h) {
                    return Err(format!("tenant.sources: invalid header name in {s:?}"));
                }
                TenantSource::Header(h)
            } else {
                return Err(format!(
                    "tenant.sources: unknown source {s:?} (expected \"header:<name>\" or \"api-key\")"
                ));
            };
            sources.push(src);
        }
        let default_tenant = raw
            .tenant
            .default
            .clone()
            .unwrap_or_else(|| "anonymous".into());
        if !is_valid_tenant_id(&default_tenant) {
            return Err(format!(
                "tenant.default {default_tenant:?} is not a valid tenant id"
            ));
        }

        let org = raw.tenant.org.clone().unwrap_or_else(|| "default".into());
        if !is_valid_tenant_id(&org) {
            return Err(format!("tenant.org {org:?} is not a valid id"));
        }
        let mut user_sources = Vec::new();
        for s in raw.tenant.user_sources.iter().flatten() {
            let src = if s == "principal" {
                UserSource::Principal
            } else if let Some(h) = s.strip_prefix("header:") {
                let h = h.to_ascii_lowercase();
                if !is_valid_header_name(&h) {
                    return Err(format!("tenant.userSources: invalid header name in {s:?}"));
                }
                UserSource::Header(h)
            } else {
                return Err(format!(
                    "tenant.userSources: unknown source {s:?} (expected \"header:<name>\" or \"principal\")"
                ));
            };
            user_sources.push(src);
        }

        // Limits.
        let max_request_bytes = raw.limits.max_request_bytes.unwrap_or(1 << 20);
        if max_request_bytes == 0 {
            return Err("limits.maxRequestBytes must be positive".into());
        }
        let max_response_buffer_bytes = raw.limits.max_response_buffer_bytes.unwrap_or(4 << 20);

        // max_tokens governance.
        // The global default may exceed the global cap (the default 4096 with a small cap): the
        // default is clamped to the cap when applied.
        let global = rule(
            &RawMaxTokensRule {
                default: raw.max_tokens.default,
                cap: None,
            },
            "(global)",
        )?;
        if raw.max_tokens.cap == Some(0) {
            return Err("maxTokens: cap must be at least 1".into());
        }
        let mut models = Vec::new();
        for (pat, r) in &raw.max_tokens.models {
            models.push((Pattern::parse(pat)?, rule(r, &format!("model {pat}"))?));
        }
        let mut tenants = HashMap::new();
        for (t, r) in &raw.max_tokens.tenants {
            tenants.insert(t.clone(), rule(r, &format!("tenant {t}"))?);
        }
        let reject_above = raw.max_tokens.reject_above.unwrap_or(10_000_000);
        if reject_above == 0 {
            return Err("maxTokens.rejectAbove must be positive".into());
        }

        // Prices.
        let mut prices = if raw.pricing.builtin {
            PriceTable::builtin()?
        } else {
            PriceTable::default()
        };
        for (name, p) in &raw.pricing.models {
            let info = p
                .compile()
                .map_err(|e| format!("pricing.models.{name}: {e}"))?;
            prices.insert(name, info);
        }
        for (alias, target) in &raw.pricing.aliases {
            prices
                .alias(alias, target)
                .map_err(|e| format!("pricing.aliases: {e}"))?;
        }

        // Tokenizer.
        let mut enc_models = Vec::new();
        for (pat, name) in &raw.tokenizer.models {
            let enc = Encoding::from_name(name).ok_or_else(|| {
                format!(
                    "tokenizer.models.{pat}: unknown encoding {name:?} (cl100k_base or o200k_base)"
                )
            })?;
            enc_models.push((Pattern::parse(pat)?, enc));
        }
        let ratio = raw.tokenizer.anthropic_ratio.unwrap_or(1.1);
        if !(ratio.is_finite() && (0.5..=3.0).contains(&ratio)) {
            return Err(format!(
                "tokenizer.anthropicRatio {ratio} must be between 0.5 and 3"
            ));
        }

        let metrics = MetricsPolicy {
            max_tenants: raw.metrics.max_tenants.unwrap_or(100),
            max_models: raw.metrics.max_models.unwrap_or(100),
            flush_interval_ms: raw.metrics.flush_interval_ms.unwrap_or(1000),
            access_log: raw.metrics.access_log.unwrap_or(true),
            access_log_format: raw.metrics.access_log_format.unwrap_or_default(),
        };
        if metrics.flush_interval_ms > 60_000 {
            return Err("metrics.flushIntervalMs must be at most 60000".into());
        }

        let cache = match &raw.cache {
            None => None,
            Some(c) => {
                let cluster = c.cluster.trim().to_string();
                if cluster.is_empty() {
                    return Err(
                        "cache.cluster must name the Envoy cluster of the cache service".into(),
                    );
                }
                let timeout_ms = c.timeout_ms.unwrap_or(100);
                if !(1..=10_000).contains(&timeout_ms) {
                    return Err(format!(
                        "cache.timeoutMs {timeout_ms} must be between 1 and 10000"
                    ));
                }
                let settle_batch = c.settle_batch.unwrap_or(200);
                let settle_queue = c.settle_queue.unwrap_or(10_000);
                if settle_batch == 0 || settle_queue < settle_batch {
                    return Err(
                        "cache.settleBatch must be positive and at most cache.settleQueue".into(),
                    );
                }
                Some(CachePolicy {
                    authority: c.authority.clone().unwrap_or_else(|| cluster.clone()),
                    cluster,
                    timeout_ms,
                    settle_batch,
                    settle_queue,
                    max_query_chars: c.max_query_chars.unwrap_or(4000),
                })
            }
        };

        let budgets = match &raw.budgets {
            None => None,
            Some(b) => {
                if cache.is_none() {
                    return Err(
                        "budgets need the cache service: set cache.cluster to its Envoy cluster"
                            .into(),
                    );
                }
                let fail_open = match b.failure_mode.as_deref().unwrap_or("open") {
                    "open" => true,
                    "closed" => false,
                    other => {
                        return Err(format!(
                            "budgets.failureMode {other:?}: expected \"open\" or \"closed\""
                        ));
                    }
                };
                let default_max_output_tokens = b.default_max_output_tokens.unwrap_or(4096);
                if default_max_output_tokens == 0 {
                    return Err("budgets.defaultMaxOutputTokens must be positive".into());
                }
                Some(BudgetPolicy {
                    fail_open,
                    default_max_output_tokens,
                })
            }
        };

        let routing = match raw.routing.clone() {
            None => None,
            Some(r) => {
                let p = crate::routing::RoutingPolicy::try_from(r)
                    .map_err(|e| format!("routing: {e}"))?;
                if p.learned_complexity && raw.cache.is_none() {
                    return Err(
                        "routing.complexitySource \"service\" needs `cache` (the cache service scores the prompt)"
                            .into(),
                    );
                }
                Some(p)
            }
        };
        let trimming = match &raw.trimming {
            None => None,
            Some(t) => {
                let mut routes: Vec<(String, u64)> =
                    t.routes.iter().map(|(k, v)| (k.clone(), *v)).collect();
                routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
                if t.max_input_tokens == Some(0) || routes.iter().any(|(_, l)| *l == 0) {
                    return Err("trimming: maxInputTokens must be positive".into());
                }
                Some(TrimPolicy {
                    max_input_tokens: t.max_input_tokens,
                    routes,
                })
            }
        };
        let prefix = match &raw.prefix_hints {
            None => None,
            Some(p) => {
                let block_tokens = p
                    .block_tokens
                    .unwrap_or(crate::prefix::DEFAULT_BLOCK_TOKENS);
                if !(16..=8192).contains(&block_tokens) {
                    return Err("prefixHints.blockTokens must be between 16 and 8192".into());
                }
                Some(PrefixPolicy {
                    header: p.header.unwrap_or(true),
                    block_tokens,
                    openai_prompt_cache_key: p.openai_prompt_cache_key.unwrap_or(true),
                })
            }
        };

        Ok(Config {
            cache,
            budgets,
            routing,
            trimming,
            prefix,
            tenant: TenantPolicy {
                sources,
                default: default_tenant,
                key_salt: raw.tenant.key_salt.clone().unwrap_or_default(),
                org,
                user_sources,
            },
            max_request_bytes,
            max_response_buffer_bytes,
            max_tokens: MaxTokensPolicy {
                default: global.default,
                cap: raw.max_tokens.cap,
                models: by_specificity(models),
                tenants,
                reject_above,
            },
            prices,
            tokenizer: TokenizerPolicy {
                models: by_specificity(enc_models),
                anthropic_ratio_milli: (ratio * 1000.0).round() as u64,
            },
            metrics,
            stop_on_headers: raw.stop_on_headers,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn compile(json: &str) -> Result<Config, String> {
        Config::from_json(json.as_bytes())
    }

    #[test]
    fn empty_config_gives_documented_defaults() {
        let c = compile("").unwrap();
        assert_eq!(c.max_request_bytes, 1 << 20);
        assert_eq!(c.max_tokens.default, Some(4096));
        assert_eq!(c.max_tokens.cap, None);
        assert_eq!(
            c.tenant.sources,
            vec![
                TenantSource::Header("x-tollgate-tenant".into()),
                TenantSource::ApiKey
            ]
        );
        assert_eq!(c.tenant.default, "anonymous");
        assert!(!c.stop_on_headers);
        assert!(c.prices.lookup("gpt-4o").is_some());
        assert_eq!(c.tokenizer.anthropic_ratio_milli, 1100);
        assert!(compile("{}").is_ok());
    }

    #[test]
    fn full_config_compiles() {
        let c = compile(
            r#"{
              "tenant": {"sources": ["header:X-Team", "api-key"], "default": "shared", "keySalt": "s"},
              "limits": {"maxRequestBytes": 65536, "maxResponseBufferBytes": 1048576},
              "maxTokens": {"default": 512, "cap": 2048,
                            "models": {"gpt-4o*": {"cap": 1024}, "gpt-4o-mini": {"default": 256}},
                            "tenants": {"batch": {"cap": 8192}}, "rejectAbove": 100000},
              "pricing": {"models": {"house-llm": {"inputPerMillion": 0.1, "outputPerMillion": 0.2}},
                          "aliases": {"fast": "gpt-4o-mini"}},
              "tokenizer": {"models": {"house-llm*": "o200k_base"}, "anthropicRatio": 1.2},
              "metrics": {"maxTenants": 10, "maxModels": 20},
              "stopOnHeaders": true
            }"#,
        )
        .unwrap();
        assert_eq!(c.tenant.sources[0], TenantSource::Header("x-team".into()));
        assert_eq!(
            c.max_tokens.models[0].0,
            Pattern::Exact("gpt-4o-mini".into())
        );
        assert!(c.prices.lookup("house-llm").is_some());
        assert!(c.prices.lookup("fast").is_some());
        assert_eq!(c.tokenizer.models[0].1, Encoding::O200kBase);
        assert!(c.stop_on_headers);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let cases = [
            (r#"{"bogus": 1}"#, "unknown field"),
            (r#"{"cache": {"cluster": " "}}"#, "cache.cluster"),
            (
                r#"{"cache": {"cluster": "c", "timeoutMs": 0}}"#,
                "timeoutMs",
            ),
            (
                r#"{"cache": {"cluster": "c", "settleBatch": 10, "settleQueue": 5}}"#,
                "settleBatch",
            ),
            (r#"{"cache": {"clusterr": "c"}}"#, "unknown field"),
            (r#"{"budgets": {}}"#, "budgets need the cache service"),
            (
                r#"{"cache": {"cluster": "c"}, "budgets": {"failureMode": "maybe"}}"#,
                "budgets.failureMode",
            ),
            (
                r#"{"tenant": {"userSources": ["cookie:x"]}}"#,
                "tenant.userSources",
            ),
            (r#"{"tenant": {"org": "a b"}}"#, "tenant.org"),
            (
                r#"{"routing": {"complexitySource": "service", "rules": [{"name": "r", "model": "m"}]}}"#,
                "needs `cache`",
            ),
            (
                r#"{"routing": {"complexitySource": "oracle", "rules": [{"name": "r", "model": "m"}]}}"#,
                "unknown source",
            ),
            (
                r#"{"routing": {"attemptTimeoutMs": 5, "rules": [{"name": "r", "model": "m", "fallbacks": [{"model": "n"}]}]}}"#,
                "attemptTimeoutMs",
            ),
            (r#"{"tenant": {"sources": ["cookie:x"]}}"#, "unknown source"),
            (
                r#"{"tenant": {"sources": ["header:bad header"]}}"#,
                "invalid header name",
            ),
            (
                r#"{"tenant": {"default": "has space"}}"#,
                "not a valid tenant id",
            ),
            (r#"{"limits": {"maxRequestBytes": 0}}"#, "must be positive"),
            (r#"{"maxTokens": {"default": 0}}"#, "at least 1"),
            (
                r#"{"maxTokens": {"models": {"m": {"default": 100, "cap": 10}}}}"#,
                "above cap",
            ),
            (r#"{"maxTokens": {"cap": 0}}"#, "at least 1"),
            (
                r#"{"maxTokens": {"models": {"a*b": {"cap": 1}}}}"#,
                "trailing *",
            ),
            (
                r#"{"pricing": {"models": {"m": {"inputPerMillion": 1}}}}"#,
                "missing output price",
            ),
            (
                r#"{"pricing": {"aliases": {"a": "nope"}}}"#,
                "unknown model",
            ),
            (
                r#"{"tokenizer": {"models": {"m": "p50k"}}}"#,
                "unknown encoding",
            ),
            (r#"{"tokenizer": {"anthropicRatio": 9}}"#, "between"),
            (r#"{"maxTokens": {"cap": -5}}"#, "invalid"),
            ("not json", "invalid filter config"),
        ];
        for (json, want) in cases {
            let err = compile(json).unwrap_err();
            assert!(
                err.contains(want),
                "{json}: error {err:?} should mention {want:?}"
            );
        }
    }

    #[test]
    fn patterns_match_exact_and_prefix() {
        assert!(Pattern::parse("gpt-4o*").unwrap().matches("gpt-4o-mini"));
        assert!(!Pattern::parse("gpt-4o").unwrap().matches("gpt-4o-mini"));
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn tenant_ids_are_restricted() {
        assert!(is_valid_tenant_id("team-a.prod_1"));
        assert!(!is_valid_tenant_id(""));
        assert!(!is_valid_tenant_id("a b"));
        assert!(!is_valid_tenant_id(&"x".repeat(65)));
        assert!(!is_valid_tenant_id("ten;ant"));
    }
}

#[cfg(test)]
mod shipped_configs {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn load(name: &str) -> Config {
        let path = format!("{}/../../envoy/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        Config::from_json(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Every filter config the repository ships must compile (the demo would not start).
    #[test]
    fn the_demo_configs_are_valid() {
        let c = load("demo-config.json");
        assert!(c.cache.is_some() && c.budgets.is_some());
        assert!(c.routing.is_some() && c.prefix.is_some() && c.trimming.is_some());
        assert!(c.routing.as_ref().is_some_and(|r| r.has_retries()));
        let pool = load("pool-config.json");
        assert!(pool.prefix.as_ref().is_some_and(|p| p.header));
    }
}
