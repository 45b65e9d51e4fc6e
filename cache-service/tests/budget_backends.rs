//! Budgets against both backends (embedded file, Redis): one conformance suite run on each, and
//! what only one of them can show (reopening the file, a Redis restart, replicas sharing Redis),
//! plus the concurrency guarantee: N reservations fit, never one more.
//!
//! Redis tests start their own `redis-server` on a free loopback port (see `tests/src/redis.rs`).
//! The clock is injected: every call gets `now_ms`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../tests/src/redis.rs"]
mod redis_server;

mod common;
use common::{TempDir, temp_path};
use std::sync::Arc;

use redis_server::RedisServer;
use tollgate_cache_service::budget::window::days_from_civil;
use tollgate_cache_service::budget::{
    BudgetConfig, BudgetDef, BudgetError, BudgetOptions, Budgets, Charge, EmbeddedBudgetStore,
    Period, RedisBudgetStore, ScopeKind, SettleOutcome, UsageFilter, UsageReport,
};
use tollgate_wire::admit::{BudgetDecision, BudgetQuery, BudgetVerdict, Identity};

const USD: u64 = 1_000_000_000_000;
const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Unix ms of a UTC date and time.
fn at(y: i64, mo: u32, d: u32, h: u64, mi: u64, s: u64) -> u64 {
    days_from_civil(y, mo, d) as u64 * DAY + h * HOUR + mi * MINUTE + s * SECOND
}

/// Monday 2025-03-10 12:00:30 UTC.
fn t0() -> u64 {
    at(2025, 3, 10, 12, 0, 30)
}

fn def(id: &str, scope: ScopeKind, target: &str, period: Period) -> BudgetDef {
    BudgetDef {
        id: id.into(),
        scope,
        target: target.into(),
        period,
        reset_hour_utc: None,
        reset_day_of_month: None,
        limit_usd: None,
        limit_input_tokens: None,
        limit_output_tokens: None,
        limit_tokens: None,
        soft_fraction: None,
        downgrade_to: None,
    }
}

fn usd(id: &str, scope: ScopeKind, target: &str, period: Period, limit: f64) -> BudgetDef {
    BudgetDef {
        limit_usd: Some(limit),
        ..def(id, scope, target, period)
    }
}

fn ident(org: &str, team: &str, user: Option<&str>, key: Option<&str>) -> Identity {
    Identity {
        org: org.into(),
        team: team.into(),
        user: user.map(Into::into),
        key: key.map(Into::into),
    }
}

fn ann() -> Identity {
    ident("acme", "search", Some("ann"), Some("key:00ff00ff00ff00ff"))
}

fn query(cost_pico: u64, input: u64, output: u64) -> BudgetQuery {
    BudgetQuery {
        input_tokens: input,
        max_output_tokens: output,
        max_cost_pico: Some(cost_pico),
    }
}

fn charge(cost_pico: u64, input: u64, output: u64) -> Charge {
    Charge {
        cost_pico,
        input_tokens: input,
        output_tokens: output,
    }
}

fn opts() -> BudgetOptions {
    BudgetOptions {
        reservation_ttl_ms: 5 * MINUTE,
        defs_refresh_ms: 0,
        ..BudgetOptions::default()
    }
}

async fn usage_of(b: &Budgets, id: &str, scope: &str, now: u64) -> UsageReport {
    let filter = UsageFilter {
        budget_id: Some(id.into()),
        scope: Some(scope.into()),
    };
    let mut rows = b.usage(&filter, now).await.unwrap();
    assert_eq!(rows.len(), 1, "usage of {id} {scope}: {rows:?}");
    rows.remove(0)
}

fn rejection(d: &BudgetDecision) -> &tollgate_wire::admit::BudgetRejection {
    assert_eq!(d.verdict, BudgetVerdict::Reject, "{d:?}");
    d.rejection.as_ref().expect("a rejection")
}

