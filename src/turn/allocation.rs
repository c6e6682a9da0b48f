//! One allocation: its relayed addresses, permissions and channel bindings.
//!
//! Permissions are keyed by peer IP only (RFC 8656 §9): the port does not matter.
//! Channels map a number to a full peer transport address and back. Both live in
//! small vectors: a WebRTC allocation has a handful of peers, a linear scan over a
//! few cache-resident entries beats hashing, and the quotas cap their length.
//! Expiry is checked against `now` on every use, so an expired entry never relays
//! even before the housekeeping timer removes it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output::{AllocationSummary, BudgetUse};
use super::quota::ByteBudget;
use super::stats::DropReason;
use super::{FiveTuple, RelayId};
use crate::stun::attr::Family;
use crate::stun::TransactionId;

/// How long an expired channel number and peer stay tied to each other before
/// either may be bound anew (RFC 8656 §12).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// A relayed transport address of an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relay {
    pub id: RelayId,
    /// The socket's local address.
    pub local: SocketAddr,
    /// The address advertised in XOR-RELAYED-ADDRESS (the external IP behind 1:1
    /// NAT, else the local address).
    pub advertised: SocketAddr,
}

#[derive(Clone, Copy, Debug)]
pub struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

#[derive(Clone, Copy, Debug)]
pub struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    /// Relaying stops at `expires`; the binding is forgotten at
    /// `expires + CHANNEL_COOLDOWN`.
    pub expires: Instant,
    /// Installed in the kernel's fast path (see `turn::offload`): the core
    /// has queued a bind for it and no unbind since.
    pub offloaded: bool,
}

/// Traffic counters, for usage records and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// A token bucket limiting one direction of an allocation to `rate` bytes per
/// second, with a burst of one second (at least one largest datagram).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bandwidth {
    tokens: u64,
    last: Option<Instant>,
}

impl Bandwidth {
    /// Whether `len` bytes may pass at `now` under `rate` (0 = unlimited), taking
    /// them from the bucket if so.
    #[inline]
    pub fn admit(&mut self, now: Instant, len: u64, rate: u64) -> bool {
        if rate == 0 {
            return true;
        }
        let burst = rate.max(65_536);
        let refill = match self.last {
            None => burst,
            Some(last) => {
                let nanos = now.saturating_duration_since(last).as_nanos();
                u64::try_from(nanos * u128::from(rate) / 1_000_000_000).unwrap_or(u64::MAX)
            }
        };
        self.tokens = self.tokens.saturating_add(refill).min(burst);
        self.last = Some(now);
        if self.tokens < len {
            return false;
        }
        self.tokens -= len;
        true
    }
}

/// One allocation.
#[derive(Debug)]
pub struct Allocation {
    /// Unique among the allocations of this process (all shards), for
    /// `ferroturn sessions` and usage records.
    pub id: u64,
    pub tuple: FiveTuple,
    pub username: Box<str>,
    /// The realm the allocation authenticated in (shared with the config).
    pub realm: Arc<str>,
    /// Wall-clock start, unix seconds, for usage records.
    pub started_unix: u64,
    /// Relayed addresses: at most one IPv4 and one IPv6 (RFC 8656 dual allocation).
    pub relays: [Option<Relay>; 2],
    pub expires: Instant,
    /// When the REST credential expires (unix seconds): the allocation may not
    /// outlive it.
    pub credential_expiry: Option<u64>,
    /// The transaction ID and lifetime of the Allocate that created it, so that a
    /// retransmission gets the same success response.
    pub allocate_tid: TransactionId,
    pub granted_lifetime: u32,
    /// The RESERVATION-TOKEN and ADDRESS-ERROR-CODE (family, code) of that
    /// response, which a retransmission must repeat too.
    pub reservation_token: Option<[u8; 8]>,
    pub address_error: Option<(Family, u16)>,
    pub permissions: Vec<Permission>,
    pub channels: Vec<Channel>,
    pub dont_fragment: bool,
    pub created: Instant,
    pub traffic: Traffic,
    /// Distinct peer IPs ever permitted (for usage records).
    pub peers_seen: u32,
    /// `max-bps-per-allocation`, towards peers and towards the client.
    pub to_peer_bandwidth: Bandwidth,
    pub to_client_bandwidth: Bandwidth,
    /// The user's byte budget, shared with the user's other allocations on
    /// every shard (see `quota::ByteBudget`): held here so that charging a
    /// packet needs no lookup.
    pub budget: Arc<ByteBudget>,
    /// A TCP allocation (RFC 6062): the bytes its data connections relayed,
    /// counted by the shards that pipe them. `None`: a UDP allocation.
    pub tcp: Option<Arc<super::tcp_relay::TcpTraffic>>,
}

impl Allocation {
    /// What the allocation is at `now`, for operators; `budget` is the byte
    /// budget's (period, limit) when budgets are on.
    pub fn summary(&self, now: Instant, budget: Option<(u64, u64)>) -> AllocationSummary {
        AllocationSummary {
            id: self.id,
            username: self.username.clone(),
            realm: self.realm.clone(),
            tuple: self.tuple,
            relays: self.relays.iter().flatten().map(|r| r.advertised).collect(),
            peers: self.peers_seen,
            traffic: match &self.tcp {
                None => self.traffic,
                Some(t) => {
                    let mut traffic = self.traffic;
                    t.add_to(&mut traffic);
                    traffic
                }
            },
            started_unix: self.started_unix,
            duration: now.saturating_duration_since(self.created),
            budget: budget.map(|(period, limit)| BudgetUse {
                used: self.budget.used(period),
                limit,
            }),
        }
    }

