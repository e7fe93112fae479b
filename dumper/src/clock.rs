//! Wall-clock values the protocol and the catalog need: now, local time, and the run
//! timestamp (`YYYYMMDDhhmmss`, local time, as amdump writes it) read back. The calendar
//! arithmetic and Amanda's date forms are `proto::civil`'s.
//!
//! Everything that reads the clock is in [`now_unix`]; the formatters take the time as an
//! argument so that tests and the sans-IO parts never depend on it. What this module must
//! not do: keep state, or be called from `proto`.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::civil::{Civil, days_from_civil, unix_of, utc};

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
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
    let offset = { unix_of(local(now)) - now };
    Some(naive - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

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
