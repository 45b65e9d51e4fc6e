//! Rejections in the provider's own error shape.
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`; Anthropic:
//! `{"type":"error","error":{"type","message"}}`. `type`/`code` carry Tollgate's stable names
//! (contract): `invalid_request`, `request_too_large`, `budget_exceeded`, `rate_limited`.

use serde_json::json;
use tollgate_wire::Api;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    RequestTooLarge,
    BudgetExceeded,
    RateLimited,
    /// Budgets fail closed and the cache service could not be asked.
    BudgetUnavailable,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BudgetUnavailable => "budget_unavailable",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::BudgetExceeded | ErrorKind::RateLimited => 429,
            ErrorKind::BudgetUnavailable => 503,
        }
    }
}

/// A request Tollgate answers itself with an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub api: Api,
    pub kind: ErrorKind,
    pub message: String,
    /// Seconds until retrying makes sense (sent as `retry-after`).
    pub retry_after: Option<u64>,
}

/// A response the filter sends without calling the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Rejection {
    pub fn new(api: Api, kind: ErrorKind, message: impl Into<String>) -> Self {
        Rejection {
            api,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The error body in the provider's shape.
    pub fn body(&self) -> Vec<u8> {
        let v = if self.api.is_anthropic() {
            json!({"type": "error", "error": {"type": self.kind.code(), "message": self.message}})
        } else {
            json!({"error": {"message": self.message, "type": self.kind.code(), "param": null, "code": self.kind.code()}})
        };
        v.to_string().into_bytes()
    }

    pub fn into_reply(self) -> LocalReply {
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-tollgate-error".to_string(), self.kind.code().to_string()),
        ];
        if let Some(s) = self.retry_after {
            headers.push(("retry-after".to_string(), s.to_string()));
        }
        LocalReply {
            status: self.status(),
            headers,
            body: self.body(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Value;

    #[test]
    fn openai_shape() {
        let r = Rejection::new(Api::OpenAiChat, ErrorKind::InvalidRequest, "bad \"thing\"")
            .into_reply();
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["message"], "bad \"thing\"");
        assert_eq!(v["error"]["type"], "invalid_request");
        assert_eq!(v["error"]["code"], "invalid_request");
        assert!(v["error"]["param"].is_null());
        assert!(
            r.headers
                .contains(&("content-type".into(), "application/json".into()))
        );
    }

    #[test]
    fn anthropic_shape_with_retry_after() {
        let mut rej = Rejection::new(
            Api::AnthropicMessages,
            ErrorKind::BudgetExceeded,
            "over budget",
        );
        rej.retry_after = Some(30);
        let r = rej.into_reply();
        assert_eq!(r.status, 429);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "budget_exceeded");
        assert_eq!(v["error"]["message"], "over budget");
        assert!(r.headers.contains(&("retry-after".into(), "30".into())));
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorKind::RequestTooLarge.status(), 413);
        assert_eq!(ErrorKind::RateLimited.status(), 429);
    }
}
