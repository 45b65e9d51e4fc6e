//! Threshold calibration on labelled pairs.
//!
//! A labelled pair is two user questions and whether one answer serves both (`same`). Scoring a
//! pair gives its cosine similarity and the guards' verdict; a pair is a *hit* at threshold `t`
//! when `cosine >= t` and (with guards) the guards pass. Per threshold:
//!
//! - precision = correct hits / hits
//! - recall (hit rate on true duplicates) = correct hits / `same` pairs
//! - false-hit rate = hits on `!same` pairs / `!same` pairs (a cached answer served to a
//!   different question)
//!
//! [`choose_threshold`] takes the threshold with the highest recall whose precision meets a
//! target; [`choose_by_false_hits`] the one with the highest recall whose false-hit rate stays
//! under a bound. [`run_cli`] is the service's `calibrate` command: it embeds JSONL pairs with the
//! real model and prints the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::guards::{self, Analysis, GuardReason, GuardVerdict};
use crate::embed::{EmbedError, Embedder};

/// One labelled pair (JSONL line). Extra fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledPair {
    /// The cached question.
    pub a: String,
    /// The new question.
    pub b: String,
    /// One answer is right for both.
    pub same: bool,
    /// What differs (`repeat`, `paraphrase`, `negation`, `number`, `date`, `entity`, `swap`,
    /// `different`, `unrelated`); free text for other data sets.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

/// A pair with its model score and guard verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPair {
    pub same: bool,
    pub kind: String,
    pub cosine: f32,
    pub guard: GuardVerdict,
    /// The guards' verdict when only repeats are served ([`guards::MatchMode::Repeats`]).
    pub repeat_guard: GuardVerdict,
}

impl ScoredPair {
    /// Served from cache at `threshold` (with or without the guards)? The threshold is compared
    /// in `f32`, as the service does, so 0.95 means the `f32` nearest to 0.95.
    pub fn is_hit(&self, threshold: f64, guards: bool) -> bool {
        self.cosine >= threshold as f32 && (!guards || self.guard.is_pass())
    }
}

/// Errors of the calibration command.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no labelled pairs in {0}")]
    Empty(PathBuf),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("the embedder returned {got} vectors for {expected} texts")]
    EmbedCount { expected: usize, got: usize },
}

/// Parses JSONL pairs (blank lines and lines starting with `#` are skipped).
pub fn parse_pairs(text: &str, path: &Path) -> Result<Vec<LabelledPair>, CalibrateError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pair: LabelledPair = serde_json::from_str(line).map_err(|e| CalibrateError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(pair);
    }
    Ok(out)
}

/// The held-out pair files in `dir` (`holdout.jsonl`, `holdout2.jsonl`, ...), oldest first.
pub fn holdout_files(dir: &Path) -> Vec<String> {
    let number = |name: &str| -> Option<u32> {
        let n = name.strip_prefix("holdout")?.strip_suffix(".jsonl")?;
        if n.is_empty() {
            Some(1)
        } else {
            n.parse().ok()
        }
    };
    let mut names: Vec<(u32, String)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| number(&n).map(|k| (k, n)))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

