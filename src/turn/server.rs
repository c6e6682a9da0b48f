//! `Server`: the sans-IO STUN/TURN state machine of one shard.
//!
//! The driver calls [`Server::handle_client`] for every datagram or framed stream
//! message from a client, [`Server::handle_peer`] for every datagram a relay socket
//! receives, and [`Server::handle_timeout`] when [`Server::poll_timeout`] comes due.
//! Each call returns what to send; nothing else leaves the core.
//!
//! Relayed data is never copied: towards a peer the core returns the range of the
//! input that holds the payload; towards a client it writes the ChannelData header or
//! the Data-indication prefix into headroom the driver left before the payload
//! ([`PEER_HEADROOM`]) and returns the range to send.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ipnet::IpNet;

use super::allocation::{Allocation, Bandwidth, Relay, Traffic};
use super::auth::{
    nonce_features, CredentialStore, Lookup, NonceCheck, NonceKey, FEATURE_PASSWORD_ALGORITHMS,
    FEATURE_USERNAME_ANONYMITY,
};
use super::live::LiveRelayPorts;
use super::policy::{canonical_ip, PeerPolicy};
use super::quota::{QuotaError, QuotaTracker};
use super::reservations::Reservations;
use super::table::{AllocId, Table};
use super::{BindError, FiveTuple, PortRequest, RelayBinder, RelayId, Transport};
use crate::stun::attr::{self, *};
use crate::stun::channel_data::{self, padded_len, ChannelData, CHANNEL_MAX, CHANNEL_MIN};
use crate::stun::message::{message_type, HEADER_LEN};
use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId, MAGIC_COOKIE};

/// Bytes a driver must leave free before a payload handed to
/// [`Server::handle_peer`]: room for the largest Data-indication prefix (20-byte
/// header, XOR-PEER-ADDRESS for IPv6, DATA attribute header).
pub const PEER_HEADROOM: usize = HEADER_LEN + 24 + 4;
/// Bytes a driver must leave free after the payload: padding to 4 bytes.
pub const PEER_TAILROOM: usize = 3;

/// How long a port reserved by EVEN-PORT with R = 1 waits for its RESERVATION-TOKEN
/// (RFC 8656 §7.2 suggests about 30 seconds).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// Settings of the core, derived from the validated configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub realm: String,
    pub software: Option<String>,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub max_permissions_per_allocation: u32,
    pub max_channels_per_allocation: u32,
    /// Bytes per second each allocation may relay in each direction; 0 =
    /// unlimited. Beyond it datagrams are dropped (`DropReason::RateLimit`).
    pub max_bps_per_allocation: u64,
    /// Addresses relay sockets bind to, at most one per family. Without one for a
    /// family, relays bind to the server address the client reached.
    pub relay_ips: Vec<IpAddr>,
    /// 1:1 NAT mappings: (public, private). A relay whose local IP is `private` (or
    /// any relay of that family when `private` is `None`) is advertised as `public`.
    pub external_ips: Vec<(IpAddr, Option<IpAddr>)>,
    pub relay_ports: RangeInclusive<u16>,
    /// The server's own service transport addresses (listeners, metrics, admin).
    /// A wildcard IP stands for every IP in `local_ips`.
    pub own_services: Vec<SocketAddr>,
    /// This host's own IPs: as peers they may only be relay ports.
    pub local_ips: Vec<IpAddr>,
    pub allow_peers: Vec<IpNet>,
    pub deny_peers: Vec<IpNet>,
}

impl ServerConfig {
    /// A configuration with the RFC defaults and no relay or listener addresses,
    /// for tests and as a base.
    pub fn with_realm(realm: &str) -> Self {
        Self {
            realm: realm.to_owned(),
            software: None,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            max_bps_per_allocation: 0,
            relay_ips: Vec::new(),
            external_ips: Vec::new(),
            relay_ports: 49152..=65535,
            own_services: Vec::new(),
            local_ips: Vec::new(),
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
        }
    }
}

/// What [`Server::handle_client`] wants sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum Output {
    /// Nothing (dropped, or an indication that needs no answer).
    None,
    /// Send the message now in `out` back to the client on the same 5-tuple.
    Reply,
    /// Send `data[start..end]` from relay socket `relay` to `peer`.
    ToPeer {
        relay: RelayId,
        peer: SocketAddr,
        start: usize,
        end: usize,
    },
}

/// What [`Server::handle_peer`] wants sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum PeerOutput {
    None,
    /// Send `buf[start..end]` to the client of this 5-tuple.
    ToClient {
        tuple: FiveTuple,
        start: usize,
        end: usize,
    },
}

/// Why a packet was dropped without an answer. Counted, never logged per packet.
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
}

impl DropReason {
    pub const COUNT: usize = 10;
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
        }
    }
}

/// Why an allocation ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CloseReason {
    Expired,
    Deleted,
    ConnectionClosed,
    /// The credential was removed or revoked (see `recheck_credentials`).
    Revoked,
    /// An operator ended it (`ferroturn sessions kill`).
    Killed,
    Shutdown,
}

impl CloseReason {
    /// The word used in usage records and logs.
    pub const fn name(self) -> &'static str {
        match self {
            CloseReason::Expired => "expired",
            CloseReason::Deleted => "deleted",
            CloseReason::ConnectionClosed => "connection_closed",
            CloseReason::Revoked => "revoked",
            CloseReason::Killed => "killed",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// What new Allocates get while the server drains (existing allocations are
/// untouched): 403, or 300 Try Alternate naming one of `alternates` in turn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drain {
    pub alternates: Vec<SocketAddr>,
}

/// One live allocation as `ferroturn sessions list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: u64,
    pub username: Box<str>,
    pub realm: Arc<str>,
    pub tuple: FiveTuple,
    /// Advertised relayed addresses.
    pub relays: Vec<SocketAddr>,
    pub started_unix: u64,
    /// Seconds until it expires unless refreshed.
    pub expires_in: u64,
    pub permissions: u32,
    pub channels: u32,
    pub peers: u32,
    pub traffic: Traffic,
}

/// Which allocations `Server::kill` ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillFilter {
    User(String),
    Id(u64),
}

/// Something that happened, for metrics and usage records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    AllocationCreated {
        tuple: FiveTuple,
    },
    AllocationClosed {
        id: u64,
        tuple: FiveTuple,
        username: Box<str>,
        realm: Arc<str>,
        /// Unix seconds when it was created.
        started_unix: u64,
        relays: Vec<SocketAddr>,
        duration: Duration,
        traffic: Traffic,
        peers: u32,
        reason: CloseReason,
    },
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
    /// `max-allocations` (508).
    Total,
    /// `max-permissions-per-allocation` (508).
    Permissions,
    /// `max-channels-per-allocation` (508).
    Channels,
    /// No relay port left in the range or under `max-relay-ports` (508, or the
    /// ADDRESS-ERROR-CODE of an additional family).
    RelayPorts,
}

