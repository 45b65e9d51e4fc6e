//! One conformance suite for both spend-ledger backends (embedded file, Redis), plus what only
//! one of them can show: reopening and crashing (embedded), a Redis restart, two replicas
//! appending to one Redis, the key scheme, retention, and a size check.
//!
//! Redis tests start their own `redis-server` on a free loopback port (see `tests/src/redis.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../tests/src/redis.rs"]
mod redis_server;

mod common;
use common::{TempDir, temp_path};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use redis_server::RedisServer;
use tollgate_cache_service::ledger::time::{MS_PER_DAY, days_from_civil};
use tollgate_cache_service::ledger::{
    self, EmbeddedLedger, Export, Format, GroupBy, Ledger, LedgerConfig, LedgerRecord,
    MemoryLedger, RedisLedger, RedisLedgerOptions, SpendQuery, SpendReport, SpendRow, TimeRange,
    now_ms,
};

fn ms_of(y: i64, m: u32, d: u32) -> u64 {
    days_from_civil(y, m, d) as u64 * MS_PER_DAY
}

/// 2025-03-01 and 2025-04-01, UTC.
fn mar() -> u64 {
    ms_of(2025, 3, 1)
}
fn apr() -> u64 {
    ms_of(2025, 4, 1)
}

fn rec(id: &str, time_ms: u64) -> LedgerRecord {
    LedgerRecord {
        time_ms,
        request_id: id.into(),
        org: "acme".into(),
        team: "t1".into(),
        user: Some("ann".into()),
        key: Some("key:0000000000000001".into()),
        api: Some("openai_chat".into()),
        model_requested: "m1".into(),
        model_used: "m1".into(),
        tokens_in: 100,
        tokens_out: 10,
        tokens_cached: 5,
        tokens_cache_write: 1,
        tokens_reasoning: 0,
        cost_pico: Some(1_000_000),
        saved_pico: 0,
        cache: "miss".into(),
        route: None,
        status: 200,
        stream: false,
        usage_source: "provider".into(),
    }
}

/// Records around March 2025: two just outside it, ties within one millisecond, varied teams,
/// models, users, keys, cache results, unpriced ones, and one with CSV-hostile text.
fn dataset() -> Vec<LedgerRecord> {
    let (mar, apr) = (mar(), apr());
    let mut v = vec![rec("before", mar - 1), rec("first", mar)];
    for i in 0..40u64 {
        let mut r = rec(&format!("r{i}"), mar + (i % 3) * MS_PER_DAY + i * 1000);
        r.team = if i % 2 == 0 { "t1" } else { "t2" }.into();
        r.model_used = if i % 3 == 0 { "m2" } else { "m1" }.into();
        r.model_requested = "m2".into();
        r.user = match i % 3 {
            0 => Some("ann".into()),
            1 => Some("bob".into()),
            _ => None,
        };
        r.key = (i % 5 != 0).then(|| format!("key:000000000000000{}", i % 2));
        r.cost_pico = (i % 7 != 0).then_some(1_000_000_000 * (i + 1));
        r.cache = match i % 4 {
            0 => "hit-exact",
            1 => "hit-semantic",
            _ => "miss",
        }
        .into();
        r.saved_pico = if i % 4 < 2 { 7 * i } else { 0 };
        r.tokens_in = 100 + i;
        r.tokens_out = 10 + 2 * i;
        r.tokens_cached = i;
        r.tokens_cache_write = i % 3;
        r.route = (i % 6 == 0).then(|| "downgrade:soft_limit".into());
        r.stream = i % 2 == 1;
        v.push(r);
    }
    // Six records of the same millisecond: ordered by request-id hash in both backends.
    for i in 0..6 {
        let mut r = rec(&format!("tie-{i}"), mar + 5 * MS_PER_DAY + 42);
        r.team = "t3".into();
        v.push(r);
    }
    let mut g = rec("globex-1", mar + 7 * MS_PER_DAY);
    g.org = "globex".into();
    g.team = "g1".into();
    v.push(g);
    let mut nasty = rec("nasty", mar + 9 * MS_PER_DAY);
    nasty.team = "a,b".into();
    nasty.user = Some("he said \"hi\"".into());
    nasty.route = Some("line1\nline2\r\nline3".into());
    nasty.model_used = "m\"x".into();
    nasty.cost_pico = None;
    v.push(nasty);
    v.push(rec("last", apr - 1));
    v.push(rec("after", apr));
    v
}

/// "Now" for query parsing: inside March 2025.
fn now() -> u64 {
    mar() + 10 * MS_PER_DAY
}

fn query(pairs: &[(&str, &str)]) -> SpendQuery {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    SpendQuery::from_query_pairs_at(&pairs, now()).unwrap()
}

