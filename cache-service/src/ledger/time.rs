//! UTC calendar arithmetic without a date crate: days since the epoch <-> civil dates (Howard
//! Hinnant's `days_from_civil` / `civil_from_days`), RFC 3339 parsing and formatting, month
//! bounds. Times are unix milliseconds (`u64`, so nothing before 1970).

pub const MS_PER_DAY: u64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (`month` 1-12, `day` 1-31).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both fit in u32 by the ranges above.
    (year, month as u32, day as u32)
}

pub fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// UTC day number of a unix-ms time.
pub fn day_of(ms: u64) -> u64 {
    ms / MS_PER_DAY
}

/// `YYYY-MM-DD` of a UTC day number.
pub fn format_day(day: u64) -> String {
    let (y, m, d) = civil_from_days(i64::try_from(day).unwrap_or(i64::MAX / 2));
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 UTC with milliseconds: `2025-01-31T23:59:59.999Z`.
pub fn format_rfc3339(ms: u64) -> String {
    let mut s = format_day(day_of(ms));
    let rem = ms % MS_PER_DAY;
    let (h, rem) = (rem / 3_600_000, rem % 3_600_000);
    let (min, rem) = (rem / 60_000, rem % 60_000);
    let (sec, milli) = (rem / 1000, rem % 1000);
    s.push_str(&format!("T{h:02}:{min:02}:{sec:02}.{milli:03}Z"));
    s
}

/// [start, end) of the UTC calendar month containing `ms`.
pub fn month_bounds(ms: u64) -> (u64, u64) {
    let (y, m, _) = civil_from_days(i64::try_from(day_of(ms)).unwrap_or(0));
    let start = days_from_civil(y, m, 1);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = days_from_civil(ny, nm, 1);
    let to_ms = |d: i64| u64::try_from(d).unwrap_or(0).saturating_mul(MS_PER_DAY);
    (to_ms(start), to_ms(end))
}

/// A parsed time parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    /// A whole UTC date (`YYYY-MM-DD`): its first millisecond.
    Date(u64),
    /// An instant (RFC 3339 date-time or unix milliseconds).
    Instant(u64),
}

impl TimeSpec {
    /// As the start of a range: the instant, or the date's first millisecond.
    pub fn as_from(self) -> u64 {
        match self {
            TimeSpec::Date(ms) | TimeSpec::Instant(ms) => ms,
        }
    }

    /// As the (exclusive) end of a range: the instant, or the end of the date (so that
    /// `from=2025-01-01&to=2025-01-31` is all of January).
    pub fn as_to(self) -> u64 {
        match self {
            TimeSpec::Date(ms) => ms.saturating_add(MS_PER_DAY),
            TimeSpec::Instant(ms) => ms,
        }
    }
}

