//! Feature `phase-timing` (benchmarks only, never in a shipped build): the time spent inside
//! each callback, host calls included, summed per VM and logged at `warn` every 20,000
//! requests as `tollgate: phase timing create=…µs reqh=… reqb=… resph=… respb=… log=…`
//! (mean µs per request; `reqb`/`respb` sum every body callback of a request). What it cannot
//! see is Envoy's own work around the callbacks: entering V8, buffering, the access log.
//!
//! `cargo build --release --target wasm32-wasip1 -p tollgate-filter --features phase-timing`,
//! then `TOLLGATE_KEEP_TEST_DIRS=1 target/release/load …` and `grep 'phase timing'` in the
//! kept `envoy.log` files.

use std::cell::RefCell;

use proxy_wasm::types::LogLevel;

use crate::abi;

const PHASES: [&str; 6] = ["create", "reqh", "reqb", "resph", "respb", "log"];
const EVERY: u64 = 20_000;

thread_local! {
    /// Nanoseconds per phase, and the number of requests (on_log calls) they cover.
    static SUMS: RefCell<([u64; 6], u64)> = const { RefCell::new(([0; 6], 0)) };
}

pub fn timed<R>(phase: usize, f: impl FnOnce() -> R) -> R {
    let t0 = abi::now_nanos();
    let r = f();
    let dt = abi::now_nanos().saturating_sub(t0);
    SUMS.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        let (ns, requests) = &mut *s;
        if let Some(slot) = ns.get_mut(phase) {
            *slot += dt;
        }
        if phase == 5 {
            *requests += 1;
            if *requests >= EVERY {
                let mut line = String::from("tollgate: phase timing");
                for (name, total) in PHASES.iter().zip(ns.iter()) {
                    line.push_str(&format!(
                        " {name}={:.2}",
                        *total as f64 / *requests as f64 / 1e3
                    ));
                }
                line.push_str(&format!(" µs/request over {requests} requests"));
                abi::log(LogLevel::Warn, &line);
                *ns = [0; 6];
                *requests = 0;
            }
        }
    });
    r
}
