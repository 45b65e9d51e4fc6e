//! Maps host callbacks to `tollgate_core::Exchange` transitions and its verdicts to host calls.
//! Generic over [`Host`] so it runs natively against a fake host in tests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use std::collections::VecDeque;
use tollgate_core::config::AccessLogFormat;
use tollgate_core::count::CountCache;
use tollgate_core::metrics::{Cardinality, Counter, Tags, stat_name};

use tollgate_core::exchange::{AdmitVerdict, CallVerdict, UpstreamCall};
use tollgate_core::tenant::PRINCIPAL_PSEUDO_HEADER;
use tollgate_core::{BodyVerdict, Config, Exchange, HeadersVerdict, Outcome, ResponseBodyVerdict};
use tollgate_wire::admit::{SettleBatch, SettleRecord};

use crate::host::{Host, Level};

#[cfg(feature = "io-floor")]
mod floor;

/// What a callback tells Envoy: continue the filter chain, or stop (buffer / wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Per-VM state shared by all streams of the VM (Envoy runs one VM per worker thread).
#[derive(Debug)]
pub struct Plugin {
    pub config: Rc<Config>,
    pub cache: CountCache,
    pub cardinality: Cardinality,
    /// Envoy metric ids per tag set, indexed by `Counter::index`.
    metric_ids: HashMap<Tags, [Option<u32>; Counter::COUNT]>,
    /// Increments not yet handed to Envoy, by metric id.
    pending: HashMap<u32, u64>,
    /// Cached host log level check, refreshed on every flush.
    pub debug: bool,
    /// Finished requests waiting to be sent to the cache service.
    settle_queue: VecDeque<SettleRecord>,
    /// The settle batch in flight: (call-out token, records), re-queued if it fails.
    settle_in_flight: Option<(u32, Vec<SettleRecord>)>,
    /// Records dropped because the queue was full (not yet counted in a metric).
    settle_dropped: u64,
}

/// Memoised texts per VM (system prompts, earlier turns). Each entry is ~40 bytes.
pub const COUNT_CACHE_ENTRIES: usize = 16 * 1024;

impl Plugin {
    pub fn new(config: Config, seed: u64) -> Self {
        let cardinality = Cardinality::new(config.metrics.max_tenants, config.metrics.max_models);
        Plugin {
            config: Rc::new(config),
            cache: CountCache::new(COUNT_CACHE_ENTRIES, seed),
            cardinality,
            metric_ids: HashMap::new(),
            pending: HashMap::new(),
            debug: false,
            settle_queue: VecDeque::new(),
            settle_in_flight: None,
            settle_dropped: 0,
        }
    }

    /// Queues a settle record; the oldest are dropped (and counted) beyond the queue limit.
    pub fn queue_settle(&mut self, rec: SettleRecord) {
        let limit = self.config.cache.as_ref().map_or(0, |c| c.settle_queue);
        self.settle_queue.push_back(rec);
        while self.settle_queue.len() > limit {
            self.settle_queue.pop_front();
            self.settle_dropped += 1;
        }
    }

    /// Records waiting (tests, metrics).
    pub fn settle_backlog(&self) -> usize {
        self.settle_queue.len() + self.settle_in_flight.as_ref().map_or(0, |(_, b)| b.len())
    }

    /// Sends the next settle batch, if none is in flight (called from the root context's tick).
    pub fn send_settles(&mut self, host: &impl Host) {
        if self.settle_dropped > 0 {
            let n = std::mem::take(&mut self.settle_dropped);
            self.count(host, Counter::SettleDropped, &Tags::default(), n);
            host.log(
                Level::Warn,
                &format!("tollgate: cache service unreachable, dropped {n} settle records"),
            );
        }
        let Some(cache) = self.config.cache.clone() else {
            return;
        };
        if self.settle_in_flight.is_some() || self.settle_queue.is_empty() {
            return;
        }
        let n = self.settle_queue.len().min(cache.settle_batch);
        let records: Vec<SettleRecord> = self.settle_queue.drain(..n).collect();
        let batch = SettleBatch { records };
        let body = serde_json::to_vec(&batch).unwrap_or_default();
        match host.http_post(&cache.cluster, &cache.authority, "/v1/settle", &body, 5000) {
            Ok(token) => self.settle_in_flight = Some((token, batch.records)),
            Err(e) => {
                host.log(
                    Level::Warn,
                    &format!("tollgate: settle call-out failed: host status {}", e.0),
                );
                self.requeue(host, batch.records);
            }
        }
    }

    /// The settle call-out `token` answered with `status` (`None`: failed).
    pub fn settle_done(&mut self, host: &impl Host, token: u32, status: Option<u16>) {
        let Some((t, records)) = self.settle_in_flight.take() else {
            return;
        };
        if t != token {
            self.settle_in_flight = Some((t, records));
            return;
        }
        if status != Some(200) {
            host.log(
                Level::Warn,
                &format!(
                    "tollgate: settle rejected by the cache service (status {status:?}); will retry"
                ),
            );
            self.requeue(host, records);
        }
    }

    fn requeue(&mut self, host: &impl Host, records: Vec<SettleRecord>) {
        self.count(host, Counter::SettleFailures, &Tags::default(), 1);
        for r in records.into_iter().rev() {
            self.settle_queue.push_front(r);
        }
        let limit = self.config.cache.as_ref().map_or(0, |c| c.settle_queue);
        while self.settle_queue.len() > limit {
            self.settle_queue.pop_front();
            self.settle_dropped += 1;
        }
    }

    /// Hands summed counter increments to Envoy (from `on_tick`, or per request when
    /// `metrics.flushIntervalMs` is 0).
    pub fn flush_metrics(&mut self, host: &impl Host) {
        for (id, by) in self.pending.drain() {
            if by > 0 {
                let _ = host.increment(id, by);
            }
        }
        self.debug = host.debug_enabled();
    }

