//! The cost dashboard: `GET /dashboard`, one server-rendered HTML page with inline SVG charts
//! (no JavaScript, nothing fetched at run time).
//!
//! - Access: the admin token as `authorization: Bearer <token>` or `?token=<token>` (so a browser
//!   can open it); 401 otherwise, 403 when the admin API is disabled.
//! - Range: the last `?days=` UTC days including today (default 30, at most 400).
//! - Figures: one pass over the ledger feeding the same [`Aggregator`] that answers
//!   `GET /v1/spend` (one per grouping), so every number equals `/v1/spend` for the same range
//!   (`from`/`to` are on the page as `data-from-ms`/`data-to-ms`). Every figure carries
//!   `data-metric`, `data-key` and `data-value`: money as `/v1/spend` serialises `cost_usd`,
//!   plus `data-pico` with the exact integer.
//! - Cache savings are the ledger's `saved_pico` of cache hits; routing savings are not recorded
//!   per request, so routed requests (`route` = `rule:*` or `downgrade:*`) are counted with the
//!   requested and used models and the cost they were charged.
//! - Rejections: the filter's rejections are Envoy stats; the page shows what the service saw
//!   (`tollgate_budget_admits_total` by verdict, `tollgate_budget_errors_total`) and says so.
//!
//! Every name shown (team, user, model, budget, scope) comes from request headers or the admin
//! API and is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::budget::{UsageFilter, UsageReport};
use crate::ledger::query::Aggregator;
use crate::ledger::{
    GroupBy, Ledger, LedgerError, Position, QUERY_PAGE, ScanFrom, SpendFilter, SpendQuery,
    SpendReport, SpendRow, TimeRange, time,
};

const MS_PER_DAY: u64 = 86_400_000;
/// Default and largest `?days=`.
pub const DEFAULT_DAYS: u64 = 30;
pub const MAX_DAYS: u64 = 400;
/// Series drawn separately in a stacked chart; the rest is summed as "other".
const MAX_SERIES: usize = 8;
/// Rows of the top-spender tables.
const TOP: usize = 10;
const PALETTE: [&str; 9] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f",
];

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// USD for display, rounded half-up from exact pico-USD: cents from one cent up (and for 0),
/// else six decimals (`$0.000123`).
pub fn display_usd(pico: u128) -> String {
    const PICO: u128 = 1_000_000_000_000;
    if pico == 0 {
        return "$0.00".into();
    }
    let (scale, digits) = if pico >= PICO / 100 {
        (PICO / 100, 2)
    } else {
        (PICO / 1_000_000, 6)
    };
    let units = (pico + scale / 2) / scale;
    let per = 10u128.pow(digits);
    format!(
        "${}.{:0width$}",
        units / per,
        units % per,
        width = digits as usize
    )
}

/// A USD figure exactly as `/v1/spend` serialises `cost_usd` (serde_json's float text).
pub fn json_usd(pico: u128) -> String {
    serde_json::Value::from(crate::ledger::query::pico_to_usd(pico)).to_string()
}

fn usd_attrs(pico: u128) -> String {
    format!("data-value=\"{}\" data-pico=\"{pico}\"", json_usd(pico))
}

/// The last `days` UTC days including today's: `[start of the first, start of tomorrow)`.
pub fn range_of(now_ms: u64, days: u64) -> TimeRange {
    let tomorrow = (time::day_of(now_ms) + 1) * MS_PER_DAY;
    TimeRange {
        from_ms: tomorrow.saturating_sub(days * MS_PER_DAY),
        to_ms: tomorrow,
    }
}

fn query(range: TimeRange, group_by: Vec<GroupBy>) -> SpendQuery {
    SpendQuery {
        range,
        filter: SpendFilter::default(),
        group_by,
        format: crate::ledger::Format::Json,
        cursor: None,
        limit: None,
    }
}

/// What the page shows from the ledger.
#[derive(Debug)]
pub struct LedgerView {
    pub totals: SpendReport,
    pub by_day: SpendReport,
    pub by_day_team: SpendReport,
    pub by_day_model: SpendReport,
    pub by_team: SpendReport,
    pub by_user: SpendReport,
    pub by_model: SpendReport,
    /// Cache hits by kind (`hit-exact`, `hit-semantic`).
    pub cache_hits: BTreeMap<String, SpendRow>,
    /// Routed requests by (route, requested model, used model).
    pub routed: BTreeMap<(String, String, String), SpendRow>,
    /// Records by HTTP status of the response.
    pub statuses: BTreeMap<u16, u64>,
}

