//! Budget windows: where the period containing an instant starts and ends (UTC calendar, reset
//! offsets, month lengths, leap years), and human durations for rejection messages.

use super::def::Period;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// A half-open window `[start_ms, end_ms)` in Unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Window {
    /// Seconds until the window resets, rounded up (at least 1): `retry-after`.
    pub fn retry_after_seconds(&self, now_ms: u64) -> u64 {
        self.end_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
    }

    /// When the stores may forget the window: one period after its end, so the previous window
    /// stays visible (usage, late settles) while the current one runs.
    pub fn keep_until_ms(&self) -> u64 {
        self.end_ms
            .saturating_add(self.end_ms.saturating_sub(self.start_ms))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1-12, day 1-31) of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn clamp(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// The window of `period` that contains `now_ms`. Day windows start at `reset_hour` UTC; month
/// windows on `reset_day` (1-28) at `reset_hour` UTC. Minute and hour windows ignore both.
pub fn window_at(period: Period, reset_hour: u8, reset_day: u8, now_ms: u64) -> Window {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let fixed = |len: i64, offset: i64| {
        let start = (now - offset).div_euclid(len) * len + offset;
        Window {
            start_ms: clamp(start),
            end_ms: clamp(start + len),
        }
    };
    let hour = i64::from(reset_hour.min(23)) * HOUR_MS;
    match period {
        Period::Minute => fixed(MINUTE_MS, 0),
        Period::Hour => fixed(HOUR_MS, 0),
        Period::Day => fixed(DAY_MS, hour),
        Period::Month => {
            let day = u32::from(reset_day.clamp(1, 28));
            let boundary = |y: i64, m: u32| days_from_civil(y, m, day) * DAY_MS + hour;
            let prev = |y: i64, m: u32| if m == 1 { (y - 1, 12) } else { (y, m - 1) };
            let next = |y: i64, m: u32| if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let (y, m, _) = civil_from_days(now.div_euclid(DAY_MS));
            let this = boundary(y, m);
            let (start, end) = if this > now {
                let (py, pm) = prev(y, m);
                (boundary(py, pm), this)
            } else {
                let (ny, nm) = next(y, m);
                (this, boundary(ny, nm))
            };
            Window {
                start_ms: clamp(start),
                end_ms: clamp(end),
            }
        }
    }
}

/// `3h 12m`, `42s`, `2d 4h`, `1m 5s`: the two largest units (smaller ones are dropped).
pub fn human_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    let parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")];
    let Some(first) = parts.iter().position(|(v, _)| *v > 0) else {
        return "0s".to_owned();
    };
    let mut out = format!("{}{}", parts[first].0, parts[first].1);
    if let Some((v, unit)) = parts.get(first + 1).filter(|(v, _)| *v > 0) {
        out.push_str(&format!(" {v}{unit}"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Unix ms of a UTC date and time.
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> u64 {
        (days_from_civil(y, mo, d) * DAY_MS + h * HOUR_MS + mi * MINUTE_MS + s * 1000) as u64
    }

    fn w(p: Period, h: u8, d: u8, now: u64) -> (u64, u64) {
        let w = window_at(p, h, d, now);
        (w.start_ms, w.end_ms)
    }

    #[test]
    fn civil_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 1),
            29
        );
        assert_eq!(
            days_from_civil(2023, 3, 1) - days_from_civil(2023, 2, 1),
            28
        );
        assert_eq!(
            days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 1),
            28
        );
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 1),
            29
        );
    }

    #[test]
    fn minute_and_hour() {
        let now = at(2024, 5, 17, 13, 42, 7) + 250;
        assert_eq!(
            w(Period::Minute, 0, 1, now),
            (at(2024, 5, 17, 13, 42, 0), at(2024, 5, 17, 13, 43, 0))
        );
        assert_eq!(
            w(Period::Hour, 0, 1, now),
            (at(2024, 5, 17, 13, 0, 0), at(2024, 5, 17, 14, 0, 0))
        );
        // Boundaries belong to the window they start.
        let edge = at(2024, 5, 17, 14, 0, 0);
        assert_eq!(w(Period::Hour, 0, 1, edge).0, edge);
        assert_eq!(w(Period::Minute, 0, 1, edge - 1).1, edge);
        // Resets do not move minute or hour windows.
        assert_eq!(w(Period::Hour, 5, 9, now), w(Period::Hour, 0, 1, now));
    }

    #[test]
    fn day_with_and_without_reset_hour() {
        let now = at(2024, 12, 31, 23, 59, 59);
        assert_eq!(
            w(Period::Day, 0, 1, now),
            (at(2024, 12, 31, 0, 0, 0), at(2025, 1, 1, 0, 0, 0))
        );
        // Reset at 06:00 UTC: 03:00 belongs to yesterday's window.
        let early = at(2025, 1, 1, 3, 0, 0);
        assert_eq!(
            w(Period::Day, 6, 1, early),
            (at(2024, 12, 31, 6, 0, 0), at(2025, 1, 1, 6, 0, 0))
        );
        let late = at(2025, 1, 1, 6, 0, 0);
        assert_eq!(
            w(Period::Day, 6, 1, late),
            (at(2025, 1, 1, 6, 0, 0), at(2025, 1, 2, 6, 0, 0))
        );
        // Feb 28 -> 29 -> Mar 1 in a leap year.
        assert_eq!(
            w(Period::Day, 0, 1, at(2024, 2, 29, 12, 0, 0)),
            (at(2024, 2, 29, 0, 0, 0), at(2024, 3, 1, 0, 0, 0))
        );
    }

    #[test]
    fn months_december_to_january_and_february() {
        assert_eq!(
            w(Period::Month, 0, 1, at(2024, 12, 15, 0, 0, 0)),
            (at(2024, 12, 1, 0, 0, 0), at(2025, 1, 1, 0, 0, 0))
        );
        assert_eq!(
            w(Period::Month, 0, 1, at(2025, 1, 1, 0, 0, 0)),
            (at(2025, 1, 1, 0, 0, 0), at(2025, 2, 1, 0, 0, 0))
        );
        // Leap and common Februaries.
        let (s, e) = w(Period::Month, 0, 1, at(2024, 2, 29, 23, 59, 59));
        assert_eq!((s, e), (at(2024, 2, 1, 0, 0, 0), at(2024, 3, 1, 0, 0, 0)));
        assert_eq!(e - s, 29 * DAY_MS as u64);
        let (s, e) = w(Period::Month, 0, 1, at(2023, 2, 10, 0, 0, 0));
        assert_eq!(e - s, 28 * DAY_MS as u64);
        let (s, e) = w(Period::Month, 0, 1, at(2023, 7, 10, 0, 0, 0));
        assert_eq!(e - s, 31 * DAY_MS as u64);
    }

    #[test]
    fn months_with_reset_day_and_hour() {
        // Reset on the 15th at 09:00 UTC.
        assert_eq!(
            w(Period::Month, 9, 15, at(2025, 1, 15, 8, 59, 59)),
            (at(2024, 12, 15, 9, 0, 0), at(2025, 1, 15, 9, 0, 0))
        );
        assert_eq!(
            w(Period::Month, 9, 15, at(2025, 1, 15, 9, 0, 0)),
            (at(2025, 1, 15, 9, 0, 0), at(2025, 2, 15, 9, 0, 0))
        );
        assert_eq!(
            w(Period::Month, 9, 15, at(2024, 12, 20, 0, 0, 0)),
            (at(2024, 12, 15, 9, 0, 0), at(2025, 1, 15, 9, 0, 0))
        );
        // Reset on the 28th spans February in a leap year.
        assert_eq!(
            w(Period::Month, 0, 28, at(2024, 2, 29, 0, 0, 0)),
            (at(2024, 2, 28, 0, 0, 0), at(2024, 3, 28, 0, 0, 0))
        );
        // Near the epoch the previous boundary clamps at 0.
        assert_eq!(w(Period::Month, 0, 15, 1000).0, 0);
    }

    #[test]
    fn retry_after_and_durations() {
        let win = Window {
            start_ms: 0,
            end_ms: 60_000,
        };
        assert_eq!(win.retry_after_seconds(0), 60);
        assert_eq!(win.retry_after_seconds(59_001), 1);
        assert_eq!(win.retry_after_seconds(59_999), 1);
        assert_eq!(win.retry_after_seconds(60_000), 1);
        assert_eq!(win.retry_after_seconds(1), 60);
        assert_eq!(win.keep_until_ms(), 120_000);
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(65), "1m 5s");
        assert_eq!(human_duration(3 * 3600 + 12 * 60 + 9), "3h 12m");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(2 * 86_400 + 4 * 3600 + 1), "2d 4h");
        assert_eq!(human_duration(86_400 + 59), "1d");
    }
}
