//! Operator CLI: subcommands of the service binary that talk to a running service's admin API
//! (`budgets`, `spend`, `cache`). Plain HTTP (the API listens on loopback or inside the cluster).
//!
//! Non-2xx answers print the API's `{"error":{"message"}}` to stderr and exit with status 1; an
//! unreachable service names the URL it tried.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

/// Where the service is and how to authenticate (every operator subcommand).
#[derive(Clone, Debug, Args)]
pub struct Conn {
    /// Base URL of the running cache service.
    #[arg(
        long,
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:8090",
        global = true
    )]
    pub url: String,
    /// Bearer token of the admin API.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
}

/// `budgets list|set|delete|usage`
#[derive(Clone, Debug, Args)]
pub struct BudgetsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: BudgetsCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum BudgetsCommand {
    /// List budget definitions.
    List {
        #[arg(long, value_enum, default_value_t = Output::Table)]
        format: Output,
    },
    /// Create or replace a budget (`PUT /v1/budgets/{id}`).
    Set(BudgetSet),
    /// Delete a budget.
    Delete { id: String },
    /// Current windows: limits, spent, reserved, remaining.
    Usage {
        /// Only this scope, e.g. `team:search`.
        #[arg(long)]
        scope: Option<String>,
        /// Only this budget.
        #[arg(long)]
        budget_id: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        format: Output,
    },
}

#[derive(Clone, Debug, Args)]
pub struct BudgetSet {
    pub id: String,
    /// `org`, `team`, `user` or `key`.
    #[arg(long)]
    pub scope: String,
    /// One member id (`search`) or `*` (each member separately).
    #[arg(long)]
    pub target: String,
    /// `minute`, `hour`, `day` or `month`.
    #[arg(long)]
    pub period: String,
    #[arg(long)]
    pub limit_usd: Option<f64>,
    #[arg(long)]
    pub limit_input_tokens: Option<u64>,
    #[arg(long)]
    pub limit_output_tokens: Option<u64>,
    /// Input plus output tokens.
    #[arg(long)]
    pub limit_tokens: Option<u64>,
    /// E.g. 0.8 (with --downgrade-to).
    #[arg(long)]
    pub soft_fraction: Option<f64>,
    /// Model used above the soft fraction.
    #[arg(long)]
    pub downgrade_to: Option<String>,
    #[arg(long)]
    pub reset_hour_utc: Option<u8>,
    #[arg(long)]
    pub reset_day_of_month: Option<u8>,
}

/// `spend`: the ledger summed and grouped (`GET /v1/spend`).
#[derive(Clone, Debug, Args)]
pub struct SpendArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// `YYYY-MM-DD`, RFC 3339 time or unix ms (default: start of this month).
    #[arg(long)]
    pub from: Option<String>,
    /// Exclusive end; a date includes that whole day.
    #[arg(long)]
    pub to: Option<String>,
    /// Comma-separated: org, team, user, key, model, day.
    #[arg(long)]
    pub group_by: Option<String>,
    #[arg(long)]
    pub org: Option<String>,
    #[arg(long)]
    pub team: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    /// The model used.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, value_enum, default_value_t = SpendFormat::Table)]
    pub format: SpendFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpendFormat {
    Table,
    Csv,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `cache invalidate|warm|stats`
#[derive(Clone, Debug, Args)]
pub struct CacheArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove entries (no filter: everything).
    Invalidate {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        model: Option<String>,
    },
    /// Load question/answer pairs from a JSONL file.
    Warm { file: PathBuf },
    /// Entry count.
    Stats,
}

/// Runs `budgets …`; on failure prints the error to stderr and exits with status 1.
pub async fn budgets(args: BudgetsArgs) -> Result<(), String> {
    finish(run_budgets(args).await)
}

/// Runs `spend`; on failure prints the error to stderr and exits with status 1.
pub async fn spend(args: SpendArgs) -> Result<(), String> {
    finish(run_spend(args).await)
}

/// Runs `cache …`; on failure prints the error to stderr and exits with status 1.
pub async fn cache(args: CacheArgs) -> Result<(), String> {
    finish(run_cache(args).await)
}

/// Keeps operator errors off the service's log output: plain message on stderr, exit 1.
fn finish(r: Result<(), String>) -> Result<(), String> {
    use std::io::Write;
    if let Err(e) = r {
        let _ = std::io::stdout().flush();
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    Ok(())
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// A 2xx answer: its body.
struct Reply {
    body: String,
}

impl Reply {
    fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body)
            .map_err(|e| format!("the service answered something that is not JSON ({e})"))
    }
}

