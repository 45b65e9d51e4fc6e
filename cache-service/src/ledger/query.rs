//! Spend queries: time range, filters and grouping ([`SpendQuery`], parsed from a query string
//! by [`SpendQuery::from_query_pairs`]), and the report they produce ([`SpendReport`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::time;
use super::{LedgerRecord, Position};

/// A half-open time range `[from_ms, to_ms)`, unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub from_ms: u64,
    pub to_ms: u64,
}

impl TimeRange {
    /// The UTC calendar month containing `now_ms`.
    pub fn month_of(now_ms: u64) -> TimeRange {
        let (from_ms, to_ms) = time::month_bounds(now_ms);
        TimeRange { from_ms, to_ms }
    }

    pub fn contains(&self, ms: u64) -> bool {
        self.from_ms <= ms && ms < self.to_ms
    }
}

/// Exact-match filters; `None` matches everything. `model` matches the model used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl SpendFilter {
    pub fn matches(&self, r: &LedgerRecord) -> bool {
        fn eq(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| have == Some(w))
        }
        eq(&self.org, Some(&r.org))
            && eq(&self.team, Some(&r.team))
            && eq(&self.user, r.user.as_deref())
            && eq(&self.key, r.key.as_deref())
            && eq(&self.model, Some(&r.model_used))
    }
}

/// A grouping dimension. `model` is the model used; `day` the UTC date (`YYYY-MM-DD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Org,
    Team,
    User,
    Key,
    Model,
    Day,
}

impl GroupBy {
    pub const ALL: [GroupBy; 6] = [
        GroupBy::Org,
        GroupBy::Team,
        GroupBy::User,
        GroupBy::Key,
        GroupBy::Model,
        GroupBy::Day,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Org => "org",
            GroupBy::Team => "team",
            GroupBy::User => "user",
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<GroupBy> {
        GroupBy::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s))
    }

    /// This dimension's value for a record (`None`: the record has no user or key).
    pub fn value_of(self, r: &LedgerRecord) -> Option<String> {
        match self {
            GroupBy::Org => Some(r.org.clone()),
            GroupBy::Team => Some(r.team.clone()),
            GroupBy::User => r.user.clone(),
            GroupBy::Key => r.key.clone(),
            GroupBy::Model => Some(r.model_used.clone()),
            GroupBy::Day => Some(time::format_day(time::day_of(r.time_ms))),
        }
    }
}

/// How the HTTP API should answer: a JSON report, or CSV / JSONL (report rows for `/v1/spend`,
/// records for an export).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
    Jsonl,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Jsonl => "application/x-ndjson",
        }
    }
}

/// Largest `limit` (records per export page) accepted.
pub const MAX_LIMIT: usize = 100_000;

/// A spend query or export request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendQuery {
    pub range: TimeRange,
    #[serde(default)]
    pub filter: SpendFilter,
    /// Empty: one row, the totals.
    #[serde(default)]
    pub group_by: Vec<GroupBy>,
    #[serde(default)]
    pub format: Format,
    /// Export paging: continue after this position (from a previous page's `next_cursor`).
    #[serde(default)]
    pub cursor: Option<Position>,
    /// Export paging: records per page.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A rejected query parameter (answer 400 with its text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid query parameter `{param}`: {message}")]
pub struct QueryError {
    pub param: String,
    pub message: String,
}

fn err(param: &str, message: impl Into<String>) -> QueryError {
    QueryError {
        param: param.to_owned(),
        message: message.into(),
    }
}

const PARAMS: &str = "from, to, group_by, org, team, user, key, model, format, cursor, limit";

impl SpendQuery {
    /// Everything in the UTC month containing `now_ms`, no filter, no grouping.
    pub fn current_month(now_ms: u64) -> SpendQuery {
        SpendQuery {
            range: TimeRange::month_of(now_ms),
            filter: SpendFilter::default(),
            group_by: Vec::new(),
            format: Format::Json,
            cursor: None,
            limit: None,
        }
    }

    /// Parses decoded query-string pairs (see [`SpendQuery::from_query_pairs_at`]) at the
    /// current time.
    pub fn from_query_pairs(pairs: &[(String, String)]) -> Result<SpendQuery, QueryError> {
        Self::from_query_pairs_at(pairs, super::now_ms())
    }

