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