/// Everything both backends must do alike. `b` is fresh (no definitions).
async fn conformance(b: &Budgets) {
    let now = t0();
    let id = ann();

    // No budget: allowed, nothing reserved, nothing to settle.
    let d = b.admit(&id, &query(USD, 10, 10), now).await.unwrap();
    assert_eq!(d, BudgetDecision::default());
    let s = b
        .settle(None, "r0", &id, charge(1, 1, 1), now)
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::NoBudget);

    // Definitions: validation, normalisation, replace, list order, delete.
    let bad = b
        .put(usd("x", ScopeKind::Team, "a", Period::Hour, -1.0))
        .await
        .unwrap_err();
    assert!(
        matches!(bad, BudgetError::Invalid(ref m) if m.contains("limitUsd")),
        "{bad}"
    );
    let team = b
        .put(usd(
            "team-day",
            ScopeKind::Team,
            "team:search",
            Period::Day,
            10.0,
        ))
        .await
        .unwrap();
    assert_eq!(team.target, "search");
    b.put(usd("zz", ScopeKind::Org, "other", Period::Day, 1.0))
        .await
        .unwrap();
    b.put(usd("aa", ScopeKind::Org, "other", Period::Day, 2.0))
        .await
        .unwrap();
    let ids: Vec<String> = b.list().await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["aa", "team-day", "zz"]);
    b.put(usd("aa", ScopeKind::Org, "other", Period::Day, 3.0))
        .await
        .unwrap();
    assert_eq!(b.get("aa").await.unwrap().unwrap().limit_usd, Some(3.0));
    assert!(b.delete("aa").await.unwrap());
    assert!(b.delete("zz").await.unwrap());
    assert!(!b.delete("zz").await.unwrap());
    assert_eq!(b.list().await.unwrap(), vec![team]);

    // Reserve, then settle: the difference is released, a repeat changes nothing.
    let u = usage_of(b, "team-day", "team:search", now).await;
    assert_eq!((u.spent.cost_pico, u.reserved.cost_pico), (0, 0));
    assert_eq!(u.window_start_ms, at(2025, 3, 10, 0, 0, 0));
    let d = b.admit(&id, &query(3 * USD, 100, 500), now).await.unwrap();
    assert_eq!(d.verdict, BudgetVerdict::Allow);
    assert_eq!(d.remaining_pico, Some(7 * USD));
    let rid = d.reservation_id.clone().unwrap();
    assert_eq!(rid.len(), 32);
    let u = usage_of(b, "team-day", "team:search", now).await;
    assert_eq!(u.reserved, charge(3 * USD, 100, 500));
    assert_eq!(u.remaining_pico, Some(7 * USD));
    let s = b
        .settle(
            Some(&rid),
            "req-1",
            &id,
            charge(USD, 100, 120),
            now + SECOND,
        )
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Reservation);
    let u = usage_of(b, "team-day", "team:search", now).await;
    assert_eq!(u.spent, charge(USD, 100, 120));
    assert_eq!(u.reserved, charge(0, 0, 0));
    assert_eq!(u.remaining_pico, Some(9 * USD));
    let s = b
        .settle(
            Some(&rid),
            "req-1",
            &id,
            charge(USD, 100, 120),
            now + 2 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Duplicate);
    assert_eq!(
        usage_of(b, "team-day", "team:search", now)
            .await
            .spent
            .cost_pico,
        USD
    );

    // Hard USD limit: $1 spent + 2 x $4 reserved = $9; another $4 does not fit, $1 does.
    let r1 = b.admit(&id, &query(4 * USD, 1, 1), now).await.unwrap();
    let r2 = b.admit(&id, &query(4 * USD, 1, 1), now).await.unwrap();
    assert_eq!(r2.remaining_pico, Some(USD));
    let d = b.admit(&id, &query(4 * USD, 1, 1), now).await.unwrap();
    let r = rejection(&d);
    assert_eq!(r.code, "budget_exceeded");
    assert_eq!(r.scope, "team:search");
    assert_eq!(r.period, "day");
    let to_midnight = (at(2025, 3, 11, 0, 0, 0) - now) / SECOND;
    assert_eq!(r.retry_after_seconds, Some(to_midnight));
    assert_eq!(
        r.message,
        "team:search has used $9.00 of its $10.00 daily budget (this request needs up to $4.00); resets in 11h 59m"
    );
    assert_eq!(d.reservation_id, None);
    assert_eq!(d.remaining_pico, Some(USD));
    // Nothing was reserved by the rejection.
    let u = usage_of(b, "team-day", "team:search", now).await;
    assert_eq!(u.reserved.cost_pico, 8 * USD);
    let fits = b.admit(&id, &query(USD, 1, 1), now).await.unwrap();
    assert_eq!(fits.verdict, BudgetVerdict::Allow);
    assert_eq!(fits.remaining_pico, Some(0));
    // Used up: even a request that reserves nothing (unpriced model) is refused.
    let unpriced = BudgetQuery {
        max_cost_pico: None,
        ..query(0, 1, 1)
    };
    rejection(&b.admit(&id, &unpriced, now).await.unwrap());
    for d in [&r1, &r2, &fits] {
        let s = b
            .settle(d.reservation_id.as_deref(), "", &id, charge(0, 0, 0), now)
            .await
            .unwrap();
        assert_eq!(s, SettleOutcome::Reservation);
    }
    let u = usage_of(b, "team-day", "team:search", now).await;
    assert_eq!(u.spent.cost_pico, USD);
    assert_eq!(u.reserved, charge(0, 0, 0));

    // The next day is a new window.
    let tomorrow = at(2025, 3, 11, 0, 0, 0);
    let u = usage_of(b, "team-day", "team:search", tomorrow).await;
    assert_eq!((u.spent.cost_pico, u.window_start_ms), (0, tomorrow));

    nested_scopes(b, now).await;
    soft_limit(b, now).await;
    big_numbers(b, now).await;
    expiry_and_unreserved(b, now).await;
}