/// Reads JSONL pairs from a file.
pub fn load_pairs(path: &Path) -> Result<Vec<LabelledPair>, CalibrateError> {
    let text = std::fs::read_to_string(path).map_err(|source| CalibrateError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let pairs = parse_pairs(&text, path)?;
    if pairs.is_empty() {
        return Err(CalibrateError::Empty(path.to_path_buf()));
    }
    Ok(pairs)
}

/// Embeds both sides of every pair (in batches) and runs the guards.
pub fn score_pairs(
    embedder: &dyn Embedder,
    pairs: &[LabelledPair],
) -> Result<Vec<ScoredPair>, CalibrateError> {
    const BATCH: usize = 64;
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(BATCH) {
        let texts: Vec<&str> = chunk
            .iter()
            .flat_map(|p| [p.a.as_str(), p.b.as_str()])
            .collect();
        let vectors = embedder.embed_batch(&texts)?;
        if vectors.len() != texts.len() {
            return Err(CalibrateError::EmbedCount {
                expected: texts.len(),
                got: vectors.len(),
            });
        }
        for (p, v) in chunk.iter().zip(vectors.chunks(2)) {
            let cosine = match v {
                [x, y] => crate::embed::cosine(x, y),
                _ => 0.0,
            };
            let (a, b) = (Analysis::new(&p.a), Analysis::new(&p.b));
            out.push(ScoredPair {
                same: p.same,
                kind: p.kind.clone().unwrap_or_default(),
                cosine,
                guard: guards::check_analyzed(&a, &b),
                repeat_guard: guards::check_analyzed_with(&a, &b, guards::MatchMode::Repeats),
            });
        }
    }
    Ok(out)
}

/// The pairs as judged in `mode`: with [`guards::MatchMode::Repeats`], `guard` is the repeats
/// verdict.
pub fn in_mode(pairs: &[ScoredPair], mode: guards::MatchMode) -> Vec<ScoredPair> {
    pairs
        .iter()
        .map(|p| ScoredPair {
            guard: match mode {
                guards::MatchMode::Repeats => p.repeat_guard,
                guards::MatchMode::Paraphrases => p.guard,
            },
            ..p.clone()
        })
        .collect()
}

/// Counts and rates at one threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdStats {
    pub threshold: f64,
    /// Hits on `same` pairs.
    pub true_hits: usize,
    /// Hits on `!same` pairs (wrong answers served).
    pub false_hits: usize,
    /// `same` pairs missed.
    pub misses: usize,
    /// `!same` pairs correctly not served.
    pub rejections: usize,
    /// Pairs above the threshold that the guards turned away (0 without guards).
    pub guard_rejections: usize,
    /// Of those, `same` pairs (hits lost to the guards).
    pub guard_false_rejections: usize,
    /// `true_hits / hits`; 1 when there are no hits.
    pub precision: f64,
    /// `true_hits / same pairs`: the hit rate on true duplicates.
    pub recall: f64,
    /// `false_hits / !same pairs`.
    pub false_hit_rate: f64,
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

/// Statistics of `pairs` at `threshold`.
pub fn stats_at(pairs: &[ScoredPair], threshold: f64, guards: bool) -> ThresholdStats {
    let (mut tp, mut fp, mut fnn, mut tn, mut gr, mut gfr) = (0, 0, 0, 0, 0, 0);
    for p in pairs {
        let above = p.cosine >= threshold as f32;
        let hit = p.is_hit(threshold, guards);
        if above && !hit {
            gr += 1;
            if p.same {
                gfr += 1;
            }
        }
        match (p.same, hit) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fnn += 1,
            (false, false) => tn += 1,
        }
    }
    ThresholdStats {
        threshold,
        true_hits: tp,
        false_hits: fp,
        misses: fnn,
        rejections: tn,
        guard_rejections: gr,
        guard_false_rejections: gfr,
        precision: if tp + fp == 0 {
            1.0
        } else {
            ratio(tp, tp + fp)
        },
        recall: ratio(tp, tp + fnn),
        false_hit_rate: ratio(fp, fp + tn),
    }
}

/// Thresholds from `from` to `to` inclusive in steps of `step` (computed without drift).
pub fn thresholds(from: f64, to: f64, step: f64) -> Vec<f64> {
    if step.is_nan() || step <= 0.0 || to.is_nan() || from.is_nan() || to < from {
        return vec![from];
    }
    let n = ((to - from) / step + 1e-9).floor() as usize;
    (0..=n)
        .map(|i| ((from + i as f64 * step) * 1e6).round() / 1e6)
        .collect()
}

/// The default sweep: 0.70 to 0.99 in steps of 0.01.
pub fn default_thresholds() -> Vec<f64> {
    thresholds(0.70, 0.99, 0.01)
}

