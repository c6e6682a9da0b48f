//! Byte budgets counted in the credential store (`quota.max-bytes-per-user`
//! with a `[store]`): the store poller calls [`BudgetSync::run`] on each
//! visit, which sends what users relayed here since the last one and takes in
//! what other servers sharing the store relayed (the arithmetic is in
//! `turn::quota::shared`). Without a store, budgets stay per process.
//!
//! The `updated` stamps are each server's unix clock, and the rows changed
//! since the previous visit are read with [`CLOCK_SLACK`] of overlap, so
//! servers whose clocks differ by less than that miss nothing (reading a row
//! twice is harmless: a total is taken in only for what it adds).

use std::sync::Arc;

use crate::store::{Store, StoreError};
use crate::time::unix_now;
use crate::turn::quota::{period_of, QuotaTracker, DAY};

/// How far behind the previous visit the rows changed by others are read
/// again: the clock difference between servers that this tolerates.
pub const CLOCK_SLACK: i64 = 5;
/// Rows not added to for this long are removed (longer than any period).
const KEEP: i64 = 3 * DAY as i64;

/// What the poller keeps between visits.
#[derive(Debug)]
pub struct BudgetSync {
    quota: Arc<QuotaTracker>,
    /// `(period seconds, period)` of the previous visit, and the unix second
    /// it read changes from; `None` before the first (which reads the whole
    /// period: a restarted server picks up what it and others relayed).
    last: Option<((u64, u64), i64)>,
}

impl BudgetSync {
    pub fn new(quota: Arc<QuotaTracker>) -> Self {
        Self { quota, last: None }
    }

    /// One visit; nothing without budgets. On an error the unsent bytes stay
    /// counted here and are sent on a later visit.
    pub async fn run(&mut self, store: &Store) -> Result<(), StoreError> {
        let (limit, secs) = self.quota.byte_budget();
        if limit == 0 {
            self.last = None;
            return Ok(());
        }
        let now = unix_now();
        let period = period_of(u64::try_from(now).unwrap_or(0), secs);
        let since = match self.last {
            Some((key, from)) if key == (secs, period) => from - CLOCK_SLACK,
            _ => {
                // A new period (or the first visit): old rows can go.
                store.prune_byte_usage(now - KEEP).await?;
                0
            }
        };
        let deltas = self.quota.budget_deltas(period);
        if !deltas.is_empty() {
            let rows: Vec<(&str, u64)> = deltas.iter().map(|d| (&*d.user, d.bytes)).collect();
            let totals = store.add_byte_usage(secs, period, now, &rows).await?;
            for (d, total) in deltas.iter().zip(totals) {
                self.quota.settle(d, period, total);
            }
        }
        for (user, total) in store.byte_usage_since(secs, period, since).await? {
            self.quota.learn(&user, period, total);
        }
        self.last = Some(((secs, period), now));
        Ok(())
    }
}