    /// Increments a counter, defining it on first use.
    pub fn count(&mut self, host: &impl Host, counter: Counter, tags: &Tags, by: u64) {
        let cached = self
            .metric_ids
            .get(tags)
            .and_then(|ids| ids.get(counter.index()).copied().flatten());
        let id = match cached {
            Some(id) => id,
            None => match host.define_counter(&stat_name(counter, tags)) {
                Ok(id) => {
                    let ids = self
                        .metric_ids
                        .entry(tags.clone())
                        .or_insert([None; Counter::COUNT]);
                    if let Some(slot) = ids.get_mut(counter.index()) {
                        *slot = Some(id);
                    }
                    id
                }
                Err(e) => {
                    host.log(
                        Level::Warn,
                        &format!(
                            "tollgate: cannot define metric {}: host status {}",
                            stat_name(counter, tags),
                            e.0
                        ),
                    );
                    return;
                }
            },
        };
        *self.pending.entry(id).or_insert(0) += by;
    }
}

pub type SharedPlugin = Rc<RefCell<Option<Plugin>>>;

/// One HTTP stream.
pub struct Stream<H: Host> {
    host: H,
    plugin: SharedPlugin,
    id: u32,
    exchange: Exchange,
    admit_token: Option<u32>,
    /// The fallback / cascade call-out in flight.
    upstream_token: Option<u32>,
    /// Size of the request body in Envoy's buffer while admit is in flight.
    request_body_len: usize,
}

impl<H: Host> Stream<H> {
    pub fn new(host: H, plugin: SharedPlugin, id: u32) -> Self {
        let fallback = format!("tg-{:x}-{id}", host.now_nanos());
        Stream {
            host,
            plugin,
            id,
            exchange: Exchange::with_id(fallback),
            admit_token: None,
            upstream_token: None,
            request_body_len: 0,
        }
    }

