//! [`OnnxEmbedder`]: all-MiniLM-L6-v2 (int8 ONNX) on ONNX Runtime, loaded at run time from the
//! `onnxruntime` PyPI wheel's `libonnxruntime.so` (`scripts/fetch_model.sh` puts both in
//! `.cache/`).
//!
//! Pipeline, identical to sentence-transformers' for this model and to
//! `scripts/gen_embedding_reference.py` (the reference the tests compare with):
//! WordPiece tokenizer from the model's `tokenizer.json` (with `[CLS]`/`[SEP]`), truncated to
//! [`DEFAULT_MAX_TOKENS`] tokens; a batch is padded to its longest member (pad id 0, mask 0); the
//! model's `last_hidden_state` is mean-pooled over the attention mask, then L2-normalised.
//!
//! The shipped `tokenizer.json` pads every input to a fixed 128 tokens; that is ignored here:
//! a 12-token query would otherwise cost ~8x. Padding is done while assembling the tensors, so
//! the tokenizer's own (rayon-parallel) batch path is not used.
//!
//! ONNX Runtime is loaded once per process ([`ort::init_from`], never `ort::init`, which panics
//! when the library is missing); every embedder shares that environment.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Tensor, ValueType};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};

use super::{EmbedError, Embedder, l2_normalize};

/// Where `scripts/fetch_model.sh` puts the model, relative to the workspace root.
pub const MODEL_SUBDIR: &str = ".cache/models/all-MiniLM-L6-v2";
/// Where `scripts/fetch_model.sh` puts ONNX Runtime, relative to the workspace root.
pub const ORT_SUBPATH: &str = ".cache/onnxruntime/libonnxruntime.so.1.31.1";
/// Token limit per text, `[CLS]` and `[SEP]` included (the model's `max_seq_length`).
pub const DEFAULT_MAX_TOKENS: usize = 256;
/// Text beyond this many bytes is cut before tokenizing. 256 WordPiece tokens never need more
/// (a word longer than 100 chars is one `[UNK]`), except for inputs made mostly of whitespace
/// or control characters; the cut bounds the CPU a single huge prompt can take.
const MAX_INPUT_BYTES: usize = 64 * 1024;

const MODEL_FILE: &str = "model.onnx";
const TOKENIZER_FILE: &str = "tokenizer.json";
const SETUP_HINT: &str =
    "run `make setup` (or scripts/fetch_model.sh), or set TOLLGATE_MODEL_DIR / ORT_DYLIB_PATH";

/// Where inference runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA execution provider: needs the crate feature `cuda` and `ORT_DYLIB_PATH` pointing at
    /// the `onnxruntime-gpu==1.31.1` wheel's library (CUDA 13, cuDNN 9). Loading fails if the
    /// provider cannot be registered; it never falls back to CPU silently.
    Cuda,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(format!(
                "unknown device `{other}` (expected `cpu` or `cuda`)"
            )),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

/// How to load an [`OnnxEmbedder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnnxConfig {
    /// Directory holding `model.onnx` and `tokenizer.json`.
    pub model_dir: PathBuf,
    /// ONNX Runtime shared library (`libonnxruntime.so.1.31.1`). Only the first embedder of a
    /// process loads it; later ones must name the same file.
    pub ort_dylib: PathBuf,
    /// Threads ONNX Runtime uses inside one inference (the calling thread counts as one).
    pub intra_threads: usize,
    pub device: Device,
    /// Token limit per text (`[CLS]`/`[SEP]` included); longer texts are truncated.
    pub max_tokens: usize,
    /// Let ONNX Runtime's worker threads spin-wait between operators. Off by default: on a
    /// shared or busy host, spinning threads compete with everything else for the cores and
    /// made single-query latency worse, not better (`benches/results/embed.md`).
    pub allow_spinning: bool,
    /// ONNX Runtime's CPU memory arena: faster large batches, but the arena keeps its peak
    /// size (~+100 MiB RSS after batches of 64 medium texts; `benches/results/embed.md`).
    pub memory_arena: bool,
}

impl Default for OnnxConfig {
    /// Paths from [`default_model_dir`] and [`default_ort_dylib`] (environment overrides
    /// first); `min(available cores, 4)` intra-op threads; CPU; 256 tokens; no spinning;
    /// memory arena on.
    fn default() -> Self {
        OnnxConfig {
            model_dir: default_model_dir(),
            ort_dylib: default_ort_dylib(),
            intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            device: Device::Cpu,
            max_tokens: DEFAULT_MAX_TOKENS,
            allow_spinning: false,
            memory_arena: true,
        }
    }
}