fn is_routed(route: Option<&str>) -> bool {
    route.is_some_and(|r| r.starts_with("rule:") || r.starts_with("downgrade:"))
}

/// Reads the range once, feeding one [`Aggregator`] per grouping (what [`Ledger::query`] does
/// for one), plus the cache and routing breakdowns.
pub async fn read_ledger(ledger: &dyn Ledger, range: TimeRange) -> Result<LedgerView, LedgerError> {
    let groupings = [
        vec![],
        vec![GroupBy::Day],
        vec![GroupBy::Day, GroupBy::Team],
        vec![GroupBy::Day, GroupBy::Model],
        vec![GroupBy::Team],
        vec![GroupBy::User],
        vec![GroupBy::Model],
    ];
    let mut aggs: Vec<Aggregator> = groupings
        .into_iter()
        .map(|g| Aggregator::new(&query(range, g)))
        .collect();
    let mut cache_hits: BTreeMap<String, SpendRow> = BTreeMap::new();
    let mut routed: BTreeMap<(String, String, String), SpendRow> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut from = ScanFrom::At(Position::start_of(range.from_ms));
    loop {
        let page = ledger.scan(from, range.to_ms, QUERY_PAGE).await?;
        let Some(last) = page.last() else { break };
        from = ScanFrom::After(last.position());
        let full = page.len() >= QUERY_PAGE;
        for r in &page {
            for a in &mut aggs {
                a.add(r);
            }
            if !range.contains(r.time_ms) {
                continue;
            }
            *statuses.entry(r.status).or_default() += 1;
            if r.is_cache_hit() {
                cache_hits.entry(r.cache.clone()).or_default().add(r);
            }
            if is_routed(r.route.as_deref()) {
                let key = (
                    r.route.clone().unwrap_or_default(),
                    r.model_requested.clone(),
                    r.model_used.clone(),
                );
                routed.entry(key).or_default().add(r);
            }
        }
        if !full {
            break;
        }
    }
    let mut reports = aggs.into_iter().map(Aggregator::finish);
    let mut next = || {
        reports
            .next()
            .ok_or(LedgerError::Corrupt("dashboard".into()))
    };
    Ok(LedgerView {
        totals: next()?,
        by_day: next()?,
        by_day_team: next()?,
        by_day_model: next()?,
        by_team: next()?,
        by_user: next()?,
        by_model: next()?,
        cache_hits,
        routed,
        statuses,
    })
}

fn authorized(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), StatusCode> {
    let Some(token) = &state.admin_token else {
        return Err(StatusCode::FORBIDDEN);
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query_token)
        .unwrap_or("");
    let ok = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        Ok(())
    } else {
        Err(StatusCode::UNAUTHORIZED)
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            (
                "content-security-policy",
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            ),
        ],
        body,
    )
        .into_response()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html_response(
        status,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tollgate dashboard</title></head>\
             <body><h1>Tollgate dashboard</h1><p class=\"error\">{}</p></body></html>",
            escape(message)
        ),
    )
}

/// `GET /dashboard`.
pub async fn page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let param = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match authorized(&s, &headers, param("token")) {
        Ok(()) => {}
        Err(StatusCode::FORBIDDEN) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "the admin API is disabled: start the service with --admin-token",
            );
        }
        Err(status) => {
            return error_page(
                status,
                "unauthorized: send `authorization: Bearer <admin token>` or open /dashboard?token=<admin token>",
            );
        }
    }
    let days = match param("days").map(str::parse::<u64>) {
        None => DEFAULT_DAYS,
        Some(Ok(d)) if (1..=MAX_DAYS).contains(&d) => d,
        Some(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("`days` must be a number from 1 to {MAX_DAYS}"),
            );
        }
    };
    let now = crate::budget::now_ms();
    let range = range_of(now, days);
    let view = match read_ledger(s.ledger.as_ref(), range).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "dashboard: ledger query failed");
            return error_page(StatusCode::SERVICE_UNAVAILABLE, "ledger unavailable");
        }
    };
    let usage = match s.budgets.usage(&UsageFilter::default(), now).await {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: budget usage failed");
            None
        }
    };
    let verdicts: Vec<(&str, u64)> = ["allow", "downgrade", "reject", "breaker"]
        .into_iter()
        .map(|v| {
            (
                v,
                s.metrics
                    .counter("tollgate_budget_admits_total", &[("verdict", v)]),
            )
        })
        .collect();
    let budget_errors = s.metrics.counter_sum("tollgate_budget_errors_total");
    let prometheus = s.metrics.render();
    let bypasses = by_label(&prometheus, "tollgate_cache_bypass_total", "reason");
    let guard_rejections = by_label(
        &prometheus,
        "tollgate_cache_guard_rejections_total",
        "reason",
    );
    let html = render(&Page {
        now_ms: now,
        range,
        days,
        view: &view,
        usage: usage.as_deref(),
        verdicts: &verdicts,
        budget_errors,
        bypasses: &bypasses,
        guard_rejections: &guard_rejections,
    });
    html_response(StatusCode::OK, html)
}