/// Org, team, user and key budgets all apply; each can refuse.
async fn nested_scopes(b: &Budgets, now: u64) {
    b.put(usd(
        "org-month",
        ScopeKind::Org,
        "acme",
        Period::Month,
        100.0,
    ))
    .await
    .unwrap();
    b.put(BudgetDef {
        limit_output_tokens: Some(1000),
        ..def("user-out", ScopeKind::User, "*", Period::Minute)
    })
    .await
    .unwrap();
    b.put(BudgetDef {
        limit_tokens: Some(5000),
        limit_usd: Some(2.0),
        ..def("key-hour", ScopeKind::Key, "*", Period::Hour)
    })
    .await
    .unwrap();
    let id = ann();
    // Every scope's window holds the reservation.
    let first = b.admit(&id, &query(USD, 100, 600), now).await.unwrap();
    assert_eq!(first.verdict, BudgetVerdict::Allow);
    // Tightest USD: the key's $2 budget.
    assert_eq!(first.remaining_pico, Some(USD));
    for (bid, scope) in [
        ("org-month", "org:acme"),
        ("team-day", "team:search"),
        ("user-out", "user:ann"),
        ("key-hour", "key:00ff00ff00ff00ff"),
    ] {
        let u = usage_of(b, bid, scope, now).await;
        assert_eq!(u.reserved, charge(USD, 100, 600), "{bid}");
    }
    // The user's output tokens per minute refuse the next one: rate_limited, retry at the
    // minute's end (30 s into it).
    let d = b.admit(&id, &query(1, 10, 600), now).await.unwrap();
    let r = rejection(&d);
    assert_eq!(
        (r.code.as_str(), r.scope.as_str(), r.period.as_str()),
        ("rate_limited", "user:ann", "minute")
    );
    assert_eq!(r.retry_after_seconds, Some(30));
    assert!(
        r.message
            .starts_with("user:ann has used 600 of its 1,000 output tokens per minute"),
        "{}",
        r.message
    );
    // Another user of the same team and key: the user budget is per user (`*`), but the key's
    // $2 per hour is shared.
    let bob = ident("acme", "search", Some("bob"), Some("key:00ff00ff00ff00ff"));
    let d = b.admit(&bob, &query(2 * USD, 10, 10), now).await.unwrap();
    let r = rejection(&d);
    assert_eq!(
        (r.code.as_str(), r.scope.as_str()),
        ("budget_exceeded", "key:00ff00ff00ff00ff")
    );
    assert_eq!(r.period, "hour");
    assert_eq!(r.retry_after_seconds, Some(59 * 60 + 30));
    // Bob with another key passes; the org sees both.
    let bob2 = ident("acme", "search", Some("bob"), Some("key:1111"));
    let d2 = b.admit(&bob2, &query(2 * USD, 10, 10), now).await.unwrap();
    assert_eq!(d2.verdict, BudgetVerdict::Allow);
    assert_eq!(
        usage_of(b, "org-month", "org:acme", now)
            .await
            .reserved
            .cost_pico,
        3 * USD
    );
    // The org's monthly budget refuses anyone of the org once used up.
    let carol = ident("acme", "ads", Some("carol"), None);
    let d3 = b.admit(&carol, &query(98 * USD, 1, 1), now).await.unwrap();
    let r = rejection(&d3);
    assert_eq!((r.scope.as_str(), r.period.as_str()), ("org:acme", "month"));
    assert_eq!(
        r.retry_after_seconds,
        Some((at(2025, 4, 1, 0, 0, 0) - now) / SECOND)
    );
    // The user budgets are listed per member.
    let users = b
        .usage(
            &UsageFilter {
                budget_id: Some("user-out".into()),
                scope: None,
            },
            now,
        )
        .await
        .unwrap();
    let scopes: Vec<&str> = users.iter().map(|u| u.scope.as_str()).collect();
    assert_eq!(scopes, ["user:ann", "user:bob"]);
    for d in [&first, &d2] {
        let s = b
            .settle(d.reservation_id.as_deref(), "", &id, charge(0, 0, 0), now)
            .await
            .unwrap();
        assert_eq!(s, SettleOutcome::Reservation);
    }
    for id in ["org-month", "user-out", "key-hour"] {
        b.delete(id).await.unwrap();
    }
}