impl QuotaKind {
    pub const COUNT: usize = 5;
    pub const ALL: [QuotaKind; Self::COUNT] = [
        QuotaKind::User,
        QuotaKind::Total,
        QuotaKind::Permissions,
        QuotaKind::Channels,
        QuotaKind::RelayPorts,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            QuotaKind::User => "user",
            QuotaKind::Total => "total",
            QuotaKind::Permissions => "permissions",
            QuotaKind::Channels => "channels",
            QuotaKind::RelayPorts => "relay_ports",
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
pub const RESPONSE_CODES: [u16; 15] = [
    200, 300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 500, 508,
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

/// Counters of one shard. Plain integers: the shard owns them and bumps them
/// without atomics or locks; the driver publishes a copy now and then for the
/// metrics endpoint (see `crate::metrics`). Every field only ever grows.
/// Per-transport arrays are indexed by [`super::Transport::index`], so splitting
/// relayed traffic by transport costs nothing over one total.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub drops: [u64; DropReason::COUNT],
    pub allocations_created: u64,
    /// Responses sent, by [`REQUEST_METHODS`] and [`RESPONSE_CODES`] index.
    pub requests: [[u64; RESPONSE_CODE_SLOTS]; REQUEST_METHODS.len()],
    pub auth_failures: [u64; AuthFailure::COUNT],
    pub quota_rejections: [u64; QuotaKind::COUNT],
    pub to_peer_packets: [u64; Transport::COUNT],
    pub to_peer_bytes: [u64; Transport::COUNT],
    pub to_client_packets: [u64; Transport::COUNT],
    pub to_client_bytes: [u64; Transport::COUNT],
}

impl Stats {
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
        sum(&mut self.to_peer_packets, &o.to_peer_packets);
        sum(&mut self.to_peer_bytes, &o.to_peer_bytes);
        sum(&mut self.to_client_packets, &o.to_client_packets);
        sum(&mut self.to_client_bytes, &o.to_client_bytes);
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

/// Caps the event queue when nobody drains it (events are for observers; losing
/// some under neglect is better than growing without bound).
/// How many credentials one username may match (REST secrets in rotation).
const MAX_CREDENTIAL_CANDIDATES: usize = 8;

const MAX_QUEUED_EVENTS: usize = 65_536;

/// The security features every nonce advertises (RFC 8489 §9.2): password
/// algorithm negotiation (with bid-down protection) and USERHASH.
const NONCE_FEATURES: u32 = FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY;

/// The PASSWORD-ALGORITHMS value of every 401 and 438, in the server's order of
/// preference: SHA-256, then MD5, both without parameters (RFC 8489 §14.12,
/// §18.5). A client that negotiates must echo exactly these bytes (§9.2.4).
const OFFERED_ALGORITHMS: [u8; 8] = [
    0x00, 0x02, 0x00, 0x00, // SHA-256, no parameters
    0x00, 0x01, 0x00, 0x00, // MD5, no parameters
];

/// The long-term key a request was verified with. Which of the user's two keys it
/// is follows from the password algorithm (RFC 8489 §9.2.2), not from the integrity
/// attribute: either key may key either MAC.
#[derive(Clone, Copy)]
enum LongTermKey {
    Md5([u8; 16]),
    Sha256([u8; 32]),
}

impl LongTermKey {
    fn as_bytes(&self) -> &[u8] {
        match self {
            LongTermKey::Md5(k) => k,
            LongTermKey::Sha256(k) => k,
        }
    }
}

/// How responses to an authenticated request are protected (RFC 8489 §9.2.5 via
/// §9.1.4): with the key the request was verified with, in the same kind of
/// integrity attribute the request was verified by. `Copy` and on the stack, so
/// signing a response allocates nothing.
#[derive(Clone, Copy)]
struct ReplyKey {
    key: LongTermKey,
    /// MESSAGE-INTEGRITY-SHA256 rather than MESSAGE-INTEGRITY.
    sha256_mac: bool,
}

/// The password algorithm of a request (RFC 8489 §18.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PasswordAlgo {
    Md5,
    Sha256,
}

/// Who a request claims to be: a USERNAME, or a USERHASH still to be resolved.
enum Claimed<'m> {
    Name(&'m str),
    Hash(&'m [u8; 32]),
}

/// A request that passed the long-term credential check.
struct Authed<'m> {
    /// The USERNAME as sent, or the name a USERHASH resolved to (owned then), so
    /// that 441 checks and quotas see the same user either way.
    username: Cow<'m, str>,
    key: ReplyKey,
    expiry: Option<u64>,
}

/// The password algorithm a request uses, or `None` when the request must be
/// refused with 400 (RFC 8489 §9.2.4, the bid-down checks). `features` are those of
/// the request's nonce, which the caller has already verified as ours.
///
/// - Neither PASSWORD-ALGORITHM nor PASSWORD-ALGORITHMS: MD5, as for every client
///   that predates RFC 8489 (their requests are processed exactly as before).
/// - Otherwise both must be present and well formed, PASSWORD-ALGORITHMS must be
///   byte for byte the list the server sent (a man in the middle who removed
///   SHA-256 from the 401 is caught here, since the nonce, whose MAC covers the
///   feature bits, says a list was sent), and PASSWORD-ALGORITHM must be one of its
///   entries, i.e. SHA-256 or MD5 without parameters. Anything else, an unknown
///   algorithm included, is 400.
/// - Under a nonce without the password-algorithms bit no list was ever offered,
///   so either attribute is a protocol error: 400. (Every nonce this server issues
///   has the bit; this only guards the rule.)
fn password_algorithm(msg: &Message<'_>, features: u32) -> Option<PasswordAlgo> {
    let (one, list) = match (
        msg.get::<PasswordAlgorithm>(),
        msg.get::<PasswordAlgorithms>(),
    ) {
        (None, None) => return Some(PasswordAlgo::Md5),
        (Some(Ok(one)), Some(Ok(list))) => (one, list),
        _ => return None,
    };
    if features & FEATURE_PASSWORD_ALGORITHMS == 0 || list.0 != OFFERED_ALGORITHMS {
        return None;
    }
    if !list.iter().any(|offered| offered == one) || !one.params.is_empty() {
        return None;
    }
    match one.algorithm {
        ALGORITHM_MD5 => Some(PasswordAlgo::Md5),
        ALGORITHM_SHA256 => Some(PasswordAlgo::Sha256),
        _ => None,
    }
}

/// What all shards share: read-mostly credentials, the nonce key (so that a nonce
/// issued on one shard verifies on another), the quota counts and the live relay
/// ports.
#[derive(Clone)]
pub struct Shared {
    pub creds: Arc<dyn CredentialStore>,
    pub nonces: Arc<NonceKey>,
    pub quota: Arc<QuotaTracker>,
    pub live: Arc<LiveRelayPorts>,
    pub reservations: Arc<Reservations>,
}

/// The core of one shard.
pub struct Server<B: RelayBinder> {
    cfg: Arc<ServerConfig>,
    /// `cfg.realm`, shared with every allocation made under it.
    realm: Arc<str>,
    /// The next allocation ID and the step between IDs: shard `i` of `n` issues
    /// `i+1, i+1+n, ...`, so IDs are unique across shards without sharing state.
    next_id: u64,
    id_step: u64,
    drain: Option<Drain>,
    /// Round-robin position in `drain.alternates`.
    next_alternate: usize,
    policy: PeerPolicy,
    creds: Arc<dyn CredentialStore>,
    nonces: Arc<NonceKey>,
    quota: Arc<QuotaTracker>,
    live: Arc<LiveRelayPorts>,
    binder: B,
    table: Table,
    /// Tokens this shard issued, with their expiry: this shard discards them when
    /// they run out unredeemed (the table itself is in [`Shared`]).
    issued_tokens: Vec<([u8; 8], Instant)>,
    reservations: Arc<Reservations>,
    /// `Instant` and unix seconds at one moment, so that wall-clock seconds can be
    /// derived from the injected `now`.
    wall_base: (Instant, u64),
    stats: Stats,
    events: Vec<Event>,
}

/// Builds a response in `out` with the common tail: MESSAGE-INTEGRITY when the
/// request was authenticated, FINGERPRINT when the request had one.
struct Reply<'o> {
    b: MessageBuilder<'o>,
    key: Option<ReplyKey>,
    fingerprint: bool,
}

impl<'o> Reply<'o> {
    fn new(
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

    fn finish(mut self) -> Output {
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

fn reason_phrase(code: u16) -> &'static str {
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
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

impl<B: RelayBinder> Server<B> {
    /// A core for one shard. `shared` is common to all shards; `binder` opens this
    /// shard's relay sockets. `now` and `unix_now` anchor wall-clock time.
    pub fn new(
        cfg: Arc<ServerConfig>,
        shared: &Shared,
        binder: B,
        now: Instant,
        unix_now: u64,
    ) -> Self {
        let policy = PeerPolicy::new(&cfg.allow_peers, &cfg.deny_peers);
        Self {
            realm: cfg.realm.as_str().into(),
            next_id: 1,
            id_step: 1,
            drain: None,
            next_alternate: 0,
            cfg,
            policy,
            creds: shared.creds.clone(),
            nonces: shared.nonces.clone(),
            quota: shared.quota.clone(),
            live: shared.live.clone(),
            binder,
            table: Table::default(),
            issued_tokens: Vec::new(),
            reservations: shared.reservations.clone(),
            wall_base: (now, unix_now),
            stats: Stats::default(),
            events: Vec::new(),
        }
    }

    /// Makes this core issue allocation IDs `index+1, index+1+count, ...`:
    /// unique across `count` shards.
    pub fn set_id_space(&mut self, index: usize, count: usize) {
        self.next_id = index as u64 + 1;
        self.id_step = count.max(1) as u64;
    }

    /// Applies a reloaded configuration: realm, lifetimes, per-allocation
    /// quotas, peer policy and SOFTWARE take effect for the next request.
    /// Allocations stay as they are (a realm change makes their next Refresh
    /// authenticate anew, with the new realm's 401).
    pub fn reconfigure(&mut self, cfg: Arc<ServerConfig>) {
        self.policy = PeerPolicy::new(&cfg.allow_peers, &cfg.deny_peers);
        if *self.realm != *cfg.realm {
            self.realm = cfg.realm.as_str().into();
        }
        self.cfg = cfg;
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.cfg
    }

    /// Starts (`Some`) or stops (`None`) draining: new Allocates are refused
    /// with 403, or redirected with 300 when alternates are given.
    pub fn set_drain(&mut self, drain: Option<Drain>) {
        self.drain = drain;
    }

    pub fn draining(&self) -> bool {
        self.drain.is_some()
    }

    /// The live allocations, for the admin socket.
    pub fn sessions(&self, now: Instant) -> Vec<Session> {
        self.table
            .iter()
            .map(|(_, a)| Session {
                id: a.id,
                username: a.username.clone(),
                realm: a.realm.clone(),
                tuple: a.tuple,
                relays: a.relays.iter().flatten().map(|r| r.advertised).collect(),
                started_unix: a.started_unix,
                expires_in: a.expires.saturating_duration_since(now).as_secs(),
                permissions: a.permissions.iter().filter(|p| p.expires > now).count() as u32,
                channels: a.channels.iter().filter(|c| c.expires > now).count() as u32,
                peers: a.peers_seen,
                traffic: a.traffic,
            })
            .collect()
    }

    /// Ends the allocations `filter` selects (close reason `Killed`); returns
    /// how many.
    pub fn kill(&mut self, now: Instant, filter: &KillFilter) -> usize {
        let ids: Vec<AllocId> = self
            .table
            .iter()
            .filter(|(_, a)| match filter {
                KillFilter::User(u) => *a.username == **u,
                KillFilter::Id(id) => a.id == *id,
            })
            .map(|(id, _)| id)
            .collect();
        for &id in &ids {
            self.close(now, id, CloseReason::Killed);
        }
        ids.len()
    }

    /// Re-anchors wall-clock time (call now and then so that the derived unix time
    /// follows the system clock).
    pub fn set_wall_clock(&mut self, now: Instant, unix_now: u64) {
        self.wall_base = (now, unix_now);
    }

    fn unix(&self, now: Instant) -> u64 {
        self.wall_base.1 + now.saturating_duration_since(self.wall_base.0).as_secs()
    }

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
    fn count_response(&mut self, method: Method, out: &[u8]) {
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

    pub fn binder(&self) -> &B {
        &self.binder
    }

    pub fn binder_mut(&mut self) -> &mut B {
        &mut self.binder
    }

    /// Takes the events that happened since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() < MAX_QUEUED_EVENTS {
            self.events.push(e);
        }
    }

    fn drop_packet(&mut self, why: DropReason) -> Output {
        self.stats.drops[why as usize] += 1;
        Output::None
    }

    /// Handles one datagram (UDP) or one framed message (stream) from a client.
    /// A reply, if any, is written to `out` (which is cleared first).
    pub fn handle_client(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        data: &[u8],
        out: &mut BytesMut,
    ) -> Output {
        if channel_data::looks_like_channel_data(data) {
            return self.handle_channel_data(now, tuple, data);
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(_) => return self.drop_packet(DropReason::Malformed),
        };
        if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
            return self.drop_packet(DropReason::BadFingerprint);
        }
        match (msg.class(), msg.method()) {
            (Class::Request, method) => {
                let o = if method == Method::Binding {
                    self.handle_binding(&msg, tuple, out)
                } else {
                    self.handle_turn_request(now, tuple, &msg, out)
                };
                if o == Output::Reply {
                    self.count_response(method, out);
                }
                o
            }
            (Class::Indication, Method::Send) => self.handle_send(now, tuple, &msg, data),
            // Binding indications are keep-alives (RFC 8489 §6.3.2): no answer.
            (Class::Indication, Method::Binding) => Output::None,
            _ => self.drop_packet(DropReason::Unexpected),
        }
    }

    fn error(
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

    fn handle_binding(
        &mut self,
        msg: &Message<'_>,
        tuple: FiveTuple,
        out: &mut BytesMut,
    ) -> Output {
        if !msg.unknown_required().is_empty() {
            return self.unknown_attributes(out, msg, None);
        }
        let mut r = Reply::new(out, msg, Class::Success, None, self.cfg.software.as_deref());
        r.b.add(&XorMappedAddress(tuple.client));
        r.finish()
    }

    fn unknown_attributes(
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

    /// 401 or 438 with REALM, a fresh NONCE advertising the security features, and
    /// PASSWORD-ALGORITHMS (RFC 8489 §9.2.4 asks for all three in both).
    fn challenge(
        &self,
        now: Instant,
        tuple: FiveTuple,
        out: &mut BytesMut,
        msg: &Message<'_>,
        code: u16,
    ) -> Output {
        let nonce = self
            .nonces
            .issue(self.unix(now), tuple.client, NONCE_FEATURES);
        let mut r = Reply::new(out, msg, Class::Error, None, self.cfg.software.as_deref());
        r.b.add(&ErrorCode::new(code, reason_phrase(code)));
        r.b.add(&Realm(&self.cfg.realm));
        r.b.add(&Nonce(nonce.as_bytes()));
        // Comprehension-optional: clients that predate RFC 8489 ignore it.
        r.b.add(&PasswordAlgorithms(&OFFERED_ALGORITHMS));
        r.finish()
    }

    /// The long-term credential check (RFC 8489 §9.2.4), with the security features
    /// of §9.2: password algorithm negotiation, MESSAGE-INTEGRITY-SHA256 and USERHASH.
    /// On failure the error response is already in `out`.
    ///
    /// Order: no integrity attribute → 401; a missing or malformed USERNAME/USERHASH,
    /// REALM or NONCE → 400; a nonce that is not ours, or too old → 438; the bid-down
    /// checks → 400; then the credential lookup and MAC → 401. The nonce is checked
    /// before the bid-down rules (the RFC lists them first) because those rules
    /// depend on its feature bits, which can only be trusted once its MAC verified.
    fn authenticate<'m>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'m>,
        out: &mut BytesMut,
    ) -> Result<Authed<'m>, Output> {
        // RFC 8489 §9.2.4 with §14.6: when both integrity attributes are present only
        // MESSAGE-INTEGRITY-SHA256 is checked (and the response carries that kind).
        let sha256_mac = msg.has_integrity_sha256();
        if !msg.has_integrity() && !sha256_mac {
            return Err(self.challenge(now, tuple, out, msg, 401));
        }
        // Exactly one of USERNAME and USERHASH: both at once is ambiguous, so 400.
        let claimed = match (msg.get::<Username>(), msg.get::<Userhash>()) {
            (Some(Ok(Username(u))), None) => Claimed::Name(u),
            (None, Some(Ok(Userhash(h)))) => Claimed::Hash(h),
            _ => return Err(self.error(out, msg, 400, None)),
        };
        let (Some(Ok(Realm(realm))), Some(Ok(Nonce(nonce)))) =
            (msg.get::<Realm>(), msg.get::<Nonce>())
        else {
            return Err(self.error(out, msg, 400, None));
        };
        let unix = self.unix(now);
        match self
            .nonces
            .verify(nonce, unix, tuple.client, self.cfg.nonce_lifetime.as_secs())
        {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                self.stats.auth_failures[AuthFailure::StaleNonce as usize] += 1;
                return Err(self.challenge(now, tuple, out, msg, 438));
            }
        }
        let features = nonce_features(nonce);
        let Some(algorithm) = password_algorithm(msg, features) else {
            return Err(self.error(out, msg, 400, None));
        };
        // USERHASH is only defined under a nonce that offered username anonymity.
        if matches!(claimed, Claimed::Hash(_)) && features & FEATURE_USERNAME_ANONYMITY == 0 {
            return Err(self.error(out, msg, 400, None));
        }
        let verify = |key: &LongTermKey| {
            if sha256_mac {
                msg.verify_integrity_sha256(key.as_bytes()).is_ok()
            } else {
                msg.verify_integrity(key.as_bytes()).is_ok()
            }
        };
        // Unknown users (by name or by hash), expired or revoked credentials and a
        // wrong realm cost the same MAC as a wrong password and get the same 401, so
        // that neither timing nor the answer tells an attacker which usernames exist.
        // Several candidates when REST secrets rotate: the store only learns which
        // secret minted a credential when its MAC checks out.
        let username: Option<Cow<'m, str>> = if realm != self.cfg.realm {
            None
        } else {
            match claimed {
                Claimed::Name(u) => Some(Cow::Borrowed(u)),
                Claimed::Hash(h) => self
                    .creds
                    .lookup_userhash(h, &self.cfg.realm, unix)
                    .map(Cow::Owned),
            }
        };
        let mut matched = None;
        let mut tried = 0;
        // Why the first lookup found nothing usable, for the counters only.
        let mut failure = AuthFailure::UnknownUser;
        if let Some(name) = &username {
            while tried < MAX_CREDENTIAL_CANDIDATES {
                let keys_expiry =
                    match self
                        .creds
                        .lookup_candidate(name, &self.cfg.realm, unix, tried)
                    {
                        Lookup::Found(keys, expiry) => (keys, expiry),
                        Lookup::Expired if tried == 0 => {
                            failure = AuthFailure::ExpiredCredential;
                            break;
                        }
                        Lookup::Revoked if tried == 0 => {
                            failure = AuthFailure::Revoked;
                            break;
                        }
                        _ => break,
                    };
                let (keys, expiry) = keys_expiry;
                tried += 1;
                let key = match algorithm {
                    PasswordAlgo::Md5 => LongTermKey::Md5(keys.md5),
                    PasswordAlgo::Sha256 => LongTermKey::Sha256(keys.sha256),
                };
                if verify(&key) {
                    matched = Some((key, expiry));
                    break;
                }
            }
        }
        if tried == 0 {
            let dummy = match algorithm {
                PasswordAlgo::Md5 => LongTermKey::Md5([0; 16]),
                PasswordAlgo::Sha256 => LongTermKey::Sha256([0; 32]),
            };
            let _ = verify(&dummy);
        }
        let (Some((key, expiry)), Some(username)) = (matched, username) else {
            if tried > 0 {
                failure = AuthFailure::BadIntegrity;
            }
            self.stats.auth_failures[failure as usize] += 1;
            return Err(self.challenge(now, tuple, out, msg, 401));
        };
        Ok(Authed {
            username,
            key: ReplyKey { key, sha256_mac },
            expiry,
        })
    }

