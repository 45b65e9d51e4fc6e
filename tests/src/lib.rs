//! Tollgate test support: simulated provider and harness.