    /// Parses decoded query-string pairs:
    ///
    /// - `from`, `to`: `YYYY-MM-DD`, an RFC 3339 date-time, or unix milliseconds. The range is
    ///   `[from, to)`; a date as `to` includes that whole day. Neither: the current UTC month.
    ///   Only `from`: until the end of the current month (or of `from`'s month, if later).
    ///   Only `to`: from the beginning.
    /// - `group_by`: comma-separated `org`, `team`, `user`, `key`, `model`, `day` (may repeat).
    /// - `org`, `team`, `user`, `key`, `model`: exact-match filters (`model`: the model used).
    /// - `format`: `json` (default), `csv`, `jsonl` (`ndjson`).
    /// - `cursor`, `limit`: export paging.
    ///
    /// Unknown or repeated parameters and empty values are errors, so a typo does not silently
    /// widen a query.
    pub fn from_query_pairs_at(
        pairs: &[(String, String)],
        now_ms: u64,
    ) -> Result<SpendQuery, QueryError> {
        let mut q = SpendQuery::current_month(now_ms);
        let (mut from, mut to) = (None, None);
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in pairs {
            let k = k.as_str();
            let v = v.trim();
            if k != "group_by" {
                if seen.contains(&k) {
                    return Err(err(k, "given more than once"));
                }
                seen.push(k);
            }
            let slot = match k {
                "from" => {
                    from = Some(time::parse_time(v).map_err(|m| err(k, m))?);
                    continue;
                }
                "to" => {
                    to = Some(time::parse_time(v).map_err(|m| err(k, m))?);
                    continue;
                }
                "group_by" => {
                    for part in v.split(',') {
                        let part = part.trim();
                        let g = GroupBy::parse(part).ok_or_else(|| {
                            err(
                                k,
                                format!("{part:?} is not one of org, team, user, key, model, day"),
                            )
                        })?;
                        if q.group_by.contains(&g) {
                            return Err(err(k, format!("{part:?} given more than once")));
                        }
                        q.group_by.push(g);
                    }
                    continue;
                }
                "format" => {
                    q.format = match v.to_ascii_lowercase().as_str() {
                        "json" => Format::Json,
                        "csv" => Format::Csv,
                        "jsonl" | "ndjson" => Format::Jsonl,
                        _ => return Err(err(k, format!("{v:?} is not one of json, csv, jsonl"))),
                    };
                    continue;
                }
                "cursor" => {
                    q.cursor = Some(
                        Position::decode(v)
                            .ok_or_else(|| err(k, "not a cursor returned by an export"))?,
                    );
                    continue;
                }
                "limit" => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| err(k, format!("{v:?} is not a number")))?;
                    if !(1..=MAX_LIMIT).contains(&n) {
                        return Err(err(k, format!("must be between 1 and {MAX_LIMIT}")));
                    }
                    q.limit = Some(n);
                    continue;
                }
                "org" => &mut q.filter.org,
                "team" => &mut q.filter.team,
                "user" => &mut q.filter.user,
                "key" => &mut q.filter.key,
                "model" => &mut q.filter.model,
                _ => {
                    return Err(err(k, format!("unknown parameter (accepted: {PARAMS})")));
                }
            };
            if v.is_empty() {
                return Err(err(k, "empty value"));
            }
            *slot = Some(v.to_owned());
        }
        let month = TimeRange::month_of(now_ms);
        q.range = match (from, to) {
            (None, None) => month,
            (Some(f), None) => {
                let from_ms = f.as_from();
                TimeRange {
                    from_ms,
                    to_ms: month.to_ms.max(TimeRange::month_of(from_ms).to_ms),
                }
            }
            (None, Some(t)) => TimeRange {
                from_ms: 0,
                to_ms: t.as_to(),
            },
            (Some(f), Some(t)) => TimeRange {
                from_ms: f.as_from(),
                to_ms: t.as_to(),
            },
        };
        if q.range.from_ms >= q.range.to_ms {
            return Err(err(
                if to.is_some() { "to" } else { "from" },
                format!(
                    "the range is empty: `from` ({}) must be before `to` ({})",
                    time::format_rfc3339(q.range.from_ms),
                    time::format_rfc3339(q.range.to_ms)
                ),
            ));
        }
        Ok(q)
    }
}

