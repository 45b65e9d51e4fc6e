//! Tollgate test support: simulated provider and harness.
pub mod cache;
pub mod harness;
pub mod redis;
pub mod sim;
