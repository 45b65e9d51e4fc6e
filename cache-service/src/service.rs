//! Service configuration (CLI flags, environment, optional JSON file) and assembly of the
//! running service from it: store backend, embedder, engine, HTTP state.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::api::AppState;
use crate::breaker::{AnomalyConfig, AnomalyDetector, BreakerConfig, SpendBreaker};
use crate::budget::{BudgetConfig, BudgetOptions, Budgets};
use crate::complexity::ComplexityConfig;
use crate::embed::{BatchConfig, Batcher, Device, OnnxConfig, OnnxEmbedder};
use crate::engine::{CacheSettings, Engine, SemanticMode};
use crate::ledger::LedgerConfig;
use crate::metrics::Metrics;
use crate::rules::{RawRules, Rules};
use crate::semantic::guards::MatchMode;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis_store::RedisStore;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-cache-service",
    version,
    about = "Tollgate cache service: response cache for the Envoy filter"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Report precision/recall per similarity threshold on labelled pairs (JSONL: a, b, same)
    /// and pick the threshold meeting a target precision.
    Calibrate(crate::semantic::calibrate::CalibrateArgs),
    /// Budgets of a running service: list, set, delete, usage.
    Budgets(crate::cli::BudgetsArgs),
    /// Spend report of a running service (table, CSV or JSON).
    Spend(crate::cli::SpendArgs),
    /// Response cache of a running service: invalidate, warm, stats.
    Cache(crate::cli::CacheArgs),
}

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
    /// Directory of the embedded store (used unless --redis-url is given).
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = ".tollgate/data")]
    pub data_dir: PathBuf,
    /// Redis URL (`redis://host:port/db`): entries live in Redis, shared by all replicas.
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix in Redis.
    #[arg(long, env = "TOLLGATE_REDIS_NAMESPACE", default_value = "tollgate")]
    pub redis_namespace: String,
    /// JSON configuration file (cache rules and semantic settings).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer token for the admin API (disabled without one).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Directory with the embedding model (`model.onnx`, `tokenizer.json`).
    #[arg(long, env = "TOLLGATE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// ONNX Runtime shared library.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
    /// Inference threads.
    #[arg(long, env = "TOLLGATE_EMBED_THREADS", default_value_t = 2)]
    pub embed_threads: usize,
    /// How long a lone embedding request waits for others to batch with (ms). Requests that
    /// arrive while a batch is running are batched regardless.
    #[arg(long, env = "TOLLGATE_EMBED_BATCH_WINDOW_MS", default_value_t = 0)]
    pub embed_batch_window_ms: u64,
    /// `cpu` or `cuda` (needs the `cuda` build feature and a GPU; fails rather than falling back).
    #[arg(long, env = "TOLLGATE_DEVICE", default_value = "cpu")]
    pub device: String,
}

/// The optional JSON configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub cache: RawCacheConfig,
    #[serde(default)]
    pub budgets: RawBudgetsConfig,
    /// The learned complexity classifier (`AdmitResponse.complexity`).
    #[serde(default)]
    pub complexity: ComplexityConfig,
}

/// `budgets` in the configuration file (budget definitions themselves live in the store and are
/// managed through the admin API).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawBudgetsConfig {
    /// How long an unfinished request's reservation holds budget. Default 600 s.
    #[serde(default)]
    pub reservation_ttl_seconds: Option<u64>,
    /// How soon a replica sees budget definitions changed through another replica. Default 1 s.
    #[serde(default)]
    pub definitions_refresh_ms: Option<u64>,
    /// Ledger retention. Default 400 days.
    #[serde(default)]
    pub ledger_retention_days: Option<u32>,
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    #[serde(default)]
    pub anomaly: Option<AnomalyConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSemantic {
    #[serde(default)]
    pub mode: SemanticMode,
    /// `repeats` (default) or `paraphrases`.
    #[serde(default, rename = "match")]
    pub match_mode: MatchMode,
    /// Default: the match mode's (`repeats` 0.80, `paraphrases` 0.95).
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default = "yes")]
    pub guards: bool,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

/// Default match mode. Correctness first: serving paraphrases (judged by the guards at 0.95)
/// gave 1.7-7% wrong answers on every set of hard negatives written after the guards were
/// frozen; serving repeats only gave none (see `benches/results/semantic.md`). Operators who
/// want paraphrases should measure them on their own traffic first (shadow mode, `calibrate`).
pub const DEFAULT_MATCH: MatchMode = MatchMode::Repeats;

fn yes() -> bool {
    true
}
fn default_top_k() -> usize {
    5
}

