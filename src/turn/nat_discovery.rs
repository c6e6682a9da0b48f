//! RFC 5780 NAT behaviour discovery (`server.nat-discovery`): Binding on the
//! four UDP listeners A1:P1, A1:P2, A2:P1, A2:P2 (see [`NatDiscovery`]).
//!
//! Every Binding success there carries MAPPED-ADDRESS, XOR-MAPPED-ADDRESS,
//! RESPONSE-ORIGIN and OTHER-ADDRESS (§6.1), and the request's CHANGE-REQUEST
//! (§7.2), RESPONSE-PORT (§7.5) and PADDING (§7.6) are honoured. The core
//! decides which listener the answer leaves from and where it goes
//! ([`Output::ReplyFrom`]); the driver only sends it.
//!
//! What keeps this from being an amplifier towards a third party (a request's
//! source address can be spoofed):
//! - the answer goes to the request's source IP, always; RESPONSE-PORT changes
//!   only the port, and an answer sent to a port other than the source port
//!   takes one from the source's budget of unauthenticated answers
//!   ([`SourceLimiter`](super::source_limit::SourceLimiter), `rate-limit.*`),
//!   like every unsigned error;
//! - CHANGE-REQUEST picks among the server's own four listeners, never another
//!   address;
//! - PADDING in the answer never makes it longer than the request datagram,
//!   nor longer than [`MAX_PADDED_RESPONSE`] (RFC 5780 §7.6 suggests the MTU):
//!   a padded answer is at most as big as what the sender sent. Unpadded, the
//!   answer is 20 + 4 × 12 (IPv4) or 20 + 4 × 24 (IPv6) bytes, plus SOFTWARE
//!   and FINGERPRINT (8, when the request had one): at most 3.4× (IPv4) or
//!   5.8× (IPv6) a bare 20-byte request, against 1.6× or 2.2× for a plain
//!   Binding answer (docs/rfc-compliance.md, "RFC 5780");
//! - requests themselves are bounded by `server.max-message-size` and dropped
//!   unparsed beyond it.
//!
//! Over TCP and TLS, and on UDP listeners other than those four, nothing
//! changes: CHANGE-REQUEST, RESPONSE-PORT and PADDING stay unknown
//! comprehension-required attributes (420), which RFC 5780 §6 asks of a
//! server without an alternate address for that transport.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;

use super::output::Output;
use super::responses::Reply;
use super::server::{DropReason, NatDiscovery, Server};
use super::{FiveTuple, RelayBinder, Transport};
use crate::stun::attr::*;
use crate::stun::{Class, Message};

/// The largest answer PADDING makes: 1,500 bytes, an Ethernet MTU (RFC 5780
/// §7.6: "SHOULD be equal in length to the MTU of the outgoing interface").
/// Rounded down to a multiple of 4.
pub const MAX_PADDED_RESPONSE: usize = 1500;

/// The RFC 5780 attributes a NAT-discovery listener understands.
fn is_nat_attr(typ: u16) -> bool {
    matches!(typ, CHANGE_REQUEST | RESPONSE_PORT | PADDING)
}

impl<B: RelayBinder> Server<B> {
    /// The NAT-discovery configuration and this listener's place in it, when
    /// `tuple` reached one of its four UDP listeners.
    pub(super) fn nat_listener(&self, tuple: &FiveTuple) -> Option<(NatDiscovery, (usize, usize))> {
        let nat = self.cfg.nat_discovery?;
        if tuple.transport != Transport::Udp {
            return None;
        }
        nat.position(tuple.server).map(|at| (nat, at))
    }

    /// A Binding request on NAT-discovery listener `at` (IP index, port index).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn nat_binding(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        tuple: FiveTuple,
        request_len: usize,
        nat: NatDiscovery,
        at: (usize, usize),
        out: &mut BytesMut,
    ) -> Output {
        let unknown: Vec<u16> = msg
            .unknown_required()
            .iter()
            .copied()
            .filter(|&t| !is_nat_attr(t))
            .collect();
        if !unknown.is_empty() {
            let software = self.cfg.software.as_deref();
            let mut r = Reply::new(out, msg, Class::Error, None, software);
            r.b.add(&ErrorCode::new(420, "Unknown Attribute"));
            r.b.add(&UnknownAttributeList(&unknown));
            return r.finish();
        }
        // A malformed value (wrong length) is a bad request (RFC 8489 §7.3.1);
        // so is PADDING with RESPONSE-PORT (RFC 5780 §6.1) and a RESPONSE-PORT
        // of 0, which no answer can be sent to.
        let change = match msg.get::<ChangeRequest>() {
            None => ChangeRequest {
                change_ip: false,
                change_port: false,
            },
            Some(Ok(c)) => c,
            Some(Err(_)) => return self.error(out, msg, 400, None),
        };
        let port = match msg.get::<ResponsePort>() {
            None => None,
            Some(Ok(ResponsePort(p))) if p != 0 => Some(p),
            Some(_) => return self.error(out, msg, 400, None),
        };
        let padding = msg.get_raw(PADDING).is_some();
        if padding && port.is_some() {
            return self.error(out, msg, 400, None);
        }

        let (i, j) = at;
        let from = nat.addr(
            i ^ usize::from(change.change_ip),
            j ^ usize::from(change.change_port),
        );
        let other = nat.addr(i ^ 1, j ^ 1);
        // The request's source IP, always: RESPONSE-PORT moves only the port.
        let to = SocketAddr::new(tuple.client.ip(), port.unwrap_or(tuple.client.port()));
        if to != tuple.client && !self.may_answer_unauthenticated(now, tuple) {
            return self.drop_packet(DropReason::UnauthenticatedRateLimit);
        }

        let software = self.cfg.software.as_deref();
        let fingerprint = msg.has_fingerprint();
        let mut r = Reply::new(out, msg, Class::Success, None, software);
        r.b.add(&XorMappedAddress(tuple.client));
        r.b.add(&MappedAddress(tuple.client));
        r.b.add(&ResponseOrigin(from));
        r.b.add(&OtherAddress(other));
        if padding {
            // The answer as it stands, plus PADDING's header, plus FINGERPRINT
            // if it will get one; the padding fills up to the bound.
            let so_far = r.b.written() + 4 + if fingerprint { 8 } else { 0 };
            let limit = request_len.min(MAX_PADDED_RESPONSE);
            let pad = limit.saturating_sub(so_far) & !3;
            r.b.add_zeros(PADDING, pad);
        }
        let o = r.finish();
        if from == tuple.server && to == tuple.client {
            o
        } else {
            Output::ReplyFrom { from, to }
        }
    }
}
