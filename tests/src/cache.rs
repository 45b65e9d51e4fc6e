//! The real cache service (the `tollgate-cache-service` library: store, ONNX embedder, engine,
//! HTTP API) served on a free loopback port from its own thread and tokio runtime, so tests can
//! stop it (outage), restart it on the same data (durability) or run several replicas.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tollgate_cache_service::AppState;
use tollgate_cache_service::service::{self, ServeArgs};

/// How to start the service.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Embedded store directory (kept across restarts; removed by [`CacheService`]'s drop only
    /// if it created it).
    pub data_dir: Option<PathBuf>,
    /// Use Redis instead of the embedded store.
    pub redis_url: Option<String>,
    /// The service's JSON config file contents (`{"cache": {...}}`).
    pub config: Value,
    /// Listen on this address (default: a free port).
    pub listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            data_dir: None,
            redis_url: None,
            // Paraphrases on: the end-to-end tests exercise the guards on near-misses (the
            // service's default, repeats only, has its own test).
            config: serde_json::json!({"cache": {"semantic": {"match": "paraphrases"}}}),
            listen: None,
            admin_token: Some("test-admin-token".into()),
        }
    }
}

/// A running cache service; stopped (gracefully) on drop.
pub struct CacheService {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub state: Arc<AppState>,
    pub admin_token: Option<String>,
    own_dir: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("tollgate-cache-{}-{nanos}", std::process::id()))
}

impl CacheService {
    /// Starts the service and returns once it listens with its index rebuilt and model loaded.
    pub fn start(opts: &CacheOptions) -> Result<CacheService, String> {
        let own_dir = opts.data_dir.is_none();
        let data_dir = opts.data_dir.clone().unwrap_or_else(temp_dir);
        std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        let config_path = data_dir.join("service-config.json");
        std::fs::write(&config_path, opts.config.to_string()).map_err(|e| e.to_string())?;
        let args = ServeArgs {
            listen: opts
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir: data_dir.clone(),
            redis_url: opts.redis_url.clone(),
            redis_namespace: "tollgate".into(),
            config: Some(config_path),
            admin_token: opts.admin_token.clone(),
            model_dir: None,
            ort_dylib: None,
            embed_threads: 2,
            embed_batch_window_ms: 0,
            device: "cpu".into(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cache-service".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let state = match service::build(&args).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let listener = match tokio::net::TcpListener::bind(args.listen).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("bind {}: {e}", args.listen)));
                            return;
                        }
                    };
                    let addr = match listener.local_addr() {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok((addr, state.clone())));
                    let _ = tollgate_cache_service::run(listener, state, async move {
                        let _ = stop_rx.await;
                    })
                    .await;
                });
            })
            .map_err(|e| e.to_string())?;
        let (addr, state) = ready_rx
            .recv()
            .map_err(|_| "cache service thread exited".to_string())??;
        Ok(CacheService {
            addr,
            data_dir,
            state,
            admin_token: opts.admin_token.clone(),
            own_dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the service (in-flight requests drain) and releases its store.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Prometheus text of the service's `/metrics`.
    pub fn metrics(&self) -> String {
        self.state.metrics.render()
    }
}

impl Drop for CacheService {
    fn drop(&mut self) {
        self.stop();
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
