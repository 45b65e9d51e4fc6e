//! The one narrow interface between the filter's logic and Envoy.
//!
//! `EnvoyHost` implements it over the ABI; tests implement it with a recording fake, so the
//! glue's mapping from core verdicts to host calls is unit-tested natively.

use tollgate_core::error::LocalReply;

use crate::abi::{self, BufferType, HostError, LogLevel, MapType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

pub trait Host {
    fn request_headers(&self) -> Result<Vec<(String, String)>, HostError>;
    fn response_headers(&self) -> Result<Vec<(String, String)>, HostError>;
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    /// Sets (replaces) a request header; Envoy re-evaluates the route when request headers change.
    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    fn request_body(&self, size: usize) -> Result<Vec<u8>, HostError>;
    fn replace_request_body(&self, old_size: usize, body: &[u8]) -> Result<(), HostError>;
    fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError>;
    fn send_reply(&self, reply: &LocalReply) -> Result<(), HostError>;
    fn set_property(&self, key: &str, value: &str) -> Result<(), HostError>;
    /// A host property such as `["source", "principal"]` (the peer's mTLS identity in Istio).
    fn property(&self, path: &[&str]) -> Result<Option<String>, HostError>;
    fn log(&self, level: Level, msg: &str);
    /// Whether debug lines would be logged (so they are only formatted when they are).
    fn debug_enabled(&self) -> bool;
    fn define_counter(&self, name: &str) -> Result<u32, HostError>;
    fn increment(&self, id: u32, by: u64) -> Result<(), HostError>;
    /// POSTs `body` (JSON) to `path` on an Envoy cluster; the answer arrives in
    /// `on_http_call_response` of the calling context.
    fn http_post(
        &self,
        cluster: &str,
        authority: &str,
        path: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
    /// Sends a request with these headers (pseudo-headers included) to an Envoy cluster; the
    /// answer arrives in `on_http_call_response` of the calling context.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
    /// Status and body of the call-out response being delivered.
    fn http_call_response(&self, body_size: usize) -> (Option<u16>, Vec<u8>);
    /// Headers of the call-out response being delivered.
    fn http_call_response_headers(&self) -> Vec<(String, String)>;
    /// Resumes a request paused in a body callback.
    fn resume_request(&self) -> Result<(), HostError>;
    /// Wall clock, nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;
}

/// The real host.
#[derive(Clone, Copy, Debug, Default)]
pub struct EnvoyHost;

impl Host for EnvoyHost {
    fn request_headers(&self) -> Result<Vec<(String, String)>, HostError> {
        abi::get_headers(MapType::HttpRequestHeaders)
    }
    fn response_headers(&self) -> Result<Vec<(String, String)>, HostError> {
        abi::get_headers(MapType::HttpResponseHeaders)
    }
    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        abi::remove_header(MapType::HttpRequestHeaders, name)
    }
    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        abi::set_header(MapType::HttpRequestHeaders, name, value)
    }
    fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        abi::set_header(MapType::HttpResponseHeaders, name, value)
    }
    fn request_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        abi::get_buffer(BufferType::HttpRequestBody, 0, size)
    }
    fn replace_request_body(&self, old_size: usize, body: &[u8]) -> Result<(), HostError> {
        abi::set_buffer(BufferType::HttpRequestBody, 0, old_size, body)
    }
    fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        abi::get_buffer(BufferType::HttpResponseBody, 0, size)
    }
    fn send_reply(&self, reply: &LocalReply) -> Result<(), HostError> {
        abi::send_local_response(reply.status, &reply.headers, &reply.body, "tollgate")
    }
    fn property(&self, path: &[&str]) -> Result<Option<String>, HostError> {
        abi::get_property(path)
    }
    fn set_property(&self, key: &str, value: &str) -> Result<(), HostError> {
        abi::set_property(key, value)
    }
    fn log(&self, level: Level, msg: &str) {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        abi::log(level, msg);
    }
    fn debug_enabled(&self) -> bool {
        abi::debug_enabled()
    }
    fn define_counter(&self, name: &str) -> Result<u32, HostError> {
        abi::define_counter(name)
    }
    fn increment(&self, id: u32, by: u64) -> Result<(), HostError> {
        abi::increment(id, by)
    }
    fn http_post(
        &self,
        cluster: &str,
        authority: &str,
        path: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        let headers = [
            (":method", "POST"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/json"),
        ];
        abi::http_call(cluster, &headers, body, timeout_ms)
    }
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        abi::http_call(cluster, &headers, body, timeout_ms)
    }
    fn http_call_response(&self, body_size: usize) -> (Option<u16>, Vec<u8>) {
        abi::http_call_response(body_size)
    }
    fn http_call_response_headers(&self) -> Vec<(String, String)> {
        abi::get_headers(MapType::HttpCallResponseHeaders).unwrap_or_default()
    }
    fn resume_request(&self) -> Result<(), HostError> {
        abi::resume_request()
    }
    fn now_nanos(&self) -> u64 {
        abi::now_nanos()
    }
}