    /// The relay of the family of `ip`, if the allocation has one.
    pub fn relay_for(&self, ip: IpAddr) -> Option<&Relay> {
        self.relays
            .iter()
            .flatten()
            .find(|r| r.local.is_ipv4() == ip.is_ipv4())
    }

    /// Charges one datagram of `len` bytes towards a peer: the user's byte
    /// budget (`budget`: period and limit, when budgets are on) and the
    /// bandwidth limit `rate` first (an error: drop the datagram, for that
    /// reason), then the budget and the traffic counters. The budget is
    /// checked before and charged after the bandwidth limit so that a datagram
    /// dropped by either costs the other nothing.
    #[inline]
    pub fn admit_to_peer(
        &mut self,
        now: Instant,
        len: u64,
        rate: u64,
        budget: Option<(u64, u64)>,
    ) -> Result<(), DropReason> {
        self.admit(true, now, len, rate, budget)
    }

    /// [`admit_to_peer`](Self::admit_to_peer)'s counterpart for a datagram
    /// from a peer towards the client.
    #[inline]
    pub fn admit_to_client(
        &mut self,
        now: Instant,
        len: u64,
        rate: u64,
        budget: Option<(u64, u64)>,
    ) -> Result<(), DropReason> {
        self.admit(false, now, len, rate, budget)
    }

    /// Both directions' rule; `to_peer` is a constant at each call, so the
    /// choice of counters costs nothing once inlined.
    #[inline]
    fn admit(
        &mut self,
        to_peer: bool,
        now: Instant,
        len: u64,
        rate: u64,
        budget: Option<(u64, u64)>,
    ) -> Result<(), DropReason> {
        if budget.is_some_and(|(period, limit)| self.budget.exhausted(period, limit)) {
            return Err(DropReason::ByteBudget);
        }
        let (bandwidth, packets, bytes) = if to_peer {
            (
                &mut self.to_peer_bandwidth,
                &mut self.traffic.to_peer_packets,
                &mut self.traffic.to_peer_bytes,
            )
        } else {
            (
                &mut self.to_client_bandwidth,
                &mut self.traffic.to_client_packets,
                &mut self.traffic.to_client_bytes,
            )
        };
        if !bandwidth.admit(now, len, rate) {
            return Err(DropReason::RateLimit);
        }
        if let Some((period, _)) = budget {
            self.budget.charge(period, len);
        }
        *packets += 1;
        *bytes += len;
        Ok(())
    }

    /// Whether a live permission covers `ip`.
    pub fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    /// Installs or refreshes the permission for `ip`. Returns false when a new one
    /// would exceed `max` (0 = unlimited).
    pub fn permit(&mut self, ip: IpAddr, expires: Instant, max: u32) -> bool {
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            return true;
        }
        if max != 0 && self.permissions.len() >= max as usize {
            return false;
        }
        self.permissions.push(Permission { ip, expires });
        self.peers_seen = self.peers_seen.saturating_add(1);
        true
    }

    /// Whether a new permission for `ip` would fit within `max`.
    pub fn can_permit(&self, ip: IpAddr, max: u32) -> bool {
        max == 0
            || self.permissions.len() < max as usize
            || self.permissions.iter().any(|p| p.ip == ip)
    }

    /// The live channel with this number.
    pub fn channel(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
    }

    /// The live channel bound to this peer.
    pub fn channel_for_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number)
    }

    /// Checks a ChannelBind of `number` to `peer` against existing bindings,
    /// including expired ones still in their cool-down: a number is bound to one
    /// peer, a peer to one number.
    pub fn channel_conflict(&self, number: u16, peer: SocketAddr) -> bool {
        self.channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer))
    }

    /// Binds or refreshes a channel. Returns false when a new one would exceed `max`.
    pub fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        expires: Instant,
        max: u32,
    ) -> bool {
        if let Some(c) = self.channels.iter_mut().find(|c| c.number == number) {
            c.expires = expires;
            return true;
        }
        if max != 0 && self.channels.len() >= max as usize {
            return false;
        }
        self.channels.push(Channel {
            number,
            peer,
            expires,
            offloaded: false,
        });
        true
    }

    /// Forgets expired permissions and channels past their cool-down.
    pub fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|p| p.expires > now);
        self.channels.retain(|c| c.expires + CHANNEL_COOLDOWN > now);
    }

    /// The next instant at which something about this allocation expires.
    pub fn next_deadline(&self) -> Instant {
        let perms = self.permissions.iter().map(|p| p.expires);
        // An offloaded channel must leave the fast path when it expires, not
        // at the end of its cool-down.
        let chans = self.channels.iter().map(|c| {
            if c.offloaded {
                c.expires
            } else {
                c.expires + CHANNEL_COOLDOWN
            }
        });
        perms.chain(chans).fold(self.expires, Instant::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_admits_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bandwidth::default();
        assert!(b.admit(t0, 1_000_000, 0), "0 = unlimited");
        // 100 kB/s: a 100 kB burst, then 10 kB per 100 ms.
        let rate = 100_000;
        for _ in 0..100 {
            assert!(b.admit(t0, 1000, rate));
        }
        assert!(!b.admit(t0, 1000, rate));
        let t1 = t0 + Duration::from_millis(100);
        for _ in 0..10 {
            assert!(b.admit(t1, 1000, rate));
        }
        assert!(!b.admit(t1, 1000, rate));
        // A long pause refills to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..100 {
            assert!(b.admit(t2, 1000, rate));
        }
        assert!(!b.admit(t2, 1000, rate));
        // Below 64 KiB/s a largest datagram still fits the burst.
        let mut slow = Bandwidth::default();
        assert!(slow.admit(t0, 65_000, 1000));
        assert!(!slow.admit(t0, 1000, 1000));
    }
}