/// Everything [`render`] draws.
#[derive(Debug)]
pub struct Page<'a> {
    pub now_ms: u64,
    pub range: TimeRange,
    pub days: u64,
    pub view: &'a LedgerView,
    /// `None`: the budget store did not answer.
    pub usage: Option<&'a [UsageReport]>,
    pub verdicts: &'a [(&'a str, u64)],
    pub budget_errors: u64,
    /// `tollgate_cache_bypass_total` by reason.
    pub bypasses: &'a [(String, u64)],
    /// `tollgate_cache_guard_rejections_total` by reason.
    pub guard_rejections: &'a [(String, u64)],
}

/// The values of a counter with one label, from the Prometheus text of [`crate::metrics::Metrics`]
/// (which has no way to list label values): `name{label="v"} n` lines.
pub fn by_label(prometheus: &str, name: &str, label: &str) -> Vec<(String, u64)> {
    let prefix = format!("{name}{{{label}=\"");
    prometheus
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (value, n) = rest.rsplit_once("\"} ")?;
            let value = value.replace("\\\"", "\"").replace("\\\\", "\\");
            Some((value, n.trim().parse().ok()?))
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;background:#fafafa}\
h1{margin:0 0 4px}h2{margin:28px 0 8px;font-size:1.15em}.muted{color:#666;font-size:.9em}\
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}\
.card .v{font-size:1.5em;font-weight:600}.card .l{color:#666;font-size:.85em}\
table{border-collapse:collapse;background:#fff;margin:4px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;font-size:.9em}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.grid{display:flex;flex-wrap:wrap;gap:24px}\
.legend span{display:inline-block;margin-right:12px;font-size:.85em}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}\
.grid>div{max-width:640px}svg{background:#fff;border:1px solid #ddd}.bar{height:10px;background:#eee;width:200px;display:inline-block;vertical-align:middle}\
.bar b{display:block;height:10px;background:#4e79a7}.bar b.over{background:#e15759}";

/// Renders the page.
pub fn render(p: &Page<'_>) -> String {
    let v = p.view;
    let t = &v.totals.totals;
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>Tollgate cost dashboard</title>\
         <style>{STYLE}</style></head><body data-from-ms=\"{}\" data-to-ms=\"{}\">\
         <h1>Tollgate cost dashboard</h1>\
         <div class=\"muted\">Last {} days, {} to {} (UTC, end exclusive) &middot; generated {} &middot; \
         figures equal <code>GET /v1/spend?from={}&amp;to={}</code></div>",
        p.range.from_ms,
        p.range.to_ms,
        p.days,
        time::format_day(time::day_of(p.range.from_ms)),
        time::format_day(time::day_of(p.range.to_ms)),
        time::format_rfc3339(p.now_ms),
        p.range.from_ms,
        p.range.to_ms,
    );

    // Summary cards.
    let cache_saved: u128 = v.cache_hits.values().map(|r| r.saved_pico).sum();
    let routed_requests: u64 = v.routed.values().map(|r| r.requests).sum();
    h.push_str("<div class=\"cards\">");
    card_usd(&mut h, "Spend", "total-cost", t.cost_pico);
    card_count(&mut h, "Requests", "total-requests", t.requests);
    card_count(&mut h, "Cache hits", "total-cache-hits", t.cache_hits);
    let rate = percent(t.cache_hits, t.requests);
    let _ = write!(
        h,
        "<div class=\"card\"><div class=\"v\" data-metric=\"cache-hit-rate\" data-value=\"{rate:.1}\">{rate:.1}%</div>\
         <div class=\"l\">Cache hit rate</div></div>"
    );
    card_usd(&mut h, "Saved by the cache", "cache-saved", cache_saved);
    card_usd(&mut h, "Saved (ledger total)", "total-saved", t.saved_pico);
    card_count(
        &mut h,
        "Routed requests",
        "routed-requests",
        routed_requests,
    );
    if t.unpriced_requests > 0 {
        card_count(
            &mut h,
            "Unpriced requests",
            "total-unpriced",
            t.unpriced_requests,
        );
    }
    h.push_str("</div>");

    // Spend over time.
    let days: Vec<u64> = (time::day_of(p.range.from_ms)..time::day_of(p.range.to_ms)).collect();
    h.push_str("<h2>Spend per day by team</h2>");
    stacked_chart(
        &mut h,
        &days,
        &v.by_day_team,
        GroupBy::Team,
        &v.by_team,
        "day-team-cost",
    );
    h.push_str("<h2>Spend per day by model</h2>");
    stacked_chart(
        &mut h,
        &days,
        &v.by_day_model,
        GroupBy::Model,
        &v.by_model,
        "day-model-cost",
    );
    h.push_str("<h2>Cache hit rate per day</h2>");
    hit_rate_chart(&mut h, &days, &v.by_day);

    // Cache and routing.
    h.push_str("<h2>Savings</h2><div class=\"grid\"><div><h3>Response cache</h3>");
    h.push_str(
        "<table><tr><th>result</th><th class=\"n\">requests</th><th class=\"n\">saved</th></tr>",
    );
    for (kind, row) in &v.cache_hits {
        let k = escape(kind);
        let _ = write!(
            h,
            "<tr><td>{k}</td><td class=\"n\" data-metric=\"cache-requests\" data-key=\"{k}\" data-value=\"{}\">{}</td>\
             <td class=\"n\" data-metric=\"cache-saved-by-kind\" data-key=\"{k}\" {}>{}</td></tr>",
            row.requests,
            row.requests,
            usd_attrs(row.saved_pico),
            display_usd(row.saved_pico)
        );
    }
    let _ = write!(
        h,
        "<tr><td>miss, bypass, error</td><td class=\"n\">{}</td><td class=\"n\">&ndash;</td></tr></table></div>",
        t.requests - t.cache_hits
    );
    h.push_str(
        "<div><h3>Routing</h3><table><tr><th>route</th><th>requested</th><th>used</th>\
         <th class=\"n\">requests</th><th class=\"n\">cost</th></tr>",
    );
    if v.routed.is_empty() {
        h.push_str(
            "<tr><td colspan=\"5\" class=\"muted\">no routed or downgraded requests</td></tr>",
        );
    }
    for ((route, req, used), row) in &v.routed {
        let key = escape(&format!("{route}|{req}|{used}"));
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\" data-metric=\"routed-requests-by-route\" data-key=\"{key}\" data-value=\"{}\">{}</td>\
             <td class=\"n\" data-metric=\"routed-cost\" data-key=\"{key}\" {}>{}</td></tr>",
            escape(route),
            escape(req),
            escape(used),
            row.requests,
            row.requests,
            usd_attrs(row.cost_pico),
            display_usd(row.cost_pico)
        );
    }
    h.push_str(
        "</table><p class=\"muted\">The ledger records what a cache hit saved, not what routing saved: \
         routed requests are counted here; the filter's estimate is the Envoy stat \
         <code>tollgate_routing_saved_micro_usd_total</code>.</p></div></div>",
    );

    // Budgets.
    h.push_str("<h2>Budgets (current windows)</h2>");
    budgets(&mut h, p.usage);

    // Top spenders.
    h.push_str("<h2>Top spenders</h2><div class=\"grid\">");
    top_table(&mut h, "Teams", "team", GroupBy::Team, &v.by_team);
    top_table(&mut h, "Users", "user", GroupBy::User, &v.by_user);
    top_table(&mut h, "Models", "model", GroupBy::Model, &v.by_model);
    h.push_str("</div>");

    // Rejections.
    h.push_str(
        "<h2>Rejections and decisions</h2><p class=\"muted\">Rejections by reason (budget, rate limit, \
         request too large, invalid request) are counted by the filter as Envoy stats \
         (<code>tollgate_rejected_total{reason}</code> at Envoy's <code>/stats/prometheus</code>), not by \
         this service. Shown here: the budget checks this service answered since it started.</p>\
         <table><tr><th>verdict</th><th class=\"n\">admits</th></tr>",
    );
    for (verdict, n) in p.verdicts {
        let _ = write!(
            h,
            "<tr><td>{verdict}</td><td class=\"n\" data-metric=\"budget-admits\" data-key=\"{verdict}\" data-value=\"{n}\">{n}</td></tr>"
        );
    }
    let _ = write!(
        h,
        "<tr><td>budget store errors</td><td class=\"n\" data-metric=\"budget-errors\" data-value=\"{0}\">{0}</td></tr></table>",
        p.budget_errors
    );
    h.push_str("<div class=\"grid\">");
    reason_table(&mut h, "Cache bypasses", "cache-bypass", p.bypasses);
    reason_table(
        &mut h,
        "Semantic guard rejections",
        "guard-rejections",
        p.guard_rejections,
    );
    h.push_str(
        "<div><h3>Responses by status (ledger)</h3><table><tr><th>status</th><th class=\"n\">requests</th></tr>",
    );
    for (status, n) in &v.statuses {
        let _ = write!(
            h,
            "<tr><td>{status}</td><td class=\"n\" data-metric=\"ledger-status\" data-key=\"{status}\" data-value=\"{n}\">{n}</td></tr>"
        );
    }
    h.push_str("</table></div></div></body></html>");
    h
}

fn reason_table(h: &mut String, title: &str, metric: &str, rows: &[(String, u64)]) {
    let _ = write!(
        h,
        "<div><h3>{title} (since start)</h3><table><tr><th>reason</th><th class=\"n\">requests</th></tr>"
    );
    if rows.is_empty() {
        h.push_str("<tr><td colspan=\"2\" class=\"muted\">none</td></tr>");
    }
    for (reason, n) in rows {
        let r = escape(reason);
        let _ = write!(
            h,
            "<tr><td>{r}</td><td class=\"n\" data-metric=\"{metric}\" data-key=\"{r}\" data-value=\"{n}\">{n}</td></tr>"
        );
    }
    h.push_str("</table></div>");
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn card_usd(h: &mut String, label: &str, metric: &str, pico: u128) {
    let _ = write!(
        h,
        "<div class=\"card\"><div class=\"v\" data-metric=\"{metric}\" {}>{}</div><div class=\"l\">{label}</div></div>",
        usd_attrs(pico),
        display_usd(pico)
    );
}

fn card_count(h: &mut String, label: &str, metric: &str, n: u64) {
    let _ = write!(
        h,
        "<div class=\"card\"><div class=\"v\" data-metric=\"{metric}\" data-value=\"{n}\">{n}</div><div class=\"l\">{label}</div></div>"
    );
}

fn group_value(row: &SpendRow, g: GroupBy) -> Option<String> {
    row.group.get(&g).cloned().flatten()
}

/// The `MAX_SERIES` largest groups by total cost (the rest is drawn as "other").
fn top_series(totals: &SpendReport, g: GroupBy) -> Vec<String> {
    let mut rows: Vec<&SpendRow> = totals.rows.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.cost_pico));
    rows.iter()
        .take(MAX_SERIES)
        .map(|r| group_value(r, g).unwrap_or_else(|| "(none)".into()))
        .collect()
}

const CHART_W: f64 = 1180.0;
const CHART_H: f64 = 260.0;
const LEFT: f64 = 80.0;
const BOTTOM: f64 = 40.0;
const TOPPAD: f64 = 12.0;

fn axis(h: &mut String, days: &[u64], max_label: &str) {
    let plot_h = CHART_H - BOTTOM - TOPPAD;
    let _ = write!(
        h,
        "<line x1=\"{LEFT}\" y1=\"{y0}\" x2=\"{CHART_W}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOPPAD}\" x2=\"{LEFT}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <text x=\"{lx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{max_label}</text>\
         <text x=\"{lx}\" y=\"{y0}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        y0 = TOPPAD + plot_h,
        lx = LEFT - 4.0,
        ty = TOPPAD + 10.0,
    );
    for q in 1..4 {
        let y = TOPPAD + plot_h * f64::from(q) / 4.0;
        let _ = write!(
            h,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{CHART_W}\" y2=\"{y:.1}\" stroke=\"#eee\" stroke-dasharray=\"4 3\"/>"
        );
    }
    let slot = (CHART_W - LEFT) / days.len().max(1) as f64;
    let step = days.len().div_ceil(10).max(1);
    for (i, d) in days.iter().enumerate() {
        if i % step == 0 || i + 1 == days.len() {
            let x = LEFT + slot * (i as f64 + 0.5);
            let label = time::format_day(*d);
            let _ = write!(
                h,
                "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                CHART_H - BOTTOM + 14.0,
                label.get(5..).unwrap_or(&label)
            );
        }
    }
}

/// Stacked bars: one per day, one segment per series (by cost).
fn stacked_chart(
    h: &mut String,
    days: &[u64],
    by_day_group: &SpendReport,
    g: GroupBy,
    by_group: &SpendReport,
    metric: &str,
) {
    let series = top_series(by_group, g);
    let other = "(other)".to_string();
    // day -> series index -> pico
    let mut cells: BTreeMap<String, BTreeMap<usize, u128>> = BTreeMap::new();
    let mut raw: BTreeMap<(String, usize), Vec<(String, u128)>> = BTreeMap::new();
    for row in &by_day_group.rows {
        let day = group_value(row, GroupBy::Day).unwrap_or_default();
        let name = group_value(row, g).unwrap_or_else(|| "(none)".into());
        let idx = series
            .iter()
            .position(|s| *s == name)
            .unwrap_or(series.len());
        *cells
            .entry(day.clone())
            .or_default()
            .entry(idx)
            .or_default() += row.cost_pico;
        raw.entry((day, idx))
            .or_default()
            .push((name, row.cost_pico));
    }
    let max_day: u128 = cells
        .values()
        .map(|m| m.values().sum::<u128>())
        .max()
        .unwrap_or(0);
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_W}\" height=\"{CHART_H}\" role=\"img\" data-chart=\"{metric}\">"
    );
    axis(h, days, &display_usd(max_day));
    let plot_h = CHART_H - BOTTOM - TOPPAD;
    let slot = (CHART_W - LEFT) / days.len().max(1) as f64;
    for (i, d) in days.iter().enumerate() {
        let day = time::format_day(*d);
        let Some(segs) = cells.get(&day) else {
            continue;
        };
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let mut y = TOPPAD + plot_h;
        for (idx, pico) in segs {
            let hgt = if max_day == 0 {
                0.0
            } else {
                (*pico as f64 / max_day as f64) * plot_h
            };
            y -= hgt;
            let name = series.get(*idx).unwrap_or(&other);
            let color = PALETTE[(*idx).min(PALETTE.len() - 1)];
            // One rect per series; each underlying group keeps its own data-value in a
            // (zero-size) element so "(other)" stays comparable with /v1/spend.
            let _ = write!(
                h,
                "<rect x=\"{x:.1}\" y=\"{y:.2}\" width=\"{:.1}\" height=\"{hgt:.2}\" fill=\"{color}\">\
                 <title>{day} {}: {}</title></rect>",
                slot * 0.7,
                escape(name),
                display_usd(*pico)
            );
            for (group, p) in raw.get(&(day.clone(), *idx)).into_iter().flatten() {
                let _ = write!(
                    h,
                    "<g data-metric=\"{metric}\" data-key=\"{day}|{}\" {}></g>",
                    escape(group),
                    usd_attrs(*p)
                );
            }
        }
    }
    h.push_str("</svg><div class=\"legend\">");
    let has_other = by_group.rows.len() > series.len();
    for (i, name) in series.iter().chain(has_other.then_some(&other)).enumerate() {
        let _ = write!(
            h,
            "<span><i style=\"background:{}\"></i>{}</span>",
            PALETTE[i.min(PALETTE.len() - 1)],
            escape(name)
        );
    }
    h.push_str("</div>");
}

