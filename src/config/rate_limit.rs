//! `[rate-limit]`: limits on work done for clients nobody has authenticated yet.

use serde::Deserialize;

use super::validate::{int_in, Result};

/// The largest rate or burst accepted: far above any sensible limit, and small
/// enough that the core's nanosecond arithmetic never overflows.
const MAX: i64 = 1_000_000;

/// `[rate-limit]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRateLimit {
    /// `unauthenticated-per-second`: error answers to unauthenticated requests
    /// per source IP per second; 0 = unlimited.
    pub unauthenticated_per_second: i64,
    /// `unauthenticated-burst`: how many such answers a source may get at once.
    pub unauthenticated_burst: i64,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        let d = crate::turn::server::DEFAULT_UNAUTHENTICATED_RATE;
        RawRateLimit {
            unauthenticated_per_second: d.per_second.into(),
            unauthenticated_burst: d.burst.into(),
        }
    }
}

/// `[rate-limit]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Error answers (401, 400, 438, 420) to unauthenticated requests per
    /// source IP (per /64 for IPv6) and second; 0 = unlimited.
    pub unauthenticated_per_second: u32,
    /// The burst of such answers a source may get at once, >= 1.
    pub unauthenticated_burst: u32,
}

pub(super) fn validate_rate_limit(raw: &RawRateLimit) -> Result<RateLimitConfig> {
    let per_second: u32 = int_in(
        "rate-limit.unauthenticated-per-second",
        raw.unauthenticated_per_second,
        0,
        MAX,
    )?;
    let burst: u32 = int_in(
        "rate-limit.unauthenticated-burst",
        raw.unauthenticated_burst,
        1,
        MAX,
    )?;
    Ok(RateLimitConfig {
        unauthenticated_per_second: per_second,
        unauthenticated_burst: burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(per_second: i64, burst: i64) -> std::result::Result<RateLimitConfig, String> {
        validate_rate_limit(&RawRateLimit {
            unauthenticated_per_second: per_second,
            unauthenticated_burst: burst,
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_on() {
        let c = check(10, 20).unwrap();
        assert_eq!(c.unauthenticated_per_second, 10);
        assert_eq!(c.unauthenticated_burst, 20);
        assert_eq!(
            validate_rate_limit(&RawRateLimit::default()).unwrap(),
            c,
            "the default is 10 a second, bursts of 20"
        );
    }

    #[test]
    fn zero_turns_it_off_and_bad_values_name_the_key() {
        assert_eq!(check(0, 1).unwrap().unauthenticated_per_second, 0);
        let e = check(-1, 20).unwrap_err();
        assert!(e.contains("rate-limit.unauthenticated-per-second"), "{e}");
        let e = check(10, 0).unwrap_err();
        assert!(e.contains("rate-limit.unauthenticated-burst"), "{e}");
        let e = check(2_000_000, 2_000_000).unwrap_err();
        assert!(e.contains("rate-limit.unauthenticated-per-second"), "{e}");
    }
}
