//! Feature `io-floor` (benchmarks only, never in a shipped build): metered requests do only
//! the host I/O that metering needs and none of the work. The request headers are classified
//! as usual; then the request body is read whole, the response headers are read and four
//! `x-tollgate-*` headers added, the response body is read and the access-log property set,
//! all with fixed values: no JSON parsing, counting, pricing, governance or metrics.
//! `benches/phases.sh` measures it: what any proxy-wasm filter doing this I/O costs in Envoy,
//! against which the real filter's compute is budgeted.

use super::{Flow, Stream};
use crate::host::Host;

const HEADERS: [(&str, &str); 4] = [
    ("x-tollgate-prompt-tokens", "512"),
    ("x-tollgate-completion-tokens", "12"),
    ("x-tollgate-cost-usd", "0.000084"),
    ("x-tollgate-model", "gpt-4o-mini"),
];

const LOG_LINE: &str = "tenant=bench api=openai.chat model=gpt-4o-mini prompt_tokens=512 \
    completion_tokens=12 cached_tokens=0 cost_usd=0.000084 usage_source=provider stream=false \
    result=ok";

impl<H: Host> Stream<H> {
    pub(super) fn floor_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        if !end_of_stream {
            return Flow::Pause;
        }
        let body = self.host.request_body(body_size).unwrap_or_default();
        self.request_body_len = std::hint::black_box(body.len());
        Flow::Continue
    }

    pub(super) fn floor_response_headers(&mut self, _end_of_stream: bool) -> Flow {
        let headers = self.host.response_headers().unwrap_or_default();
        std::hint::black_box(headers.len());
        for (k, v) in HEADERS {
            let _ = self.host.set_response_header(k, v);
        }
        Flow::Continue
    }

    pub(super) fn floor_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        if body_size > 0 {
            let chunk = self.host.response_body(body_size).unwrap_or_default();
            std::hint::black_box(chunk.len());
        }
        if end_of_stream {
            let _ = self.host.set_property("tollgate", LOG_LINE);
        }
        Flow::Continue
    }
}
