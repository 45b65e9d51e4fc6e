//! Compact, versioned value encoding of an [`Entry`], shared by both backends.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0        u8        format version (1)
//! 1..9     u64       created_at
//! 9..25    [u8; 16]  tenant hash     (see [`Hashes`])
//! 25..41   [u8; 16]  model hash
//! 41..57   [u8; 16]  exact hash      (tenant + exact_key)
//! 57..61   u32       n = length of the JSON head
//! 61..61+n           JSON head: every field but `created_at` and `embedding`
//! then     u32       embedding dimension (u32::MAX = no embedding)
//! then     d × f32   the embedding
//! ```
//!
//! The fixed prefix lets a backend update its indexes on delete or eviction without parsing
//! JSON; the embedding is raw `f32`s (1.5 KB for 384 dimensions, against ~4 KB as JSON text, and
//! no float parsing on a full scan).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_wire::admit::CachedCompletion;

use crate::model::Entry;
use crate::store::StoreError;

const VERSION: u8 = 1;
const PREFIX_LEN: usize = 57;
const HEAD_AT: usize = PREFIX_LEN + 4;
const NO_EMBEDDING: u32 = u32::MAX;

/// 128-bit digests used in storage keys, so that no tenant name, model name or exact key text
/// ever appears in a key. Each is SHA-256 with a domain tag, truncated to 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hashes {
    pub tenant: [u8; 16],
    pub model: [u8; 16],
    pub exact: [u8; 16],
}

impl Hashes {
    pub fn of(entry: &Entry) -> Self {
        Hashes {
            tenant: tenant_hash(&entry.tenant),
            model: model_hash(&entry.model),
            exact: exact_hash(&entry.tenant, &entry.exact_key),
        }
    }
}

fn digest16(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

pub fn tenant_hash(tenant: &str) -> [u8; 16] {
    digest16(&[b"tollgate/tenant", tenant.as_bytes()])
}

pub fn model_hash(model: &str) -> [u8; 16] {
    digest16(&[b"tollgate/model", model.as_bytes()])
}

/// Hash of (tenant, exact key): the exact-lookup index key.
pub fn exact_hash(tenant: &str, exact_key: &str) -> [u8; 16] {
    digest16(&[b"tollgate/exact", tenant.as_bytes(), exact_key.as_bytes()])
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[derive(Serialize)]
struct HeadRef<'a> {
    id: u64,
    tenant: &'a str,
    partition: &'a str,
    exact_key: &'a str,
    model: &'a str,
    query: &'a str,
    embedding_model: &'a str,
    completion: &'a CachedCompletion,
    expires_at: u64,
}

#[derive(Deserialize)]
struct Head {
    id: u64,
    tenant: String,
    partition: String,
    exact_key: String,
    model: String,
    query: String,
    embedding_model: String,
    completion: CachedCompletion,
    expires_at: u64,
}

/// Encodes `entry` (with its precomputed `hashes`).
pub fn encode(entry: &Entry, hashes: &Hashes) -> Result<Vec<u8>, StoreError> {
    let head = serde_json::to_vec(&HeadRef {
        id: entry.id,
        tenant: &entry.tenant,
        partition: &entry.partition,
        exact_key: &entry.exact_key,
        model: &entry.model,
        query: &entry.query,
        embedding_model: &entry.embedding_model,
        completion: &entry.completion,
        expires_at: entry.expires_at,
    })
    .map_err(|e| StoreError::Corrupt(format!("cannot encode entry {}: {e}", entry.id)))?;
    let head_len = u32::try_from(head.len())
        .map_err(|_| StoreError::Corrupt(format!("entry {} too large", entry.id)))?;
    let dims = match &entry.embedding {
        Some(v) => u32::try_from(v.len())
            .ok()
            .filter(|&d| d != NO_EMBEDDING)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("entry {}: embedding too long", entry.id))
            })?,
        None => NO_EMBEDDING,
    };
    let emb_len = entry.embedding.as_ref().map_or(0, |v| v.len() * 4);
    let mut out = Vec::with_capacity(HEAD_AT + head.len() + 4 + emb_len);
    out.push(VERSION);
    out.extend_from_slice(&entry.created_at.to_le_bytes());
    out.extend_from_slice(&hashes.tenant);
    out.extend_from_slice(&hashes.model);
    out.extend_from_slice(&hashes.exact);
    out.extend_from_slice(&head_len.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&dims.to_le_bytes());
    if let Some(v) = &entry.embedding {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(out)
}

/// The fixed prefix of an encoded entry: enough to maintain indexes without a full decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub created_at: u64,
    pub hashes: Hashes,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("encoded entry: {what}"))
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], StoreError> {
    bytes
        .get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or_else(|| corrupt("truncated"))
}

pub fn decode_prefix(bytes: &[u8]) -> Result<Prefix, StoreError> {
    match bytes.first() {
        Some(&VERSION) => {}
        Some(v) => return Err(corrupt(&format!("unknown format version {v}"))),
        None => return Err(corrupt("empty")),
    }
    Ok(Prefix {
        created_at: u64::from_le_bytes(array(bytes, 1)?),
        hashes: Hashes {
            tenant: array(bytes, 9)?,
            model: array(bytes, 25)?,
            exact: array(bytes, 41)?,
        },
    })
}

