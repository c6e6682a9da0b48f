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
//!
//! Each rule of the RFCs lives in a file of its own, each adding an
//! `impl<B: RelayBinder> Server<B>` block (see docs/rfc-compliance.md for the
//! table): `auth::long_term` (RFC 8489 §9.2), `allocate` (RFC 8656 §7–8, RFC
//! 6156), `permission` (§9), `channel` (§12), `client_to_peer` (§11.2, §12.4),
//! `peer_to_client` (§11.3, §12.5), `responses` (error responses, Binding),
//! `peer_address` (NAT mapping, own addresses, policy), `operations` (reload,
//! drain, sessions, kill, shutdown) and `stats`. This file holds the struct,
//! its construction, the dispatch of what clients send, and the timers.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::auth::{CredentialStore, NonceKey};
use super::cluster::ClusterView;
use super::live::LiveRelayPorts;
use super::policy::PeerPolicy;
use super::quota::QuotaTracker;
use super::reservations::Reservations;
use super::responses::Request;
use super::source_limit::SourceLimiter;
use super::table::Table;
use super::tcp_relay::{Connecting, TcpConnections};
use crate::stun::channel_data;
use crate::stun::{Class, Message, Method};

pub use super::config::{
    NatDiscovery, ServerConfig, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_UNAUTHENTICATED_RATE,
    PEER_HEADROOM, PEER_TAILROOM, RESERVATION_LIFETIME,
};
pub use super::output::{
    AllocationSummary, BudgetUse, CloseReason, Drain, Event, KillFilter, Output, PeerOutput,
    Session,
};
pub use super::stats::{
    AuthFailure, DropReason, Gauges, QuotaKind, RedirectReason, Stats, REQUEST_METHODS,
    RESPONSE_CODES, RESPONSE_CODE_SLOTS,
};
use super::{FiveTuple, RelayBinder};

/// Whether `reply` (a response the core just built) is an error response without
/// MESSAGE-INTEGRITY(-SHA256): an answer to a request whose integrity was not
/// verified, so one whose source may be spoofed. Responses to authenticated
/// requests are always signed (`responses::Reply`), so this is exactly the set
/// the per-source limit applies to.
fn is_unsigned_error(reply: &[u8]) -> bool {
    match Message::parse(reply) {
        Ok(m) => m.class() == Class::Error && !m.has_integrity() && !m.has_integrity_sha256(),
        Err(_) => false,
    }
}

/// Caps the event queue when nobody drains it (events are for observers; losing
/// some under neglect is better than growing without bound).
const MAX_QUEUED_EVENTS: usize = 65_536;

/// What all shards share: read-mostly credentials, the nonce key (so that a nonce
/// issued on one shard verifies on another), the quota counts, the live relay
/// ports, and the per-source budgets of unauthenticated errors (so that a source
/// has one budget whichever shard its packets reach).
#[derive(Clone)]
pub struct Shared {
    pub creds: Arc<dyn CredentialStore>,
    pub nonces: Arc<NonceKey>,
    pub quota: Arc<QuotaTracker>,
    pub live: Arc<LiveRelayPorts>,
    pub reservations: Arc<Reservations>,
    pub source_limits: Arc<SourceLimiter>,
    /// The other nodes new clients may be sent to (`[cluster]`).
    pub cluster: Arc<ClusterView>,
    /// The connection IDs of TCP allocations (RFC 6062): a ConnectionBind may
    /// reach any shard.
    pub tcp: Arc<TcpConnections>,
}

/// The core of one shard.
pub struct Server<B: RelayBinder> {
    pub(super) cfg: Arc<ServerConfig>,
    /// `cfg.realm`, shared with every allocation made under it.
    pub(super) realm: Arc<str>,
    /// The next allocation ID and the step between IDs: shard `i` of `n` issues
    /// `i+1, i+1+n, ...`, so IDs are unique across shards without sharing state.
    pub(super) next_id: u64,
    pub(super) id_step: u64,
    pub(super) drain: Option<Drain>,
    /// Round-robin position in `drain.alternates`.
    pub(super) next_alternate: usize,
    pub(super) policy: PeerPolicy,
    pub(super) creds: Arc<dyn CredentialStore>,
    pub(super) nonces: Arc<NonceKey>,
    pub(super) quota: Arc<QuotaTracker>,
    pub(super) live: Arc<LiveRelayPorts>,
    pub(super) binder: B,
    pub(super) table: Table,
    /// Tokens this shard issued, with their expiry: this shard discards them when
    /// they run out unredeemed (the table itself is in [`Shared`]).
    pub(super) issued_tokens: Vec<([u8; 8], Instant)>,
    pub(super) reservations: Arc<Reservations>,
    pub(super) source_limits: Arc<SourceLimiter>,
    pub(super) cluster: Arc<ClusterView>,
    /// `Instant` and unix seconds at one moment, so that wall-clock seconds can be
    /// derived from the injected `now`.
    pub(super) wall_base: (Instant, u64),
    /// The byte budgets' current period, cached so that a relayed packet costs
    /// one comparison of `now`: (period length in seconds it was computed for,
    /// period number, the instant the next one starts). A length of 0 means
    /// not computed yet.
    pub(super) budget_period: (u64, u64, Instant),
    pub(super) stats: Stats,
    pub(super) events: Vec<Event>,
    /// Where the core's randomness comes from (reservation tokens, the
    /// transaction IDs of Data indications): seeded in [`Server::new`], so that
    /// a run is reproducible from its inputs.
    pub(super) rng: StdRng,
    pub(super) tcp: Arc<TcpConnections>,
    /// RFC 6062 Connects whose connection attempt the driver has not reported.
    pub(super) connecting: Vec<Connecting>,
    /// Whether the driver runs the kernel fast path (`Server::set_offload`).
    pub(super) offload: bool,
    /// Fast-path changes for the driver to apply (`turn::offload`).
    pub(super) offload_changes: Vec<super::offload::OffloadChange>,
}