/// The expected sums, computed naively (independently of the aggregator).
#[derive(Debug, Default, PartialEq)]
struct Sums {
    requests: u64,
    tokens_in: u64,
    tokens_out: u64,
    tokens_cached: u64,
    tokens_cache_write: u64,
    cost_pico: u128,
    unpriced: u64,
    saved_pico: u128,
    hits: u64,
}

fn sums<'a>(records: impl IntoIterator<Item = &'a LedgerRecord>) -> Sums {
    let mut s = Sums::default();
    for r in records {
        s.requests += 1;
        s.tokens_in += r.tokens_in;
        s.tokens_out += r.tokens_out;
        s.tokens_cached += r.tokens_cached;
        s.tokens_cache_write += r.tokens_cache_write;
        match r.cost_pico {
            Some(c) => s.cost_pico += c as u128,
            None => s.unpriced += 1,
        }
        s.saved_pico += r.saved_pico as u128;
        if r.cache == "hit-exact" || r.cache == "hit-semantic" {
            s.hits += 1;
        }
    }
    s
}

fn row_sums(r: &SpendRow) -> Sums {
    assert!(
        (r.cost_usd - r.cost_pico as f64 / 1e12).abs() < 1e-9,
        "cost_usd {} vs {}",
        r.cost_usd,
        r.cost_pico
    );
    Sums {
        requests: r.requests,
        tokens_in: r.tokens_in,
        tokens_out: r.tokens_out,
        tokens_cached: r.tokens_cached,
        tokens_cache_write: r.tokens_cache_write,
        cost_pico: r.cost_pico,
        unpriced: r.unpriced_requests,
        saved_pico: r.saved_pico,
        hits: r.cache_hits,
    }
}

/// Checks a report against the records it should cover: one row per group with naive sums,
/// and totals equal to the sum of the records (and of the rows).
fn check_report(report: &SpendReport, covered: &[&LedgerRecord], group_by: &[GroupBy]) {
    let mut expected: BTreeMap<Vec<Option<String>>, Vec<&LedgerRecord>> = BTreeMap::new();
    for r in covered {
        let key = group_by
            .iter()
            .map(|g| match g {
                GroupBy::Org => Some(r.org.clone()),
                GroupBy::Team => Some(r.team.clone()),
                GroupBy::User => r.user.clone(),
                GroupBy::Key => r.key.clone(),
                GroupBy::Model => Some(r.model_used.clone()),
                GroupBy::Day => {
                    let d = (r.time_ms / MS_PER_DAY) as i64;
                    let (y, m, dd) = ledger::time::civil_from_days(d);
                    Some(format!("{y:04}-{m:02}-{dd:02}"))
                }
            })
            .collect();
        expected.entry(key).or_default().push(r);
    }
    assert_eq!(report.group_by, group_by);
    assert_eq!(report.rows.len(), expected.len(), "{:#?}", report.rows);
    for (row, (key, records)) in report.rows.iter().zip(&expected) {
        let got: Vec<Option<String>> = group_by.iter().map(|g| row.group[g].clone()).collect();
        assert_eq!(&got, key);
        assert_eq!(
            row_sums(row),
            sums(records.iter().copied()),
            "group {key:?}"
        );
    }
    assert!(report.totals.group.is_empty());
    assert_eq!(row_sums(&report.totals), sums(covered.iter().copied()));
    let mut from_rows = Sums::default();
    for row in &report.rows {
        let s = row_sums(row);
        from_rows.requests += s.requests;
        from_rows.tokens_in += s.tokens_in;
        from_rows.tokens_out += s.tokens_out;
        from_rows.tokens_cached += s.tokens_cached;
        from_rows.tokens_cache_write += s.tokens_cache_write;
        from_rows.cost_pico += s.cost_pico;
        from_rows.unpriced += s.unpriced;
        from_rows.saved_pico += s.saved_pico;
        from_rows.hits += s.hits;
    }
    assert_eq!(from_rows, row_sums(&report.totals));
}

async fn export_all(ledger: &Arc<dyn Ledger>, q: &SpendQuery, page: usize) -> Vec<LedgerRecord> {
    let mut e = Export::from_query(ledger.clone(), q).page_size(page);
    let mut out = Vec::new();
    while let Some(p) = e.next_page().await.unwrap() {
        assert!(!p.records.is_empty() && p.records.len() <= page);
        out.extend(p.records);
    }
    out
}

/// In ledger order: time, then request-id hash.
fn sorted(mut v: Vec<LedgerRecord>) -> Vec<LedgerRecord> {
    v.sort_by_key(|r| r.position());
    v
}

/// A minimal RFC 4180 reader (quoted fields may hold commas, quotes and line breaks).
fn parse_csv(s: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => assert_eq!(chars.peek(), Some(&'\n'), "bare CR outside quotes"),
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "unterminated last line");
    rows
}