/// Above the soft fraction a request is reserved and downgraded.
async fn soft_limit(b: &Budgets, now: u64) {
    b.put(BudgetDef {
        limit_usd: Some(10.0),
        soft_fraction: Some(0.5),
        downgrade_to: Some("gpt-4o-mini".into()),
        ..def("ads-soft", ScopeKind::Team, "ads", Period::Hour)
    })
    .await
    .unwrap();
    let id = ident("globex", "ads", None, None);
    let allowed = b.admit(&id, &query(4 * USD, 1, 1), now).await.unwrap();
    assert_eq!(
        (allowed.verdict, allowed.downgrade_model.as_deref()),
        (BudgetVerdict::Allow, None)
    );
    // 4 + 1 = 5 of 10: at the fraction.
    let d = b.admit(&id, &query(USD, 1, 1), now).await.unwrap();
    assert_eq!(d.verdict, BudgetVerdict::Downgrade);
    assert_eq!(d.downgrade_model.as_deref(), Some("gpt-4o-mini"));
    assert!(d.reservation_id.is_some());
    assert_eq!(d.remaining_pico, Some(5 * USD));
    assert_eq!(
        usage_of(b, "ads-soft", "team:ads", now)
            .await
            .reserved
            .cost_pico,
        5 * USD
    );
    // The hard limit still rejects.
    rejection(&b.admit(&id, &query(6 * USD, 1, 1), now).await.unwrap());
    for d in [&allowed, &d] {
        b.settle(d.reservation_id.as_deref(), "", &id, charge(0, 0, 0), now)
            .await
            .unwrap();
    }
    b.delete("ads-soft").await.unwrap();
}

/// Near the largest limit the room check is still exact to the pico (Redis compares in two
/// limbs: Lua numbers are doubles, exact only to 2^53).
async fn big_numbers(b: &Budgets, now: u64) {
    b.put(usd(
        "huge",
        ScopeKind::Team,
        "big",
        Period::Month,
        8_999_999.0,
    ))
    .await
    .unwrap();
    let limit = 8_999_999 * USD;
    let id = ident("bigcorp", "big", None, None);
    let first = b.admit(&id, &query(limit - 3, 1, 1), now).await.unwrap();
    assert_eq!(first.remaining_pico, Some(3));
    rejection(&b.admit(&id, &query(4, 1, 1), now).await.unwrap());
    let d = b.admit(&id, &query(3, 1, 1), now).await.unwrap();
    assert_eq!(
        (d.verdict, d.remaining_pico),
        (BudgetVerdict::Allow, Some(0))
    );
    let u = usage_of(b, "huge", "team:big", now).await;
    assert_eq!(u.reserved.cost_pico, limit);
    // Settling releases exactly.
    b.settle(
        first.reservation_id.as_deref(),
        "",
        &id,
        charge(limit - 4, 0, 0),
        now,
    )
    .await
    .unwrap();
    let u = usage_of(b, "huge", "team:big", now).await;
    assert_eq!((u.spent.cost_pico, u.reserved.cost_pico), (limit - 4, 3));
    let e = b.admit(&id, &query(1, 1, 1), now).await.unwrap();
    assert_eq!(e.remaining_pico, Some(0));
    rejection(&b.admit(&id, &query(1, 1, 1), now).await.unwrap());
    for d in [&d, &e] {
        b.settle(d.reservation_id.as_deref(), "", &id, charge(0, 0, 0), now)
            .await
            .unwrap();
    }
    b.delete("huge").await.unwrap();
}

