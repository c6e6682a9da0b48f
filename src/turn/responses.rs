//! Responses: the common tail every response gets (MESSAGE-INTEGRITY under the
//! request's key, FINGERPRINT when the request had one; RFC 8489 §9.2.5, §14.7),
//! error responses with their reason phrases (RFC 8489 §14.8), 420 Unknown
//! Attribute (§14.9), and the Binding method (§3, §14.2).

use std::time::Instant;

use bytes::BytesMut;

use super::auth::long_term::{Authed, ReplyKey};
use super::output::Output;
use super::server::Server;
use super::{FiveTuple, RelayBinder};
use crate::stun::attr::*;
use crate::stun::{Class, Message, MessageBuilder};

/// Builds a response in `out` with the common tail: MESSAGE-INTEGRITY when the
/// request was authenticated, FINGERPRINT when the request had one.
pub(super) struct Reply<'o> {
    pub(super) b: MessageBuilder<'o>,
    key: Option<ReplyKey>,
    fingerprint: bool,
}

impl<'o> Reply<'o> {
    pub(super) fn new(
        out: &'o mut BytesMut,
        msg: &Message<'_>,
        class: Class,
        key: Option<ReplyKey>,
        software: Option<&str>,
    ) -> Self {
        out.clear();
        let mut b = MessageBuilder::new(out, msg.method(), class, msg.transaction_id());
        if let Some(s) = software {
            b.add(&Software(s));
        }
        Self {
            b,
            key,
            fingerprint: msg.has_fingerprint(),
        }
    }

    pub(super) fn finish(mut self) -> Output {
        if let Some(k) = self.key {
            if k.sha256_mac {
                self.b.add_message_integrity_sha256(k.key.as_bytes());
            } else {
                self.b.add_message_integrity(k.key.as_bytes());
            }
        }
        if self.fingerprint {
            self.b.add_fingerprint();
        }
        self.b.finish();
        Output::Reply
    }
}

pub(super) fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthenticated",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// An authenticated TURN request being answered: what the handler of each method
/// (Allocate, Refresh, CreatePermission, ChannelBind) needs, so that they share
/// one signature and answer one way, signed with the request's key.
pub(super) struct Request<'r> {
    pub(super) now: Instant,
    pub(super) msg: &'r Message<'r>,
    pub(super) auth: &'r Authed<'r>,
    pub(super) out: &'r mut BytesMut,
}

impl<B: RelayBinder> Server<B> {
    /// The error `code` in answer to `req`, signed.
    pub(super) fn reject(&self, req: Request<'_>, code: u16) -> Output {
        self.error(req.out, req.msg, code, Some(req.auth.key))
    }

    /// A response of `class` to `req`, signed, for the handler to add to.
    pub(super) fn answer<'r>(&self, req: Request<'r>, class: Class) -> Reply<'r> {
        let key = Some(req.auth.key);
        Reply::new(req.out, req.msg, class, key, self.cfg.software.as_deref())
    }

    pub(super) fn error(
        &self,
        out: &mut BytesMut,
        msg: &Message<'_>,
        code: u16,
        key: Option<ReplyKey>,
    ) -> Output {
        let mut r = Reply::new(out, msg, Class::Error, key, self.cfg.software.as_deref());
        r.b.add(&ErrorCode::new(code, reason_phrase(code)));
        r.finish()
    }

    pub(super) fn handle_binding(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        tuple: FiveTuple,
        request_len: usize,
        out: &mut BytesMut,
    ) -> Output {
        if let Some((nat, at)) = self.nat_listener(&tuple) {
            return self.nat_binding(now, msg, tuple, request_len, nat, at, out);
        }
        if !msg.unknown_required().is_empty() {
            return self.unknown_attributes(out, msg, None);
        }
        let mut r = Reply::new(out, msg, Class::Success, None, self.cfg.software.as_deref());
        r.b.add(&XorMappedAddress(tuple.client));
        r.finish()
    }

    pub(super) fn unknown_attributes(
        &self,
        out: &mut BytesMut,
        msg: &Message<'_>,
        key: Option<ReplyKey>,
    ) -> Output {
        let mut r = Reply::new(out, msg, Class::Error, key, self.cfg.software.as_deref());
        r.b.add(&ErrorCode::new(420, reason_phrase(420)));
        r.b.add(&UnknownAttributeList(msg.unknown_required()));
        r.finish()
    }
}