impl Client {
    fn new(conn: &Conn) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let base = conn.url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(format!("--url {base:?}: expected http://host:port"));
        }
        Ok(Client {
            http,
            base,
            token: conn.admin_token.clone().filter(|t| !t.is_empty()),
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(String, &str)>,
    ) -> Result<Reply, String> {
        let mut url = format!("{}{path}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{k}={}", enc(v)));
        }
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some((b, ct)) = body {
            req = req.header("content-type", ct).body(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| format!("reading the answer from {}: {e}", self.base))?;
        if status.is_success() {
            Ok(Reply { body })
        } else {
            Err(api_error(status.as_u16(), &body))
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> String {
        if e.is_connect() {
            format!(
                "cannot connect to the Tollgate service at {} (is it running? set --url or \
                 TOLLGATE_URL): {}",
                self.base,
                root_cause(e)
            )
        } else if e.is_timeout() {
            format!(
                "the Tollgate service at {} did not answer in time",
                self.base
            )
        } else {
            format!("request to {} failed: {}", self.base, root_cause(e))
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Reply, String> {
        self.send(reqwest::Method::GET, path, query, None).await
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The message of a non-2xx answer: the API's `{"error":{"message"}}`, warm's per-line
/// errors, or the raw body.
fn api_error(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
        return format!("{m} (HTTP {status})");
    }
    if let Some(errors) = v.get("errors").and_then(Value::as_array) {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "line {}: {}",
                    e.get("line").unwrap_or(&Value::Null),
                    e.get("error").and_then(Value::as_str).unwrap_or("?")
                )
            })
            .collect();
        let warmed = v.get("warmed").and_then(Value::as_u64).unwrap_or(0);
        return format!(
            "{} line(s) rejected, {warmed} warmed (HTTP {status}):\n  {}",
            lines.len(),
            lines.join("\n  ")
        );
    }
    let body = body.trim();
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    }
}

