//! Exact tiktoken-compatible BPE.
