//! Prompt token counting: which BPE a model uses, chat-format overheads, and a per-VM memo of
//! long texts so a growing conversation pays only for its newest turns.

use std::collections::HashMap;

use tollgate_bpe::Encoding;

use crate::config::TokenizerPolicy;

/// How a model's tokens are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokenizer {
    /// The model's own BPE: counts are exact.
    Exact(Encoding),
    /// No public tokenizer (Claude, unknown models): an estimate from `Encoding`, scaled by
    /// `ratio_milli / 1000`.
    Estimate {
        encoding: Encoding,
        ratio_milli: u64,
    },
}

impl Tokenizer {
    pub fn encoding(self) -> Encoding {
        match self {
            Tokenizer::Exact(e) | Tokenizer::Estimate { encoding: e, .. } => e,
        }
    }

    pub fn is_exact(self) -> bool {
        matches!(self, Tokenizer::Exact(_))
    }

    /// Applies the estimate ratio to a raw count.
    pub fn scale(self, raw: u64) -> u64 {
        match self {
            Tokenizer::Exact(_) => raw,
            Tokenizer::Estimate { ratio_milli, .. } => {
                raw.saturating_mul(ratio_milli).div_ceil(1000)
            }
        }
    }
}

const O200K_FAMILIES: [&str; 9] = [
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "chatgpt-4o",
    "gpt-oss",
];
const CL100K_FAMILIES: [&str; 6] = [
    "gpt-4",
    "gpt-3.5",
    "gpt-35",
    "text-embedding-3",
    "text-embedding-ada-002",
    "davinci-002",
];

/// Picks the tokenizer for a model name.
pub fn tokenizer_for(model: &str, policy: &TokenizerPolicy) -> Tokenizer {
    if let Some((_, enc)) = policy.models.iter().find(|(p, _)| p.matches(model)) {
        return Tokenizer::Exact(*enc);
    }
    let base = model.strip_prefix("openai/").unwrap_or(model);
    let base = base.strip_prefix("ft:").unwrap_or(base);
    if O200K_FAMILIES.iter().any(|f| base.starts_with(f)) {
        return Tokenizer::Exact(Encoding::O200kBase);
    }
    if CL100K_FAMILIES.iter().any(|f| base.starts_with(f)) || base == "babbage-002" {
        return Tokenizer::Exact(Encoding::Cl100kBase);
    }
    if base.starts_with("claude") || base.starts_with("anthropic/") {
        return Tokenizer::Estimate {
            encoding: Encoding::Cl100kBase,
            ratio_milli: policy.anthropic_ratio_milli,
        };
    }
    Tokenizer::Estimate {
        encoding: Encoding::Cl100kBase,
        ratio_milli: 1000,
    }
}

/// Texts shorter than this are counted directly: hashing them costs about as much as counting.
pub const MEMO_MIN_BYTES: usize = 256;

/// A bounded memo of token counts for long texts (system prompts, earlier turns, tool schemas).
///
/// Keyed by encoding, length and a seeded 64-bit hash. A collision could only mis-estimate a
/// prompt (final metering uses the provider's usage); the seed differs per VM.
#[derive(Debug)]
pub struct CountCache {
    map: HashMap<(u8, u32, u64), u32>,
    capacity: usize,
    seed: u64,
    pub hits: u64,
    pub misses: u64,
}

