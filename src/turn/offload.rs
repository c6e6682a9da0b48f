//! The kernel fast path's side of the core: which channels may be relayed by
//! the kernel (XDP, see `crate::offload` and docs/offload.md), as a queue of
//! bind/unbind changes the driver drains and applies to the BPF maps, and the
//! traffic the kernel relayed, which the driver reports back so that metrics
//! and usage records stay exact.
//!
//! The core stays sans-IO: it never touches a map. It decides; the driver
//! applies. A channel is on the fast path while all of these hold:
//! - the driver turned offload on ([`Server::set_offload`]);
//! - the allocation is UDP over UDP, and the client, listener, relay and peer
//!   addresses are all IPv4 or all IPv6 (the kernel does not translate);
//! - the channel is live and the peer's IP has a live permission;
//! - no bandwidth limit and no byte budget is configured (rate limits and
//!   budgets are counted per packet, in userspace);
//! - the peer is not one of the server's own addresses (client to client on
//!   one host is relayed in-process) and the policy still allows it.
//!
//! Whenever one of these may change (ChannelBind, CreatePermission, a timer,
//! the end of the allocation, a reload) the core re-checks the allocation and
//! queues what changed. An offloaded channel's expiry is a timer deadline of
//! its own (see `Allocation::next_deadline`), so it leaves the fast path on
//! time.

use std::net::SocketAddr;
use std::time::Instant;

use super::allocation::{Allocation, Traffic};
use super::output::Event;
use super::server::Server;
use super::table::AllocId;
use super::{FiveTuple, RelayBinder, Transport};

/// One channel as the kernel relays it: ChannelData from `client` to `server`
/// on `channel` goes from `relay` to `peer`, and datagrams from `peer` to
/// `relay` go to `client` from `server` as ChannelData on `channel`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OffloadChannel {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub channel: u16,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
}

impl OffloadChannel {
    /// The channel, if the kernel can relay it: all four addresses of one
    /// family, none unspecified.
    fn new(
        client: SocketAddr,
        server: SocketAddr,
        channel: u16,
        relay: SocketAddr,
        peer: SocketAddr,
    ) -> Option<Self> {
        let all = [client, server, relay, peer];
        let family = client.is_ipv4();
        if all
            .iter()
            .any(|a| a.is_ipv4() != family || a.ip().is_unspecified())
        {
            return None;
        }
        Some(Self {
            client,
            server,
            channel,
            relay,
            peer,
        })
    }
}

/// A change for the driver to apply to the kernel's maps, in order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OffloadChange {
    /// Install the channel. `allocation` is the allocation's unique ID and
    /// `tuple` its 5-tuple: report its traffic with [`Server::offload_traffic`].
    Bind {
        allocation: u64,
        tuple: FiveTuple,
        channel: OffloadChannel,
    },
    /// Remove the channel; its last counts still go to
    /// [`Server::offload_traffic`] (before the next `drain_events`, so that a
    /// closed allocation's usage record includes them).
    Unbind {
        allocation: u64,
        tuple: FiveTuple,
        channel: OffloadChannel,
    },
}

impl<B: RelayBinder> Server<B> {
    /// Turns the fast path on or off (the driver, once its program is loaded
    /// or after it failed). Turning it off forgets every installed channel
    /// without queueing unbinds: the driver has no maps then.
    pub fn set_offload(&mut self, on: bool) {
        self.offload = on;
        if !on {
            self.offload_changes.clear();
            let ids: Vec<AllocId> = self.table.iter().map(|(id, _)| id).collect();
            for id in ids {
                if let Some(a) = self.table.get_mut(id) {
                    for c in &mut a.channels {
                        c.offloaded = false;
                    }
                }
            }
        }
    }

