//! Exports: records in ledger order, page by page ([`Export`]), rendered as CSV (RFC 4180) or
//! JSONL.
//!
//! A month of records never has to fit in memory: [`Export::next_page`] reads one page, and
//! [`Export::next_chunk`] renders one page as text, so the HTTP API can stream the body. A page
//! also carries a cursor, for clients that page with `?cursor=`.

use std::sync::Arc;

use super::query::{Format, SpendFilter, SpendQuery, TimeRange};
use super::{Ledger, LedgerError, LedgerRecord, Position, ScanFrom, time};

/// Records per page when the query gives no `limit`.
pub const DEFAULT_PAGE: usize = 5000;

/// CSV columns, in order.
pub const CSV_COLUMNS: [&str; 24] = [
    "time",
    "time_ms",
    "request_id",
    "org",
    "team",
    "user",
    "key",
    "api",
    "model_requested",
    "model_used",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "tokens_cache_write",
    "tokens_reasoning",
    "cost_usd",
    "cost_pico",
    "saved_usd",
    "saved_pico",
    "cache",
    "route",
    "status",
    "stream",
    "usage_source",
];

/// The header line (CRLF-terminated).
pub fn csv_header() -> String {
    let mut s = CSV_COLUMNS.join(",");
    s.push_str("\r\n");
    s
}

