//! Unit tests of the sans-IO TURN core with a fake clock and a fake relay binder
//! (from `turn::testing`, the kit the fuzz target uses too). This file is the
//! shared harness; each other file tests one concern, named like the code file.
//!
//! Time is a base `Instant` advanced by `Duration`s; no test sleeps or opens a
//! socket. Every error code the core sends is triggered here where RFC 8656 and
//! RFC 8489 ask for it, with exact codes and values asserted.

mod allocate;
mod auth;
mod byte_budget;
mod channel;
mod client_to_peer;
mod expiry;
mod nat_discovery;
mod offload;
mod operations;
mod peer_address;
mod peer_to_client;
mod permission;
mod responses;
mod rng;
mod source_limit;
mod stun_only;
mod tcp_relay;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::auth::{
    rest_password, ChainStore, CredentialStore, Lookup, NonceKey, RestSecrets, StaticUsers,
    UserKeys,
};
use super::live::LiveRelayPorts;
use super::quota::QuotaTracker;
use super::reservations::Reservations;
use super::server::{
    AllocationSummary, AuthFailure, CloseReason, Drain, DropReason, Event, KillFilter, QuotaKind,
    Shared, PEER_HEADROOM, PEER_TAILROOM,
};
use super::source_limit::SourceLimiter;
use super::testing::{Client, FakeBinder, FakeClock, Mac, Resp, Sec};
use super::{
    BindError, FiveTuple, Output, PeerOutput, PortRequest, RelayId, Server, ServerConfig, Transport,
};
use crate::stun::attr::{self, *};
use crate::stun::channel_data::{self, ChannelData};
use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256, userhash};
use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId};

const REALM: &str = "example.org";
const UNIX0: u64 = 1_700_000_000;
/// The seed of the core's RNG.
const SEED: u64 = 1;
const RELAY_V4: &str = "10.0.0.5";
const RELAY_V6: &str = "2600:1f18::5";
const PORTS: RangeInclusive<u16> = 50000..=50009;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------
// Harness: server, fake clock, clients
// ---------------------------------------------------------------------------

fn base_config() -> ServerConfig {
    let mut c = ServerConfig::with_realm(REALM);
    c.relay_ips = vec![ip(RELAY_V4), ip(RELAY_V6)];
    c.relay_ports = PORTS;
    c
}

fn users() -> Arc<dyn CredentialStore> {
    Arc::new(StaticUsers::new(
        &[REALM],
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    ))
}

struct H {
    srv: Server<FakeBinder>,
    clock: FakeClock,
    shared: Shared,
    out: BytesMut,
}

impl H {
    fn new() -> Self {
        Self::with(base_config(), users(), QuotaTracker::new(0, 0))
    }

    fn with_config(cfg: ServerConfig) -> Self {
        Self::with(cfg, users(), QuotaTracker::new(0, 0))
    }

    fn with(cfg: ServerConfig, creds: Arc<dyn CredentialStore>, quota: QuotaTracker) -> Self {
        Self::seeded(cfg, creds, quota, SEED)
    }

    /// The default core with its RNG seeded with `seed`.
    fn with_seed(seed: u64) -> Self {
        Self::seeded(base_config(), users(), QuotaTracker::new(0, 0), seed)
    }

