//! Calendar arithmetic on unix times: the dates Amanda writes (run timestamps
//! `YYYYMMDDhhmmss`, the legacy `dumpdate` `Y:M:D:h:m:s`, tar's `--newer` date, log
//! stamps), in the proleptic Gregorian calendar, after Howard Hinnant's algorithms.
//!
//! What this module must not do: read the clock or the time zone. Callers pass the time
//! (and, for local time, the broken-down value their C library gave them).

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

/// Days since 1970-01-01 to the civil date `(year, month, day)`.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

/// Seconds since the epoch of `c` read as UTC.
pub fn unix_of(c: Civil) -> i64 {
    days_from_civil(c.year, c.month, c.day) * 86_400
        + i64::from(c.hour) * 3600
        + i64::from(c.minute) * 60
        + i64::from(c.second)
}

/// The run timestamp `YYYYMMDDhhmmss` of `c` (amdump's datestamp).
pub fn timestamp(c: Civil) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// The legacy request `dumpdate` of `unix`: `Y:M:D:h:m:s` in UTC, no padding
/// (`1970:1:1:0:0:0` for "never", spec §6.6).
pub fn dumpdate(unix: i64) -> String {
    let c = utc(unix);
    format!(
        "{}:{}:{}:{}:{}:{}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `"%04d-%02d-%02d %2d:%02d:%02d GMT"` of `unix`: the `--newer` argument the legacy
/// GNUTAR program passes to tar (`gmtime`).
pub fn tar_newer_date(unix: i64) -> String {
    let c = utc(unix);
    format!(
        "{:04}-{:02}-{:02} {:2}:{:02}:{:02} GMT",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `YYYY-MM-DD hh:mm:ss.mmm` (UTC) of `unix` seconds and `millis`: a log line's stamp.
pub fn log_stamp(unix: i64, millis: u32) -> String {
    let c = utc(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{millis:03}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_724), (2024, 1, 2));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn amandas_date_forms() {
        assert_eq!(dumpdate(0), "1970:1:1:0:0:0");
        // 2023-12-31 02:03:04 UTC (spec TV-5): no zero padding.
        assert_eq!(dumpdate(1_703_988_184), "2023:12:31:2:3:4");
        assert_eq!(timestamp(utc(1_704_164_645)), "20240102030405");
        assert_eq!(tar_newer_date(1_703_988_184), "2023-12-31  2:03:04 GMT");
        assert_eq!(tar_newer_date(0), "1970-01-01  0:00:00 GMT");
        assert_eq!(tar_newer_date(951_782_400), "2000-02-29  0:00:00 GMT");
        assert_eq!(log_stamp(1_704_164_645, 7), "2024-01-02 03:04:05.007");
        assert_eq!(unix_of(utc(1_704_164_645)), 1_704_164_645);
    }
}
