//! Semantic-cache correctness: guards that reject near-miss matches embeddings confuse
//! (negation, numbers, dates, named entities, swapped roles), and threshold calibration on
//! labelled pairs (`cache-service/data/pairs/`).
//!
//! - [`guards::check`]: symbolic comparison of a query with a candidate's query, microseconds.
//! - [`calibrate`]: precision / recall / false-hit rate per cosine threshold on labelled pairs,
//!   threshold choice, a Markdown report, and the `calibrate` command ([`calibrate::run_cli`]).

pub mod calibrate;
pub mod guards;
mod lexicon;

pub use guards::{GuardReason, GuardVerdict, check};
