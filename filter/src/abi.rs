//! Safe wrappers over the proxy-wasm ABI imports that the filter uses.
//!
//! The SDK's own `hostcalls` (proxy-wasm 0.2.5) `panic!` on any unexpected status and `unwrap`
//! header bytes as UTF-8; a panic kills the VM and with it every request on that worker. These
//! wrappers return the host's status as an error and decode header maps leniently, so the glue
//! can turn every host failure into a logged, handled condition.
//!
//! This is the only module with `unsafe`: raw ABI calls with pointers to live Rust buffers, and
//! adopting buffers the host allocated through the SDK's exported `proxy_on_memory_allocate`
//! (which hands out `Vec<u8>` allocations of exactly the requested size).
#![allow(unsafe_code)]

use std::ptr::{null, null_mut};

pub use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: LogLevel, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

/// Native builds (unit tests, docs) have no host: every call reports `InternalFailure`.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
mod native {
    use super::*;
    pub unsafe fn proxy_log(_: LogLevel, _: *const u8, _: usize) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_get_current_time_nanoseconds(_: *mut u64) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_get_log_level(_: *mut u32) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_continue_stream(_: u32) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_set_tick_period_milliseconds(_: u32) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_get_buffer_bytes(
        _: BufferType,
        _: usize,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_set_buffer_bytes(
        _: BufferType,
        _: usize,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_get_header_map_pairs(_: MapType, _: *mut *mut u8, _: *mut usize) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_get_property(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_replace_header_map_value(
        _: MapType,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_remove_header_map_value(_: MapType, _: *const u8, _: usize) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_set_property(_: *const u8, _: usize, _: *const u8, _: usize) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_send_local_response(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: i32,
    ) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_define_metric(_: MetricType, _: *const u8, _: usize, _: *mut u32) -> u32 {
        FAILURE
    }
    pub unsafe fn proxy_increment_metric(_: u32, _: i64) -> u32 {
        FAILURE
    }
}
#[cfg(not(target_arch = "wasm32"))]
use native::*;

/// A non-OK status code returned by the host (proxy-wasm ABI `WasmResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
#[cfg(not(target_arch = "wasm32"))]
const FAILURE: u32 = 10;

// Statuses are read as plain integers: an unknown value from the host must not be UB.
fn check(status: u32) -> Result<(), HostError> {
    match status {
        OK => Ok(()),
        s => Err(HostError(s)),
    }
}

/// Takes ownership of a buffer the host allocated via `proxy_on_memory_allocate`.
///
/// # Safety
/// `data` must be null or a pointer returned by the SDK allocator for exactly `size` bytes.
unsafe fn adopt(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the SDK's `proxy_on_memory_allocate` returns `Vec::with_capacity(size)` leaked;
    // the host filled `size` bytes.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length of a live &str.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// Whether the host logs at debug (or trace) level for this plugin.
pub fn debug_enabled() -> bool {
    let mut level = 0u32;
    // SAFETY: valid out-pointer. LogLevel: Trace = 0, Debug = 1.
    match unsafe { proxy_get_log_level(&mut level) } {
        OK => level <= 1,
        _ => false,
    }
}

/// Resumes a request paused in a body callback (ABI `StreamType::HttpRequest` = 0).
pub fn resume_request() -> Result<(), HostError> {
    // SAFETY: plain value.
    check(unsafe { proxy_continue_stream(0) })
}

/// Starts an HTTP call-out to an Envoy cluster. Uses the SDK's call so its dispatcher routes
/// `on_http_call_response` to the calling context; that SDK function only panics on host
/// statuses Envoy does not return for this call (it returns Ok, BadArgument or InternalFailure).
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u64,
) -> Result<u32, HostError> {
    proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        headers.to_vec(),
        Some(body),
        Vec::new(),
        std::time::Duration::from_millis(timeout_ms),
    )
    .map_err(|s| HostError(s as u32))
}

/// Status and body of the call-out response being delivered.
pub fn http_call_response(body_size: usize) -> (Option<u16>, Vec<u8>) {
    let status = get_headers(MapType::HttpCallResponseHeaders)
        .ok()
        .and_then(|h| h.into_iter().find(|(k, _)| k == ":status"))
        .and_then(|(_, v)| v.parse().ok());
    let body = if body_size == 0 {
        Vec::new()
    } else {
        get_buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
    };
    (status, body)
}

/// Asks for `on_tick` every `ms` milliseconds (0 stops ticking).
pub fn set_tick_period(ms: u32) -> Result<(), HostError> {
    // SAFETY: plain value.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn now_nanos() -> u64 {
    let mut t = 0u64;
    // SAFETY: valid out-pointer.
    match unsafe { proxy_get_current_time_nanoseconds(&mut t) } {
        OK => t,
        _ => 0,
    }
}

pub fn get_buffer(kind: BufferType, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
    if max == 0 {
        return Ok(Vec::new()); // e.g. the empty end-of-stream callback: no host call
    }
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: valid out-pointers; the returned buffer is adopted exactly once.
    match unsafe { proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) } {
        OK => Ok(unsafe { adopt(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        s => Err(HostError(s)),
    }
}

pub fn set_buffer(
    kind: BufferType,
    start: usize,
    size: usize,
    value: &[u8],
) -> Result<(), HostError> {
    // SAFETY: pointer and length of a live slice.
    check(unsafe { proxy_set_buffer_bytes(kind, start, size, value.as_ptr(), value.len()) })
}

pub fn get_headers(map: MapType) -> Result<Vec<(String, String)>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: valid out-pointers; the returned buffer is adopted exactly once.
    match unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) } {
        OK => Ok(decode_map(&unsafe { adopt(data, size) })),
        s => Err(HostError(s)),
    }
}

pub fn set_header(map: MapType, name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: pointers and lengths of live &strs.
    check(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn remove_header(map: MapType, name: &str) -> Result<(), HostError> {
    // SAFETY: pointer and length of a live &str.
    check(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// Reads a host property (`path` segments, e.g. `["source", "principal"]`); `Ok(None)` when the
/// property does not exist. Values are raw bytes; strings are decoded leniently.
pub fn get_property(path: &[&str]) -> Result<Option<String>, HostError> {
    let encoded = path.join("\0");
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: pointer and length of a live String; valid out-pointers; the returned buffer is
    // adopted exactly once.
    match unsafe { proxy_get_property(encoded.as_ptr(), encoded.len(), &mut data, &mut size) } {
        OK => {
            let bytes = unsafe { adopt(data, size) };
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

/// Sets a filter-state property (Envoy stores it as `wasm.<path>`; access logs read it with
/// `%FILTER_STATE(wasm.<path>:PLAIN)%`).
pub fn set_property(path: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: pointers and lengths of live &strs.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

pub fn send_local_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    details: &str,
) -> Result<(), HostError> {
    let map = encode_map(headers);
    // SAFETY: pointers and lengths of live buffers for the duration of the call.
    check(unsafe {
        proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

pub fn define_counter(name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: valid out-pointer; name is a live &str.
    check(unsafe { proxy_define_metric(MetricType::Counter, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment(id: u32, by: u64) -> Result<(), HostError> {
    // SAFETY: plain values.
    check(unsafe { proxy_increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)) })
}

/// Encodes a header map in the proxy-wasm wire format:
/// `u32 count`, then `count × (u32 key_len, u32 value_len)`, then `key \0 value \0` pairs.
pub fn encode_map(map: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + map
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

fn read_u32(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// Decodes a header map; malformed input yields the pairs decoded so far, invalid UTF-8 is
/// replaced (never a panic).
pub fn decode_map(b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(n) = read_u32(b, 0) else {
        return out;
    };
    let Some(mut p) = n.checked_mul(8).and_then(|x| x.checked_add(4)) else {
        return out;
    };
    for i in 0..n {
        let (Some(kl), Some(vl)) = (read_u32(b, 4 + i * 8), read_u32(b, 8 + i * 8)) else {
            break;
        };
        let Some(k) = b.get(p..p.saturating_add(kl)) else {
            break;
        };
        p = p.saturating_add(kl + 1);
        let Some(v) = b.get(p..p.saturating_add(vl)) else {
            break;
        };
        p = p.saturating_add(vl + 1);
        out.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips() {
        let m = vec![
            (":path".to_string(), "/v1/x".to_string()),
            ("a".to_string(), String::new()),
        ];
        assert_eq!(decode_map(&encode_map(&m)), m);
        assert!(decode_map(&[]).is_empty());
    }

    #[test]
    fn malformed_maps_do_not_panic() {
        let good = encode_map(&[("k".into(), "v".into()), ("k2".into(), "v2".into())]);
        for cut in 0..good.len() {
            let _ = decode_map(&good[..cut]);
        }
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = decode_map(&huge);
        let mut bad_utf8 = encode_map(&[("k".into(), "vv".into())]);
        let len = bad_utf8.len();
        bad_utf8[len - 2] = 0xff;
        assert_eq!(decode_map(&bad_utf8)[0].1, "v\u{fffd}");
    }
}
