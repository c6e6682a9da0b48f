//! ChannelBind (RFC 8656 §12): channel numbers 0x4000–0x4FFF, conflicts (400),
//! the family (443) and policy (403) checks, in that order, the channel and permission quotas, and the
//! binding's lifetime (10 minutes, then a 5-minute cool-down during which the
//! number and the peer stay reserved, §12.2).

use super::output::Output;
use super::responses::Request;
use super::server::Server;
use super::stats::QuotaKind;
use super::table::AllocId;
use super::RelayBinder;
use crate::stun::attr::*;
use crate::stun::channel_data::{CHANNEL_MAX, CHANNEL_MIN};
use crate::stun::Class;

impl<B: RelayBinder> Server<B> {
    pub(super) fn channel_bind(&mut self, id: AllocId, req: Request<'_>) -> Output {
        let Request {
            now, msg, auth: _, ..
        } = req;
        let (Some(Ok(ChannelNumber(number))), Some(Ok(XorPeerAddress(peer)))) =
            (msg.get::<ChannelNumber>(), msg.get::<XorPeerAddress>())
        else {
            return self.reject(req, 400);
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return self.reject(req, 400);
        }
        // A binding past its cool-down must neither conflict nor be refreshed in
        // place (that would keep its old peer), timer or not.
        if let Some(a) = self.table.get_mut(id) {
            a.sweep(now);
        }
        let Some(alloc) = self.table.get(id) else {
            return self.reject(req, 437);
        };
        // RFC 8656 §12.2 orders the checks: the 400s (number in range, neither
        // the number nor the peer bound to another), then the family (443, a
        // MUST), then the server's own restrictions (403, a MAY).
        if alloc.channel_conflict(number, peer) {
            return self.reject(req, 400);
        }
        if alloc.relay_for(peer.ip()).is_none() {
            return self.reject(req, 443);
        }
        if !self.ip_allowed(peer.ip()) || self.peer_destination(peer).is_none() {
            return self.reject(req, 403);
        }
        let (max_ch, max_perm) = (
            self.cfg.max_channels_per_allocation,
            self.cfg.max_permissions_per_allocation,
        );
        let is_new_channel = !alloc.channels.iter().any(|c| c.number == number);
        if is_new_channel && max_ch != 0 && alloc.channels.len() >= max_ch as usize {
            self.stats.quota_rejections[QuotaKind::Channels as usize] += 1;
            return self.reject(req, 508);
        }
        if !alloc.can_permit(peer.ip(), max_perm) {
            self.stats.quota_rejections[QuotaKind::Permissions as usize] += 1;
            return self.reject(req, 508);
        }
        let (perm_expires, chan_expires) = (
            now + self.cfg.permission_lifetime,
            now + self.cfg.channel_lifetime,
        );
        if let Some(a) = self.table.get_mut(id) {
            a.bind_channel(number, peer, chan_expires, 0);
            a.permit(peer.ip(), perm_expires, 0);
        }
        self.table.schedule(id, perm_expires.min(chan_expires));
        self.offload_sync(id, now);
        let r = self.answer(req, Class::Success);
        r.finish()
    }
}
