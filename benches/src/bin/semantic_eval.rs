//! Semantic-cache correctness on labelled pairs: plain cosine vs cosine + guards.
//!
//! Scores `cache-service/data/pairs/{dev,test,holdout*}.jsonl` with the
//! real embedding model (all-MiniLM-L6-v2, int8 ONNX) and the guards, then:
//! 1. on **dev**, for cosine only and cosine + guards, chooses the threshold with the highest
//!    hit rate on true duplicates (repeats + paraphrases) whose false-hit rate on hard negatives
//!    (every `!same` kind but `unrelated`) is at most `--max-false-hits` (default 1%); two more
//!    modes use the service's settings: paraphrases at their default threshold, and the service
//!    as shipped (repeats only, `DEFAULT_MATCH` at its default threshold);
//! 2. on the newest holdout (written while the current guards were frozen, never seen by them),
//!    and the sets seen by earlier versions (see `HISTORY`), reports the hit rate and
//!    false-hit rates at those thresholds, the false hits and guard rejections by kind, and
//!    the per-threshold table;
//! 3. measures guard latency on the evaluation pairs.
//!
//! Prints a Markdown report and writes it to `benches/results/semantic.md`.
//! Needs `make setup` (model and ONNX Runtime in `.cache/`).
//!
//! Usage: semantic_eval [--max-false-hits 0.01] [--out PATH] [--model-dir DIR]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tollgate_cache_service::embed::{OnnxConfig, OnnxEmbedder};
use tollgate_cache_service::semantic::calibrate::{
    self, LabelledPair, ScoredPair, ThresholdStats, choose_by_false_hits, in_mode, stats_at, sweep,
};
use tollgate_cache_service::semantic::guards::{self, Analysis, GuardReason, MatchMode};

const TRUE_KINDS: &[&str] = &["repeat", "paraphrase"];
const HARD_KINDS: &[&str] = &["negation", "number", "date", "entity", "swap", "different"];

struct Args {
    max_false_hits: f64,
    out: PathBuf,
    model_dir: Option<PathBuf>,
    data: PathBuf,
}

