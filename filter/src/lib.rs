//! Tollgate proxy-wasm HTTP filter for Envoy: a thin layer of host glue over `tollgate-core`.
//!
//! - [`abi`]: the only `unsafe` code, non-panicking wrappers over the proxy-wasm ABI.
//! - [`host`]: the narrow `Host` trait (real Envoy or a test fake).
//! - [`glue`]: callbacks -> `Exchange` transitions -> host calls.
//! - here: the proxy-wasm root and HTTP contexts, and the panic hook.

pub mod abi;
pub mod glue;
pub mod host;
#[cfg(feature = "phase-timing")]
mod timing;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use tollgate_core::Config;

use crate::glue::{Flow, Plugin, SharedPlugin, Stream};
use crate::host::EnvoyHost;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic kills this VM and every request on its worker. The code is written not to panic;
    // if it ever does, say so loudly in Envoy's log.
    std::panic::set_hook(Box::new(|info| {
        abi::log(LogLevel::Critical, &format!("tollgate: panic, VM is now unusable: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { plugin: Rc::new(RefCell::new(None)) })
    });
}}

/// How often settle records are sent to the cache service (when one is configured).
const SETTLE_TICK_MS: u32 = 200;

struct Root {
    plugin: SharedPlugin,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (status, _) = abi::http_call_response(body_size.min(4096));
        if let Ok(mut slot) = self.plugin.try_borrow_mut()
            && let Some(plugin) = slot.as_mut()
        {
            plugin.settle_done(&EnvoyHost, token_id, status);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes =
            match abi::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, size) {
                Ok(b) => b,
                Err(e) => {
                    abi::log(
                        LogLevel::Error,
                        &format!(
                            "tollgate: cannot read plugin configuration: host status {}",
                            e.0
                        ),
                    );
                    return false;
                }
            };
        match Config::from_json(&bytes) {
            Ok(cfg) => {
                let models = cfg.prices.len();
                let stop = cfg.stop_on_headers;
                let Ok(mut slot) = self.plugin.try_borrow_mut() else {
                    return false;
                };
                let flush = cfg.metrics.flush_interval_ms;
                let has_cache = cfg.cache.is_some();
                *slot = Some(Plugin::new(cfg, abi::now_nanos()));
                let mut period = if flush == 0 { 1000 } else { flush as u32 };
                if has_cache {
                    // Settle records leave the VM at least this often.
                    period = period.min(SETTLE_TICK_MS);
                }
                if let Err(e) = abi::set_tick_period(period) {
                    abi::log(
                        LogLevel::Warn,
                        &format!("tollgate: cannot set tick period: host status {}", e.0),
                    );
                }
                abi::log(
                    LogLevel::Info,
                    &format!("tollgate: configured ({models} priced models, stopOnHeaders={stop})"),
                );
                true
            }
            Err(reason) => {
                abi::log(
                    LogLevel::Error,
                    &format!("tollgate: configuration refused: {reason}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Ok(mut slot) = self.plugin.try_borrow_mut()
            && let Some(plugin) = slot.as_mut()
        {
            plugin.send_settles(&EnvoyHost);
            plugin.flush_metrics(&EnvoyHost);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        phase(0, || {
            Some(Box::new(Http {
                stream: Stream::new(EnvoyHost, self.plugin.clone(), context_id),
            }) as Box<dyn HttpContext>)
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    stream: Stream<EnvoyHost>,
}

/// Runs one callback; with the `phase-timing` feature, also times it (see `timing`).
#[inline(always)]
fn phase<R>(_phase: usize, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "phase-timing")]
    return timing::timed(_phase, f);
    #[cfg(not(feature = "phase-timing"))]
    f()
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.stream.on_http_call_response(token_id, body_size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        phase(1, || action(self.stream.on_request_headers(end_of_stream)))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        phase(2, || {
            action(self.stream.on_request_body(body_size, end_of_stream))
        })
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        phase(3, || action(self.stream.on_response_headers(end_of_stream)))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        phase(4, || {
            action(self.stream.on_response_body(body_size, end_of_stream))
        })
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_response_trailers())
    }

    fn on_log(&mut self) {
        phase(5, || self.stream.on_log());
    }
}