    fn seeded(
        cfg: ServerConfig,
        creds: Arc<dyn CredentialStore>,
        quota: QuotaTracker,
        seed: u64,
    ) -> Self {
        let clock = FakeClock::new(UNIX0);
        let shared = Shared {
            creds,
            nonces: Arc::new(NonceKey::from_bytes([7; 32])),
            quota: Arc::new(quota),
            live: Arc::new(LiveRelayPorts::default()),
            reservations: Arc::new(Reservations::default()),
            source_limits: Arc::new(SourceLimiter::new(0)),
            cluster: Default::default(),
            tcp: Default::default(),
        };
        let binder = FakeBinder::new(cfg.relay_ports.clone());
        let srv = Server::new(Arc::new(cfg), &shared, binder, clock.now, clock.unix0, seed);
        Self {
            srv,
            clock,
            shared,
            out: BytesMut::new(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.clock.advance(d);
    }

    /// Moves the clock to `t0 + d` and runs due timers.
    fn at(&mut self, d: Duration) {
        self.clock.set(d);
        self.srv.handle_timeout(self.clock.now);
    }

    fn unix_now(&self) -> u64 {
        self.clock.unix()
    }

    /// Hands `data` to the core; returns the output and a copy of the reply.
    fn send_raw(&mut self, tuple: FiveTuple, data: &[u8]) -> (Output, Option<Resp>) {
        let o = self
            .srv
            .handle_client(self.clock.now, tuple, data, &mut self.out);
        let reply =
            matches!(o, Output::Reply | Output::ReplyFrom { .. }).then(|| Resp(self.out.to_vec()));
        (o, reply)
    }

    /// Sends a request and expects a reply.
    fn request(&mut self, tuple: FiveTuple, data: &[u8]) -> Resp {
        match self.send_raw(tuple, data) {
            (Output::Reply, Some(r)) => r,
            (o, _) => panic!("expected a reply, got {o:?}"),
        }
    }

    /// An authenticated request from `c`, doing the 401/438 → retry dance. Checks
    /// that the response's MESSAGE-INTEGRITY verifies with the client's key.
    fn call(&mut self, c: &mut Client, method: Method, f: impl Fn(&mut MessageBuilder)) -> Resp {
        self.call_tid(c, method, TransactionId::random(), f)
    }

    fn call_tid(
        &mut self,
        c: &mut Client,
        method: Method,
        tid: TransactionId,
        f: impl Fn(&mut MessageBuilder),
    ) -> Resp {
        c.call(|t, d| self.request(t, d), method, tid, f)
    }

    fn allocate(&mut self, c: &mut Client) -> Resp {
        self.allocate_with(c, |_| {})
    }

    fn allocate_with(&mut self, c: &mut Client, f: impl Fn(&mut MessageBuilder)) -> Resp {
        self.call(c, Method::Allocate, |b| {
            b.add(&RequestedTransport(PROTOCOL_UDP));
            f(b);
        })
    }

    fn create_permission(&mut self, c: &mut Client, peers: &[SocketAddr]) -> Resp {
        self.call(c, Method::CreatePermission, |b| {
            for p in peers {
                b.add(&XorPeerAddress(*p));
            }
        })
    }

    fn channel_bind(&mut self, c: &mut Client, number: u16, peer: SocketAddr) -> Resp {
        self.call(c, Method::ChannelBind, |b| {
            b.add(&ChannelNumber(number));
            b.add(&XorPeerAddress(peer));
        })
    }

    fn refresh(&mut self, c: &mut Client, lifetime: Option<u32>) -> Resp {
        self.call(c, Method::Refresh, |b| {
            if let Some(l) = lifetime {
                b.add(&Lifetime(l));
            }
        })
    }

    /// A datagram from `from` on relay `relay`, laid out with exactly the headroom
    /// and tailroom the core asks for. Returns the output and the bytes to send.
    fn peer_data(
        &mut self,
        relay: RelayId,
        from: SocketAddr,
        payload: &[u8],
    ) -> (PeerOutput, Vec<u8>) {
        let mut buf = vec![0xEE; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        let (start, end) = (PEER_HEADROOM, PEER_HEADROOM + payload.len());
        buf[start..end].copy_from_slice(payload);
        let o = self
            .srv
            .handle_peer(self.clock.now, relay, from, &mut buf, start, end);
        let bytes = match o {
            PeerOutput::ToClient { start, end, .. } => buf[start..end].to_vec(),
            PeerOutput::None => Vec::new(),
        };
        (o, bytes)
    }

    fn drops(&self, why: DropReason) -> u64 {
        self.srv.stats().drops[why as usize]
    }

    /// The relay id the binder gave for a relayed address.
    fn relay_id(&self, addr: SocketAddr) -> RelayId {
        self.srv
            .binder()
            .id_of(addr)
            .unwrap_or_else(|| panic!("no relay socket on {addr}"))
    }

    fn events(&mut self) -> Vec<Event> {
        self.srv.drain_events().collect()
    }
}

/// Test clients on the harness's realm.
impl Client {
    fn on(user: &str, password: &str, tuple: FiveTuple) -> Self {
        Self::new(user, password, REALM, tuple)
    }

    fn udp(user: &str, password: &str, client: &str) -> Self {
        Self::on(user, password, udp(client))
    }

    fn sha256_udp(user: &str, password: &str, client: &str) -> Self {
        Self::sha256(user, password, REALM, udp(client))
    }

    fn alice(client: &str) -> Self {
        Self::udp("alice", "alice-pw", client)
    }
}

fn udp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: sa(client),
        server: sa("10.0.0.1:3478"),
    }
}

fn tcp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Tcp,
        ..udp(client)
    }
}

