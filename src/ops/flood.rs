//! Rate-limited warnings about floods: malformed or unwanted packets, failed
//! authentication, quota refusals.
//!
//! Nothing is logged per packet. Each shard compares its counters once per
//! window and logs at most one warning per kind per window, with the counts, so
//! a flood of a million packets costs a handful of log lines, and an operator
//! still learns that it happened, when, and of what kind.

use std::time::Duration;

use crate::turn::server::Stats;

/// How often a shard looks, and so the most often it warns about one kind.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Per window and shard: more than this is a flood worth a warning.
const DROPS: u64 = 10_000;
const AUTH_FAILURES: u64 = 200;
const QUOTA_REJECTIONS: u64 = 200;

/// What crossed its threshold in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flood {
    pub drops: Option<u64>,
    pub auth_failures: Option<u64>,
    pub quota_rejections: Option<u64>,
}

/// Counts at the start of the current window.
#[derive(Default)]
pub struct FloodWatch {
    drops: u64,
    auth_failures: u64,
    quota_rejections: u64,
}

fn over(now: u64, before: u64, limit: u64) -> Option<u64> {
    let d = now.saturating_sub(before);
    (d > limit).then_some(d)
}

impl FloodWatch {
    /// Ends a window: what was over its threshold since the last call.
    pub fn check(&mut self, s: &Stats) -> Flood {
        let drops = s.drops.iter().sum();
        let auth = s.auth_failures.iter().sum();
        let quota = s.quota_rejections.iter().sum();
        let f = Flood {
            drops: over(drops, self.drops, DROPS),
            auth_failures: over(auth, self.auth_failures, AUTH_FAILURES),
            quota_rejections: over(quota, self.quota_rejections, QUOTA_REJECTIONS),
        };
        (self.drops, self.auth_failures, self.quota_rejections) = (drops, auth, quota);
        f
    }

    /// Checks and logs: one line per kind over its threshold.
    pub fn warn(&mut self, shard: usize, s: &Stats) {
        let f = self.check(s);
        let secs = WINDOW.as_secs();
        if let Some(n) = f.drops {
            tracing::warn!(
                shard,
                packets = n,
                seconds = secs,
                "flood: many packets dropped (malformed, unexpected or unpermitted; see ferroturn_dropped_packets_total)"
            );
        }
        if let Some(n) = f.auth_failures {
            tracing::warn!(
                shard,
                failures = n,
                seconds = secs,
                "flood: many failed authentications (see ferroturn_auth_failures_total)"
            );
        }
        if let Some(n) = f.quota_rejections {
            tracing::warn!(
                shard,
                rejections = n,
                seconds = secs,
                "flood: many requests refused by quotas (see ferroturn_quota_rejections_total)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_window_and_only_above_the_threshold() {
        let mut w = FloodWatch::default();
        let mut s = Stats::default();
        s.drops[0] = 10;
        s.auth_failures[1] = 5;
        assert_eq!(w.check(&s), Flood::default());
        s.drops[0] += DROPS + 1;
        s.auth_failures[1] += AUTH_FAILURES;
        s.quota_rejections[0] = QUOTA_REJECTIONS + 50;
        let f = w.check(&s);
        assert_eq!(f.drops, Some(DROPS + 1));
        assert_eq!(f.auth_failures, None, "exactly the threshold is no flood");
        assert_eq!(f.quota_rejections, Some(QUOTA_REJECTIONS + 50));
        // The next window starts from here: a quiet one warns about nothing.
        assert_eq!(w.check(&s), Flood::default());
    }
}
