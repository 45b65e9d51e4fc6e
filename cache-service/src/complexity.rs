//! Learned complexity classifier: how likely a prompt needs a frontier model.
//!
//! A distance-weighted k-nearest-neighbour vote over labelled example prompts, in the embedding
//! space of the semantic cache's model, so an admit that already embedded the final user turn
//! for the cache lookup scores it for free (one pass of dot products, no second inference).
//!
//! - **Examples**: JSONL of `{"prompt": "...", "label": "simple" | "complex", "source": "..."}`.
//!   The default set ([`DEFAULT_EXAMPLES`], `cache-service/data/complexity/train.jsonl`) is
//!   compiled into the binary, so the service needs no data directory; operators replace it with
//!   `complexity.examples` in the configuration file. "simple" means a small, cheap model
//!   (gpt-4o-mini class) answers it well; "complex" that it needs a frontier model
//!   (`cache-service/data/complexity/README.md`).
//! - **Training**: the examples are embedded once, off the async threads ([`Classifier::train`]):
//!   when the first admit asks for a score, or at start with `complexity.trainAtStart`. The
//!   shipped set takes a few seconds of CPU; until it is done admits get no learned score.
//! - **Score**: for a query vector `q` (L2-normalised), the `k` examples with the highest cosine
//!   `c_i` vote with weight `1 / (1 - c_i + 0.01)`; the score is the weighted share of "complex"
//!   votes, in `[0, 1]`. Cost: `n × dim` multiply-adds (≈ 140k for the default 367 examples at
//!   384 dimensions, tens of microseconds; `benches/results/complexity.md`).
//!
//! - **On admit** ([`crate::engine::Engine::admit`], `AdmitRequest.complexity`): the final user
//!   turn (`cache.query`, else `complexity_query`) is scored with the lookup's embedding when the
//!   lookup made one (miss, semantic hit), embedded for the score otherwise (cache bypassed,
//!   semantic mode off, no cache query); an exact hit is not scored (nothing to route).
//!
//! Accuracy on the held-out `test.jsonl` (0.839 at [`SUGGESTED_THRESHOLD`], vs 0.813 for the
//! filter's heuristic at the demo's 0.3) is measured by `cache-service/tests/complexity.rs`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::embed::{EmbedError, Embedder};

/// The shipped training examples (`cache-service/data/complexity/train.jsonl`).
pub const DEFAULT_EXAMPLES: &str = include_str!("../data/complexity/train.jsonl");

/// Neighbours that vote. Chosen with [`SUGGESTED_THRESHOLD`] by leave-one-out accuracy on the
/// training set (the held-out test set was not used): see `benches/results/complexity.md`.
pub const DEFAULT_K: usize = 11;

/// The score at and above which a prompt is best called "complex" with the shipped examples
/// (leave-one-out on the training set, with [`DEFAULT_K`]). The score is a neighbour vote, not a
/// calibrated probability: a routing rule sending prompts below this to a small model matches
/// the accuracy reported in `benches/results/complexity.md`.
pub const SUGGESTED_THRESHOLD: f32 = 0.4;

/// Added to the cosine distance before inverting it, so an exact duplicate does not get an
/// infinite weight.
const DISTANCE_EPSILON: f32 = 0.01;

/// Texts embedded per model call while training.
const TRAIN_BATCH: usize = 16;

/// A label of the example set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// A small, cheap model answers it well.
    Simple,
    /// Needs a frontier model.
    Complex,
}

/// One labelled prompt.
#[derive(Clone, Debug, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub label: Label,
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ComplexityError {
    #[error("complexity examples: {0}")]
    Invalid(String),
    #[error("complexity examples: {0}")]
    Embed(#[from] EmbedError),
}

/// Parses JSONL examples (blank lines skipped). Both labels must be present.
pub fn parse_examples(jsonl: &str) -> Result<Vec<Example>, ComplexityError> {
    let mut out = Vec::new();
    for (i, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ex: Example = serde_json::from_str(line)
            .map_err(|e| ComplexityError::Invalid(format!("line {}: {e}", i + 1)))?;
        if ex.prompt.trim().is_empty() {
            return Err(ComplexityError::Invalid(format!(
                "line {}: empty prompt",
                i + 1
            )));
        }
        out.push(ex);
    }
    let complex = out.iter().filter(|e| e.label == Label::Complex).count();
    if complex == 0 || complex == out.len() {
        return Err(ComplexityError::Invalid(
            "need at least one \"simple\" and one \"complex\" example".into(),
        ));
    }
    Ok(out)
}

/// Reads examples from `path`, or the shipped set when `None`.
pub fn load_examples(path: Option<&Path>) -> Result<Vec<Example>, ComplexityError> {
    match path {
        None => parse_examples(DEFAULT_EXAMPLES),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ComplexityError::Invalid(format!("{}: {e}", p.display())))?;
            parse_examples(&text)
        }
    }
}