/// Sums over one group of records (a report row), or over all of them (the totals, with an
/// empty `group`). Money sums are `u128` pico-USD (no overflow for any real ledger); `*_usd`
/// are the same as floats, for display.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpendRow {
    /// The group's value per dimension of `group_by` (`null`: records without a user or key).
    pub group: BTreeMap<GroupBy, Option<String>>,
    pub requests: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tokens_cached: u64,
    pub tokens_cache_write: u64,
    /// Sum of the priced records' costs.
    pub cost_pico: u128,
    pub cost_usd: f64,
    /// Records without a price (not in `cost_*`).
    pub unpriced_requests: u64,
    pub saved_pico: u128,
    pub saved_usd: f64,
    /// Records answered from the response cache (`hit-exact`, `hit-semantic`).
    pub cache_hits: u64,
}

impl SpendRow {
    pub fn add(&mut self, r: &LedgerRecord) {
        self.requests += 1;
        self.tokens_in = self.tokens_in.saturating_add(r.tokens_in);
        self.tokens_out = self.tokens_out.saturating_add(r.tokens_out);
        self.tokens_cached = self.tokens_cached.saturating_add(r.tokens_cached);
        self.tokens_cache_write = self.tokens_cache_write.saturating_add(r.tokens_cache_write);
        match r.cost_pico {
            Some(c) => self.cost_pico += u128::from(c),
            None => self.unpriced_requests += 1,
        }
        self.saved_pico += u128::from(r.saved_pico);
        if r.is_cache_hit() {
            self.cache_hits += 1;
        }
    }

    fn finish(&mut self) {
        self.cost_usd = pico_to_usd(self.cost_pico);
        self.saved_usd = pico_to_usd(self.saved_pico);
    }
}

pub fn pico_to_usd(pico: u128) -> f64 {
    // Split so large sums keep their cents exact in the float.
    (pico / 1_000_000_000_000) as f64 + (pico % 1_000_000_000_000) as f64 / 1e12
}

/// The answer to a [`SpendQuery`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpendReport {
    pub from_ms: u64,
    pub to_ms: u64,
    /// `from_ms` and `to_ms` as RFC 3339 UTC.
    pub from: String,
    pub to: String,
    pub group_by: Vec<GroupBy>,
    pub filter: SpendFilter,
    /// One row per group, sorted by the group values (in `group_by` order); empty when nothing
    /// matched. Without `group_by`: one row (when anything matched) equal to the totals.
    pub rows: Vec<SpendRow>,
    pub totals: SpendRow,
}

/// Folds records into a report (used by [`super::Ledger::query`]; usable over any iterator of
/// records).
#[derive(Debug)]
pub struct Aggregator {
    range: TimeRange,
    filter: SpendFilter,
    group_by: Vec<GroupBy>,
    rows: BTreeMap<Vec<Option<String>>, SpendRow>,
    totals: SpendRow,
}

impl Aggregator {
    pub fn new(q: &SpendQuery) -> Aggregator {
        Aggregator {
            range: q.range,
            filter: q.filter.clone(),
            group_by: q.group_by.clone(),
            rows: BTreeMap::new(),
            totals: SpendRow::default(),
        }
    }

    /// Adds a record if it is in the range and matches the filter.
    pub fn add(&mut self, r: &LedgerRecord) {
        if !self.range.contains(r.time_ms) || !self.filter.matches(r) {
            return;
        }
        let key: Vec<Option<String>> = self.group_by.iter().map(|g| g.value_of(r)).collect();
        self.rows.entry(key).or_default().add(r);
        self.totals.add(r);
    }

    pub fn finish(self) -> SpendReport {
        let group_by = self.group_by;
        let rows = self
            .rows
            .into_iter()
            .map(|(key, mut row)| {
                row.group = group_by.iter().copied().zip(key).collect();
                row.finish();
                row
            })
            .collect();
        let mut totals = self.totals;
        totals.finish();
        SpendReport {
            from_ms: self.range.from_ms,
            to_ms: self.range.to_ms,
            from: time::format_rfc3339(self.range.from_ms),
            to: time::format_rfc3339(self.range.to_ms),
            group_by,
            filter: self.filter,
            rows,
            totals,
        }
    }
}

