//! Tollgate proxy-wasm filter.