/// Where the embedding part starts: an encoded entry is `head part ++ embedding part`.
fn split_at(bytes: &[u8]) -> Result<usize, StoreError> {
    decode_prefix(bytes)?;
    let head_len = u32::from_le_bytes(array(bytes, PREFIX_LEN)?) as usize;
    let end = HEAD_AT
        .checked_add(head_len)
        .ok_or_else(|| corrupt("bad head length"))?;
    if end > bytes.len() {
        return Err(corrupt("truncated head"));
    }
    Ok(end)
}

pub fn decode(bytes: &[u8]) -> Result<Entry, StoreError> {
    let at = split_at(bytes)?;
    decode_parts(&bytes[..at], &bytes[at..])
}

/// Decodes an entry from its head part (prefix and JSON) and embedding part.
fn decode_parts(head_part: &[u8], embedding_part: &[u8]) -> Result<Entry, StoreError> {
    let prefix = decode_prefix(head_part)?;
    let head_len = u32::from_le_bytes(array(head_part, PREFIX_LEN)?) as usize;
    if HEAD_AT.checked_add(head_len) != Some(head_part.len()) {
        return Err(corrupt("head length"));
    }
    let head: Head = serde_json::from_slice(&head_part[HEAD_AT..])
        .map_err(|e| corrupt(&format!("head: {e}")))?;
    let dims = u32::from_le_bytes(array(embedding_part, 0)?);
    let raw = &embedding_part[4..];
    let embedding = if dims == NO_EMBEDDING {
        if !raw.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        None
    } else {
        if raw.len() != dims as usize * 4 {
            return Err(corrupt("embedding length"));
        }
        Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    };
    Ok(Entry {
        id: head.id,
        tenant: head.tenant,
        partition: head.partition,
        exact_key: head.exact_key,
        model: head.model,
        query: head.query,
        embedding,
        embedding_model: head.embedding_model,
        completion: head.completion,
        created_at: prefix.created_at,
        expires_at: head.expires_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tollgate_wire::Usage;

    fn entry(embedding: Option<Vec<f32>>) -> Entry {
        Entry {
            id: Entry::id_for("acme", "k1"),
            tenant: "acme".into(),
            partition: "p".repeat(64),
            exact_key: "k1".into(),
            model: "gpt-4o-mini".into(),
            query: "What is the capital of France? \"quoted\" ünïcode".into(),
            embedding,
            embedding_model: "all-MiniLM-L6-v2".into(),
            completion: CachedCompletion {
                entry_id: "e1".into(),
                model: "gpt-4o-mini".into(),
                text: "Paris.".into(),
                finish_reason: "stop".into(),
                usage: Usage {
                    input_tokens: 12,
                    output_tokens: 3,
                    ..Usage::default()
                },
                cost_pico: Some(42),
                created_at: 1_700_000_000,
            },
            created_at: 1_700_000_000,
            expires_at: 1_700_086_400,
        }
    }

    #[test]
    fn round_trips_with_and_without_embedding() {
        let special = vec![0.0, -0.0, 1.5, f32::MIN_POSITIVE, f32::MAX, -1e-30];
        for e in [
            entry(None),
            entry(Some(vec![])),
            entry(Some(special)),
            entry(Some((0..384).map(|i| i as f32 / 384.0).collect())),
        ] {
            let h = Hashes::of(&e);
            let bytes = encode(&e, &h).unwrap();
            let back = decode(&bytes).unwrap();
            assert_eq!(back, e);
            // Bit-exact floats, not just PartialEq (-0.0 == 0.0).
            let bits = |e: &Entry| {
                e.embedding
                    .as_ref()
                    .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            };
            assert_eq!(bits(&back), bits(&e));
            let at = split_at(&bytes).unwrap();
            assert_eq!(decode_parts(&bytes[..at], &bytes[at..]).unwrap(), e);
            let p = decode_prefix(&bytes).unwrap();
            assert_eq!(p.created_at, e.created_at);
            assert_eq!(p.hashes, h);
        }
    }

    #[test]
    fn embedding_is_compact() {
        // Typical normalised-embedding components, e.g. -0.0412383.
        let e = entry(Some(
            (0..384)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 1211.0)
                .collect(),
        ));
        let bytes = encode(&e, &Hashes::of(&e)).unwrap();
        let json = serde_json::to_vec(&e).unwrap();
        assert!(bytes.len() < 2200, "{}", bytes.len());
        assert!(
            bytes.len() * 2 < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
    }

    #[test]
    fn rejects_damaged_values() {
        let e = entry(Some(vec![1.0; 8]));
        let bytes = encode(&e, &Hashes::of(&e)).unwrap();
        assert!(matches!(decode(&[]), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode(&[9]), Err(StoreError::Corrupt(_))));
        for cut in [1, 30, 60, 70, bytes.len() - 1] {
            assert!(
                matches!(decode(&bytes[..cut]), Err(StoreError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(StoreError::Corrupt(_))));
        let mut bad_head = bytes;
        bad_head[HEAD_AT] = b'!';
        assert!(matches!(decode(&bad_head), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn hashes_separate_domains_and_fields() {
        assert_ne!(tenant_hash("a"), model_hash("a"));
        // Length-prefixed parts: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(exact_hash("ab", "c"), exact_hash("a", "bc"));
        assert_eq!(exact_hash("t", "k"), exact_hash("t", "k"));
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
