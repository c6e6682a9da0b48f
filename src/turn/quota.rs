//! Quotas shared by all shards: allocations per user, allocations in total.
//!
//! Touched only when an allocation is created or ends, never per packet, so a mutex
//! is fine here; it is the one lock shards share besides read-mostly credentials.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Why a quota refused an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QuotaError {
    /// The user holds `max_allocations_per_user` already: 486.
    User,
    /// The server holds `max_allocations` already: 508.
    Total,
}

/// Allocation counts, per user and in total.
#[derive(Debug)]
pub struct QuotaTracker {
    /// Limits, changed by a configuration reload (existing allocations above a
    /// lowered limit stay; only new ones are refused).
    per_user: AtomicU32,
    total: AtomicU32,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    users: HashMap<Box<str>, u32>,
}

impl QuotaTracker {
    /// `per_user` and `total` of 0 mean unlimited.
    pub fn new(per_user: u32, total: u32) -> Self {
        Self {
            per_user: AtomicU32::new(per_user),
            total: AtomicU32::new(total),
            state: Mutex::new(Counts::default()),
        }
    }

    /// New limits (0 = unlimited), from a configuration reload.
    pub fn set_limits(&self, per_user: u32, total: u32) {
        self.per_user.store(per_user, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// Counts one more allocation for `user`, unless a quota forbids it.
    pub fn acquire(&self, user: &str) -> Result<(), QuotaError> {
        let (per_user, total) = (
            self.per_user.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if total != 0 && s.total >= total {
            return Err(QuotaError::Total);
        }
        let n = s.users.get(user).copied().unwrap_or(0);
        if per_user != 0 && n >= per_user {
            return Err(QuotaError::User);
        }
        s.users.insert(user.into(), n + 1);
        s.total += 1;
        Ok(())
    }

    /// Gives back an allocation counted by [`acquire`](Self::acquire).
    pub fn release(&self, user: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                s.users.remove(user);
            }
        }
    }

    /// Allocations counted in total.
    pub fn total(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total_limits() {
        let q = QuotaTracker::new(2, 3);
        q.acquire("a").unwrap();
        q.acquire("a").unwrap();
        assert_eq!(q.acquire("a"), Err(QuotaError::User));
        q.acquire("b").unwrap();
        assert_eq!(q.acquire("c"), Err(QuotaError::Total));
        q.release("a");
        q.acquire("c").unwrap();
        assert_eq!(q.total(), 3);
        // A reload lowers the limit: nothing is taken away, new ones are refused.
        q.set_limits(1, 0);
        assert_eq!(q.acquire("a"), Err(QuotaError::User));
        q.acquire("d").unwrap();
        assert_eq!(q.total(), 4);
    }
}