fn enc(s: &str) -> String {
    // Path segment or query value: keep unreserved characters, percent-encode the rest.
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn run_budgets(args: BudgetsArgs) -> Result<(), String> {
    let c = Client::new(&args.conn)?;
    match args.command {
        BudgetsCommand::List { format } => {
            let v = c.get("/v1/budgets", &[]).await?.json()?;
            match format {
                Output::Json => print_json(&v),
                Output::Table => print!("{}", budgets_table(&v)),
            }
        }
        BudgetsCommand::Set(s) => {
            let body = budget_body(&s);
            let v = c
                .send(
                    reqwest::Method::PUT,
                    &format!("/v1/budgets/{}", enc(&s.id)),
                    &[],
                    Some((body.to_string(), "application/json")),
                )
                .await?
                .json()?;
            println!("budget {} saved", s.id);
            print_json(&v);
        }
        BudgetsCommand::Delete { id } => {
            c.send(
                reqwest::Method::DELETE,
                &format!("/v1/budgets/{}", enc(&id)),
                &[],
                None,
            )
            .await?;
            println!("budget {id} deleted");
        }
        BudgetsCommand::Usage {
            scope,
            budget_id,
            format,
        } => {
            let mut q = Vec::new();
            if let Some(s) = scope {
                q.push(("scope", s));
            }
            if let Some(b) = budget_id {
                q.push(("budget_id", b));
            }
            let v = c.get("/v1/budgets/usage", &q).await?.json()?;
            match format {
                Output::Json => print_json(&v),
                Output::Table => print!("{}", usage_table(&v)),
            }
        }
    }
    Ok(())
}

/// The `PUT /v1/budgets/{id}` body (camelCase, only the given fields).
pub fn budget_body(s: &BudgetSet) -> Value {
    let mut m = Map::new();
    m.insert("scope".into(), json!(s.scope));
    m.insert("target".into(), json!(s.target));
    m.insert("period".into(), json!(s.period));
    let mut opt = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    opt("limitUsd", s.limit_usd.map(|x| json!(x)));
    opt("limitInputTokens", s.limit_input_tokens.map(|x| json!(x)));
    opt("limitOutputTokens", s.limit_output_tokens.map(|x| json!(x)));
    opt("limitTokens", s.limit_tokens.map(|x| json!(x)));
    opt("softFraction", s.soft_fraction.map(|x| json!(x)));
    opt("downgradeTo", s.downgrade_to.as_ref().map(|x| json!(x)));
    opt("resetHourUtc", s.reset_hour_utc.map(|x| json!(x)));
    opt("resetDayOfMonth", s.reset_day_of_month.map(|x| json!(x)));
    Value::Object(m)
}

async fn run_spend(args: SpendArgs) -> Result<(), String> {
    let c = Client::new(&args.conn)?;
    let mut q: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("from", &args.from),
        ("to", &args.to),
        ("group_by", &args.group_by),
        ("org", &args.org),
        ("team", &args.team),
        ("user", &args.user),
        ("key", &args.key),
        ("model", &args.model),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    match args.format {
        SpendFormat::Csv => {
            q.push(("format", "csv".into()));
            print!("{}", c.get("/v1/spend", &q).await?.body);
        }
        SpendFormat::Json => {
            q.push(("format", "json".into()));
            let r = c.get("/v1/spend", &q).await?;
            print!("{}", r.body);
            if !r.body.ends_with('\n') {
                println!();
            }
        }
        SpendFormat::Table => {
            q.push(("format", "json".into()));
            let v = c.get("/v1/spend", &q).await?.json()?;
            print!("{}", spend_table(&v));
        }
    }
    Ok(())
}

async fn run_cache(args: CacheArgs) -> Result<(), String> {
    let c = Client::new(&args.conn)?;
    match args.command {
        CacheCommand::Invalidate { tenant, model } => {
            let mut body = Map::new();
            if let Some(t) = tenant {
                body.insert("tenant".into(), json!(t));
            }
            if let Some(m) = model {
                body.insert("model".into(), json!(m));
            }
            let v = c
                .send(
                    reqwest::Method::POST,
                    "/v1/cache/invalidate",
                    &[],
                    Some((Value::Object(body).to_string(), "application/json")),
                )
                .await?
                .json()?;
            let n = v.get("invalidated").and_then(Value::as_u64).unwrap_or(0);
            println!("invalidated {n} entries");
        }
        CacheCommand::Warm { file } => {
            let body = std::fs::read_to_string(&file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            let v = c
                .send(
                    reqwest::Method::POST,
                    "/v1/cache/warm",
                    &[],
                    Some((body, "application/x-ndjson")),
                )
                .await?
                .json()?;
            let n = v.get("warmed").and_then(Value::as_u64).unwrap_or(0);
            println!("warmed {n} entries");
        }
        CacheCommand::Stats => {
            let v = c.get("/v1/cache/stats", &[]).await?.json()?;
            let rows: Vec<Vec<String>> = v
                .as_object()
                .map(|o| o.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect())
                .unwrap_or_default();
            print!("{}", table(&["stat", "value"], &rows));
        }
    }
    Ok(())
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn usd(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.4}"))
}

fn pico_usd(v: &Value) -> Option<f64> {
    v.as_f64().map(|p| p / 1e12)
}

/// Renders rows under a header with aligned columns (numbers right-aligned).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(i).is_some_and(|c| {
                        c == "-" || c.trim_start_matches('$').parse::<f64>().is_ok()
                    })
                })
        })
        .collect();
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths.get(i).copied().unwrap_or(0);
                if numeric.get(i).copied().unwrap_or(false) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let mut s = parts.join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// `GET /v1/budgets` as a table.
pub fn budgets_table(v: &Value) -> String {
    let empty = Vec::new();
    let defs = v.get("budgets").and_then(Value::as_array).unwrap_or(&empty);
    let rows: Vec<Vec<String>> = defs
        .iter()
        .map(|d| {
            let g = |k: &str| cell(d.get(k).unwrap_or(&Value::Null));
            let soft = match (d.get("softFraction"), d.get("downgradeTo")) {
                (Some(f), Some(m)) => format!("{} -> {}", cell(f), cell(m)),
                _ => "-".into(),
            };
            vec![
                g("id"),
                format!("{}:{}", g("scope"), g("target")),
                g("period"),
                usd(d.get("limitUsd").and_then(Value::as_f64)),
                g("limitInputTokens"),
                g("limitOutputTokens"),
                g("limitTokens"),
                soft,
            ]
        })
        .collect();
    table(
        &[
            "id",
            "scope",
            "period",
            "limit_usd",
            "limit_in",
            "limit_out",
            "limit_tokens",
            "soft",
        ],
        &rows,
    )
}

