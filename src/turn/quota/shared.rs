//! Quotas shared through the credential store: the allocations per user of
//! a cluster's nodes ([`QuotaTracker::user_allocations`],
//! [`QuotaTracker::set_remote_allocations`]: exchanged by the node registry
//! every second, so a user can exceed `max-allocations-per-user` by what it
//! allocates on other nodes within that second), and byte budgets: every
//! server that uses one store (several nodes on one PostgreSQL, or one node
//! across restarts) counts a user's relayed bytes against one budget.
//!
//! The packet path never waits on the database: it charges the local
//! [`ByteBudget`] as without a store. The store poller (`ops::store_sync`)
//! adds what was charged here since its last visit to the store's row of the
//! user and period ([`QuotaTracker::budget_deltas`], then
//! [`QuotaTracker::settle`] with the row's new total), and reads the rows other
//! servers changed ([`QuotaTracker::learn`]). Each budget keeps how much of its
//! count the store already holds (`synced`), so that
//!
//! `used = synced + bytes charged here and not yet sent`
//!
//! and a total from the store raises `used` by exactly what other servers
//! added. A user is cut at most one poll interval late on each server: the
//! overshoot is bounded by what every server relays for that user in that time.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ByteBudget, QuotaTracker};

/// Bytes one user relayed here that the store does not hold yet.
#[derive(Debug)]
pub struct BudgetDelta {
    /// The user, as the quotas count it.
    pub user: Box<str>,
    /// The bytes to add to the store's row.
    pub bytes: u64,
    budget: Arc<ByteBudget>,
    /// The budget's count when the delta was taken: what the store holds of
    /// it once the delta is added.
    upto: u64,
}

impl ByteBudget {
    /// How much of the count of `period` the store holds.
    fn synced_in(&self, period: u64) -> u64 {
        if self.synced_period.load(Ordering::Relaxed) == period {
            self.synced.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// The store holds `total` bytes for `period`, of which `upto` of this
    /// count (0 when nothing was sent): counts what other servers relayed.
    /// Ignored once the count moved on to a later period.
    fn settle(&self, period: u64, upto: u64, total: u64) {
        if self.period.load(Ordering::Relaxed) != period {
            return;
        }
        let held = self.synced_in(period).max(upto);
        let held = if total > held {
            self.used.fetch_add(total - held, Ordering::Relaxed);
            total
        } else {
            held
        };
        self.synced.store(held, Ordering::Relaxed);
        self.synced_period.store(period, Ordering::Relaxed);
    }
}

impl QuotaTracker {
    /// Allocations per user held here (users with none left out).
    pub fn user_allocations(&self) -> HashMap<Box<str>, u32> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.users
            .iter()
            .filter(|(_, u)| u.allocations > 0)
            .map(|(name, u)| (name.clone(), u.allocations))
            .collect()
    }

    /// Allocations per user on the other live nodes, as last read from the
    /// registry: they count against the per-user limit here.
    pub fn set_remote_allocations(&self, counts: impl IntoIterator<Item = (String, u32)>) {
        let remote = counts
            .into_iter()
            .map(|(user, n)| (user.into_boxed_str(), n))
            .collect();
        self.state.lock().unwrap_or_else(|p| p.into_inner()).remote = remote;
    }

    /// What each user relayed here in `period` that the store does not hold
    /// yet (users with nothing new are left out).
    pub fn budget_deltas(&self, period: u64) -> Vec<BudgetDelta> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.users
            .iter()
            .filter_map(|(user, u)| {
                let b = &u.budget;
                if b.period.load(Ordering::Relaxed) != period {
                    return None;
                }
                let upto = b.used.load(Ordering::Relaxed);
                let bytes = upto.saturating_sub(b.synced_in(period));
                (bytes > 0).then(|| BudgetDelta {
                    user: user.clone(),
                    bytes,
                    budget: b.clone(),
                    upto,
                })
            })
            .collect()
    }

    /// `delta` was added to the store, whose row now holds `total`.
    pub fn settle(&self, delta: &BudgetDelta, period: u64, total: u64) {
        delta.budget.settle(period, delta.upto, total);
    }

