//! Counters of one shard ([`Stats`], [`Gauges`]) and the labels they are kept
//! by: why packets were dropped ([`DropReason`]), why authentication failed
//! ([`AuthFailure`]), which quota refused ([`QuotaKind`]), and the request
//! methods and response codes of `Stats::requests`.

use std::time::Instant;

use super::output::Output;
use super::server::Server;
use super::{FiveTuple, RelayBinder, Transport};
use crate::stun::attr::ErrorCode;
use crate::stun::{Class, Message, Method};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum DropReason {
    /// Not STUN, not ChannelData, or a malformed STUN message.
    Malformed,
    /// FINGERPRINT present and wrong.
    BadFingerprint,
    /// A response or an indication the server does not take from clients.
    Unexpected,
    /// Data for a 5-tuple or relay with no allocation.
    NoAllocation,
    /// Data to or from a peer without a permission.
    NoPermission,
    /// ChannelData on a channel that is not bound.
    UnknownChannel,
    /// A Send indication to a peer the policy denies.
    DeniedPeer,
    /// Peer address of a family the allocation has no relay for.
    FamilyMismatch,
    /// Relayed data the driver could not pass on: the client's TCP/TLS backlog
    /// (1 MiB) or the UDP socket's send buffer was full. Counted by the driver
    /// through [`Server::count_drop`]; the core never produces it.
    Backlog,
    /// Over the allocation's `max-bps-per-allocation` in that direction.
    RateLimit,
    /// An indication with an unknown comprehension-required attribute (RFC 8489
    /// §6.3.2: discarded), or a Send indication asking for DONT-FRAGMENT on an
    /// allocation whose relay socket does not set DF (RFC 8656 §11.2: treated
    /// as such an attribute).
    UnknownAttribute,
    /// A datagram or stream frame from a client longer than `max-message-size`:
    /// dropped unparsed, never answered.
    Oversized,
    /// A request that would have got an error answer without MESSAGE-INTEGRITY
    /// (401, 400, 438, 420: its source was never verified, so it may be spoofed)
    /// while its source IP was over `rate-limit.unauthenticated-per-second`.
    UnauthenticatedRateLimit,
    /// A Send indication or ChannelData without an allocation on a STUN-only
    /// listener (`server.stun-only`, `server.stun-only-listen`): a TURN client
    /// pointed at the public STUN service.
    StunOnly,
    /// Relayed data (either way) of a user who relayed `max-bytes-per-user`
    /// in this period already.
    ByteBudget,
}

impl DropReason {
    pub const COUNT: usize = 15;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::BadFingerprint,
        DropReason::Unexpected,
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::UnknownChannel,
        DropReason::DeniedPeer,
        DropReason::FamilyMismatch,
        DropReason::Backlog,
        DropReason::RateLimit,
        DropReason::UnknownAttribute,
        DropReason::Oversized,
        DropReason::UnauthenticatedRateLimit,
        DropReason::StunOnly,
        DropReason::ByteBudget,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadFingerprint => "bad_fingerprint",
            DropReason::Unexpected => "unexpected",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::UnknownChannel => "unknown_channel",
            DropReason::DeniedPeer => "denied_peer",
            DropReason::FamilyMismatch => "family_mismatch",
            DropReason::Backlog => "backlog",
            DropReason::RateLimit => "rate_limit",
            DropReason::UnknownAttribute => "unknown_attribute",
            DropReason::Oversized => "oversized",
            DropReason::UnauthenticatedRateLimit => "unauthenticated_rate_limit",
            DropReason::StunOnly => "stun_only",
            DropReason::ByteBudget => "byte_budget",
        }
    }
}

/// Why a long-term credential check failed. Counted only: on the wire the core
/// answers every one of them the same way (401, or 438 for a nonce), so that an
/// attacker cannot tell them apart; the operator can.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum AuthFailure {
    /// No such user in this realm (a wrong realm or an unresolved USERHASH too).
    UnknownUser,
    /// The user exists but no candidate key verified the MAC: a wrong password.
    BadIntegrity,
    /// The nonce is too old or not ours (438).
    StaleNonce,
    /// A REST credential past its expiry.
    ExpiredCredential,
    /// A credential an operator revoked.
    Revoked,
}

