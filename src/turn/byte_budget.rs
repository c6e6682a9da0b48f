//! Byte budgets per user and period (`quota.max-bytes-per-user`): the period
//! a relayed packet is charged to. The counts themselves are in
//! [`quota::ByteBudget`](super::quota::ByteBudget), shared by a user's
//! allocations on every shard; the check and the charge are in
//! `Allocation::admit_to_peer` / `admit_to_client`.
//!
//! Periods are numbered in wall-clock time (`unix / period`, so days start at
//! UTC midnight), and wall-clock time comes from `now` and the anchor the
//! driver set ([`Server::set_wall_clock`]). Converting `now` for every packet
//! would cost a division; instead the instant the current period ends is
//! cached, and a packet compares `now` with it.

use std::time::{Duration, Instant};

use super::quota::period_of;
use super::server::Server;
use super::RelayBinder;

impl<B: RelayBinder> Server<B> {
    /// The budgets' (period, limit) at `now`, or `None` without budgets:
    /// for the packet path, which charges and checks against it.
    #[inline]
    pub(super) fn byte_budget(&mut self, now: Instant) -> Option<(u64, u64)> {
        let limit = self.cfg.max_bytes_per_user;
        if limit == 0 {
            return None;
        }
        let secs = self.cfg.bytes_period.as_secs().max(1);
        let (cached_secs, period, end) = self.budget_period;
        if cached_secs == secs && now < end {
            return Some((period, limit));
        }
        let period = period_of(self.unix(now), secs);
        // `unix(now)` counts whole seconds from the anchor, so it reaches the
        // next period's first second exactly at this instant.
        let next = (period + 1) * secs;
        let (base, base_unix) = self.wall_base;
        let end = base + Duration::from_secs(next.saturating_sub(base_unix));
        self.budget_period = (secs, period, end);
        Some((period, limit))
    }

    /// [`byte_budget`](Self::byte_budget) without the cache, for session lists
    /// and usage records.
    pub(super) fn budget_now(&self, now: Instant) -> Option<(u64, u64)> {
        let limit = self.cfg.max_bytes_per_user;
        (limit != 0).then(|| {
            let secs = self.cfg.bytes_period.as_secs();
            (period_of(self.unix(now), secs), limit)
        })
    }
}
