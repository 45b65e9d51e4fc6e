//! Tenant identification from request headers.

use sha2::{Digest, Sha256};

use crate::config::{TenantPolicy, TenantSource, UserSource, is_valid_tenant_id};

/// Who a request belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub tenant: String,
    /// `header`, `api-key` or `default`.
    pub source: &'static str,
    /// Hash of the API key, when one was sent (never the key itself).
    pub key_hash: Option<String>,
    /// The user inside the tenant, from `tenant.userSources`.
    pub user: Option<String>,
}

/// Pseudo-header under which the glue passes the peer principal (`source.principal`) to
/// [`identify`]; clients cannot send pseudo-headers of their own.
pub const PRINCIPAL_PSEUDO_HEADER: &str = ":tollgate-principal";

fn is_valid_principal(p: &str) -> bool {
    !p.is_empty() && p.len() <= 256 && p.bytes().all(|b| b.is_ascii_graphic())
}

fn identify_user(
    policy: &TenantPolicy,
    headers: &[(String, String)],
) -> Result<Option<String>, String> {
    for source in &policy.user_sources {
        match source {
            UserSource::Header(name) => {
                if let Some(v) = header(headers, name) {
                    let v = v.trim();
                    if !is_valid_tenant_id(v) {
                        return Err(format!(
                            "header {name} must be 1-64 characters of letters, digits and -_.@:"
                        ));
                    }
                    return Ok(Some(v.to_string()));
                }
            }
            UserSource::Principal => {
                if let Some(p) =
                    header(headers, PRINCIPAL_PSEUDO_HEADER).filter(|p| is_valid_principal(p))
                {
                    return Ok(Some(p.to_string()));
                }
            }
        }
    }
    Ok(None)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The API key of a request: `authorization: Bearer …` (OpenAI), `x-api-key` (Anthropic) or
/// `api-key` (Azure OpenAI).
pub fn api_key(headers: &[(String, String)]) -> Option<&str> {
    if let Some(auth) = header(headers, "authorization") {
        let auth = auth.trim();
        if let Some(tok) = auth
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .and(auth.get(7..))
        {
            let tok = tok.trim();
            if !tok.is_empty() {
                return Some(tok);
            }
        }
    }
    ["x-api-key", "api-key"]
        .iter()
        .filter_map(|h| header(headers, h))
        .map(str::trim)
        .find(|k| !k.is_empty())
}

/// `sha256(salt || key)`, first 16 hex digits: stable per deployment, not reversible.
pub fn hash_key(salt: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Identifies the tenant. A tenant header with an invalid value is an error (the client must fix
/// it), not a silent fallback that would bill someone else.
pub fn identify(policy: &TenantPolicy, headers: &[(String, String)]) -> Result<Identity, String> {
    let key_hash = api_key(headers).map(|k| hash_key(&policy.key_salt, k));
    let user = identify_user(policy, headers)?;
    for source in &policy.sources {
        match source {
            TenantSource::Header(name) => {
                if let Some(v) = header(headers, name) {
                    let v = v.trim();
                    if !is_valid_tenant_id(v) {
                        return Err(format!(
                            "header {name} must be 1-64 characters of letters, digits and -_.@:"
                        ));
                    }
                    return Ok(Identity {
                        tenant: v.to_string(),
                        source: "header",
                        key_hash,
                        user,
                    });
                }
            }
            TenantSource::ApiKey => {
                if let Some(h) = &key_hash {
                    return Ok(Identity {
                        tenant: format!("key:{h}"),
                        source: "api-key",
                        key_hash,
                        user,
                    });
                }
            }
        }
    }
    Ok(Identity {
        tenant: policy.default.clone(),
        source: "default",
        key_hash,
        user,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Config;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policy() -> TenantPolicy {
        Config::from_json(b"").unwrap().tenant
    }

    #[test]
    fn header_wins_then_api_key_then_default() {
        let p = policy();
        let id = identify(
            &p,
            &h(&[
                ("x-tollgate-tenant", "team-a"),
                ("authorization", "Bearer sk-1"),
            ]),
        )
        .unwrap();
        assert_eq!((id.tenant.as_str(), id.source), ("team-a", "header"));
        assert_eq!(id.key_hash.as_deref(), Some(hash_key("", "sk-1").as_str()));
        let id = identify(&p, &h(&[("authorization", "Bearer sk-1")])).unwrap();
        assert_eq!(id.tenant, format!("key:{}", hash_key("", "sk-1")));
        assert_eq!(id.source, "api-key");
        let id = identify(&p, &h(&[("x-api-key", "sk-ant-2")])).unwrap();
        assert_eq!(id.tenant, format!("key:{}", hash_key("", "sk-ant-2")));
        let id = identify(&p, &h(&[])).unwrap();
        assert_eq!((id.tenant.as_str(), id.source), ("anonymous", "default"));
    }

    #[test]
    fn keys_are_hashed_with_salt_and_never_kept() {
        let a = hash_key("", "sk-secret");
        assert_eq!(a.len(), 16);
        assert!(!a.contains("secret"));
        assert_ne!(a, hash_key("salt", "sk-secret"));
        assert_ne!(a, hash_key("", "sk-secreT"));
        // Known vector: sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(hash_key("", "abc"), "ba7816bf8f01cfea");
    }

    #[test]
    fn invalid_tenant_header_is_an_error() {
        let err = identify(&policy(), &h(&[("x-tollgate-tenant", "a b")])).unwrap_err();
        assert!(err.contains("x-tollgate-tenant"));
    }

    #[test]
    fn bearer_parsing_is_lenient_on_case_and_strict_on_empty() {
        assert_eq!(
            api_key(&h(&[("Authorization", "bearer  tok ")])),
            Some("tok")
        );
        assert_eq!(api_key(&h(&[("authorization", "Bearer ")])), None);
        assert_eq!(
            api_key(&h(&[("authorization", "Basic abc"), ("api-key", "az")])),
            Some("az")
        );
        assert_eq!(api_key(&h(&[("authorization", "Bé")])), None);
    }
}
