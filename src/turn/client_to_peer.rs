//! Data from the client towards peers: the Send indication (RFC 8656 §11.2) and
//! ChannelData (§12.4). Both need an allocation on the 5-tuple, a permission for
//! the peer and a relay of its family; the payload is returned as a range of the
//! input, never copied.

use std::time::Instant;

use super::output::Output;
use super::server::Server;
use super::stats::DropReason;
use super::{FiveTuple, RelayBinder, Transport};
use crate::stun::attr::*;
use crate::stun::channel_data::{self, ChannelData};
use crate::stun::Message;

impl<B: RelayBinder> Server<B> {
    /// A Send indication: relay the DATA to the peer if allowed (RFC 8656 §11.2).
    pub(super) fn handle_send(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'_>,
        data: &[u8],
    ) -> Output {
        let rate = self.cfg.max_bps_per_allocation;
        let budget = self.byte_budget(now);
        let Some(id) = self.table.by_tuple(&tuple) else {
            return self.drop_packet(self.no_allocation_reason(&tuple));
        };
        let (Some(Ok(XorPeerAddress(peer))), Some(Ok(Data(payload)))) =
            (msg.get::<XorPeerAddress>(), msg.get::<Data>())
        else {
            return self.drop_packet(DropReason::Malformed);
        };
        let Some(a) = self.table.get(id) else {
            return self.drop_packet(DropReason::NoAllocation);
        };
        // RFC 6062 §4: a TCP allocation relays no Send indications.
        if a.tcp.is_some() {
            return self.drop_packet(DropReason::Unexpected);
        }
        // Family before policy, as RFC 8656 §10.2 and §12.2 order them for
        // requests: a peer the allocation has no relay for is a family mismatch
        // whatever the policy says (and counted as such).
        let Some(relay) = a.relay_for(peer.ip()).map(|r| r.id) else {
            return self.drop_packet(DropReason::FamilyMismatch);
        };
        // RFC 8656 §11.2: a server that cannot set DF on this datagram treats
        // DONT-FRAGMENT as an unknown comprehension-required attribute. DF is a
        // property of the relay socket, set when the Allocate asked for it. The
        // attribute only matters towards IPv4 peers, and not when the client came
        // over IPv6 UDP: §13 says a translating server MUST ignore it.
        if !a.dont_fragment
            && peer.is_ipv4()
            && !(tuple.transport == Transport::Udp && tuple.client.is_ipv6())
            && msg.has(DONT_FRAGMENT)
        {
            return self.drop_packet(DropReason::UnknownAttribute);
        }
        let Some(dest) = self.peer_destination(peer) else {
            return self.drop_packet(DropReason::DeniedPeer);
        };
        let Some(a) = self.table.get_mut(id) else {
            return self.drop_packet(DropReason::NoAllocation);
        };
        if !a.permitted(peer.ip(), now) {
            return self.drop_packet(DropReason::NoPermission);
        }
        let start = payload.as_ptr() as usize - data.as_ptr() as usize;
        let len = payload.len() as u64;
        if let Err(why) = a.admit_to_peer(now, len, rate, budget) {
            return self.drop_packet(why);
        }
        self.stats.count_to_peer(tuple.transport, len);
        Output::ToPeer {
            relay,
            peer: dest,
            start,
            end: start + payload.len(),
        }
    }

    /// ChannelData from a client: the hot path towards peers.
    pub(super) fn handle_channel_data(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        data: &[u8],
    ) -> Output {
        let Ok(cd) = ChannelData::parse(data) else {
            return self.drop_packet(DropReason::Malformed);
        };
        let rate = self.cfg.max_bps_per_allocation;
        let budget = self.byte_budget(now);
        let Some(id) = self.table.by_tuple(&tuple) else {
            return self.drop_packet(self.no_allocation_reason(&tuple));
        };
        let Some(a) = self.table.get_mut(id) else {
            return self.drop_packet(DropReason::NoAllocation);
        };
        let Some(peer) = a.channel(cd.channel, now).map(|c| c.peer) else {
            return self.drop_packet(DropReason::UnknownChannel);
        };
        if !a.permitted(peer.ip(), now) {
            return self.drop_packet(DropReason::NoPermission);
        }
        let Some(relay) = a.relay_for(peer.ip()).map(|r| r.id) else {
            return self.drop_packet(DropReason::FamilyMismatch);
        };
        let len = cd.payload.len() as u64;
        if let Err(why) = a.admit_to_peer(now, len, rate, budget) {
            return self.drop_packet(why);
        }
        self.stats.count_to_peer(tuple.transport, len);
        let dest = self.to_internal(peer).0;
        Output::ToPeer {
            relay,
            peer: dest,
            start: channel_data::CHANNEL_DATA_HEADER_LEN,
            end: channel_data::CHANNEL_DATA_HEADER_LEN + cd.payload.len(),
        }
    }

    /// Why data that found no allocation on `tuple` is dropped: on a STUN-only
    /// listener it was never going to find one (counted apart, so an operator
    /// sees TURN clients pointed at the STUN service); elsewhere, plain
    /// `NoAllocation`. Only on this miss path, so relaying pays nothing.
    fn no_allocation_reason(&self, tuple: &FiveTuple) -> DropReason {
        if self.cfg.is_stun_only(tuple) {
            DropReason::StunOnly
        } else {
            DropReason::NoAllocation
        }
    }
}