impl OnnxConfig {
    /// Checks that the model files and the runtime library exist, with an actionable message.
    pub fn check_files(&self) -> Result<(), EmbedError> {
        for (what, path) in [
            ("embedding model", self.model_dir.join(MODEL_FILE)),
            ("tokenizer", self.model_dir.join(TOKENIZER_FILE)),
            ("ONNX Runtime library", self.ort_dylib.clone()),
        ] {
            if !path.is_file() {
                return Err(EmbedError::Unavailable(format!(
                    "{what} not found at {}: {SETUP_HINT}",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

/// The model directory: `$TOLLGATE_MODEL_DIR` if set, else [`MODEL_SUBDIR`] under the workspace
/// (see [`workspace_path`]).
pub fn default_model_dir() -> PathBuf {
    match std::env::var_os("TOLLGATE_MODEL_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_path(MODEL_SUBDIR),
    }
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH` if set, else [`ORT_SUBPATH`] under the workspace.
pub fn default_ort_dylib() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_path(ORT_SUBPATH),
    }
}

/// `rel` under the first directory where it exists: the current directory or one of its
/// ancestors, then the executable's directory or one of its ancestors, then this crate's
/// workspace at build time. If it exists nowhere, the build-time workspace path (so an error
/// names the place `make setup` fills).
fn workspace_path(rel: &str) -> PathBuf {
    let build_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    roots.push(build_root.clone());
    roots
        .iter()
        .map(|r| r.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| build_root.join(rel))
}

/// The process-wide ONNX Runtime environment and the library it came from. `ort` allows one
/// environment per process, and one library.
static ORT_ENV: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

fn ort_environment(dylib: &Path) -> Result<Environment, EmbedError> {
    let mut slot = ORT_ENV
        .lock()
        .map_err(|_| EmbedError::Unavailable("ONNX Runtime environment lock poisoned".into()))?;
    if let Some((loaded, env)) = slot.as_ref() {
        let same = loaded == dylib
            || matches!((loaded.canonicalize(), dylib.canonicalize()), (Ok(a), Ok(b)) if a == b);
        if !same {
            return Err(EmbedError::Unavailable(format!(
                "ONNX Runtime is already loaded from {} in this process; cannot load {}",
                loaded.display(),
                dylib.display()
            )));
        }
        return Ok(env.clone());
    }
    if !dylib.is_file() {
        return Err(EmbedError::Unavailable(format!(
            "ONNX Runtime library not found at {}: {SETUP_HINT}",
            dylib.display()
        )));
    }
    let env = ort::init_from(dylib)
        .map_err(|e| EmbedError::Unavailable(format!("loading ONNX Runtime: {e}")))?
        .with_name("tollgate-embed")
        .with_telemetry(false)
        .build()
        .map_err(|e| EmbedError::Unavailable(format!("creating ONNX Runtime environment: {e}")))?;
    *slot = Some((dylib.to_path_buf(), env.clone()));
    Ok(env)
}

fn unavailable<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> EmbedError {
    move |e| EmbedError::Unavailable(format!("{what}: {e}"))
}

fn failed<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> EmbedError {
    move |e| EmbedError::Failed(format!("{what}: {e}"))
}

/// A BERT-style sentence embedder on ONNX Runtime (see the module docs for the pipeline).
pub struct OnnxEmbedder {
    /// `Session::run` takes `&mut self`; batches are serialised here (the [`Batcher`] sends one
    /// at a time anyway, and ONNX Runtime parallelises inside a run).
    ///
    /// [`Batcher`]: super::Batcher
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    /// Whether the graph takes `token_type_ids` (all zeros for single sentences).
    token_type_ids: bool,
    output: String,
    dim: usize,
    model_id: String,
    device: Device,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("model_id", &self.model_id)
            .field("dim", &self.dim)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl OnnxEmbedder {
    /// Loads the runtime (once per process), the model and the tokenizer, and runs one warm-up
    /// inference that also determines [`Embedder::dim`]. Blocking; ~0.5 s on 2 CPU cores.
    pub fn load(cfg: &OnnxConfig) -> Result<Self, EmbedError> {
        cfg.check_files()?;
        if cfg.max_tokens < 2 {
            return Err(EmbedError::Unavailable(
                "max_tokens must leave room for [CLS] and [SEP]".into(),
            ));
        }
        let model_path = cfg.model_dir.join(MODEL_FILE);
        let env = ort_environment(&cfg.ort_dylib)?;

        let mut builder = Session::builder(&env)
            .map_err(unavailable("creating session options"))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(unavailable("setting optimisation level"))?
            .with_intra_threads(cfg.intra_threads.max(1))
            .map_err(unavailable("setting intra-op threads"))?
            .with_inter_threads(1)
            .map_err(unavailable("setting inter-op threads"))?
            .with_config_entry(
                "session.intra_op.allow_spinning",
                if cfg.allow_spinning { "1" } else { "0" },
            )
            .map_err(unavailable("setting thread spinning"))?
            // Memory patterns are planned per input shape; ours vary with every batch.
            .with_memory_pattern(false)
            .map_err(unavailable("disabling memory patterns"))?;
        builder = register_device(builder, cfg.device)?;
        if !cfg.memory_arena {
            // Registered after the device's provider, so CUDA (if any) keeps priority.
            builder = builder
                .with_execution_providers([ep::CPU::default()
                    .with_arena_allocator(false)
                    .build()
                    .error_on_failure()])
                .map_err(unavailable("disabling the CPU memory arena"))?;
        }
        let session = builder.commit_from_file(&model_path).map_err(|e| {
            EmbedError::Unavailable(format!("loading {}: {e}", model_path.display()))
        })?;

        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !inputs.contains(&required) {
                return Err(EmbedError::Unavailable(format!(
                    "model has no `{required}` input (inputs: {inputs:?})"
                )));
            }
        }
        if let Some(other) = inputs
            .iter()
            .find(|n| !matches!(**n, "input_ids" | "attention_mask" | "token_type_ids"))
        {
            return Err(EmbedError::Unavailable(format!(
                "model has an unexpected input `{other}`"
            )));
        }
        let token_type_ids = inputs.contains(&"token_type_ids");
        let outlet = session
            .outputs()
            .iter()
            .find(|o| o.name() == "last_hidden_state")
            .or_else(|| session.outputs().first())
            .ok_or_else(|| EmbedError::Unavailable("model has no outputs".into()))?;
        match outlet.dtype() {
            ValueType::Tensor { shape, .. } if shape.len() == 3 => {}
            other => {
                return Err(EmbedError::Unavailable(format!(
                    "output `{}` is {other:?}, expected [batch, tokens, dim] token embeddings",
                    outlet.name()
                )));
            }
        }
        let output = outlet.name().to_string();

        let mut tokenizer = Tokenizer::from_file(cfg.model_dir.join(TOKENIZER_FILE))
            .map_err(unavailable("loading tokenizer.json"))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: cfg.max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(unavailable("configuring truncation"))?;

        let model_hash = sha256_file(&model_path)?;
        let name = cfg
            .model_dir
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        let mut me = OnnxEmbedder {
            session: Mutex::new(session),
            tokenizer,
            token_type_ids,
            output,
            dim: 0,
            model_id: format!("{name}@{}/t{}", &model_hash[..12], cfg.max_tokens),
            device: cfg.device,
        };
        let warm = me.run(&["warm up"])?;
        me.dim = warm.first().map_or(0, Vec::len);
        if me.dim == 0 {
            return Err(EmbedError::Unavailable(
                "model returned an empty embedding".into(),
            ));
        }
        tracing::info!(model_id = %me.model_id, dim = me.dim, device = %cfg.device,
            threads = cfg.intra_threads, "embedding model loaded");
        Ok(me)
    }

    /// Token ids the model sees for `text` (special tokens included, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode_fast(cut(text), true)
            .map_err(failed("tokenizing"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The execution device.
    pub fn device(&self) -> Device {
        self.device
    }

    fn run(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = texts
            .iter()
            .map(|t| self.tokenizer.encode_fast(cut(t), true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed("tokenizing"))?;
        let batch = encodings.len();
        let seq = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; batch * seq];
        let mut mask = vec![0i64; batch * seq];
        let mut types = vec![0i64; batch * seq];
        for (row, enc) in encodings.iter().enumerate() {
            let base = row * seq;
            for (j, ((&id, &m), &t)) in enc
                .get_ids()
                .iter()
                .zip(enc.get_attention_mask())
                .zip(enc.get_type_ids())
                .enumerate()
            {
                ids[base + j] = i64::from(id);
                mask[base + j] = i64::from(m);
                types[base + j] = i64::from(t);
            }
        }

        let shape = [batch, seq];
        let mut inputs = vec![
            (
                "input_ids",
                Tensor::from_array((shape, ids)).map_err(failed("input_ids tensor"))?,
            ),
            (
                "attention_mask",
                Tensor::from_array((shape, mask.clone())).map_err(failed("attention_mask"))?,
            ),
        ];
        if self.token_type_ids {
            inputs.push((
                "token_type_ids",
                Tensor::from_array((shape, types)).map_err(failed("token_type_ids"))?,
            ));
        }

        let mut session = self
            .session
            .lock()
            .map_err(|_| EmbedError::Failed("session lock poisoned".into()))?;
        let outputs = session.run(inputs).map_err(failed("inference"))?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| EmbedError::Failed(format!("no `{}` output", self.output)))?;
        let (out_shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(failed("reading output"))?;
        let dims: Vec<i64> = out_shape.iter().copied().collect();
        let dim = match dims.as_slice() {
            [b, s, d] if *b == batch as i64 && *s == seq as i64 && *d > 0 => *d as usize,
            _ => {
                return Err(EmbedError::Failed(format!(
                    "output shape {dims:?}, expected [{batch}, {seq}, dim]"
                )));
            }
        };
        if self.dim != 0 && dim != self.dim {
            return Err(EmbedError::Failed(format!(
                "output dim {dim}, expected {}",
                self.dim
            )));
        }
        Ok((0..batch)
            .map(|row| {
                mean_pool(
                    &data[row * seq * dim..(row + 1) * seq * dim],
                    &mask[row * seq..(row + 1) * seq],
                    dim,
                )
            })
            .collect())
    }
}

/// Mean of the token vectors whose mask is 1, L2-normalised.
fn mean_pool(tokens: &[f32], mask: &[i64], dim: usize) -> Vec<f32> {
    let mut acc = vec![0f32; dim];
    let mut n = 0f32;
    for (tok, &m) in tokens.chunks_exact(dim).zip(mask) {
        if m != 0 {
            n += 1.0;
            for (a, x) in acc.iter_mut().zip(tok) {
                *a += x;
            }
        }
    }
    if n > 0.0 {
        for a in &mut acc {
            *a /= n;
        }
    }
    l2_normalize(&mut acc);
    acc
}

/// `text` cut to at most [`MAX_INPUT_BYTES`], on a char boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_INPUT_BYTES {
        return text;
    }
    let mut end = MAX_INPUT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn sha256_file(path: &Path) -> Result<String, EmbedError> {
    let bytes = std::fs::read(path)
        .map_err(|e| EmbedError::Unavailable(format!("reading {}: {e}", path.display())))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(feature = "cuda")]
fn register_device(
    builder: ort::session::builder::SessionBuilder,
    device: Device,
) -> Result<ort::session::builder::SessionBuilder, EmbedError> {
    use ort::ep::ExecutionProvider as _;
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda => {
            // ONNX Runtime quietly runs on CPU when the CUDA provider is missing or fails to
            // load; a service configured for GPU must not do that, so both cases are errors.
            let compiled_in =
                ep::CUDA::is_available().map_err(unavailable("querying execution providers"))?;
            if !compiled_in {
                return Err(EmbedError::Unavailable(
                    "device=cuda, but this ONNX Runtime library has no CUDA execution provider \
                     (point ORT_DYLIB_PATH at the onnxruntime-gpu==1.31.1 wheel's libonnxruntime)"
                        .into(),
                ));
            }
            builder
                .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| {
                    EmbedError::Unavailable(format!(
                        "device=cuda, but the CUDA execution provider failed to register \
                         (needs CUDA 13 and cuDNN 9 libraries and a GPU): {e}"
                    ))
                })
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn register_device(
    builder: ort::session::builder::SessionBuilder,
    device: Device,
) -> Result<ort::session::builder::SessionBuilder, EmbedError> {
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda => Err(EmbedError::Unavailable(
            "device=cuda, but tollgate-cache-service was built without the `cuda` feature".into(),
        )),
    }
}

impl Embedder for OnnxEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run(texts)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn device_parses() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("CUDA".parse::<Device>(), Ok(Device::Cuda));
        assert!("tpu".parse::<Device>().is_err());
        assert_eq!(Device::Cuda.to_string(), "cuda");
    }

    #[test]
    fn mean_pool_ignores_masked_tokens() {
        // two tokens of dim 2, second masked out
        let v = mean_pool(&[3.0, 4.0, 100.0, -100.0], &[1, 0], 2);
        assert!(
            (v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6,
            "{v:?}"
        );
        let v = mean_pool(&[1.0, 0.0, 0.0, 1.0], &[1, 1], 2);
        assert!((v[0] - v[1]).abs() < 1e-6);
    }

    #[test]
    fn cut_respects_char_boundaries() {
        let s = "é".repeat(MAX_INPUT_BYTES); // 2 bytes each
        let c = cut(&s);
        assert!(c.len() <= MAX_INPUT_BYTES && c.len() > MAX_INPUT_BYTES - 2);
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn missing_files_name_the_fix() {
        let cfg = OnnxConfig {
            model_dir: PathBuf::from("/nonexistent/model"),
            ..OnnxConfig::default()
        };
        let err = OnnxEmbedder::load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("make setup") && err.contains("/nonexistent/model"),
            "{err}"
        );
    }
}