/// `GET /v1/budgets/usage` as a table.
pub fn usage_table(v: &Value) -> String {
    let empty = Vec::new();
    let rows_in = v.get("usage").and_then(Value::as_array).unwrap_or(&empty);
    let rows: Vec<Vec<String>> = rows_in
        .iter()
        .map(|u| {
            let p = |ptr: &str| u.pointer(ptr).unwrap_or(&Value::Null);
            let window = |ptr: &str| {
                p(ptr)
                    .as_u64()
                    .map_or_else(|| "-".into(), crate::ledger::time::format_rfc3339)
            };
            let tokens = |ptr: &str| {
                let spent = p(&format!("/spent/{ptr}")).as_u64().unwrap_or(0);
                let reserved = p(&format!("/reserved/{ptr}")).as_u64().unwrap_or(0);
                (spent + reserved).to_string()
            };
            vec![
                cell(p("/budgetId")),
                cell(p("/scope")),
                cell(p("/period")),
                window("/windowStartMs"),
                window("/windowEndMs"),
                usd(pico_usd(p("/limits/usdPico"))),
                usd(pico_usd(p("/spent/costPico"))),
                usd(pico_usd(p("/reserved/costPico"))),
                usd(pico_usd(p("/remainingPico"))),
                tokens("inputTokens"),
                tokens("outputTokens"),
            ]
        })
        .collect();
    table(
        &[
            "budget",
            "scope",
            "period",
            "window_start",
            "window_end",
            "limit_usd",
            "spent_usd",
            "reserved_usd",
            "remaining_usd",
            "tokens_in",
            "tokens_out",
        ],
        &rows,
    )
}

/// A `GET /v1/spend` JSON report as a table: one column per `group_by` dimension, the sums,
/// and a total line.
pub fn spend_table(v: &Value) -> String {
    let empty = Vec::new();
    let group_by: Vec<String> = v
        .get("group_by")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
        .iter()
        .map(cell)
        .collect();
    let sums = |r: &Value| {
        let n = |k: &str| cell(r.get(k).unwrap_or(&Value::Null));
        vec![
            n("requests"),
            n("tokens_in"),
            n("tokens_out"),
            n("tokens_cached"),
            usd(r.get("cost_usd").and_then(Value::as_f64)),
            usd(r.get("saved_usd").and_then(Value::as_f64)),
            n("cache_hits"),
        ]
    };
    let mut rows: Vec<Vec<String>> = v
        .get("rows")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
        .iter()
        .map(|r| {
            let mut cells: Vec<String> = group_by
                .iter()
                .map(|g| cell(r.pointer(&format!("/group/{g}")).unwrap_or(&Value::Null)))
                .collect();
            cells.extend(sums(r));
            cells
        })
        .collect();
    if let Some(t) = v.get("totals")
        && !group_by.is_empty()
    {
        let mut cells = vec![String::new(); group_by.len()];
        if let Some(first) = cells.first_mut() {
            *first = "TOTAL".into();
        }
        cells.extend(sums(t));
        rows.push(cells);
    }
    let mut header: Vec<&str> = group_by.iter().map(String::as_str).collect();
    header.extend([
        "requests",
        "tokens_in",
        "tokens_out",
        "tokens_cached",
        "cost_usd",
        "saved_usd",
        "cache_hits",
    ]);
    let mut out = format!(
        "spend {} .. {}\n",
        cell(v.get("from").unwrap_or(&Value::Null)),
        cell(v.get("to").unwrap_or(&Value::Null))
    );
    out.push_str(&table(&header, &rows));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn table_aligns_columns_and_right_aligns_numbers() {
        let t = table(
            &["team", "cost"],
            &[
                vec!["search".into(), "1.5000".into()],
                vec!["a".into(), "12.0000".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines,
            ["TEAM       COST", "search   1.5000", "a       12.0000"]
        );
    }

    #[test]
    fn api_errors_show_the_message() {
        assert_eq!(
            api_error(401, r#"{"error":{"message":"unauthorized","status":401}}"#),
            "unauthorized (HTTP 401)"
        );
        assert_eq!(api_error(502, ""), "HTTP 502");
        assert!(
            api_error(400, r#"{"warmed":1,"errors":[{"line":2,"error":"bad"}]}"#)
                .contains("line 2: bad")
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
