//! Quotas shared by all shards: allocations per user, per client address and in
//! total.
//!
//! Touched only when an allocation is created or ends, never per packet, so a mutex
//! is fine here; it is the one lock shards share besides read-mostly credentials.
//!
//! The defaults ([`DEFAULT_PER_USER`], [`DEFAULT_PER_IP`]) are sized against the
//! default relay range of 16,384 ports (49152–65535): see `docs/configuration.md`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

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
    state: Mutex<Counts>,
}

/// Entries exist only while their count is above zero, so both maps are
/// bounded by the allocations held, never by the clients ever seen.
#[derive(Debug, Default)]
struct Counts {
    total: u32,
    users: HashMap<Box<str>, u32>,
    ips: HashMap<IpAddr, u32>,
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
            state: Mutex::new(Counts::default()),
        }
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

    /// Counts one more allocation for `user` from `client`, unless a quota
    /// forbids it.
    pub fn acquire(&self, user: &str, client: IpAddr) -> Result<(), QuotaError> {
        let (per_user, per_ip, total) = (
            self.per_user.load(Ordering::Relaxed),
            self.per_ip.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        let key = client_key(client);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if total != 0 && s.total >= total {
            return Err(QuotaError::Total);
        }
        let Some(ips) = under(&s.ips, &key, per_ip) else {
            return Err(QuotaError::Ip);
        };
        let Some(users) = under(&s.users, user, per_user) else {
            return Err(QuotaError::User);
        };
        s.users.insert(user.into(), users);
        s.ips.insert(key, ips);
        s.total += 1;
        Ok(())
    }

    /// Gives back an allocation counted by [`acquire`](Self::acquire).
    pub fn release(&self, user: &str, client: IpAddr) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        less(&mut s.users, user);
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
        q.acquire("a", a).unwrap();
        q.acquire("a", a).unwrap();
        assert_eq!(q.acquire("a", a), Err(QuotaError::User));
        q.acquire("b", a).unwrap();
        assert_eq!(q.acquire("c", a), Err(QuotaError::Total));
        q.release("a", a);
        q.acquire("c", a).unwrap();
        assert_eq!(q.total(), 3);
        // A reload lowers the limit: nothing is taken away, new ones are refused.
        q.set_limits(1, 0, 0);
        assert_eq!(q.acquire("a", a), Err(QuotaError::User));
        q.acquire("d", a).unwrap();
        assert_eq!(q.total(), 4);
    }

    #[test]
    fn per_ip_limit_counts_addresses_ipv6_by_64_and_forgets_at_zero() {
        let q = QuotaTracker::new(0, 0).with_per_ip(2);
        q.acquire("a", ip("192.0.2.1")).unwrap();
        // Another user from the same address counts against the same cap.
        q.acquire("b", ip("192.0.2.1")).unwrap();
        assert_eq!(q.acquire("c", ip("192.0.2.1")), Err(QuotaError::Ip));
        // IPv4-mapped is the same address.
        assert_eq!(q.acquire("c", ip("::ffff:192.0.2.1")), Err(QuotaError::Ip));
        q.acquire("c", ip("192.0.2.2")).unwrap();
        // One IPv6 /64 is one client.
        q.acquire("a", ip("2001:db8:1:2::1")).unwrap();
        q.acquire("a", ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(q.acquire("a", ip("2001:db8:1:2::77")), Err(QuotaError::Ip));
        q.acquire("a", ip("2001:db8:1:3::1")).unwrap();
        q.release("a", ip("192.0.2.1"));
        q.acquire("d", ip("192.0.2.1")).unwrap();
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
            q.acquire("a", ip("192.0.2.1")).unwrap();
        }
        assert_eq!(q.acquire("a", ip("192.0.2.1")), Err(QuotaError::Ip));
    }
}