/// Distance-weighted k-NN over unit vectors with a binary label.
#[derive(Clone, Debug)]
pub struct Knn {
    dim: usize,
    /// `n × dim`, row-major, each row L2-normalised.
    vectors: Vec<f32>,
    complex: Vec<bool>,
    k: usize,
}

impl Knn {
    /// Builds the index. Rows are normalised here (a zero row never matches).
    pub fn new(rows: Vec<Vec<f32>>, complex: Vec<bool>, k: usize) -> Result<Knn, ComplexityError> {
        if rows.is_empty() || rows.len() != complex.len() {
            return Err(ComplexityError::Invalid(format!(
                "{} vectors for {} labels",
                rows.len(),
                complex.len()
            )));
        }
        if k == 0 {
            return Err(ComplexityError::Invalid("k must be positive".into()));
        }
        let dim = rows[0].len();
        let mut vectors = Vec::with_capacity(rows.len() * dim);
        for mut r in rows {
            if r.len() != dim || dim == 0 {
                return Err(ComplexityError::Invalid(format!(
                    "vector of {} dimensions, expected {dim}",
                    r.len()
                )));
            }
            crate::embed::l2_normalize(&mut r);
            vectors.extend_from_slice(&r);
        }
        Ok(Knn {
            dim,
            vectors,
            complex,
            k,
        })
    }

    pub fn len(&self) -> usize {
        self.complex.len()
    }

    pub fn is_empty(&self) -> bool {
        self.complex.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Probability that `query` is complex, in `[0, 1]`; `None` for a vector of the wrong
    /// dimension. `query` should be L2-normalised (the embedder's vectors are).
    pub fn score(&self, query: &[f32]) -> Option<f32> {
        self.score_with(query, self.k, None)
    }

    /// [`Knn::score`] with another `k`, optionally leaving example `exclude` out (leave-one-out
    /// evaluation when tuning `k`).
    pub fn score_with(&self, query: &[f32], k: usize, exclude: Option<usize>) -> Option<f32> {
        if query.len() != self.dim || k == 0 {
            return None;
        }
        // Top-k by insertion into a small sorted buffer: k is tiny, n a few hundred.
        let mut top: Vec<(f32, bool)> = Vec::with_capacity(k + 1);
        for (i, row) in self.vectors.chunks_exact(self.dim).enumerate() {
            if exclude == Some(i) {
                continue;
            }
            let sim = dot(row, query);
            if top.len() == k && top.last().is_some_and(|(s, _)| sim <= *s) {
                continue;
            }
            let at = top.iter().position(|(s, _)| sim > *s).unwrap_or(top.len());
            top.insert(at, (sim, self.complex[i]));
            top.truncate(k);
        }
        let (mut num, mut den) = (0.0f32, 0.0f32);
        for (sim, complex) in top {
            let w = 1.0 / ((1.0 - sim).max(0.0) + DISTANCE_EPSILON);
            den += w;
            if complex {
                num += w;
            }
        }
        if den <= 0.0 {
            return None;
        }
        Some((num / den).clamp(0.0, 1.0))
    }

    /// Each example's score by its `k` nearest other examples (leave-one-out).
    pub fn leave_one_out_scores(&self, k: usize) -> Vec<f32> {
        self.vectors
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(i, row)| self.score_with(row, k, Some(i)).unwrap_or(0.0))
            .collect()
    }

    /// Accuracy of leave-one-out `scores` ([`Knn::leave_one_out_scores`]) at `threshold`.
    pub fn accuracy_at(&self, scores: &[f32], threshold: f32) -> f32 {
        let right = scores
            .iter()
            .zip(&self.complex)
            .filter(|(s, c)| (**s >= threshold) == **c)
            .count();
        right as f32 / self.len().max(1) as f32
    }