fn hit_rate_chart(h: &mut String, days: &[u64], by_day: &SpendReport) {
    let per_day: BTreeMap<String, &SpendRow> = by_day
        .rows
        .iter()
        .filter_map(|r| group_value(r, GroupBy::Day).map(|d| (d, r)))
        .collect();
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_W}\" height=\"{CHART_H}\" role=\"img\" data-chart=\"day-hit-rate\">"
    );
    axis(h, days, "100%");
    let plot_h = CHART_H - BOTTOM - TOPPAD;
    let slot = (CHART_W - LEFT) / days.len().max(1) as f64;
    let mut points = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let day = time::format_day(*d);
        let Some(row) = per_day.get(&day) else {
            continue;
        };
        let rate = percent(row.cache_hits, row.requests);
        let x = LEFT + slot * (i as f64 + 0.5);
        let y = TOPPAD + plot_h * (1.0 - rate / 100.0);
        points.push(format!("{x:.1},{y:.1}"));
        let _ = write!(
            h,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"#59a14f\" data-metric=\"day-hit-rate\" data-key=\"{day}\" data-value=\"{rate:.1}\">\
             <title>{day}: {rate:.1}% of {} requests ({} hits, {} saved)</title></circle>",
            row.requests,
            row.cache_hits,
            display_usd(row.saved_pico)
        );
    }
    if points.len() > 1 {
        let _ = write!(
            h,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#59a14f\" stroke-width=\"2\"/>",
            points.join(" ")
        );
    }
    h.push_str("</svg>");
}