    /// Re-checks every allocation's channels and queues what may take the
    /// fast path now: after the driver attached a program while allocations
    /// were live (a reload that turned `[offload]` on).
    pub fn offload_resync(&mut self, now: Instant) {
        let ids: Vec<AllocId> = self.table.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.offload_sync(id, now);
        }
    }

    /// Takes the changes queued since the last call.
    pub fn drain_offload_changes(&mut self) -> std::vec::Drain<'_, OffloadChange> {
        self.offload_changes.drain(..)
    }

    /// The kernel relayed `delta` for the allocation `allocation` on `tuple`:
    /// counted in the stats and the allocation's traffic, or, when the
    /// allocation has closed already, in its queued close event (drain the
    /// offload changes and report before `drain_events`).
    pub fn offload_traffic(&mut self, tuple: FiveTuple, allocation: u64, delta: Traffic) {
        if delta == Traffic::default() {
            return;
        }
        let t = Transport::Udp.index();
        let s = &mut self.stats;
        s.to_peer_packets[t] += delta.to_peer_packets;
        s.to_peer_bytes[t] += delta.to_peer_bytes;
        s.to_client_packets[t] += delta.to_client_packets;
        s.to_client_bytes[t] += delta.to_client_bytes;
        s.offload_packets[0] += delta.to_peer_packets;
        s.offload_packets[1] += delta.to_client_packets;
        s.offload_bytes[0] += delta.to_peer_bytes;
        s.offload_bytes[1] += delta.to_client_bytes;
        let live = self
            .table
            .by_tuple(&tuple)
            .and_then(|id| self.table.get_mut(id))
            .filter(|a| a.id == allocation);
        let traffic = match live {
            Some(a) => Some(&mut a.traffic),
            None => self.events.iter_mut().find_map(|e| match e {
                Event::AllocationClosed { allocation: a, .. } if a.id == allocation => {
                    Some(&mut a.traffic)
                }
                _ => None,
            }),
        };
        if let Some(tr) = traffic {
            tr.to_peer_packets += delta.to_peer_packets;
            tr.to_peer_bytes += delta.to_peer_bytes;
            tr.to_client_packets += delta.to_client_packets;
            tr.to_client_bytes += delta.to_client_bytes;
        }
    }

    /// Whether the configuration keeps every channel in userspace: bandwidth
    /// limits and byte budgets are per packet.
    fn offload_limited(&self) -> bool {
        self.cfg.max_bps_per_allocation != 0 || self.cfg.max_bytes_per_user != 0
    }

    /// How channel `number` of `a` would be offloaded now, if it may be.
    fn offload_target(&self, a: &Allocation, number: u16, now: Instant) -> Option<OffloadChannel> {
        if !self.offload || self.offload_limited() {
            return None;
        }
        if a.tuple.transport != Transport::Udp || a.tcp.is_some() {
            return None;
        }
        let c = a.channel(number, now)?;
        if !a.permitted(c.peer.ip(), now) {
            return None;
        }
        let (internal, via_external) = self.to_internal(c.peer);
        if via_external || self.is_own_ip(internal.ip()) || internal.ip().is_loopback() {
            return None;
        }
        let dest = self.peer_destination(c.peer)?;
        let relay = a.relay_for(dest.ip())?;
        let broadcast = match dest.ip() {
            std::net::IpAddr::V4(ip) => ip.is_broadcast(),
            std::net::IpAddr::V6(_) => false,
        };
        if broadcast || dest.ip().is_multicast() {
            return None;
        }
        OffloadChannel::new(a.tuple.client, a.tuple.server, number, relay.local, dest)
    }

    /// Re-checks every channel of allocation `id` and queues what changed.
    pub(super) fn offload_sync(&mut self, id: AllocId, now: Instant) {
        if !self.offload {
            return;
        }
        let Some(a) = self.table.get(id) else {
            return;
        };
        let (allocation, tuple) = (a.id, a.tuple);
        let mut changes = Vec::new();
        for c in &a.channels {
            let target = self.offload_target(a, c.number, now);
            match (c.offloaded, target) {
                (false, Some(channel)) => changes.push((
                    c.number,
                    OffloadChange::Bind {
                        allocation,
                        tuple,
                        channel,
                    },
                )),
                (true, None) => {
                    if let Some(channel) = self.installed(a, c.number) {
                        changes.push((
                            c.number,
                            OffloadChange::Unbind {
                                allocation,
                                tuple,
                                channel,
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        if changes.is_empty() {
            return;
        }
        if let Some(a) = self.table.get_mut(id) {
            for (number, change) in &changes {
                if let Some(c) = a.channels.iter_mut().find(|c| c.number == *number) {
                    c.offloaded = matches!(change, OffloadChange::Bind { .. });
                }
            }
        }
        self.offload_changes
            .extend(changes.into_iter().map(|(_, change)| change));
        // The channel's own expiry is now a deadline (see next_deadline).
        if let Some(a) = self.table.get(id) {
            let next = a.next_deadline();
            self.table.schedule(id, next);
        }
    }

    /// What was installed for channel `number` of `a`: bound channels never
    /// change peer, and the other parts are the allocation's, so it is
    /// recomputed rather than stored.
    fn installed(&self, a: &Allocation, number: u16) -> Option<OffloadChannel> {
        let c = a.channels.iter().find(|c| c.number == number)?;
        let dest = self.to_internal(c.peer).0;
        OffloadChannel::new(
            a.tuple.client,
            a.tuple.server,
            number,
            a.relay_for(dest.ip())?.local,
            dest,
        )
    }

    /// Queues unbinds for every offloaded channel of `a`, which is closing.
    pub(super) fn offload_forget(&mut self, a: &Allocation) {
        for c in a.channels.iter().filter(|c| c.offloaded) {
            if let Some(channel) = self.installed(a, c.number) {
                self.offload_changes.push(OffloadChange::Unbind {
                    allocation: a.id,
                    tuple: a.tuple,
                    channel,
                });
            }
        }
    }

    /// After a reload: a bandwidth limit or byte budget now in force takes
    /// every channel off the fast path. (Lifting one lets channels back on at
    /// their next ChannelBind, CreatePermission or timer.)
    pub(super) fn offload_sync_all(&mut self) {
        if !self.offload || !self.offload_limited() {
            return;
        }
        let ids: Vec<AllocId> = self.table.iter().map(|(id, _)| id).collect();
        for id in ids {
            let Some(a) = self.table.get(id) else {
                continue;
            };
            let gone: Vec<OffloadChange> = a
                .channels
                .iter()
                .filter(|c| c.offloaded)
                .filter_map(|c| {
                    Some(OffloadChange::Unbind {
                        allocation: a.id,
                        tuple: a.tuple,
                        channel: self.installed(a, c.number)?,
                    })
                })
                .collect();
            self.offload_changes.extend(gone);
            if let Some(a) = self.table.get_mut(id) {
                for c in &mut a.channels {
                    c.offloaded = false;
                }
            }
        }
    }
}
