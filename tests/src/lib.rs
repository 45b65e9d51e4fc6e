//! Tollgate test support: simulated provider and harness.
pub mod cache;
pub mod harness;
pub mod sim;
pub mod redis;