fn top_table(h: &mut String, title: &str, metric: &str, g: GroupBy, report: &SpendReport) {
    let mut rows: Vec<&SpendRow> = report.rows.iter().collect();
    rows.sort_by(|a, b| {
        b.cost_pico
            .cmp(&a.cost_pico)
            .then(b.requests.cmp(&a.requests))
    });
    let _ = write!(
        h,
        "<div><h3>{title}</h3><table><tr><th>{metric}</th><th class=\"n\">cost</th><th class=\"n\">requests</th>\
         <th class=\"n\">tokens in</th><th class=\"n\">tokens out</th><th class=\"n\">cache hits</th></tr>"
    );
    if rows.is_empty() {
        h.push_str("<tr><td colspan=\"6\" class=\"muted\">no spend in this range</td></tr>");
    }
    for r in rows.iter().take(TOP) {
        let name = group_value(r, g);
        let shown = escape(name.as_deref().unwrap_or("(none)"));
        let key = escape(name.as_deref().unwrap_or(""));
        let _ = write!(
            h,
            "<tr><td>{shown}</td><td class=\"n\" data-metric=\"{metric}-cost\" data-key=\"{key}\" {}>{}</td>\
             <td class=\"n\" data-metric=\"{metric}-requests\" data-key=\"{key}\" data-value=\"{}\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            usd_attrs(r.cost_pico),
            display_usd(r.cost_pico),
            r.requests,
            r.requests,
            r.tokens_in,
            r.tokens_out,
            r.cache_hits
        );
    }
    if rows.len() > TOP {
        let _ = write!(
            h,
            "<tr><td colspan=\"6\" class=\"muted\">and {} more</td></tr>",
            rows.len() - TOP
        );
    }
    h.push_str("</table></div>");
}

