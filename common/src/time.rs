//! UTC calendar arithmetic for record timestamps and retention buckets,
//! without a date crate: hv only needs RFC 3339 output and hour, day, ISO
//! week, month and year keys of Unix times.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now() -> i64 {
    now_ms().div_euclid(1000)
}

/// Unix time in milliseconds, for ordering events within one second.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// (year, month, day) of a day count since 1970-01-01 (Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Broken-down UTC time: (year, month, day, hour, minute, second).
fn utc(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (
        y,
        m,
        d,
        (s / 3600) as u32,
        (s % 3600 / 60) as u32,
        (s % 60) as u32,
    )
}

pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = utc(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The Unix time of an RFC 3339 UTC time as [`rfc3339`] writes it
/// (`2026-11-22T03:04:05Z`); None for anything else.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let shape = b.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[19] == b'Z';
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    if !shape || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Seconds in a duration flag: `90s`, `30m`, `26h`, `7d`, `2w`.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let unit = |c: char| match c {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        'w' => Some(7 * 86_400),
        _ => None,
    };
    let bad = || {
        format!("{text:?} is not a duration: write a number and a unit, as 90s, 30m, 26h, 7d or 2w")
    };
    let last = text.chars().last().ok_or_else(bad)?;
    let scale = unit(last).ok_or_else(bad)?;
    let n: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    if n < 0 {
        return Err(bad());
    }
    n.checked_mul(scale).ok_or_else(bad)
}

/// `20261121-221005`, for names that sort by time.
pub fn compact(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = utc(secs);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// ISO 8601 week-based (year, week) of a UTC time.
pub fn iso_week(secs: i64) -> (i64, u32) {
    let days = secs.div_euclid(86_400);
    let weekday = (days + 3).rem_euclid(7); // 1970-01-01 was a Thursday; Monday = 0
    let thursday = days - weekday + 3;
    let (year, _, _) = civil(thursday);
    let jan1 = days_from_civil(year, 1, 1);
    (year, ((thursday - jan1) / 7 + 1) as u32)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for secs in [0, 951_782_400, 1_795_316_645, 4_102_444_799] {
            assert_eq!(
                parse_rfc3339(&rfc3339(secs)),
                Some(secs),
                "{}",
                rfc3339(secs)
            );
        }
        for bad in [
            "2026-11-22 03:04:05Z",
            "2026-13-01T00:00:00Z",
            "2026-11-22T03:04:05+01:00",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_298_405), "2026-11-21T22:00:05Z");
        assert_eq!(compact(1_795_298_405), "20261121-220005");
    }

    #[test]
    fn iso_weeks_at_year_edges() {
        let at = |y, m, d| days_from_civil(y, m, d) * 86_400 + 3600;
        assert_eq!(iso_week(at(2021, 1, 3)), (2020, 53));
        assert_eq!(iso_week(at(2021, 1, 4)), (2021, 1));
        assert_eq!(iso_week(at(2024, 12, 30)), (2025, 1));
        assert_eq!(iso_week(at(2026, 11, 21)), (2026, 47));
        assert_eq!(civil(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }
}