/// Statistics at every threshold.
pub fn sweep(pairs: &[ScoredPair], thresholds: &[f64], guards: bool) -> Vec<ThresholdStats> {
    thresholds
        .iter()
        .map(|&t| stats_at(pairs, t, guards))
        .collect()
}

/// The row with the highest recall among those satisfying `ok` and serving at least one true
/// duplicate; ties go to the higher (safer) threshold.
fn best_by(
    rows: &[ThresholdStats],
    ok: impl Fn(&ThresholdStats) -> bool,
) -> Option<ThresholdStats> {
    rows.iter()
        .filter(|r| ok(r) && r.true_hits > 0)
        .max_by(|x, y| {
            x.recall
                .total_cmp(&y.recall)
                .then(x.threshold.total_cmp(&y.threshold))
        })
        .cloned()
}

/// The threshold with the highest recall whose precision is at least `target_precision`.
pub fn choose_threshold(rows: &[ThresholdStats], target_precision: f64) -> Option<ThresholdStats> {
    best_by(rows, |r| r.precision >= target_precision)
}

/// The threshold with the highest recall whose false-hit rate is at most `max_false_hit_rate`.
pub fn choose_by_false_hits(
    rows: &[ThresholdStats],
    max_false_hit_rate: f64,
) -> Option<ThresholdStats> {
    best_by(rows, |r| r.false_hit_rate <= max_false_hit_rate)
}

/// Per-kind counts at one threshold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStats {
    pub pairs: usize,
    /// Pairs served from cache (right for `same` kinds, wrong for the others).
    pub hits: usize,
    /// Pairs above the threshold turned away by the guards, by reason.
    pub guard_rejections: BTreeMap<GuardReason, usize>,
}

/// Hits and guard rejections per pair kind at `threshold`.
pub fn by_kind(pairs: &[ScoredPair], threshold: f64, guards: bool) -> BTreeMap<String, KindStats> {
    let mut out: BTreeMap<String, KindStats> = BTreeMap::new();
    for p in pairs {
        let e = out.entry(p.kind.clone()).or_default();
        e.pairs += 1;
        if p.is_hit(threshold, guards) {
            e.hits += 1;
        } else if guards
            && p.cosine >= threshold as f32
            && let Some(r) = p.guard.reason()
        {
            *e.guard_rejections.entry(r).or_default() += 1;
        }
    }
    out
}

/// The result of a calibration run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub pairs: usize,
    pub same: usize,
    pub different: usize,
    pub guards: bool,
    pub target_precision: f64,
    pub rows: Vec<ThresholdStats>,
    /// `None` when no threshold meets the target.
    pub chosen: Option<ThresholdStats>,
    /// Per kind at the chosen threshold.
    pub kinds: BTreeMap<String, KindStats>,
}

impl CalibrationReport {
    /// Sweeps `thresholds` and chooses by `target_precision`.
    pub fn new(
        pairs: &[ScoredPair],
        thresholds: &[f64],
        guards: bool,
        target_precision: f64,
    ) -> CalibrationReport {
        let rows = sweep(pairs, thresholds, guards);
        let chosen = choose_threshold(&rows, target_precision);
        let kinds = chosen
            .as_ref()
            .map(|c| by_kind(pairs, c.threshold, guards))
            .unwrap_or_default();
        let same = pairs.iter().filter(|p| p.same).count();
        CalibrationReport {
            pairs: pairs.len(),
            same,
            different: pairs.len() - same,
            guards,
            target_precision,
            rows,
            chosen,
            kinds,
        }
    }

