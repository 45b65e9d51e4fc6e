//! Reservation arithmetic and verdicts, pure: what a request reserves, whether a window has
//! room for it (the rule both stores apply atomically), and the [`BudgetDecision`] built from
//! a store's answer (rejection code, message, retry-after, downgrade, remaining USD).

use serde::{Deserialize, Serialize};
use tollgate_wire::admit::{BudgetDecision, BudgetQuery, BudgetRejection, BudgetVerdict};

use super::def::{Budget, Limits, PICO_PER_USD};
use super::window::{Window, human_duration};

/// Money and tokens: what a request reserves, or what it actually cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Amounts {
    pub cost_pico: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The actual charge of a finished request.
pub type Charge = Amounts;

impl Amounts {
    /// What an admit reserves: the maximum cost (0 when the model has no price: then only
    /// token limits hold it back), the prompt tokens and the output limit.
    pub fn of_query(q: &BudgetQuery) -> Self {
        Amounts {
            cost_pico: q.max_cost_pico.unwrap_or(0),
            input_tokens: q.input_tokens,
            output_tokens: q.max_output_tokens,
        }
    }

    /// Input plus output tokens.
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    pub fn plus(self, o: Amounts) -> Amounts {
        Amounts {
            cost_pico: self.cost_pico.saturating_add(o.cost_pico),
            input_tokens: self.input_tokens.saturating_add(o.input_tokens),
            output_tokens: self.output_tokens.saturating_add(o.output_tokens),
        }
    }

    pub fn minus(self, o: Amounts) -> Amounts {
        Amounts {
            cost_pico: self.cost_pico.saturating_sub(o.cost_pico),
            input_tokens: self.input_tokens.saturating_sub(o.input_tokens),
            output_tokens: self.output_tokens.saturating_sub(o.output_tokens),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Amounts::default()
    }
}

/// The counters of one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Charged by settled requests.
    pub spent: Amounts,
    /// Held by requests in flight.
    pub reserved: Amounts,
}

impl Counters {
    /// Spent plus reserved: what the limits are checked against.
    pub fn used(&self) -> Amounts {
        self.spent.plus(self.reserved)
    }
}

/// Which limit of a window a request would exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LimitKind {
    Usd,
    InputTokens,
    OutputTokens,
    Tokens,
}

impl LimitKind {
    /// The rejection code: `budget_exceeded` for money, `rate_limited` for tokens.
    pub fn code(self) -> &'static str {
        match self {
            LimitKind::Usd => "budget_exceeded",
            _ => "rate_limited",
        }
    }

    /// The limit named by the Redis script's reply (`usd`, `in`, `out`, `tok`).
    pub(crate) fn from_tag(s: &str) -> Option<Self> {
        Some(match s {
            "usd" => LimitKind::Usd,
            "in" => LimitKind::InputTokens,
            "out" => LimitKind::OutputTokens,
            "tok" => LimitKind::Tokens,
            _ => return None,
        })
    }
}

/// One limit against a request: over when the window is already used up, or when the request
/// would take it past the limit. (A used-up window refuses even requests that reserve nothing,
/// e.g. on an unpriced model; a limit of 0 blocks the scope.)
fn over(used: u64, request: u64, limit: u64) -> bool {
    used >= limit || u128::from(used) + u128::from(request) > u128::from(limit)
}

/// The first limit of `limits` that `request` would exceed on top of `used`, checked in the
/// order USD, input, output, total tokens. Both stores apply exactly this rule.
pub fn exceeded(limits: &Limits, used: Amounts, request: Amounts) -> Option<LimitKind> {
    let checks = [
        (
            LimitKind::Usd,
            limits.usd_pico,
            used.cost_pico,
            request.cost_pico,
        ),
        (
            LimitKind::InputTokens,
            limits.input_tokens,
            used.input_tokens,
            request.input_tokens,
        ),
        (
            LimitKind::OutputTokens,
            limits.output_tokens,
            used.output_tokens,
            request.output_tokens,
        ),
        (
            LimitKind::Tokens,
            limits.tokens,
            used.tokens(),
            request.tokens(),
        ),
    ];
    checks
        .into_iter()
        .find(|&(_, limit, u, r)| limit.is_some_and(|l| over(u, r, l)))
        .map(|(kind, ..)| kind)
}

