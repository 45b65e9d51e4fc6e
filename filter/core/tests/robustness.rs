//! Randomised robustness: thousands of mutated requests and responses, split at random points,
//! through the whole exchange. The filter must never panic (a panic kills the VM and every
//! request on that worker); every request gets either a decision or a well-formed error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_core::count::CountCache;
use tollgate_core::{BodyVerdict, Config, Exchange, HeadersVerdict};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const REQUESTS: &[(&str, &str)] = &[
    (
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"hi ü 🎉"},{"type":"image_url","image_url":{"url":"x","detail":"low"}}],"name":"n"},{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"array","items":{"type":"object","properties":{"b":{"enum":[1,"x"]}}}}}}}}],"max_tokens":100,"stream":true,"stream_options":{"include_usage":true}}"#,
    ),
    (
        "/v1/completions",
        r#"{"model":"gpt-3.5-turbo-instruct","prompt":["a","b"],"max_tokens":7}"#,
    ),
    (
        "/v1/responses",
        r#"{"model":"gpt-4.1","instructions":"x","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call_output","call_id":"c","output":"42"}],"max_output_tokens":50}"#,
    ),
    (
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","max_tokens":10,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"}]}]}],"tools":[{"name":"t","input_schema":{}}]}"#,
    ),
];

const RESPONSES: &[(&str, &str)] = &[
    (
        "application/json",
        r#"{"model":"gpt-4o","choices":[{"message":{"content":"hi","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":9}}}"#,
    ),
    (
        "text/event-stream",
        "data: {\"choices\":[{\"delta\":{\"content\":\"a b c\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
    ),
    (
        "text/event-stream",
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"x\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n",
    ),
    (
        "text/event-stream",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":2,\"output_tokens\":3}}}\n\n",
    ),
];

const SNIPPETS: &[&[u8]] = &[
    b"null",
    b"[]",
    b"{}",
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\xff",
    b"\xc3",
    b"\n\n",
    b"data:",
    b"event:",
    b":",
    b",",
    b"}",
    b"]",
    b"{\"usage\":",
    b"\r\n",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        if v.is_empty() {
            v.extend_from_slice(SNIPPETS[rng.below(SNIPPETS.len())]);
            continue;
        }
        let at = rng.below(v.len());
        match rng.below(5) {
            0 => v[at] = rng.next() as u8,
            1 => v.truncate(at),
            2 => {
                let s = SNIPPETS[rng.below(SNIPPETS.len())];
                v.splice(at..at, s.iter().copied());
            }
            3 => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            _ => {
                let end = (at + rng.below(32)).min(v.len());
                let dup: Vec<u8> = v[at..end].to_vec();
                v.splice(at..at, dup);
            }
        }
    }
    v
}

#[test]
fn mutated_traffic_never_panics_and_errors_are_well_formed() {
    let configs = [
        Config::from_json(br#"{"stopOnHeaders": true, "maxTokens": {"cap": 50}}"#).unwrap(),
        Config::from_json(br#"{"limits": {"maxRequestBytes": 300}}"#).unwrap(),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cache = CountCache::new(64, 7);
    let (mut replies, mut forwarded) = (0, 0);
    for i in 0..6000 {
        let cfg = &configs[i % configs.len()];
        let (path, body) = REQUESTS[rng.below(REQUESTS.len())];
        let body = if rng.below(4) == 0 {
            body.as_bytes().to_vec()
        } else {
            mutate(&mut rng, body.as_bytes())
        };
        let mut x = Exchange::new();
        let headers = vec![(
            "x-tollgate-tenant".to_string(),
            if rng.below(20) == 0 {
                "bad tenant".into()
            } else {
                "t".into()
            },
        )];
        match x.on_request_headers(cfg, "POST", path, &headers, false) {
            HeadersVerdict::Reply(r) => {
                assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_ok());
                continue;
            }
            HeadersVerdict::PassThrough => continue,
            _ => {}
        }
        // Body arrives in random pieces.
        let mut sent = 0;
        let mut verdict = BodyVerdict::Buffer;
        while sent < body.len() || matches!(verdict, BodyVerdict::Buffer) {
            sent = (sent + 1 + rng.below(body.len() + 1)).min(body.len());
            let eos = sent == body.len();
            let whole = body.clone();
            verdict = x.on_request_body(cfg, &mut cache, sent, eos, move || Some(whole));
            if eos {
                break;
            }
            if !matches!(verdict, BodyVerdict::Buffer) {
                break;
            }
        }
        match verdict {
            BodyVerdict::Reply(r) => {
                replies += 1;
                assert!(r.status == 400 || r.status == 413, "{}", r.status);
                let j: serde_json::Value =
                    serde_json::from_slice(&r.body).expect("error body is JSON");
                assert!(j["error"]["message"].is_string(), "{j}");
                assert!(x.take_outcome().is_some());
                continue;
            }
            BodyVerdict::Continue { body: Some(b) } => {
                forwarded += 1;
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&b).is_ok(),
                    "rewritten body must stay JSON"
                );
            }
            _ => forwarded += 1,
        }
        let (ct, resp) = RESPONSES[rng.below(RESPONSES.len())];
        let resp = mutate(&mut rng, resp.as_bytes());
        let status = [200u16, 200, 200, 429, 500][rng.below(5)];
        let rh = x.on_response_headers(cfg, status, &[("content-type".into(), ct.into())], false);
        let mut pos = 0;
        while pos < resp.len() {
            let end = (pos + 1 + rng.below(64)).min(resp.len());
            if rh.hold && end < resp.len() {
                x.on_response_body(&[], false);
            } else if rh.hold {
                x.on_response_body(&resp, true);
            } else {
                x.on_response_body(&resp[pos..end], end == resp.len());
            }
            pos = end;
        }
        x.on_end();
        let o = x
            .take_outcome()
            .expect("every forwarded request is settled");
        assert!(o.usage.prompt_tokens() < 1 << 40);
    }
    assert!(
        replies > 500 && forwarded > 500,
        "replies {replies}, forwarded {forwarded}"
    );
}
