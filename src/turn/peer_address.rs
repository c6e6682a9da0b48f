//! Where a peer address leads, and whether the client may reach it: the 1:1 NAT
//! mapping of `external-ip` both ways (so that client-to-client traffic does not
//! hairpin through the NAT), the server's own addresses and services (never a
//! peer, RFC 8656 §21.1.2 / §17), live relay ports, and the peer policy.

use std::net::{IpAddr, SocketAddr};

use super::policy::canonical_ip;
use super::server::Server;
use super::RelayBinder;

impl<B: RelayBinder> Server<B> {
    /// Whether `ip` is one of this host's own addresses.
    pub(super) fn is_own_ip(&self, ip: IpAddr) -> bool {
        self.cfg.local_ips.contains(&ip)
            || self.cfg.relay_ips.contains(&ip)
            || self.cfg.own_services.iter().any(|s| s.ip() == ip)
            || self
                .cfg
                .external_ips
                .iter()
                .any(|&(p, q)| p == ip || q == Some(ip))
    }

    pub(super) fn is_own_service(&self, addr: SocketAddr) -> bool {
        self.cfg.own_services.iter().any(|s| {
            s.port() == addr.port()
                && (s.ip() == addr.ip()
                    || (s.ip().is_unspecified()
                        && (self.is_own_ip(addr.ip()) || addr.ip().is_loopback())))
        })
    }

    /// Where a peer address the client gave really is: the external (public) IP of
    /// this server stands for the private relay IP behind the 1:1 NAT, so that
    /// client-to-client traffic does not hairpin through the NAT.
    pub(super) fn to_internal(&self, peer: SocketAddr) -> (SocketAddr, bool) {
        for &(public, private) in &self.cfg.external_ips {
            if peer.ip() == public && self.cfg.relay_ports.contains(&peer.port()) {
                let ip = private
                    .or_else(|| {
                        self.cfg
                            .relay_ips
                            .iter()
                            .copied()
                            .find(|i| i.is_ipv4() == public.is_ipv4())
                    })
                    .unwrap_or(public);
                return (SocketAddr::new(ip, peer.port()), true);
            }
        }
        (peer, false)
    }

    /// The inverse of [`to_internal`](Self::to_internal) for a datagram's source.
    pub(super) fn to_external(&self, from: SocketAddr) -> SocketAddr {
        // Runs per peer datagram: without an external IP nothing can change, so
        // skip the scan of the host's own addresses.
        if self.cfg.external_ips.is_empty() {
            return from;
        }
        if self.cfg.relay_ports.contains(&from.port()) && self.is_own_ip(from.ip()) {
            let adv = self.advertise(from);
            if adv.ip() != from.ip() {
                return adv;
            }
        }
        from
    }

    /// Whether the client may have a permission for `ip` (CreatePermission).
    pub(super) fn ip_allowed(&self, ip: IpAddr) -> bool {
        let (internal, via_external) =
            self.to_internal(SocketAddr::new(ip, *self.cfg.relay_ports.start()));
        via_external || self.policy.check(internal.ip()).is_allowed()
    }

    /// Where to send data for `peer`, or `None` when policy forbids it: never to
    /// the server's own services; on this host only to live relay ports unless the
    /// operator opened the address; elsewhere as the peer policy says.
    pub(super) fn peer_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let (internal, via_external) = self.to_internal(peer);
        if self.is_own_service(internal) {
            return None;
        }
        let live_relay =
            self.cfg.relay_ports.contains(&internal.port()) && self.live.is_live(internal);
        if via_external {
            return live_relay.then_some(internal);
        }
        if !self.policy.check(internal.ip()).is_allowed() {
            return None;
        }
        let ip = canonical_ip(internal.ip());
        let opened = self
            .cfg
            .allow_peers
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&internal.ip()));
        if !opened && self.is_own_ip(ip) && !live_relay {
            return None;
        }
        Some(internal)
    }
}