/// Reservations that never settle expire; late settles and records without a reservation are
/// charged once.
async fn expiry_and_unreserved(b: &Budgets, now: u64) {
    b.put(BudgetDef {
        limit_usd: Some(5.0),
        limit_input_tokens: Some(1000),
        ..def("ops", ScopeKind::Team, "ops", Period::Day)
    })
    .await
    .unwrap();
    let id = ident("initech", "ops", None, None);
    let d = b.admit(&id, &query(2 * USD, 300, 10), now).await.unwrap();
    let rid = d.reservation_id.unwrap();
    let ttl = b.options().reservation_ttl_ms;
    assert_eq!(b.sweep(now + ttl - 1).await.unwrap(), 0);
    assert_eq!(
        usage_of(b, "ops", "team:ops", now).await.reserved.cost_pico,
        2 * USD
    );
    assert_eq!(b.sweep(now + ttl).await.unwrap(), 1);
    assert_eq!(b.sweep(now + ttl + 1).await.unwrap(), 0);
    let u = usage_of(b, "ops", "team:ops", now).await;
    assert_eq!(u.reserved, charge(0, 0, 0));
    // The request finished after all: its actual cost is charged to the windows it reserved.
    let late = now + ttl + SECOND;
    let s = b
        .settle(Some(&rid), "req-late", &id, charge(USD, 300, 10), late)
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Reservation);
    let s = b
        .settle(Some(&rid), "req-late", &id, charge(USD, 300, 10), late)
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Duplicate);
    let u = usage_of(b, "ops", "team:ops", now).await;
    assert_eq!(
        (u.spent, u.reserved),
        (charge(USD, 300, 10), charge(0, 0, 0))
    );

    // Fail-open records: no reservation, charged once per request id.
    for _ in 0..2 {
        let s = b
            .settle(None, "req-open", &id, charge(USD, 200, 5), now)
            .await
            .unwrap();
        assert!(matches!(
            s,
            SettleOutcome::Unreserved | SettleOutcome::Duplicate
        ));
    }
    // An unknown (e.g. forgotten) reservation falls back to the request id.
    let unknown = "0123456789abcdef0123456789abcdef";
    let s = b
        .settle(Some(unknown), "req-x", &id, charge(USD, 100, 5), now)
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Unreserved);
    let s = b
        .settle(Some("not-an-id"), "req-x", &id, charge(USD, 100, 5), now)
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Duplicate);
    let u = usage_of(b, "ops", "team:ops", now).await;
    assert_eq!(u.spent, charge(3 * USD, 600, 20));
    // Charges may pass the limit (the money is spent), after which requests are refused:
    // input tokens are at 600 of 1000, so 401 more do not fit.
    let d = b.admit(&id, &query(0, 401, 0), now).await.unwrap();
    let r = rejection(&d);
    assert_eq!(
        (r.code.as_str(), r.period.as_str()),
        ("rate_limited", "day")
    );
    assert!(
        r.message.contains("600 of its 1,000 input tokens per day"),
        "{}",
        r.message
    );
    b.settle(None, "req-big", &id, charge(10 * USD, 0, 0), now)
        .await
        .unwrap();
    let u = usage_of(b, "ops", "team:ops", now).await;
    assert_eq!((u.spent.cost_pico, u.remaining_pico), (13 * USD, Some(0)));
    assert!(
        rejection(&b.admit(&id, &query(1, 1, 0), now).await.unwrap())
            .message
            .contains("$13.00 of its $5.00 daily budget")
    );

    // Old windows are forgotten after one more period.
    let much_later = now + 3 * DAY;
    b.sweep(much_later).await.unwrap();
    let all = b.store().usage(&UsageFilter::default()).await.unwrap();
    // Only the month windows (of deleted budgets) are kept, until the end of April.
    let mut ids: Vec<&str> = all.iter().map(|w| w.key.budget_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids, ["huge", "org-month"], "{all:?}");
    b.delete("ops").await.unwrap();
}

/// Periods through the façade: a month budget reset on the 15th at 06:00 UTC, across the new
/// year.
async fn month_rollover(b: &Budgets) {
    b.put(BudgetDef {
        reset_day_of_month: Some(15),
        reset_hour_utc: Some(6),
        ..usd("m", ScopeKind::Org, "acme", Period::Month, 1.0)
    })
    .await
    .unwrap();
    let id = ann();
    let before = at(2025, 1, 15, 5, 59, 59);
    let d = b.admit(&id, &query(USD, 1, 1), before).await.unwrap();
    b.settle(
        d.reservation_id.as_deref(),
        "m1",
        &id,
        charge(USD, 1, 1),
        before,
    )
    .await
    .unwrap();
    let r = rejection(&b.admit(&id, &query(1, 1, 1), before).await.unwrap()).clone();
    assert_eq!(r.retry_after_seconds, Some(1));
    assert!(r.message.contains("monthly budget"), "{}", r.message);
    let u = usage_of(b, "m", "org:acme", before).await;
    assert_eq!(
        (u.window_start_ms, u.window_end_ms),
        (at(2024, 12, 15, 6, 0, 0), at(2025, 1, 15, 6, 0, 0))
    );
    let after = at(2025, 1, 15, 6, 0, 0);
    let d = b.admit(&id, &query(USD, 1, 1), after).await.unwrap();
    assert_eq!(d.verdict, BudgetVerdict::Allow);
    b.delete("m").await.unwrap();
}

