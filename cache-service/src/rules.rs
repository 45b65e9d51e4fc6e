//! Which requests may use the cache, and for how long.
//!
//! Rules are evaluated in order; the first whose matchers all match decides (`cacheable`, TTL).
//! Before them, built-in checks bypass requests a cache must not answer: tools (unless allowed),
//! a temperature above the ceiling, and queries matching personal or time-sensitive patterns.

use regex::Regex;
use serde::Deserialize;
use tollgate_wire::admit::AdmitRequest;

/// Default patterns of personal or time-sensitive questions (case-insensitive).
pub const DEFAULT_BYPASS_PATTERNS: [&str; 4] = [
    // Time-sensitive: the right answer changes with time.
    r"(?i)\b(today|tonight|tomorrow|yesterday|right now|currently|at the moment|latest|this (week|month|year)|current(ly)? (time|date|price|weather|status|version))\b",
    // Personal: about the asker's own account or data.
    r"(?i)\bmy (account|order|orders|password|balance|subscription|invoice|card|bill|payment|address|profile|data)\b",
    // Contact data in the prompt.
    r"(?i)\b[A-Z0-9._%+-]+@[A-Z0-9.-]+\.[A-Z]{2,}\b",
    r"\+?\d[\d .()-]{8,}\d",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    /// Path prefixes (`/v1/chat/completions`); empty = any.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Tenant ids; empty = any.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Models, exact or `prefix*`; empty = any.
    #[serde(default)]
    pub models: Vec<String>,
    /// Regex on the final user turn.
    #[serde(default)]
    pub query_pattern: Option<String>,
    #[serde(default = "yes")]
    pub cacheable: bool,
    /// Entry lifetime; default: the global default.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRules {
    #[serde(default = "default_ttl")]
    pub default_ttl_seconds: u64,
    /// Requests with a higher temperature bypass the cache. Absent temperature counts as 1.0
    /// (the providers' default).
    #[serde(default = "default_max_temperature")]
    pub max_temperature: f64,
    #[serde(default)]
    pub allow_tools: bool,
    /// Replaces [`DEFAULT_BYPASS_PATTERNS`] when given.
    #[serde(default)]
    pub bypass_patterns: Option<Vec<String>>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

fn default_ttl() -> u64 {
    24 * 3600
}

fn default_max_temperature() -> f64 {
    1.0
}

impl Default for RawRules {
    fn default() -> Self {
        RawRules {
            default_ttl_seconds: default_ttl(),
            max_temperature: default_max_temperature(),
            allow_tools: false,
            bypass_patterns: None,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Rule {
    name: String,
    routes: Vec<String>,
    tenants: Vec<String>,
    models: Vec<String>,
    query: Option<Regex>,
    cacheable: bool,
    ttl_seconds: Option<u64>,
}

/// Compiled rules.
#[derive(Debug)]
pub struct Rules {
    default_ttl: u64,
    max_temperature: f64,
    allow_tools: bool,
    bypass: Vec<Regex>,
    rules: Vec<Rule>,
}

/// Whether a request may use the cache.
#[derive(Clone, Debug, PartialEq)]
pub enum Eligibility {
    Cacheable {
        ttl_seconds: u64,
        rule: Option<String>,
    },
    Bypass {
        reason: String,
    },
}

fn model_matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

impl Rules {
    pub fn compile(raw: &RawRules) -> Result<Rules, String> {
        if !raw.max_temperature.is_finite() || raw.max_temperature < 0.0 {
            return Err("cache.maxTemperature must be a non-negative number".into());
        }
        let patterns: Vec<String> = raw.bypass_patterns.clone().unwrap_or_else(|| {
            DEFAULT_BYPASS_PATTERNS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let bypass = patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| format!("bypass pattern {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rules = Vec::new();
        for r in &raw.rules {
            if r.name.trim().is_empty() {
                return Err("every cache rule needs a name".into());
            }
            let query = match &r.query_pattern {
                Some(p) => {
                    Some(Regex::new(p).map_err(|e| format!("rule {}: queryPattern: {e}", r.name))?)
                }
                None => None,
            };
            rules.push(Rule {
                name: r.name.clone(),
                routes: r.routes.clone(),
                tenants: r.tenants.clone(),
                models: r.models.clone(),
                query,
                cacheable: r.cacheable,
                ttl_seconds: r.ttl_seconds,
            });
        }
        Ok(Rules {
            default_ttl: raw.default_ttl_seconds,
            max_temperature: raw.max_temperature,
            allow_tools: raw.allow_tools,
            bypass,
            rules,
        })
    }

    /// Decides for one admit request (which must carry a cache query).
    pub fn eligibility(&self, req: &AdmitRequest) -> Eligibility {
        let Some(q) = &req.cache else {
            return Eligibility::Bypass {
                reason: "not_cacheable".into(),
            };
        };
        if q.has_tools && !self.allow_tools {
            return Eligibility::Bypass {
                reason: "tools".into(),
            };
        }
        if q.temperature.unwrap_or(1.0) > self.max_temperature {
            return Eligibility::Bypass {
                reason: "temperature".into(),
            };
        }
        if !q.query.is_empty() && self.bypass.iter().any(|r| r.is_match(&q.query)) {
            return Eligibility::Bypass {
                reason: "personal_or_time_sensitive".into(),
            };
        }
        for r in &self.rules {
            let route_ok =
                r.routes.is_empty() || r.routes.iter().any(|p| req.route.starts_with(p.as_str()));
            let tenant_ok = r.tenants.is_empty() || r.tenants.contains(&req.tenant);
            let model_ok =
                r.models.is_empty() || r.models.iter().any(|m| model_matches(m, &req.model));
            let query_ok = r.query.as_ref().is_none_or(|re| re.is_match(&q.query));
            if route_ok && tenant_ok && model_ok && query_ok {
                return if r.cacheable {
                    Eligibility::Cacheable {
                        ttl_seconds: r.ttl_seconds.unwrap_or(self.default_ttl),
                        rule: Some(r.name.clone()),
                    }
                } else {
                    Eligibility::Bypass {
                        reason: format!("rule:{}", r.name),
                    }
                };
            }
        }
        Eligibility::Cacheable {
            ttl_seconds: self.default_ttl,
            rule: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tollgate_wire::admit::CacheQuery;

    fn req(route: &str, tenant: &str, model: &str, query: &str) -> AdmitRequest {
        AdmitRequest {
            route: route.into(),
            tenant: tenant.into(),
            model: model.into(),
            cache: Some(CacheQuery {
                query: query.into(),
                lookup: true,
                store: true,
                ..CacheQuery::default()
            }),
            ..AdmitRequest::default()
        }
    }

    fn rules(json: &str) -> Rules {
        Rules::compile(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn defaults_cache_plain_questions_for_a_day() {
        let r = rules("{}");
        assert_eq!(
            r.eligibility(&req(
                "/v1/chat/completions",
                "t",
                "gpt-4o",
                "What is the boiling point of water?"
            )),
            Eligibility::Cacheable {
                ttl_seconds: 86400,
                rule: None
            }
        );
    }

    #[test]
    fn personal_and_time_sensitive_questions_bypass() {
        let r = rules("{}");
        for q in [
            "What's the weather today?",
            "Where is my order?",
            "What is the latest version of Rust?",
            "Email me at jane.doe@example.com",
            "Call +1 (555) 123-4567 please",
            "reset MY PASSWORD",
        ] {
            assert!(
                matches!(
                    r.eligibility(&req("/", "t", "m", q)),
                    Eligibility::Bypass { .. }
                ),
                "{q}"
            );
        }
        assert!(matches!(
            r.eligibility(&req("/", "t", "m", "What is a password manager?")),
            Eligibility::Cacheable { .. }
        ));
    }

    #[test]
    fn tools_and_temperature_bypass_unless_allowed() {
        let r = rules(r#"{"maxTemperature": 0.3}"#);
        let mut q = req("/", "t", "m", "hi");
        q.cache.as_mut().unwrap().temperature = Some(0.7);
        assert_eq!(
            r.eligibility(&q),
            Eligibility::Bypass {
                reason: "temperature".into()
            }
        );
        q.cache.as_mut().unwrap().temperature = None;
        assert_eq!(
            r.eligibility(&q),
            Eligibility::Bypass {
                reason: "temperature".into()
            },
            "absent = 1.0"
        );
        q.cache.as_mut().unwrap().temperature = Some(0.0);
        q.cache.as_mut().unwrap().has_tools = true;
        assert_eq!(
            r.eligibility(&q),
            Eligibility::Bypass {
                reason: "tools".into()
            }
        );
        assert!(matches!(
            rules(r#"{"allowTools": true}"#).eligibility(&q),
            Eligibility::Cacheable { .. }
        ));
    }

    #[test]
    fn first_matching_rule_decides() {
        let r = rules(
            r#"{"rules": [
            {"name": "no-batch", "tenants": ["batch"], "cacheable": false},
            {"name": "faq", "routes": ["/v1/chat"], "models": ["gpt-4o*"], "ttlSeconds": 60},
            {"name": "code", "queryPattern": "(?i)\\bcode\\b", "ttlSeconds": 5}
        ]}"#,
        );
        assert_eq!(
            r.eligibility(&req("/v1/chat/completions", "batch", "gpt-4o", "x")),
            Eligibility::Bypass {
                reason: "rule:no-batch".into()
            }
        );
        assert_eq!(
            r.eligibility(&req("/v1/chat/completions", "t", "gpt-4o-mini", "x")),
            Eligibility::Cacheable {
                ttl_seconds: 60,
                rule: Some("faq".into())
            }
        );
        assert_eq!(
            r.eligibility(&req("/v1/messages", "t", "claude", "show code")),
            Eligibility::Cacheable {
                ttl_seconds: 5,
                rule: Some("code".into())
            }
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(
            Rules::compile(
                &serde_json::from_str(r#"{"rules": [{"name": "x", "queryPattern": "("}]}"#)
                    .unwrap()
            )
            .is_err()
        );
        assert!(
            Rules::compile(&serde_json::from_str(r#"{"rules": [{"name": " "}]}"#).unwrap())
                .is_err()
        );
        assert!(serde_json::from_str::<RawRules>(r#"{"maxTemprature": 1}"#).is_err());
    }
}