/// One field, quoted as RFC 4180 asks when it holds a comma, a quote, CR or LF (quotes doubled).
///
/// Text that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR:
/// team and user names come from request headers) gets a leading `'` and is quoted, as OWASP
/// recommends against CSV injection. Numbers are written by [`csv_row`] directly and never
/// altered.
pub fn csv_field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if !formula && !s.contains([',', '"', '\r', '\n']) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push('"');
    if formula {
        out.push('\'');
    }
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Exact decimal USD of a pico-USD amount (`2500000000000` -> `2.5`, `1` -> `0.000000000001`).
pub fn usd_decimal(pico: u128) -> String {
    let (whole, frac) = (pico / 1_000_000_000_000, pico % 1_000_000_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:012}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Appends one record as a CSV line (CRLF-terminated). Unpriced records have empty cost fields.
pub fn csv_row(r: &LedgerRecord, out: &mut String) {
    let opt = |v: &Option<String>| csv_field(v.as_deref().unwrap_or(""));
    let fields = [
        time::format_rfc3339(r.time_ms),
        r.time_ms.to_string(),
        csv_field(&r.request_id),
        csv_field(&r.org),
        csv_field(&r.team),
        opt(&r.user),
        opt(&r.key),
        opt(&r.api),
        csv_field(&r.model_requested),
        csv_field(&r.model_used),
        r.tokens_in.to_string(),
        r.tokens_out.to_string(),
        r.tokens_cached.to_string(),
        r.tokens_cache_write.to_string(),
        r.tokens_reasoning.to_string(),
        r.cost_pico
            .map(|c| usd_decimal(u128::from(c)))
            .unwrap_or_default(),
        r.cost_pico.map(|c| c.to_string()).unwrap_or_default(),
        usd_decimal(u128::from(r.saved_pico)),
        r.saved_pico.to_string(),
        csv_field(&r.cache),
        opt(&r.route),
        r.status.to_string(),
        r.stream.to_string(),
        csv_field(&r.usage_source),
    ];
    out.push_str(&fields.join(","));
    out.push_str("\r\n");
}

/// Header plus one line per record.
pub fn render_csv(records: &[LedgerRecord]) -> String {
    let mut out = csv_header();
    for r in records {
        csv_row(r, &mut out);
    }
    out
}

/// Appends one record as a JSON line (the [`LedgerRecord`] serde form, `\n`-terminated).
pub fn jsonl_row(r: &LedgerRecord, out: &mut String) {
    // Serializing a struct of strings and integers cannot fail.
    if let Ok(line) = serde_json::to_string(r) {
        out.push_str(&line);
        out.push('\n');
    }
}

pub fn render_jsonl(records: &[LedgerRecord]) -> String {
    let mut out = String::new();
    for r in records {
        jsonl_row(r, &mut out);
    }
    out
}

/// One page of an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportPage {
    pub records: Vec<LedgerRecord>,
    /// Pass as `cursor` to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// The records of a range and filter, in ledger order ([`Position`]: time, then request-id
/// hash), read page by page.
pub struct Export {
    ledger: Arc<dyn Ledger>,
    range: TimeRange,
    filter: SpendFilter,
    next: ScanFrom,
    page: usize,
    done: bool,
    header_sent: bool,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("range", &self.range)
            .field("filter", &self.filter)
            .field("next", &self.next)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Export {
    pub fn new(ledger: Arc<dyn Ledger>, range: TimeRange, filter: SpendFilter) -> Export {
        Export {
            ledger,
            range,
            filter,
            next: ScanFrom::At(Position::start_of(range.from_ms)),
            page: DEFAULT_PAGE,
            done: false,
            header_sent: false,
        }
    }

    /// From a parsed query: its range, filter, `cursor` (continue after it) and `limit` (page
    /// size).
    pub fn from_query(ledger: Arc<dyn Ledger>, q: &SpendQuery) -> Export {
        let mut e = Export::new(ledger, q.range, q.filter.clone())
            .page_size(q.limit.unwrap_or(DEFAULT_PAGE));
        if let Some(c) = q.cursor {
            let start = Position::start_of(q.range.from_ms);
            e.next = if c < start {
                ScanFrom::At(start)
            } else {
                ScanFrom::After(c)
            };
        }
        e
    }

    /// Records per page (at least 1).
    pub fn page_size(mut self, n: usize) -> Export {
        self.page = n.max(1);
        self
    }

    /// Where the next page starts, once a page was read (`None` before, and when finished).
    pub fn cursor(&self) -> Option<String> {
        match (self.done, self.next) {
            (false, ScanFrom::After(p)) => Some(p.encode()),
            _ => None,
        }
    }

    /// The next page of up to `page_size` matching records; `None` when there are no more.
    /// Records that do not match the filter are read and skipped.
    pub async fn next_page(&mut self) -> Result<Option<ExportPage>, LedgerError> {
        let mut records = Vec::new();
        while !self.done && records.len() < self.page {
            let batch = self
                .ledger
                .scan(self.next, self.range.to_ms, self.page)
                .await?;
            if batch.len() < self.page {
                self.done = true;
            }
            for r in batch {
                self.next = ScanFrom::After(r.position());
                if self.filter.matches(&r) && self.range.contains(r.time_ms) {
                    records.push(r);
                    if records.len() >= self.page {
                        // The rest of this batch is read again by the next page.
                        break;
                    }
                }
            }
        }
        if records.is_empty() {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(ExportPage {
            records,
            next_cursor: self.cursor(),
        }))
    }

    /// The next page rendered as `format` (`Json` renders JSONL too); the CSV header comes with
    /// the first chunk, even when no record matches. `None` when finished.
    pub async fn next_chunk(&mut self, format: Format) -> Result<Option<String>, LedgerError> {
        let page = self.next_page().await?;
        let mut out = String::new();
        if format == Format::Csv && !self.header_sent {
            self.header_sent = true;
            out = csv_header();
        }
        match page {
            Some(p) => {
                for r in &p.records {
                    match format {
                        Format::Csv => csv_row(r, &mut out),
                        Format::Json | Format::Jsonl => jsonl_row(r, &mut out),
                    }
                }
                Ok(Some(out))
            }
            None if !out.is_empty() => Ok(Some(out)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\rlf"), "\"cr\rlf\"");
        assert_eq!(csv_field("=1+1"), "\"'=1+1\"");
        assert_eq!(csv_field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(csv_field("-x,\"y\""), "\"'-x,\"\"y\"\"\"");
        assert_eq!(csv_field("a=b"), "a=b");
    }

    #[test]
    fn decimals() {
        assert_eq!(usd_decimal(0), "0");
        assert_eq!(usd_decimal(1), "0.000000000001");
        assert_eq!(usd_decimal(2_500_000_000_000), "2.5");
        assert_eq!(usd_decimal(12_000_000_000_000), "12");
        assert_eq!(usd_decimal(1_000_000_000_001), "1.000000000001");
    }

    #[test]
    fn header_matches_row_width() {
        let r = LedgerRecord {
            time_ms: 1,
            request_id: "r".into(),
            org: "o".into(),
            team: "t".into(),
            user: None,
            key: None,
            api: None,
            model_requested: "m".into(),
            model_used: "m".into(),
            tokens_in: 0,
            tokens_out: 0,
            tokens_cached: 0,
            tokens_cache_write: 0,
            tokens_reasoning: 0,
            cost_pico: None,
            saved_pico: 0,
            cache: "miss".into(),
            route: None,
            status: 200,
            stream: false,
            usage_source: "counted".into(),
        };
        let csv = render_csv(std::slice::from_ref(&r));
        let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), CSV_COLUMNS.len());
        assert_eq!(lines[1].split(',').count(), CSV_COLUMNS.len());
        assert_eq!(
            lines[1],
            "1970-01-01T00:00:00.001Z,1,r,o,t,,,,m,m,0,0,0,0,0,,,0,0,miss,,200,false,counted"
        );
        let jsonl = render_jsonl(std::slice::from_ref(&r));
        assert!(jsonl.ends_with('\n'));
        let back: LedgerRecord = serde_json::from_str(jsonl.trim_end()).unwrap();
        assert_eq!(back, r);
    }
}