/// Spent, reserved, limit, and how to show them (USD or tokens).
type BudgetFigures = (u128, u128, Option<u128>, fn(u128) -> String);

fn budgets(h: &mut String, usage: Option<&[UsageReport]>) {
    let Some(usage) = usage else {
        h.push_str("<p class=\"muted\">The budget store did not answer.</p>");
        return;
    };
    if usage.is_empty() {
        h.push_str(
            "<p class=\"muted\">No budgets defined (<code>PUT /v1/budgets/{id}</code>).</p>",
        );
        return;
    }
    h.push_str(
        "<table><tr><th>budget</th><th>scope</th><th>period</th><th>used</th><th class=\"n\">spent</th>\
         <th class=\"n\">reserved</th><th class=\"n\">limit</th><th class=\"n\">remaining</th></tr>",
    );
    for u in usage {
        let key = escape(&format!("{}|{}", u.budget_id, u.scope));
        let period = serde_json::to_value(u.period)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        // USD when limited, else the tightest token limit.
        let (spent, reserved, limit, fmt): BudgetFigures = if let Some(l) = u.limits.usd_pico {
            (
                u128::from(u.spent.cost_pico),
                u128::from(u.reserved.cost_pico),
                Some(u128::from(l)),
                display_usd,
            )
        } else {
            let tok = |a: &crate::budget::Amounts| {
                if u.limits.input_tokens.is_some() && u.limits.tokens.is_none() {
                    a.input_tokens
                } else if u.limits.output_tokens.is_some() && u.limits.tokens.is_none() {
                    a.output_tokens
                } else {
                    a.input_tokens + a.output_tokens
                }
            };
            let limit = u
                .limits
                .tokens
                .or(u.limits.input_tokens)
                .or(u.limits.output_tokens);
            (
                u128::from(tok(&u.spent)),
                u128::from(tok(&u.reserved)),
                limit.map(u128::from),
                |n| format!("{n} tok"),
            )
        };
        let used = spent + reserved;
        let frac = limit.map_or(0.0, |l| if l == 0 { 1.0 } else { used as f64 / l as f64 });
        let width = (frac.min(1.0) * 100.0).max(0.0);
        let over = if frac >= 1.0 { " class=\"over\"" } else { "" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"bar\"><b{over} style=\"width:{width:.1}%\"></b></span> \
             <span data-metric=\"budget-used-fraction\" data-key=\"{key}\" data-value=\"{frac:.4}\">{:.1}%</span></td>\
             <td class=\"n\" data-metric=\"budget-spent\" data-key=\"{key}\" data-value=\"{spent}\">{}</td>\
             <td class=\"n\" data-metric=\"budget-reserved\" data-key=\"{key}\" data-value=\"{reserved}\">{}</td>\
             <td class=\"n\" data-metric=\"budget-limit\" data-key=\"{key}\" data-value=\"{}\">{}</td>\
             <td class=\"n\" data-metric=\"budget-remaining\" data-key=\"{key}\" data-value=\"{}\">{}</td></tr>",
            escape(&u.budget_id),
            escape(&u.scope),
            escape(&period),
            frac * 100.0,
            fmt(spent),
            fmt(reserved),
            limit.map(|l| l.to_string()).unwrap_or_default(),
            limit.map(fmt).unwrap_or_else(|| "&ndash;".into()),
            u.remaining_pico.map(|r| r.to_string()).unwrap_or_default(),
            u.remaining_pico
                .map(|r| display_usd(u128::from(r)))
                .unwrap_or_else(|| "&ndash;".into()),
        );
    }
    h.push_str(
        "</table><p class=\"muted\">Budget figures are pico-USD (or tokens) in <code>data-value</code>, \
         as <code>GET /v1/budgets/usage</code> reports them; used = spent + reserved.</p>",
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn usd_for_display_and_as_the_api_writes_it() {
        assert_eq!(display_usd(0), "$0.00");
        assert_eq!(display_usd(3_000_000), "$0.000003");
        assert_eq!(display_usd(12_345_000_000_000), "$12.35");
        assert_eq!(display_usd(10_000_000_000), "$0.01");
        assert_eq!(json_usd(3_000_000), serde_json::json!(3e-6).to_string());
        assert_eq!(json_usd(1_500_000_000_000), "1.5");
    }

    #[test]
    fn counters_by_label_from_the_prometheus_text() {
        let m = crate::metrics::Metrics::new();
        m.inc(
            "tollgate_cache_bypass_total",
            &[("reason", "temperature")],
            3,
        );
        m.inc(
            "tollgate_cache_bypass_total",
            &[("reason", "rule:\"x\"")],
            1,
        );
        m.inc("tollgate_cache_bypass_totalx", &[("reason", "other")], 1);
        let mut got = by_label(&m.render(), "tollgate_cache_bypass_total", "reason");
        got.sort();
        assert_eq!(
            got,
            vec![
                ("rule:\"x\"".to_string(), 1),
                ("temperature".to_string(), 3)
            ]
        );
    }

    #[test]
    fn range_is_whole_utc_days_including_today() {
        let now = 1_739_000_000_000; // 2025-02-08T07:33:20Z
        let r = range_of(now, 30);
        assert_eq!(r.to_ms - r.from_ms, 30 * MS_PER_DAY);
        assert_eq!(time::format_rfc3339(r.to_ms), "2025-02-09T00:00:00.000Z");
        assert!(r.contains(now));
    }
}