    /// Markdown: summary, the per-threshold table and the per-kind table.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} pairs ({} same, {} different), guards {}, target precision {:.3}\n",
            self.pairs,
            self.same,
            self.different,
            if self.guards { "on" } else { "off" },
            self.target_precision
        );
        s.push_str(&render_table(&self.rows));
        s.push('\n');
        match &self.chosen {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "chosen threshold: {:.2} (precision {:.3}, recall {:.3}, false-hit rate {:.3})\n",
                    c.threshold, c.precision, c.recall, c.false_hit_rate
                );
                s.push_str(&render_kinds(&self.kinds));
            }
            None => {
                let _ = writeln!(
                    s,
                    "no threshold reaches precision {:.3}",
                    self.target_precision
                );
            }
        }
        s
    }
}

/// The per-threshold table in Markdown.
pub fn render_table(rows: &[ThresholdStats]) -> String {
    let mut s = String::from(
        "| threshold | precision | recall | false-hit rate | true hits | false hits | guard rejections (of same) |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {:.2} | {:.3} | {:.3} | {:.3} | {} | {} | {} ({}) |",
            r.threshold,
            r.precision,
            r.recall,
            r.false_hit_rate,
            r.true_hits,
            r.false_hits,
            r.guard_rejections,
            r.guard_false_rejections
        );
    }
    s
}

/// The per-kind table in Markdown.
pub fn render_kinds(kinds: &BTreeMap<String, KindStats>) -> String {
    let mut s = String::from("| kind | pairs | served | guard rejections |\n|---|---:|---:|---|\n");
    for (kind, k) in kinds {
        let reasons: Vec<String> = k
            .guard_rejections
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            if kind.is_empty() { "(none)" } else { kind },
            k.pairs,
            k.hits,
            reasons.join(", ")
        );
    }
    s
}

/// Arguments of the `calibrate` command.
#[derive(Clone, Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Labelled pairs, JSONL: {"a": "...", "b": "...", "same": true|false, "kind": "..."}.
    #[arg(long, default_value = "cache-service/data/pairs/dev.jsonl")]
    pub pairs: PathBuf,
    /// Precision the chosen threshold must reach (share of served answers that are right).
    #[arg(long, default_value_t = 0.99)]
    pub target_precision: f64,
    /// Score with cosine only (the guards are on by default).
    #[arg(long = "no-guards", action = clap::ArgAction::SetFalse)]
    pub guards: bool,
    /// What a hit may be: `repeats` (the service's default) or `paraphrases`.
    #[arg(long = "match", value_enum, default_value_t = guards::MatchMode::Repeats)]
    pub match_mode: guards::MatchMode,
    /// Model directory (default: $TOLLGATE_MODEL_DIR, else .cache/models/all-MiniLM-L6-v2).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
}