fn args() -> Args {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut a = Args {
        max_false_hits: 0.01,
        out: root.join("benches/results/semantic.md"),
        model_dir: None,
        data: root.join("cache-service/data/pairs"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--max-false-hits" => a.max_false_hits = val.parse().unwrap(),
            "--out" => a.out = PathBuf::from(val),
            "--model-dir" => a.model_dir = Some(PathBuf::from(val)),
            "--data" => a.data = PathBuf::from(val),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// True duplicates and hard negatives only (the pairs the threshold is chosen on).
fn hard(pairs: &[ScoredPair]) -> Vec<ScoredPair> {
    pairs
        .iter()
        .filter(|p| p.same || HARD_KINDS.contains(&p.kind.as_str()))
        .cloned()
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

struct Mode {
    name: &'static str,
    guards: bool,
    chosen: Option<ThresholdStats>,
    /// A fixed threshold rather than one chosen on dev (the service's settings).
    fixed: Option<f64>,
    /// What a hit may be: paraphrases (the guards alone) or repeats only.
    view: MatchMode,
}

/// Earlier evaluations, before the fixes their errors prompted (recorded here because the sets
/// they ran on have not been held out since).
const HISTORY: &str = "\
## History: earlier held-out runs, and what changed after each\n\
\n\
Each evaluation set was run once while still unseen; its errors were then inspected and the guards fixed in general form, after which that set no longer counts as held out and a new set was written for the next version. Thresholds were always chosen on dev with the rule above.\n\
\n\
| guards | set (unseen at the time) | threshold | hit rate on true duplicates | false hits, hard negatives |\n\
|---|---|---:|---:|---:|\n\
| none (cosine only) | test.jsonl | 0.999 | 5.6% (15/270) | 0.0% (0/274) |\n\
| v1 | test.jsonl | 0.865 | 54.8% (148/270) | **3.3% (9/274)** |\n\
| none (cosine only) | holdout.jsonl | 0.999 | 10.8% (13/120) | 0.0% (0/115) |\n\
| v2 | holdout.jsonl | 0.864 | 57.5% (69/120) | **7.0% (8/115)** |\n\
| v3 | holdout2.jsonl | 0.858 | 60.0% (60/100) | **7.3% (7/96)** |\n\
| v3, default 0.95 (chosen after this set was seen: not a held-out figure) | holdout2.jsonl | 0.950 | 49.0% (49/100) | **2.1% (2/96)** |\n\
| none (cosine only) | holdout3.jsonl | 0.999 | 5.0% (6/120) | 0.0% (0/115) |\n\
| v3 | holdout3.jsonl | 0.858 | 66.7% (80/120) | **7.0% (8/115)** |\n\
| v3, shipped default | holdout3.jsonl | 0.950 | 45.8% (55/120) | **4.3% (5/115)** |\n\
| v4 | holdout4.jsonl | 0.858 | 66.7% (80/120) | **9.6% (11/115)** |\n\
| v4, shipped default | holdout4.jsonl | 0.950 | 45.8% (55/120) | **7.0% (8/115)** |\n\
| v5 | holdout5.jsonl | 0.858 | 65.8% (79/120) | **6.1% (7/115)** |\n\
| v5, shipped default | holdout5.jsonl | 0.950 | 43.3% (52/120) | **1.7% (2/115)** |\n\
| v6 | holdout6.jsonl | 0.858 | 75.0% (90/120) | **7.0% (8/115)** |\n\
| v6, shipped default | holdout6.jsonl | 0.950 | 43.3% (52/120) | **4.3% (5/115)** |\n\
| v7 | holdout7.jsonl | 0.858 | 67.5% (81/120) | **5.2% (6/115)** |\n\
| v7, shipped default | holdout7.jsonl | 0.950 | 45.0% (54/120) | **4.3% (5/115)** |\n\
| v8 | holdout9.jsonl | 0.858 | 73.3% (88/120) | **11.3% (13/115)** |\n\
| v8, shipped default | holdout9.jsonl | 0.950 | 50.0% (60/120) | **4.3% (5/115)** |\n\
| v8, shipped default (leaning set) | holdout8.jsonl | 0.950 | 45.0% (54/120) | **0.9% (1/115)** |\n\
\n\
- v1 -> v2, after v1's 9 wrong answers on test (4 swaps, 5 scope changes): a direction word repeated in a question (\"a way *to* send money from the US *to* India\") hid the swap; \"for\" became a pivot (\"exchange economy *for* business\"); \"within\" joined the `before` pole; a `place` class (home / abroad / domestic) and \"self\" (self-employed) were added; all-caps stop words (\"OK\") stopped counting as names and all-caps \"APR\" as a month. `holdout.jsonl` (240 new pairs) was written after v2.\n\
- v2 -> v3, after v2's 8 wrong answers on holdout (5 antonyms missing from the hand-written list: high/low, left/right, up/down, enable/stop, allow/forbidden; 3 swaps): the 3,364 direct antonym pairs of WordNet 3.0 became opposite poles (filtered of stop words and senses that are not opposites in questions); a negator attached to a pole word counts as the opposite pole only when the other side has that concept; \"less X\" flips X; names keep their spelling (\"https\" is not the plural of \"http\"); a capitalised word mid-sentence is a name even if it is a common word (\"Go\"). `holdout2.jsonl` (200 new pairs) was written after v3 and evaluated once, below.\n\
- v3, unchanged after holdout2 (instead the service's default threshold was set to 0.95 in 1dcf1be, chosen after seeing test, holdout and holdout2): `holdout3.jsonl` (240 new pairs) was written after the holdout2 run and evaluated once at the shipped default, (that run and its error analysis: `benches/results/semantic-holdout3-v3.md`).\n\
- v3 -> v4, after v3's 5 wrong answers on holdout3 at the shipped default (3 role swaps, 2 negations) and holdout2's: roles traded around a shared word count as a swap up to three content words apart (\"a US citizen sponsors a Canadian spouse\" / \"a Canadian citizen sponsors a US spouse\"), between two names or two common words (not a manner word moved with a phrase); the plain negators and negating prefixes of Spanish, French, German, Italian and Portuguese (\"activo\" / \"desactivo\", \"nicht\", \"senza\"), inflected \"avoided\" / \"prevented\", the prefix \"de-\" (\"activate\" / \"deactivate\"); accents folded (\"Perú\" = \"Peru\"). v4 was committed (028e5d2) before `holdout4.jsonl` (240 new pairs, written by an agent that did not see the guards, committed in 1d1ded9) was scored for the first time, in this report: at the shipped default 45.8% of its true duplicates were served and 7.0% (8/115) of its hard negatives got a wrong answer.\n\
- v4 -> v5, after v4's 8 wrong answers on holdout4 at the shipped default (5 swaps, 3 negations): phrases traded across a direction marker after the same head word (\"convert a Unix timestamp to an ISO date string\" / the reverse); the same numbers in another order (\"what percentage of 80 is 20\"); a wh-question asking for the object on one side and the subject on the other (\"who did X beat\" / \"who beat X\"); \"lack\", Spanish and Portuguese \"dejar de\" / \"deixar de\" and German \"-frei\" as negators; French and Italian elision (\"d'amande\" is \"amande\"); the function words of five languages are stop words; a phrase moved to the front (\"In Rust, ...\") is not a role swap. v5 was committed (0f6ad0c) before `holdout5.jsonl` (240 new pairs by an agent that did not see the guards, committed before scoring) was scored for the first time, in this report: at the shipped default 43.3% of its true duplicates were served and 1.7% (2/115) of its hard negatives got a wrong answer.\n\
- v5 -> v6, after v5's 2 wrong answers on holdout5 at the shipped default (\"who did Aristotle teach\" / \"who taught Aristotle\": an irregular past; German \"Zoll in Zentimeter\" / \"Zentimeter in Zoll\") and the 5 more it served below the default: \"in\" as a direction marker before an article or in a unit conversion (not \"a leap year in days\"); irregular past forms in who-did-what questions; \"free of\" as a negator; weekdays, months and day words of Spanish, French, German, Italian and Portuguese; the opposites open / closed, allow / block, enable / disable in those languages. v6 was committed (87d48ed) before `holdout6.jsonl` (240 new pairs by an agent that did not see the guards, committed in 6af8523 before scoring) was scored for the first time, in this report: at the shipped default 43.3% of its true duplicates were served and 4.3% (5/115) of its hard negatives got a wrong answer, 4 of the 5 in French or Spanish (a relative day, an opposite, two swaps across \"a\" / \"à\").\n\
- v6 -> v7: every fresh set had found gaps in the word lists, and most wrong answers in v5 and v6 came from the 10% of pairs not in English, where the lists know least. v7 serves a semantic hit across a non-English text only when both texts have the same content words in the same order (accents, case, punctuation, greetings and politeness aside): repeats, not paraphrases. On the sets already seen this lost no hit at the shipped default. v7 was committed (1fe1348) before `holdout7.jsonl` (240 new pairs by an agent that did not see the guards, committed in 3846603 before scoring) was scored for the first time, in this report: at the shipped default 45.0% of its true duplicates were served and 4.3% (5/115) of its hard negatives got a wrong answer, all in English (4 swaps, 1 opposite phrasing).\n\
- v7 -> v8, after v7's 4 swaps on holdout7 (\"replace tabs with spaces\" / \"spaces with tabs\", \"is every square a rectangle\" / the reverse, \"hours ahead of Chicago is Berlin\" / the reverse, a Windows laptop and a Mac trading roles): one general rule instead of more patterns, two stretches of words trading places with everything else in place is a swap, except around \"and\" / \"or\" and when a stretch only moves to the other end (\"In Python, ...\" / \"... in Python\"). On the sets already seen it lost no hit. v8 was committed (1c4a588) before two new sets were scored for the first time, in this report: `holdout9.jsonl`, written with the same instructions as holdout7 (the fair first look), and `holdout8.jsonl`, whose writer was by mistake given holdout7's swap patterns as examples of the kind (\"X with Y\", \"is every X a Y\"), so it leans towards what v8 fixed and is not a fair estimate. At the shipped default v8 served 50.0% of holdout9's true duplicates at 4.3% (5/115) wrong answers (for / against, included / missing, qualify / excluded, during / after probation, who / when), holdout8 45.0% at 0.9%.\n\
- v8 -> v9, the default changes, not the word lists: six first looks in a row (v3 to v8) served 1.7-7% wrong answers at 0.95, almost all on paraphrase-like pairs whose one changed word the lists did not know. Served hits at 0.95 were mostly repeats (typos, case, greetings) anyway. v9 adds a match mode: `repeats` (the new default) serves a semantic hit only when, after the guards pass, both texts have the same content words in the same order (typos fixed, accents, case, punctuation, greetings, politeness and stop words aside), at a default threshold of 0.80 since the words, not the embedding, decide; `paraphrases` keeps v8 at 0.95. On the sets already seen, repeats-only served 35-46% of the holdouts' true duplicates (27-30% on dev and test, which have more paraphrases) with no wrong answer. v9 was committed before `holdout10.jsonl` (240 new pairs, same instructions as holdout9, committed before scoring) was scored for the first time, in this report: holdout10 is the only set here unseen by the current guards.\n";

fn main() {
    let args = args();
    let mut config = OnnxConfig::default();
    if let Some(dir) = &args.model_dir {
        config.model_dir = dir.clone();
    }
    if let Err(e) = config.check_files() {
        panic!("{e}\nrun `make setup` to fetch the model and ONNX Runtime");
    }
    let t0 = Instant::now();
    let embedder = OnnxEmbedder::load(&config).expect("load model (run `make setup`)");
    let load_s = t0.elapsed().as_secs_f64();

    let dev_pairs = calibrate::load_pairs(&args.data.join("dev.jsonl")).unwrap();
    let holdouts = calibrate::holdout_files(&args.data);
    // Newest first: the only set unseen by the current version leads the report.
    let mut sets: Vec<(&str, Vec<LabelledPair>)> = holdouts
        .iter()
        .rev()
        .map(|name| {
            (
                name.as_str(),
                calibrate::load_pairs(&args.data.join(name)).unwrap(),
            )
        })
        .collect();
    sets.push((
        "test.jsonl",
        calibrate::load_pairs(&args.data.join("test.jsonl")).unwrap(),
    ));
    let t1 = Instant::now();
    let dev = calibrate::score_pairs(&embedder, &dev_pairs).unwrap();
    let scored: Vec<Vec<ScoredPair>> = sets
        .iter()
        .map(|(_, p)| calibrate::score_pairs(&embedder, p).unwrap())
        .collect();
    let score_s = t1.elapsed().as_secs_f64();
    let embedded = dev.len() + scored.iter().map(Vec::len).sum::<usize>();

    // Fine grid: plain cosine needs thresholds close to 1.
    let grid = calibrate::thresholds(0.70, 0.999, 0.001);
    let mut modes = [
        Mode {
            name: "cosine only",
            guards: false,
            chosen: None,
            fixed: None,
            view: MatchMode::Paraphrases,
        },
        Mode {
            name: "cosine + guards",
            guards: true,
            chosen: None,
            fixed: None,
            view: MatchMode::Paraphrases,
        },
        Mode {
            name: "paraphrases (guards, their default threshold)",
            guards: true,
            chosen: None,
            fixed: Some(f64::from(MatchMode::Paraphrases.default_threshold())),
            view: MatchMode::Paraphrases,
        },
        Mode {
            name: "**as shipped** (repeats only, default threshold)",
            guards: true,
            chosen: None,
            fixed: Some(f64::from(
                tollgate_cache_service::service::DEFAULT_MATCH.default_threshold(),
            )),
            view: tollgate_cache_service::service::DEFAULT_MATCH,
        },
    ];
    let dev_hard = hard(&dev);
    for m in &mut modes {
        m.chosen = match m.fixed {
            Some(t) => Some(stats_at(&in_mode(&dev_hard, m.view), t, true)),
            None => choose_by_false_hits(&sweep(&dev_hard, &grid, m.guards), args.max_false_hits),
        };
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Semantic cache: guards and threshold calibration\n");
    let _ = writeln!(
        md,
        "Generated by `cargo run --release -p tollgate-benches --bin semantic_eval` \
         (model all-MiniLM-L6-v2 int8 ONNX, CPU; loaded in {load_s:.1} s; {embedded} pairs embedded in {score_s:.1} s).\n"
    );
    let _ = writeln!(
        md,
        "A *hit* is a pair whose cosine similarity is at or above the threshold (and, with guards, \
         that the guards pass). *Hit rate* is the share of true duplicates (`repeat` + `paraphrase`) \
         served from cache; a *false hit* is a `!same` pair served: a wrong answer. Thresholds are \
         chosen on `dev.jsonl` as the highest hit rate with at most {} false hits on hard negatives \
         (every negative kind except `unrelated`), on a 0.001 grid from 0.700 to 0.999, then \
         applied unchanged to the evaluation sets.\n",
        pct(args.max_false_hits)
    );
    let all_sets: Vec<(&str, &[LabelledPair])> =
        std::iter::once(("dev.jsonl", dev_pairs.as_slice()))
            .chain(sets.iter().map(|(n, p)| (*n, p.as_slice())))
            .collect();
    write_dataset(&mut md, &all_sets);

    // Headline
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| set | mode | threshold (from dev) | hit rate on true duplicates | repeats | paraphrases | false hits, hard negatives | false hits, all negatives |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
    let dev_row = ("dev.jsonl (tuning)", &dev);
    let eval_rows: Vec<(&str, &Vec<ScoredPair>)> =
        sets.iter().map(|(n, _)| *n).zip(scored.iter()).collect();
    for (set, pairs) in eval_rows
        .iter()
        .copied()
        .chain(std::iter::once((dev_row.0, dev_row.1)))
    {
        for m in &modes {
            let Some(c) = &m.chosen else {
                let _ = writeln!(
                    md,
                    "| {set} | {} | none reaches the bound on dev | | | | | |",
                    m.name
                );
                continue;
            };
            let t = c.threshold;
            let pairs = &in_mode(pairs, m.view);
            let h = stats_at(&hard(pairs), t, m.guards);
            let all = stats_at(pairs, t, m.guards);
            let kinds = calibrate::by_kind(pairs, t, m.guards);
            let rate = |k: &str| {
                kinds
                    .get(k)
                    .map_or(0.0, |s| s.hits as f64 / s.pairs.max(1) as f64)
            };
            let _ = writeln!(
                md,
                "| {set} | {} | {:.3} | **{}** ({}/{}) | {} | {} | **{}** ({}/{}) | {} ({}/{}) |",
                m.name,
                t,
                pct(h.recall),
                h.true_hits,
                h.true_hits + h.misses,
                pct(rate("repeat")),
                pct(rate("paraphrase")),
                pct(h.false_hit_rate),
                h.false_hits,
                h.false_hits + h.rejections,
                pct(all.false_hit_rate),
                all.false_hits,
                all.false_hits + all.rejections,
            );
        }
    }
    let _ = writeln!(md);

    // Operating points chosen on each evaluation set itself: not a fair estimate (the threshold
    // sees the answers), but it shows what a threshold can and cannot buy on unseen data.
    let _ = writeln!(
        md,
        "For reference, the best each mode could do on each evaluation set if the threshold were \
         chosen on that set itself (an optimistic bound, not an estimate): highest hit rate with \
         at most {} false hits on its hard negatives.\n",
        pct(args.max_false_hits)
    );
    let _ = writeln!(
        md,
        "| set | mode | threshold | hit rate | false hits, hard negatives |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|");
    for (set, pairs) in eval_rows.iter().copied() {
        let h = hard(pairs);
        for m in modes.iter().filter(|m| m.fixed.is_none()) {
            match choose_by_false_hits(&sweep(&h, &grid, m.guards), args.max_false_hits) {
                Some(c) => {
                    let _ = writeln!(
                        md,
                        "| {set} | {} | {:.3} | {} ({}/{}) | {} ({}/{}) |",
                        m.name,
                        c.threshold,
                        pct(c.recall),
                        c.true_hits,
                        c.true_hits + c.misses,
                        pct(c.false_hit_rate),
                        c.false_hits,
                        c.false_hits + c.rejections
                    );
                }
                None => {
                    let _ = writeln!(md, "| {set} | {} | none | | |", m.name);
                }
            }
        }
    }
    let _ = writeln!(md);
    md.push_str(HISTORY);
    let _ = writeln!(md);

    for ((set, pairs), scored) in sets.iter().zip(&scored) {
        write_set_details(&mut md, set, pairs, scored, &modes);
    }

    // Guard-only accuracy (no threshold): what the guards say about every pair
    let _ = writeln!(
        md,
        "## The guards alone, on every pair of all sets (no threshold)\n"
    );
    let _ = writeln!(md, "| kind | pairs | passed | rejected | top reasons |");
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    let mut by: BTreeMap<String, (usize, usize, BTreeMap<GuardReason, usize>)> = BTreeMap::new();
    for s in dev.iter().chain(scored.iter().flatten()) {
        let e = by.entry(s.kind.clone()).or_default();
        e.0 += 1;
        match s.guard.reason() {
            None => e.1 += 1,
            Some(r) => *e.2.entry(r).or_default() += 1,
        }
    }
    for kind in order_kinds(by.keys().cloned().collect()) {
        let (n, pass, reasons) = &by[&kind];
        let mut rs: Vec<(&GuardReason, &usize)> = reasons.iter().collect();
        rs.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = rs.iter().map(|(r, c)| format!("{r} {c}")).collect();
        let _ = writeln!(
            md,
            "| {kind} | {n} | {pass} | {} | {} |",
            n - pass,
            top.join(", ")
        );
    }
    let _ = writeln!(md);

    let latency_pairs: Vec<LabelledPair> =
        sets.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    write_latency(&mut md, &latency_pairs);

    print!("{md}");
    std::fs::write(&args.out, &md).unwrap();
    eprintln!("wrote {}", args.out.display());
}

/// By-kind table, false hits, lost duplicates and the per-threshold table of one evaluation set.
fn write_set_details(
    md: &mut String,
    set: &str,
    pairs: &[LabelledPair],
    scored: &[ScoredPair],
    modes: &[Mode],
) {
    let _ = writeln!(md, "## {set}\n");
    let _ = writeln!(
        md,
        "### By kind, at the thresholds chosen on dev and as shipped\n"
    );
    let chosen: Vec<(&Mode, f64)> = modes
        .iter()
        .filter_map(|m| m.chosen.as_ref().map(|c| (m, c.threshold)))
        .collect();
    let mut header = String::from("| kind | pairs |");
    let mut rule = String::from("|---|---:|");
    for (m, t) in &chosen {
        let _ = write!(header, " served: {} @ {:.3} |", m.name, t);
        rule.push_str("---:|");
    }
    header.push_str(" guard rejections above the shipped threshold |");
    rule.push_str("---|");
    let _ = writeln!(md, "{header}\n{rule}");
    let per_mode: Vec<BTreeMap<String, calibrate::KindStats>> = chosen
        .iter()
        .map(|(m, t)| calibrate::by_kind(&in_mode(scored, m.view), *t, m.guards))
        .collect();
    let kinds: Vec<String> = per_mode
        .first()
        .map(|k| k.keys().cloned().collect())
        .unwrap_or_default();
    for kind in order_kinds(kinds) {
        let n = per_mode
            .first()
            .and_then(|k| k.get(&kind))
            .map_or(0, |s| s.pairs);
        let same = if TRUE_KINDS.contains(&kind.as_str()) {
            " (same)"
        } else {
            ""
        };
        let mut row = format!("| {kind}{same} | {n} |");
        let mut reasons = String::new();
        for (i, k) in per_mode.iter().enumerate() {
            let s = k.get(&kind).cloned().unwrap_or_default();
            let _ = write!(row, " {} |", s.hits);
            if chosen[i].0.guards {
                reasons = s
                    .guard_rejections
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
        }
        let _ = writeln!(md, "{row} {reasons} |");
    }
    let _ = writeln!(md);

    for (m, t) in chosen.iter().filter(|(m, _)| m.guards) {
        let scored = &in_mode(scored, m.view);
        let wrong: Vec<(&ScoredPair, &LabelledPair)> = scored
            .iter()
            .zip(pairs)
            .filter(|(s, _)| !s.same && s.is_hit(*t, m.guards))
            .collect();
        let _ = writeln!(
            md,
            "False hits of {} at {t:.3} ({}):\n",
            m.name,
            wrong.len()
        );
        for (s, p) in wrong {
            let _ = writeln!(
                md,
                "- `{}` {:.3}: \"{}\" / \"{}\"",
                s.kind, s.cosine, p.a, p.b
            );
        }
        let _ = writeln!(md);
        let lost: Vec<(&ScoredPair, &LabelledPair)> = scored
            .iter()
            .zip(pairs)
            .filter(|(s, _)| s.same && s.cosine >= *t as f32 && !s.guard.is_pass())
            .collect();
        let reworded = lost
            .iter()
            .filter(|(s, _)| s.guard.reason() == Some(GuardReason::Reworded))
            .count();
        let lost: Vec<_> = lost
            .into_iter()
            .filter(|(s, _)| s.guard.reason() != Some(GuardReason::Reworded))
            .collect();
        let _ = writeln!(
            md,
            "True duplicates above {t:.3} that the guards turned away ({}{}):\n",
            lost.len(),
            if reworded > 0 {
                format!("; besides {reworded} turned away as reworded, not repeats, by design")
            } else {
                String::new()
            }
        );
        for (s, p) in lost {
            let _ = writeln!(
                md,
                "- `{}` {:.3} {}: \"{}\" / \"{}\"",
                s.kind,
                s.cosine,
                s.guard.reason().map_or("", GuardReason::as_str),
                p.a,
                p.b
            );
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(
        md,
        "### Per threshold (true duplicates and hard negatives)\n"
    );
    let h = hard(scored);
    let coarse = calibrate::thresholds(0.80, 0.99, 0.01);
    let _ = writeln!(
        md,
        "| threshold | hit rate, cosine | false hits, cosine | hit rate, + guards | false hits, + guards |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    for &t in coarse.iter().chain([0.995, 0.999].iter()) {
        let p = stats_at(&h, t, false);
        let g = stats_at(&h, t, true);
        let _ = writeln!(
            md,
            "| {t:.3} | {} | {} ({}) | {} | {} ({}) |",
            pct(p.recall),
            pct(p.false_hit_rate),
            p.false_hits,
            pct(g.recall),
            pct(g.false_hit_rate),
            g.false_hits
        );
    }
    let _ = writeln!(md);
}

fn order_kinds(mut kinds: Vec<String>) -> Vec<String> {
    let order = [
        "repeat",
        "paraphrase",
        "negation",
        "number",
        "date",
        "entity",
        "swap",
        "different",
        "unrelated",
    ];
    kinds.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(order.len()));
    kinds
}

fn write_dataset(md: &mut String, sets: &[(&str, &[LabelledPair])]) {
    let total: usize = sets.iter().map(|(_, p)| p.len()).sum();
    let _ = writeln!(md, "## Data\n");
    let _ = writeln!(
        md,
        "`cache-service/data/pairs/` (see its README): {total} pairs. `dev` and `test`: `fow-cache` 0.1.0 \
         question pairs (CC BY 4.0) and project-authored pairs (CC0), split by a fixed rule, stratified \
         by source and kind. `holdout` to `holdout10`: project-authored pairs, each written after a \
         version of the guards was frozen (see History).\n"
    );
    let mut header = String::from("| kind | same |");
    let mut rule = String::from("|---|---|");
    for (name, _) in sets {
        let _ = write!(header, " {} |", name.trim_end_matches(".jsonl"));
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    let counts: Vec<BTreeMap<String, usize>> = sets
        .iter()
        .map(|(_, pairs)| {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for p in *pairs {
                *m.entry(p.kind.clone().unwrap_or_default()).or_default() += 1;
            }
            m
        })
        .collect();
    let kinds: std::collections::BTreeSet<String> =
        counts.iter().flat_map(|c| c.keys().cloned()).collect();
    for kind in order_kinds(kinds.into_iter().collect()) {
        let same = if TRUE_KINDS.contains(&kind.as_str()) {
            "yes"
        } else {
            "no"
        };
        let mut row = format!("| {kind} | {same} |");
        for c in &counts {
            let _ = write!(row, " {} |", c.get(&kind).unwrap_or(&0));
        }
        let _ = writeln!(md, "{row}");
    }
    let mut row = String::from("| **total** | |");
    for (_, pairs) in sets {
        let same = pairs.iter().filter(|x| x.same).count();
        let _ = write!(row, " {} ({same} same) |", pairs.len());
    }
    let _ = writeln!(md, "{row}\n");
}

fn write_latency(md: &mut String, pairs: &[LabelledPair]) {
    // warm the lazily built word lists
    for p in pairs {
        let _ = guards::check(&p.a, &p.b);
    }
    const ROUNDS: usize = 200;
    let mut per_call: Vec<f64> = Vec::with_capacity(pairs.len() * ROUNDS);
    let mut rejected = 0usize;
    for _ in 0..ROUNDS {
        for p in pairs {
            let t = Instant::now();
            let v = std::hint::black_box(guards::check(
                std::hint::black_box(&p.a),
                std::hint::black_box(&p.b),
            ));
            per_call.push(t.elapsed().as_secs_f64() * 1e6);
            if !v.is_pass() {
                rejected += 1;
            }
        }
    }
    let _ = std::hint::black_box(rejected);
    per_call.sort_by(f64::total_cmp);
    let q = |f: f64| per_call[((per_call.len() - 1) as f64 * f).round() as usize];
    let mean = per_call.iter().sum::<f64>() / per_call.len() as f64;
    // analysing the query once and comparing it with a candidate analysed beforehand
    let analysed: Vec<(Analysis, Analysis)> = pairs
        .iter()
        .map(|p| (Analysis::new(&p.a), Analysis::new(&p.b)))
        .collect();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for (a, b) in &analysed {
            std::hint::black_box(guards::check_analyzed(
                std::hint::black_box(a),
                std::hint::black_box(b),
            ));
        }
    }
    let compare_only = t.elapsed().as_secs_f64() * 1e6 / (ROUNDS * analysed.len()) as f64;
    let _ = writeln!(md, "## Guard latency\n");
    let _ = writeln!(
        md,
        "`guards::check(query, candidate)` on the {} evaluation pairs x {ROUNDS} rounds, one thread \
         (release build, this machine: {} cores, shared with other builds while measuring):\n",
        pairs.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let _ = writeln!(md, "| | mean | p50 | p90 | p99 | p99.9 |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| `check` (analyse both texts, compare) | {mean:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999)
    );
    let _ = writeln!(
        md,
        "| `check_analyzed` (compare only) | {compare_only:.1} µs | | | | |\n"
    );
}