// ---------------------------------------------------------------- helpers

fn redis() -> RedisServer {
    RedisServer::start().expect("cannot start redis-server (run `make setup`)")
}

async fn embedded(path: &std::path::Path) -> Budgets {
    let store = EmbeddedBudgetStore::open(path).await.unwrap();
    Budgets::new(Arc::new(store), opts())
}

async fn on_redis(url: &str, ns: &str) -> Budgets {
    let store = RedisBudgetStore::connect(url, ns).await.unwrap();
    Budgets::new(Arc::new(store), opts())
}

/// `n` concurrent admits of `cost`, spread round-robin over `replicas`; returns how many were
/// admitted.
async fn race(replicas: &[Arc<Budgets>], n: usize, cost: u64, now: u64) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let b = replicas[i % replicas.len()].clone();
        tasks.push(tokio::spawn(async move {
            let id = ident("acme", "race", Some(&format!("u{i}")), None);
            b.admit(&id, &query(cost, 1, 1), now).await.unwrap()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        let d = t.await.unwrap();
        match d.verdict {
            BudgetVerdict::Allow => admitted += 1,
            BudgetVerdict::Reject => assert_eq!(rejection(&d).code, "budget_exceeded"),
            BudgetVerdict::Downgrade => panic!("no soft limit here"),
        }
    }
    admitted
}

const RACE_N: u64 = 37;
const RACE_COST: u64 = 30_000_000_000; // $0.03

async fn race_budget(b: &Budgets) {
    b.put(usd(
        "race",
        ScopeKind::Team,
        "race",
        Period::Day,
        (RACE_N * RACE_COST) as f64 / USD as f64,
    ))
    .await
    .unwrap();
}

async fn assert_race_reserved(b: &Budgets, now: u64) {
    let u = usage_of(b, "race", "team:race", now).await;
    assert_eq!(u.reserved.cost_pico, RACE_N * RACE_COST);
    assert_eq!(u.limits.usd_pico, Some(RACE_N * RACE_COST));
    assert_eq!(u.remaining_pico, Some(0));
}

// ---------------------------------------------------------------- embedded

#[tokio::test]
async fn embedded_conformance() {
    let dir = TempDir(temp_path("conf"));
    let b = embedded(&dir.0.join("nested/budgets.redb")).await;
    conformance(&b).await;
    month_rollover(&b).await;
}

#[tokio::test]
async fn embedded_survives_reopen() {
    let dir = TempDir(temp_path("reopen"));
    let path = dir.0.join("budgets.redb");
    let now = t0();
    let id = ann();
    let (rid, pending) = {
        let b = embedded(&path).await;
        b.put(usd("t", ScopeKind::Team, "search", Period::Day, 10.0))
            .await
            .unwrap();
        let settled = b.admit(&id, &query(3 * USD, 10, 10), now).await.unwrap();
        b.settle(
            settled.reservation_id.as_deref(),
            "a",
            &id,
            charge(USD, 10, 5),
            now,
        )
        .await
        .unwrap();
        b.settle(None, "fail-open", &id, charge(USD, 1, 1), now)
            .await
            .unwrap();
        let pending = b.admit(&id, &query(2 * USD, 10, 10), now).await.unwrap();
        (
            settled.reservation_id.unwrap(),
            pending.reservation_id.unwrap(),
        )
    };
    let b = embedded(&path).await;
    assert_eq!(b.list().await.unwrap().len(), 1);
    let u = usage_of(&b, "t", "team:search", now).await;
    assert_eq!(u.spent, charge(2 * USD, 11, 6));
    assert_eq!(u.reserved, charge(2 * USD, 10, 10));
    // Tombstones and markers survived: repeats are still no-ops.
    let s = b
        .settle(Some(&rid), "a", &id, charge(USD, 10, 5), now)
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Duplicate);
    let s = b
        .settle(None, "fail-open", &id, charge(USD, 1, 1), now)
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Duplicate);
    // The reservation made before the restart settles.
    let s = b
        .settle(Some(&pending), "p", &id, charge(USD, 10, 10), now)
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Reservation);
    let u = usage_of(&b, "t", "team:search", now).await;
    assert_eq!((u.spent.cost_pico, u.reserved.cost_pico), (3 * USD, 0));
}