impl AuthFailure {
    pub const COUNT: usize = 5;
    pub const ALL: [AuthFailure; Self::COUNT] = [
        AuthFailure::UnknownUser,
        AuthFailure::BadIntegrity,
        AuthFailure::StaleNonce,
        AuthFailure::ExpiredCredential,
        AuthFailure::Revoked,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::ExpiredCredential => "expired_credential",
            AuthFailure::Revoked => "revoked",
        }
    }
}

/// Which limit refused a request (486 or 508).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum QuotaKind {
    /// `max-allocations-per-user` (486).
    User,
    /// `max-allocations-per-ip` (486).
    ClientIp,
    /// `max-allocations` (508).
    Total,
    /// `max-permissions-per-allocation` (508).
    Permissions,
    /// `max-channels-per-allocation` (508).
    Channels,
    /// No relay port left in the range or under `max-relay-ports` (508, or the
    /// ADDRESS-ERROR-CODE of an additional family).
    RelayPorts,
    /// `max-bytes-per-user`: the user's byte budget of this period is used up
    /// (486).
    Bytes,
    /// `max-tcp-connections-per-allocation`: a Connect (508) or an incoming
    /// peer connection (refused) of a TCP allocation (RFC 6062).
    TcpConnections,
}

impl QuotaKind {
    pub const COUNT: usize = 8;
    pub const ALL: [QuotaKind; Self::COUNT] = [
        QuotaKind::User,
        QuotaKind::ClientIp,
        QuotaKind::Total,
        QuotaKind::Permissions,
        QuotaKind::Channels,
        QuotaKind::RelayPorts,
        QuotaKind::Bytes,
        QuotaKind::TcpConnections,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            QuotaKind::User => "user",
            QuotaKind::ClientIp => "client_ip",
            QuotaKind::Total => "total",
            QuotaKind::Permissions => "permissions",
            QuotaKind::Channels => "channels",
            QuotaKind::RelayPorts => "relay_ports",
            QuotaKind::Bytes => "bytes",
            QuotaKind::TcpConnections => "tcp_connections",
        }
    }
}

/// The request methods `Stats::requests` is indexed by (metric label values);
/// the last, "other", collects methods the server does not serve (answered 400).
pub const REQUEST_METHODS: [&str; 6] = [
    "binding",
    "allocate",
    "refresh",
    "create_permission",
    "channel_bind",
    "other",
];

/// The response codes `Stats::requests` is indexed by: 200 for a success, then
/// every error code the core sends. One more slot after these, "other", would
/// catch a code added to the core but not here, so that nothing goes uncounted.
pub const RESPONSE_CODES: [u16; 17] = [
    200, 300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 500, 508,
    // RFC 6062 (appended, so that the slots above keep their places).
    446, 447,
];

/// Slots per method in `Stats::requests`: the codes above plus "other".
pub const RESPONSE_CODE_SLOTS: usize = RESPONSE_CODES.len() + 1;

fn method_index(m: Method) -> usize {
    match m {
        Method::Binding => 0,
        Method::Allocate => 1,
        Method::Refresh => 2,
        Method::CreatePermission => 3,
        Method::ChannelBind => 4,
        _ => 5,
    }
}

fn code_index(code: u16) -> usize {
    RESPONSE_CODES
        .iter()
        .position(|&c| c == code)
        .unwrap_or(RESPONSE_CODES.len())
}

/// Why a new Allocate was sent elsewhere (300 Try Alternate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectReason {
    /// This server drains.
    Drain,
    /// This server is above a `cluster.redirect-above-*` threshold.
    Load,
}

impl RedirectReason {
    pub const COUNT: usize = 2;
    pub const ALL: [RedirectReason; Self::COUNT] = [RedirectReason::Drain, RedirectReason::Load];

    /// The `reason` label of `ferroturn_redirects_total`.
    pub fn name(self) -> &'static str {
        match self {
            RedirectReason::Drain => "drain",
            RedirectReason::Load => "load",
        }
    }
}