/// The behaviour every backend must have. `ledger` must start empty and keep records forever.
async fn conformance(ledger: Arc<dyn Ledger>) {
    ledger.ping().await.unwrap();
    let march = query(&[]);
    assert_eq!(
        march.range,
        TimeRange {
            from_ms: mar(),
            to_ms: apr()
        }
    );

    // Empty.
    let empty = ledger.query(&march).await.unwrap();
    assert!(empty.rows.is_empty());
    assert_eq!(empty.totals.requests, 0);
    assert!(export_all(&ledger, &march, 10).await.is_empty());
    let mut e = Export::from_query(ledger.clone(), &march);
    let chunk = e.next_chunk(Format::Csv).await.unwrap().unwrap();
    assert_eq!(chunk, ledger::csv_header());
    assert_eq!(e.next_chunk(Format::Csv).await.unwrap(), None);
    assert_eq!(ledger.append(&[]).await.unwrap(), 0);

    // Append; re-append is idempotent (also within one batch, and mixed with new records).
    let data = dataset();
    assert_eq!(ledger.append(&data[..10]).await.unwrap(), 10);
    assert_eq!(ledger.append(&data[..10]).await.unwrap(), 0);
    let dup_in_batch = [data[10].clone(), data[10].clone(), data[11].clone()];
    assert_eq!(ledger.append(&dup_in_batch).await.unwrap(), 2);
    assert_eq!(ledger.append(&data).await.unwrap(), data.len() as u64 - 12);
    assert_eq!(ledger.append(&data).await.unwrap(), 0);
    // The first write wins: a re-sent record with other figures changes nothing.
    let mut changed = data[5].clone();
    changed.cost_pico = Some(999_999_999_999);
    assert_eq!(ledger.append(&[changed]).await.unwrap(), 0);

    let in_march: Vec<&LedgerRecord> = data
        .iter()
        .filter(|r| r.time_ms >= mar() && r.time_ms < apr())
        .collect();
    assert_eq!(in_march.len(), data.len() - 2);

    // Range boundaries: [from, to), a date as `to` includes the whole day.
    let r = ledger.query(&march).await.unwrap();
    check_report(&r, &in_march, &[]);
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.totals.requests, in_march.len() as u64);
    let explicit = query(&[("from", "2025-03-01"), ("to", "2025-03-31")]);
    assert_eq!(explicit.range, march.range);
    let r = ledger.query(&explicit).await.unwrap();
    assert_eq!(r.totals.requests, in_march.len() as u64);
    let to_ms = (apr() - 1).to_string();
    let r = ledger
        .query(&query(&[("from", "2025-03-01T00:00:00Z"), ("to", &to_ms)]))
        .await
        .unwrap();
    assert_eq!(
        r.totals.requests,
        in_march.len() as u64 - 1,
        "`last` is at to"
    );
    let from_ms = (mar() - 1).to_string();
    let r = ledger
        .query(&query(&[
            ("from", &from_ms),
            ("to", "2025-04-01T00:00:00.001Z"),
        ]))
        .await
        .unwrap();
    assert_eq!(r.totals.requests, data.len() as u64, "both outside ones");
    let r = ledger
        .query(&query(&[("from", "2025-03-06"), ("to", "2025-03-06")]))
        .await
        .unwrap();
    assert_eq!(r.totals.requests, 6, "the ties of March 6");
    let r = ledger
        .query(&query(&[
            ("from", "2025-02-28T23:59:59.999+00:00"),
            ("to", "2025-03-01T01:00:00+01:00"),
        ]))
        .await
        .unwrap();
    assert_eq!(
        r.totals.requests, 1,
        "only `before`: the end is midnight UTC"
    );

    // Grouping.
    for groups in [
        vec![GroupBy::Team],
        vec![GroupBy::Model],
        vec![GroupBy::Day],
        vec![GroupBy::Team, GroupBy::Model],
        vec![GroupBy::Org, GroupBy::User, GroupBy::Key],
        vec![GroupBy::Day, GroupBy::Team, GroupBy::Model],
    ] {
        let mut q = march.clone();
        q.group_by = groups.clone();
        let r = ledger.query(&q).await.unwrap();
        check_report(&r, &in_march, &groups);
    }
    let r = ledger.query(&query(&[("group_by", "day")])).await.unwrap();
    let days: Vec<&str> = r
        .rows
        .iter()
        .map(|row| row.group[&GroupBy::Day].as_deref().unwrap())
        .collect();
    assert_eq!(
        days,
        [
            "2025-03-01",
            "2025-03-02",
            "2025-03-03",
            "2025-03-06",
            "2025-03-08",
            "2025-03-10",
            "2025-03-31"
        ]
    );
    // Users: records without one form a `null` group, first.
    let r = ledger.query(&query(&[("group_by", "user")])).await.unwrap();
    assert_eq!(r.rows[0].group[&GroupBy::User], None);

    // Filters (exact match; `model` is the model used).
    for (k, v) in [
        ("team", "t1"),
        ("team", "a,b"),
        ("model", "m2"),
        ("user", "bob"),
        ("key", "key:0000000000000001"),
        ("org", "globex"),
        ("team", "nobody"),
    ] {
        let r = ledger
            .query(&query(&[(k, v), ("group_by", "model,team")]))
            .await
            .unwrap();
        let covered: Vec<&LedgerRecord> = in_march
            .iter()
            .copied()
            .filter(|r| match k {
                "team" => r.team == v,
                "model" => r.model_used == v,
                "user" => r.user.as_deref() == Some(v),
                "key" => r.key.as_deref() == Some(v),
                "org" => r.org == v,
                _ => unreachable!(),
            })
            .collect();
        check_report(&r, &covered, &[GroupBy::Model, GroupBy::Team]);
    }
    let r = ledger
        .query(&query(&[("team", "t2"), ("model", "m1"), ("user", "bob")]))
        .await
        .unwrap();
    let n = in_march
        .iter()
        .filter(|r| r.team == "t2" && r.model_used == "m1" && r.user.as_deref() == Some("bob"))
        .count();
    assert_eq!(r.totals.requests, n as u64);
    assert!(n > 0);

    // Unpriced records are counted, not costed.
    let r = ledger.query(&query(&[("team", "a,b")])).await.unwrap();
    assert_eq!(
        (
            r.totals.requests,
            r.totals.unpriced_requests,
            r.totals.cost_pico
        ),
        (1, 1, 0)
    );

    // Export: every record of the range once, in (time, request-id hash) order, over pages
    // of every size (ties of one millisecond cross page boundaries).
    let want = sorted(in_march.iter().map(|r| (*r).clone()).collect());
    for page in [1, 2, 3, 4, 7, 1000] {
        assert_eq!(
            export_all(&ledger, &march, page).await,
            want,
            "page size {page}"
        );
    }
    let mut q = march.clone();
    q.filter.team = Some("t3".into());
    let ties = export_all(&ledger, &q, 2).await;
    let mut e = ledger::export(ledger.clone(), q.range, q.filter.clone()).page_size(4);
    assert_eq!(e.next_page().await.unwrap().unwrap().records, ties[..4]);
    assert_eq!(ties.len(), 6);
    assert!(ties.windows(2).all(|w| w[0].position() < w[1].position()));

    // Paging with the cursor a client passes back.
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut pairs = vec![("limit", "4".to_string())];
        if let Some(c) = &cursor {
            pairs.push(("cursor", c.clone()));
        }
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let q = query(&pairs);
        let mut e = Export::from_query(ledger.clone(), &q);
        let Some(p) = e.next_page().await.unwrap() else {
            break;
        };
        got.extend(p.records);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(got, want);

    // CSV: header, one line per record, RFC 4180 quoting of commas, quotes and line breaks.
    let mut e = Export::from_query(ledger.clone(), &march).page_size(5);
    let mut csv = String::new();
    while let Some(chunk) = e.next_chunk(Format::Csv).await.unwrap() {
        csv.push_str(&chunk);
    }
    let rows = parse_csv(&csv);
    assert_eq!(rows.len(), want.len() + 1);
    let cols: HashMap<&str, usize> = rows[0]
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    assert_eq!(rows[0], ledger::export::CSV_COLUMNS);
    for (row, r) in rows[1..].iter().zip(&want) {
        assert_eq!(row.len(), cols.len());
        assert_eq!(row[cols["request_id"]], r.request_id);
        assert_eq!(row[cols["team"]], r.team);
        assert_eq!(row[cols["user"]], r.user.clone().unwrap_or_default());
        assert_eq!(row[cols["route"]], r.route.clone().unwrap_or_default());
        assert_eq!(row[cols["model_used"]], r.model_used);
        assert_eq!(row[cols["time_ms"]], r.time_ms.to_string());
        assert_eq!(
            row[cols["cost_pico"]],
            r.cost_pico.map(|c| c.to_string()).unwrap_or_default()
        );
    }
    let nasty = rows
        .iter()
        .find(|row| row[cols["request_id"]] == "nasty")
        .unwrap();
    assert_eq!(nasty[cols["team"]], "a,b");
    assert_eq!(nasty[cols["user"]], "he said \"hi\"");
    assert_eq!(nasty[cols["route"]], "line1\nline2\r\nline3");
    assert_eq!(nasty[cols["cost_usd"]], "");
    let r1 = rows
        .iter()
        .find(|row| row[cols["request_id"]] == "r1")
        .unwrap();
    assert_eq!(r1[cols["cost_usd"]], "0.002");
    assert_eq!(r1[cols["time"]], "2025-03-02T00:00:01.000Z");

    // JSONL: one record per line, round trip.
    let mut e = Export::from_query(ledger.clone(), &march).page_size(3);
    let mut jsonl = String::new();
    while let Some(chunk) = e.next_chunk(Format::Jsonl).await.unwrap() {
        jsonl.push_str(&chunk);
    }
    let back: Vec<LedgerRecord> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, want);
    assert_eq!(ledger::render_jsonl(&want), jsonl);

    // The report's CSV form.
    let r = ledger
        .query(&query(&[("group_by", "team"), ("format", "csv")]))
        .await
        .unwrap();
    let rows = parse_csv(&r.to_csv());
    assert_eq!(rows.len(), r.rows.len() + 1);
    assert!(rows.iter().any(|row| row[0] == "a,b"));

    // Retention: prune deletes what is older, and only that.
    assert_eq!(ledger.prune(mar()).await.unwrap(), 1);
    assert_eq!(ledger.prune(mar()).await.unwrap(), 0);
    let r = ledger.query(&query(&[("to", "2025-12-31")])).await.unwrap();
    assert_eq!(r.totals.requests, data.len() as u64 - 1);
    ledger.ping().await.unwrap();
}

