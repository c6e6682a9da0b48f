//! Quotas shared by all shards: allocations per user, per client address and in
//! total, and the byte budget of each user per period ([`ByteBudget`]).
//!
//! The maps are touched only when an allocation is created or ends, never per
//! packet, so a mutex is fine here; it is the one lock shards share besides
//! read-mostly credentials. The byte budgets are charged per packet, so they
//! are not behind it: each allocation holds an `Arc` to its user's
//! [`ByteBudget`] and charges it with one atomic add.
//!
//! The defaults ([`DEFAULT_PER_USER`], [`DEFAULT_PER_IP`]) are sized against the
//! default relay range of 16,384 ports (49152–65535): see `docs/configuration.md`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

mod shared;
pub use shared::BudgetDelta;

/// `max-allocations-per-user` by default: 1,000 browsers sharing one static
/// user with every candidate type (UDP, TCP, TLS × IPv4, IPv6: 6 allocations
/// each, 6,000) fit, while one leaked credential holds at most 6,144 of the
/// 16,384 default relay ports (12,288 if every allocation also reserves an
/// EVEN-PORT pair), never the whole range.
pub const DEFAULT_PER_USER: u32 = 6144;
/// `max-allocations-per-ip` by default: one client address (or IPv6 /64) holds
/// at most 512 allocations, 1/32 of the default range, so exhausting it takes
/// 32 addresses however many user names (REST-API secrets mint one per call)
/// they use; a NAT with 85 browsers allocating 6 each still fits.
pub const DEFAULT_PER_IP: u32 = 512;

/// Why a quota refused an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QuotaError {
    /// The user holds `max_allocations_per_user` already: 486.
    User,
    /// The client's address holds `max_allocations_per_ip` already: 486.
    Ip,
    /// The server holds `max_allocations` already: 508.
    Total,
    /// The user relayed `max-bytes-per-user` in this period already: 486.
    Bytes,
}

/// Seconds in a `bytes-period = "day"` (UTC: unix time has no leap seconds,
/// so a period number `unix / DAY` changes exactly at UTC midnight).
pub const DAY: u64 = 86_400;
/// Seconds in a `bytes-period = "hour"`.
pub const HOUR: u64 = 3_600;

/// The bytes one user relayed in one period, over all of the user's
/// allocations on all shards: both directions, payload bytes as counted in
/// usage records.
///
/// Charged per relayed packet, so it is two atomics and nothing else: the
/// period number the count belongs to and the count. A period that has passed
/// is reset by the first charge in the next one (a compare-exchange on the
/// period, so one shard resets it). Relaxed ordering: the count is a quota, not
/// a synchronisation point; shards racing at a limit or at a roll-over may let a
/// few packets more or fewer pass, never more than one per shard each.
///
/// Aligned to a cache line so that two users' budgets, charged from different
/// shards, never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ByteBudget {
    period: AtomicU64,
    used: AtomicU64,
    /// How much of `used` the shared store already holds, and the period that
    /// is of: written only by the store poller ([`shared`]), never per packet.
    synced: AtomicU64,
    synced_period: AtomicU64,
}