impl CountCache {
    pub fn new(capacity: usize, seed: u64) -> Self {
        CountCache {
            map: HashMap::new(),
            capacity,
            seed,
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Counts `text` with `enc`, memoising long texts.
    pub fn count(&mut self, enc: Encoding, text: &str) -> u64 {
        #[cfg(feature = "free-count")]
        {
            let _ = enc;
            return text.len() as u64 / 4;
        }
        #[allow(unreachable_code)]
        if text.len() < MEMO_MIN_BYTES || self.capacity == 0 {
            return enc.count(text) as u64;
        }
        let key = (
            enc as u8,
            text.len() as u32,
            hash64(self.seed, text.as_bytes()),
        );
        if let Some(&n) = self.map.get(&key) {
            self.hits += 1;
            return u64::from(n);
        }
        self.misses += 1;
        let n = enc.count(text);
        if self.map.len() >= self.capacity {
            // Simple and bounded: start over. Conversations re-warm it within one request.
            self.map.clear();
        }
        self.map.insert(key, u32::try_from(n).unwrap_or(u32::MAX));
        n as u64
    }
}

/// A fast seeded 64-bit hash (FxHash-style mixing over 8-byte words, with a final avalanche).
///
/// Four independent lanes take 32 bytes per step, so long texts (a 32 KB turn) hash at memory
/// speed instead of waiting on one multiply chain; the rest goes through one lane.
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K);
    let mut blocks = bytes.chunks_exact(32);
    if bytes.len() >= 32 {
        let mut lanes = [h, h ^ 1, h ^ 2, h ^ 3];
        for b in &mut blocks {
            for (lane, c) in lanes.iter_mut().zip(b.chunks_exact(8)) {
                *lane = mix(*lane, word(c));
            }
        }
        h = lanes.iter().fold(h, |h, &l| mix(h, l));
    }
    for c in blocks.remainder().chunks(8) {
        h = mix(h, word(c));
    }
    // murmur3 fmix64
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// OpenAI chat framing, per the OpenAI cookbook ("How to count tokens with tiktoken"):
/// every message costs 3 tokens plus its role and content, a `name` adds 1, and every reply is
/// primed with 3 tokens.
pub const TOKENS_PER_MESSAGE: u64 = 3;
pub const TOKENS_PER_NAME: u64 = 1;
pub const REPLY_PRIMING: u64 = 3;

/// Image inputs: OpenAI bills low-detail images at 85 tokens; high/auto detail depends on the
/// image size (85 + 170 per 512px tile), which the filter does not decode: 765 is a 1024x1024 image.
pub const IMAGE_LOW_DETAIL_TOKENS: u64 = 85;
pub const IMAGE_DEFAULT_TOKENS: u64 = 765;

/// Anthropic framing estimate: per message and per request.
pub const ANTHROPIC_TOKENS_PER_MESSAGE: u64 = 3;
pub const ANTHROPIC_BASE_TOKENS: u64 = 5;

/// Renders OpenAI function/tool definitions the way the model sees them (a TypeScript-like
/// `namespace functions`), following the widely used `openai-chat-tokens` estimator. Counting this
/// text approximates the hidden tokens tools add to a prompt.
pub fn render_functions(functions: &[&serde_json::Value]) -> String {
    use serde_json::Value;
    let mut out = String::from("namespace functions {\n\n");
    for f in functions {
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            out.push_str("// ");
            out.push_str(d);
            out.push('\n');
        }
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        out.push_str("type ");
        out.push_str(name);
        out.push_str(" = (");
        if let Some(params) = f.get("parameters")
            && params
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| !p.is_empty())
        {
            out.push_str("_: {\n");
            render_object(params, 0, &mut out);
            out.push('}');
        }
        out.push_str(") => any;\n\n");
    }
    out.push_str("} // namespace functions");
    out
}

fn render_object(schema: &serde_json::Value, depth: usize, out: &mut String) {
    use serde_json::Value;
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in props {
        if let Some(d) = prop.get("description").and_then(Value::as_str) {
            out.push_str("// ");
            out.push_str(d);
            out.push('\n');
        }
        out.push_str(name);
        if !required.contains(&name.as_str()) {
            out.push('?');
        }
        out.push_str(": ");
        render_type(prop, depth, out);
        out.push_str(",\n");
    }
}