/// The largest used fraction of any limit, in parts per million.
pub fn used_ppm(limits: &Limits, used: Amounts) -> u64 {
    let ppm = |u: u64, l: Option<u64>| match l {
        None => 0,
        Some(0) => u64::MAX,
        Some(l) => u64::try_from(u128::from(u) * 1_000_000 / u128::from(l)).unwrap_or(u64::MAX),
    };
    [
        ppm(used.cost_pico, limits.usd_pico),
        ppm(used.input_tokens, limits.input_tokens),
        ppm(used.output_tokens, limits.output_tokens),
        ppm(used.tokens(), limits.tokens),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// A budget that applies to a request, in its current window.
#[derive(Clone, Debug)]
pub struct Applied<'a> {
    pub budget: &'a Budget,
    /// `team:search`
    pub scope: String,
    pub window: Window,
}

/// The smallest USD left across the USD-limited windows (`None`: no USD limit applies).
pub fn remaining_pico(applied: &[Applied<'_>], counters: &[Counters]) -> Option<u64> {
    applied
        .iter()
        .zip(counters)
        .filter_map(|(a, c)| {
            a.budget
                .limits
                .usd_pico
                .map(|l| l.saturating_sub(c.used().cost_pico))
        })
        .min()
}

/// The decision for a request reserved in every window (`after`: the counters including it).
/// Downgrades when a budget with a soft limit is used to its fraction or more; if several are,
/// the most used one names the model.
pub fn admitted(
    applied: &[Applied<'_>],
    after: &[Counters],
    reservation_id: String,
) -> BudgetDecision {
    let mut downgrade: Option<(u64, &str)> = None;
    for (a, c) in applied.iter().zip(after) {
        let Some((soft, model)) = &a.budget.soft else {
            continue;
        };
        let ppm = used_ppm(&a.budget.limits, c.used());
        if ppm >= u64::from(*soft) && downgrade.is_none_or(|(best, _)| ppm > best) {
            downgrade = Some((ppm, model));
        }
    }
    BudgetDecision {
        verdict: if downgrade.is_some() {
            BudgetVerdict::Downgrade
        } else {
            BudgetVerdict::Allow
        },
        reservation_id: Some(reservation_id),
        remaining_pico: remaining_pico(applied, after),
        downgrade_model: downgrade.map(|(_, m)| m.to_owned()),
        rejection: None,
    }
}

/// The decision for a request refused because window `index` would exceed `limit` (`current`:
/// the counters without the request; nothing was reserved).
pub fn rejected(
    applied: &[Applied<'_>],
    current: &[Counters],
    index: usize,
    limit: LimitKind,
    request: Amounts,
    now_ms: u64,
) -> BudgetDecision {
    let rejection = applied.get(index).map(|a| {
        let used = current.get(index).copied().unwrap_or_default().used();
        let limits = &a.budget.limits;
        let retry = a.window.retry_after_seconds(now_ms);
        let period = a.budget.period;
        let (used, cap, req, what) = match limit {
            LimitKind::Usd => (
                usd(used.cost_pico),
                usd(limits.usd_pico.unwrap_or(0)),
                (request.cost_pico > 0).then(|| usd(request.cost_pico)),
                format!("{} budget", period.adjective()),
            ),
            kind => {
                let (u, l, r, name) = match kind {
                    LimitKind::InputTokens => (
                        used.input_tokens,
                        limits.input_tokens,
                        request.input_tokens,
                        "input tokens",
                    ),
                    LimitKind::OutputTokens => (
                        used.output_tokens,
                        limits.output_tokens,
                        request.output_tokens,
                        "output tokens",
                    ),
                    _ => (used.tokens(), limits.tokens, request.tokens(), "tokens"),
                };
                (
                    group(u),
                    group(l.unwrap_or(0)),
                    (r > 0).then(|| group(r)),
                    format!("{name} per {}", period.as_str()),
                )
            }
        };
        let need = req.map_or_else(String::new, |r| format!(" (this request needs up to {r})"));
        BudgetRejection {
            code: limit.code().to_owned(),
            scope: a.scope.clone(),
            period: period.as_str().to_owned(),
            message: format!(
                "{} has used {used} of its {cap} {what}{need}; resets in {}",
                a.scope,
                human_duration(retry)
            ),
            retry_after_seconds: Some(retry),
        }
    });
    BudgetDecision {
        verdict: BudgetVerdict::Reject,
        reservation_id: None,
        remaining_pico: remaining_pico(applied, current),
        downgrade_model: None,
        rejection,
    }
}

/// `$1,234.50`, `$0.0042`: at least 2 and at most 6 decimals (truncated, trailing zeros dropped).
pub fn usd(pico: u64) -> String {
    let dollars = pico / PICO_PER_USD;
    let micro = pico % PICO_PER_USD / 1_000_000;
    let mut frac = format!("{micro:06}");
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("${}.{frac}", group(dollars))
}

/// `12,345`
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::budget::def::{Period, ScopeKind, Target};

    const USD: u64 = PICO_PER_USD;

    fn budget(limits: Limits, soft: Option<(u32, &str)>, period: Period) -> Budget {
        Budget {
            id: "b".into(),
            scope: ScopeKind::Team,
            target: Target::One("search".into()),
            period,
            reset_hour_utc: 0,
            reset_day_of_month: 1,
            limits,
            soft: soft.map(|(p, m)| (p, m.to_owned())),
        }
    }

    fn usd_limit(l: u64) -> Limits {
        Limits {
            usd_pico: Some(l),
            ..Limits::default()
        }
    }

    fn amounts(cost: u64, i: u64, o: u64) -> Amounts {
        Amounts {
            cost_pico: cost,
            input_tokens: i,
            output_tokens: o,
        }
    }

    #[test]
    fn reservation_amounts_of_a_query() {
        let q = BudgetQuery {
            input_tokens: 120,
            max_output_tokens: 800,
            max_cost_pico: Some(5_000),
        };
        assert_eq!(Amounts::of_query(&q), amounts(5_000, 120, 800));
        assert_eq!(Amounts::of_query(&q).tokens(), 920);
        let unpriced = BudgetQuery {
            max_cost_pico: None,
            ..q
        };
        assert_eq!(Amounts::of_query(&unpriced).cost_pico, 0);
        assert_eq!(amounts(5, 1, 1).minus(amounts(7, 0, 2)), amounts(0, 1, 0));
        assert_eq!(
            amounts(u64::MAX, 1, 1).plus(amounts(1, 1, 1)),
            amounts(u64::MAX, 2, 2)
        );
    }

    #[test]
    fn room_is_checked_against_spent_plus_reserved() {
        let l = usd_limit(10 * USD);
        // Exactly filling the budget passes; one pico more does not.
        assert_eq!(
            exceeded(&l, amounts(6 * USD, 0, 0), amounts(4 * USD, 0, 0)),
            None
        );
        assert_eq!(
            exceeded(&l, amounts(6 * USD, 0, 0), amounts(4 * USD + 1, 0, 0)),
            Some(LimitKind::Usd)
        );
        // A used-up budget refuses requests that reserve nothing; a zero limit blocks.
        assert_eq!(
            exceeded(&l, amounts(10 * USD, 0, 0), Amounts::default()),
            Some(LimitKind::Usd)
        );
        assert_eq!(
            exceeded(&usd_limit(0), Amounts::default(), Amounts::default()),
            Some(LimitKind::Usd)
        );
        // Token limits, separately and together.
        let t = Limits {
            input_tokens: Some(1000),
            output_tokens: Some(500),
            tokens: Some(1200),
            ..Limits::default()
        };
        assert_eq!(
            exceeded(&t, amounts(0, 500, 0), amounts(0, 500, 400)),
            Some(LimitKind::Tokens)
        );
        assert_eq!(
            exceeded(&t, amounts(0, 0, 0), amounts(0, 1001, 0)),
            Some(LimitKind::InputTokens)
        );
        assert_eq!(
            exceeded(&t, amounts(0, 0, 200), amounts(0, 0, 301)),
            Some(LimitKind::OutputTokens)
        );
        assert_eq!(
            exceeded(&t, amounts(0, 600, 100), amounts(0, 400, 100)),
            None
        );
        assert_eq!(
            exceeded(&t, amounts(0, 600, 100), amounts(0, 400, 101)),
            Some(LimitKind::Tokens)
        );
        // Money is not limited by a tokens-only budget.
        assert_eq!(
            exceeded(&t, amounts(u64::MAX, 0, 0), amounts(u64::MAX, 0, 0)),
            None
        );
        // No overflow near the top.
        assert_eq!(
            exceeded(
                &usd_limit(u64::MAX - 1),
                amounts(u64::MAX - 2, 0, 0),
                amounts(u64::MAX, 0, 0)
            ),
            Some(LimitKind::Usd)
        );
    }

    fn applied<'a>(b: &'a Budget, scope: &str, end_ms: u64) -> Applied<'a> {
        Applied {
            budget: b,
            scope: scope.into(),
            window: Window {
                start_ms: 0,
                end_ms,
            },
        }
    }

    #[test]
    fn admitted_reports_the_tightest_remaining_and_downgrades_at_the_soft_limit() {
        let org = budget(usd_limit(100 * USD), None, Period::Month);
        let team = budget(usd_limit(10 * USD), Some((800_000, "mini")), Period::Day);
        let tokens = budget(
            Limits {
                tokens: Some(1000),
                ..Limits::default()
            },
            None,
            Period::Minute,
        );
        let a = [
            applied(&org, "org:acme", 1),
            applied(&team, "team:search", 1),
            applied(&tokens, "key:1", 1),
        ];
        let c = |spent: u64, reserved: u64| Counters {
            spent: amounts(spent, 0, 0),
            reserved: amounts(reserved, 10, 10),
        };
        let d = admitted(
            &a,
            &[c(50 * USD, USD), c(5 * USD, 2 * USD), c(0, 0)],
            "r1".into(),
        );
        assert_eq!(d.verdict, BudgetVerdict::Allow);
        assert_eq!(d.reservation_id.as_deref(), Some("r1"));
        assert_eq!(d.remaining_pico, Some(3 * USD));
        assert_eq!(d.downgrade_model, None);
        // 8 of 10: at the soft fraction.
        let d = admitted(
            &a,
            &[c(50 * USD, USD), c(6 * USD, 2 * USD), c(0, 0)],
            "r2".into(),
        );
        assert_eq!(d.verdict, BudgetVerdict::Downgrade);
        assert_eq!(d.downgrade_model.as_deref(), Some("mini"));
        assert_eq!(d.remaining_pico, Some(2 * USD));
        // Without a USD budget there is no remaining.
        let d = admitted(&a[2..], &[c(0, 0)], "r3".into());
        assert_eq!(d.remaining_pico, None);
    }

    #[test]
    fn rejection_codes_messages_and_retry_after() {
        let hour = 3_600_000;
        let team = budget(usd_limit(10 * USD), None, Period::Day);
        let key = budget(
            Limits {
                output_tokens: Some(10_000),
                ..Limits::default()
            },
            None,
            Period::Minute,
        );
        let now = 1_000;
        let a = [
            applied(&team, "team:search", now + 3 * hour + 12 * 60_000 + 5_000),
            applied(&key, "key:abcd", now + 42_000),
        ];
        let current = [
            Counters {
                spent: amounts(9 * USD + 990_000_000_000, 0, 0),
                reserved: Amounts::default(),
            },
            Counters {
                spent: amounts(0, 0, 9_000),
                reserved: amounts(0, 0, 500),
            },
        ];
        let d = rejected(
            &a,
            &current,
            0,
            LimitKind::Usd,
            amounts(20_000_000_000, 0, 0),
            now,
        );
        assert_eq!(d.verdict, BudgetVerdict::Reject);
        assert_eq!(d.reservation_id, None);
        assert_eq!(d.remaining_pico, Some(10_000_000_000));
        let r = d.rejection.unwrap();
        assert_eq!(r.code, "budget_exceeded");
        assert_eq!(r.scope, "team:search");
        assert_eq!(r.period, "day");
        assert_eq!(r.retry_after_seconds, Some(3 * 3600 + 12 * 60 + 5));
        assert_eq!(
            r.message,
            "team:search has used $9.99 of its $10.00 daily budget (this request needs up to $0.02); resets in 3h 12m"
        );
        let d = rejected(
            &a,
            &current,
            1,
            LimitKind::OutputTokens,
            amounts(0, 10, 800),
            now,
        );
        let r = d.rejection.unwrap();
        assert_eq!(r.code, "rate_limited");
        assert_eq!(r.period, "minute");
        assert_eq!(r.retry_after_seconds, Some(42));
        assert_eq!(
            r.message,
            "key:abcd has used 9,500 of its 10,000 output tokens per minute (this request needs up to 800); resets in 42s"
        );
    }

    #[test]
    fn money_and_numbers_render_for_people() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(10 * USD), "$10.00");
        assert_eq!(usd(1234 * USD + USD / 2), "$1,234.50");
        assert_eq!(usd(4_200_000_000), "$0.0042");
        assert_eq!(usd(9_999_999_999_999), "$9.999999");
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn used_fraction() {
        let l = Limits {
            usd_pico: Some(100),
            tokens: Some(1000),
            ..Limits::default()
        };
        assert_eq!(used_ppm(&l, amounts(80, 100, 0)), 800_000);
        assert_eq!(used_ppm(&l, amounts(10, 900, 0)), 900_000);
        assert_eq!(used_ppm(&usd_limit(0), Amounts::default()), u64::MAX);
    }
}