impl<B: RelayBinder> Server<B> {
    /// A core for one shard. `shared` is common to all shards; `binder` opens this
    /// shard's relay sockets. `now` and `unix_now` anchor wall-clock time. `seed`
    /// seeds the core's random numbers: drivers pass one from the OS RNG (the
    /// reservation tokens it makes must not be guessable), tests a constant.
    pub fn new(
        cfg: Arc<ServerConfig>,
        shared: &Shared,
        binder: B,
        now: Instant,
        unix_now: u64,
        seed: u64,
    ) -> Self {
        let policy = PeerPolicy::new(&cfg.allow_peers, &cfg.deny_peers);
        shared
            .quota
            .set_byte_budget(cfg.max_bytes_per_user, cfg.bytes_period.as_secs());
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
            source_limits: shared.source_limits.clone(),
            cluster: shared.cluster.clone(),
            wall_base: (now, unix_now),
            budget_period: (0, 0, now),
            stats: Stats::default(),
            events: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            tcp: shared.tcp.clone(),
            connecting: Vec::new(),
            offload: false,
            offload_changes: Vec::new(),
        }
    }

    /// Makes this core issue allocation IDs `index+1, index+1+count, ...`:
    /// unique across `count` shards.
    pub fn set_id_space(&mut self, index: usize, count: usize) {
        self.next_id = index as u64 + 1;
        self.id_step = count.max(1) as u64;
    }

    /// Re-anchors wall-clock time (call now and then so that the derived unix time
    /// follows the system clock).
    pub fn set_wall_clock(&mut self, now: Instant, unix_now: u64) {
        self.wall_base = (now, unix_now);
        self.budget_period.0 = 0;
    }

    pub(super) fn unix(&self, now: Instant) -> u64 {
        self.wall_base.1 + now.saturating_duration_since(self.wall_base.0).as_secs()
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

    pub(super) fn emit(&mut self, e: Event) {
        if self.events.len() < MAX_QUEUED_EVENTS {
            self.events.push(e);
        }
    }

    /// Handles one datagram (UDP) or one framed message (stream) from a client.
    /// A reply, if any, is written to `out` (which is cleared first). Data
    /// longer than `max_message_size` is dropped unparsed (the stream driver
    /// skips such frames before buffering them whole, see `net::shard::stream`).
    pub fn handle_client(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        data: &[u8],
        out: &mut BytesMut,
    ) -> Output {
        // Before any parsing: nothing a client needs to send is this long, and
        // what is never parsed can be neither answered nor amplified.
        if data.len() > self.cfg.max_message_size {
            return self.drop_packet(DropReason::Oversized);
        }
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
                // A TURN request without an integrity attribute can only get an
                // unauthenticated error (401, or 400): its budget is checked
                // before the answer is built. Any other unsigned error is
                // checked once built (below).
                let unsigned = method != Method::Binding
                    && !msg.has_integrity()
                    && !msg.has_integrity_sha256();
                if unsigned && !self.may_answer_unauthenticated(now, tuple) {
                    return self.drop_packet(DropReason::UnauthenticatedRateLimit);
                }
                let o = if method == Method::Binding {
                    self.handle_binding(now, &msg, tuple, data.len(), out)
                } else {
                    self.handle_turn_request(now, tuple, &msg, out)
                };
                if o == Output::Reply
                    && !unsigned
                    && is_unsigned_error(out)
                    && !self.may_answer_unauthenticated(now, tuple)
                {
                    out.clear();
                    return self.drop_packet(DropReason::UnauthenticatedRateLimit);
                }
                if matches!(
                    o,
                    Output::Reply | Output::ReplyFrom { .. } | Output::ConnectionBound { .. }
                ) {
                    self.count_response(method, out);
                }
                o
            }
            // RFC 8489 §6.3.2: an indication with an unknown comprehension-required
            // attribute is discarded (there is no 420 to answer with).
            (Class::Indication, _) if !msg.unknown_required().is_empty() => {
                self.drop_packet(DropReason::UnknownAttribute)
            }
            (Class::Indication, Method::Send) => self.handle_send(now, tuple, &msg, data),
            // Binding indications are keep-alives (RFC 8489 §6.3.2): no answer.
            (Class::Indication, Method::Binding) => Output::None,
            _ => self.drop_packet(DropReason::Unexpected),
        }
    }

    /// Whether an error answer to an unauthenticated request from `tuple`'s
    /// source may be sent now: takes one from the source's budget (see
    /// [`SourceLimiter`]), under the configured rate.
    pub(super) fn may_answer_unauthenticated(&self, now: Instant, tuple: FiveTuple) -> bool {
        self.source_limits
            .allow(now, tuple.client.ip(), self.cfg.unauthenticated_rate)
    }

    pub(super) fn handle_turn_request(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'_>,
        out: &mut BytesMut,
    ) -> Output {
        let method = msg.method();
        let rfc6062 =
            self.cfg.tcp_allocations && matches!(method, Method::Connect | Method::ConnectionBind);
        if !rfc6062
            && !matches!(
                method,
                Method::Allocate | Method::Refresh | Method::CreatePermission | Method::ChannelBind
            )
        {
            return self.error(out, msg, 400, None);
        }
        // A STUN-only listener implements Binding alone: to it a TURN method is
        // as unknown as any other, so 400, before authentication (no user is
        // looked up, no nonce issued). coturn's --stun-only ignores these
        // instead; an answer lets a misconfigured client fail at once rather
        // than after its retransmissions, and as an unsigned error it is under
        // the per-source limit like every other.
        if self.cfg.is_stun_only(&tuple) {
            return self.error(out, msg, 400, None);
        }
        if method == Method::Allocate && !msg.has_integrity() && !msg.has_integrity_sha256() {
            if let Some(o) = self.redirect_unauthenticated(tuple, msg, out) {
                return o;
            }
        }
        let auth_tuple = if rfc6062 && method == Method::ConnectionBind {
            self.connection_bind_auth_tuple(now, tuple, msg)
        } else {
            tuple
        };
        let auth = match self.authenticate(now, auth_tuple, msg, out) {
            Ok(a) => a,
            Err(o) => return o,
        };
        if !msg.unknown_required().is_empty() {
            return self.unknown_attributes(out, msg, Some(auth.key));
        }
        let req = Request {
            now,
            msg,
            auth: &auth,
            out,
        };
        let existing = self.table.by_tuple(&tuple);
        // RFC 6062 §5.4: ConnectionBind opens a data connection, which holds
        // no allocation.
        if method == Method::ConnectionBind {
            if existing.is_some() {
                return self.reject(req, 400);
            }
            return self.connection_bind(tuple, req);
        }
        if let Some(id) = existing {
            let same_user = self
                .table
                .get(id)
                .is_some_and(|a| *a.username == *auth.username);
            if !same_user {
                return self.reject(req, 441);
            }
        }
        match (method, existing) {
            (Method::Allocate, Some(id)) => self.allocate_again(id, req),
            (Method::Allocate, None) => self.allocate(tuple, req),
            (_, None) => self.reject(req, 437),
            (Method::Refresh, Some(id)) => self.refresh(id, req),
            (Method::CreatePermission, Some(id)) => self.create_permission(id, req),
            (Method::Connect, Some(id)) => self.connect(id, req),
            // RFC 6062 §4: no channels on a TCP allocation.
            (_, Some(id)) if self.is_tcp_allocation(id) => self.reject(req, 400),
            (_, Some(id)) => self.channel_bind(id, req),
        }
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
        let (unix, strict) = (self.unix(now), self.cfg.strict_expiry);
        while let Some(id) = self.table.pop_due(now) {
            let Some(a) = self.table.get_mut(id) else {
                continue;
            };
            if a.expires <= now {
                // Under strict expiry the deadline may be the credential's
                // expiry rather than the lifetime: say which, for the usage
                // record.
                let reason = match a.credential_expiry {
                    Some(e) if strict && e <= unix => CloseReason::CredentialExpired,
                    _ => CloseReason::Expired,
                };
                self.close(now, id, reason);
                continue;
            }
            a.sweep(now);
            self.offload_sync(id, now);
            if let Some(a) = self.table.get(id) {
                let next = a.next_deadline();
                self.table.schedule(id, next);
            }
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