/// Parses `YYYY-MM-DD`, an RFC 3339 date-time (`2025-01-31T12:00:00Z`,
/// `...T12:00:00.250+02:00`; `t`/`z`/space accepted as RFC 3339 allows; an offset sign `+`
/// decoded to a space by form decoding is accepted too), or unix milliseconds (digits only).
pub fn parse_time(s: &str) -> Result<TimeSpec, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(TimeSpec::Instant)
            .map_err(|_| format!("{s:?}: unix milliseconds out of range"));
    }
    let b = s.as_bytes();
    let bad = || {
        format!(
            "{s:?}: expected YYYY-MM-DD, an RFC 3339 date-time (2025-01-31T12:00:00Z) or unix milliseconds"
        )
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let year = digits(&b[0..4]).ok_or_else(bad)?;
    let month = digits(&b[5..7]).ok_or_else(bad)?;
    let day = digits(&b[8..10]).ok_or_else(bad)?;
    if !(1..=12).contains(&month) {
        return Err(format!("{s:?}: month {month} is not 1-12"));
    }
    if day < 1 || day > days_in_month(i64::from(year), month) {
        return Err(format!(
            "{s:?}: day {day} does not exist in {year:04}-{month:02}"
        ));
    }
    if year < 1970 {
        return Err(format!("{s:?}: times before 1970 are not supported"));
    }
    let days = days_from_civil(i64::from(year), month, day);
    let day_ms = u64::try_from(days).map_err(|_| bad())? * MS_PER_DAY;
    if b.len() == 10 {
        return Ok(TimeSpec::Date(day_ms));
    }
    // Date-time: T hh:mm:ss [.frac] (Z | ±hh:mm)
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let hour = digits(&b[11..13]).ok_or_else(bad)?;
    let minute = digits(&b[14..16]).ok_or_else(bad)?;
    let second = digits(&b[17..19]).ok_or_else(bad)?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!("{s:?}: time of day out of range"));
    }
    let mut i = 19;
    let mut millis = 0u64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_s: i64 = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-' | b' '), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2]).ok_or_else(bad)?;
            let om = digits(&[*m1, *m2]).ok_or_else(bad)?;
            if oh > 23 || om > 59 {
                return Err(format!("{s:?}: offset out of range"));
            }
            let v = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -v } else { v }
        }
        _ => return Err(bad()),
    };
    let local_ms = day_ms as i128
        + i128::from(hour) * 3_600_000
        + i128::from(minute) * 60_000
        + i128::from(second) * 1000
        + i128::from(millis);
    let utc = local_ms - i128::from(offset_s) * 1000;
    u64::try_from(utc)
        .map(TimeSpec::Instant)
        .map_err(|_| format!("{s:?}: times before 1970 are not supported"))
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for d in -1000..200_000 {
            let (y, m, dd) = civil_from_days(d);
            assert!((1..=12).contains(&m) && dd >= 1 && dd <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, dd), d, "{y}-{m}-{dd}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.999Z
        let ms = 19_782 * MS_PER_DAY + MS_PER_DAY - 1;
        assert_eq!(format_rfc3339(ms), "2024-02-29T23:59:59.999Z");
    }

    #[test]
    fn month_bounds_cover_leap_and_year_end() {
        let feb29 = 19_782 * MS_PER_DAY + 5;
        let (s, e) = month_bounds(feb29);
        assert_eq!(format_rfc3339(s), "2024-02-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(e), "2024-03-01T00:00:00.000Z");
        let dec = u64::try_from(days_from_civil(2024, 12, 31)).unwrap() * MS_PER_DAY;
        let (s, e) = month_bounds(dec + MS_PER_DAY - 1);
        assert_eq!(format_rfc3339(s), "2024-12-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(e), "2025-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_dates_datetimes_and_ms() {
        let jan1 = 1_735_689_600_000u64; // 2025-01-01T00:00:00Z
        assert_eq!(parse_time("2025-01-01"), Ok(TimeSpec::Date(jan1)));
        assert_eq!(parse_time("2025-01-01").unwrap().as_to(), jan1 + MS_PER_DAY);
        assert_eq!(
            parse_time("2025-01-01T00:00:00Z"),
            Ok(TimeSpec::Instant(jan1))
        );
        assert_eq!(
            parse_time("2025-01-01t01:02:03.5z"),
            Ok(TimeSpec::Instant(jan1 + 3_723_500))
        );
        assert_eq!(
            parse_time("2025-01-01T02:00:00.123456+02:00"),
            Ok(TimeSpec::Instant(jan1 + 123))
        );
        // '+' decoded to ' ' by form decoding.
        assert_eq!(
            parse_time("2025-01-01T02:00:00 02:00"),
            Ok(TimeSpec::Instant(jan1))
        );
        assert_eq!(
            parse_time("2024-12-31T22:00:00-02:00"),
            Ok(TimeSpec::Instant(jan1))
        );
        assert_eq!(parse_time("1735689600000"), Ok(TimeSpec::Instant(jan1)));
        assert_eq!(parse_time("1735689600000").unwrap().as_to(), jan1);
    }

    #[test]
    fn rejects_bad_times() {
        for bad in [
            "",
            "2025-1-01",
            "2025-13-01",
            "2025-02-29",
            "2025-04-31",
            "1969-12-31",
            "2025-01-01T24:00:00Z",
            "2025-01-01T12:00:00",
            "2025-01-01T12:00Z",
            "2025-01-01T12:00:00.Z",
            "2025-01-01T12:00:00+2:00",
            "1970-01-01T00:00:00+01:00",
            "99999999999999999999999",
            "-5",
            "yesterday",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            parse_time("2025-02-30")
                .unwrap_err()
                .contains("does not exist")
        );
    }
}