const PEER_A: &str = "8.8.8.8:4000";
const PEER_B: &str = "1.1.1.1:5000";
const PEER_V6: &str = "[2001:4860:4860::8888]:6000";

/// An allocation for alice on a fresh UDP 5-tuple; returns the client and the
/// relayed address.
fn allocated(h: &mut H, client: &str) -> (Client, SocketAddr) {
    let mut c = Client::alice(client);
    let r = h.allocate(&mut c);
    r.expect_success();
    let relay = r.relayed1();
    (c, relay)
}

/// Alice's allocation from `client` with a one-hour lifetime (for tests that
/// outlive the default's ten minutes), its relayed address asked for nothing else.
fn allocated_for_an_hour(h: &mut H, client: &str) -> Client {
    let mut c = Client::alice(client);
    h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    })
    .expect_success();
    c
}

/// Alice's allocation from 192.0.2.10:1000 by a client that adds FINGERPRINT to
/// its requests; the success response.
fn allocated_with_fingerprints(h: &mut H) -> (Client, Resp) {
    let mut c = Client::alice("192.0.2.10:1000");
    c.fingerprint = true;
    let r = h.allocate(&mut c);
    r.expect_success();
    (c, r)
}

/// Alice's allocation from `client` with a permission for `PEER_A`; its relay
/// socket's ID.
fn permitted(h: &mut H, client: &str) -> (Client, RelayId) {
    let (mut c, relay) = allocated(h, client);
    let rid = h.relay_id(relay);
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    (c, rid)
}

/// A message built by hand, for the tests of unusual or malformed input:
/// `method` and `class` with a random transaction ID, the attributes `attrs` adds.
fn hand_built(method: Method, class: Class, attrs: impl FnOnce(&mut MessageBuilder)) -> BytesMut {
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(&mut buf, method, class, TransactionId::random());
    attrs(&mut b);
    b.finish();
    buf
}

/// Alice's Allocate built by hand (REQUESTED-TRANSPORT UDP, USERNAME, REALM),
/// with what `attrs` adds after them.
fn alice_allocate(attrs: impl FnOnce(&mut MessageBuilder)) -> BytesMut {
    hand_built(Method::Allocate, Class::Request, |b| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        b.add(&Username("alice"));
        b.add(&Realm(REALM));
        attrs(b);
    })
}

/// A Refresh signed by `c` with no attribute of its own (no LIFETIME: the
/// default), built without the 401/438 dance.
fn bare_refresh(c: &Client) -> Vec<u8> {
    c.build(
        Method::Refresh,
        TransactionId::random(),
        &|_: &mut MessageBuilder| {},
    )
}

/// The attribute types listed in a 420's UNKNOWN-ATTRIBUTES.
fn unknown_attributes(r: &Resp) -> Vec<u16> {
    r.expect_error(420);
    r.msg()
        .get::<UnknownAttributes>()
        .unwrap()
        .unwrap()
        .types()
        .collect()
}

fn send_indication(tid: TransactionId, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(&mut buf, Method::Send, Class::Indication, tid);
    b.add(&XorPeerAddress(peer));
    b.add(&Data(payload));
    b.finish();
    buf.to_vec()
}

fn channel_data_msg(number: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    ChannelData {
        channel: number,
        payload,
    }
    .write(&mut out, pad);
    out.to_vec()
}