/// Counters of one shard. Plain integers: the shard owns them and bumps them
/// without atomics or locks; the driver publishes a copy now and then for the
/// metrics endpoint (see `crate::ops::metrics`). Every field only ever grows.
/// Per-transport arrays are indexed by [`Transport::index`], so splitting
/// relayed traffic by transport costs nothing over one total.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub drops: [u64; DropReason::COUNT],
    pub allocations_created: u64,
    /// Responses sent, by [`REQUEST_METHODS`] and [`RESPONSE_CODES`] index.
    pub requests: [[u64; RESPONSE_CODE_SLOTS]; REQUEST_METHODS.len()],
    pub auth_failures: [u64; AuthFailure::COUNT],
    pub quota_rejections: [u64; QuotaKind::COUNT],
    /// New Allocates answered 300 (Try Alternate), by [`RedirectReason`].
    pub redirects: [u64; RedirectReason::COUNT],
    pub to_peer_packets: [u64; Transport::COUNT],
    pub to_peer_bytes: [u64; Transport::COUNT],
    pub to_client_packets: [u64; Transport::COUNT],
    pub to_client_bytes: [u64; Transport::COUNT],
    /// Of the UDP packets and bytes above, those the kernel's fast path
    /// relayed (see `turn::offload`): \[0\] towards peers, \[1\] towards
    /// clients.
    pub offload_packets: [u64; 2],
    pub offload_bytes: [u64; 2],
}

impl Stats {
    /// One datagram relayed from a client on `transport` towards a peer.
    pub fn count_to_peer(&mut self, transport: super::Transport, len: u64) {
        let t = transport.index();
        self.to_peer_packets[t] += 1;
        self.to_peer_bytes[t] += len;
    }

    /// Adds another shard's counters to these.
    pub fn add(&mut self, o: &Stats) {
        fn sum<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        sum(&mut self.drops, &o.drops);
        self.allocations_created += o.allocations_created;
        for (a, b) in self.requests.iter_mut().zip(&o.requests) {
            sum(a, b);
        }
        sum(&mut self.auth_failures, &o.auth_failures);
        sum(&mut self.quota_rejections, &o.quota_rejections);
        sum(&mut self.redirects, &o.redirects);
        sum(&mut self.to_peer_packets, &o.to_peer_packets);
        sum(&mut self.to_peer_bytes, &o.to_peer_bytes);
        sum(&mut self.to_client_packets, &o.to_client_packets);
        sum(&mut self.to_client_bytes, &o.to_client_bytes);
        sum(&mut self.offload_packets, &o.offload_packets);
        sum(&mut self.offload_bytes, &o.offload_bytes);
    }
}

/// What a shard holds right now, counted when it publishes its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub allocations: u64,
    /// Unexpired permissions, over all allocations.
    pub permissions: u64,
    /// Unexpired channel bindings, over all allocations.
    pub channels: u64,
}

impl<B: RelayBinder> Server<B> {
    /// Counts `n` packets the driver dropped for `why`.
    pub fn count_drop(&mut self, why: DropReason, n: u64) {
        self.stats.drops[why as usize] += n;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn allocations(&self) -> usize {
        self.table.len()
    }

    /// Whether `tuple` holds an allocation now: a stream connection without one
    /// is closed after `connections.allocate-timeout`.
    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.table.by_tuple(tuple).is_some()
    }

    /// Allocations, live permissions and live channels. Walks the table, so the
    /// driver calls it when it publishes metrics (a few times a second), never
    /// per packet.
    pub fn gauges(&self, now: Instant) -> Gauges {
        let mut g = Gauges::default();
        for (_, a) in self.table.iter() {
            g.allocations += 1;
            g.permissions += a.permissions.iter().filter(|p| p.expires > now).count() as u64;
            g.channels += a.channels.iter().filter(|c| c.expires > now).count() as u64;
        }
        g
    }

    /// Counts the response now in `out` to a `method` request, by the code it
    /// carries: read back from the message itself, so that every path that
    /// answers is counted without each having to remember to.
    pub(super) fn count_response(&mut self, method: Method, out: &[u8]) {
        let code = match Message::parse(out) {
            Ok(m) if m.class() == Class::Success => 200,
            Ok(m) => match m.get::<ErrorCode>() {
                Some(Ok(e)) => e.code,
                _ => 0,
            },
            Err(_) => 0,
        };
        self.stats.requests[method_index(method)][code_index(code)] += 1;
    }

    pub(super) fn drop_packet(&mut self, why: DropReason) -> Output {
        self.stats.drops[why as usize] += 1;
        Output::None
    }
}
