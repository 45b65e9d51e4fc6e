//! Response bodies: JSON and SSE, with chunk delays and mid-stream aborts.

use super::inject::{Provider, SimOpts, add_request_id};
use super::wire::J;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use std::time::Duration;

/// Where an SSE event sits in the stream (for `x-sim-fail-mid-stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before any content (role chunk, `message_start`, ...).
    Preamble,
    /// A content delta.
    Content,
    /// After the content (finish chunk, usage, `[DONE]`, ...).
    Tail,
}

/// One framed SSE event.
#[derive(Clone, Debug)]
pub struct SseEvent {
    /// The framed bytes (`event: ...\ndata: ...\n\n`).
    pub bytes: Bytes,
    /// Its phase.
    pub phase: Phase,
}

/// Frame an event: an optional `event:` line, then one `data:` line.
pub fn sse(event: Option<&str>, data: &J, phase: Phase) -> SseEvent {
    let mut s = String::new();
    if let Some(name) = event {
        s.push_str("event: ");
        s.push_str(name);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(&data.to_json());
    s.push_str("\n\n");
    SseEvent {
        bytes: Bytes::from(s),
        phase,
    }
}

/// OpenAI's terminator, `data: [DONE]`.
pub fn sse_done() -> SseEvent {
    SseEvent {
        bytes: Bytes::from_static(b"data: [DONE]\n\n"),
        phase: Phase::Tail,
    }
}

/// Extra response headers (name, value).
pub type Extra = Vec<(&'static str, String)>;

fn apply_headers(resp: &mut Response, provider: Provider, extra: &Extra) {
    let headers = resp.headers_mut();
    add_request_id(provider, headers);
    for (name, value) in extra {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
}

/// Let the server flush what was sent before an abort (the body is polled
/// again only after the connection wrote its buffer).
async fn flush_pause() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn aborted() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "x-sim-fail-mid-stream: aborting the response",
    )
}

/// A JSON response. With `x-sim-fail-mid-stream` the first half of the body
/// is sent, then the connection is aborted.
pub fn json_response(
    status: StatusCode,
    body: &J,
    provider: Provider,
    opts: &SimOpts,
    extra: &Extra,
) -> Response {
    let bytes = Bytes::from(body.to_json());
    let body = match opts.fail_mid_stream {
        Some(_) => {
            let half = bytes.slice(..bytes.len() / 2);
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok(half), 1)),
                        1 => {
                            flush_pause().await;
                            Some((Err(aborted()), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(stream)
        }
        None => Body::from(bytes),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    apply_headers(&mut resp, provider, extra);
    resp
}

struct StreamState {
    events: std::vec::IntoIter<SseEvent>,
    content_sent: usize,
    first: bool,
    done: bool,
    delay: Duration,
    fail_after: Option<usize>,
}

/// An SSE response sending `events` with the chunk delay between them; with
/// `x-sim-fail-mid-stream: K` the connection is aborted (no terminating
/// chunk) right after the K-th content event.
pub fn sse_response(
    events: Vec<SseEvent>,
    provider: Provider,
    opts: &SimOpts,
    extra: &Extra,
) -> Response {
    let state = StreamState {
        events: events.into_iter(),
        content_sent: 0,
        first: true,
        done: false,
        delay: opts.chunk_delay,
        fail_after: opts.fail_mid_stream,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let ev = st.events.next()?;
        if !st.first && !st.delay.is_zero() {
            tokio::time::sleep(st.delay).await;
        }
        st.first = false;
        if let Some(k) = st.fail_after
            && st.content_sent >= k
            && ev.phase != Phase::Preamble
        {
            st.done = true;
            flush_pause().await;
            return Some((Err(aborted()), st));
        }
        if ev.phase == Phase::Content {
            st.content_sent += 1;
        }
        Some((Ok::<Bytes, std::io::Error>(ev.bytes), st))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    apply_headers(&mut resp, provider, extra);
    resp
}