impl Default for RawSemantic {
    fn default() -> Self {
        RawSemantic {
            mode: SemanticMode::Serve,
            match_mode: DEFAULT_MATCH,
            threshold: None,
            guards: true,
            top_k: 5,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCacheConfig {
    #[serde(default)]
    pub semantic: RawSemantic,
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    #[serde(flatten)]
    pub rules: RawRules,
}

fn default_max_entries() -> u64 {
    1_000_000
}

impl Default for RawCacheConfig {
    fn default() -> Self {
        RawCacheConfig {
            semantic: RawSemantic::default(),
            max_entries: default_max_entries(),
            rules: RawRules::default(),
        }
    }
}

impl RawCacheConfig {
    pub fn compile(&self) -> Result<CacheSettings, String> {
        let threshold = self
            .semantic
            .threshold
            .unwrap_or_else(|| self.semantic.match_mode.default_threshold());
        if !(0.0..=1.0).contains(&threshold) {
            return Err("cache.semantic.threshold must be between 0 and 1".into());
        }
        if self.semantic.top_k == 0 || self.max_entries == 0 {
            return Err("cache.semantic.topK and cache.maxEntries must be positive".into());
        }
        Ok(CacheSettings {
            semantic: self.semantic.mode,
            threshold,
            guards: self.semantic.guards,
            match_mode: self.semantic.match_mode,
            top_k: self.semantic.top_k,
            max_entries: self.max_entries,
            rules: Rules::compile(&self.rules)?,
        })
    }
}

pub fn load_file_config(path: Option<&PathBuf>) -> Result<FileConfig, String> {
    match path {
        None => Ok(FileConfig::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

/// Opens the store, loads the model and builds the engine and HTTP state.
pub async fn build(args: &ServeArgs) -> Result<Arc<AppState>, String> {
    let file = load_file_config(args.config.as_ref())?;
    let settings = file.cache.compile()?;
    if let Some(b) = &file.budgets.breaker {
        b.validate()?;
    }
    if let Some(a) = &file.budgets.anomaly {
        a.validate()?;
    }
    let complexity_examples = if file.complexity.enabled {
        Some(file.complexity.validate()?)
    } else {
        None
    };
    let metrics = Arc::new(Metrics::new());
    let store: Arc<dyn Store> = match &args.redis_url {
        Some(url) => Arc::new(
            RedisStore::connect(url, &args.redis_namespace)
                .await
                .map_err(|e| format!("redis: {e}"))?,
        ),
        None => {
            std::fs::create_dir_all(&args.data_dir)
                .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
            Arc::new(
                EmbeddedStore::open(args.data_dir.join("cache.redb"))
                    .await
                    .map_err(|e| format!("embedded store: {e}"))?,
            )
        }
    };
    let embedder = if settings.semantic == SemanticMode::Off {
        None
    } else {
        let mut cfg = OnnxConfig::default();
        if let Some(d) = &args.model_dir {
            cfg.model_dir = d.clone();
        }
        if let Some(d) = &args.ort_dylib {
            cfg.ort_dylib = d.clone();
        }
        cfg.intra_threads = args.embed_threads;
        cfg.device = match args.device.as_str() {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda,
            other => return Err(format!("--device {other}: expected cpu or cuda")),
        };
        let model = OnnxEmbedder::load(&cfg)
            .map_err(|e| format!("{e} (run `make setup`, or start with semantic mode off)"))?;
        // No batching window: a lone request is embedded at once, and requests that arrive
        // while a batch runs form the next batch (benches/results/cache.md: the 2 ms window
        // cost 2.6 ms at p50 and pushed p99 over 15 ms at 100k entries under load).
        let batch = BatchConfig {
            window: std::time::Duration::from_millis(args.embed_batch_window_ms),
            ..BatchConfig::default()
        };
        let batcher = Arc::new(Batcher::new(Arc::new(model), batch));
        // The first inference initialises ONNX Runtime's kernels: pay for it before the service
        // reports ready, not in the first admit under the filter's timeout.
        batcher
            .embed("warm-up".to_string())
            .await
            .map_err(|e| format!("embedding model warm-up failed: {e}"))?;
        Some(batcher)
    };
    let engine = Engine::start(settings, store, embedder, metrics.clone())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(examples) = complexity_examples {
        engine.plan_complexity(examples, file.complexity.k, file.complexity.source());
        if file.complexity.train_at_start {
            engine.train_complexity();
        }
    }
    let retention_days = file
        .budgets
        .ledger_retention_days
        .unwrap_or(crate::ledger::DEFAULT_RETENTION_DAYS);
    let (budget_cfg, ledger_cfg) = match &args.redis_url {
        Some(url) => (
            BudgetConfig::Redis {
                url: url.clone(),
                namespace: args.redis_namespace.clone(),
            },
            LedgerConfig::Redis {
                url: url.clone(),
                namespace: args.redis_namespace.clone(),
                retention_days,
            },
        ),
        None => (
            BudgetConfig::Embedded {
                path: args.data_dir.join("budgets.redb"),
            },
            LedgerConfig::Embedded {
                path: args.data_dir.join("ledger.redb"),
                retention_days,
            },
        ),
    };
    let mut opts = BudgetOptions::default();
    if let Some(t) = file.budgets.reservation_ttl_seconds {
        opts.reservation_ttl_ms = t.saturating_mul(1000).max(1000);
    }
    if let Some(r) = file.budgets.definitions_refresh_ms {
        opts.defs_refresh_ms = r;
    }
    let budgets = Arc::new(
        Budgets::open_with(&budget_cfg, opts)
            .await
            .map_err(|e| format!("budget store: {e}"))?,
    );
    crate::budget::spawn_sweeper(budgets.clone(), std::time::Duration::from_secs(5));
    let ledger = crate::ledger::open(&ledger_cfg)
        .await
        .map_err(|e| format!("ledger: {e}"))?;
    // With Redis the breaker's window is shared by the replicas, as the budgets are.
    let breaker = match (file.budgets.breaker, &args.redis_url) {
        (None, _) => None,
        (Some(b), None) => Some(SpendBreaker::new(b)),
        (Some(b), Some(url)) => Some(SpendBreaker::shared(b, url, &args.redis_namespace).await?),
    };
    Ok(Arc::new(AppState::new(
        engine,
        metrics,
        args.admin_token.clone().filter(|t| !t.is_empty()),
        budgets,
        ledger,
        breaker,
        file.budgets.anomaly.map(AnomalyDetector::new),
    )))
}
