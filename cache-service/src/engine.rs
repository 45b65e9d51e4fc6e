//! The response cache: admit (exact, then semantic lookup with guards), settle (store answers,
//! account spend and savings), invalidation, warming, shadow mode.
//!
//! Every replica keeps an in-memory ANN index and entry metadata, rebuilt from the store at
//! start and kept current from the store's event stream (with Redis, entries written by another
//! replica become visible here within the stream's latency).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tollgate_wire::Api;
use tollgate_wire::admit::{
    AdmitRequest, AdmitResponse, CacheDecision, CacheOutcome, CachedCompletion, SettleBatch,
    SettleRecord,
};

use crate::complexity::{Classifier, Example};
use crate::embed::Batcher;
use crate::index::Partitions;
use crate::metrics::Metrics;
use crate::model::{Entry, InvalidateFilter, StoreEvent};
use crate::rules::{Eligibility, Rules};
use crate::semantic::guards::{self, GuardVerdict, MatchMode};
use crate::store::{Store, StoreError};

/// What to do with semantic matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticMode {
    /// Serve semantic hits.
    #[default]
    Serve,
    /// Compute would-be hits, never serve them; record what the provider answered instead.
    Shadow,
    /// Exact hits only.
    Off,
}

/// Cache engine settings.
#[derive(Debug)]
pub struct CacheSettings {
    pub semantic: SemanticMode,
    /// Cosine similarity a semantic candidate needs.
    pub threshold: f32,
    /// Apply the guards (negation, numbers, dates, entities) to semantic candidates.
    pub guards: bool,
    /// Serve repeats only, or paraphrases too (with the guards).
    pub match_mode: MatchMode,
    /// Candidates examined per lookup.
    pub top_k: usize,
    /// Entry limit; the oldest are evicted beyond it.
    pub max_entries: u64,
    pub rules: Rules,
}

/// In-memory view of an indexed entry.
#[derive(Clone, Debug)]
struct Meta {
    tenant: String,
    partition: String,
    query: String,
    model: String,
    expires_at: u64,
}

struct Pending {
    at: Instant,
    embedding: Option<Vec<f32>>,
    shadow_similarity: Option<f32>,
}

/// One shadow-mode observation: what would have been served vs what the provider answered.
#[derive(Clone, Debug, Serialize)]
pub struct ShadowRecord {
    pub at: u64,
    pub tenant: String,
    pub similarity: Option<f32>,
    pub query: String,
    pub cached_query: String,
    pub cached_answer: String,
    pub actual_answer: String,
    /// Word-overlap (Jaccard) of the two answers: a cheap first signal for review.
    pub answer_overlap: f32,
}

/// Outcome of a settle batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SettleSummary {
    pub records: usize,
    pub stored: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

pub struct Engine {
    settings: CacheSettings,
    store: Arc<dyn Store>,
    index: Partitions,
    embedder: Option<Arc<Batcher>>,
    meta: RwLock<HashMap<u64, Meta>>,
    /// Entries by a hash of (partition, [`guards::repeat_key`] of their query): repeats found
    /// without an embedding.
    repeats: RwLock<HashMap<u64, Vec<u64>>>,
    pending: Mutex<HashMap<String, Pending>>,
    shadow: Mutex<VecDeque<ShadowRecord>>,
    puts_since_evict: Mutex<u64>,
    /// The learned complexity classifier, once trained ([`Engine::set_complexity`]).
    complexity: Arc<OnceLock<Arc<Classifier>>>,
    /// What to train it on, until training starts ([`Engine::plan_complexity`]).
    complexity_plan: Mutex<Option<ComplexityPlan>>,
    pub metrics: Arc<Metrics>,
}

/// Examples waiting to be embedded into the complexity classifier.
struct ComplexityPlan {
    examples: Vec<Example>,
    k: usize,
    source: String,
}

/// Pending admits older than this are forgotten (their settle re-embeds if needed).
const PENDING_TTL: Duration = Duration::from_secs(600);
const SHADOW_KEEP: usize = 1000;

fn install_complexity(
    slot: &OnceLock<Arc<Classifier>>,
    embedder: Option<&Arc<Batcher>>,
    classifier: Arc<Classifier>,
) -> bool {
    let same_model = embedder.is_some_and(|b| b.model_id() == classifier.model_id());
    same_model && slot.set(classifier).is_ok()
}