    fn config(&self) -> Option<Rc<Config>> {
        self.plugin
            .try_borrow()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.config.clone()))
    }

    fn warn(&self, what: &str) {
        self.host
            .log(Level::Warn, &format!("tollgate[{}]: {what}", self.id));
    }

    fn reply(&mut self, reply: &tollgate_core::error::LocalReply) -> Flow {
        if let Err(e) = self.host.send_reply(reply) {
            self.warn(&format!("local reply failed: host status {}", e.0));
            return Flow::Continue;
        }
        self.flush();
        Flow::Pause
    }

    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Flow {
        let Some(cfg) = self.config() else {
            return Flow::Continue; // not configured: be a no-op
        };
        let mut headers = match self.host.request_headers() {
            Ok(h) => h,
            Err(e) => {
                self.warn(&format!("cannot read request headers: host status {}", e.0));
                return Flow::Continue;
            }
        };
        headers.retain(|(k, _)| k != PRINCIPAL_PSEUDO_HEADER);
        if cfg.tenant.wants_principal()
            && let Ok(Some(p)) = self.host.property(&["source", "principal"])
        {
            headers.push((PRINCIPAL_PSEUDO_HEADER.to_string(), p));
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (method, path) = (get(":method"), get(":path"));
        match self
            .exchange
            .on_request_headers(&cfg, &method, &path, &headers, end_of_stream)
        {
            HeadersVerdict::PassThrough => {
                self.passthrough();
                Flow::Continue
            }
            HeadersVerdict::Continue { remove } => {
                self.remove_request_headers(&remove);
                Flow::Continue
            }
            HeadersVerdict::Pause { remove } => {
                self.remove_request_headers(&remove);
                Flow::Pause
            }
            HeadersVerdict::Reply(r) => self.reply(&r),
        }
    }

    /// Sets the request headers the exchange decided on (route header, prefix key).
    fn set_upstream_headers(&mut self) {
        for (name, value) in self.exchange.take_upstream_headers() {
            if let Err(e) = self.host.set_request_header(&name, &value) {
                self.warn(&format!(
                    "cannot set request header {name}: host status {}",
                    e.0
                ));
            }
        }
    }

    fn remove_request_headers(&self, names: &[&str]) {
        for n in names {
            if let Err(e) = self.host.remove_request_header(n) {
                self.warn(&format!(
                    "cannot remove request header {n}: host status {}",
                    e.0
                ));
            }
        }
    }

    fn passthrough(&mut self) {
        if let Some(reason) = self.exchange.passthrough_reason.take()
            && let Ok(mut p) = self.plugin.try_borrow_mut()
            && let Some(p) = p.as_mut()
        {
            let tags = Tags {
                reason: Some(reason),
                ..Tags::default()
            };
            p.count(&self.host, Counter::PassThrough, &tags, 1);
            if p.config.metrics.flush_interval_ms == 0 {
                p.flush_metrics(&self.host);
            }
        }
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        if !self.exchange.is_metered() {
            return Flow::Continue;
        }
        #[cfg(feature = "io-floor")]
        return self.floor_request_body(body_size, end_of_stream);
        #[allow(unreachable_code)]
        let Some(cfg) = self.config() else {
            return Flow::Continue;
        };
        let host = &self.host;
        let read = || host.request_body(body_size).ok();
        let verdict = {
            let Ok(mut guard) = self.plugin.try_borrow_mut() else {
                return Flow::Continue;
            };
            let Some(plugin) = guard.as_mut() else {
                return Flow::Continue;
            };
            self.exchange
                .on_request_body(&cfg, &mut plugin.cache, body_size, end_of_stream, read)
        };
        self.set_upstream_headers();
        match verdict {
            BodyVerdict::Buffer => Flow::Pause,
            BodyVerdict::Continue { body } => {
                if let Some(b) = body
                    && let Err(e) = self.host.replace_request_body(body_size, &b)
                {
                    self.warn(&format!("cannot rewrite request body: host status {}", e.0));
                }
                Flow::Continue
            }
            BodyVerdict::Admit { body, call } => {
                self.request_body_len = body_size;
                if let Some(b) = body {
                    match self.host.replace_request_body(body_size, &b) {
                        Ok(()) => self.request_body_len = b.len(),
                        Err(e) => {
                            self.warn(&format!("cannot rewrite request body: host status {}", e.0))
                        }
                    }
                }
                let Some(cache) = cfg.cache.as_ref() else {
                    return Flow::Continue;
                };
                match self.host.http_post(
                    &cache.cluster,
                    &cache.authority,
                    "/v1/admit",
                    &call,
                    cache.timeout_ms,
                ) {
                    Ok(token) => {
                        self.admit_token = Some(token);
                        Flow::Pause
                    }
                    Err(e) => {
                        self.warn(&format!("admit call-out failed: host status {}", e.0));
                        let now = self.host.now_nanos() / 1_000_000_000;
                        let _ = self.exchange.on_admit_response(&cfg, None, &[], now);
                        Flow::Continue
                    }
                }
            }
            BodyVerdict::Reply(r) => self.reply(&r),
        }
    }

    /// The admit call-out answered (or failed / timed out: Envoy then delivers a 503).
    pub fn on_admit_response(&mut self, token: u32, body_size: usize) {
        if self.admit_token != Some(token) {
            return;
        }
        self.admit_token = None;
        let Some(cfg) = self.config() else {
            let _ = self.host.resume_request();
            return;
        };
        let (status, body) = self.host.http_call_response(body_size);
        let now = self.host.now_nanos() / 1_000_000_000;
        let verdict = self.exchange.on_admit_response(&cfg, status, &body, now);
        // Routing deferred to the admit answer may set a route header.
        self.set_upstream_headers();
        match verdict {
            AdmitVerdict::Continue => {
                if let Err(e) = self.host.resume_request() {
                    self.warn(&format!("cannot resume request: host status {}", e.0));
                }
            }
            AdmitVerdict::Rewrite { body } => {
                if let Err(e) = self.host.replace_request_body(self.request_body_len, &body) {
                    self.warn(&format!("cannot rewrite request body: host status {}", e.0));
                }
                if let Err(e) = self.host.resume_request() {
                    self.warn(&format!("cannot resume request: host status {}", e.0));
                }
            }
            AdmitVerdict::Reply(r) => {
                if self.reply(&r) == Flow::Continue {
                    let _ = self.host.resume_request();
                }
            }
        }
    }

    /// A call-out answered: the admit call or a fallback / cascade attempt.
    pub fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        if self.upstream_token == Some(token) {
            self.on_upstream_call_response(body_size);
        } else {
            self.on_admit_response(token, body_size);
        }
    }

    /// Sends a fallback / cascade attempt; when it cannot even be sent, that counts as a failed
    /// attempt (the next target is tried, and in the end the client gets an error reply).
    fn send_upstream_call(&mut self, mut call: UpstreamCall) -> Flow {
        let Some(cfg) = self.config() else {
            return Flow::Continue;
        };
        for _ in 0..=tollgate_core::routing::MAX_FALLBACKS + 1 {
            let cluster = call.cluster.clone().or_else(|| {
                self.host
                    .property(&["xds", "cluster_name"])
                    .ok()
                    .flatten()
                    .or_else(|| self.host.property(&["cluster_name"]).ok().flatten())
            });
            let sent = match cluster {
                Some(c) => self
                    .host
                    .http_call(&c, &call.headers, &call.body, call.timeout_ms)
                    .map_err(|e| format!("cluster {c}: host status {}", e.0)),
                None => Err("the first attempt's cluster is unknown".to_string()),
            };
            match sent {
                Ok(token) => {
                    self.upstream_token = Some(token);
                    return Flow::Pause;
                }
                Err(why) => {
                    self.warn(&format!("fallback call-out failed: {why}"));
                    match self.exchange.on_call_response(&cfg, None, &[], &[]) {
                        CallVerdict::Call(next) => call = next,
                        CallVerdict::Reply(r) => return self.reply(&r),
                        CallVerdict::Ignore => return Flow::Continue,
                    }
                }
            }
        }
        Flow::Continue
    }

    fn on_upstream_call_response(&mut self, body_size: usize) {
        self.upstream_token = None;
        let Some(cfg) = self.config() else {
            return;
        };
        let (status, body) = self.host.http_call_response(body_size);
        let headers = if status.is_some() {
            self.host.http_call_response_headers()
        } else {
            Vec::new()
        };
        match self
            .exchange
            .on_call_response(&cfg, status, &headers, &body)
        {
            CallVerdict::Call(next) => {
                self.send_upstream_call(next);
            }
            CallVerdict::Reply(r) => {
                self.reply(&r);
            }
            CallVerdict::Ignore => {}
        }
    }

    /// Request trailers end the request body (HTTP/2, chunked trailers): decide on the body
    /// buffered so far, which would otherwise wait forever for an end-of-stream body callback.
    pub fn on_request_trailers(&mut self) -> Flow {
        if !self.exchange.is_awaiting_request_body() {
            return Flow::Continue;
        }
        let limit = self.config().map_or(0, |c| c.max_request_bytes as usize);
        let size = self
            .host
            .request_body(limit.saturating_add(1))
            .map_or(0, |b| b.len());
        self.on_request_body(size, true)
    }

    /// Response trailers end the response body: settle it (a held body is read whole).
    pub fn on_response_trailers(&mut self) -> Flow {
        if !self.exchange.is_metered() {
            return Flow::Continue;
        }
        let size = if self.exchange.is_holding() {
            usize::MAX >> 1
        } else {
            0
        };
        self.on_response_body(size, true)
    }

    pub fn on_response_headers(&mut self, end_of_stream: bool) -> Flow {
        if !self.exchange.is_metered() {
            return Flow::Continue;
        }
        #[cfg(feature = "io-floor")]
        return self.floor_response_headers(end_of_stream);
        #[allow(unreachable_code)]
        let Some(cfg) = self.config() else {
            return Flow::Continue;
        };
        let headers = self.host.response_headers().unwrap_or_default();
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse::<u16>().ok())
            .unwrap_or(0);
        let v = self
            .exchange
            .on_response_headers(&cfg, status, &headers, end_of_stream);
        if let Some(call) = v.call {
            // The upstream failed: its response is held back while the next model is asked.
            return self.send_upstream_call(call);
        }
        for (k, val) in &v.add {
            let _ = self.host.set_response_header(k, val);
        }
        self.flush();
        if v.hold { Flow::Pause } else { Flow::Continue }
    }

    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        if !self.exchange.is_metered() {
            return Flow::Continue;
        }
        #[cfg(feature = "io-floor")]
        return self.floor_response_body(body_size, end_of_stream);
        #[allow(unreachable_code)]
        let holding = self.exchange.is_holding();
        if holding && !end_of_stream {
            return Flow::Pause;
        }
        // Streamed: the buffer holds this chunk. Held: at end of stream it holds the whole body.
        let chunk = match self.host.response_body(body_size) {
            Ok(c) => c,
            Err(e) => {
                self.warn(&format!("cannot read response body: host status {}", e.0));
                Vec::new()
            }
        };
        let verdict = self.exchange.on_response_body(&chunk, end_of_stream);
        if let ResponseBodyVerdict::Continue { set_headers } = &verdict {
            for (k, val) in set_headers {
                if let Err(e) = self.host.set_response_header(k, val) {
                    self.warn(&format!(
                        "cannot set response header {k}: host status {}",
                        e.0
                    ));
                }
            }
        }
        self.flush();
        match verdict {
            ResponseBodyVerdict::Hold => Flow::Pause,
            ResponseBodyVerdict::Continue { .. } => Flow::Continue,
            ResponseBodyVerdict::Call(call) => {
                self.send_upstream_call(call);
                Flow::Pause
            }
        }
    }

    /// End of the stream (`on_log`): settle anything still in flight.
    pub fn on_log(&mut self) {
        self.exchange.on_end();
        self.flush();
    }

    /// Emits the outcome, if one is ready: properties for the access log, counters, a debug line.
    fn flush(&mut self) {
        let Some(outcome) = self.exchange.take_outcome() else {
            return;
        };
        let format = self.config().map_or(Some(AccessLogFormat::Line), |c| {
            c.metrics.access_log.then_some(c.metrics.access_log_format)
        });
        match format {
            Some(AccessLogFormat::Line) => {
                let _ = self.host.set_property("tollgate", &outcome.log_line());
            }
            Some(AccessLogFormat::Fields) => {
                for (k, v) in outcome.properties() {
                    let _ = self.host.set_property(&format!("tollgate.{k}"), &v);
                }
            }
            None => {}
        }
        // Settle records exist only with a cache service; the clock is a host call.
        if outcome.cache.is_some()
            && let Some(rec) = outcome.settle_record(self.host.now_nanos() / 1_000_000)
            && let Ok(mut p) = self.plugin.try_borrow_mut()
            && let Some(p) = p.as_mut()
        {
            p.queue_settle(rec);
        }
        let debug = self.record(&outcome);
        if !debug {
            return;
        }
        self.host.log(
            Level::Debug,
            &format!(
                "tollgate[{}]: tenant={} model={} status={} prompt={} completion={} cost_pico={:?} source={:?} result={}",
                self.id,
                outcome.tenant,
                outcome.model,
                outcome.status,
                outcome.usage.prompt_tokens(),
                outcome.usage.output_tokens,
                outcome.cost_pico,
                outcome.usage_source,
                outcome.result()
            ),
        );
    }

    /// Counts the outcome; returns whether debug logging is on.
    fn record(&mut self, outcome: &Outcome) -> bool {
        let Ok(mut guard) = self.plugin.try_borrow_mut() else {
            return false;
        };
        let Some(plugin) = guard.as_mut() else {
            return false;
        };
        // The cardinality limiter and the counters live in the same struct: take the limiter
        // out for the duration of the walk.
        let host = &self.host;
        let mut card = std::mem::replace(&mut plugin.cardinality, Cardinality::new(0, 0));
        outcome.each_counter(&mut card, |counter, tags, by| {
            plugin.count(host, counter, tags, by)
        });
        plugin.cardinality = card;
        if plugin.config.metrics.flush_interval_ms == 0 {
            plugin.flush_metrics(&self.host);
        }
        plugin.debug
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::abi::HostError;
    use std::cell::RefCell;
    use tollgate_core::error::LocalReply;

    /// A host that records calls and refuses header edits once headers were "sent".
    #[derive(Default)]
    struct Fake {
        req_headers: RefCell<Vec<(String, String)>>,
        resp_headers: RefCell<Vec<(String, String)>>,
        req_body: RefCell<Vec<u8>>,
        resp_body: RefCell<Vec<u8>>,
        replies: RefCell<Vec<LocalReply>>,
        props: RefCell<Vec<(String, String)>>,
        metrics: RefCell<Vec<(String, u64)>>,
        resp_headers_sent: RefCell<bool>,
        calls: RefCell<Vec<(String, String, Vec<u8>)>>,
        call_fails: RefCell<bool>,
        call_response: RefCell<(Option<u16>, Vec<u8>)>,
        resumed: RefCell<u32>,
        principal: RefCell<Option<String>>,
    }

    impl Host for &Fake {
        fn request_headers(&self) -> Result<Vec<(String, String)>, HostError> {
            Ok(self.req_headers.borrow().clone())
        }
        fn response_headers(&self) -> Result<Vec<(String, String)>, HostError> {
            Ok(self.resp_headers.borrow().clone())
        }
        fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
            self.req_headers.borrow_mut().retain(|(k, _)| k != name);
            Ok(())
        }
        fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
            let mut h = self.req_headers.borrow_mut();
            h.retain(|(k, _)| k != name);
            h.push((name.into(), value.into()));
            Ok(())
        }
        fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError> {
            if *self.resp_headers_sent.borrow() {
                return Err(HostError(2));
            }
            self.resp_headers
                .borrow_mut()
                .push((name.into(), value.into()));
            Ok(())
        }
        fn request_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
            let b = self.req_body.borrow();
            Ok(b[..size.min(b.len())].to_vec())
        }
        fn replace_request_body(&self, _old: usize, body: &[u8]) -> Result<(), HostError> {
            *self.req_body.borrow_mut() = body.to_vec();
            Ok(())
        }
        fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
            let b = self.resp_body.borrow();
            Ok(b[b.len().saturating_sub(size)..].to_vec())
        }
        fn send_reply(&self, reply: &LocalReply) -> Result<(), HostError> {
            self.replies.borrow_mut().push(reply.clone());
            Ok(())
        }
        fn set_property(&self, key: &str, value: &str) -> Result<(), HostError> {
            self.props.borrow_mut().push((key.into(), value.into()));
            Ok(())
        }
        fn property(&self, path: &[&str]) -> Result<Option<String>, HostError> {
            Ok((path == ["source", "principal"])
                .then(|| self.principal.borrow().clone())
                .flatten())
        }
        fn log(&self, _level: Level, _msg: &str) {}
        fn debug_enabled(&self) -> bool {
            true
        }
        fn define_counter(&self, name: &str) -> Result<u32, HostError> {
            let mut m = self.metrics.borrow_mut();
            m.push((name.into(), 0));
            Ok(m.len() as u32 - 1)
        }
        fn increment(&self, id: u32, by: u64) -> Result<(), HostError> {
            self.metrics.borrow_mut()[id as usize].1 += by;
            Ok(())
        }
        fn http_post(
            &self,
            cluster: &str,
            _authority: &str,
            path: &str,
            body: &[u8],
            _timeout_ms: u64,
        ) -> Result<u32, HostError> {
            if *self.call_fails.borrow() {
                return Err(HostError(2));
            }
            let mut c = self.calls.borrow_mut();
            c.push((cluster.into(), path.into(), body.to_vec()));
            Ok(c.len() as u32)
        }
        fn http_call(
            &self,
            cluster: &str,
            headers: &[(String, String)],
            body: &[u8],
            _timeout_ms: u64,
        ) -> Result<u32, HostError> {
            if *self.call_fails.borrow() {
                return Err(HostError(2));
            }
            let path = headers
                .iter()
                .find(|(k, _)| k == ":path")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let mut c = self.calls.borrow_mut();
            c.push((cluster.into(), path, body.to_vec()));
            Ok(c.len() as u32)
        }
        fn http_call_response(&self, _body_size: usize) -> (Option<u16>, Vec<u8>) {
            self.call_response.borrow().clone()
        }
        fn http_call_response_headers(&self) -> Vec<(String, String)> {
            vec![("content-type".into(), "application/json".into())]
        }
        fn resume_request(&self) -> Result<(), HostError> {
            *self.resumed.borrow_mut() += 1;
            Ok(())
        }
        fn now_nanos(&self) -> u64 {
            1_700_000_000_000_000_000
        }
    }

    /// Metrics flushed per request, so assertions see them at once.
    fn plugin(cfg: &str) -> SharedPlugin {
        let mut v: serde_json::Value =
            serde_json::from_str(if cfg.is_empty() { "{}" } else { cfg }).unwrap();
        match v.get_mut("metrics").and_then(|m| m.as_object_mut()) {
            Some(m) => {
                m.insert("flushIntervalMs".into(), 0.into());
            }
            None => v["metrics"] = serde_json::json!({"flushIntervalMs": 0}),
        }
        Rc::new(RefCell::new(Some(Plugin::new(
            Config::from_json(v.to_string().as_bytes()).unwrap(),
            1,
        ))))
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn held_response_gets_headers_and_metrics() {
        let fake = Fake::default();
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        *fake.req_headers.borrow_mut() = h(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("content-length", "60"),
            ("x-tollgate-tenant", "t1"),
        ]);
        *fake.req_body.borrow_mut() = body.to_vec();
        let p = plugin(r#"{"stopOnHeaders": true}"#);
        let mut s = Stream::new(&fake, p.clone(), 7);
        assert_eq!(s.on_request_headers(false), Flow::Pause);
        assert!(
            fake.req_headers
                .borrow()
                .iter()
                .all(|(k, _)| k != "content-length")
        );
        assert_eq!(s.on_request_body(body.len(), true), Flow::Continue);
        let sent: serde_json::Value = serde_json::from_slice(&fake.req_body.borrow()).unwrap();
        assert_eq!(sent["max_completion_tokens"], 4096);
        *fake.resp_headers.borrow_mut() =
            h(&[(":status", "200"), ("content-type", "application/json")]);
        assert_eq!(s.on_response_headers(false), Flow::Pause);
        let resp = br#"{"choices":[{"index":0,"message":{"content":"yo"}}],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#;
        *fake.resp_body.borrow_mut() = resp[..10].to_vec();
        assert_eq!(s.on_response_body(10, false), Flow::Pause);
        *fake.resp_body.borrow_mut() = resp.to_vec();
        assert_eq!(s.on_response_body(resp.len(), true), Flow::Continue);
        let rh = fake.resp_headers.borrow();
        assert!(rh.contains(&("x-tollgate-completion-tokens".into(), "1".into())));
        assert!(rh.contains(&("x-tollgate-prompt-tokens".into(), "9".into())));
        let props = fake.props.borrow();
        assert_eq!(props[0].0, "tollgate");
        assert!(props[0].1.starts_with("tenant=t1 "), "{props:?}");
        let m = fake.metrics.borrow();
        assert!(
            m.contains(&("tollgate_requests_total;tenant=t1;model=gpt-4o".into(), 1)),
            "{m:?}"
        );
        assert!(m.contains(&("tollgate_tokens_in_total;tenant=t1;model=gpt-4o".into(), 9)));
        drop(m);
        s.on_log();
        assert_eq!(
            fake.metrics
                .borrow()
                .iter()
                .filter(|(n, _)| n.starts_with("tollgate_requests_total"))
                .map(|(_, v)| v)
                .sum::<u64>(),
            1,
            "counted once"
        );
    }

    #[test]
    fn without_stop_on_headers_the_glue_never_pauses_headers() {
        let fake = Fake::default();
        *fake.req_headers.borrow_mut() = h(&[(":method", "POST"), (":path", "/v1/messages")]);
        let body = br#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        *fake.req_body.borrow_mut() = body.to_vec();
        let mut s = Stream::new(&fake, plugin(""), 1);
        assert_eq!(s.on_request_headers(false), Flow::Continue);
        assert_eq!(s.on_request_body(5, false), Flow::Pause, "body is buffered");
        assert_eq!(s.on_request_body(body.len(), true), Flow::Continue);
        *fake.resp_headers.borrow_mut() =
            h(&[(":status", "200"), ("content-type", "application/json")]);
        assert_eq!(s.on_response_headers(false), Flow::Continue);
        *fake.resp_headers_sent.borrow_mut() = true;
        *fake.resp_body.borrow_mut() = br#"{"content":[{"type":"text","text":"x"}],"usage":{"input_tokens":3,"output_tokens":1}}"#.to_vec();
        let n = fake.resp_body.borrow().len();
        assert_eq!(s.on_response_body(n, true), Flow::Continue);
        let props = fake.props.borrow();
        assert!(props[0].1.contains(" completion_tokens=1 "), "{props:?}");
    }

    #[test]
    fn bad_request_gets_local_reply_and_rejection_metric() {
        let fake = Fake::default();
        *fake.req_headers.borrow_mut() =
            h(&[(":method", "POST"), (":path", "/v1/chat/completions")]);
        *fake.req_body.borrow_mut() = b"{nope".to_vec();
        let mut s = Stream::new(&fake, plugin(""), 1);
        s.on_request_headers(false);
        assert_eq!(s.on_request_body(5, true), Flow::Pause);
        assert_eq!(fake.replies.borrow()[0].status, 400);
        assert!(
            fake.metrics
                .borrow()
                .contains(&("tollgate_rejected_total;reason=invalid_request".into(), 1))
        );
        // The local reply passes back through the filter: nothing more is metered.
        *fake.resp_headers.borrow_mut() =
            h(&[(":status", "400"), ("content-type", "application/json")]);
        assert_eq!(s.on_response_headers(false), Flow::Continue);
        s.on_log();
        assert_eq!(
            fake.metrics
                .borrow()
                .iter()
                .filter(|(n, _)| n.starts_with("tollgate_requests"))
                .count(),
            0
        );
    }

    #[test]
    fn non_llm_traffic_is_untouched_and_counted_as_passthrough() {
        let fake = Fake::default();
        *fake.req_headers.borrow_mut() = h(&[
            (":method", "GET"),
            (":path", "/v1/models"),
            ("content-length", "0"),
        ]);
        let mut s = Stream::new(&fake, plugin(""), 1);
        assert_eq!(s.on_request_headers(true), Flow::Continue);
        assert_eq!(fake.req_headers.borrow().len(), 3);
        assert_eq!(s.on_response_headers(false), Flow::Continue);
        assert_eq!(s.on_response_body(0, true), Flow::Continue);
        assert!(
            fake.metrics
                .borrow()
                .contains(&("tollgate_passthrough_total;reason=not_llm".into(), 1))
        );
    }

    #[test]
    fn trailers_end_request_and_response_bodies() {
        let fake = Fake::default();
        *fake.req_headers.borrow_mut() =
            h(&[(":method", "POST"), (":path", "/v1/chat/completions")]);
        let body =
            br#"{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
        *fake.req_body.borrow_mut() = body.to_vec();
        let mut s = Stream::new(&fake, plugin(r#"{"stopOnHeaders": true}"#), 3);
        assert_eq!(s.on_request_headers(false), Flow::Pause);
        assert_eq!(s.on_request_body(body.len(), false), Flow::Pause);
        assert_eq!(
            s.on_request_trailers(),
            Flow::Continue,
            "trailers release the request"
        );
        assert_eq!(s.on_request_trailers(), Flow::Continue, "idempotent");
        *fake.resp_headers.borrow_mut() =
            h(&[(":status", "200"), ("content-type", "application/json")]);
        assert_eq!(s.on_response_headers(false), Flow::Pause);
        *fake.resp_body.borrow_mut() =
            br#"{"usage":{"prompt_tokens":4,"completion_tokens":2}}"#.to_vec();
        let n = fake.resp_body.borrow().len();
        assert_eq!(s.on_response_body(n, false), Flow::Pause);
        assert_eq!(s.on_response_trailers(), Flow::Continue);
        assert!(
            fake.resp_headers
                .borrow()
                .contains(&("x-tollgate-completion-tokens".into(), "2".into()))
        );
    }

    const CACHED: &str = r#"{"stopOnHeaders": true, "cache": {"cluster": "tollgate_cache", "settleBatch": 2, "settleQueue": 3}}"#;

    fn admit_response(outcome: &str, text: Option<&str>) -> Vec<u8> {
        let entry = text.map(|t| serde_json::json!({"entry_id": "1", "model": "gpt-4o", "text": t, "finish_reason": "stop",
            "usage": {"input_tokens": 9, "cache_read_tokens": 0, "cache_write_tokens": 0, "output_tokens": 1, "reasoning_tokens": 0},
            "created_at": 1}));
        serde_json::to_vec(
            &serde_json::json!({"cache": {"outcome": outcome, "entry": entry, "store": true}}),
        )
        .unwrap()
    }

    fn start<'a>(fake: &'a Fake, p: &SharedPlugin) -> Stream<&'a Fake> {
        *fake.req_headers.borrow_mut() =
            h(&[(":method", "POST"), (":path", "/v1/chat/completions")]);
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        *fake.req_body.borrow_mut() = body.to_vec();
        let mut s = Stream::new(fake, p.clone(), 5);
        s.on_request_headers(false);
        assert_eq!(
            s.on_request_body(body.len(), true),
            Flow::Pause,
            "waits for admit"
        );
        s
    }

    #[test]
    fn budget_downgrade_rewrites_the_paused_body_and_principal_names_the_user() {
        let fake = Fake::default();
        *fake.principal.borrow_mut() = Some("spiffe://cluster.local/ns/a/sa/web".into());
        let p = plugin(
            r#"{"stopOnHeaders": true, "cache": {"cluster": "tollgate_cache"},
                "tenant": {"userSources": ["principal"]}, "budgets": {}}"#,
        );
        // A client cannot smuggle its own principal in.
        *fake.req_headers.borrow_mut() = h(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (PRINCIPAL_PSEUDO_HEADER, "spoofed"),
        ]);
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        *fake.req_body.borrow_mut() = body.to_vec();
        let mut s = Stream::new(&fake, p.clone(), 5);
        s.on_request_headers(false);
        assert_eq!(s.on_request_body(body.len(), true), Flow::Pause);
        let call: serde_json::Value = serde_json::from_slice(&fake.calls.borrow()[0].2).unwrap();
        assert_eq!(
            call["identity"]["user"],
            "spiffe://cluster.local/ns/a/sa/web"
        );
        assert!(call["budget"]["max_cost_pico"].as_u64().unwrap() > 0);
        *fake.call_response.borrow_mut() = (
            Some(200),
            serde_json::to_vec(&serde_json::json!({
                "cache": {"outcome": "miss"},
                "budget": {"verdict": "downgrade", "downgrade_model": "gpt-4o-mini", "reservation_id": "r1"}
            }))
            .unwrap(),
        );
        s.on_admit_response(1, 10);
        assert_eq!(*fake.resumed.borrow(), 1);
        let sent: serde_json::Value = serde_json::from_slice(&fake.req_body.borrow()).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini");
    }

    #[test]
    fn cache_hit_is_answered_from_the_call_out() {
        let fake = Fake::default();
        let p = plugin(CACHED);
        let mut s = start(&fake, &p);
        let (cluster, path, call) = fake.calls.borrow()[0].clone();
        assert_eq!(
            (cluster.as_str(), path.as_str()),
            ("tollgate_cache", "/v1/admit")
        );
        let call: serde_json::Value = serde_json::from_slice(&call).unwrap();
        assert_eq!(call["cache"]["query"], "hi");
        *fake.call_response.borrow_mut() = (Some(200), admit_response("hit_exact", Some("hello")));
        s.on_admit_response(1, 10);
        let r = fake.replies.borrow()[0].clone();
        assert!(
            r.headers
                .contains(&("x-tollgate-cache".into(), "hit-exact".into()))
        );
        assert_eq!(*fake.resumed.borrow(), 0, "a hit is not sent upstream");
        assert!(fake.metrics.borrow().iter().any(|(n, v)| {
            n.contains("tollgate_cache_requests_total") && n.contains("cache=hit-exact") && *v == 1
        }));
        assert_eq!(
            p.borrow().as_ref().unwrap().settle_backlog(),
            1,
            "hits are settled too"
        );
    }

    #[test]
    fn miss_resumes_and_settles_are_batched_retried_and_bounded() {
        let fake = Fake::default();
        let p = plugin(CACHED);
        for i in 0..4 {
            let mut s = start(&fake, &p);
            *fake.call_response.borrow_mut() = (Some(200), admit_response("miss", None));
            s.on_admit_response(fake.calls.borrow().len() as u32, 10);
            assert_eq!(*fake.resumed.borrow(), i + 1);
            *fake.resp_headers.borrow_mut() =
                h(&[(":status", "200"), ("content-type", "application/json")]);
            s.on_response_headers(true);
        }
        // Queue limit 3: one dropped.
        let mut pl = p.borrow_mut();
        let pl = pl.as_mut().unwrap();
        assert_eq!(pl.settle_backlog(), 3);
        let before = fake.calls.borrow().len();
        pl.send_settles(&&fake);
        pl.flush_metrics(&&fake);
        assert!(
            fake.metrics
                .borrow()
                .iter()
                .any(|(n, v)| n == "tollgate_settle_dropped_total" && *v == 1)
        );
        let (_, path, body) = fake.calls.borrow()[before].clone();
        assert_eq!(path, "/v1/settle");
        let batch: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            batch["records"].as_array().unwrap().len(),
            2,
            "batches of settleBatch"
        );
        pl.send_settles(&&fake);
        assert_eq!(
            fake.calls.borrow().len(),
            before + 1,
            "one batch in flight at a time"
        );
        // The service fails: the batch goes back to the queue and is retried.
        let token = fake.calls.borrow().len() as u32;
        pl.settle_done(&&fake, token, Some(503));
        assert_eq!(pl.settle_backlog(), 3);
        pl.send_settles(&&fake);
        let token = fake.calls.borrow().len() as u32;
        pl.settle_done(&&fake, token, Some(200));
        assert_eq!(pl.settle_backlog(), 1);
    }

    #[test]
    fn call_out_failure_sends_the_request_upstream() {
        let fake = Fake::default();
        *fake.call_fails.borrow_mut() = true;
        *fake.req_headers.borrow_mut() =
            h(&[(":method", "POST"), (":path", "/v1/chat/completions")]);
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        *fake.req_body.borrow_mut() = body.to_vec();
        let mut s = Stream::new(&fake, plugin(CACHED), 5);
        s.on_request_headers(false);
        assert_eq!(s.on_request_body(body.len(), true), Flow::Continue);
        *fake.resp_headers.borrow_mut() =
            h(&[(":status", "200"), ("content-type", "application/json")]);
        s.on_response_headers(false);
        assert!(
            fake.resp_headers
                .borrow()
                .contains(&("x-tollgate-cache".into(), "error".into()))
        );
    }

    #[test]
    fn unconfigured_plugin_is_a_no_op() {
        let fake = Fake::default();
        let mut s = Stream::new(&fake, Rc::new(RefCell::new(None)), 1);
        assert_eq!(s.on_request_headers(false), Flow::Continue);
        assert_eq!(s.on_request_body(1, true), Flow::Continue);
    }

    #[test]
    fn a_failed_upstream_is_retried_by_call_out_and_answered_locally() {
        let fake = Fake::default();
        *fake.req_headers.borrow_mut() = h(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "llm"),
        ]);
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        *fake.req_body.borrow_mut() = body.to_vec();
        let p = plugin(
            r#"{"routing": {"rules": [{"name": "r", "match": {"models": ["gpt-4o-mini"]},
                "fallbacks": [{"model": "gpt-4o", "cluster": "backup"}, {"model": "gpt-4.1"}]}]}}"#,
        );
        let mut s = Stream::new(&fake, p, 9);
        s.on_request_headers(false);
        assert_eq!(s.on_request_body(body.len(), true), Flow::Continue);
        *fake.resp_headers.borrow_mut() =
            h(&[(":status", "503"), ("content-type", "application/json")]);
        assert_eq!(s.on_response_headers(false), Flow::Pause);
        assert_eq!(
            s.on_response_body(10, true),
            Flow::Pause,
            "the failed body is held back"
        );
        {
            let calls = fake.calls.borrow();
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].0, "backup");
            assert_eq!(calls[0].1, "/v1/chat/completions");
            assert!(String::from_utf8_lossy(&calls[0].2).contains(r#""model":"gpt-4o""#));
        }
        // The fallback's answer becomes the client's response.
        *fake.call_response.borrow_mut() = (
            Some(200),
            br#"{"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"yo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1}}"#.to_vec(),
        );
        s.on_http_call_response(1, 100);
        let replies = fake.replies.borrow();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].status, 200);
        assert!(
            replies[0]
                .headers
                .contains(&("x-tollgate-model".into(), "gpt-4o".into()))
        );
        assert!(
            fake.metrics.borrow().contains(&(
                "tollgate_fallbacks_total;tenant=anonymous;model=gpt-4o-mini;reason=5xx".into(),
                1
            )),
            "{:?}",
            fake.metrics.borrow()
        );
        // The second target has no cluster and the fake knows no current cluster: a failed
        // attempt, so a failing call-out ends in the client's error rather than a hang.
        drop(replies);
        let fake2 = Fake::default();
        *fake2.req_headers.borrow_mut() = fake.req_headers.borrow().clone();
        *fake2.req_body.borrow_mut() = body.to_vec();
        *fake2.call_fails.borrow_mut() = true;
        let p = plugin(
            r#"{"routing": {"rules": [{"name": "r", "match": {"models": ["gpt-4o-mini"]},
                "fallbacks": [{"model": "gpt-4o", "cluster": "backup"}]}]}}"#,
        );
        let mut s = Stream::new(&fake2, p, 10);
        s.on_request_headers(false);
        s.on_request_body(body.len(), true);
        *fake2.resp_headers.borrow_mut() =
            h(&[(":status", "429"), ("content-type", "application/json")]);
        assert_eq!(s.on_response_headers(false), Flow::Pause);
        assert_eq!(fake2.replies.borrow()[0].status, 504);
    }

    #[test]
    fn access_log_properties_are_one_line_fields_or_off() {
        for (cfg, expect_props) in [
            ("", 1),
            (r#"{"metrics": {"accessLogFormat": "fields"}}"#, 10),
            (r#"{"metrics": {"accessLog": false}}"#, 0),
        ] {
            let fake = Fake::default();
            *fake.req_headers.borrow_mut() =
                h(&[(":method", "POST"), (":path", "/v1/chat/completions")]);
            let body =
                br#"{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
            *fake.req_body.borrow_mut() = body.to_vec();
            let mut s = Stream::new(&fake, plugin(cfg), 4);
            s.on_request_headers(false);
            s.on_request_body(body.len(), true);
            *fake.resp_headers.borrow_mut() =
                h(&[(":status", "200"), ("content-type", "application/json")]);
            s.on_response_headers(false);
            *fake.resp_body.borrow_mut() =
                br#"{"usage":{"prompt_tokens":4,"completion_tokens":2}}"#.to_vec();
            let n = fake.resp_body.borrow().len();
            s.on_response_body(n, true);
            s.on_log();
            let props = fake.props.borrow();
            assert_eq!(props.len(), expect_props, "{cfg}: {props:?}");
            if expect_props == 1 {
                assert_eq!(props[0].0, "tollgate");
                assert!(props[0].1.contains(" model=gpt-4o "), "{props:?}");
            } else if expect_props == 10 {
                assert!(props.contains(&("tollgate.model".into(), "gpt-4o".into())));
            }
            assert!(
                fake.metrics
                    .borrow()
                    .iter()
                    .any(|(k, v)| k.starts_with("tollgate_requests_total") && *v == 1),
                "metrics are kept either way"
            );
        }
    }
}