impl ByteBudget {
    /// Bytes relayed in `period` (0 once the count is of an earlier period).
    /// A count of a later period (another shard rolled over a moment before
    /// this one's clock) counts as the current one.
    #[inline]
    pub fn used(&self, period: u64) -> u64 {
        if self.period.load(Ordering::Relaxed) >= period {
            self.used.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether `limit` bytes (not 0) are used up in `period`: nothing more may
    /// be relayed, and no new allocation made.
    #[inline]
    pub fn exhausted(&self, period: u64, limit: u64) -> bool {
        self.used(period) >= limit
    }

    /// Counts `len` relayed bytes in `period`.
    #[inline]
    pub fn charge(&self, period: u64, len: u64) {
        let p = self.period.load(Ordering::Relaxed);
        if p < period
            && self
                .period
                .compare_exchange(p, period, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(len, Ordering::Relaxed);
    }

    /// The period of the count (the last one charged).
    fn last_period(&self) -> u64 {
        self.period.load(Ordering::Relaxed)
    }
}

/// The period number of unix second `unix` for periods of `secs` seconds.
pub fn period_of(unix: u64, secs: u64) -> u64 {
    unix / secs.max(1)
}

/// The key a client address is counted under: an IPv4 address (an IPv4-mapped
/// IPv6 one as IPv4), or the /64 of an IPv6 address, since one IPv6 host
/// usually holds a whole /64 and could otherwise count as 2^64 clients.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Allocation counts, per user, per client address and in total.
#[derive(Debug)]
pub struct QuotaTracker {
    /// Limits, changed by a configuration reload (existing allocations above a
    /// lowered limit stay; only new ones are refused).
    per_user: AtomicU32,
    per_ip: AtomicU32,
    total: AtomicU32,
    /// `max-bytes-per-user` (0 = no byte budgets) and the period's length in
    /// seconds: set by every shard's core from its configuration (see
    /// `Server::new` and `Server::reconfigure`), read for new allocations and
    /// by the metrics endpoint.
    bytes_limit: AtomicU64,
    bytes_period: AtomicU64,
    state: Mutex<Counts>,
}

/// IP entries exist only while their count is above zero; user entries while
/// the user holds an allocation, or relayed bytes in the current period (a user
/// whose budget is used up must not get a fresh one by ending every allocation
/// and making a new one). So the maps are bounded by the allocations held and
/// the users active this period, never by the clients ever seen.
#[derive(Debug, Default)]
struct Counts {
    total: u32,
    users: HashMap<Box<str>, User>,
    ips: HashMap<IpAddr, u32>,
    /// The period users without allocations were last forgotten in.
    pruned: u64,
    /// Allocations per user on the other live nodes of a cluster (see
    /// `shared`): they count against `per_user` too.
    remote: HashMap<Box<str>, u32>,
}

/// One user: allocations held, and the byte budget they share.
#[derive(Debug, Default)]
struct User {
    allocations: u32,
    budget: Arc<ByteBudget>,
}

/// Counts one more for `key`, unless it holds `limit` (0 = unlimited) already.
fn under<K, Q>(map: &HashMap<K, u32>, key: &Q, limit: u32) -> Option<u32>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let n = map.get(key).copied().unwrap_or(0);
    (limit == 0 || n < limit).then_some(n + 1)
}

/// Counts one less for `key`, forgetting it at zero.
fn less<K, Q>(map: &mut HashMap<K, u32>, key: &Q)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl QuotaTracker {
    /// `per_user` and `total` of 0 mean unlimited; no per-address limit (see
    /// [`with_per_ip`](Self::with_per_ip)).
    pub fn new(per_user: u32, total: u32) -> Self {
        Self {
            per_user: AtomicU32::new(per_user),
            per_ip: AtomicU32::new(0),
            total: AtomicU32::new(total),
            bytes_limit: AtomicU64::new(0),
            bytes_period: AtomicU64::new(DAY),
            state: Mutex::new(Counts::default()),
        }
    }

    /// The byte budget per user and period (0 = none) and the period's length
    /// in seconds (at least 1).
    pub fn set_byte_budget(&self, limit: u64, period_secs: u64) {
        self.bytes_limit.store(limit, Ordering::Relaxed);
        self.bytes_period
            .store(period_secs.max(1), Ordering::Relaxed);
    }

    /// `(limit, period seconds)` as last set.
    pub fn byte_budget(&self) -> (u64, u64) {
        (
            self.bytes_limit.load(Ordering::Relaxed),
            self.bytes_period.load(Ordering::Relaxed),
        )
    }

    /// How many users have used up their byte budget in the period of unix
    /// second `unix` (0 without budgets): for the metrics endpoint.
    pub fn exhausted_users(&self, unix: u64) -> u64 {
        let (limit, secs) = self.byte_budget();
        if limit == 0 {
            return 0;
        }
        let period = period_of(unix, secs);
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.users
            .values()
            .filter(|u| u.budget.exhausted(period, limit))
            .count() as u64
    }

    /// The limit per client address (see [`client_key`]); 0 = unlimited.
    pub fn with_per_ip(self, per_ip: u32) -> Self {
        self.per_ip.store(per_ip, Ordering::Relaxed);
        self
    }

    /// New limits (0 = unlimited), from a configuration reload.
    pub fn set_limits(&self, per_user: u32, per_ip: u32, total: u32) {
        self.per_user.store(per_user, Ordering::Relaxed);
        self.per_ip.store(per_ip, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// Counts one more allocation for `user` from `client` at unix second
    /// `unix`, unless a quota forbids it; returns the user's byte budget, for
    /// the allocation to charge what it relays to.
    pub fn acquire(
        &self,
        user: &str,
        client: IpAddr,
        unix: u64,
    ) -> Result<Arc<ByteBudget>, QuotaError> {
        let (per_user, per_ip, total) = (
            self.per_user.load(Ordering::Relaxed),
            self.per_ip.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        let (bytes_limit, secs) = self.byte_budget();
        let period = period_of(unix, secs);
        let key = client_key(client);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.pruned != period {
            // Once a period: users without allocations and without bytes in
            // this period are forgotten.
            s.users
                .retain(|_, u| u.allocations > 0 || u.budget.last_period() >= period);
            s.pruned = period;
        }
        if total != 0 && s.total >= total {
            return Err(QuotaError::Total);
        }
        let Some(ips) = under(&s.ips, &key, per_ip) else {
            return Err(QuotaError::Ip);
        };
        let held = s.users.get(user).map_or(0, |u| u.allocations)
            + s.remote.get(user).copied().unwrap_or(0);
        if per_user != 0 && held >= per_user {
            return Err(QuotaError::User);
        }
        if bytes_limit != 0
            && s.users
                .get(user)
                .is_some_and(|u| u.budget.exhausted(period, bytes_limit))
        {
            return Err(QuotaError::Bytes);
        }
        let u = s.users.entry(user.into()).or_default();
        u.allocations += 1;
        let budget = u.budget.clone();
        s.ips.insert(key, ips);
        s.total += 1;
        Ok(budget)
    }

    /// Gives back an allocation counted by [`acquire`](Self::acquire).
    pub fn release(&self, user: &str, client: IpAddr) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(u) = s.users.get_mut(user) {
            u.allocations = u.allocations.saturating_sub(1);
            // Kept while it holds bytes (of this period or, until the next
            // prune, an earlier one); a user who never relayed under a budget
            // is forgotten at once.
            if u.allocations == 0 && u.budget.used(0) == 0 {
                s.users.remove(user);
            }
        }
        less(&mut s.ips, &client_key(client));
    }

    /// Allocations counted in total.
    pub fn total(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_user_and_total_limits() {
        let a = ip("192.0.2.1");
        let q = QuotaTracker::new(2, 3);
        q.acquire("a", a, 0).unwrap();
        q.acquire("a", a, 0).unwrap();
        assert_eq!(q.acquire("a", a, 0).err(), Some(QuotaError::User));
        q.acquire("b", a, 0).unwrap();
        assert_eq!(q.acquire("c", a, 0).err(), Some(QuotaError::Total));
        q.release("a", a);
        q.acquire("c", a, 0).unwrap();
        assert_eq!(q.total(), 3);
        // A reload lowers the limit: nothing is taken away, new ones are refused.
        q.set_limits(1, 0, 0);
        assert_eq!(q.acquire("a", a, 0).err(), Some(QuotaError::User));
        q.acquire("d", a, 0).unwrap();
        assert_eq!(q.total(), 4);
    }

    #[test]
    fn per_ip_limit_counts_addresses_ipv6_by_64_and_forgets_at_zero() {
        let q = QuotaTracker::new(0, 0).with_per_ip(2);
        q.acquire("a", ip("192.0.2.1"), 0).unwrap();
        // Another user from the same address counts against the same cap.
        q.acquire("b", ip("192.0.2.1"), 0).unwrap();
        assert_eq!(
            q.acquire("c", ip("192.0.2.1"), 0).err(),
            Some(QuotaError::Ip)
        );
        // IPv4-mapped is the same address.
        assert_eq!(
            q.acquire("c", ip("::ffff:192.0.2.1"), 0).err(),
            Some(QuotaError::Ip)
        );
        q.acquire("c", ip("192.0.2.2"), 0).unwrap();
        // One IPv6 /64 is one client.
        q.acquire("a", ip("2001:db8:1:2::1"), 0).unwrap();
        q.acquire("a", ip("2001:db8:1:2:ffff::9"), 0).unwrap();
        assert_eq!(
            q.acquire("a", ip("2001:db8:1:2::77"), 0).err(),
            Some(QuotaError::Ip)
        );
        q.acquire("a", ip("2001:db8:1:3::1"), 0).unwrap();
        q.release("a", ip("192.0.2.1"));
        q.acquire("d", ip("192.0.2.1"), 0).unwrap();
        for a in ["192.0.2.1", "192.0.2.1", "192.0.2.2"] {
            q.release("x", ip(a));
        }
        for a in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:3::5"] {
            q.release("a", ip(a));
        }
        let s = q.state.lock().unwrap();
        assert!(s.ips.is_empty(), "{:?}", s.ips);
        // A reload raises it.
        drop(s);
        q.set_limits(0, 3, 0);
        for _ in 0..3 {
            q.acquire("a", ip("192.0.2.1"), 0).unwrap();
        }
        assert_eq!(
            q.acquire("a", ip("192.0.2.1"), 0).err(),
            Some(QuotaError::Ip)
        );
    }

    #[test]
    fn byte_budgets_outlive_allocations_for_their_period_only() {
        let a = ip("192.0.2.1");
        let q = QuotaTracker::new(0, 0);
        q.set_byte_budget(100, HOUR);
        let b = q.acquire("a", a, 0).unwrap();
        b.charge(0, 100);
        assert!(b.exhausted(0, 100));
        assert_eq!(q.exhausted_users(10), 1);
        q.release("a", a);
        // Kept: ending the allocation gives no fresh budget.
        assert_eq!(q.acquire("a", a, 10).err(), Some(QuotaError::Bytes));
        assert_eq!(q.total(), 0);
        // A user who never relayed is forgotten at once.
        q.acquire("b", a, 10).unwrap();
        q.release("b", a);
        assert_eq!(q.state.lock().unwrap().users.len(), 1);
        // The next hour: a fresh budget, and the old entry is pruned.
        assert_eq!(q.exhausted_users(HOUR), 0);
        q.acquire("c", a, HOUR).unwrap();
        assert_eq!(q.state.lock().unwrap().users.len(), 1);
        let b = q.acquire("a", a, HOUR).unwrap();
        assert_eq!(b.used(1), 0);
        b.charge(1, 7);
        assert_eq!(b.used(1), 7);
        // A shard whose clock lags a moment behind sees the new period's count.
        assert_eq!(b.used(0), 7);
    }
}