/// The repeat index slot of a query in a partition.
fn repeat_slot(partition: &str, query: &str) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let key = guards::repeat_key(query)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    partition.hash(&mut h);
    key.hash(&mut h);
    Some(h.finish())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn jaccard(a: &str, b: &str) -> f32 {
    let wa: std::collections::HashSet<String> =
        a.split_whitespace().map(|w| w.to_lowercase()).collect();
    let wb: std::collections::HashSet<String> =
        b.split_whitespace().map(|w| w.to_lowercase()).collect();
    let union = wa.union(&wb).count();
    if union == 0 {
        return 1.0;
    }
    wa.intersection(&wb).count() as f32 / union as f32
}

impl Engine {
    /// Builds the engine: subscribes to store events, rebuilds the index from the store, and
    /// keeps it current in a background task.
    pub async fn start(
        settings: CacheSettings,
        store: Arc<dyn Store>,
        embedder: Option<Arc<Batcher>>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Engine>, EngineError> {
        describe(&metrics);
        let mut events = store.subscribe();
        let engine = Arc::new(Engine {
            settings,
            store,
            index: Partitions::new(),
            embedder,
            meta: RwLock::new(HashMap::new()),
            repeats: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            shadow: Mutex::new(VecDeque::new()),
            puts_since_evict: Mutex::new(0),
            complexity: Arc::new(OnceLock::new()),
            complexity_plan: Mutex::new(None),
            metrics,
        });
        let started = Instant::now();
        let loaded = engine.load_all().await?;
        tracing::info!(
            entries = loaded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "cache index rebuilt from the store"
        );
        engine.update_gauges();
        let weak = Arc::downgrade(&engine);
        let mut seen_missed = engine.store.missed_events();
        tokio::spawn(async move {
            // Besides lagging here, a shared store can lose events upstream (Redis stream
            // trimmed, reconnect): `missed_events` grows and the index is rebuilt from a scan.
            let mut check = tokio::time::interval(Duration::from_secs(5));
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let ev = tokio::select! {
                    ev = events.recv() => ev,
                    _ = check.tick() => {
                        let Some(engine) = weak.upgrade() else { break };
                        let missed = engine.store.missed_events();
                        if missed != seen_missed {
                            tracing::warn!(missed = missed - seen_missed, "store events were lost; rebuilding the index");
                            seen_missed = missed;
                            engine.rebuild().await;
                        }
                        continue;
                    }
                };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "cache event stream lagged; rebuilding the index"
                        );
                        if let Some(engine) = weak.upgrade() {
                            engine.rebuild().await;
                        }
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let Some(engine) = weak.upgrade() else { break };
                engine.apply_event(ev);
            }
        });
        Ok(engine)
    }

    /// Indexes every live entry of the store, one page at a time (memory: one page plus the
    /// index, not the whole store). Returns how many entries were loaded.
    async fn load_all(&self) -> Result<usize, StoreError> {
        const PAGE: usize = 10_000;
        let now = now_secs();
        let mut loaded = 0usize;
        let mut after = None;
        loop {
            let page = self.store.scan_page(after, PAGE).await?;
            let Some(last) = page.last().map(|e| e.id) else {
                break;
            };
            let full = page.len() >= PAGE;
            for e in page.iter().filter(|e| !e.is_expired(now)) {
                self.apply_put(e);
                loaded += 1;
            }
            if !full {
                break;
            }
            after = Some(last);
        }
        Ok(loaded)
    }

    async fn rebuild(&self) {
        self.index.clear();
        if let Ok(mut m) = self.meta.write() {
            m.clear();
        }
        if let Ok(mut r) = self.repeats.write() {
            r.clear();
        }
        if let Err(e) = self.load_all().await {
            tracing::warn!(error = %e, "cache index rebuild failed");
        }
        self.update_gauges();
    }

    fn apply_event(&self, ev: StoreEvent) {
        match ev {
            StoreEvent::Put(e) => self.apply_put(&e),
            StoreEvent::Deleted(ids) => {
                for id in ids {
                    self.forget(id);
                }
            }
            StoreEvent::Invalidated(filter) => {
                let ids: Vec<u64> = self
                    .meta
                    .read()
                    .map(|m| {
                        m.iter()
                            .filter(|(_, v)| {
                                filter.tenant.as_ref().is_none_or(|t| *t == v.tenant)
                                    && filter.model.as_ref().is_none_or(|mo| *mo == v.model)
                            })
                            .map(|(id, _)| *id)
                            .collect()
                    })
                    .unwrap_or_default();
                for id in ids {
                    self.forget(id);
                }
            }
        }
        self.update_gauges();
    }

    fn apply_put(&self, e: &Entry) {
        let current_model = self.embedder.as_ref().map(|b| b.model_id().to_string());
        if let Some(v) = &e.embedding
            && current_model.as_deref() == Some(e.embedding_model.as_str())
            && let Err(err) = self.index.add(&e.partition, e.id, v)
        {
            // The entry stays servable by exact key; only its semantic lookup is lost.
            tracing::warn!(error = %err, "entry not indexed");
            self.metrics
                .inc("tollgate_cache_index_errors_total", &[], 1);
        }
        if let Some(key) = repeat_slot(&e.partition, &e.query)
            && let Ok(mut r) = self.repeats.write()
        {
            let ids = r.entry(key).or_default();
            if !ids.contains(&e.id) {
                ids.push(e.id);
            }
        }
        if let Ok(mut m) = self.meta.write() {
            m.insert(
                e.id,
                Meta {
                    tenant: e.tenant.clone(),
                    partition: e.partition.clone(),
                    query: e.query.clone(),
                    model: e.model.clone(),
                    expires_at: e.expires_at,
                },
            );
        }
    }

    fn forget(&self, id: u64) {
        let removed = self.meta.write().ok().and_then(|mut m| m.remove(&id));
        if let Some(meta) = removed {
            self.index.remove(&meta.partition, id);
            if let Some(key) = repeat_slot(&meta.partition, &meta.query)
                && let Ok(mut r) = self.repeats.write()
                && let Some(ids) = r.get_mut(&key)
            {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    r.remove(&key);
                }
            }
        }
    }

    fn update_gauges(&self) {
        let n = self.meta.read().map_or(0, |m| m.len());
        self.metrics.set("tollgate_cache_entries", &[], n as i64);
        self.metrics
            .set("tollgate_cache_index_entries", &[], self.index.len() as i64);
        self.metrics.set(
            "tollgate_cache_index_bytes",
            &[],
            self.index.memory_bytes() as i64,
        );
    }

    fn decision(&self, outcome: CacheOutcome) -> CacheDecision {
        CacheDecision {
            outcome,
            ..CacheDecision::default()
        }
    }

    /// Installs the trained complexity classifier (once; later calls are ignored). It must have
    /// been trained with this engine's embedding model.
    pub fn set_complexity(&self, classifier: Arc<Classifier>) -> bool {
        install_complexity(&self.complexity, self.embedder.as_ref(), classifier)
    }

    /// Sets the examples the complexity classifier is trained on, by [`Engine::train_complexity`]
    /// or, failing that, by the first admit that asks for a score (it gets none; the admits after
    /// training do). Without an embedding model nothing is ever trained.
    pub fn plan_complexity(&self, examples: Vec<Example>, k: usize, source: String) {
        if let Ok(mut p) = self.complexity_plan.lock() {
            *p = Some(ComplexityPlan {
                examples,
                k,
                source,
            });
        }
    }

    /// Starts training the planned classifier in the background (embedding the examples, off the
    /// async threads); a no-op when nothing is planned or training already started. Must be
    /// called inside a Tokio runtime.
    pub fn train_complexity(&self) {
        let Some(batcher) = self.embedder.clone() else {
            return;
        };
        let Some(plan) = self.complexity_plan.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let slot = self.complexity.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let embedder = batcher.embedder().clone();
            let trained = tokio::task::spawn_blocking(move || {
                Classifier::train(embedder.as_ref(), &plan.examples, plan.k, plan.source)
            })
            .await;
            match trained {
                Ok(Ok(c)) => {
                    tracing::info!(
                        examples = c.knn().len(),
                        k = c.knn().k(),
                        source = c.source(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "complexity classifier trained"
                    );
                    metrics.observe(
                        "tollgate_complexity_training_seconds",
                        &[],
                        started.elapsed(),
                    );
                    install_complexity(&slot, Some(&batcher), Arc::new(c));
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "complexity classifier not trained"),
                Err(e) => tracing::warn!(error = %e, "complexity classifier training failed"),
            }
        });
    }

    /// The complexity classifier, when trained.
    pub fn complexity(&self) -> Option<&Arc<Classifier>> {
        self.complexity.get()
    }

    /// The embedding model, when semantic lookups (or the complexity classifier) can use one.
    pub fn embedder(&self) -> Option<&Arc<Batcher>> {
        self.embedder.as_ref()
    }

    /// `POST /v1/admit`.
    pub async fn admit(&self, req: &AdmitRequest) -> AdmitResponse {
        let started = Instant::now();
        let (cache, embedded) = self.lookup(req).await;
        // An exact hit is answered from the cache (nothing to route) and made no embedding:
        // scoring it would put an inference (milliseconds) on the fastest path for nothing.
        let complexity = if !req.complexity {
            None
        } else if cache.outcome == CacheOutcome::HitExact
            || (cache.outcome == CacheOutcome::HitSemantic && embedded.is_none())
        {
            self.metrics.inc(
                "tollgate_complexity_unscored_total",
                &[(
                    "reason",
                    if cache.outcome == CacheOutcome::HitExact {
                        "exact_hit"
                    } else {
                        "repeat_hit"
                    },
                )],
                1,
            );
            None
        } else {
            self.score_complexity(req, embedded).await
        };
        let outcome = cache.outcome;
        let label = outcome.header_value();
        self.metrics
            .inc("tollgate_cache_admits_total", &[("outcome", label)], 1);
        if let Some(reason) = &cache.reason {
            self.metrics
                .inc("tollgate_cache_bypass_total", &[("reason", reason)], 1);
        }
        self.metrics.observe(
            "tollgate_admit_seconds",
            &[("outcome", label)],
            started.elapsed(),
        );
        AdmitResponse {
            cache,
            budget: None,
            prefix_hot: false,
            complexity,
        }
    }

    /// The learned complexity score of the admit's final user turn, reusing the lookup's
    /// embedding when it made one (`embedded`), embedding the turn otherwise.
    async fn score_complexity(
        &self,
        req: &AdmitRequest,
        embedded: Option<Vec<f32>>,
    ) -> Option<f32> {
        let started = Instant::now();
        let Some(classifier) = self.complexity.get() else {
            self.train_complexity();
            self.metrics.inc(
                "tollgate_complexity_unscored_total",
                &[("reason", "no_classifier")],
                1,
            );
            return None;
        };
        let vector = match embedded {
            Some(v) => {
                self.metrics.inc(
                    "tollgate_complexity_embeddings_total",
                    &[("source", "reused")],
                    1,
                );
                v
            }
            None => {
                let text = req
                    .cache
                    .as_ref()
                    .map(|q| q.query.as_str())
                    .filter(|t| !t.trim().is_empty())
                    .or(req.complexity_query.as_deref())
                    .filter(|t| !t.trim().is_empty());
                let (Some(text), Some(embedder)) = (text, &self.embedder) else {
                    self.metrics.inc(
                        "tollgate_complexity_unscored_total",
                        &[("reason", "no_text")],
                        1,
                    );
                    return None;
                };
                match embedder.embed(text.to_string()).await {
                    Ok(v) => {
                        self.metrics.inc(
                            "tollgate_complexity_embeddings_total",
                            &[("source", "computed")],
                            1,
                        );
                        v
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "complexity: embedding failed");
                        self.metrics.inc(
                            "tollgate_complexity_unscored_total",
                            &[("reason", "embed_error")],
                            1,
                        );
                        return None;
                    }
                }
            }
        };
        let score = classifier.score(&vector);
        match score {
            Some(s) => self.metrics.inc(
                "tollgate_complexity_scores_total",
                &[("bucket", crate::complexity::bucket(s))],
                1,
            ),
            None => self.metrics.inc(
                "tollgate_complexity_unscored_total",
                &[("reason", "dimension")],
                1,
            ),
        }
        self.metrics
            .observe("tollgate_complexity_seconds", &[], started.elapsed());
        score
    }

    /// The cache decision, and the embedding of the final user turn when the lookup computed
    /// one (so the complexity score can reuse it).
    async fn lookup(&self, req: &AdmitRequest) -> (CacheDecision, Option<Vec<f32>>) {
        let Some(q) = &req.cache else {
            return (
                CacheDecision {
                    reason: Some("not_cacheable".into()),
                    ..self.decision(CacheOutcome::Bypass)
                },
                None,
            );
        };
        let ttl = match self.settings.rules.eligibility(req) {
            Eligibility::Bypass { reason } => {
                return (
                    CacheDecision {
                        reason: Some(reason),
                        ..self.decision(CacheOutcome::Bypass)
                    },
                    None,
                );
            }
            Eligibility::Cacheable { ttl_seconds, .. } => ttl_seconds,
        };
        let store_wanted = q.store;
        let miss = |shadow: Option<String>| CacheDecision {
            outcome: CacheOutcome::Miss,
            store: store_wanted,
            ttl_seconds: Some(ttl),
            shadow_entry_id: shadow,
            ..CacheDecision::default()
        };
        let now = now_secs();
        let servable = |e: &Entry| {
            !e.is_expired(now)
                && e.tenant == req.tenant
                && q.max_tokens
                    .is_none_or(|m| e.completion.usage.output_tokens <= m)
        };
        if q.lookup {
            // 1. Exact.
            match self.store.get_exact(&req.tenant, &q.exact_key).await {
                Ok(Some(e)) if servable(&e) => {
                    return (
                        CacheDecision {
                            entry: Some(e.completion),
                            similarity: Some(1.0),
                            ..self.decision(CacheOutcome::HitExact)
                        },
                        None,
                    );
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "exact lookup failed");
                    return (
                        CacheDecision {
                            reason: Some("store_error".into()),
                            ..self.decision(CacheOutcome::Error)
                        },
                        None,
                    );
                }
            }
        }
        // 2. Semantic: embed the final user turn (also needed later to store the answer).
        if q.query.is_empty() || self.settings.semantic == SemanticMode::Off {
            return (miss(None), None);
        }
        // 2a. A repeat with the same content words (case, punctuation, greetings aside) is found
        // by key, without an embedding: as fast as an exact hit.
        if q.lookup
            && self.settings.semantic == SemanticMode::Serve
            && let Some(entry) = self.repeat_hit(req, q, now).await
            && servable(&entry)
        {
            self.metrics
                .inc("tollgate_cache_repeat_key_hits_total", &[], 1);
            return (
                CacheDecision {
                    entry: Some(entry.completion),
                    ..self.decision(CacheOutcome::HitSemantic)
                },
                None,
            );
        }
        let Some(embedder) = &self.embedder else {
            return (miss(None), None);
        };
        let vector = match embedder.embed(q.query.clone()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "embedding failed; exact lookup only");
                self.metrics.inc("tollgate_embed_errors_total", &[], 1);
                return (miss(None), None);
            }
        };
        let mut shadow_sim = None;
        let mut found: Option<(u64, f32)> = None;
        if q.lookup {
            let candidates = self
                .index
                .search(&q.partition, &vector, self.settings.top_k);
            for (id, sim) in candidates {
                if sim < self.settings.threshold {
                    break;
                }
                let meta = self.meta.read().ok().and_then(|m| m.get(&id).cloned());
                let Some(meta) = meta else { continue };
                if meta.tenant != req.tenant
                    || meta.partition != q.partition
                    || (meta.expires_at != 0 && now >= meta.expires_at)
                {
                    continue;
                }
                if self.settings.guards
                    && let GuardVerdict::Reject(reason) =
                        guards::check_with(&q.query, &meta.query, self.settings.match_mode)
                {
                    self.metrics.inc(
                        "tollgate_cache_guard_rejections_total",
                        &[("reason", reason.as_str())],
                        1,
                    );
                    continue;
                }
                found = Some((id, sim));
                break;
            }
        }
        let decision = match found {
            Some((id, sim)) if self.settings.semantic == SemanticMode::Serve => {
                match self.store.get(id).await {
                    Ok(Some(e)) if servable(&e) => CacheDecision {
                        entry: Some(e.completion),
                        similarity: Some(sim),
                        ..self.decision(CacheOutcome::HitSemantic)
                    },
                    _ => miss(None),
                }
            }
            Some((id, sim)) => {
                self.metrics
                    .inc("tollgate_cache_shadow_total", &[("result", "would_hit")], 1);
                shadow_sim = Some(sim);
                CacheDecision {
                    similarity: Some(sim),
                    ..miss(Some(id.to_string()))
                }
            }
            None => miss(None),
        };
        if decision.store {
            self.remember(&req.request_id, Some(vector.clone()), shadow_sim);
        }
        (decision, Some(vector))
    }

    /// An entry whose query has the same repeat key as the request's, that the guards pass.
    async fn repeat_hit(
        &self,
        req: &AdmitRequest,
        q: &tollgate_wire::admit::CacheQuery,
        now: u64,
    ) -> Option<Entry> {
        let key = repeat_slot(&q.partition, &q.query)?;
        let ids = self.repeats.read().ok()?.get(&key).cloned()?;
        for id in ids {
            let Some(meta) = self.meta.read().ok().and_then(|m| m.get(&id).cloned()) else {
                continue;
            };
            if meta.tenant != req.tenant
                || meta.partition != q.partition
                || (meta.expires_at != 0 && now >= meta.expires_at)
            {
                continue;
            }
            if self.settings.guards
                && guards::check_with(&q.query, &meta.query, self.settings.match_mode)
                    .reason()
                    .is_some()
            {
                continue;
            }
            if let Ok(Some(e)) = self.store.get(id).await {
                return Some(e);
            }
        }
        None
    }

    fn remember(
        &self,
        request_id: &str,
        embedding: Option<Vec<f32>>,
        shadow_similarity: Option<f32>,
    ) {
        if request_id.is_empty() {
            return;
        }
        if let Ok(mut p) = self.pending.lock() {
            if p.len() > 10_000 {
                p.retain(|_, v| v.at.elapsed() < PENDING_TTL);
            }
            p.insert(
                request_id.to_string(),
                Pending {
                    at: Instant::now(),
                    embedding,
                    shadow_similarity,
                },
            );
        }
    }

    /// `POST /v1/settle`.
    pub async fn settle(&self, batch: SettleBatch) -> Result<SettleSummary, EngineError> {
        let mut summary = SettleSummary {
            records: batch.records.len(),
            stored: 0,
        };
        for rec in batch.records {
            self.account(&rec);
            if self.store_answer(rec).await? {
                summary.stored += 1;
            }
        }
        self.update_gauges();
        Ok(summary)
    }

    fn account(&self, rec: &SettleRecord) {
        let tenant = rec.tenant.as_str();
        let model = rec.model.as_str();
        self.metrics.inc(
            "tollgate_settled_requests_total",
            &[
                ("tenant", tenant),
                ("model", model),
                ("cache", rec.cache.header_value()),
            ],
            1,
        );
        if let Some(c) = rec.cost_pico {
            self.metrics.inc(
                "tollgate_spend_micro_usd_total",
                &[("tenant", tenant), ("model", model)],
                c / 1_000_000,
            );
        }
        if rec.saved_pico > 0 {
            self.metrics.inc(
                "tollgate_cache_saved_micro_usd_total",
                &[("tenant", tenant), ("model", model)],
                rec.saved_pico / 1_000_000,
            );
        }
    }

    async fn store_answer(&self, rec: SettleRecord) -> Result<bool, EngineError> {
        let Some(st) = rec.store else {
            return Ok(false);
        };
        if rec.status != 200
            || st.completion.text.is_empty()
            || st.exact_key.len() != 64
            || st.partition.len() != 64
        {
            return Ok(false);
        }
        let pending = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&rec.request_id));
        let mut embedding = pending.as_ref().and_then(|p| p.embedding.clone());
        if embedding.is_none()
            && !st.query.is_empty()
            && self.settings.semantic != SemanticMode::Off
            && let Some(b) = &self.embedder
        {
            embedding = b.embed(st.query.clone()).await.ok();
        }
        // Shadow mode: record the would-be answer next to the real one.
        if let Some(shadow_id) = st
            .shadow_entry_id
            .as_ref()
            .and_then(|s| s.parse::<u64>().ok())
            && let Ok(Some(cached)) = self.store.get(shadow_id).await
        {
            let rec = ShadowRecord {
                at: now_secs(),
                tenant: rec.tenant.clone(),
                similarity: pending.as_ref().and_then(|p| p.shadow_similarity),
                query: st.query.clone(),
                cached_query: cached.query.clone(),
                answer_overlap: jaccard(&cached.completion.text, &st.completion.text),
                cached_answer: cached.completion.text,
                actual_answer: st.completion.text.clone(),
            };
            if let Ok(mut s) = self.shadow.lock() {
                if s.len() >= SHADOW_KEEP {
                    s.pop_front();
                }
                s.push_back(rec);
            }
            self.metrics
                .inc("tollgate_cache_shadow_total", &[("result", "recorded")], 1);
        }
        let now = now_secs();
        let id = Entry::id_for(&rec.tenant, &st.exact_key);
        let ttl = st.ttl_seconds.unwrap_or(24 * 3600);
        let mut completion = st.completion;
        completion.entry_id = id.to_string();
        completion.created_at = now;
        let entry = Entry {
            id,
            tenant: rec.tenant,
            partition: st.partition,
            exact_key: st.exact_key,
            model: rec.model,
            query: st.query,
            embedding_model: self
                .embedder
                .as_ref()
                .map(|b| b.model_id().to_string())
                .unwrap_or_default(),
            embedding,
            completion,
            created_at: now,
            expires_at: if ttl == 0 { 0 } else { now + ttl },
        };
        self.store.put(&entry).await?;
        // Index locally right away; the store's event (also seen by other replicas) is idempotent.
        self.apply_put(&entry);
        self.metrics.inc("tollgate_cache_stores_total", &[], 1);
        self.maybe_evict().await;
        Ok(true)
    }

    async fn maybe_evict(&self) {
        let due = self.puts_since_evict.lock().map(|mut n| {
            *n += 1;
            if *n >= 100 {
                *n = 0;
                true
            } else {
                false
            }
        });
        if due.unwrap_or(false)
            || self.meta.read().map_or(0, |m| m.len() as u64) > self.settings.max_entries
        {
            match self.store.evict_to(self.settings.max_entries).await {
                Ok(ids) if !ids.is_empty() => {
                    self.metrics
                        .inc("tollgate_cache_evictions_total", &[], ids.len() as u64);
                    for id in ids {
                        self.forget(id);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "eviction failed"),
            }
        }
    }

    /// `POST /v1/cache/invalidate`.
    pub async fn invalidate(&self, filter: &InvalidateFilter) -> Result<u64, EngineError> {
        let n = self.store.invalidate(filter).await?;
        self.apply_event(StoreEvent::Invalidated(filter.clone()));
        self.metrics.inc("tollgate_cache_invalidated_total", &[], n);
        Ok(n)
    }

    /// Warms the cache with a known question/answer pair, keyed exactly as the filter keys a
    /// chat request `{"model", "messages": [system?, user]}` (or the given API's equivalent).
    pub async fn warm(&self, item: &WarmItem) -> Result<u64, EngineError> {
        let api = item.api.unwrap_or(Api::OpenAiChat);
        let body = warm_request(api, item);
        let keys = tollgate_core::cachekey::keys(api, &item.tenant, &item.model, &body)
            .ok_or_else(|| EngineError::Invalid("cannot compute keys".into()))?;
        if item.answer.is_empty() || item.question.is_empty() {
            return Err(EngineError::Invalid(
                "question and answer must not be empty".into(),
            ));
        }
        let embedding = match (&self.embedder, self.settings.semantic) {
            (Some(b), SemanticMode::Serve | SemanticMode::Shadow) => {
                b.embed(keys.query.clone()).await.ok()
            }
            _ => None,
        };
        let now = now_secs();
        let id = Entry::id_for(&item.tenant, &keys.exact_key);
        let ttl = item.ttl_seconds.unwrap_or(30 * 24 * 3600);
        let entry = Entry {
            id,
            tenant: item.tenant.clone(),
            partition: keys.partition,
            exact_key: keys.exact_key,
            model: item.model.clone(),
            query: keys.query,
            embedding_model: self
                .embedder
                .as_ref()
                .map(|b| b.model_id().to_string())
                .unwrap_or_default(),
            embedding,
            completion: CachedCompletion {
                entry_id: id.to_string(),
                model: item.model.clone(),
                text: item.answer.clone(),
                finish_reason: "stop".into(),
                usage: item.usage.unwrap_or_default(),
                cost_pico: None,
                created_at: now,
            },
            created_at: now,
            expires_at: if ttl == 0 { 0 } else { now + ttl },
        };
        self.store.put(&entry).await?;
        self.apply_put(&entry);
        self.update_gauges();
        Ok(id)
    }

    /// Recent shadow-mode observations, newest last.
    pub fn shadow_records(&self) -> Vec<ShadowRecord> {
        self.shadow
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn entries(&self) -> usize {
        self.meta.read().map_or(0, |m| m.len())
    }

    pub async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}

/// One warming pair (JSONL line of `POST /v1/cache/warm`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WarmItem {
    pub tenant: String,
    pub model: String,
    #[serde(default)]
    pub api: Option<Api>,
    #[serde(default)]
    pub system: Option<String>,
    pub question: String,
    pub answer: String,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub usage: Option<tollgate_wire::Usage>,
    /// Sampling parameters the filter's requests carry (e.g. `{"temperature": 0}`), so the
    /// warmed entry lands in the same partition.
    #[serde(default)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

fn warm_request(api: Api, item: &WarmItem) -> serde_json::Value {
    use serde_json::json;
    let mut body = match api {
        Api::AnthropicMessages => {
            let mut b = json!({"model": item.model, "messages": [{"role": "user", "content": item.question}]});
            if let Some(s) = &item.system {
                b["system"] = json!(s);
            }
            b
        }
        Api::OpenAiResponses => {
            let mut b = json!({"model": item.model, "input": item.question});
            if let Some(s) = &item.system {
                b["instructions"] = json!(s);
            }
            b
        }
        Api::OpenAiCompletions => json!({"model": item.model, "prompt": item.question}),
        Api::OpenAiChat => {
            let mut msgs = Vec::new();
            if let Some(s) = &item.system {
                msgs.push(json!({"role": "system", "content": s}));
            }
            msgs.push(json!({"role": "user", "content": item.question}));
            json!({"model": item.model, "messages": msgs})
        }
    };
    if let (Some(params), Some(obj)) = (&item.params, body.as_object_mut()) {
        for (k, v) in params {
            obj.insert(k.clone(), v.clone());
        }
    }
    body
}

fn describe(m: &Metrics) {
    m.describe(
        "tollgate_cache_repeat_key_hits_total",
        "counter",
        "Semantic hits found by repeat key (the same content words in order), without an \
         embedding.",
    );
    m.describe(
        "tollgate_complexity_scores_total",
        "counter",
        "Learned complexity scores returned on admit, by tenth (bucket = lower bound, 0.0-0.9).",
    );
    m.describe(
        "tollgate_complexity_embeddings_total",
        "counter",
        "Embeddings behind complexity scores: reused from the cache lookup, or computed for the \
         score alone.",
    );
    m.describe(
        "tollgate_complexity_unscored_total",
        "counter",
        "Admits that asked for a complexity score and got none, by reason (exact_hit, \
         repeat_hit, no_classifier, no_text, embed_error, dimension).",
    );
    m.describe(
        "tollgate_complexity_training_seconds",
        "histogram",
        "Time to embed the complexity classifier's examples (once per start).",
    );
    m.describe(
        "tollgate_complexity_seconds",
        "histogram",
        "Time to score complexity on admit (k-NN, plus embedding when not reused).",
    );
    m.describe(
        "tollgate_cache_admits_total",
        "counter",
        "Admit lookups by outcome (hit-exact, hit-semantic, miss, bypass, error).",
    );
    m.describe(
        "tollgate_cache_bypass_total",
        "counter",
        "Requests not eligible for the cache, by reason.",
    );
    m.describe(
        "tollgate_cache_guard_rejections_total",
        "counter",
        "Semantic candidates rejected by a guard, by reason.",
    );
    m.describe(
        "tollgate_cache_shadow_total",
        "counter",
        "Shadow mode: would-be semantic hits and recorded comparisons.",
    );
    m.describe("tollgate_cache_stores_total", "counter", "Answers stored.");
    m.describe(
        "tollgate_cache_evictions_total",
        "counter",
        "Entries evicted by the size limit.",
    );
    m.describe(
        "tollgate_cache_invalidated_total",
        "counter",
        "Entries removed by invalidation.",
    );
    m.describe(
        "tollgate_cache_entries",
        "gauge",
        "Entries known to this replica.",
    );
    m.describe(
        "tollgate_cache_index_entries",
        "gauge",
        "Vectors in the semantic index.",
    );
    m.describe(
        "tollgate_cache_index_bytes",
        "gauge",
        "Approximate memory of the semantic index.",
    );
    m.describe(
        "tollgate_admit_seconds",
        "histogram",
        "Admit latency inside the service.",
    );
    m.describe(
        "tollgate_settled_requests_total",
        "counter",
        "Metered requests reported by filters, by tenant, model and cache result.",
    );
    m.describe(
        "tollgate_spend_micro_usd_total",
        "counter",
        "Spend reported by filters, micro-USD.",
    );
    m.describe(
        "tollgate_cache_saved_micro_usd_total",
        "counter",
        "Spend avoided by cache hits, micro-USD.",
    );
    m.describe(
        "tollgate_cache_index_errors_total",
        "counter",
        "Entries that could not be added to the semantic index.",
    );
    m.describe(
        "tollgate_embed_errors_total",
        "counter",
        "Embedding failures (lookups fell back to exact only).",
    );
}