    fn handle_turn_request(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'_>,
        out: &mut BytesMut,
    ) -> Output {
        let method = msg.method();
        if !matches!(
            method,
            Method::Allocate | Method::Refresh | Method::CreatePermission | Method::ChannelBind
        ) {
            return self.error(out, msg, 400, None);
        }
        let auth = match self.authenticate(now, tuple, msg, out) {
            Ok(a) => a,
            Err(o) => return o,
        };
        if !msg.unknown_required().is_empty() {
            return self.unknown_attributes(out, msg, Some(auth.key));
        }
        let existing = self.table.by_tuple(&tuple);
        if let Some(id) = existing {
            let same_user = self
                .table
                .get(id)
                .is_some_and(|a| *a.username == *auth.username);
            if !same_user {
                return self.error(out, msg, 441, Some(auth.key));
            }
        }
        match (method, existing) {
            (Method::Allocate, Some(id)) => self.allocate_again(id, msg, &auth, out),
            (Method::Allocate, None) => self.allocate(now, tuple, msg, &auth, out),
            (_, None) => self.error(out, msg, 437, Some(auth.key)),
            (Method::Refresh, Some(id)) => self.refresh(now, id, msg, &auth, out),
            (Method::CreatePermission, Some(id)) => {
                self.create_permission(now, id, msg, &auth, out)
            }
            (_, Some(id)) => self.channel_bind(now, id, msg, &auth, out),
        }
    }

