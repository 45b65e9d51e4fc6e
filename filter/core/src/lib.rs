//! Tollgate policy core.
