//! A fast, deterministic heuristic complexity score in `[0, 1]` for routing.
//!
//! The score looks at the final user turn (what the model must answer now) and, more weakly, at
//! how much context comes with it. It is a weighted sum of saturating features, clamped to 1:
//!
//! | feature | measure | saturates at | weight |
//! |---|---|---|---|
//! | length | final-turn tokens (≈ bytes / 4), log scale from 16 | 1500 tokens | [`W_LENGTH`] |
//! | context | prompt tokens outside the final turn, log scale | 16 000 tokens | [`W_CONTEXT`] |
//! | code blocks | fenced ```` ``` ```` blocks | 2 | [`W_CODE_BLOCKS`] |
//! | lists | lines starting with `- `, `* `, `1. ` | 6 | [`W_LISTS`] |
//! | math | math symbols (`= ^ ∑ ∫ √ ≤ ≥ ≠ ∞ $`, `\frac`…) and math words | 6 | [`W_MATH`] |
//! | questions | `?` beyond the first | 3 | [`W_QUESTIONS`] |
//! | reasoning cues | distinct words like *prove, step by step, analyze, compare, why* | `1 - 0.5^n` | [`W_REASONING`] |
//! | code cues | distinct words like *implement, refactor, debug, function, regex* | `1 - 0.5^n` | [`W_CODE`] |
//!
//! A one-line factual question scores near 0; a multi-part proof or a debugging request with
//! code scores above 0.5. The scan is a single pass over the bytes (no allocation beyond a few
//! fixed buffers), and only the first [`SCAN_LIMIT`] bytes are scanned for cues, so a 2 KB prompt
//! scores in a few microseconds. The cache service's learned classifier can replace this score;
//! this one exists so the filter can route without a call-out.

use serde_json::Value;
use tollgate_wire::Api;

/// Weight of the final-turn length feature.
pub const W_LENGTH: f32 = 0.30;
/// Weight of the context-size feature.
pub const W_CONTEXT: f32 = 0.10;
/// Weight of fenced code blocks.
pub const W_CODE_BLOCKS: f32 = 0.20;
/// Weight of list structure.
pub const W_LISTS: f32 = 0.08;
/// Weight of math notation.
pub const W_MATH: f32 = 0.20;
/// Weight of several questions in one turn.
pub const W_QUESTIONS: f32 = 0.10;
/// Weight of reasoning cues.
pub const W_REASONING: f32 = 0.45;
/// Weight of code cues.
pub const W_CODE: f32 = 0.35;

/// Cue scanning stops after this many bytes of the final turn (length still counts all of it).
pub const SCAN_LIMIT: usize = 16 * 1024;

/// The measured features of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Estimated tokens of the final turn (bytes / 4, rounded up).
    pub final_tokens: u64,
    /// Prompt tokens outside the final turn.
    pub context_tokens: u64,
    pub code_blocks: u32,
    pub list_items: u32,
    pub math: u32,
    pub questions: u32,
    /// Distinct reasoning cues found.
    pub reasoning_cues: u32,
    /// Distinct code cues found.
    pub code_cues: u32,
}

/// `log(1 + x/lo) / log(1 + hi/lo)`, clamped to `[0, 1]`.
fn log_scale(x: u64, lo: f32, hi: f32) -> f32 {
    let v = (1.0 + x as f32 / lo).ln() / (1.0 + hi / lo).ln();
    v.clamp(0.0, 1.0)
}

fn linear(n: u32, cap: u32) -> f32 {
    n.min(cap) as f32 / cap.max(1) as f32
}

/// `1 - 0.5^n`: the first cue counts most.
fn diminishing(n: u32) -> f32 {
    1.0 - 0.5f32.powi(n.min(16) as i32)
}

