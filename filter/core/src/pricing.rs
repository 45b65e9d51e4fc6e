//! Model prices and cost arithmetic.
//!
//! Prices come from LiteLLM's MIT-licensed `model_prices_and_context_window` table, trimmed to
//! text models by `scripts/update-prices.py` and embedded as `filter/data/prices.json`. Operators
//! override or add models in the filter config (same LiteLLM field names, or per-million prices).
//!
//! Money is integer **pico-USD** (1e-12 USD) per token, so request costs are exact sums of
//! integers; metrics export micro-USD.

use std::collections::HashMap;

use serde::Deserialize;
use tollgate_wire::Usage;

/// The embedded LiteLLM-derived price table.
pub const BUILTIN_PRICES_JSON: &str = include_str!("../../data/prices.json");

/// Pico-USD in one USD.
pub const PICO_PER_USD: u64 = 1_000_000_000_000;

/// Prices of one model in pico-USD per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Price {
    /// Uncached input token.
    pub input: u64,
    /// Output token.
    pub output: u64,
    /// Input token read from the provider's prompt cache; `None` bills it as `input`.
    pub cache_read: Option<u64>,
    /// Input token written to the provider's prompt cache; `None` bills it as `input`.
    pub cache_write: Option<u64>,
}

impl Price {
    /// Cost of `usage` in pico-USD (saturating; never panics).
    pub fn cost(&self, usage: &Usage) -> u64 {
        let read = self.cache_read.unwrap_or(self.input);
        let write = self.cache_write.unwrap_or(self.input);
        usage
            .input_tokens
            .saturating_mul(self.input)
            .saturating_add(usage.cache_read_tokens.saturating_mul(read))
            .saturating_add(usage.cache_write_tokens.saturating_mul(write))
            .saturating_add(usage.output_tokens.saturating_mul(self.output))
    }
}

/// Everything the filter knows about one model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelInfo {
    pub price: Price,
    pub provider: String,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

/// One entry in LiteLLM's format (the fields we use), or per-million prices for hand overrides.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelPrice {
    #[serde(default)]
    pub litellm_provider: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub input_cost_per_token: Option<f64>,
    #[serde(default)]
    pub output_cost_per_token: Option<f64>,
    #[serde(default)]
    pub cache_read_input_token_cost: Option<f64>,
    #[serde(default)]
    pub cache_creation_input_token_cost: Option<f64>,
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// USD per million input tokens (alternative to `input_cost_per_token`).
    #[serde(default, rename = "inputPerMillion")]
    pub input_per_million: Option<f64>,
    #[serde(default, rename = "outputPerMillion")]
    pub output_per_million: Option<f64>,
    #[serde(default, rename = "cacheReadPerMillion")]
    pub cache_read_per_million: Option<f64>,
    #[serde(default, rename = "cacheWritePerMillion")]
    pub cache_write_per_million: Option<f64>,
}

#[derive(Deserialize)]
struct RawTable {
    models: HashMap<String, RawModelPrice>,
}

fn per_token_to_pico(usd_per_token: f64) -> Result<u64, String> {
    if !usd_per_token.is_finite() || usd_per_token < 0.0 {
        return Err(format!(
            "price must be a finite non-negative number, got {usd_per_token}"
        ));
    }
    let pico = (usd_per_token * PICO_PER_USD as f64).round();
    if pico > 1e15 {
        return Err(format!(
            "price {usd_per_token} USD per token is implausibly high"
        ));
    }
    Ok(pico as u64)
}

fn pick(per_token: Option<f64>, per_million: Option<f64>) -> Result<Option<u64>, String> {
    match (per_token, per_million) {
        (Some(_), Some(_)) => Err("give a price per token or per million, not both".into()),
        (Some(t), None) => per_token_to_pico(t).map(Some),
        (None, Some(m)) => per_token_to_pico(m / 1_000_000.0).map(Some),
        (None, None) => Ok(None),
    }
}