/// The `calibrate` command: loads the pairs, embeds them with the real model, prints the
/// per-threshold table and the chosen threshold, and returns the report.
pub fn run_cli(args: CalibrateArgs) -> Result<CalibrationReport, CalibrateError> {
    let pairs = load_pairs(&args.pairs)?;
    let mut config = crate::embed::OnnxConfig::default();
    if let Some(dir) = args.model_dir {
        config.model_dir = dir;
    }
    config.check_files()?;
    let embedder = crate::embed::OnnxEmbedder::load(&config)?;
    let scored = in_mode(&score_pairs(&embedder, &pairs)?, args.match_mode);
    let report = CalibrationReport::new(
        &scored,
        &default_thresholds(),
        args.guards,
        args.target_precision,
    );
    println!("{}: {}", args.pairs.display(), report.to_markdown());
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sp(same: bool, cosine: f32, guard: GuardVerdict) -> ScoredPair {
        ScoredPair {
            same,
            kind: if same {
                "repeat".into()
            } else {
                "number".into()
            },
            cosine,
            guard,
            repeat_guard: guard,
        }
    }

    #[test]
    fn counts_and_rates() {
        let pairs = vec![
            sp(true, 0.95, GuardVerdict::Pass),
            sp(true, 0.85, GuardVerdict::Pass),
            sp(true, 0.97, GuardVerdict::Reject(GuardReason::Number)),
            sp(false, 0.96, GuardVerdict::Reject(GuardReason::Number)),
            sp(false, 0.90, GuardVerdict::Pass),
            sp(false, 0.50, GuardVerdict::Pass),
        ];
        let plain = stats_at(&pairs, 0.88, false);
        assert_eq!(
            (
                plain.true_hits,
                plain.false_hits,
                plain.misses,
                plain.rejections
            ),
            (2, 2, 1, 1)
        );
        assert_eq!(plain.guard_rejections, 0);
        assert!((plain.precision - 0.5).abs() < 1e-9);
        assert!((plain.recall - 2.0 / 3.0).abs() < 1e-9);
        assert!((plain.false_hit_rate - 2.0 / 3.0).abs() < 1e-9);

        let guarded = stats_at(&pairs, 0.88, true);
        assert_eq!((guarded.true_hits, guarded.false_hits), (1, 1));
        assert_eq!(
            (guarded.guard_rejections, guarded.guard_false_rejections),
            (2, 1)
        );

        let none = stats_at(&pairs, 0.99, true);
        assert_eq!(none.true_hits + none.false_hits, 0);
        assert_eq!(none.precision, 1.0);
    }

    #[test]
    fn threshold_grid_has_no_drift() {
        let t = default_thresholds();
        assert_eq!(t.len(), 30);
        assert_eq!(t[0], 0.70);
        assert_eq!(t[13], 0.83);
        assert_eq!(t[29], 0.99);
        assert_eq!(thresholds(0.5, 0.4, 0.1), vec![0.5]);
    }

    #[test]
    fn chooses_highest_recall_meeting_the_target() {
        let pairs = vec![
            sp(true, 0.99, GuardVerdict::Pass),
            sp(true, 0.93, GuardVerdict::Pass),
            sp(true, 0.80, GuardVerdict::Pass),
            sp(false, 0.91, GuardVerdict::Pass),
            sp(false, 0.75, GuardVerdict::Pass),
        ];
        let rows = sweep(&pairs, &default_thresholds(), false);
        let c = choose_threshold(&rows, 1.0).unwrap();
        assert_eq!(c.threshold, 0.93); // 0.92 and 0.93 tie at recall 2/3: the higher wins
        let c = choose_threshold(&rows, 0.75).unwrap();
        assert_eq!(c.threshold, 0.80);
        let c = choose_by_false_hits(&rows, 0.5).unwrap();
        assert_eq!(c.threshold, 0.80);
        assert!(choose_threshold(&sweep(&pairs[3..], &default_thresholds(), false), 0.5).is_none());
    }

    #[test]
    fn parses_jsonl_and_reports_bad_lines() {
        let text = "{\"a\":\"x\",\"b\":\"y\",\"same\":true,\"kind\":\"repeat\",\"extra\":1}\n\n# comment\n{\"a\":\"p\",\"b\":\"q\",\"same\":false}\n";
        let pairs = parse_pairs(text, Path::new("t.jsonl")).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].kind.as_deref(), Some("repeat"));
        assert_eq!(pairs[1].kind, None);
        let err = parse_pairs("{\"a\":\"x\"}\n", Path::new("t.jsonl")).unwrap_err();
        assert!(err.to_string().starts_with("t.jsonl:1:"), "{err}");
    }

    #[test]
    fn report_renders_markdown() {
        let pairs = vec![
            sp(true, 0.95, GuardVerdict::Pass),
            sp(false, 0.96, GuardVerdict::Reject(GuardReason::Date)),
        ];
        let report = CalibrationReport::new(&pairs, &default_thresholds(), true, 0.99);
        let md = report.to_markdown();
        assert!(
            md.contains("| 0.95 | 1.000 | 1.000 | 0.000 | 1 | 0 | 1 (0) |"),
            "{md}"
        );
        assert!(md.contains("chosen threshold: 0.95"), "{md}");
        assert!(md.contains("| number | 1 | 0 | date 1 |"), "{md}");
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"guard\":{\"reject\":\"date\"}") || json.contains("\"chosen\""));
    }
}