impl Features {
    /// The weighted score in `[0, 1]`.
    pub fn score(&self) -> f32 {
        let length = if self.final_tokens <= 16 {
            0.0
        } else {
            log_scale(self.final_tokens - 16, 64.0, 1484.0)
        };
        let raw = W_LENGTH * length
            + W_CONTEXT * log_scale(self.context_tokens, 500.0, 16_000.0)
            + W_CODE_BLOCKS * linear(self.code_blocks, 2)
            + W_LISTS * linear(self.list_items, 6)
            + W_MATH * linear(self.math, 6)
            + W_QUESTIONS * linear(self.questions.saturating_sub(1), 3)
            + W_REASONING * diminishing(self.reasoning_cues)
            + W_CODE * diminishing(self.code_cues);
        if raw.is_finite() {
            raw.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Scores a final user turn sent with `prompt_tokens` prompt tokens in total.
pub fn score(final_turn: &str, prompt_tokens: u64) -> f32 {
    features(final_turn, prompt_tokens).score()
}

const WORD_MAX: usize = 24;

#[derive(Clone, Copy)]
struct Word {
    buf: [u8; WORD_MAX],
    len: usize,
}

impl Word {
    const EMPTY: Word = Word {
        buf: [0; WORD_MAX],
        len: 0,
    };

    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// Reasoning cue index (bit in a mask) of a single word.
fn reasoning_word(w: &[u8]) -> Option<u32> {
    Some(match w {
        b"prove" | b"proof" | b"proofs" => 0,
        b"derive" | b"derivation" => 1,
        b"analyze" | b"analyse" | b"analysis" => 2,
        b"compare" | b"comparison" | b"contrast" => 3,
        b"why" => 4,
        b"explain" | b"explanation" => 5,
        b"evaluate" | b"assess" | b"critique" => 6,
        b"justify" | b"reasoning" => 7,
        b"tradeoff" | b"tradeoffs" | b"implications" => 8,
        b"design" | b"architecture" | b"architect" => 9,
        b"optimize" | b"optimise" | b"optimization" => 10,
        b"strategy" | b"plan" => 11,
        b"counterexample" | b"rigorous" | b"rigorously" => 12,
        _ => return None,
    })
}

/// Reasoning cues made of two or three words (`prev2 prev1 cur`).
fn reasoning_phrase(prev2: &[u8], prev1: &[u8], cur: &[u8]) -> Option<u32> {
    Some(match (prev2, prev1, cur) {
        (b"step", b"by", b"step") => 13,
        (b"pros", b"and", b"cons") => 8,
        (_, b"trade", b"offs" | b"off") => 8,
        (_, b"edge", b"cases") => 14,
        (_, b"first", b"principles") => 15,
        (_, b"think", b"through") => 16,
        (_, b"in", b"depth") => 17,
        (_, b"time", b"complexity") => 18,
        _ => return None,
    })
}

/// Code cue index of a single word.
fn code_word(w: &[u8]) -> Option<u32> {
    Some(match w {
        b"implement" | b"implementation" => 0,
        b"refactor" | b"refactoring" => 1,
        b"debug" | b"debugging" | b"bug" => 2,
        b"function" | b"method" | b"fn" | b"def" => 3,
        b"compile" | b"compiler" | b"compiles" => 4,
        b"algorithm" | b"algorithms" => 5,
        b"regex" | b"regexp" => 6,
        b"sql" | b"query" => 7,
        b"exception" | b"traceback" | b"segfault" | b"panic" | b"panics" => 8,
        b"class" | b"struct" | b"impl" | b"interface" => 9,
        b"async" | b"thread" | b"threads" | b"concurrency" | b"mutex" => 10,
        b"python" | b"rust" | b"javascript" | b"typescript" | b"golang" | b"java" | b"cpp" => 11,
        b"unittest" | b"tests" | b"test" => 12,
        b"return" | b"import" | b"const" | b"let" | b"var" => 13,
        _ => return None,
    })
}

fn math_word(w: &[u8]) -> bool {
    matches!(
        w,
        b"integral"
            | b"derivative"
            | b"equation"
            | b"equations"
            | b"theorem"
            | b"lemma"
            | b"matrix"
            | b"eigenvalue"
            | b"eigenvalues"
            | b"probability"
            | b"polynomial"
            | b"irrational"
            | b"prime"
            | b"primes"
            | b"modulo"
            | b"frac"
            | b"sum"
            | b"int"
            | b"sqrt"
    )
}

/// Measures `final_turn` (the text the model must answer) in a request of `prompt_tokens`.
pub fn features(final_turn: &str, prompt_tokens: u64) -> Features {
    let final_tokens = (final_turn.len() as u64).div_ceil(4);
    let mut f = Features {
        final_tokens,
        context_tokens: prompt_tokens.saturating_sub(final_tokens),
        ..Features::default()
    };
    let bytes = final_turn.as_bytes();
    let bytes = bytes.get(..SCAN_LIMIT).unwrap_or(bytes);

    let mut reasoning: u64 = 0;
    let mut code: u64 = 0;
    let mut fences: u32 = 0;
    let mut code_chars: u32 = 0;
    let (mut prev2, mut prev1, mut cur) = (Word::EMPTY, Word::EMPTY, Word::EMPTY);
    let mut overlong = false;
    let mut line_start = true;
    let mut i = 0usize;

    let mut end_word = |cur: &mut Word,
                        prev1: &mut Word,
                        prev2: &mut Word,
                        overlong: &mut bool,
                        f: &mut Features| {
        if cur.len == 0 && !*overlong {
            return;
        }
        if !*overlong {
            let w = cur.as_bytes();
            if let Some(b) = reasoning_word(w) {
                reasoning |= 1 << b;
            }
            if let Some(b) = reasoning_phrase(prev2.as_bytes(), prev1.as_bytes(), w) {
                reasoning |= 1 << b;
            }
            if let Some(b) = code_word(w) {
                code |= 1 << b;
            }
            if math_word(w) {
                f.math = f.math.saturating_add(1);
            }
        }
        *prev2 = *prev1;
        *prev1 = if *overlong { Word::EMPTY } else { *cur };
        *cur = Word::EMPTY;
        *overlong = false;
    };

    while let Some(&c) = bytes.get(i) {
        if line_start {
            // List items: "- ", "* ", "+ ", "1. ", "12) " after optional indentation.
            let mut j = i;
            while matches!(bytes.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            let item = match bytes.get(j) {
                Some(b'-' | b'*' | b'+') => bytes.get(j + 1) == Some(&b' '),
                Some(d) if d.is_ascii_digit() => {
                    let mut k = j;
                    while bytes.get(k).is_some_and(u8::is_ascii_digit) {
                        k += 1;
                    }
                    matches!(bytes.get(k), Some(b'.' | b')')) && bytes.get(k + 1) == Some(&b' ')
                }
                _ => false,
            };
            if item {
                f.list_items = f.list_items.saturating_add(1);
            }
            if bytes.get(j..j + 3) == Some(b"```") {
                fences = fences.saturating_add(1);
            }
            line_start = false;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            if cur.len < WORD_MAX {
                if let Some(slot) = cur.buf.get_mut(cur.len) {
                    *slot = c.to_ascii_lowercase();
                }
                cur.len += 1;
            } else {
                overlong = true;
            }
        } else {
            end_word(&mut cur, &mut prev1, &mut prev2, &mut overlong, &mut f);
            match c {
                b'\n' => line_start = true,
                b'?' => f.questions = f.questions.saturating_add(1),
                b'=' | b'^' | b'$' => f.math = f.math.saturating_add(1),
                b';' | b'{' | b'}' => code_chars = code_chars.saturating_add(1),
                // UTF-8 lead byte of ∑ ∫ √ ∞ ≤ ≥ ≠ (U+2200..U+22FF) and π (U+03C0).
                0xE2 if matches!(bytes.get(i + 1), Some(0x88 | 0x89 | 0x8B)) => {
                    f.math = f.math.saturating_add(1)
                }
                0xCF if bytes.get(i + 1) == Some(&0x80) => f.math = f.math.saturating_add(1),
                _ => {}
            }
        }
        i += 1;
    }
    end_word(&mut cur, &mut prev1, &mut prev2, &mut overlong, &mut f);

    f.code_blocks = fences / 2 + fences % 2;
    // Braces and semicolons in running text look like code even without fences.
    if code_chars >= 4 {
        code |= 1 << 20;
    }
    f.reasoning_cues = reasoning.count_ones();
    f.code_cues = code.count_ones();
    f
}

/// Plain text of a content value: a string, or the text of its text parts joined by newlines.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                }
            }
            out
        }
        _ => String::new(),
    }
}

/// The text of the last user turn of a request body (empty when there is none).
pub fn final_user_text(api: Api, body: &Value) -> String {
    let items = match api {
        Api::OpenAiChat | Api::AnthropicMessages => body.get("messages"),
        Api::OpenAiResponses => match body.get("input") {
            Some(Value::String(s)) => return s.clone(),
            other => other,
        },
        Api::OpenAiCompletions => {
            return match body.get("prompt") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(v)) => v
                    .last()
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            };
        }
    };
    items
        .and_then(Value::as_array)
        .and_then(|msgs| {
            msgs.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const EASY: [&str; 6] = [
        "What is the capital of France?",
        "hi",
        "Translate 'good morning' into Spanish.",
        "Thanks! That worked.",
        "What time zone is Tokyo in?",
        "Give me a synonym for happy.",
    ];

    const HARD: [&str; 5] = [
        "Prove that the square root of 2 is irrational. Explain each step rigorously, step by step, and say why the argument fails for sqrt(4).",
        "Here is my Rust code:\n```rust\nfn main() { let v = vec![1,2,3]; let x = v[10]; }\n```\nWhy does it panic at runtime, and how should I refactor it to return an error instead? Also compare this with how Python handles the same bug.",
        "Compare PostgreSQL and MySQL for a write-heavy multi-tenant SaaS. Analyze the tradeoffs in replication, locking and connection pooling, then design a migration plan with edge cases.\n- downtime budget: 5 minutes\n- 2 TB of data\n- 40 services\nWhat would you do first? What are the risks?",
        "Let f(x) = x^3 - 3x + 1. Derive all real roots, prove there are exactly three, and evaluate the integral of f from 0 to 2. Show the derivation step by step.",
        "Implement a lock-free concurrent queue in Rust using atomics. Explain the memory orderings you choose and why, analyze the ABA problem, and write tests.",
    ];

    #[test]
    fn easy_prompts_score_low_and_hard_prompts_score_high() {
        for p in EASY {
            let s = score(p, 20);
            assert!(s < 0.2, "{p:?} scored {s}");
        }
        for p in HARD {
            let s = score(p, 200);
            assert!(s > 0.5, "{p:?} scored {s} {:?}", features(p, 200));
        }
        let max_easy = EASY.iter().map(|p| score(p, 20)).fold(0.0, f32::max);
        let min_hard = HARD.iter().map(|p| score(p, 200)).fold(1.0, f32::min);
        assert!(max_easy < min_hard);
    }

    #[test]
    fn features_are_measured() {
        let f = features(
            "Why? How?\n- one\n- two\n1. three\n```\ncode\n```\nx = y^2 and ∑ and π, step by step",
            1000,
        );
        assert_eq!(f.questions, 2);
        assert_eq!(f.list_items, 3);
        assert_eq!(f.code_blocks, 1);
        assert_eq!(f.math, 4);
        // "why" and "step by step".
        assert_eq!(f.reasoning_cues, 2);
        assert!(f.context_tokens > 950);
    }

    #[test]
    fn score_is_bounded_deterministic_and_monotone_in_length() {
        let long = "Explain why. ".repeat(2000);
        let a = score(&long, 100_000);
        assert!((0.0..=1.0).contains(&a));
        assert_eq!(a, score(&long, 100_000));
        assert_eq!(score("", 0), 0.0);
        let short = "word ".repeat(10);
        let longer = "word ".repeat(400);
        assert!(score(&longer, 0) > score(&short, 0));
        // Context alone raises the score a little, never past the cap.
        assert!(score("ok", 20_000) > score("ok", 0));
        assert!(score("ok", u64::MAX) <= W_CONTEXT + 0.001);
    }

    #[test]
    fn odd_input_never_panics() {
        for s in [
            "\u{0}\u{ffff}",
            "é".repeat(5000).as_str(),
            "a".repeat(100).as_str(),
            "```",
            "-",
            "1.",
            "\n\n\n",
            "\u{2211}",
            "\u{e2}",
        ] {
            let v = score(s, 0);
            assert!((0.0..=1.0).contains(&v));
        }
    }

    #[test]
    fn two_kilobytes_score_quickly() {
        let text = HARD.join("\n").repeat(3);
        let text = &text[..2048];
        let start = std::time::Instant::now();
        let n = 200u32;
        let mut acc = 0.0;
        for _ in 0..n {
            acc += score(std::hint::black_box(text), 500);
        }
        let per = start.elapsed() / n;
        assert!(acc > 0.0);
        // Generous bound for debug builds; release is a few microseconds.
        assert!(per.as_micros() < 500, "{per:?} per 2 KB");
    }

    #[test]
    fn final_user_text_of_each_api() {
        let chat = serde_json::json!({"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"a"},{"role":"user","content":[{"type":"text","text":"second"},{"type":"image_url","image_url":{}}]}]});
        assert_eq!(final_user_text(Api::OpenAiChat, &chat), "second");
        assert_eq!(final_user_text(Api::AnthropicMessages, &chat), "second");
        let resp = serde_json::json!({"input":"just text"});
        assert_eq!(final_user_text(Api::OpenAiResponses, &resp), "just text");
        let comp = serde_json::json!({"prompt":["a","b"]});
        assert_eq!(final_user_text(Api::OpenAiCompletions, &comp), "b");
        assert_eq!(final_user_text(Api::OpenAiChat, &serde_json::json!({})), "");
    }
}