    /// Leave-one-out accuracy of `k` on the index itself, at `threshold`.
    pub fn leave_one_out_accuracy(&self, k: usize, threshold: f32) -> f32 {
        self.accuracy_at(&self.leave_one_out_scores(k), threshold)
    }
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it (a single
/// running `f32` sum must be added in order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The trained classifier: a [`Knn`] plus where its examples came from.
#[derive(Clone, Debug)]
pub struct Classifier {
    knn: Knn,
    model_id: String,
    source: String,
}

impl Classifier {
    /// Embeds `examples` with `embedder` (blocking: call off the async threads) and indexes
    /// them. `source` names the example set in logs (`builtin` or a path).
    pub fn train(
        embedder: &dyn Embedder,
        examples: &[Example],
        k: usize,
        source: impl Into<String>,
    ) -> Result<Classifier, ComplexityError> {
        // A batch is padded to its longest member: embed in order of length, so short prompts
        // are not padded to a long one's length (several times faster on the shipped set).
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.sort_by_key(|&i| examples[i].prompt.len());
        let mut rows = vec![Vec::new(); examples.len()];
        for chunk in order.chunks(TRAIN_BATCH) {
            let texts: Vec<&str> = chunk.iter().map(|&i| examples[i].prompt.as_str()).collect();
            let vectors = embedder.embed_batch(&texts)?;
            if vectors.len() != chunk.len() {
                return Err(ComplexityError::Invalid(format!(
                    "the embedder returned {} vectors for {} texts",
                    vectors.len(),
                    chunk.len()
                )));
            }
            for (&i, v) in chunk.iter().zip(vectors) {
                rows[i] = v;
            }
        }
        let labels = examples.iter().map(|e| e.label == Label::Complex).collect();
        Ok(Classifier {
            knn: Knn::new(rows, labels, k)?,
            model_id: embedder.model_id().to_string(),
            source: source.into(),
        })
    }

    /// Probability that the prompt embedded as `query` (by the same model) is complex.
    pub fn score(&self, query: &[f32]) -> Option<f32> {
        self.knn.score(query)
    }

    pub fn knn(&self) -> &Knn {
        &self.knn
    }

    /// The embedding model the examples were embedded with.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// `complexity` in the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComplexityConfig {
    /// Offer learned scores (needs the embedding model, i.e. semantic mode not `off`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Embed the examples in the background as soon as the service starts. Otherwise the first
    /// admit that asks for a score starts it (and gets none), so a service whose filters never
    /// ask spends nothing on it.
    #[serde(default)]
    pub train_at_start: bool,
    /// JSONL of labelled examples; default: the shipped set compiled into the binary.
    #[serde(default)]
    pub examples: Option<PathBuf>,
    /// Neighbours that vote.
    #[serde(default = "default_k")]
    pub k: usize,
}

fn yes() -> bool {
    true
}
fn default_k() -> usize {
    DEFAULT_K
}

impl Default for ComplexityConfig {
    fn default() -> Self {
        ComplexityConfig {
            enabled: true,
            train_at_start: false,
            examples: None,
            k: DEFAULT_K,
        }
    }
}

impl ComplexityConfig {
    /// Checks what can be checked without the model: `k` and the example file.
    pub fn validate(&self) -> Result<Vec<Example>, String> {
        if self.k == 0 || self.k > 101 {
            return Err("complexity.k must be between 1 and 101".into());
        }
        load_examples(self.examples.as_deref()).map_err(|e| e.to_string())
    }

    /// Name of the example set for logs.
    pub fn source(&self) -> String {
        self.examples
            .as_ref()
            .map_or_else(|| "builtin".to_string(), |p| p.display().to_string())
    }
}

/// Label of the score bucket metric (`tollgate_complexity_scores_total{bucket}`): the lower
/// bound of a tenth, `0.0` … `0.9`.
pub fn bucket(score: f32) -> &'static str {
    const B: [&str; 10] = [
        "0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9",
    ];
    let i = (score.clamp(0.0, 1.0) * 10.0) as usize;
    B[i.min(9)]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::embed::FakeEmbedder;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        crate::embed::l2_normalize(&mut v);
        v
    }

