//! Provider-looking ids and timestamps.

use super::inject::Provider;
use super::text::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

fn rng() -> Rng {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Rng::new(nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn random_chars(alphabet: &[u8], len: usize) -> String {
    let mut r = rng();
    (0..len)
        .map(|_| {
            let i = r.below(alphabet.len());
            char::from(alphabet.get(i).copied().unwrap_or(b'0'))
        })
        .collect()
}

/// Unix time in seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `chatcmpl-` + 29 base62 characters.
pub fn chat_completion_id() -> String {
    format!("chatcmpl-{}", random_chars(BASE62, 29))
}

/// `cmpl-` + 29 base62 characters.
pub fn completion_id() -> String {
    format!("cmpl-{}", random_chars(BASE62, 29))
}

/// `resp_` + 48 hex characters.
pub fn response_id() -> String {
    format!("resp_{}", random_chars(HEX, 48))
}

/// Responses API output item id: `msg_` + 48 hex characters.
pub fn response_item_id() -> String {
    format!("msg_{}", random_chars(HEX, 48))
}

/// Anthropic message id: `msg_01` + 22 base62 characters.
pub fn message_id() -> String {
    format!("msg_01{}", random_chars(BASE62, 22))
}

/// A request id in the provider's style.
pub fn request_id(provider: Provider) -> String {
    match provider {
        Provider::OpenAi => format!("req_{}", random_chars(HEX, 32)),
        Provider::Anthropic => format!("req_011C{}", random_chars(BASE62, 20)),
    }
}

/// A fixed, OpenAI-looking system fingerprint.
pub const SYSTEM_FINGERPRINT: &str = "fp_5f3a1c9e0d";
