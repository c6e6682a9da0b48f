//! ALTERNATE-SERVER (RFC 8489 §10, RFC 8656 §7.2): new Allocates sent to
//! another server with 300 (Try Alternate) while this one drains or is above
//! its load threshold (`[cluster]`).
//!
//! Where to: the least loaded live node of the cluster that serves the
//! client's transport and address family ([`ClusterView::pick`]); with no
//! such node, the `drain.alternate-server` list in turn (the drain's own copy
//! while draining); with neither, a drain refuses with 403 and an overloaded
//! node takes the allocation itself (the threshold is a preference, the quotas
//! are the limits).
//!
//! When: an Allocate that carries no MESSAGE-INTEGRITY (a client's first) is
//! redirected before authentication, as coturn does. A browser follows the
//! 300 to the alternate and starts afresh there, without a nonce; redirected
//! after authentication instead, it arrives with the first server's nonce, the
//! alternate answers 438, and Chromium gives up on a 438 to Allocate (no relay
//! candidate). What an unsigned 300 gives away is the address of another of
//! the operator's TURN servers, public anyway; it cannot point a client at a
//! third party (a forged 300 could, which is why RFC 8489 lets clients insist
//! on an authenticated one: a client that sent credentials gets its 300 signed,
//! see `allocate`). It is an error answer to an unauthenticated request like
//! 401, so it takes from the same per-source budget, and it is no larger.
//!
//! [`ClusterView::pick`]: super::cluster::ClusterView::pick

use std::net::SocketAddr;

use bytes::BytesMut;

use super::server::Server;
use super::stats::RedirectReason;
use super::{FiveTuple, RelayBinder};
use crate::stun::attr::{AlternateServer, ErrorCode};
use crate::stun::{Class, Message};

use super::responses::{reason_phrase, Reply};

impl<B: RelayBinder> Server<B> {
    /// Where a new allocation of `tuple` should go instead of here, if
    /// anywhere (counted as a redirect).
    pub(super) fn redirect_target(&mut self, tuple: FiveTuple) -> Option<SocketAddr> {
        let reason = if self.drain.is_some() {
            RedirectReason::Drain
        } else if self.cluster.overloaded(self.quota.total()) {
            RedirectReason::Load
        } else {
            return None;
        };
        let target = self
            .cluster
            .pick(tuple.transport, tuple.client)
            .or_else(|| {
                let alternates = match &self.drain {
                    Some(d) => &d.alternates,
                    None => &self.cfg.alternate_servers,
                };
                let alt = *alternates.get(self.next_alternate % alternates.len().max(1))?;
                self.next_alternate = self.next_alternate.wrapping_add(1);
                Some(alt)
            })?;
        self.stats.redirects[reason as usize] += 1;
        Some(target)
    }

    /// A 300 for an unsigned Allocate from `tuple` when it should go
    /// elsewhere (see the module documentation); `None` to go on as usual.
    pub(super) fn redirect_unauthenticated(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        out: &mut BytesMut,
    ) -> Option<super::output::Output> {
        if self.table.by_tuple(&tuple).is_some() {
            return None;
        }
        let alt = self.redirect_target(tuple)?;
        let mut r = Reply::new(out, msg, Class::Error, None, self.cfg.software.as_deref());
        r.b.add(&ErrorCode::new(300, reason_phrase(300)));
        r.b.add(&AlternateServer(alt));
        Some(r.finish())
    }
}