    #[test]
    fn nearest_neighbours_decide() {
        let rows = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.9, 0.1, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.9, 0.1],
        ];
        let knn = Knn::new(rows, vec![true, true, false, false], 2).unwrap();
        assert!(knn.score(&unit(&[1.0, 0.05, 0.0])).unwrap() > 0.99);
        assert!(knn.score(&unit(&[0.05, 1.0, 0.0])).unwrap() < 0.01);
    }

    #[test]
    fn votes_are_weighted_by_distance() {
        // k = 3: one very close complex neighbour outweighs two distant simple ones.
        let rows = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.1, 1.0]];
        let knn = Knn::new(rows, vec![true, false, false], 3).unwrap();
        let s = knn.score(&unit(&[1.0, 0.02])).unwrap();
        assert!(s > 0.9, "{s}");
        // Halfway between: the two simple examples win, but not unanimously.
        let s = knn.score(&unit(&[1.0, 1.0])).unwrap();
        assert!(s > 0.2 && s < 0.5, "{s}");
    }

    #[test]
    fn score_is_a_probability_and_k_larger_than_n_is_fine() {
        let rows = vec![vec![1.0, 0.0], vec![-1.0, 0.0]];
        let knn = Knn::new(rows, vec![true, false], 50).unwrap();
        for q in [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.6, 0.8]] {
            let s = knn.score(&q).unwrap();
            assert!((0.0..=1.0).contains(&s), "{s}");
        }
        // An exact duplicate does not give an infinite weight.
        let s = knn.score(&[1.0, 0.0]).unwrap();
        assert!(s > 0.99 && s <= 1.0);
    }

    #[test]
    fn wrong_dimension_and_bad_input_are_refused() {
        let knn = Knn::new(vec![vec![1.0, 0.0]], vec![true], 1).unwrap();
        assert_eq!(knn.score(&[1.0, 0.0, 0.0]), None);
        assert!(Knn::new(vec![], vec![], 1).is_err());
        assert!(Knn::new(vec![vec![1.0]], vec![true], 0).is_err());
        assert!(Knn::new(vec![vec![1.0], vec![1.0, 2.0]], vec![true, false], 1).is_err());
        assert!(Knn::new(vec![vec![1.0]], vec![true, false], 1).is_err());
    }

    #[test]
    fn leave_one_out_skips_the_example_itself() {
        // Two tight clusters: LOO with k = 1 is perfect; without excluding itself it would be
        // trivially perfect too, so also check a mislabelled singleton is counted wrong.
        let rows = vec![
            vec![1.0, 0.0],
            vec![0.99, 0.01],
            vec![0.0, 1.0],
            vec![0.01, 0.99],
            vec![0.98, 0.02],
        ];
        let knn = Knn::new(rows, vec![true, true, false, false, false], 1).unwrap();
        let acc = knn.leave_one_out_accuracy(1, 0.5);
        assert!((acc - 0.8).abs() < 1e-6, "{acc}");
    }

    #[test]
    fn shipped_examples_parse_with_both_labels() {
        let ex = parse_examples(DEFAULT_EXAMPLES).unwrap();
        assert!(ex.len() >= 300, "{}", ex.len());
        let complex = ex.iter().filter(|e| e.label == Label::Complex).count();
        assert!(complex > ex.len() / 4 && complex < ex.len() * 3 / 4);
        assert!(ex.iter().all(|e| !e.source.is_empty()));
    }

    #[test]
    fn parse_rejects_bad_lines_and_one_sided_sets() {
        assert!(parse_examples("{\"prompt\": \"a\", \"label\": \"hard\"}").is_err());
        assert!(parse_examples("not json").is_err());
        assert!(parse_examples("{\"prompt\": \"a\", \"label\": \"simple\"}").is_err());
        assert!(parse_examples("{\"prompt\": \" \", \"label\": \"simple\"}").is_err());
        let ok = "{\"prompt\": \"a\", \"label\": \"simple\"}\n\n{\"prompt\": \"b\", \"label\": \"complex\"}\n";
        assert_eq!(parse_examples(ok).unwrap().len(), 2);
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: ComplexityConfig = serde_json::from_str("{}").unwrap();
        assert!(c.enabled && c.k == DEFAULT_K && c.examples.is_none());
        assert_eq!(c.source(), "builtin");
        assert!(c.validate().is_ok());
        let bad: ComplexityConfig = serde_json::from_str("{\"k\": 0}").unwrap();
        assert!(bad.validate().is_err());
        let missing: ComplexityConfig =
            serde_json::from_str("{\"examples\": \"/nonexistent/x.jsonl\"}").unwrap();
        assert!(missing.validate().is_err());
        assert!(serde_json::from_str::<ComplexityConfig>("{\"kk\": 3}").is_err());
    }

    #[test]
    fn trains_with_an_embedder_and_scores_its_own_examples() {
        let ex = parse_examples(
            "{\"prompt\": \"prove the theorem\", \"label\": \"complex\"}\n\
             {\"prompt\": \"capital of France\", \"label\": \"simple\"}\n",
        )
        .unwrap();
        let emb = FakeEmbedder::new(64);
        let c = Classifier::train(&emb, &ex, 1, "test").unwrap();
        assert_eq!(c.knn().len(), 2);
        assert_eq!(c.source(), "test");
        let v = emb.embed_batch(&["prove the theorem"]).unwrap();
        assert!(c.score(&v[0]).unwrap() > 0.99);
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        for n in [0usize, 1, 7, 8, 9, 384, 389] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "{n}");
        }
    }

    #[test]
    fn buckets_cover_the_range() {
        assert_eq!(bucket(0.0), "0.0");
        assert_eq!(bucket(0.05), "0.0");
        assert_eq!(bucket(0.55), "0.5");
        assert_eq!(bucket(1.0), "0.9");
        assert_eq!(bucket(-3.0), "0.0");
        assert_eq!(bucket(f32::NAN), "0.0");
    }
}