impl RawModelPrice {
    /// Validates and converts to integer prices.
    pub fn compile(&self) -> Result<ModelInfo, String> {
        let input = pick(self.input_cost_per_token, self.input_per_million)?
            .ok_or("missing input price (input_cost_per_token or inputPerMillion)")?;
        let output = pick(self.output_cost_per_token, self.output_per_million)?
            .ok_or("missing output price (output_cost_per_token or outputPerMillion)")?;
        Ok(ModelInfo {
            price: Price {
                input,
                output,
                cache_read: pick(
                    self.cache_read_input_token_cost,
                    self.cache_read_per_million,
                )?,
                cache_write: pick(
                    self.cache_creation_input_token_cost,
                    self.cache_write_per_million,
                )?,
            },
            provider: self.litellm_provider.clone().unwrap_or_default(),
            max_input_tokens: self.max_input_tokens,
            max_output_tokens: self.max_output_tokens,
        })
    }
}

/// Prices by model name, with aliases.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    models: HashMap<String, ModelInfo>,
    aliases: HashMap<String, String>,
}

/// Provider prefixes clients sometimes put in front of model names (LiteLLM style).
const PROVIDER_PREFIXES: [&str; 3] = ["openai/", "anthropic/", "azure/"];

impl PriceTable {
    /// The embedded table.
    pub fn builtin() -> Result<Self, String> {
        Self::from_json(BUILTIN_PRICES_JSON)
    }

    /// Parses a table in `prices.json` layout (`{"models": {name: LiteLLM entry}}`).
    pub fn from_json(json: &str) -> Result<Self, String> {
        let raw: RawTable = serde_json::from_str(json).map_err(|e| format!("price table: {e}"))?;
        let mut table = PriceTable::default();
        for (name, entry) in raw.models {
            let info = entry
                .compile()
                .map_err(|e| format!("price table, model {name}: {e}"))?;
            table.models.insert(name, info);
        }
        Ok(table)
    }

    /// Adds or replaces a model.
    pub fn insert(&mut self, name: &str, info: ModelInfo) {
        self.models.insert(name.to_string(), info);
    }

    /// Makes `alias` resolve to `target` (which must exist).
    pub fn alias(&mut self, alias: &str, target: &str) -> Result<(), String> {
        if !self.models.contains_key(target) {
            return Err(format!("alias {alias} points at unknown model {target}"));
        }
        self.aliases.insert(alias.to_string(), target.to_string());
        Ok(())
    }

    /// Number of priced models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Finds a model: exact name, alias, without a provider prefix, then lower-cased.
    pub fn lookup(&self, model: &str) -> Option<(&str, &ModelInfo)> {
        let find = |name: &str| {
            let name = self.aliases.get(name).map(String::as_str).unwrap_or(name);
            self.models
                .get_key_value(name)
                .map(|(k, v)| (k.as_str(), v))
        };
        if let Some(hit) = find(model) {
            return Some(hit);
        }
        for prefix in PROVIDER_PREFIXES {
            if let Some(rest) = model.strip_prefix(prefix) {
                return self.lookup(rest);
            }
        }
        let lower = model.to_ascii_lowercase();
        if lower != model {
            return find(&lower);
        }
        None
    }
}

/// Formats pico-USD as a plain decimal USD string without trailing zeros ("0.0000125", "3").
pub fn format_usd(pico: u64) -> String {
    let whole = pico / PICO_PER_USD;
    let frac = pico % PICO_PER_USD;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:012}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Converts pico-USD to micro-USD for metrics (rounded to nearest).
