//! Wall-clock values the protocol and the catalog need: the run timestamp
//! (`YYYYMMDDhhmmss`, local time, as amdump writes it), the legacy `dumpdate`
//! (`Y:M:D:h:m:s` in UTC without zero padding, spec §6.6) and calendar dates.
//!
//! Everything that reads the clock is in [`now_unix`]; the formatters take the time as an
//! argument so that tests and the sans-IO parts never depend on it. What this module must
//! not do: keep state, or be called from `proto`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Broken-down calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month 1..=12.
    pub month: u32,
    /// Day 1..=31.
    pub day: u32,
    /// Hour 0..=23.
    pub hour: u32,
    /// Minute 0..=59.
    pub minute: u32,
    /// Second 0..=60.
    pub second: u32,
}

/// Days since 1970-01-01 to the civil date (proleptic Gregorian), after Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The civil date to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTC broken-down time of `unix` seconds.
pub fn utc(unix: i64) -> Civil {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: ((secs % 3600) / 60) as u32,
        second: (secs % 60) as u32,
    }
}

/// Local broken-down time of `unix` seconds (the TZ database via `localtime_r`); UTC if the
/// C library cannot convert it.
pub fn local(unix: i64) -> Civil {
    let t: libc::time_t = unix as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value for every field (plain integers and a null
    // zone pointer), and localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is the
    // thread-safe variant and keeps no reference to them.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return utc(unix);
    }
    Civil {
        year: i64::from(tm.tm_year) + 1900,
        month: (tm.tm_mon + 1).clamp(1, 12) as u32,
        day: tm.tm_mday.clamp(1, 31) as u32,
        hour: tm.tm_hour.clamp(0, 23) as u32,
        minute: tm.tm_min.clamp(0, 59) as u32,
        second: tm.tm_sec.clamp(0, 60) as u32,
    }
}

/// The run timestamp `YYYYMMDDhhmmss` of `c`.
pub fn timestamp(c: Civil) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// The legacy request `dumpdate` of `unix`: `Y:M:D:h:m:s` in UTC, no padding
/// (`1970:1:1:0:0:0` for "never").
pub fn dumpdate(unix: i64) -> String {
    let c = utc(unix);
    format!(
        "{}:{}:{}:{}:{}:{}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `YYYY-MM-DD` of a run timestamp (its first eight digits); `None` if it is not one.
pub fn date_of_timestamp(ts: &str) -> Option<String> {
    let d = ts.get(..8)?;
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]))
}

/// Parses `YYYY-MM-DD` (or `YYYYMMDD`) into a comparable `YYYYMMDD` string.
pub fn parse_date(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(|c| *c != '-').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let m: u32 = digits[4..6].parse().ok()?;
    let d: u32 = digits[6..8].parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some(digits)
}

/// Seconds since the epoch of a run timestamp read as local time, approximately (the UTC
/// offset of now is applied). Used only to compare ages in days.
pub fn unix_of_timestamp(ts: &str) -> Option<i64> {
    if ts.len() < 14 || !ts.bytes().take(14).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| ts.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, mo, d, h, mi, s) = (
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    );
    let days = days_from_civil(y, u32::try_from(mo).ok()?, u32::try_from(d).ok()?);
    let naive = days * 86_400 + h * 3600 + mi * 60 + s;
    let now = now_unix();
    let offset = {
        let l = local(now);
        let lu = days_from_civil(l.year, l.month, l.day) * 86_400
            + i64::from(l.hour) * 3600
            + i64::from(l.minute) * 60
            + i64::from(l.second);
        lu - now
    };
    Some(naive - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_dumpdate_is_amandas_never() {
        assert_eq!(dumpdate(0), "1970:1:1:0:0:0");
    }

    #[test]
    fn dumpdate_has_no_zero_padding() {
        // 2023-12-31 02:03:04 UTC (spec TV-5)
        assert_eq!(dumpdate(1_703_988_184), "2023:12:31:2:3:4");
    }

    #[test]
    fn timestamp_is_fourteen_digits() {
        let c = utc(1_704_164_645);
        assert_eq!(timestamp(c), "20240102030405");
    }

    #[test]
    fn civil_round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn dates_parse_in_both_spellings() {
        assert_eq!(parse_date("2026-11-22").as_deref(), Some("20261122"));
        assert_eq!(parse_date("20261122").as_deref(), Some("20261122"));
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(
            date_of_timestamp("20261122044426").as_deref(),
            Some("2026-11-22")
        );
    }
}
