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

/// The forms every duration flag takes, for help texts and errors.
pub const DURATION_FORMS: &str =
    "90 (seconds), 90s, 5m, 1h30m, 2d or 2w (units s, m, h, d, w; largest first)";

/// The longest duration a flag takes: ten years. Anything longer is a
/// typo, and deadlines past it would overflow the clock's arithmetic.
pub const MAX_DURATION_SECS: u64 = 3650 * 86_400;

/// A duration flag (`--timeout`, `--lock-wait`, `--max-backup-age`, …), as
/// clap's `value_parser`: a bare number of seconds (`90`), or numbers with
/// units, largest first, each unit once (`90s`, `5m`, `1h30m`, `2d`, `2w`).
/// The error names the accepted forms.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = |why: &str| format!("{why}: write {DURATION_FORMS}");
    if text.is_empty() {
        return Err(bad("no duration given"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| bad("too long"))?;
        return within_limit(secs);
    }
    // (unit, seconds), largest first: the order units must come in.
    const UNITS: [(char, u64); 5] = [
        ('w', 7 * 86_400),
        ('d', 86_400),
        ('h', 3600),
        ('m', 60),
        ('s', 1),
    ];
    let mut total: u64 = 0;
    let mut next_unit = 0; // the index in UNITS the next unit may start from
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Some(unit) = rest[digits..].chars().next() else {
            return Err(bad(&format!("the last number in {text:?} has no unit")));
        };
        if digits == 0 {
            return Err(match unit {
                '.' | ',' => bad("no fractions"),
                '-' => bad("no negative durations"),
                _ => bad("not a duration"),
            });
        }
        if unit == '.' || unit == ',' {
            return Err(bad("no fractions (1h30m, not 1.5h)"));
        }
        let Some(at) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(bad(&format!("unknown unit {unit:?}")));
        };
        if at < next_unit {
            return Err(bad("each unit once, largest first (1h30m, not 30m1h)"));
        }
        next_unit = at + 1;
        let n: u64 = rest[..digits].parse().map_err(|_| bad("too long"))?;
        total = n
            .checked_mul(UNITS[at].1)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| bad("too long"))?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    within_limit(total)
}

fn within_limit(secs: u64) -> Result<std::time::Duration, String> {
    if secs > MAX_DURATION_SECS {
        return Err(format!(
            "too long: at most {}d; write {DURATION_FORMS}",
            MAX_DURATION_SECS / 86_400
        ));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// [`duration`] in whole seconds, for flags compared with Unix times.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    duration(text).map(|d| d.as_secs() as i64)
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
    fn durations_in_every_documented_form() {
        let secs = |t: &str| duration(t).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90), "a bare number is seconds");
        assert_eq!(secs("0"), Ok(0));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("5m"), Ok(300));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("26h"), Ok(93_600));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(secs("2w"), Ok(1_209_600));
        assert_eq!(secs("1d2h3m4s"), Ok(93_784));
        assert_eq!(secs("3650d"), Ok(MAX_DURATION_SECS));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
    }

    #[test]
    fn refused_durations_name_the_accepted_forms() {
        for bad in [
            "",
            "5x",
            "m",
            "-5",
            "-5m",
            "1.5h",
            ".5h",
            "5M",
            "5 m",
            " 5m",
            "5m ",
            "30m1h",
            "5m5m",
            "1h30",
            "5ms",
            "10y",
            "3651d",
            "99999999999999999999",
            "9999999999999w",
            "5min",
            "½h",
        ] {
            let err = duration(bad).expect_err(bad);
            assert!(
                err.contains("90s, 5m, 1h30m, 2d"),
                "{bad:?}: the error names the accepted forms: {err}"
            );
        }
        assert!(duration("1.5h").unwrap_err().contains("1h30m, not 1.5h"));
        assert!(duration("30m1h").unwrap_err().contains("largest first"));
        assert!(duration("3651d").unwrap_err().contains("at most 3650d"));
        assert!(duration("5x").unwrap_err().contains("unknown unit 'x'"));
        assert!(duration("1h30").unwrap_err().contains("has no unit"));
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
