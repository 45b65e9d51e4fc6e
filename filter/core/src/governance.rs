//! `max_tokens` governance: insert a default where the request has none, clamp to the cap.
//!
//! The cap is the tightest of: the global cap, the most specific model rule, the tenant rule, and
//! the model's own `max_output_tokens` from the price table. The default is the tenant's, else
//! the model's, else the global one, never above the cap. Anthropic requires `max_tokens`, so an
//! Anthropic request without one always gets one (the default, else the smaller of the cap and
//! 4096).

use tollgate_wire::Api;

use crate::config::{Config, MaxTokensRule};
use crate::count::Tokenizer;
use crate::error::{ErrorKind, Rejection};
use crate::json::Edit;
use crate::request::ParsedRequest;

/// What governance did to a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaxTokensDecision {
    /// Body edits to apply.
    pub edits: Vec<Edit>,
    /// The output-token bound the upstream will see (for cost ceilings), if any.
    pub effective: Option<u64>,
    /// The client's value when it was clamped.
    pub clamped_from: Option<u64>,
    /// A default was inserted.
    pub inserted: bool,
}

/// Fallback for Anthropic when no default or cap is configured.
pub const ANTHROPIC_FALLBACK_MAX_TOKENS: u64 = 4096;

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The field a default is inserted into.
fn insert_field(req: &ParsedRequest) -> &'static str {
    match req.api {
        Api::AnthropicMessages | Api::OpenAiCompletions => "max_tokens",
        Api::OpenAiResponses => "max_output_tokens",
        // Current OpenAI models take `max_completion_tokens` (o-series require it); other
        // OpenAI-compatible servers (vLLM, older models) take `max_tokens`.
        Api::OpenAiChat => match req.tokenizer {
            Tokenizer::Exact(tollgate_bpe::Encoding::O200kBase) => "max_completion_tokens",
            _ => "max_tokens",
        },
    }
}

