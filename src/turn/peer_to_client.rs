//! Data from a peer towards the client (RFC 8656 §11.3, §12.5): a datagram on a
//! relay socket from a permitted peer becomes ChannelData when a channel is bound
//! to the peer (padded to 4 bytes on streams), else a Data indication. The
//! framing is written into headroom the driver left before the payload.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;

use super::config::{PEER_HEADROOM, PEER_TAILROOM};
use super::output::PeerOutput;
use super::server::Server;
use super::stats::DropReason;
use super::{RelayBinder, RelayId};
use crate::stun::channel_data::{self, padded_len};
use crate::stun::data_indication::write_data_indication_prefix;
use crate::stun::TransactionId;

impl<B: RelayBinder> Server<B> {
    /// A datagram from `from` arrived on relay socket `relay`. Its payload is
    /// `buf[start..end]`; the driver left [`PEER_HEADROOM`] bytes before `start` and
    /// [`PEER_TAILROOM`] after `end`, where the framing for the client is written.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: RelayId,
        from: SocketAddr,
        buf: &mut [u8],
        start: usize,
        end: usize,
    ) -> PeerOutput {
        if start < PEER_HEADROOM
            || end + PEER_TAILROOM > buf.len()
            || end < start
            || end - start > usize::from(u16::MAX) - 64
        {
            self.stats.drops[DropReason::Malformed as usize] += 1;
            return PeerOutput::None;
        }
        let peer = self.to_external(from);
        let budget = self.byte_budget(now);
        let Some(id) = self.table.by_relay(relay) else {
            self.stats.drops[DropReason::NoAllocation as usize] += 1;
            return PeerOutput::None;
        };
        let Some(a) = self.table.get_mut(id) else {
            self.stats.drops[DropReason::NoAllocation as usize] += 1;
            return PeerOutput::None;
        };
        if !a.permitted(peer.ip(), now) {
            self.stats.drops[DropReason::NoPermission as usize] += 1;
            return PeerOutput::None;
        }
        let len = end - start;
        if let Err(why) =
            a.admit_to_client(now, len as u64, self.cfg.max_bps_per_allocation, budget)
        {
            self.stats.drops[why as usize] += 1;
            return PeerOutput::None;
        }
        let tuple = a.tuple;
        let t = tuple.transport.index();
        self.stats.to_client_packets[t] += 1;
        self.stats.to_client_bytes[t] += len as u64;
        let (first, last) = if let Some(number) = a.channel_for_peer(peer, now) {
            let first = start - channel_data::CHANNEL_DATA_HEADER_LEN;
            buf[first..start].copy_from_slice(&channel_data::header(number, len));
            let last = if tuple.transport.is_stream() {
                let padded = start + padded_len(len);
                buf[end..padded].fill(0);
                padded
            } else {
                end
            };
            (first, last)
        } else {
            let tid = TransactionId(self.rng.gen());
            let first = write_data_indication_prefix(buf, start, len, peer, tid);
            let padded = start + padded_len(len);
            buf[end..padded].fill(0);
            (first, padded)
        };
        PeerOutput::ToClient {
            tuple,
            start: first,
            end: last,
        }
    }
}