    /// The store holds `total` bytes of `user` in `period`. Users this server
    /// does not count yet are taken on only when `total` uses their budget up
    /// (so that their Allocates get 486 here too): the map stays bounded by the
    /// users active here, not the users of every server.
    pub fn learn(&self, user: &str, period: u64, total: u64) {
        let (limit, _) = self.byte_budget();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let budget = match s.users.get(user) {
            Some(u) => u.budget.clone(),
            None if limit != 0 && total >= limit => {
                s.users.entry(user.into()).or_default().budget.clone()
            }
            None => return,
        };
        drop(s);
        if budget.period.load(Ordering::Relaxed) > period {
            return;
        }
        // Rolls a count of an earlier period over to this one.
        budget.charge(period, 0);
        budget.settle(period, 0, total);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::HOUR;
    use super::*;

    fn ip() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    /// Two servers' trackers and the store's rows, kept by hand.
    fn sync(q: &QuotaTracker, store: &mut std::collections::HashMap<String, u64>, period: u64) {
        for d in q.budget_deltas(period) {
            let total = store.entry(d.user.to_string()).or_default();
            *total += d.bytes;
            q.settle(&d, period, *total);
        }
        for (user, total) in store.iter() {
            q.learn(user, period, *total);
        }
    }

    #[test]
    fn two_servers_count_one_budget() {
        let (a, b) = (QuotaTracker::new(0, 0), QuotaTracker::new(0, 0));
        a.set_byte_budget(1000, HOUR);
        b.set_byte_budget(1000, HOUR);
        let mut store = std::collections::HashMap::new();
        let on_a = a.acquire("alice", ip(), 0).unwrap();
        let on_b = b.acquire("alice", ip(), 0).unwrap();
        on_a.charge(0, 300);
        on_b.charge(0, 200);
        sync(&a, &mut store, 0);
        sync(&b, &mut store, 0);
        // B saw A's 300; A has not seen B's 200 yet.
        assert_eq!(on_b.used(0), 500);
        assert_eq!(on_a.used(0), 300);
        sync(&a, &mut store, 0);
        assert_eq!(on_a.used(0), 500);
        // Charges between polls are neither lost nor counted twice.
        on_a.charge(0, 100);
        on_b.charge(0, 50);
        sync(&b, &mut store, 0);
        sync(&a, &mut store, 0);
        sync(&b, &mut store, 0);
        assert_eq!(store["alice"], 650);
        assert_eq!(on_a.used(0), 650);
        assert_eq!(on_b.used(0), 650);
        // Nothing new: nothing to send, and the counts stay.
        assert!(a.budget_deltas(0).is_empty());
        sync(&a, &mut store, 0);
        assert_eq!(on_a.used(0), 650);
    }

    #[test]
    fn allocations_on_other_nodes_count_against_the_per_user_limit() {
        let q = QuotaTracker::new(3, 0);
        q.acquire("alice", ip(), 0).unwrap();
        q.acquire("bob", ip(), 0).unwrap();
        assert_eq!(
            q.user_allocations(),
            HashMap::from([("alice".into(), 1), ("bob".into(), 1)])
        );
        q.set_remote_allocations([("alice".to_owned(), 2)]);
        assert_eq!(
            q.acquire("alice", ip(), 0).err(),
            Some(super::super::QuotaError::User)
        );
        assert!(q.acquire("bob", ip(), 0).is_ok());
        // Only this node's own allocations are published.
        assert_eq!(q.user_allocations()["alice"], 1);
        // The other node let one go (or went away).
        q.set_remote_allocations([("alice".to_owned(), 1)]);
        assert!(q.acquire("alice", ip(), 0).is_ok());
    }

    #[test]
    fn a_user_used_up_elsewhere_is_refused_here() {
        let q = QuotaTracker::new(0, 0);
        q.set_byte_budget(1000, HOUR);
        // Below the budget, an unknown user is not taken on.
        q.learn("bob", 0, 999);
        assert!(q.state.lock().unwrap().users.is_empty());
        q.learn("bob", 0, 1000);
        assert_eq!(
            q.acquire("bob", ip(), 10).err(),
            Some(super::super::QuotaError::Bytes)
        );
        assert_eq!(q.exhausted_users(10), 1);
        // The next period starts afresh.
        assert!(q.acquire("bob", ip(), HOUR).is_ok());
    }

    #[test]
    fn a_count_of_a_later_period_ignores_older_totals() {
        let q = QuotaTracker::new(0, 0);
        q.set_byte_budget(1000, HOUR);
        let b = q.acquire("carol", ip(), 0).unwrap();
        b.charge(0, 10);
        let deltas = q.budget_deltas(0);
        // The period rolls over before the store answers.
        b.charge(1, 5);
        q.settle(&deltas[0], 0, 900);
        q.learn("carol", 0, 900);
        assert_eq!(b.used(1), 5);
        // An earlier period's count is rolled over by a total of the new one.
        q.learn("carol", 2, 40);
        assert_eq!(b.used(2), 40);
    }

    #[test]
    fn a_store_restored_behind_the_count_takes_nothing_away() {
        let q = QuotaTracker::new(0, 0);
        q.set_byte_budget(1000, HOUR);
        let b = q.acquire("dave", ip(), 0).unwrap();
        b.charge(0, 400);
        let d = q.budget_deltas(0);
        q.settle(&d[0], 0, 400);
        q.learn("dave", 0, 100);
        assert_eq!(b.used(0), 400);
    }
}
