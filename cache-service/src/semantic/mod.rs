//! Semantic-cache correctness: guards that reject near-miss matches embeddings confuse
//! (negation, numbers, dates, named entities), and threshold calibration on labelled pairs
//! (owner: semantic correctness work).