fn render_type(prop: &serde_json::Value, depth: usize, out: &mut String) {
    use serde_json::Value;
    if depth > 16 {
        out.push_str("any");
        return;
    }
    if let Some(values) = prop.get("enum").and_then(Value::as_array) {
        let parts: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        out.push_str(&parts.join(" | "));
        return;
    }
    match prop.get("type").and_then(Value::as_str) {
        Some("string") => out.push_str("string"),
        Some("integer") | Some("number") => out.push_str("number"),
        Some("boolean") => out.push_str("boolean"),
        Some("null") => out.push_str("null"),
        Some("array") => {
            match prop.get("items") {
                Some(items) => render_type(items, depth + 1, out),
                None => out.push_str("any"),
            }
            out.push_str("[]");
        }
        Some("object") => {
            out.push_str("{\n");
            render_object(prop, depth + 1, out);
            out.push('}');
        }
        _ => out.push_str("any"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn policy() -> TokenizerPolicy {
        Config::from_json(b"").unwrap().tokenizer
    }

    #[test]
    fn model_families_pick_the_right_encoding() {
        let p = policy();
        for m in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "gpt-4.1-nano",
            "gpt-5",
            "o3-mini",
            "o1",
            "ft:gpt-4o:org::id",
        ] {
            assert_eq!(
                tokenizer_for(m, &p),
                Tokenizer::Exact(Encoding::O200kBase),
                "{m}"
            );
        }
        for m in ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "gpt-4-0613"] {
            assert_eq!(
                tokenizer_for(m, &p),
                Tokenizer::Exact(Encoding::Cl100kBase),
                "{m}"
            );
        }
        let claude = tokenizer_for("claude-sonnet-4-5", &p);
        assert!(!claude.is_exact());
        assert_eq!(claude.scale(100), 110);
        assert!(!tokenizer_for("llama-3.1-70b", &p).is_exact());
    }

    #[test]
    fn config_overrides_take_precedence() {
        let c = Config::from_json(
            br#"{"tokenizer":{"models":{"llama*":"o200k_base","gpt-4o":"cl100k_base"}}}"#,
        )
        .unwrap();
        assert_eq!(
            tokenizer_for("llama-3", &c.tokenizer),
            Tokenizer::Exact(Encoding::O200kBase)
        );
        assert_eq!(
            tokenizer_for("gpt-4o", &c.tokenizer),
            Tokenizer::Exact(Encoding::Cl100kBase)
        );
    }

    #[test]
    fn memo_returns_the_same_counts_and_stays_bounded() {
        let mut cache = CountCache::new(4, 7);
        let texts: Vec<String> = (0..10)
            .map(|i| format!("{i} {}", "lorem ipsum dolor sit amet ".repeat(20)))
            .collect();
        for _ in 0..2 {
            for t in &texts {
                assert_eq!(
                    cache.count(Encoding::O200kBase, t),
                    Encoding::O200kBase.count(t) as u64
                );
                assert!(cache.len() <= 4);
            }
        }
        let mut cache = CountCache::new(100, 7);
        let t = &texts[0];
        cache.count(Encoding::Cl100kBase, t);
        cache.count(Encoding::Cl100kBase, t);
        assert_eq!((cache.hits, cache.misses), (1, 1));
        // A different encoding is a different entry.
        assert_eq!(
            cache.count(Encoding::O200kBase, t),
            Encoding::O200kBase.count(t) as u64
        );
        assert_eq!(cache.misses, 2);
    }

    #[test]
    fn hash_depends_on_every_byte_and_the_seed() {
        let a = "x".repeat(300);
        // Every position (each of the four lanes, the 8-byte tail words, the last partial word)
        // changes the hash, and the same word in two different lanes hashes differently.
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(hash64(1, a.as_bytes())));
        for i in 0..a.len() {
            let mut b = a.clone().into_bytes();
            b[i] = b'y';
            assert!(seen.insert(hash64(1, &b)), "byte {i} is not hashed");
        }
        let mut swapped = a.clone().into_bytes();
        swapped[..8].copy_from_slice(b"yyyyyyyy");
        let mut other = a.clone().into_bytes();
        other[8..16].copy_from_slice(b"yyyyyyyy");
        assert_ne!(hash64(1, &swapped), hash64(1, &other));
        assert_ne!(hash64(1, a.as_bytes()), hash64(2, a.as_bytes()));
        assert_ne!(hash64(1, b"ab"), hash64(1, b"ab\0"));
        let long = "y".repeat(64);
        assert_ne!(
            hash64(1, long.as_bytes()),
            hash64(1, &long.as_bytes()[..63])
        );
    }

    #[test]
    fn functions_render_as_typescript_namespace() {
        let f = json!({
            "name": "get_weather",
            "description": "Get the weather",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "array", "items": {"type": "integer"}}
            }, "required": ["city"]}
        });
        let s = render_functions(&[&f]);
        assert!(
            s.contains(
                "// Get the weather\ntype get_weather = (_: {\n// City name\ncity: string,\n"
            ),
            "{s}"
        );
        assert!(s.contains("unit?: \"c\" | \"f\",\n"), "{s}");
        assert!(s.contains("days?: number[],\n"), "{s}");
        assert!(s.ends_with("} // namespace functions"));
    }
}
