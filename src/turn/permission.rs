//! CreatePermission (RFC 8656 §9): every XOR-PEER-ADDRESS validated before any
//! is installed, the family check (443) before the peer policy (403), then the
//! per-allocation permission quota (508). Permissions expire after
//! `permission-lifetime` (§9, 300 s by default) unless refreshed.

use std::net::IpAddr;

use super::output::Output;
use super::responses::Request;
use super::server::Server;
use super::stats::QuotaKind;
use super::table::AllocId;
use super::RelayBinder;
use crate::stun::attr::{self, *};
use crate::stun::Class;

impl<B: RelayBinder> Server<B> {
    pub(super) fn create_permission(&mut self, id: AllocId, req: Request<'_>) -> Output {
        let Request {
            now, msg, auth: _, ..
        } = req;
        let tid = msg.transaction_id();
        let mut peers = msg
            .attributes()
            .filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
            .map(|a| XorPeerAddress::decode(a.value, &tid).map(|p| p.0))
            .peekable();
        if peers.peek().is_none() {
            return self.reject(req, 400);
        }
        // Forget what has expired before counting against quotas, whether or not
        // the housekeeping timer has run yet.
        if let Some(a) = self.table.get_mut(id) {
            a.sweep(now);
        }
        let Some(alloc) = self.table.get(id) else {
            return self.reject(req, 437);
        };
        // Validate every address before installing any: the request succeeds or
        // fails as a whole (RFC 8656 §10.2).
        let max = self.cfg.max_permissions_per_allocation;
        let mut new = 0usize;
        let mut ips: [Option<IpAddr>; 16] = [None; 16];
        // RFC 8656 §10.2 orders the checks: malformed (400), then a family the
        // allocation has no relay for (443, a MUST), then the server's own
        // restrictions (403, a MAY), each over every address. coturn's
        // `turnutils_uclient -G` depends on the 443 coming first.
        for (count, p) in peers.enumerate() {
            let Ok(p) = p else {
                return self.reject(req, 400);
            };
            if alloc.relay_for(p.ip()).is_none() {
                return self.reject(req, 443);
            }
            let known = alloc.permissions.iter().any(|x| x.ip == p.ip())
                || ips[..count].contains(&Some(p.ip()));
            if !known {
                new += 1;
            }
            if count == ips.len() {
                return self.reject(req, 400);
            }
            ips[count] = Some(p.ip());
        }
        if ips.iter().flatten().any(|ip| !self.ip_allowed(*ip)) {
            return self.reject(req, 403);
        }
        if max != 0 && alloc.permissions.len() + new > max as usize {
            self.stats.quota_rejections[QuotaKind::Permissions as usize] += 1;
            return self.reject(req, 508);
        }
        let expires = now + self.cfg.permission_lifetime;
        if let Some(a) = self.table.get_mut(id) {
            for ip in ips.iter().flatten() {
                a.permit(*ip, expires, 0);
            }
        }
        self.table.schedule(id, expires);
        self.offload_sync(id, now);
        let r = self.answer(req, Class::Success);
        r.finish()
    }
}