fn redis() -> RedisServer {
    RedisServer::start().expect("cannot start redis-server (run `make setup`)")
}

/// Keep forever (the test data is from 2025), small pages so scans cross page boundaries and
/// the ties of one millisecond.
fn redis_opts(ns: &str) -> RedisLedgerOptions {
    RedisLedgerOptions {
        retention_days: 0,
        batch: 3,
        ..RedisLedgerOptions::new(ns)
    }
}

// ---------------------------------------------------------------- memory (the test fake)

#[tokio::test]
async fn memory_conformance() {
    conformance(Arc::new(MemoryLedger::new())).await;
}

// ---------------------------------------------------------------- embedded

#[tokio::test]
async fn embedded_conformance() {
    let dir = TempDir(temp_path("conf"));
    let l = EmbeddedLedger::open_with(dir.0.join("nested/ledger.redb"), 0)
        .await
        .unwrap();
    conformance(Arc::new(l)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_conformance_multi_thread_runtime() {
    let dir = TempDir(temp_path("conf-mt"));
    let l = EmbeddedLedger::open_with(dir.0.join("ledger.redb"), 0)
        .await
        .unwrap();
    conformance(Arc::new(l)).await;
}

#[tokio::test]
async fn embedded_survives_reopen_and_stays_idempotent() {
    let dir = TempDir(temp_path("reopen"));
    let path = dir.0.join("ledger.redb");
    let data = dataset();
    {
        let l = EmbeddedLedger::open_with(&path, 0).await.unwrap();
        assert_eq!(l.append(&data).await.unwrap(), data.len() as u64);
    } // dropped: reopening at once must work
    let l: Arc<dyn Ledger> = Arc::new(EmbeddedLedger::open_with(&path, 0).await.unwrap());
    assert_eq!(l.append(&data).await.unwrap(), 0);
    assert_eq!(
        export_all(&l, &query(&[]), 100).await,
        sorted(
            data.iter()
                .filter(|r| r.time_ms >= mar() && r.time_ms < apr())
                .cloned()
                .collect()
        )
    );
}

#[tokio::test]
async fn embedded_retention_applies_on_open() {
    let dir = TempDir(temp_path("retention"));
    let path = dir.0.join("ledger.redb");
    let now = now_ms();
    let old = rec("old", now - 40 * MS_PER_DAY);
    let recent = rec("recent", now - MS_PER_DAY);
    {
        let l = EmbeddedLedger::open_with(&path, 0).await.unwrap();
        l.append(&[old.clone(), recent.clone()]).await.unwrap();
        assert_eq!(l.record_count().await.unwrap(), 2);
    }
    let l = EmbeddedLedger::open_with(&path, 30).await.unwrap();
    assert_eq!(l.record_count().await.unwrap(), 1);
    let all = l
        .scan(
            ledger::ScanFrom::At(ledger::Position::start_of(0)),
            u64::MAX,
            10,
        )
        .await
        .unwrap();
    assert_eq!(all, [recent]);
    // A pruned id may be stored again (it is past retention, not a re-send).
    assert_eq!(l.append(&[old]).await.unwrap(), 1);
}

/// Run as a child process by `embedded_acknowledged_appends_survive_a_crash`: appends until
/// killed, printing each acknowledged append.
#[tokio::test]
#[ignore = "child process of embedded_acknowledged_appends_survive_a_crash"]
async fn crash_child_appender() {
    let Ok(path) = std::env::var("TOLLGATE_CRASH_LEDGER") else {
        return;
    };
    let l = EmbeddedLedger::open_with(&path, 0).await.unwrap();
    for i in 0u64.. {
        let batch: Vec<LedgerRecord> = (0..10)
            .map(|j| rec(&format!("c{i}-{j}"), mar() + i))
            .collect();
        l.append(&batch).await.unwrap();
        println!("acked {i}");
    }
}

#[tokio::test]
async fn embedded_acknowledged_appends_survive_a_crash() {
    use std::io::BufRead;
    let dir = TempDir(temp_path("crash"));
    let path = dir.0.join("ledger.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_appender",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("TOLLGATE_CRASH_LEDGER", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(i) = line.unwrap().strip_prefix("acked ") {
            let i: u64 = i.parse().unwrap();
            acked = Some(i);
            if i >= 30 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-append
    child.wait().unwrap();
    let acked = acked.expect("child appended nothing");
    let l = EmbeddedLedger::open_with(&path, 0).await.unwrap();
    let stored: HashSet<String> = l
        .scan(
            ledger::ScanFrom::At(ledger::Position::start_of(0)),
            u64::MAX,
            1_000_000,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    for i in 0..=acked {
        for j in 0..10 {
            assert!(
                stored.contains(&format!("c{i}-{j}")),
                "acknowledged append {i} lost in the crash"
            );
        }
    }
    // Appends are all-or-nothing: the batch in flight is whole or absent.
    assert_eq!(stored.len() % 10, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_appends_are_deduplicated() {
    let dir = TempDir(temp_path("concurrent"));
    let l: Arc<dyn Ledger> = Arc::new(
        EmbeddedLedger::open_with(dir.0.join("ledger.redb"), 0)
            .await
            .unwrap(),
    );
    let all: Vec<LedgerRecord> = (0..2000u64)
        .map(|i| rec(&format!("x{i}"), mar() + i * 1000))
        .collect();
    let all = Arc::new(all);
    // Eight writers, overlapping halves, small batches: group-committed, each id stored once.
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let (l, all) = (l.clone(), all.clone());
            tokio::spawn(async move {
                let start = (w % 2) * 1000;
                let mut n = 0;
                for chunk in all[start..start + 1000].chunks(50 + w) {
                    n += l.append(chunk).await.unwrap();
                }
                n
            })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        new += t.await.unwrap();
    }
    assert_eq!(new, 2000);
    let r = l.query(&query(&[])).await.unwrap();
    assert_eq!(r.totals.requests, 2000);
}

#[tokio::test]
async fn embedded_open_twice_is_refused_while_open() {
    let dir = TempDir(temp_path("twice"));
    let path = dir.0.join("ledger.redb");
    let first = EmbeddedLedger::open(&path).await.unwrap();
    let err = EmbeddedLedger::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("ledger unavailable"), "{err}");
    drop(first);
    EmbeddedLedger::open(&path).await.unwrap();
}

#[tokio::test]
async fn embedded_refuses_a_file_of_another_format() {
    let dir = TempDir(temp_path("format"));
    let path = dir.0.join("ledger.redb");
    std::fs::create_dir_all(&dir.0).unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx
                .open_table(redb::TableDefinition::<&str, u64>::new("ledger_meta"))
                .unwrap();
            t.insert("format", 99).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = EmbeddedLedger::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("ledger format 99"), "{err}");
}

// ---------------------------------------------------------------- redis

#[tokio::test]
async fn redis_conformance() {
    let server = redis();
    let l = RedisLedger::connect_with(&server.url(), redis_opts("conf"))
        .await
        .unwrap();
    conformance(Arc::new(l)).await;
}

#[tokio::test]
async fn backends_agree_on_order_and_reports() {
    let dir = TempDir(temp_path("agree"));
    let server = redis();
    let e: Arc<dyn Ledger> = Arc::new(
        EmbeddedLedger::open_with(dir.0.join("ledger.redb"), 0)
            .await
            .unwrap(),
    );
    let r: Arc<dyn Ledger> = Arc::new(
        RedisLedger::connect_with(&server.url(), redis_opts("agree"))
            .await
            .unwrap(),
    );
    let data = dataset();
    e.append(&data).await.unwrap();
    r.append(&data).await.unwrap();
    let q = query(&[("group_by", "day,team,model,user,key,org")]);
    assert_eq!(e.query(&q).await.unwrap(), r.query(&q).await.unwrap());
    assert_eq!(export_all(&e, &q, 5).await, export_all(&r, &q, 5).await);
}

#[tokio::test]
async fn open_picks_the_configured_backend() {
    let dir = TempDir(temp_path("open"));
    let config = LedgerConfig::embedded_in(&dir.0);
    let LedgerConfig::Embedded { path, .. } = &config else {
        panic!("embedded")
    };
    assert_eq!(path, &dir.0.join("ledger.redb"));
    let l = ledger::open(&config).await.unwrap();
    let now = now_ms();
    l.append(&[rec("a", now)]).await.unwrap();
    drop(l);
    let l = ledger::open(&config).await.unwrap();
    let r = l.query(&SpendQuery::current_month(now)).await.unwrap();
    assert_eq!(r.totals.requests, 1);

    let server = redis();
    let shared = LedgerConfig::Redis {
        url: server.url(),
        namespace: "tg".into(),
        retention_days: 400,
    };
    let a = ledger::open(&shared).await.unwrap();
    let b = ledger::open(&shared).await.unwrap();
    a.append(&[rec("a", now)]).await.unwrap();
    assert_eq!(b.append(&[rec("a", now)]).await.unwrap(), 0);
    let r = b.query(&SpendQuery::current_month(now)).await.unwrap();
    assert_eq!(r.totals.requests, 1);
}

#[tokio::test]
async fn redis_keys_hold_no_names_and_expire_with_retention() {
    let server = redis();
    let mut opts = RedisLedgerOptions::new("tg");
    opts.retention_days = 30;
    let l = RedisLedger::connect_with(&server.url(), opts)
        .await
        .unwrap();
    let now = now_ms();
    let mut r = rec("Request-Confidential", now);
    r.team = "Team-Confidential".into();
    r.user = Some("User-Confidential".into());
    r.key = Some("key:feedfacefeedface".into());
    r.model_used = "Model-Confidential".into();
    let old = rec("old-one", now - 40 * MS_PER_DAY);
    assert_eq!(l.append(&[r.clone(), old]).await.unwrap(), 2);

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 4, "{keys:?}");
    for k in &keys {
        assert!(k.starts_with("tg:ledger:"), "{k}");
        let lower = k.to_lowercase();
        for s in ["confidential", "feedface", "old-one"] {
            assert!(!lower.contains(s), "key {k} holds {s}");
        }
        assert!(
            k.split(':').skip(1).all(|p| p
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b.is_ascii_lowercase())),
            "{k}"
        );
        let ttl: i64 = redis::cmd("TTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        if k.ends_with(":days") {
            assert_eq!(ttl, -1, "{k}");
        } else {
            // End of the record's day + 30 days, or an hour for one already past retention.
            assert!(ttl > 0 && ttl <= 31 * 86_400, "{k}: ttl {ttl}");
        }
    }
    // The old record is past retention: not reported (its day left the index), expiring soon.
    let all = query(&[("from", "0"), ("to", &(now + 1).to_string())]);
    let got = export_all(&(Arc::new(l) as Arc<dyn Ledger>), &all, 10).await;
    assert_eq!(got, [r]);
}

#[tokio::test]
async fn redis_survives_new_instance_and_server_restart() {
    let mut server = redis();
    let data = dataset();
    {
        let l = RedisLedger::connect_with(&server.url(), redis_opts("tg"))
            .await
            .unwrap();
        l.append(&data[..20]).await.unwrap();
    }
    let l: Arc<dyn Ledger> = Arc::new(
        RedisLedger::connect_with(&server.url(), redis_opts("tg"))
            .await
            .unwrap(),
    );
    assert_eq!(l.append(&data[..20]).await.unwrap(), 0);
    // The server restarts (append-only file): the data is there, and this instance reconnects
    // without failing a call.
    server.restart().unwrap();
    assert_eq!(l.append(&data).await.unwrap(), data.len() as u64 - 20);
    let want = sorted(
        data.iter()
            .filter(|r| r.time_ms >= mar() && r.time_ms < apr())
            .cloned()
            .collect(),
    );
    server.restart().unwrap();
    assert_eq!(export_all(&l, &query(&[]), 7).await, want);
    let r = l.query(&query(&[])).await.unwrap();
    assert_eq!(r.totals.requests, want.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_instances_append_concurrently() {
    let server = redis();
    let a: Arc<dyn Ledger> = Arc::new(RedisLedger::connect(&server.url(), "shared").await.unwrap());
    let b: Arc<dyn Ledger> = Arc::new(RedisLedger::connect(&server.url(), "shared").await.unwrap());
    let now = now_ms();
    let (from, _) = ledger::time::month_bounds(now);
    let all: Arc<Vec<LedgerRecord>> = Arc::new(
        (0..3000u64)
            .map(|i| rec(&format!("s{i}"), from + i % (now - from)))
            .collect(),
    );
    // Overlapping ranges, different batch sizes: every id stored once, whoever got there first.
    let run = |l: Arc<dyn Ledger>, range: std::ops::Range<usize>, size: usize| {
        let all = all.clone();
        tokio::spawn(async move {
            let mut n = 0;
            for chunk in all[range].chunks(size) {
                n += l.append(chunk).await.unwrap();
            }
            n
        })
    };
    let ta = run(a.clone(), 0..2000, 100);
    let tb = run(b.clone(), 1000..3000, 37);
    let tc = run(b.clone(), 0..3000, 250);
    let new = ta.await.unwrap() + tb.await.unwrap() + tc.await.unwrap();
    assert_eq!(new, 3000);
    let q = SpendQuery::current_month(now);
    let (ra, rb) = (a.query(&q).await.unwrap(), b.query(&q).await.unwrap());
    assert_eq!(ra, rb);
    assert_eq!(ra.totals.requests, 3000);
    assert_eq!(ra.totals.cost_pico, 3000 * 1_000_000);
}

#[tokio::test]
async fn redis_connect_fails_cleanly() {
    let mut opts = RedisLedgerOptions::new("tg");
    opts.connect_retries = 0;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = RedisLedger::connect_with(&format!("redis://127.0.0.1:{port}/"), opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ledger unavailable"), "{err}");
    let err = RedisLedger::connect("redis://127.0.0.1:1/", "bad:ns")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid namespace"), "{err}");
}

// ---------------------------------------------------------------- size

/// Appends `TOLLGATE_LEDGER_SIZE` (default 100,000) records spread over one month to each
/// backend, then queries and exports them, printing the times (not asserted: shared CI
/// machines vary). Run with `--nocapture` to see the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_check_both_backends() {
    let n: u64 = std::env::var("TOLLGATE_LEDGER_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let records: Vec<LedgerRecord> = (0..n)
        .map(|i| {
            let mut r = rec(
                &format!("size-{i}"),
                mar() + i * (30 * MS_PER_DAY / n.max(1)),
            );
            r.team = format!("team-{}", i % 20);
            r.model_used = format!("model-{}", i % 5);
            r.user = Some(format!("user-{}", i % 200));
            r.cost_pico = Some(i);
            r
        })
        .collect();
    let dir = TempDir(temp_path("size"));
    let server = redis();
    let backends: Vec<(&str, Arc<dyn Ledger>)> = vec![
        (
            "embedded",
            Arc::new(
                EmbeddedLedger::open_with(dir.0.join("ledger.redb"), 0)
                    .await
                    .unwrap(),
            ),
        ),
        (
            "redis",
            Arc::new(
                RedisLedger::connect_with(
                    &server.url(),
                    RedisLedgerOptions {
                        retention_days: 0,
                        ..RedisLedgerOptions::new("size")
                    },
                )
                .await
                .unwrap(),
            ),
        ),
    ];
    for (name, l) in backends {
        let t = Instant::now();
        let mut new = 0;
        for chunk in records.chunks(1000) {
            new += l.append(chunk).await.unwrap();
        }
        let append = t.elapsed();
        assert_eq!(new, n);
        let t = Instant::now();
        let again = l.append(&records[..1000.min(records.len())]).await.unwrap();
        let reappend = t.elapsed();
        assert_eq!(again, 0);

        let q = query(&[("group_by", "team,model,day")]);
        let t = Instant::now();
        let r = l.query(&q).await.unwrap();
        let grouped = t.elapsed();
        let grouped_rows = r.rows.len();
        assert_eq!(r.totals.requests, n);
        assert_eq!(r.totals.cost_pico, (n as u128) * (n as u128 - 1) / 2);

        let t = Instant::now();
        let r = l.query(&query(&[("team", "team-3")])).await.unwrap();
        let filtered = t.elapsed();
        assert_eq!(r.totals.requests, n / 20);

        let t = Instant::now();
        let mut e = Export::from_query(l.clone(), &query(&[]));
        let (mut lines, mut bytes, mut max_chunk) = (0usize, 0usize, 0usize);
        while let Some(chunk) = e.next_chunk(Format::Csv).await.unwrap() {
            lines += chunk.matches("\r\n").count();
            bytes += chunk.len();
            max_chunk = max_chunk.max(chunk.len());
        }
        let export = t.elapsed();
        assert_eq!(lines as u64, n + 1);
        println!(
            "ledger size check [{name}]: {n} records: append {:.2?} ({:.0} rec/s, batches of 1000), \
             re-append 1000 {:.2?}, query group_by team,model,day {:.2?} ({} rows), \
             query team filter {:.2?}, CSV export {:.2?} ({:.1} MB, largest chunk {:.1} MB)",
            append,
            n as f64 / append.as_secs_f64(),
            reappend,
            grouped,
            grouped_rows,
            filtered,
            export,
            bytes as f64 / 1e6,
            max_chunk as f64 / 1e6
        );
    }
}