    /// An Allocate on a 5-tuple that has an allocation: a retransmission of the
    /// request that created it gets the same success response; anything else 437.
    fn allocate_again(
        &mut self,
        id: AllocId,
        msg: &Message<'_>,
        auth: &Authed<'_>,
        out: &mut BytesMut,
    ) -> Output {
        let Some(a) = self.table.get(id) else {
            return self.error(out, msg, 437, Some(auth.key));
        };
        if a.allocate_tid != msg.transaction_id() {
            return self.error(out, msg, 437, Some(auth.key));
        }
        let (relays, lifetime, client) = (a.relays, a.granted_lifetime, a.tuple.client);
        let (token, family_error) = (a.reservation_token, a.address_error);
        self.allocate_success(
            out,
            msg,
            auth,
            &relays,
            lifetime,
            token,
            family_error,
            client,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate_success(
        &self,
        out: &mut BytesMut,
        msg: &Message<'_>,
        auth: &Authed<'_>,
        relays: &[Option<Relay>; 2],
        lifetime: u32,
        token: Option<[u8; 8]>,
        family_error: Option<(Family, u16)>,
        client: SocketAddr,
    ) -> Output {
        let mut r = Reply::new(
            out,
            msg,
            Class::Success,
            Some(auth.key),
            self.cfg.software.as_deref(),
        );
        for relay in relays.iter().flatten() {
            r.b.add(&XorRelayedAddress(relay.advertised));
        }
        r.b.add(&Lifetime(lifetime));
        if let Some(t) = &token {
            r.b.add(&ReservationToken(t));
        }
        if let Some((family, code)) = family_error {
            r.b.add(&AddressErrorCode {
                family,
                code,
                reason: reason_phrase(code),
            });
        }
        r.b.add(&XorMappedAddress(client));
        r.finish()
    }

    /// The lifetime to grant for a requested one (RFC 8656 §7.2: the smaller of the
    /// request and the maximum, but never below the default), clamped so that the
    /// allocation does not outlive a REST credential.
    fn grant_lifetime(&self, now: Instant, requested: Option<u32>, expiry: Option<u64>) -> u32 {
        let max = self.cfg.max_lifetime.as_secs();
        let default = self.cfg.default_lifetime.as_secs();
        let mut secs = requested.map_or(default, |r| u64::from(r).min(max).max(default));
        if let Some(exp) = expiry {
            secs = secs.min(exp.saturating_sub(self.unix(now)));
        }
        secs.min(u64::from(u32::MAX)) as u32
    }

    /// The IP a relay of `family` binds to for a client that reached `server`.
    fn relay_ip(&self, family: Family, server: SocketAddr) -> Option<IpAddr> {
        self.cfg
            .relay_ips
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
            .or_else(|| {
                (Family::of(server.ip()) == family && !server.ip().is_unspecified())
                    .then_some(server.ip())
            })
    }

    /// The address to advertise for a relay bound to `local` (external-ip mapping).
    fn advertise(&self, local: SocketAddr) -> SocketAddr {
        for &(public, private) in &self.cfg.external_ips {
            let matches = match private {
                Some(p) => p == local.ip(),
                None => public.is_ipv4() == local.is_ipv4(),
            };
            if matches {
                return SocketAddr::new(public, local.port());
            }
        }
        local
    }

    fn bind_relay(
        &mut self,
        family: Family,
        server: SocketAddr,
        port: PortRequest,
        df: bool,
    ) -> Result<(Relay, Option<SocketAddr>), BindError> {
        let ip = self
            .relay_ip(family, server)
            .ok_or(BindError::FamilyUnavailable)?;
        let bound = self.binder.bind(ip, port, df)?;
        Ok((
            Relay {
                id: bound.id,
                local: bound.addr,
                advertised: self.advertise(bound.addr),
            },
            bound.reserved,
        ))
    }

    fn allocate(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed<'_>,
        out: &mut BytesMut,
    ) -> Output {
        let key = Some(auth.key);
        match msg.get::<RequestedTransport>() {
            Some(Ok(RequestedTransport(PROTOCOL_UDP))) => {}
            Some(Ok(_)) => return self.error(out, msg, 442, key),
            None | Some(Err(_)) => return self.error(out, msg, 400, key),
        }
        let dont_fragment = msg.has(attr::DONT_FRAGMENT);
        let token = match msg.get::<ReservationToken>() {
            None => None,
            Some(Ok(ReservationToken(t))) => Some(*t),
            Some(Err(_)) => return self.error(out, msg, 400, key),
        };
        let even_port = match msg.get::<EvenPort>() {
            None => None,
            Some(Ok(e)) => Some(e),
            Some(Err(_)) => return self.error(out, msg, 400, key),
        };
        let requested_family = match msg.get::<RequestedAddressFamily>() {
            None => None,
            Some(Ok(RequestedAddressFamily(f))) => Some(f),
            Some(Err(AttrError::BadFamily)) => return self.error(out, msg, 440, key),
            Some(Err(_)) => return self.error(out, msg, 400, key),
        };
        let additional = match msg.get::<AdditionalAddressFamily>() {
            None => false,
            Some(Ok(AdditionalAddressFamily(Family::V6))) => true,
            Some(_) => return self.error(out, msg, 400, key),
        };
        if token.is_some() && (even_port.is_some() || requested_family.is_some() || additional) {
            return self.error(out, msg, 400, key);
        }
        if additional && requested_family.is_some() {
            return self.error(out, msg, 400, key);
        }
        if let Some(drain) = &self.drain {
            // Authenticated first, so the 300 carries MESSAGE-INTEGRITY and a
            // client can trust the redirection (RFC 8489 §10).
            if drain.alternates.is_empty() {
                return self.error(out, msg, 403, key);
            }
            let alt = drain.alternates[self.next_alternate % drain.alternates.len()];
            self.next_alternate = self.next_alternate.wrapping_add(1);
            let mut r = Reply::new(out, msg, Class::Error, key, self.cfg.software.as_deref());
            r.b.add(&ErrorCode::new(300, reason_phrase(300)));
            r.b.add(&AlternateServer(alt));
            return r.finish();
        }
        if !self.creds.accepts_new_allocations() {
            tracing::warn!("credential store unavailable: refusing a new allocation");
            return self.error(out, msg, 500, key);
        }
        match self.quota.acquire(&auth.username) {
            Ok(()) => {}
            Err(QuotaError::User) => {
                self.stats.quota_rejections[QuotaKind::User as usize] += 1;
                return self.error(out, msg, 486, key);
            }
            Err(QuotaError::Total) => {
                self.stats.quota_rejections[QuotaKind::Total as usize] += 1;
                return self.error(out, msg, 508, key);
            }
        }

        let mut relays: [Option<Relay>; 2] = [None, None];
        let mut new_token = None;
        let mut family_error = None;
        if let Some(t) = token {
            let adopted = match self.reservations.take(&t) {
                Some((addr, expires)) if expires > now => self.binder.adopt(addr).ok(),
                Some((addr, _)) => {
                    self.discard_reserved(addr);
                    None
                }
                None => None,
            };
            let Some(bound) = adopted else {
                self.quota.release(&auth.username);
                return self.error(out, msg, 508, key);
            };
            relays[0] = Some(Relay {
                id: bound.id,
                local: bound.addr,
                advertised: self.advertise(bound.addr),
            });
        } else {
            let port = match even_port {
                None => PortRequest::Any,
                Some(EvenPort { reserve: false }) => PortRequest::Even,
                Some(EvenPort { reserve: true }) => PortRequest::EvenPair,
            };
            let primary = requested_family.unwrap_or(Family::V4);
            match self.bind_relay(primary, tuple.server, port, dont_fragment) {
                Ok((relay, reserved)) => {
                    self.live.set(relay.local, true);
                    relays[0] = Some(relay);
                    if let Some(raddr) = reserved {
                        let t: [u8; 8] = rand::random();
                        let expires = now + RESERVATION_LIFETIME;
                        self.live.set(raddr, true);
                        self.reservations.insert(t, raddr, expires);
                        self.issued_tokens.push((t, expires));
                        new_token = Some(t);
                    }
                }
                Err(e) => {
                    self.quota.release(&auth.username);
                    let code = match e {
                        BindError::Exhausted => {
                            self.stats.quota_rejections[QuotaKind::RelayPorts as usize] += 1;
                            508
                        }
                        BindError::FamilyUnavailable => 440,
                    };
                    return self.error(out, msg, code, key);
                }
            }
            if additional {
                match self.bind_relay(Family::V6, tuple.server, PortRequest::Any, dont_fragment) {
                    Ok((relay, _)) => {
                        self.live.set(relay.local, true);
                        relays[1] = Some(relay);
                    }
                    Err(BindError::Exhausted) => {
                        self.stats.quota_rejections[QuotaKind::RelayPorts as usize] += 1;
                        family_error = Some((Family::V6, 508));
                    }
                    Err(BindError::FamilyUnavailable) => family_error = Some((Family::V6, 440)),
                }
            }
        }

        let requested = match msg.get::<Lifetime>() {
            Some(Ok(Lifetime(l))) => Some(l),
            _ => None,
        };
        let lifetime = self.grant_lifetime(now, requested, auth.expiry);
        let id = self.next_id;
        self.next_id += self.id_step;
        let alloc = Allocation {
            id,
            tuple,
            username: (*auth.username).into(),
            realm: self.realm.clone(),
            started_unix: self.unix(now),
            relays,
            expires: now + Duration::from_secs(u64::from(lifetime)),
            credential_expiry: auth.expiry,
            allocate_tid: msg.transaction_id(),
            granted_lifetime: lifetime,
            reservation_token: new_token,
            address_error: family_error,
            permissions: Vec::new(),
            channels: Vec::new(),
            dont_fragment,
            created: now,
            traffic: Traffic::default(),
            peers_seen: 0,
            to_peer_bandwidth: Bandwidth::default(),
            to_client_bandwidth: Bandwidth::default(),
        };
        self.table.insert(alloc);
        self.stats.allocations_created += 1;
        self.emit(Event::AllocationCreated { tuple });
        self.allocate_success(
            out,
            msg,
            auth,
            &relays,
            lifetime,
            new_token,
            family_error,
            tuple.client,
        )
    }

    fn discard_reserved(&mut self, addr: SocketAddr) {
        self.live.set(addr, false);
        self.binder.discard(addr);
    }

    fn release_relay(&mut self, id: RelayId, addr: SocketAddr) {
        self.live.set(addr, false);
        self.binder.release(id);
    }

    fn close(&mut self, now: Instant, id: AllocId, reason: CloseReason) {
        let Some(a) = self.table.remove(id) else {
            return;
        };
        for r in a.relays.iter().flatten() {
            self.release_relay(r.id, r.local);
        }
        self.quota.release(&a.username);
        self.emit(Event::AllocationClosed {
            id: a.id,
            realm: a.realm,
            started_unix: a.started_unix,
            tuple: a.tuple,
            relays: a.relays.iter().flatten().map(|r| r.advertised).collect(),
            username: a.username,
            duration: now.saturating_duration_since(a.created),
            traffic: a.traffic,
            peers: a.peers_seen,
            reason,
        });
    }

    fn refresh(
        &mut self,
        now: Instant,
        id: AllocId,
        msg: &Message<'_>,
        auth: &Authed<'_>,
        out: &mut BytesMut,
    ) -> Output {
        let key = Some(auth.key);
        let requested = match msg.get::<Lifetime>() {
            None => None,
            Some(Ok(Lifetime(l))) => Some(l),
            Some(Err(_)) => return self.error(out, msg, 400, key),
        };
        if let Some(f) = msg.get::<RequestedAddressFamily>() {
            let Ok(RequestedAddressFamily(f)) = f else {
                return self.error(out, msg, 400, key);
            };
            let has = self.table.get(id).is_some_and(|a| {
                a.relays
                    .iter()
                    .flatten()
                    .any(|r| Family::of(r.local.ip()) == f)
            });
            if !has {
                return self.error(out, msg, 443, key);
            }
        }
        let lifetime = if requested == Some(0) {
            self.close(now, id, CloseReason::Deleted);
            0
        } else {
            let lifetime = self.grant_lifetime(now, requested, auth.expiry);
            let expires = now + Duration::from_secs(u64::from(lifetime));
            if let Some(a) = self.table.get_mut(id) {
                a.expires = expires;
                a.credential_expiry = auth.expiry;
            }
            // A shorter lifetime moves the deadline earlier than the queued one.
            self.table.schedule(id, expires);
            lifetime
        };
        let mut r = Reply::new(out, msg, Class::Success, key, self.cfg.software.as_deref());
        r.b.add(&Lifetime(lifetime));
        r.finish()
    }

    /// Whether `ip` is one of this host's own addresses.
    fn is_own_ip(&self, ip: IpAddr) -> bool {
        self.cfg.local_ips.contains(&ip)
            || self.cfg.relay_ips.contains(&ip)
            || self.cfg.own_services.iter().any(|s| s.ip() == ip)
            || self
                .cfg
                .external_ips
                .iter()
                .any(|&(p, q)| p == ip || q == Some(ip))
    }

    fn is_own_service(&self, addr: SocketAddr) -> bool {
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
    fn to_internal(&self, peer: SocketAddr) -> (SocketAddr, bool) {
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
    fn to_external(&self, from: SocketAddr) -> SocketAddr {
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
    fn ip_allowed(&self, ip: IpAddr) -> bool {
        let (internal, via_external) =
            self.to_internal(SocketAddr::new(ip, *self.cfg.relay_ports.start()));
        via_external || self.policy.check(internal.ip()).is_allowed()
    }

    /// Where to send data for `peer`, or `None` when policy forbids it: never to
    /// the server's own services; on this host only to live relay ports unless the
    /// operator opened the address; elsewhere as the peer policy says.
    fn peer_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
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

    fn create_permission(
        &mut self,
        now: Instant,
        id: AllocId,
        msg: &Message<'_>,
        auth: &Authed<'_>,
        out: &mut BytesMut,
    ) -> Output {
        let key = Some(auth.key);
        let tid = msg.transaction_id();
        let mut peers = msg
            .attributes()
            .filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
            .map(|a| XorPeerAddress::decode(a.value, &tid).map(|p| p.0))
            .peekable();
        if peers.peek().is_none() {
            return self.error(out, msg, 400, key);
        }
        // Forget what has expired before counting against quotas, whether or not
        // the housekeeping timer has run yet.
        if let Some(a) = self.table.get_mut(id) {
            a.sweep(now);
        }
        let Some(alloc) = self.table.get(id) else {
            return self.error(out, msg, 437, key);
        };
        // Validate every address before installing any: the request succeeds or
        // fails as a whole (RFC 8656 §9.2).
        let max = self.cfg.max_permissions_per_allocation;
        let mut new = 0usize;
        let mut ips: [Option<IpAddr>; 16] = [None; 16];
        for (count, p) in peers.enumerate() {
            let Ok(p) = p else {
                return self.error(out, msg, 400, key);
            };
            // Policy before family: a denied address is refused as such (403),
            // whichever family it is written in.
            if !self.ip_allowed(p.ip()) {
                return self.error(out, msg, 403, key);
            }
            if alloc.relay_for(p.ip()).is_none() {
                return self.error(out, msg, 443, key);
            }
            let known = alloc.permissions.iter().any(|x| x.ip == p.ip())
                || ips[..count].contains(&Some(p.ip()));
            if !known {
                new += 1;
            }
            if count == ips.len() {
                return self.error(out, msg, 400, key);
            }
            ips[count] = Some(p.ip());
        }
        if max != 0 && alloc.permissions.len() + new > max as usize {
            self.stats.quota_rejections[QuotaKind::Permissions as usize] += 1;
            return self.error(out, msg, 508, key);
        }
        let expires = now + self.cfg.permission_lifetime;
        if let Some(a) = self.table.get_mut(id) {
            for ip in ips.iter().flatten() {
                a.permit(*ip, expires, 0);
            }
        }
        self.table.schedule(id, expires);
        let r = Reply::new(out, msg, Class::Success, key, self.cfg.software.as_deref());
        r.finish()
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        id: AllocId,
        msg: &Message<'_>,
        auth: &Authed<'_>,
        out: &mut BytesMut,
    ) -> Output {
        let key = Some(auth.key);
        let (Some(Ok(ChannelNumber(number))), Some(Ok(XorPeerAddress(peer)))) =
            (msg.get::<ChannelNumber>(), msg.get::<XorPeerAddress>())
        else {
            return self.error(out, msg, 400, key);
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return self.error(out, msg, 400, key);
        }
        // A binding past its cool-down must neither conflict nor be refreshed in
        // place (that would keep its old peer), timer or not.
        if let Some(a) = self.table.get_mut(id) {
            a.sweep(now);
        }
        let Some(alloc) = self.table.get(id) else {
            return self.error(out, msg, 437, key);
        };
        if !self.ip_allowed(peer.ip()) || self.peer_destination(peer).is_none() {
            return self.error(out, msg, 403, key);
        }
        if alloc.relay_for(peer.ip()).is_none() {
            return self.error(out, msg, 443, key);
        }
        if alloc.channel_conflict(number, peer) {
            return self.error(out, msg, 400, key);
        }
        let (max_ch, max_perm) = (
            self.cfg.max_channels_per_allocation,
            self.cfg.max_permissions_per_allocation,
        );
        let is_new_channel = !alloc.channels.iter().any(|c| c.number == number);
        if is_new_channel && max_ch != 0 && alloc.channels.len() >= max_ch as usize {
            self.stats.quota_rejections[QuotaKind::Channels as usize] += 1;
            return self.error(out, msg, 508, key);
        }
        if !alloc.can_permit(peer.ip(), max_perm) {
            self.stats.quota_rejections[QuotaKind::Permissions as usize] += 1;
            return self.error(out, msg, 508, key);
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
        let r = Reply::new(out, msg, Class::Success, key, self.cfg.software.as_deref());
        r.finish()
    }

    /// A Send indication: relay the DATA to the peer if allowed (RFC 8656 §11.2).
    fn handle_send(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'_>,
        data: &[u8],
    ) -> Output {
        let rate = self.cfg.max_bps_per_allocation;
        let Some(id) = self.table.by_tuple(&tuple) else {
            return self.drop_packet(DropReason::NoAllocation);
        };
        let (Some(Ok(XorPeerAddress(peer))), Some(Ok(Data(payload)))) =
            (msg.get::<XorPeerAddress>(), msg.get::<Data>())
        else {
            return self.drop_packet(DropReason::Malformed);
        };
        let Some(dest) = self.peer_destination(peer) else {
            return self.drop_packet(DropReason::DeniedPeer);
        };
        let Some(a) = self.table.get_mut(id) else {
            return self.drop_packet(DropReason::NoAllocation);
        };
        let Some(relay) = a.relay_for(peer.ip()).map(|r| r.id) else {
            return self.drop_packet(DropReason::FamilyMismatch);
        };
        if !a.permitted(peer.ip(), now) {
            return self.drop_packet(DropReason::NoPermission);
        }
        let start = payload.as_ptr() as usize - data.as_ptr() as usize;
        let len = payload.len() as u64;
        if !a.to_peer_bandwidth.admit(now, len, rate) {
            return self.drop_packet(DropReason::RateLimit);
        }
        a.traffic.to_peer_packets += 1;
        a.traffic.to_peer_bytes += len;
        let t = tuple.transport.index();
        self.stats.to_peer_packets[t] += 1;
        self.stats.to_peer_bytes[t] += len;
        Output::ToPeer {
            relay,
            peer: dest,
            start,
            end: start + payload.len(),
        }
    }

    /// ChannelData from a client: the hot path towards peers.
    fn handle_channel_data(&mut self, now: Instant, tuple: FiveTuple, data: &[u8]) -> Output {
        let Ok(cd) = ChannelData::parse(data) else {
            return self.drop_packet(DropReason::Malformed);
        };
        let rate = self.cfg.max_bps_per_allocation;
        let Some(id) = self.table.by_tuple(&tuple) else {
            return self.drop_packet(DropReason::NoAllocation);
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
        if !a.to_peer_bandwidth.admit(now, len, rate) {
            return self.drop_packet(DropReason::RateLimit);
        }
        a.traffic.to_peer_packets += 1;
        a.traffic.to_peer_bytes += len;
        let t = tuple.transport.index();
        self.stats.to_peer_packets[t] += 1;
        self.stats.to_peer_bytes[t] += len;
        let dest = self.to_internal(peer).0;
        Output::ToPeer {
            relay,
            peer: dest,
            start: channel_data::CHANNEL_DATA_HEADER_LEN,
            end: channel_data::CHANNEL_DATA_HEADER_LEN + cd.payload.len(),
        }
    }

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
        if !a
            .to_client_bandwidth
            .admit(now, len as u64, self.cfg.max_bps_per_allocation)
        {
            self.stats.drops[DropReason::RateLimit as usize] += 1;
            return PeerOutput::None;
        }
        a.traffic.to_client_packets += 1;
        a.traffic.to_client_bytes += len as u64;
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
            let first = write_data_indication_prefix(buf, start, len, peer);
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

    /// The client's stream closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn connection_closed(&mut self, now: Instant, tuple: FiveTuple) {
        if let Some(id) = self.table.by_tuple(&tuple) {
            self.close(now, id, CloseReason::ConnectionClosed);
        }
    }

    /// Ends every allocation (shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let ids: Vec<AllocId> = self.table.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.close(now, id, CloseReason::Shutdown);
        }
        for (t, _) in std::mem::take(&mut self.issued_tokens) {
            if let Some((addr, _)) = self.reservations.take(&t) {
                self.discard_reserved(addr);
            }
        }
    }

    /// Ends every allocation whose credential no longer resolves: the user was
    /// removed or the REST credential revoked. Call it when the credentials
    /// change; a changed password does not end anything (the next request must
    /// simply use the new one). Returns how many allocations ended.
    pub fn recheck_credentials(&mut self, now: Instant) -> usize {
        let unix = self.unix(now);
        let gone: Vec<AllocId> = self
            .table
            .iter()
            .filter(|(_, a)| {
                // The user may be known in the allocation's realm or, after a
                // realm change by reload, in the new one: either keeps it.
                let found = |realm: &str| {
                    matches!(
                        self.creds.lookup(&a.username, realm, unix),
                        Lookup::Found(..)
                    )
                };
                !(found(&a.realm) || (*a.realm != *self.cfg.realm && found(&self.cfg.realm)))
            })
            .map(|(id, _)| id)
            .collect();
        for &id in &gone {
            self.close(now, id, CloseReason::Revoked);
        }
        gone.len()
    }

    /// When the core next needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let res = self.issued_tokens.iter().map(|(_, e)| *e).min();
        match (self.table.next_deadline(), res) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires allocations, permissions, channels and reservations due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.table.pop_due(now) {
            let Some(a) = self.table.get_mut(id) else {
                continue;
            };
            if a.expires <= now {
                self.close(now, id, CloseReason::Expired);
                continue;
            }
            a.sweep(now);
            let next = a.next_deadline();
            self.table.schedule(id, next);
        }
        if self.issued_tokens.iter().any(|(_, e)| *e <= now) {
            let (expired, live): (Vec<_>, Vec<_>) =
                self.issued_tokens.iter().partition(|(_, e)| *e <= now);
            self.issued_tokens = live;
            for (t, _) in expired {
                // Gone already when it was redeemed, possibly by another shard.
                if let Some((addr, _)) = self.reservations.take(&t) {
                    self.discard_reserved(addr);
                }
            }
        }
    }
}

/// Writes a Data indication header, XOR-PEER-ADDRESS and the DATA attribute header
/// into the headroom before `buf[start..]`; returns where the message starts. The
/// transaction ID is random, as RFC 8656 §11.3 asks.
fn write_data_indication_prefix(
    buf: &mut [u8],
    start: usize,
    len: usize,
    peer: SocketAddr,
) -> usize {
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    let prefix = HEADER_LEN + 4 + addr_len + 4;
    let first = start - prefix;
    let tid = TransactionId::random();
    let msg_len = (prefix - HEADER_LEN + padded_len(len)) as u16;
    let b = &mut buf[first..start];
    b[0..2].copy_from_slice(&message_type(Method::Data, Class::Indication).to_be_bytes());
    b[2..4].copy_from_slice(&msg_len.to_be_bytes());
    b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b[8..20].copy_from_slice(&tid.0);
    b[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    b[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
    let (value, _) = attr::address_value(&peer, Some(&tid));
    b[24..24 + addr_len].copy_from_slice(&value[..addr_len]);
    let d = 24 + addr_len;
    b[d..d + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    b[d + 2..d + 4].copy_from_slice(&(len as u16).to_be_bytes());
    first
}
