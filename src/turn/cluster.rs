//! Redirect by load (`[cluster]`): where a new Allocate goes when this node is
//! draining or above its load threshold.
//!
//! The store poller (`ops::cluster`) reads the node registry about once a
//! second and hands the core the live nodes it may send clients to (never
//! itself, never a draining or gone node), with their load; the core picks the
//! least loaded one that serves the client's transport and address family and
//! answers 300 (Try Alternate) with its address. Between two refreshes every
//! pick counts as one more allocation on the node picked, so a burst of new
//! clients spreads over the nodes instead of all landing on the one that was
//! least loaded a second ago.
//!
//! Nothing here runs per packet: the view is read once per new allocation
//! while redirecting.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::Transport;

/// A node new clients may be sent to.
#[derive(Debug)]
pub struct Target {
    pub node_id: Box<str>,
    /// What it serves clients on, as they reach it.
    pub addresses: Vec<(Transport, SocketAddr)>,
    /// Its allocations at its last heartbeat.
    pub allocations: u64,
    /// Clients sent to it since the view was refreshed.
    picks: AtomicU64,
}

impl Target {
    pub fn new(node_id: &str, addresses: Vec<(Transport, SocketAddr)>, allocations: u64) -> Self {
        Self {
            node_id: node_id.into(),
            addresses,
            allocations,
            picks: AtomicU64::new(0),
        }
    }
}

/// What the shards know of the cluster; shared by all of them.
#[derive(Debug, Default)]
pub struct ClusterView {
    targets: RwLock<Arc<[Target]>>,
    /// `cluster.redirect-above-allocations` (0 = never).
    max_allocations: AtomicU32,
    /// Set by the poller while this node relays more than
    /// `cluster.redirect-above-mbps`.
    over_bandwidth: AtomicBool,
}

impl ClusterView {
    /// The nodes new clients may be sent to, from a fresh read of the registry.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let targets: Arc<[Target]> = targets.into();
        *self.targets.write().unwrap_or_else(|p| p.into_inner()) = targets;
    }

    /// `cluster.redirect-above-allocations` (0 = never); reloadable.
    pub fn set_max_allocations(&self, max: u32) {
        self.max_allocations.store(max, Ordering::Relaxed);
    }

    /// Whether this node relays above its bandwidth threshold.
    pub fn set_over_bandwidth(&self, over: bool) {
        self.over_bandwidth.store(over, Ordering::Relaxed);
    }

    /// Whether this node, holding `allocations`, is above a load threshold:
    /// new clients should go elsewhere if somewhere suits them.
    pub fn overloaded(&self, allocations: u32) -> bool {
        let max = self.max_allocations.load(Ordering::Relaxed);
        (max != 0 && allocations >= max) || self.over_bandwidth.load(Ordering::Relaxed)
    }

    /// The least loaded node serving `transport` in the family of `client`,
    /// counted as one more allocation there; `None` when no node does.
    pub fn pick(&self, transport: Transport, client: SocketAddr) -> Option<SocketAddr> {
        let targets = self
            .targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let v6 = client.ip().to_canonical().is_ipv6();
        let (target, address) = targets
            .iter()
            .filter_map(|t| {
                t.addresses
                    .iter()
                    .find(|(tr, a)| *tr == transport && a.is_ipv6() == v6)
                    .map(|&(_, a)| (t, a))
            })
            .min_by_key(|(t, _)| t.allocations + t.picks.load(Ordering::Relaxed))?;
        target.picks.fetch_add(1, Ordering::Relaxed);
        Some(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn picks_the_least_loaded_node_of_the_clients_transport_and_family() {
        let view = ClusterView::default();
        let client4 = a("198.51.100.1:5000");
        let client6 = a("[2001:db8::1]:5000");
        assert_eq!(view.pick(Transport::Udp, client4), None);
        view.set_targets(vec![
            Target::new("b", vec![(Transport::Udp, a("192.0.2.2:3478"))], 10),
            Target::new(
                "c",
                vec![
                    (Transport::Udp, a("192.0.2.3:3478")),
                    (Transport::Tcp, a("192.0.2.3:3478")),
                    (Transport::Udp, a("[2001:db8::3]:3478")),
                ],
                12,
            ),
        ]);
        // b is least loaded until two picks made it 12; then they alternate.
        assert_eq!(
            view.pick(Transport::Udp, client4),
            Some(a("192.0.2.2:3478"))
        );
        assert_eq!(
            view.pick(Transport::Udp, client4),
            Some(a("192.0.2.2:3478"))
        );
        let next: Vec<_> = (0..4)
            .map(|_| view.pick(Transport::Udp, client4).unwrap())
            .collect();
        assert_eq!(
            next.iter().filter(|x| **x == a("192.0.2.2:3478")).count(),
            2
        );
        // Only c serves TCP and IPv6; nobody serves TLS.
        assert_eq!(
            view.pick(Transport::Tcp, client4),
            Some(a("192.0.2.3:3478"))
        );
        assert_eq!(
            view.pick(Transport::Udp, client6),
            Some(a("[2001:db8::3]:3478"))
        );
        assert_eq!(view.pick(Transport::Tls, client4), None);
        // An IPv4-mapped client is an IPv4 client.
        assert_eq!(
            view.pick(Transport::Tcp, a("[::ffff:198.51.100.1]:5000")),
            Some(a("192.0.2.3:3478"))
        );
    }

    #[test]
    fn overloaded_by_allocations_or_bandwidth() {
        let view = ClusterView::default();
        assert!(!view.overloaded(1_000_000), "no threshold: never");
        view.set_max_allocations(3);
        assert!(!view.overloaded(2));
        assert!(view.overloaded(3));
        view.set_max_allocations(0);
        view.set_over_bandwidth(true);
        assert!(view.overloaded(0));
    }
}