pub fn govern(
    req: &ParsedRequest,
    tenant: &str,
    cfg: &Config,
) -> Result<MaxTokensDecision, Rejection> {
    let policy = &cfg.max_tokens;
    let model_rule = policy
        .models
        .iter()
        .find(|(p, _)| p.matches(&req.model))
        .map(|(_, r)| *r)
        .unwrap_or_default();
    let tenant_rule: MaxTokensRule = policy.tenants.get(tenant).copied().unwrap_or_default();
    let model_max = cfg
        .prices
        .lookup(&req.model)
        .and_then(|(_, info)| info.max_output_tokens);

    let cap = min_opt(
        min_opt(min_opt(policy.cap, model_rule.cap), tenant_rule.cap),
        model_max,
    );
    let default = tenant_rule
        .default
        .or(model_rule.default)
        .or(policy.default);
    let default = match (default, cap) {
        (Some(d), Some(c)) => Some(d.min(c)),
        (d, _) => d,
    };

    let mut out = MaxTokensDecision::default();
    if req.max_tokens.is_empty() {
        let value = if req.api.is_anthropic() {
            default.or(min_opt(cap, Some(ANTHROPIC_FALLBACK_MAX_TOKENS)))
        } else {
            default
        };
        // With budgets on, the reservation must bound the answer: where nothing else does (no
        // default, no cap, no known output limit), the reserved output length is sent as the
        // request's limit, so a stream can never outrun what was reserved for it.
        let value = match (&cfg.budgets, value, cap) {
            (Some(b), None, None) => Some(b.default_max_output_tokens),
            (_, v, _) => v,
        };
        if let Some(v) = value {
            out.edits.push(Edit::Set {
                key: insert_field(req).to_string(),
                raw: v.to_string(),
            });
            out.effective = Some(v);
            out.inserted = true;
        }
        return Ok(out);
    }
    for &(field, value) in &req.max_tokens {
        if value > policy.reject_above {
            return Err(Rejection::new(
                req.api,
                ErrorKind::InvalidRequest,
                format!(
                    "`{field}` = {value} is not a plausible output length (limit {})",
                    policy.reject_above
                ),
            ));
        }
        let granted = match cap {
            Some(c) if value > c => {
                out.edits.push(Edit::Set {
                    key: field.to_string(),
                    raw: c.to_string(),
                });
                out.clamped_from = Some(out.clamped_from.map_or(value, |v: u64| v.max(value)));
                c
            }
            _ => value,
        };
        out.effective = Some(out.effective.map_or(granted, |e| e.min(granted)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::count::CountCache;
    use crate::request::parse;

    fn decide(
        cfg: &str,
        api: Api,
        body: &str,
        tenant: &str,
    ) -> Result<MaxTokensDecision, Rejection> {
        let cfg = Config::from_json(cfg.as_bytes()).unwrap();
        let req = parse(api, body.as_bytes(), &cfg, &mut CountCache::new(8, 1)).unwrap();
        govern(&req, tenant, &cfg)
    }

    fn set(k: &str, v: u64) -> Edit {
        Edit::Set {
            key: k.into(),
            raw: v.to_string(),
        }
    }

    const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn inserts_the_default_into_the_right_field() {
        let d = decide("", Api::OpenAiChat, CHAT, "t").unwrap();
        assert_eq!(d.edits, vec![set("max_completion_tokens", 4096)]);
        assert!(d.inserted);
        let d = decide(
            "",
            Api::OpenAiChat,
            r#"{"model":"gpt-3.5-turbo","messages":[]}"#,
            "t",
        )
        .unwrap();
        // gpt-3.5-turbo's own max output (4096 in the price table) bounds the default.
        assert_eq!(d.edits, vec![set("max_tokens", 4096)]);
        let d = decide(
            "",
            Api::OpenAiResponses,
            r#"{"model":"gpt-4.1","input":"x"}"#,
            "t",
        )
        .unwrap();
        assert_eq!(d.edits, vec![set("max_output_tokens", 4096)]);
    }

    #[test]
    fn no_default_leaves_openai_alone_but_anthropic_always_gets_one() {
        let cfg = r#"{"maxTokens":{"default":null}}"#;
        assert!(
            decide(cfg, Api::OpenAiChat, CHAT, "t")
                .unwrap()
                .edits
                .is_empty()
        );
        let d = decide(
            cfg,
            Api::AnthropicMessages,
            r#"{"model":"claude-haiku-4-5","messages":[]}"#,
            "t",
        )
        .unwrap();
        assert_eq!(d.edits, vec![set("max_tokens", 4096)]);
        let cfg = r#"{"maxTokens":{"default":null,"cap":1000}}"#;
        let d = decide(
            cfg,
            Api::AnthropicMessages,
            r#"{"model":"claude-haiku-4-5","messages":[]}"#,
            "t",
        )
        .unwrap();
        assert_eq!(d.edits, vec![set("max_tokens", 1000)]);
    }

    #[test]
    fn clamps_to_the_tightest_cap() {
        let cfg = r#"{"maxTokens":{"cap":3000,"models":{"gpt-4o*":{"cap":2000},"gpt-4o":{"cap":1500}},"tenants":{"small":{"cap":100}}}}"#;
        let body = r#"{"model":"gpt-4o","messages":[],"max_tokens":99999}"#;
        let d = decide(cfg, Api::OpenAiChat, body, "t").unwrap();
        assert_eq!(d.edits, vec![set("max_tokens", 1500)]);
        assert_eq!((d.clamped_from, d.effective), (Some(99999), Some(1500)));
        let d = decide(cfg, Api::OpenAiChat, body, "small").unwrap();
        assert_eq!(d.edits, vec![set("max_tokens", 100)]);
        let d = decide(
            cfg,
            Api::OpenAiChat,
            r#"{"model":"gpt-4o-mini","messages":[],"max_tokens":99999}"#,
            "t",
        )
        .unwrap();
        assert_eq!(d.edits, vec![set("max_tokens", 2000)]);
        // Under the cap: untouched.
        let d = decide(
            cfg,
            Api::OpenAiChat,
            r#"{"model":"gpt-4o","messages":[],"max_tokens":10}"#,
            "t",
        )
        .unwrap();
        assert!(d.edits.is_empty());
        assert_eq!(d.effective, Some(10));
    }

    #[test]
    fn model_limit_from_price_table_caps_even_without_config() {
        // gpt-4o's max_output_tokens is 16384 in the LiteLLM table.
        let d = decide(
            "",
            Api::OpenAiChat,
            r#"{"model":"gpt-4o","messages":[],"max_completion_tokens":50000}"#,
            "t",
        )
        .unwrap();
        assert_eq!(d.edits, vec![set("max_completion_tokens", 16384)]);
    }

    #[test]
    fn both_openai_fields_are_clamped() {
        let d = decide(
            r#"{"maxTokens":{"cap":100}}"#,
            Api::OpenAiChat,
            r#"{"model":"gpt-4o","messages":[],"max_tokens":500,"max_completion_tokens":50}"#,
            "t",
        )
        .unwrap();
        assert_eq!(d.edits, vec![set("max_tokens", 100)]);
        assert_eq!(d.effective, Some(50));
    }

    #[test]
    fn absurd_values_are_rejected() {
        let err = decide(
            "",
            Api::OpenAiChat,
            r#"{"model":"gpt-4o","messages":[],"max_tokens":1000000000000}"#,
            "t",
        )
        .unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message.contains("not a plausible"));
    }

    #[test]
    fn tenant_default_beats_model_default_beats_global() {
        let cfg = r#"{"maxTokens":{"default":300,"models":{"gpt-4o":{"default":200}},"tenants":{"t1":{"default":100}}}}"#;
        assert_eq!(
            decide(cfg, Api::OpenAiChat, CHAT, "t1").unwrap().effective,
            Some(100)
        );
        assert_eq!(
            decide(cfg, Api::OpenAiChat, CHAT, "t2").unwrap().effective,
            Some(200)
        );
        assert_eq!(
            decide(
                cfg,
                Api::OpenAiChat,
                r#"{"model":"gpt-4.1","messages":[]}"#,
                "t2"
            )
            .unwrap()
            .effective,
            Some(300)
        );
    }

    #[test]
    fn with_budgets_an_unbounded_request_gets_the_reserved_output_limit() {
        let body = r#"{"model":"acme-unknown-model","messages":[{"role":"user","content":"hi"}]}"#;
        for (cfg_json, want) in [
            (r#"{"maxTokens": {"default": null}}"#, None),
            (
                r#"{"maxTokens": {"default": null}, "cache": {"cluster": "c"},
                    "budgets": {"defaultMaxOutputTokens": 1000}}"#,
                Some(1000),
            ),
        ] {
            let cfg = Config::from_json(cfg_json.as_bytes()).unwrap();
            let mut cache = crate::count::CountCache::new(4, 1);
            let req =
                crate::request::parse(Api::OpenAiChat, body.as_bytes(), &cfg, &mut cache).unwrap();
            let d = govern(&req, "t", &cfg).unwrap();
            assert_eq!(d.effective, want, "{cfg_json}");
            assert_eq!(d.inserted, want.is_some());
        }
    }
}