pub fn pico_to_micro(pico: u64) -> u64 {
    pico.saturating_add(500_000) / 1_000_000
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn builtin_table_has_current_models_with_litellm_prices() {
        let t = PriceTable::builtin().unwrap();
        assert!(t.len() > 100, "only {} models", t.len());
        let (_, gpt4o) = t.lookup("gpt-4o").unwrap();
        assert_eq!(gpt4o.price.input, 2_500_000); // 2.5e-6 USD
        assert_eq!(gpt4o.price.output, 10_000_000);
        assert_eq!(gpt4o.price.cache_read, Some(1_250_000));
        let (_, sonnet) = t.lookup("claude-sonnet-4-5").unwrap();
        assert_eq!(sonnet.price.cache_write, Some(3_750_000));
        assert_eq!(sonnet.provider, "anthropic");
        assert!(t.lookup("gpt-4o-mini").is_some());
        assert!(t.lookup("gpt-3.5-turbo").is_some());
    }

    #[test]
    fn lookup_strips_provider_prefix_and_case_and_follows_aliases() {
        let mut t = PriceTable::builtin().unwrap();
        assert_eq!(t.lookup("openai/gpt-4o").unwrap().0, "gpt-4o");
        assert_eq!(t.lookup("GPT-4o").unwrap().0, "gpt-4o");
        t.alias("house-model", "gpt-4o-mini").unwrap();
        assert_eq!(t.lookup("house-model").unwrap().0, "gpt-4o-mini");
        assert!(t.alias("x", "no-such-model").is_err());
        assert!(t.lookup("no-such-model").is_none());
    }

    #[test]
    fn cost_uses_cached_and_cache_write_prices() {
        let p = Price {
            input: 3_000_000,
            output: 15_000_000,
            cache_read: Some(300_000),
            cache_write: Some(3_750_000),
        };
        let u = Usage {
            input_tokens: 100,
            cache_read_tokens: 1000,
            cache_write_tokens: 10,
            output_tokens: 50,
            reasoning_tokens: 0,
        };
        assert_eq!(
            p.cost(&u),
            100 * 3_000_000 + 1000 * 300_000 + 10 * 3_750_000 + 50 * 15_000_000
        );
        let no_cache_prices = Price {
            cache_read: None,
            cache_write: None,
            ..p
        };
        assert_eq!(no_cache_prices.cost(&u), 1110 * 3_000_000 + 50 * 15_000_000);
    }

    #[test]
    fn cost_saturates_instead_of_overflowing() {
        let p = Price {
            input: u64::MAX / 2,
            output: u64::MAX / 2,
            cache_read: None,
            cache_write: None,
        };
        let u = Usage {
            input_tokens: u64::MAX,
            output_tokens: 3,
            ..Usage::default()
        };
        assert_eq!(p.cost(&u), u64::MAX);
    }

    #[test]
    fn per_million_overrides_and_validation() {
        let raw: RawModelPrice =
            serde_json::from_str(r#"{"inputPerMillion": 0.2, "outputPerMillion": 0.6}"#).unwrap();
        let info = raw.compile().unwrap();
        assert_eq!(info.price.input, 200_000);
        assert_eq!(info.price.output, 600_000);
        for bad in [
            r#"{"outputPerMillion": 0.6}"#,
            r#"{"inputPerMillion": -1, "outputPerMillion": 0.6}"#,
            r#"{"input_cost_per_token": 1e-6, "inputPerMillion": 1, "outputPerMillion": 0.6}"#,
        ] {
            let raw: RawModelPrice = serde_json::from_str(bad).unwrap();
            assert!(raw.compile().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<RawModelPrice>(r#"{"inputPerMilion": 1}"#).is_err());
    }

    #[test]
    fn usd_formatting_is_exact() {
        assert_eq!(format_usd(0), "0");
        assert_eq!(format_usd(2_500_000), "0.0000025");
        assert_eq!(format_usd(PICO_PER_USD * 3), "3");
        assert_eq!(format_usd(PICO_PER_USD + 1), "1.000000000001");
        assert_eq!(pico_to_micro(2_500_000), 3);
        assert_eq!(pico_to_micro(2_400_000), 2);
    }
}
