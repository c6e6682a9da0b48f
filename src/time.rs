//! Wall-clock helpers shared by the CLI, the admin commands, the bench and
//! the credential store: the current unix time, the one duration parser for
//! command-line flags, and RFC 3339 formatting of unix timestamps.
//!
//! The protocol core never reads the clock (see the crate documentation);
//! these are for the edges that do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Parses a duration flag: humantime's syntax (`90s`, `250ms`, `10m`,
/// `1h 30m`, `2d`) or a plain number of seconds (`90`, `1.5`). It must be
/// more than zero.
///
/// The error is a complete sentence quoting the input, suitable as a clap
/// `value_parser` message.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        text.parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| format!("{s:?} is not a number of seconds"))?
    } else {
        humantime::parse_duration(text).map_err(|e| {
            format!("{s:?} is not a duration like 90s, 250ms, 10m or 1h (plain numbers are seconds): {e}")
        })?
    };
    if parsed.is_zero() {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(parsed)
}

/// Unix seconds as RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SSZ`.
///
/// Times RFC 3339 formatting cannot show (before 1970, or after the year
/// 9999) come out as `unix time SECS`.
pub fn format_unix(secs: i64) -> String {
    // The last second of the year 9999, the end of humantime's range.
    const LAST: u64 = 253_402_300_799;
    match u64::try_from(secs) {
        Ok(s) if s <= LAST => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
        }
        _ => format!("unix time {secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration(" 90s ").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in [
            "",
            "0s",
            "0",
            "0.0",
            "5 parsecs",
            "-1",
            "1e3",
            ".",
            "1..5",
            "s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unix_time_formatting() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(format_unix(253_402_300_800), "unix time 253402300800");
        assert_eq!(format_unix(-1), "unix time -1");
        assert_eq!(format_unix(i64::MAX), format!("unix time {}", i64::MAX));
    }

    #[test]
    fn now_is_after_2020() {
        assert!(unix_now() > 1_577_836_800);
    }
}
