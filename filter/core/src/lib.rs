//! Tollgate's pure policy core: everything the filter decides, with no proxy-wasm dependency, so
//! it is unit-tested natively and could be built for the browser too.
//!
//! - [`exchange`]: one request/response as a state machine; the glue maps its verdicts to host calls.
//! - [`request`], [`count`]: parsing the four API shapes and counting prompt tokens exactly.
//! - [`usage`]: usage from JSON and SSE responses, fed chunk by chunk.
//! - [`pricing`], [`governance`], [`tenant`], [`metrics`], [`error`], [`config`], [`json`].

pub mod cachekey;
pub mod complexity;
pub mod config;
pub mod count;
pub mod error;
pub mod exchange;
pub mod governance;
pub mod json;
pub mod metrics;
pub mod prefix;
pub mod pricing;
pub mod render;
pub mod request;
pub mod routing;
pub mod tenant;
pub mod trim;
pub mod usage;

pub use config::Config;
pub use exchange::{
    BodyVerdict, Exchange, HeadersVerdict, Outcome, ResponseBodyVerdict, ResponseHeadersVerdict,
};
pub use tollgate_bpe::Encoding;
pub use tollgate_wire::{Api, Usage, UsageSource};