impl SpendReport {
    /// The rows as CSV: one column per `group_by` dimension, then the sums (money as exact
    /// decimal USD). RFC 4180 quoting, CRLF line ends.
    pub fn to_csv(&self) -> String {
        use super::export::{csv_field, usd_decimal};
        let mut out = String::new();
        let mut header: Vec<&str> = self.group_by.iter().map(|g| g.as_str()).collect();
        header.extend([
            "requests",
            "tokens_in",
            "tokens_out",
            "tokens_cached",
            "tokens_cache_write",
            "cost_usd",
            "unpriced_requests",
            "saved_usd",
            "cache_hits",
        ]);
        out.push_str(&header.join(","));
        out.push_str("\r\n");
        for row in &self.rows {
            let mut fields: Vec<String> = self
                .group_by
                .iter()
                .map(|g| csv_field(row.group.get(g).cloned().flatten().as_deref().unwrap_or("")))
                .collect();
            let s = row;
            fields.extend([
                s.requests.to_string(),
                s.tokens_in.to_string(),
                s.tokens_out.to_string(),
                s.tokens_cached.to_string(),
                s.tokens_cache_write.to_string(),
                usd_decimal(s.cost_pico),
                s.unpriced_requests.to_string(),
                usd_decimal(s.saved_pico),
                s.cache_hits.to_string(),
            ]);
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const NOW: u64 = 1_739_000_000_000; // 2025-02-08T07:33:20Z
    const FEB: u64 = 1_738_368_000_000; // 2025-02-01
    const MAR: u64 = 1_740_787_200_000; // 2025-03-01

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(s: &[(&str, &str)]) -> Result<SpendQuery, QueryError> {
        SpendQuery::from_query_pairs_at(&pairs(s), NOW)
    }

    #[test]
    fn defaults_to_the_current_month() {
        let q = parse(&[]).unwrap();
        assert_eq!(q, SpendQuery::current_month(NOW));
        assert_eq!(
            q.range,
            TimeRange {
                from_ms: FEB,
                to_ms: MAR
            }
        );
        assert_eq!(q.format, Format::Json);
    }

    #[test]
    fn parses_everything() {
        let q = parse(&[
            ("from", "2025-01-01"),
            ("to", "2025-01-31"),
            ("group_by", "team, Model"),
            ("group_by", "day"),
            ("team", "search"),
            ("model", "gpt-4o"),
            ("org", "acme"),
            ("user", "ann"),
            ("key", "key:00"),
            ("format", "CSV"),
            ("limit", "500"),
            ("cursor", &Position::start_of(7).encode()),
        ])
        .unwrap();
        assert_eq!(q.range.from_ms, 1_735_689_600_000);
        assert_eq!(q.range.to_ms, FEB);
        assert_eq!(q.group_by, [GroupBy::Team, GroupBy::Model, GroupBy::Day]);
        assert_eq!(q.filter.team.as_deref(), Some("search"));
        assert_eq!(q.filter.model.as_deref(), Some("gpt-4o"));
        assert_eq!(q.filter.org.as_deref(), Some("acme"));
        assert_eq!(q.filter.user.as_deref(), Some("ann"));
        assert_eq!(q.filter.key.as_deref(), Some("key:00"));
        assert_eq!(q.format, Format::Csv);
        assert_eq!(q.limit, Some(500));
        assert_eq!(q.cursor, Some(Position::start_of(7)));
        assert_eq!(
            parse(&[("format", "ndjson")]).unwrap().format,
            Format::Jsonl
        );
    }

    #[test]
    fn open_ended_ranges() {
        let q = parse(&[("from", "2025-01-15T00:00:00Z")]).unwrap();
        assert_eq!((q.range.from_ms, q.range.to_ms), (1_736_899_200_000, MAR));
        let q = parse(&[("from", "2025-05-02")]).unwrap();
        assert_eq!(
            time::format_rfc3339(q.range.to_ms),
            "2025-06-01T00:00:00.000Z"
        );
        let q = parse(&[("to", "1000")]).unwrap();
        assert_eq!((q.range.from_ms, q.range.to_ms), (0, 1000));
        // Unix ms and datetimes are exclusive ends.
        let q = parse(&[("from", "0"), ("to", "2025-02-01T00:00:00Z")]).unwrap();
        assert_eq!(q.range.to_ms, FEB);
    }

    #[test]
    fn clear_errors() {
        let e = |s: &[(&str, &str)]| parse(s).unwrap_err();
        let x = e(&[("from", "2025-02-30")]);
        assert_eq!(x.param, "from");
        assert!(
            x.to_string()
                .starts_with("invalid query parameter `from`: "),
            "{x}"
        );
        assert!(x.message.contains("does not exist"), "{x}");
        assert!(e(&[("to", "soon")]).message.contains("RFC 3339"));
        let x = e(&[("from", "2025-02-02"), ("to", "2025-02-01")]);
        assert!(x.message.contains("range is empty"), "{x}");
        let x = e(&[
            ("from", "2025-02-01T00:00:00Z"),
            ("to", "2025-02-01T00:00:00Z"),
        ]);
        assert!(x.message.contains("range is empty"), "{x}");
        let x = e(&[("group_by", "team,tenant")]);
        assert!(x.message.contains("\"tenant\" is not one of"), "{x}");
        assert!(
            e(&[("group_by", "team,")])
                .message
                .contains("is not one of")
        );
        assert!(
            e(&[("group_by", "team"), ("group_by", "team")])
                .message
                .contains("more than once")
        );
        assert!(
            e(&[("team", "a"), ("team", "b")])
                .message
                .contains("more than once")
        );
        assert!(e(&[("team", " ")]).message.contains("empty value"));
        assert!(e(&[("format", "xml")]).message.contains("json, csv, jsonl"));
        let x = e(&[("groupby", "team")]);
        assert_eq!(x.param, "groupby");
        assert!(x.message.contains("unknown parameter"), "{x}");
        assert!(e(&[("limit", "0")]).message.contains("between"));
        assert!(e(&[("limit", "x")]).message.contains("not a number"));
        assert!(e(&[("cursor", "nope")]).message.contains("cursor"));
    }

    fn rec(id: &str, t: u64, team: &str, model: &str, cost: Option<u64>) -> LedgerRecord {
        LedgerRecord {
            time_ms: t,
            request_id: id.into(),
            org: "acme".into(),
            team: team.into(),
            user: None,
            key: None,
            api: None,
            model_requested: model.into(),
            model_used: model.into(),
            tokens_in: 10,
            tokens_out: 2,
            tokens_cached: 1,
            tokens_cache_write: 0,
            tokens_reasoning: 0,
            cost_pico: cost,
            saved_pico: 5,
            cache: "miss".into(),
            route: None,
            status: 200,
            stream: false,
            usage_source: "provider".into(),
        }
    }

    #[test]
    fn aggregates_and_renders() {
        let mut q = SpendQuery::current_month(NOW);
        q.group_by = vec![GroupBy::Model, GroupBy::Team];
        let mut agg = Aggregator::new(&q);
        agg.add(&rec("a", FEB, "t1", "m2", Some(2_500_000_000_000)));
        agg.add(&rec("b", FEB + 1, "t1", "m2", None));
        agg.add(&rec("c", FEB + 2, "t,\"2\"", "m1", Some(1)));
        agg.add(&rec("out", MAR, "t1", "m1", Some(1))); // outside the range
        let r = agg.finish();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].group[&GroupBy::Model].as_deref(), Some("m1"));
        assert_eq!(r.rows[1].requests, 2);
        assert_eq!(r.rows[1].unpriced_requests, 1);
        assert_eq!(r.rows[1].cost_usd, 2.5);
        assert_eq!(r.totals.requests, 3);
        assert_eq!(r.totals.cost_pico, 2_500_000_000_001);
        assert_eq!(r.totals.saved_pico, 15);
        assert_eq!(r.from, "2025-02-01T00:00:00.000Z");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rows"][0]["group"]["model"], "m1");
        assert_eq!(json["rows"][0]["group"]["team"], "t,\"2\"");
        assert_eq!(json["rows"][1]["cost_usd"], 2.5);
        assert_eq!(json["group_by"], serde_json::json!(["model", "team"]));
        let back: SpendReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        let csv = r.to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "model,team,requests,tokens_in,tokens_out,tokens_cached,tokens_cache_write,cost_usd,unpriced_requests,saved_usd,cache_hits"
        );
        assert_eq!(
            lines[1],
            "m1,\"t,\"\"2\"\"\",1,10,2,1,0,0.000000000001,0,0.000000000005,0"
        );
        assert_eq!(lines[2], "m2,t1,2,20,4,2,0,2.5,1,0.00000000001,0");
    }

    #[test]
    fn usd_floats_keep_cents_for_large_sums() {
        let pico = 123_456_789_012_345_678_901_u128; // $123,456,789.012...
        assert!((pico_to_usd(pico) - 123_456_789.012_345_68).abs() < 1e-6);
    }
}