/// Run as a child process by `embedded_acknowledged_settles_survive_a_crash`: admits and
/// settles until killed, printing each acknowledged settle.
#[tokio::test]
#[ignore = "child process of embedded_acknowledged_settles_survive_a_crash"]
async fn crash_child_settler() {
    let Ok(path) = std::env::var("TOLLGATE_BUDGET_CRASH_DB") else {
        return;
    };
    let b = embedded(std::path::Path::new(&path)).await;
    b.put(usd("t", ScopeKind::Team, "search", Period::Day, 1000.0))
        .await
        .unwrap();
    let id = ann();
    for i in 0.. {
        let d = b.admit(&id, &query(USD, 1, 1), t0()).await.unwrap();
        let s = b
            .settle(
                d.reservation_id.as_deref(),
                &format!("r{i}"),
                &id,
                charge(USD / 2, 1, 1),
                t0(),
            )
            .await
            .unwrap();
        assert_eq!(s, SettleOutcome::Reservation);
        println!("settled {i}");
    }
}

#[tokio::test]
async fn embedded_acknowledged_settles_survive_a_crash() {
    use std::io::BufRead;
    let dir = TempDir(temp_path("crash"));
    let path = dir.0.join("budgets.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_settler",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("TOLLGATE_BUDGET_CRASH_DB", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = None;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if let Some(i) = line.unwrap().strip_prefix("settled ") {
            let i: u64 = i.parse().unwrap();
            acked = Some(i);
            if i >= 30 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-write
    child.wait().unwrap();
    // Settles the child acknowledged after the line above, before the kill landed.
    for line in lines.map_while(Result::ok) {
        if let Some(i) = line.strip_prefix("settled ").and_then(|i| i.parse().ok()) {
            acked = Some(i);
        }
    }
    let acked = acked.expect("child settled nothing");
    let b = embedded(&path).await;
    let u = usage_of(&b, "t", "team:search", t0()).await;
    // Every acknowledged settle is there (the child may have settled one more before the kill);
    // at most the last reservation is still held.
    let settled = u.spent.cost_pico / (USD / 2);
    assert!(
        (acked + 1..=acked + 3).contains(&settled),
        "acked {acked}, found {settled} settles"
    );
    assert_eq!(u.spent.input_tokens, settled);
    assert!(u.reserved.cost_pico <= USD, "{u:?}");
}

#[tokio::test]
async fn embedded_refuses_a_file_it_cannot_create() {
    let dir = TempDir(temp_path("bad"));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedBudgetStore::open(file.join("budgets.redb"))
        .await
        .unwrap_err();
    assert!(matches!(err, BudgetError::Unavailable(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_reservations_admit_exactly_n() {
    let dir = TempDir(temp_path("race"));
    let b = Arc::new(embedded(&dir.0.join("budgets.redb")).await);
    race_budget(&b).await;
    let now = t0();
    let admitted = race(std::slice::from_ref(&b), 200, RACE_COST, now).await;
    assert_eq!(admitted as u64, RACE_N);
    assert_race_reserved(&b, now).await;
}

// ---------------------------------------------------------------- redis

#[tokio::test]
async fn redis_conformance() {
    let server = redis();
    let b = on_redis(&server.url(), "conf").await;
    conformance(&b).await;
    month_rollover(&b).await;
}

#[tokio::test]
async fn open_picks_the_configured_backend() {
    let dir = TempDir(temp_path("open"));
    let server = redis();
    for config in [
        BudgetConfig::Embedded {
            path: dir.0.join("budgets.redb"),
        },
        BudgetConfig::Redis {
            url: server.url(),
            namespace: "open".into(),
        },
    ] {
        let b = Budgets::open(&config).await.unwrap();
        b.ping().await.unwrap();
        b.put(usd("o", ScopeKind::Org, "acme", Period::Day, 1.0))
            .await
            .unwrap();
        assert_eq!(b.list().await.unwrap().len(), 1);
    }
    let err = Budgets::open_redis(&server.url(), "bad ns")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");
}

#[tokio::test]
async fn redis_survives_server_restart() {
    let mut server = redis();
    let url = server.url();
    let now = t0();
    let id = ann();
    let b = on_redis(&url, "restart").await;
    b.put(usd("t", ScopeKind::Team, "search", Period::Day, 10.0))
        .await
        .unwrap();
    let settled = b.admit(&id, &query(3 * USD, 10, 10), now).await.unwrap();
    b.settle(
        settled.reservation_id.as_deref(),
        "a",
        &id,
        charge(USD, 10, 5),
        now,
    )
    .await
    .unwrap();
    let pending = b.admit(&id, &query(2 * USD, 10, 10), now).await.unwrap();
    server.restart().unwrap();
    // The same instance reconnects; a new one sees the same state.
    let u = usage_of(&b, "t", "team:search", now).await;
    assert_eq!((u.spent.cost_pico, u.reserved.cost_pico), (USD, 2 * USD));
    let fresh = on_redis(&url, "restart").await;
    let s = fresh
        .settle(
            settled.reservation_id.as_deref(),
            "a",
            &id,
            charge(USD, 10, 5),
            now,
        )
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Duplicate);
    let s = fresh
        .settle(
            pending.reservation_id.as_deref(),
            "p",
            &id,
            charge(USD, 1, 1),
            now,
        )
        .await
        .unwrap();
    assert_eq!(s, SettleOutcome::Reservation);
    let u = usage_of(&fresh, "t", "team:search", now).await;
    assert_eq!((u.spent.cost_pico, u.reserved.cost_pico), (2 * USD, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_replicas_admit_exactly_n() {
    let server = redis();
    let a = Arc::new(on_redis(&server.url(), "race").await);
    let b = Arc::new(on_redis(&server.url(), "race").await);
    race_budget(&a).await;
    let now = t0();
    let admitted = race(&[a.clone(), b.clone()], 200, RACE_COST, now).await;
    assert_eq!(admitted as u64, RACE_N);
    assert_race_reserved(&b, now).await;
}

#[tokio::test]
async fn redis_replicas_see_definitions_after_the_refresh_interval() {
    let server = redis();
    let a = on_redis(&server.url(), "defs").await;
    let store = RedisBudgetStore::connect(&server.url(), "defs")
        .await
        .unwrap();
    let b = Budgets::new(
        Arc::new(store),
        BudgetOptions {
            defs_refresh_ms: 1000,
            ..opts()
        },
    );
    let now = t0();
    let id = ann();
    assert_eq!(
        b.admit(&id, &query(USD, 1, 1), now).await.unwrap().verdict,
        BudgetVerdict::Allow
    );
    a.put(usd("zero", ScopeKind::Team, "search", Period::Day, 0.0))
        .await
        .unwrap();
    // Cached for a second, then read again.
    let d = b.admit(&id, &query(USD, 1, 1), now + 999).await.unwrap();
    assert_eq!(d, BudgetDecision::default());
    rejection(&b.admit(&id, &query(USD, 1, 1), now + 1000).await.unwrap());
    // Namespaces do not share budgets.
    let other = on_redis(&server.url(), "other").await;
    assert!(other.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_keys_hold_no_ids_and_expire() {
    let server = redis();
    let b = on_redis(&server.url(), "keys").await;
    b.put(usd("t", ScopeKind::User, "*", Period::Minute, 1.0))
        .await
        .unwrap();
    let id = ident("acme", "search", Some("secret-user"), None);
    let now = t0();
    let d = b.admit(&id, &query(1, 1, 1), now).await.unwrap();
    b.settle(
        d.reservation_id.as_deref(),
        "secret-request",
        &id,
        charge(1, 1, 1),
        now,
    )
    .await
    .unwrap();
    b.settle(None, "secret-request-2", &id, charge(1, 1, 1), now)
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(k.starts_with("keys:b:"), "{k}");
        assert!(!k.contains("secret"), "{k}");
        // Definitions, their version and the indexes live as long as the namespace.
        if ![
            "keys:b:defs",
            "keys:b:defsver",
            "keys:b:widx",
            "keys:b:rexp",
        ]
        .contains(&k.as_str())
        {
            let ttl: i64 = redis::cmd("PTTL").arg(k).query_async(&mut c).await.unwrap();
            assert!(ttl > 0, "{k} has no TTL");
        }
    }
}

#[tokio::test]
async fn redis_counters_saturate_instead_of_overflowing() {
    let server = redis();
    let b = on_redis(&server.url(), "sat").await;
    b.put(usd("t", ScopeKind::Team, "search", Period::Day, 1.0))
        .await
        .unwrap();
    let id = ann();
    let now = t0();
    for r in ["a", "b", "c"] {
        let s = b
            .settle(None, r, &id, charge(u64::MAX, u64::MAX, 1), now)
            .await
            .unwrap();
        assert_eq!(s, SettleOutcome::Unreserved);
    }
    let u = usage_of(&b, "t", "team:search", now).await;
    assert_eq!(u.spent, charge(9 * USD * 1_000_000, 9 * USD * 1_000_000, 3));
    assert_eq!(u.remaining_pico, Some(0));
    rejection(&b.admit(&id, &query(1, 1, 1), now).await.unwrap());
}
