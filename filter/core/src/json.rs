//! A tiny, allocation-free scanner over the top level of a JSON object.
//!
//! The filter rewrites a handful of top-level fields (`max_tokens`, later `model`) in request
//! bodies that may be tens of kilobytes long. Re-serialising a parsed `serde_json::Value` would
//! reorder keys, reformat numbers and cost time proportional to the whole body; instead we find the
//! byte span of the member and splice. The body has already been validated by `serde_json` before
//! any splice happens, so the scanner may assume well-formed JSON but still never panics on
//! malformed input (it returns `None`).

/// Byte spans of one top-level member: `"key": value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Span of the key including its quotes.
    pub key: (usize, usize),
    /// Span of the value.
    pub value: (usize, usize),
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Returns the index just past the string starting at `i` (which must be a `"`).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// Returns the index just past the JSON value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            // number, true, false, null
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Lists the top-level members of a JSON object, or `None` if `body` is not an object.
pub fn members(body: &[u8]) -> Option<Vec<Member>> {
    let mut out = Vec::new();
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(body, i + 1);
    if body.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        let key_end = skip_string(body, i)?;
        let key = (i, key_end);
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(body, i + 1);
        let value_end = skip_value(body, i)?;
        out.push(Member {
            key,
            value: (i, value_end),
        });
        i = skip_ws(body, value_end);
        match body.get(i)? {
            b',' => i = skip_ws(body, i + 1),
            b'}' => return Some(out),
            _ => return None,
        }
    }
}

fn key_is(body: &[u8], m: &Member, key: &str) -> bool {
    // Keys we rewrite are plain ASCII without escapes.
    body.get(m.key.0 + 1..m.key.1.saturating_sub(1)) == Some(key.as_bytes())
}

/// One edit to the top level of a JSON object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Replace the value of `key` (every occurrence) or insert `"key": raw` when absent.
    Set { key: String, raw: String },
    /// Remove `key` if present.
    Remove { key: String },
}

/// Applies edits to a JSON object body. Returns `None` if the body is not a JSON object.
pub fn apply(body: &[u8], edits: &[Edit]) -> Option<Vec<u8>> {
    if edits.is_empty() {
        return Some(body.to_vec());
    }
    let members = members(body)?;
    // Splices as (start, end, replacement), applied in order of position.
    let mut splices: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut inserts: Vec<u8> = Vec::new();
    for edit in edits {
        match edit {
            Edit::Set { key, raw } => {
                let mut found = false;
                for m in members.iter().filter(|m| key_is(body, m, key)) {
                    splices.push((m.value.0, m.value.1, raw.as_bytes().to_vec()));
                    found = true;
                }
                if !found {
                    inserts.extend_from_slice(b"\"");
                    inserts.extend_from_slice(key.as_bytes());
                    inserts.extend_from_slice(b"\":");
                    inserts.extend_from_slice(raw.as_bytes());
                    inserts.push(b',');
                }
            }
            Edit::Remove { key } => {
                for (idx, m) in members.iter().enumerate() {
                    if !key_is(body, m, key) {
                        continue;
                    }
                    // Remove the member and the comma that separates it from a neighbour.
                    let (start, end) = match members.get(idx + 1) {
                        Some(next) => (m.key.0, next.key.0),
                        None => match idx.checked_sub(1).and_then(|p| members.get(p)) {
                            Some(prev) => (prev.value.1, m.value.1),
                            None => (m.key.0, m.value.1),
                        },
                    };
                    splices.push((start, end, Vec::new()));
                }
            }
        }
    }
    splices.sort_by_key(|s| s.0);
    let mut out = Vec::with_capacity(body.len() + inserts.len() + 16);
    let open = body.iter().position(|&c| c == b'{')?;
    out.extend_from_slice(body.get(..=open)?);
    if !inserts.is_empty() {
        if members.is_empty() {
            inserts.pop(); // trailing comma
        }
        out.extend_from_slice(&inserts);
    }
    let mut pos = open + 1;
    for (start, end, replacement) in splices {
        if start < pos {
            continue; // overlapping edits on the same member: first wins
        }
        out.extend_from_slice(body.get(pos..start)?);
        out.extend_from_slice(&replacement);
        pos = end;
    }
    out.extend_from_slice(body.get(pos..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{Value, json};

    fn set(k: &str, v: &str) -> Edit {
        Edit::Set {
            key: k.into(),
            raw: v.into(),
        }
    }

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn lists_members_with_nested_values_and_escapes() {
        let body = br#" { "a" : {"x":[1,{"y":"}"}]}, "b\"c":"q\\", "n": -1.5e3 ,"t":true} "#;
        let m = members(body).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(&body[m[2].value.0..m[2].value.1], b"-1.5e3");
        assert_eq!(&body[m[1].value.0..m[1].value.1], br#""q\\""#);
    }

    #[test]
    fn replaces_existing_value_keeping_everything_else_byte_identical() {
        let body = br#"{"model":"gpt-4o","max_tokens": 99999,"messages":[{"role":"user","content":"hi"}]}"#;
        let out = apply(body, &[set("max_tokens", "4096")]).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"gpt-4o","max_tokens": 4096,"messages":[{"role":"user","content":"hi"}]}"#
        );
    }

    #[test]
    fn inserts_missing_key_into_empty_and_non_empty_objects() {
        let out = apply(b"{}", &[set("max_tokens", "10")]).unwrap();
        assert_eq!(parse(&out), json!({"max_tokens": 10}));
        let out = apply(br#"{"a":1}"#, &[set("max_tokens", "10")]).unwrap();
        assert_eq!(parse(&out), json!({"a": 1, "max_tokens": 10}));
    }

    #[test]
    fn removes_first_middle_last_and_only_members() {
        let body = br#"{"a":1,"b":2,"c":3}"#;
        for (k, want) in [
            ("a", json!({"b":2,"c":3})),
            ("b", json!({"a":1,"c":3})),
            ("c", json!({"a":1,"b":2})),
        ] {
            let out = apply(body, &[Edit::Remove { key: k.into() }]).unwrap();
            assert_eq!(parse(&out), want, "removing {k}");
        }
        let out = apply(br#"{"a":1}"#, &[Edit::Remove { key: "a".into() }]).unwrap();
        assert_eq!(parse(&out), json!({}));
    }

    #[test]
    fn non_objects_and_truncated_input_are_rejected_without_panicking() {
        for body in [
            &b"[]"[..],
            b"",
            b"{",
            b"{\"a\"",
            b"{\"a\":",
            b"{\"a\":[1,2",
            b"\"x\"",
            b"{\"a\":1,}",
        ] {
            assert!(
                apply(body, &[set("k", "1")]).is_none(),
                "{:?}",
                std::str::from_utf8(body)
            );
        }
    }
}
