//! Unit tests of the sans-IO TURN core with a fake clock and a fake relay binder.
//!
//! Time is a base `Instant` advanced by `Duration`s; no test sleeps or opens a
//! socket. Every error code the core sends is triggered here where RFC 8656 and
//! RFC 8489 ask for it, with exact codes and values asserted.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::auth::{
    rest_password, ChainStore, CredentialStore, Lookup, NonceKey, RestSecrets, StaticUsers,
    UserKeys,
};
use super::live::LiveRelayPorts;
use super::quota::QuotaTracker;
use super::reservations::Reservations;
use super::server::{
    AuthFailure, CloseReason, Drain, DropReason, Event, KillFilter, QuotaKind, Shared,
    PEER_HEADROOM, PEER_TAILROOM,
};
use super::{
    BindError, Bound, FiveTuple, Output, PeerOutput, PortRequest, RelayBinder, RelayId, Server,
    ServerConfig, Transport,
};
use crate::stun::attr::{self, *};
use crate::stun::channel_data::{self, ChannelData};
use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256, userhash};
use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId};

const REALM: &str = "example.org";
const UNIX0: u64 = 1_700_000_000;
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
// Fake binder
// ---------------------------------------------------------------------------

/// Hands out relay sockets from a port range, lowest free port first, and records
/// what it was asked and what was released.
#[derive(Debug)]
struct FakeBinder {
    range: RangeInclusive<u16>,
    next_id: u32,
    /// Open sockets.
    open: Vec<(RelayId, SocketAddr)>,
    released: Vec<RelayId>,
    fail_v4: Option<BindError>,
    fail_v6: Option<BindError>,
    /// (ip, port request, dont_fragment) of every bind call.
    calls: Vec<(IpAddr, PortRequest, bool)>,
    /// Reserved sockets waiting to be adopted.
    parked: Vec<(RelayId, SocketAddr)>,
}

impl FakeBinder {
    fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            range,
            next_id: 1,
            open: Vec::new(),
            released: Vec::new(),
            fail_v4: None,
            fail_v6: None,
            calls: Vec::new(),
            parked: Vec::new(),
        }
    }

    fn used(&self, ip: IpAddr, port: u16) -> bool {
        self.open
            .iter()
            .any(|(_, a)| a.ip() == ip && a.port() == port)
    }

    fn open_one(&mut self, addr: SocketAddr) -> RelayId {
        let id = RelayId(self.next_id);
        self.next_id += 1;
        self.open.push((id, addr));
        id
    }

    fn addr_of(&self, id: RelayId) -> Option<SocketAddr> {
        self.open.iter().find(|(i, _)| *i == id).map(|(_, a)| *a)
    }
}

impl RelayBinder for FakeBinder {
    fn bind(&mut self, ip: IpAddr, port: PortRequest, df: bool) -> Result<Bound, BindError> {
        self.calls.push((ip, port, df));
        let fail = if ip.is_ipv4() {
            self.fail_v4
        } else {
            self.fail_v6
        };
        if let Some(e) = fail {
            return Err(e);
        }
        let pick = self.range.clone().find(|&p| match port {
            PortRequest::Any => !self.used(ip, p),
            PortRequest::Even => p % 2 == 0 && !self.used(ip, p),
            PortRequest::EvenPair => {
                p % 2 == 0 && p < *self.range.end() && !self.used(ip, p) && !self.used(ip, p + 1)
            }
        });
        let p = pick.ok_or(BindError::Exhausted)?;
        let addr = SocketAddr::new(ip, p);
        let id = self.open_one(addr);
        // The reserved socket is parked: listed in `open` (it holds its port) but
        // not relaying until adopted.
        let reserved = (port == PortRequest::EvenPair).then(|| {
            let raddr = SocketAddr::new(ip, p + 1);
            let rid = self.open_one(raddr);
            self.parked.push((rid, raddr));
            raddr
        });
        Ok(Bound { id, addr, reserved })
    }

    fn adopt(&mut self, addr: SocketAddr) -> Result<Bound, BindError> {
        let i = self
            .parked
            .iter()
            .position(|(_, a)| *a == addr)
            .ok_or(BindError::Exhausted)?;
        let (id, addr) = self.parked.remove(i);
        Ok(Bound {
            id,
            addr,
            reserved: None,
        })
    }

    fn discard(&mut self, addr: SocketAddr) {
        let i = self
            .parked
            .iter()
            .position(|(_, a)| *a == addr)
            .expect("discarded an address that is not parked");
        let (id, _) = self.parked.remove(i);
        self.release(id);
    }

    fn release(&mut self, id: RelayId) {
        let before = self.open.len();
        self.open.retain(|(i, _)| *i != id);
        assert_eq!(before, self.open.len() + 1, "released unknown {id:?}");
        self.released.push(id);
    }
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
    t0: Instant,
    now: Instant,
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
        let t0 = Instant::now();
        let shared = Shared {
            creds,
            nonces: Arc::new(NonceKey::from_bytes([7; 32])),
            quota: Arc::new(quota),
            live: Arc::new(LiveRelayPorts::default()),
            reservations: Arc::new(Reservations::default()),
        };
        let binder = FakeBinder::new(cfg.relay_ports.clone());
        let srv = Server::new(Arc::new(cfg), &shared, binder, t0, UNIX0);
        Self {
            srv,
            t0,
            now: t0,
            shared,
            out: BytesMut::new(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Moves the clock to `t0 + d` and runs due timers.
    fn at(&mut self, d: Duration) {
        assert!(self.t0 + d >= self.now, "the clock only moves forward");
        self.now = self.t0 + d;
        self.srv.handle_timeout(self.now);
    }

    fn unix_now(&self) -> u64 {
        UNIX0 + (self.now - self.t0).as_secs()
    }

    /// Hands `data` to the core; returns the output and a copy of the reply.
    fn send_raw(&mut self, tuple: FiveTuple, data: &[u8]) -> (Output, Option<Resp>) {
        let o = self.srv.handle_client(self.now, tuple, data, &mut self.out);
        let reply = (o == Output::Reply).then(|| Resp(self.out.to_vec()));
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
        if c.nonce.is_none() {
            let r = self.request(c.tuple, &c.unauthenticated(method, &f));
            assert_eq!(r.code(), Some(401), "first request must be challenged");
            c.learn_nonce(&r);
        }
        for _ in 0..2 {
            let r = self.request(c.tuple, &c.build(method, tid, &f));
            assert_eq!(r.msg().transaction_id(), tid);
            if r.code() == Some(438) {
                c.learn_nonce(&r);
                continue;
            }
            c.check_response(&r);
            return r;
        }
        panic!("438 twice in a row");
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
            .handle_peer(self.now, relay, from, &mut buf, start, end);
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
            .open
            .iter()
            .find(|(_, a)| *a == addr)
            .map(|(i, _)| *i)
            .unwrap_or_else(|| panic!("no relay socket on {addr}"))
    }

    fn events(&mut self) -> Vec<Event> {
        self.srv.drain_events().collect()
    }
}

struct Client {
    tuple: FiveTuple,
    username: String,
    key: [u8; 16],
    nonce: Option<Vec<u8>>,
    realm: String,
    fingerprint: bool,
    /// RFC 8489 §9.2 security features; the default is a classic MD5 client.
    sec: Sec,
}

/// Which integrity attribute(s) a test client signs with.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
enum Mac {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    #[default]
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
    /// MESSAGE-INTEGRITY with `Sec::sha1_key` (or the signing key), then
    /// MESSAGE-INTEGRITY-SHA256 with the signing key.
    Both,
}

/// What a test client sends for the RFC 8489 security features. Every field can
/// be set to something a well-behaved client would not send.
#[derive(Clone, Default)]
struct Sec {
    /// PASSWORD-ALGORITHMS as the last challenge carried it.
    offered: Option<Vec<u8>>,
    /// Echo `offered` (or `algorithms_override`) as PASSWORD-ALGORITHMS.
    send_algorithms: bool,
    /// Send this PASSWORD-ALGORITHMS value instead of the offered one.
    algorithms_override: Option<Vec<u8>>,
    /// PASSWORD-ALGORITHM (algorithm number, parameters), raw.
    algorithm: Option<(u16, Vec<u8>)>,
    /// Sign with this key instead of the MD5 key (e.g. the SHA-256 key).
    key: Option<Vec<u8>>,
    /// With `Mac::Both`: the MESSAGE-INTEGRITY key, when it differs.
    sha1_key: Option<Vec<u8>>,
    mac: Mac,
    /// Send USERHASH (this value) instead of USERNAME.
    userhash: Option<Vec<u8>>,
    /// With `userhash`: send USERNAME as well.
    also_username: bool,
}

impl Client {
    fn new(user: &str, password: &str, client: &str) -> Self {
        Self::on(user, password, udp(client))
    }

    fn on(user: &str, password: &str, tuple: FiveTuple) -> Self {
        Self {
            tuple,
            username: user.to_owned(),
            key: long_term_key_md5(user, REALM, password),
            nonce: None,
            realm: REALM.to_owned(),
            fingerprint: false,
            sec: Sec::default(),
        }
    }

    /// A client that negotiates SHA-256 as RFC 8489 §9.2.3 describes: it echoes
    /// PASSWORD-ALGORITHMS, sends PASSWORD-ALGORITHM SHA-256 and signs with
    /// MESSAGE-INTEGRITY-SHA256 under the SHA-256 key.
    fn sha256(user: &str, password: &str, client: &str) -> Self {
        let mut c = Self::new(user, password, client);
        c.sec.send_algorithms = true;
        c.sec.algorithm = Some((ALGORITHM_SHA256, Vec::new()));
        c.sec.key = Some(long_term_key_sha256(user, REALM, password).to_vec());
        c.sec.mac = Mac::Sha256;
        c
    }

    /// The key responses must verify with.
    fn signing_key(&self) -> Vec<u8> {
        self.sec.key.clone().unwrap_or_else(|| self.key.to_vec())
    }

    /// Checks a response's integrity the way this client signs: the same kind of
    /// attribute, under the same key (RFC 8489 §9.2.5).
    fn check_response(&self, r: &Resp) {
        match self.sec.mac {
            Mac::Sha1 if self.sec.key.is_none() => r.check_integrity(&self.key),
            Mac::Sha1 => r.check_integrity_with(&self.signing_key(), false),
            Mac::Sha256 | Mac::Both => r.check_integrity_with(&self.signing_key(), true),
        }
    }

    fn alice(client: &str) -> Self {
        Self::new("alice", "alice-pw", client)
    }

    fn learn_nonce(&mut self, r: &Resp) {
        let m = r.msg();
        let Some(Ok(Nonce(n))) = m.get::<Nonce>() else {
            panic!("challenge without NONCE");
        };
        let Some(Ok(Realm(realm))) = m.get::<Realm>() else {
            panic!("challenge without REALM");
        };
        assert_eq!(realm, REALM);
        self.nonce = Some(n.to_vec());
        self.sec.offered = m
            .get::<PasswordAlgorithms>()
            .map(|a| a.expect("well-formed PASSWORD-ALGORITHMS").0.to_vec());
    }

    fn unauthenticated(&self, method: Method, f: &impl Fn(&mut MessageBuilder)) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let mut b = MessageBuilder::new(&mut buf, method, Class::Request, TransactionId::random());
        f(&mut b);
        if self.fingerprint {
            b.add_fingerprint();
        }
        b.finish();
        buf.to_vec()
    }

    fn build(
        &self,
        method: Method,
        tid: TransactionId,
        f: &impl Fn(&mut MessageBuilder),
    ) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let mut b = MessageBuilder::new(&mut buf, method, Class::Request, tid);
        f(&mut b);
        match &self.sec.userhash {
            Some(h) => {
                b.add_raw(attr::USERHASH, h);
                if self.sec.also_username {
                    b.add(&Username(&self.username));
                }
            }
            None => {
                b.add(&Username(&self.username));
            }
        }
        b.add(&Realm(&self.realm));
        b.add(&Nonce(self.nonce.as_deref().expect("nonce")));
        if let Some((alg, params)) = &self.sec.algorithm {
            b.add(&PasswordAlgorithm {
                algorithm: *alg,
                params,
            });
        }
        if self.sec.send_algorithms {
            let list = self
                .sec
                .algorithms_override
                .as_deref()
                .or(self.sec.offered.as_deref())
                .expect("a PASSWORD-ALGORITHMS to echo");
            b.add_raw(attr::PASSWORD_ALGORITHMS, list);
        }
        let key = self.signing_key();
        match self.sec.mac {
            Mac::Sha1 => {
                b.add_message_integrity(&key);
            }
            Mac::Sha256 => {
                b.add_message_integrity_sha256(&key);
            }
            Mac::Both => {
                b.add_message_integrity(self.sec.sha1_key.as_deref().unwrap_or(&key));
                b.add_message_integrity_sha256(&key);
            }
        }
        if self.fingerprint {
            b.add_fingerprint();
        }
        b.finish();
        buf.to_vec()
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

/// A response, owned.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Resp(Vec<u8>);

impl Resp {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("the core sent a malformed message")
    }

    fn class(&self) -> Class {
        self.msg().class()
    }

    fn code(&self) -> Option<u16> {
        self.msg().get::<ErrorCode>().map(|e| e.unwrap().code)
    }

    /// Asserts an error response with exactly this code.
    fn expect_error(&self, code: u16) {
        assert_eq!(self.class(), Class::Error, "expected error {code}");
        assert_eq!(self.code(), Some(code));
    }

    fn expect_success(&self) {
        assert_eq!(
            self.class(),
            Class::Success,
            "expected success, got error {:?}",
            self.code()
        );
        assert_eq!(self.code(), None);
    }

    /// MESSAGE-INTEGRITY, when present, must verify with `key`; success responses
    /// must carry it.
    fn check_integrity(&self, key: &[u8; 16]) {
        let m = self.msg();
        if m.class() == Class::Success {
            assert!(
                m.has_integrity(),
                "success response without MESSAGE-INTEGRITY"
            );
        }
        if m.has_integrity() {
            m.verify_integrity(key).expect("response MESSAGE-INTEGRITY");
            let mut wrong = *key;
            wrong[0] ^= 1;
            assert!(m.verify_integrity(&wrong).is_err());
        }
    }

    /// Integrity under `key` in exactly one attribute: MESSAGE-INTEGRITY-SHA256 when
    /// `sha256`, else MESSAGE-INTEGRITY. Success responses must carry it.
    fn check_integrity_with(&self, key: &[u8], sha256: bool) {
        let m = self.msg();
        let (has, other) = if sha256 {
            (m.has_integrity_sha256(), m.has_integrity())
        } else {
            (m.has_integrity(), m.has_integrity_sha256())
        };
        assert!(!other, "response carries the other kind of integrity");
        if m.class() == Class::Success {
            assert!(has, "success response without the request's integrity kind");
        }
        if has {
            let verify = |k: &[u8]| {
                if sha256 {
                    m.verify_integrity_sha256(k)
                } else {
                    m.verify_integrity(k)
                }
            };
            verify(key).expect("response integrity");
            let mut wrong = key.to_vec();
            wrong[0] ^= 1;
            assert!(verify(&wrong).is_err());
        }
    }

    fn relayed(&self) -> Vec<SocketAddr> {
        self.msg()
            .attributes()
            .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
            .map(|a| {
                XorRelayedAddress::decode(a.value, &self.msg().transaction_id())
                    .unwrap()
                    .0
            })
            .collect()
    }

    fn relayed1(&self) -> SocketAddr {
        let r = self.relayed();
        assert_eq!(r.len(), 1, "expected one XOR-RELAYED-ADDRESS");
        r[0]
    }

    fn lifetime(&self) -> u32 {
        self.msg().get::<Lifetime>().expect("LIFETIME").unwrap().0
    }

    fn attr_types(&self) -> Vec<u16> {
        self.msg().attributes().map(|a| a.typ).collect()
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

fn send_indication(tid: TransactionId, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(&mut buf, Method::Send, Class::Indication, tid);
    b.add(&XorPeerAddress(peer));
    b.add(&Data(payload));
    b.finish();
    buf.to_vec()
}

// ---------------------------------------------------------------------------
// 400 Bad Request
// ---------------------------------------------------------------------------

#[test]
fn allocate_without_requested_transport_is_400() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.call(&mut c, Method::Allocate, |b| {
        b.add(&Lifetime(600));
    });
    r.expect_error(400);
    assert_eq!(h.srv.allocations(), 0);
    assert!(h.srv.binder().calls.is_empty());
}

#[test]
fn channel_bind_number_out_of_range_is_400() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    for n in [0x3FFF, 0x8000, 0x0000, 0xFFFF] {
        h.channel_bind(&mut c, n, sa(PEER_A)).expect_error(400);
    }
    // The bounds themselves are valid: the RFC 5766 range, which RFC 5766 clients
    // such as coturn's own tools still use (see `stun::channel_data::CHANNEL_MAX`).
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    h.channel_bind(&mut c, 0x7FFF, sa(PEER_B)).expect_success();
}

#[test]
fn channel_bind_conflicts_are_400() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    // The number is bound to another peer.
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_error(400);
    // Same IP, other port is another transport address: still another peer.
    h.channel_bind(&mut c, 0x4000, sa("8.8.8.8:4001"))
        .expect_error(400);
    // The peer is bound to another number.
    h.channel_bind(&mut c, 0x4001, sa(PEER_A)).expect_error(400);
    // Rebinding the same pair refreshes it.
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
}

#[test]
fn reservation_token_with_even_port_is_400() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&ReservationToken(&[1, 2, 3, 4, 5, 6, 7, 8]));
        b.add(&EvenPort { reserve: false });
    });
    r.expect_error(400);
    assert_eq!(h.shared.quota.total(), 0);
}

#[test]
fn requested_and_additional_family_together_is_400() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V4));
        b.add(&AdditionalAddressFamily(Family::V6));
    });
    r.expect_error(400);
    assert_eq!(h.srv.allocations(), 0);
    // ADDITIONAL-ADDRESS-FAMILY IPv4 is meaningless: 400 as well.
    h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V4));
    })
    .expect_error(400);
}

#[test]
fn integrity_without_nonce_is_400_without_integrity() {
    let mut h = H::new();
    let c = Client::alice("192.0.2.10:1000");
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        Method::Allocate,
        Class::Request,
        TransactionId::random(),
    );
    b.add(&RequestedTransport(PROTOCOL_UDP));
    b.add(&Username("alice"));
    b.add(&Realm(REALM));
    b.add_message_integrity(&c.key);
    b.finish();
    let r = h.request(c.tuple, &buf);
    r.expect_error(400);
    let m = r.msg();
    assert!(!m.has_integrity());
    assert!(!m.has(attr::NONCE) && !m.has(attr::REALM) && !m.has(attr::USERNAME));
}

#[test]
fn unknown_method_request_is_400() {
    let mut h = H::new();
    let tuple = udp("192.0.2.10:1000");
    for method in [Method::Other(0x0FF), Method::Connect] {
        let mut buf = BytesMut::new();
        MessageBuilder::new(&mut buf, method, Class::Request, TransactionId::random()).finish();
        let r = h.request(tuple, &buf);
        r.expect_error(400);
        assert_eq!(r.msg().method(), method);
    }
}

// ---------------------------------------------------------------------------
// 401 Unauthenticated
// ---------------------------------------------------------------------------

fn challenge_attrs(r: &Resp) -> Vec<u16> {
    r.expect_error(401);
    let m = r.msg();
    assert!(!m.has_integrity());
    assert_eq!(m.get::<Realm>().unwrap().unwrap().0, REALM);
    assert!(m.get::<Nonce>().unwrap().is_ok());
    r.attr_types()
}

#[test]
fn request_without_integrity_is_401_with_realm_and_valid_nonce() {
    let mut h = H::new();
    let c = Client::alice("192.0.2.10:1000");
    let r = h.request(
        c.tuple,
        &c.unauthenticated(Method::Allocate, &|b: &mut MessageBuilder| {
            b.add(&RequestedTransport(PROTOCOL_UDP));
        }),
    );
    challenge_attrs(&r);
    let nonce = r.msg().get::<Nonce>().unwrap().unwrap().0.to_vec();
    assert_eq!(
        h.shared
            .nonces
            .verify(&nonce, h.unix_now(), c.tuple.client, 600),
        super::auth::NonceCheck::Valid
    );
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_401() {
    let mut h = H::new();
    let mut wrong = Client::new("alice", "not-alice-pw", "192.0.2.10:1000");
    let mut unknown = Client::new("mallory", "whatever", "192.0.2.11:1000");
    let a = h.allocate(&mut wrong);
    let b = h.allocate(&mut unknown);
    assert_eq!(challenge_attrs(&a), challenge_attrs(&b));
    // The NONCE in each is a valid one for that client.
    for (r, c) in [(&a, &wrong), (&b, &unknown)] {
        let n = r.msg().get::<Nonce>().unwrap().unwrap().0.to_vec();
        assert_eq!(
            h.shared
                .nonces
                .verify(&n, h.unix_now(), c.tuple.client, 600),
            super::auth::NonceCheck::Valid
        );
    }
    // A wrong realm is the same 401 too.
    let mut other_realm = Client::alice("192.0.2.12:1000");
    other_realm.realm = "evil.example".into();
    h.allocate(&mut other_realm).expect_error(401);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
    // Alike on the wire, told apart in the counters: one wrong password; the
    // unknown user and the wrong realm are unknown users.
    let f = h.srv.stats().auth_failures;
    assert_eq!(f[AuthFailure::BadIntegrity as usize], 1, "{f:?}");
    assert_eq!(f[AuthFailure::UnknownUser as usize], 2, "{f:?}");
    assert_eq!(f[AuthFailure::ExpiredCredential as usize], 0, "{f:?}");
    // Each Allocate: the 401 challenge, then the 401 for the bad credential.
    assert_eq!(h.srv.stats().requests[1][3], 6, "allocate/401");
}

fn rest_store(secrets: &[&str]) -> Arc<dyn CredentialStore> {
    Arc::new(ChainStore::new(vec![Box::new(RestSecrets::new(secrets))]))
}

fn rest_client(secret: &str, expiry: u64, client: &str) -> Client {
    let user = format!("{expiry}:alice");
    let pw = rest_password(secret.as_bytes(), &user);
    Client::new(&user, &pw, client)
}

#[test]
fn expired_rest_credential_is_401() {
    let mut h = H::with(
        base_config(),
        rest_store(&["s3cret"]),
        QuotaTracker::new(0, 0),
    );
    // Expiry equal to now is expired already.
    let mut c = rest_client("s3cret", UNIX0, "192.0.2.10:1000");
    h.allocate(&mut c).expect_error(401);
    let mut c = rest_client("s3cret", UNIX0 - 1, "192.0.2.10:1000");
    h.allocate(&mut c).expect_error(401);
    // Still valid: allocates, and a Refresh after the expiry is refused.
    let mut c = rest_client("s3cret", UNIX0 + 1000, "192.0.2.10:1001");
    h.allocate(&mut c).expect_success();
    h.advance(secs(1000));
    h.refresh(&mut c, Some(600)).expect_error(401);
    let f = h.srv.stats().auth_failures;
    assert_eq!(f[AuthFailure::ExpiredCredential as usize], 3, "{f:?}");
    assert_eq!(f[AuthFailure::BadIntegrity as usize], 0, "{f:?}");
}

#[test]
fn rest_credentials_from_two_rotated_secrets_both_authenticate() {
    let mut h = H::with(
        base_config(),
        rest_store(&["new-secret", "old-secret"]),
        QuotaTracker::new(0, 0),
    );
    let mut a = rest_client("new-secret", UNIX0 + 86400, "192.0.2.10:1000");
    let mut b = rest_client("old-secret", UNIX0 + 86400, "192.0.2.11:1000");
    let mut c = rest_client("retired", UNIX0 + 86400, "192.0.2.12:1000");
    h.allocate(&mut a).expect_success();
    h.allocate(&mut b).expect_success();
    h.allocate(&mut c).expect_error(401);
    assert_eq!(h.srv.allocations(), 2);
}

#[test]
fn rest_credential_expiry_clamps_the_lifetime() {
    let mut h = H::with(
        base_config(),
        rest_store(&["s3cret"]),
        QuotaTracker::new(0, 0),
    );
    let mut c = rest_client("s3cret", UNIX0 + 100, "192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    });
    r.expect_success();
    assert_eq!(r.lifetime(), 100);
    h.at(secs(99));
    assert_eq!(h.srv.allocations(), 1);
    h.at(secs(100));
    assert_eq!(h.srv.allocations(), 0);
}

// ---------------------------------------------------------------------------
// 403 Forbidden
// ---------------------------------------------------------------------------

#[test]
fn create_permission_to_special_addresses_is_403() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V6));
    });
    r.expect_success();
    assert_eq!(r.relayed().len(), 2);
    for peer in [
        "127.0.0.1:80",
        "[::ffff:127.0.0.1]:80",
        "0.0.0.0:80",
        "[::1]:80",
        "169.254.169.254:80",
        "10.0.0.1:80",
    ] {
        let r = h.create_permission(&mut c, &[sa(peer)]);
        assert_eq!(r.code(), Some(403), "peer {peer}");
        // The whole request fails: a good address alongside installs nothing.
        let r = h.create_permission(&mut c, &[sa(PEER_A), sa(peer)]);
        assert_eq!(r.code(), Some(403), "peer {peer} with a good one");
        h.channel_bind(&mut c, 0x4000, sa(peer)).expect_error(403);
    }
    let relay = r.relayed()[0];
    let rid = h.relay_id(relay);
    assert_eq!(h.peer_data(rid, sa(PEER_A), b"x").0, PeerOutput::None);
    h.create_permission(&mut c, &[sa(PEER_A), sa(PEER_V6)])
        .expect_success();
}

#[test]
fn send_to_denied_peer_is_dropped() {
    let mut h = H::new();
    let (c, _) = allocated(&mut h, "192.0.2.10:1000");
    let (o, _) = h.send_raw(
        c.tuple,
        &send_indication(TransactionId::random(), sa("127.0.0.1:22"), b"x"),
    );
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::DeniedPeer), 1);
}

// ---------------------------------------------------------------------------
// 420 Unknown Attribute
// ---------------------------------------------------------------------------

#[test]
fn unknown_required_attribute_in_allocate_is_420() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add_raw(0x0031, &[0; 4]);
        b.add_raw(0x8031, &[0; 4]); // comprehension-optional: not listed
    });
    r.expect_error(420);
    assert!(r.msg().has_integrity());
    let unknown: Vec<u16> = r
        .msg()
        .get::<UnknownAttributes>()
        .unwrap()
        .unwrap()
        .types()
        .collect();
    assert_eq!(unknown, vec![0x0031]);
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn unknown_required_attribute_in_binding_is_420() {
    let mut h = H::new();
    let tuple = udp("192.0.2.10:1000");
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        Method::Binding,
        Class::Request,
        TransactionId::random(),
    );
    b.add_raw(0x7777, &[1, 2]);
    b.add_raw(0x0031, &[]);
    b.finish();
    let r = h.request(tuple, &buf);
    r.expect_error(420);
    let unknown: Vec<u16> = r
        .msg()
        .get::<UnknownAttributes>()
        .unwrap()
        .unwrap()
        .types()
        .collect();
    assert_eq!(unknown, vec![0x7777, 0x0031]);
    assert!(!r.msg().has(attr::XOR_MAPPED_ADDRESS));
}

// ---------------------------------------------------------------------------
// 437 Allocation Mismatch
// ---------------------------------------------------------------------------

#[test]
fn requests_without_allocation_are_437() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.refresh(&mut c, Some(600)).expect_error(437);
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_error(437);
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_error(437);
    // Refresh with LIFETIME 0 on nothing is a mismatch too.
    h.refresh(&mut c, Some(0)).expect_error(437);
}

#[test]
fn second_allocate_with_another_transaction_is_437() {
    let mut h = H::new();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    h.allocate(&mut c).expect_error(437);
    assert_eq!(h.srv.allocations(), 1);
    assert_eq!(h.srv.binder().open, vec![(h.relay_id(relay), relay)]);
    assert_eq!(h.shared.quota.total(), 1);
}

#[test]
fn retransmitted_allocate_gets_the_same_response() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let tid = TransactionId::random();
    let attrs = |b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        b.add(&Lifetime(1200));
    };
    let first = h.call_tid(&mut c, Method::Allocate, tid, attrs);
    first.expect_success();
    assert_eq!(first.lifetime(), 1200);
    h.advance(secs(2));
    let again = h.request(c.tuple, &c.build(Method::Allocate, tid, &attrs));
    assert_eq!(again, first, "byte-for-byte the same response");
    assert_eq!(h.srv.allocations(), 1);
    assert_eq!(h.srv.binder().calls.len(), 1);
    assert_eq!(h.srv.stats().allocations_created, 1);
}

// ---------------------------------------------------------------------------
// 438 Stale Nonce
// ---------------------------------------------------------------------------

#[test]
fn nonce_older_than_its_lifetime_is_438() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let attrs = |b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
    };
    let r = h.request(c.tuple, &c.unauthenticated(Method::Allocate, &attrs));
    c.learn_nonce(&r);
    let old = c.nonce.clone();
    h.advance(secs(599));
    // One second short of the lifetime: still good, used on a Refresh (437).
    let r = h.request(
        c.tuple,
        &c.build(
            Method::Refresh,
            TransactionId::random(),
            &|_: &mut MessageBuilder| {},
        ),
    );
    r.expect_error(437);
    h.advance(secs(1));
    let r = h.request(
        c.tuple,
        &c.build(Method::Allocate, TransactionId::random(), &attrs),
    );
    r.expect_error(438);
    assert!(!r.msg().has_integrity());
    assert_eq!(r.msg().get::<Realm>().unwrap().unwrap().0, REALM);
    c.learn_nonce(&r);
    assert_ne!(c.nonce, old);
    let r = h.request(
        c.tuple,
        &c.build(Method::Allocate, TransactionId::random(), &attrs),
    );
    r.expect_success();
    r.check_integrity(&c.key);
    assert_eq!(
        h.srv.stats().auth_failures[AuthFailure::StaleNonce as usize],
        1
    );
    assert_eq!(h.srv.stats().requests[1][7], 1, "allocate/438");
}

#[test]
fn tampered_or_foreign_nonce_is_438() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let attrs = |b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
    };
    let r = h.request(c.tuple, &c.unauthenticated(Method::Allocate, &attrs));
    c.learn_nonce(&r);
    let good = c.nonce.clone().unwrap();
    let mut bad = good.clone();
    bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
    c.nonce = Some(bad);
    h.request(
        c.tuple,
        &c.build(Method::Allocate, TransactionId::random(), &attrs),
    )
    .expect_error(438);
    // A nonce issued to another client address does not verify here either.
    let mut other = Client::alice("192.0.2.99:1000");
    other.nonce = Some(good);
    h.request(
        other.tuple,
        &other.build(Method::Allocate, TransactionId::random(), &attrs),
    )
    .expect_error(438);
    assert_eq!(h.srv.allocations(), 0);
}

// ---------------------------------------------------------------------------
// 440, 442, 443
// ---------------------------------------------------------------------------

#[test]
fn requested_ipv6_when_binder_lacks_ipv6_is_440() {
    let mut h = H::new();
    h.srv.binder_mut().fail_v6 = Some(BindError::FamilyUnavailable);
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V6));
    });
    r.expect_error(440);
    assert_eq!(
        h.srv.binder().calls,
        vec![(ip(RELAY_V6), PortRequest::Any, false)]
    );
    assert_eq!(h.shared.quota.total(), 0);
    assert_eq!(h.srv.allocations(), 0);
    // Without the failure, IPv6 alone is granted.
    h.srv.binder_mut().fail_v6 = None;
    let r = h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V6));
    });
    r.expect_success();
    assert_eq!(r.relayed1().ip(), ip(RELAY_V6));
}

#[test]
fn requested_family_without_relay_address_is_440() {
    let mut cfg = base_config();
    cfg.relay_ips = vec![ip(RELAY_V4)];
    let mut h = H::with_config(cfg);
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V6));
    })
    .expect_error(440);
    assert!(h.srv.binder().calls.is_empty());
}

#[test]
fn bad_family_byte_is_440() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add_raw(attr::REQUESTED_ADDRESS_FAMILY, &[0x03, 0, 0, 0]);
    })
    .expect_error(440);
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn requested_transport_tcp_is_442() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.call(&mut c, Method::Allocate, |b| {
        b.add(&RequestedTransport(PROTOCOL_TCP));
    });
    r.expect_error(442);
    assert!(r.msg().has_integrity());
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn ipv6_peer_on_ipv4_allocation_is_443() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_V6)])
        .expect_error(443);
    h.channel_bind(&mut c, 0x4000, sa(PEER_V6))
        .expect_error(443);
    // A Refresh naming a family the allocation lacks is 443 as well.
    h.call(&mut c, Method::Refresh, |b| {
        b.add(&RequestedAddressFamily(Family::V6));
    })
    .expect_error(443);
}

// ---------------------------------------------------------------------------
// 441, 486, 508
// ---------------------------------------------------------------------------

#[test]
fn other_user_on_existing_allocation_is_441() {
    let mut h = H::new();
    let (c, _) = allocated(&mut h, "192.0.2.10:1000");
    let mut bob = Client::on("bob", "bob-pw", c.tuple);
    let r = h.allocate(&mut bob);
    r.expect_error(441);
    h.refresh(&mut bob, Some(0)).expect_error(441);
    h.create_permission(&mut bob, &[sa(PEER_A)])
        .expect_error(441);
    assert_eq!(h.srv.allocations(), 1);
}

#[test]
fn user_quota_is_486() {
    let mut h = H::with(base_config(), users(), QuotaTracker::new(1, 0));
    let (mut a1, _) = allocated(&mut h, "192.0.2.10:1000");
    let mut a2 = Client::alice("192.0.2.10:1001");
    let r = h.allocate(&mut a2);
    r.expect_error(486);
    assert!(r.msg().has_integrity());
    assert_eq!(
        h.srv.binder().calls.len(),
        1,
        "no relay opened for a refused one"
    );
    // Another user is not affected.
    let mut bob = Client::new("bob", "bob-pw", "192.0.2.10:1002");
    h.allocate(&mut bob).expect_success();
    // Deleting the first frees the quota.
    h.refresh(&mut a1, Some(0)).expect_success();
    h.allocate(&mut a2).expect_success();
    let q = h.srv.stats().quota_rejections;
    assert_eq!(q[QuotaKind::User as usize], 1);
    assert_eq!(q.iter().sum::<u64>(), 1);
}

#[test]
fn total_quota_is_508() {
    let mut h = H::with(base_config(), users(), QuotaTracker::new(0, 1));
    allocated(&mut h, "192.0.2.10:1000");
    let mut bob = Client::new("bob", "bob-pw", "192.0.2.11:1000");
    h.allocate(&mut bob).expect_error(508);
    assert_eq!(h.shared.quota.total(), 1);
    assert_eq!(h.srv.stats().quota_rejections[QuotaKind::Total as usize], 1);
}

#[test]
fn binder_exhausted_is_508_and_releases_quota() {
    let mut h = H::new();
    h.srv.binder_mut().fail_v4 = Some(BindError::Exhausted);
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate(&mut c).expect_error(508);
    assert_eq!(h.shared.quota.total(), 0);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(
        h.srv.stats().quota_rejections[QuotaKind::RelayPorts as usize],
        1
    );
}

#[test]
fn port_range_exhaustion_is_508_and_ports_return_to_the_pool() {
    let mut h = H::new();
    let mut clients = Vec::new();
    for i in 0..10 {
        let (c, relay) = allocated(&mut h, &format!("192.0.2.10:{}", 2000 + i));
        assert_eq!(relay.port(), 50000 + i);
        assert!(h.shared.live.is_live(relay));
        clients.push(c);
    }
    let mut late = Client::alice("192.0.2.10:3000");
    h.allocate(&mut late).expect_error(508);
    h.refresh(&mut clients[3], Some(0)).expect_success();
    assert!(!h.shared.live.is_live(SocketAddr::new(ip(RELAY_V4), 50003)));
    assert_eq!(h.srv.binder().released, vec![RelayId(4)]);
    let r = h.allocate(&mut late);
    r.expect_success();
    assert_eq!(r.relayed1().port(), 50003);
}

#[test]
fn permission_quota_is_508() {
    let mut cfg = base_config();
    cfg.max_permissions_per_allocation = 2;
    let mut h = H::with_config(cfg);
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    // Two new ones in one request exceed the quota: nothing is installed.
    h.create_permission(&mut c, &[sa(PEER_B), sa("9.9.9.9:1")])
        .expect_error(508);
    h.create_permission(&mut c, &[sa(PEER_B)]).expect_success();
    h.create_permission(&mut c, &[sa("9.9.9.9:1")])
        .expect_error(508);
    // Refreshing existing ones (any port) is fine at the quota.
    h.create_permission(&mut c, &[sa("8.8.8.8:1"), sa("1.1.1.1:1")])
        .expect_success();
    // A channel to a new peer IP needs a permission slot too.
    h.channel_bind(&mut c, 0x4000, sa("9.9.9.9:1"))
        .expect_error(508);
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    let q = h.srv.stats().quota_rejections;
    assert_eq!(q[QuotaKind::Permissions as usize], 3, "{q:?}");
    assert_eq!(q[QuotaKind::Channels as usize], 0, "{q:?}");
    assert_eq!(h.srv.stats().requests[3][14], 2, "create_permission/508");
    assert_eq!(h.srv.stats().requests[4][14], 1, "channel_bind/508");
}

#[test]
fn invalid_reservation_token_is_508() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&ReservationToken(&[9; 8]));
    })
    .expect_error(508);
    assert_eq!(h.shared.quota.total(), 0);
    assert_eq!(h.srv.allocations(), 0);
}

// ---------------------------------------------------------------------------
// Lifetimes, expiry, refresh
// ---------------------------------------------------------------------------

#[test]
fn allocation_expires_exactly_at_the_granted_lifetime() {
    let mut h = H::new();
    let (c, relay) = allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relay);
    assert_eq!(
        h.events(),
        vec![Event::AllocationCreated { tuple: c.tuple }]
    );
    assert_eq!(h.srv.poll_timeout(), Some(h.t0 + secs(600)));
    h.at(secs(600) - Duration::from_nanos(1));
    assert_eq!(h.srv.allocations(), 1);
    assert!(h.events().is_empty());
    h.at(secs(600));
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.srv.binder().released, vec![rid]);
    assert!(h.srv.binder().open.is_empty());
    assert!(!h.shared.live.is_live(relay));
    assert_eq!(h.shared.quota.total(), 0);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    match &ev[0] {
        Event::AllocationClosed {
            tuple,
            username,
            relays,
            duration,
            reason,
            ..
        } => {
            assert_eq!(*tuple, c.tuple);
            assert_eq!(&**username, "alice");
            assert_eq!(relays, &vec![relay]);
            assert_eq!(*duration, secs(600));
            assert_eq!(*reason, CloseReason::Expired);
        }
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(h.srv.poll_timeout(), None);
    // Data on the old 5-tuple now finds nothing.
    let (o, _) = h.send_raw(
        c.tuple,
        &send_indication(TransactionId::random(), sa(PEER_A), b"x"),
    );
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::NoAllocation), 1);
}

#[test]
fn lifetime_rules() {
    let mut h = H::new();
    for (i, (requested, granted)) in [
        (None, 600),
        (Some(0), 600),
        (Some(60), 600),
        (Some(1800), 1800),
        (Some(3600), 3600),
        (Some(7200), 3600),
        (Some(u32::MAX), 3600),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Client::alice(&format!("192.0.2.10:{}", 1000 + i));
        let r = h.allocate_with(&mut c, |b| {
            if let Some(l) = requested {
                b.add(&Lifetime(l));
            }
        });
        r.expect_success();
        assert_eq!(r.lifetime(), granted, "requested {requested:?}");
    }
}

#[test]
fn refresh_extends_the_allocation() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.at(secs(300));
    let r = h.refresh(&mut c, Some(1200));
    r.expect_success();
    assert_eq!(r.lifetime(), 1200);
    h.at(secs(600));
    assert_eq!(h.srv.allocations(), 1);
    h.at(secs(1499));
    assert_eq!(h.srv.allocations(), 1);
    h.at(secs(1500));
    assert_eq!(h.srv.allocations(), 0);
    // Refresh without LIFETIME grants the default.
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1001");
    let r = h.refresh(&mut c, None);
    assert_eq!(r.lifetime(), 600);
}

#[test]
fn refresh_that_shortens_the_lifetime_expires_on_time() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    });
    assert_eq!(r.lifetime(), 3600);
    h.at(secs(100));
    assert_eq!(h.refresh(&mut c, Some(600)).lifetime(), 600);
    assert_eq!(h.srv.poll_timeout(), Some(h.t0 + secs(700)));
    h.at(secs(700));
    assert_eq!(h.srv.allocations(), 0, "expired at the refreshed lifetime");
}

#[test]
fn refresh_with_lifetime_zero_deletes() {
    let mut h = H::new();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relay);
    h.events();
    h.advance(secs(10));
    let r = h.refresh(&mut c, Some(0));
    r.expect_success();
    assert_eq!(r.lifetime(), 0);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.srv.binder().released, vec![rid]);
    assert_eq!(h.shared.quota.total(), 0);
    match h.events().as_slice() {
        [Event::AllocationClosed {
            reason: CloseReason::Deleted,
            duration,
            ..
        }] => assert_eq!(*duration, secs(10)),
        e => panic!("unexpected {e:?}"),
    }
    // A retransmission of the delete finds no allocation.
    h.refresh(&mut c, Some(0)).expect_error(437);
}

// ---------------------------------------------------------------------------
// Permissions and channels over time
// ---------------------------------------------------------------------------

#[test]
fn permission_expires_after_permission_lifetime() {
    let mut h = H::new();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relay);
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    // Any port of the permitted IP.
    h.at(secs(299));
    let (o, _) = h.peer_data(rid, sa("8.8.8.8:9999"), b"hello");
    assert!(matches!(o, PeerOutput::ToClient { .. }));
    let (o, _) = h.send_raw(
        c.tuple,
        &send_indication(TransactionId::random(), sa(PEER_A), b"x"),
    );
    assert!(matches!(o, Output::ToPeer { .. }));
    h.at(secs(300));
    let (o, _) = h.peer_data(rid, sa("8.8.8.8:9999"), b"hello");
    assert_eq!(o, PeerOutput::None);
    assert_eq!(h.drops(DropReason::NoPermission), 1);
    let (o, _) = h.send_raw(
        c.tuple,
        &send_indication(TransactionId::random(), sa(PEER_A), b"x"),
    );
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::NoPermission), 2);
    // A new CreatePermission brings it back.
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    assert!(matches!(
        h.peer_data(rid, sa(PEER_A), b"x").0,
        PeerOutput::ToClient { .. }
    ));
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

#[test]
fn channel_expires_and_its_number_cools_down() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    })
    .expect_success();
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    // Keep the permission alive past the channel's lifetime.
    h.at(secs(290));
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    h.at(secs(580));
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    h.at(secs(599));
    let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4000, b"abc", false));
    assert!(matches!(o, Output::ToPeer { .. }));
    h.at(secs(600));
    let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4000, b"abc", false));
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::UnknownChannel), 1);
    // Within the 5-minute cool-down neither the number nor the peer is free.
    h.at(secs(601));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_error(400);
    h.at(secs(899));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_error(400);
    h.channel_bind(&mut c, 0x4001, sa(PEER_A)).expect_error(400);
    // After it, the number may go to another peer.
    h.at(secs(900));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_success();
    h.channel_bind(&mut c, 0x4001, sa(PEER_A)).expect_success();
}

#[test]
fn rebinding_an_expired_channel_to_the_same_peer_in_cool_down_works() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    })
    .expect_success();
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    h.at(secs(700));
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4000, b"abc", false));
    assert!(matches!(o, Output::ToPeer { .. }));
}

// ---------------------------------------------------------------------------
// Relaying
// ---------------------------------------------------------------------------

#[test]
fn send_indication_relays_the_data_range() {
    let mut h = H::new();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relay);
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let payload = b"hello";
    let msg = send_indication(TransactionId::random(), sa(PEER_A), payload);
    let (o, _) = h.send_raw(c.tuple, &msg);
    let Output::ToPeer {
        relay,
        peer,
        start,
        end,
    } = o
    else {
        panic!("expected ToPeer, got {o:?}");
    };
    assert_eq!(relay, rid);
    assert_eq!(peer, sa(PEER_A));
    assert_eq!(&msg[start..end], payload);
    assert_eq!(h.srv.stats().to_peer_packets[0], 1);
    assert_eq!(h.srv.stats().to_peer_bytes[0], 5);
    // Without a permission for the IP: dropped.
    let (o, _) = h.send_raw(
        c.tuple,
        &send_indication(TransactionId::random(), sa(PEER_B), payload),
    );
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::NoPermission), 1);
}

#[test]
fn channel_data_from_client_relays_the_payload_range() {
    for (tuple, pad) in [
        (udp("192.0.2.10:1000"), false),
        (tcp("192.0.2.10:1000"), true),
    ] {
        let mut h = H::new();
        let mut c = Client::on("alice", "alice-pw", tuple);
        let r = h.allocate(&mut c);
        r.expect_success();
        let rid = h.relay_id(r.relayed1());
        h.channel_bind(&mut c, 0x4ABC, sa(PEER_A)).expect_success();
        let msg = channel_data_msg(0x4ABC, b"12345", pad);
        assert_eq!(msg.len(), if pad { 12 } else { 9 });
        assert_eq!(
            h.send_raw(c.tuple, &msg).0,
            Output::ToPeer {
                relay: rid,
                peer: sa(PEER_A),
                start: 4,
                end: 9,
            }
        );
        // An unbound channel is dropped.
        let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4ABD, b"12345", pad));
        assert_eq!(o, Output::None);
        assert_eq!(h.drops(DropReason::UnknownChannel), 1);
    }
}

#[test]
fn peer_data_with_channel_becomes_channel_data() {
    for (tuple, expect_len) in [
        (udp("192.0.2.10:1000"), 4 + 5),
        (tcp("192.0.2.10:1000"), 4 + 8),
    ] {
        let mut h = H::new();
        let mut c = Client::on("alice", "alice-pw", tuple);
        let r = h.allocate(&mut c);
        let rid = h.relay_id(r.relayed1());
        h.channel_bind(&mut c, 0x4001, sa(PEER_A)).expect_success();
        let (o, bytes) = h.peer_data(rid, sa(PEER_A), b"hello");
        let PeerOutput::ToClient { tuple: t, .. } = o else {
            panic!("expected ToClient, got {o:?}");
        };
        assert_eq!(t, tuple);
        assert_eq!(bytes.len(), expect_len);
        let cd = ChannelData::parse(&bytes).unwrap();
        assert_eq!(cd.channel, 0x4001);
        assert_eq!(cd.payload, b"hello");
        assert!(bytes[9..].iter().all(|&b| b == 0), "zero padding");
        // Counted under the client's transport, and only there.
        let t = tuple.transport.index();
        assert_eq!(h.srv.stats().to_client_packets[t], 1);
        assert_eq!(h.srv.stats().to_client_bytes[t], 5);
        assert_eq!(h.srv.stats().to_client_packets.iter().sum::<u64>(), 1);
        // Another port of the same IP has a permission but no channel: Data
        // indication.
        let (_, bytes) = h.peer_data(rid, sa("8.8.8.8:1"), b"hello");
        let m = Message::parse(&bytes).unwrap();
        assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
    }
}

#[test]
fn peer_data_without_channel_becomes_a_data_indication() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V6));
    });
    let relays = r.relayed();
    assert_eq!(relays.len(), 2);
    h.create_permission(&mut c, &[sa(PEER_A), sa(PEER_V6)])
        .expect_success();
    for (relay, peer) in [(relays[0], sa(PEER_A)), (relays[1], sa(PEER_V6))] {
        let rid = h.relay_id(relay);
        for payload in [&b""[..], b"a", b"hello", b"12345678"] {
            let (o, bytes) = h.peer_data(rid, peer, payload);
            assert!(matches!(o, PeerOutput::ToClient { tuple, .. } if tuple == c.tuple));
            let m = Message::parse(&bytes).expect("a valid STUN message");
            assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
            assert_eq!(m.get::<XorPeerAddress>().unwrap().unwrap().0, peer);
            assert_eq!(m.get::<Data>().unwrap().unwrap().0, payload);
            assert!(!m.has_integrity() && !m.has_fingerprint());
        }
    }
}

#[test]
fn peer_data_without_permission_is_dropped_and_counted() {
    let mut h = H::new();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relay);
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let (o, bytes) = h.peer_data(rid, sa(PEER_B), b"spam");
    assert_eq!(o, PeerOutput::None);
    assert!(bytes.is_empty());
    assert_eq!(h.drops(DropReason::NoPermission), 1);
    assert_eq!(h.srv.stats().to_client_packets[0], 0);
    // An unknown relay socket.
    let (o, _) = h.peer_data(RelayId(999), sa(PEER_A), b"x");
    assert_eq!(o, PeerOutput::None);
    assert_eq!(h.drops(DropReason::NoAllocation), 1);
}

// ---------------------------------------------------------------------------
// EVEN-PORT, dual stack
// ---------------------------------------------------------------------------

#[test]
fn even_port_with_reservation_and_token() {
    let mut h = H::new();
    // Occupy 50000 so that the pair cannot start there.
    allocated(&mut h, "192.0.2.10:999");
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve: true });
    });
    r.expect_success();
    let relay = r.relayed1();
    assert_eq!(relay.port(), 50002);
    let token = *r.msg().get::<ReservationToken>().unwrap().unwrap().0;
    assert!(h.shared.live.is_live(SocketAddr::new(ip(RELAY_V4), 50003)));
    let mut d = Client::alice("192.0.2.10:1001");
    let r = h.allocate_with(&mut d, |b| {
        b.add(&ReservationToken(&token));
    });
    r.expect_success();
    assert_eq!(
        r.relayed1(),
        SocketAddr::new(ip(RELAY_V4), relay.port() + 1)
    );
    assert!(r.msg().get::<ReservationToken>().is_none());
    // A token is good once.
    let mut e = Client::alice("192.0.2.10:1002");
    h.allocate_with(&mut e, |b| {
        b.add(&ReservationToken(&token));
    })
    .expect_error(508);
    // R = 0: just an even port.
    let r = h.allocate_with(&mut e, |b| {
        b.add(&EvenPort { reserve: false });
    });
    assert_eq!(r.relayed1().port(), 50004);
    assert!(r.msg().get::<ReservationToken>().is_none());
}

#[test]
fn unused_reservation_is_released_after_its_lifetime() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve: true });
    });
    let token = *r.msg().get::<ReservationToken>().unwrap().unwrap().0;
    assert_eq!(h.srv.binder().open.len(), 2);
    assert_eq!(h.srv.poll_timeout(), Some(h.t0 + secs(30)));
    h.at(secs(30));
    assert_eq!(h.srv.binder().open.len(), 1);
    assert!(!h.shared.live.is_live(SocketAddr::new(ip(RELAY_V4), 50001)));
    let mut d = Client::alice("192.0.2.10:1001");
    h.allocate_with(&mut d, |b| {
        b.add(&ReservationToken(&token));
    })
    .expect_error(508);
}

#[test]
fn dual_stack_allocation() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V6));
    });
    r.expect_success();
    assert_eq!(
        r.relayed(),
        vec![
            SocketAddr::new(ip(RELAY_V4), 50000),
            SocketAddr::new(ip(RELAY_V6), 50000)
        ]
    );
    assert!(r.msg().get::<AddressErrorCode>().is_none());
    // Deleting releases both.
    h.refresh(&mut c, Some(0)).expect_success();
    assert_eq!(h.srv.binder().released.len(), 2);
    assert!(h.srv.binder().open.is_empty());
}

#[test]
fn dual_stack_with_ipv6_unavailable_gives_address_error_code() {
    for (fail, code) in [
        (BindError::FamilyUnavailable, 440),
        (BindError::Exhausted, 508),
    ] {
        let mut h = H::new();
        h.srv.binder_mut().fail_v6 = Some(fail);
        let mut c = Client::alice("192.0.2.10:1000");
        let r = h.allocate_with(&mut c, |b| {
            b.add(&AdditionalAddressFamily(Family::V6));
        });
        r.expect_success();
        assert_eq!(r.relayed(), vec![SocketAddr::new(ip(RELAY_V4), 50000)]);
        let e = r.msg().get::<AddressErrorCode>().unwrap().unwrap();
        assert_eq!((e.family, e.code), (Family::V6, code));
    }
}

// ---------------------------------------------------------------------------
// FINGERPRINT, Binding
// ---------------------------------------------------------------------------

#[test]
fn fingerprint_in_request_means_fingerprint_in_response() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    c.fingerprint = true;
    let r = h.allocate(&mut c);
    r.expect_success();
    let m = r.msg();
    assert!(m.has_fingerprint());
    m.verify_fingerprint().unwrap();
    assert_eq!(*r.attr_types().last().unwrap(), attr::XOR_MAPPED_ADDRESS);
    // The 401 had one too.
    let mut d = Client::alice("192.0.2.10:1001");
    d.fingerprint = true;
    let r = h.request(
        d.tuple,
        &d.unauthenticated(Method::Allocate, &|b: &mut MessageBuilder| {
            b.add(&RequestedTransport(PROTOCOL_UDP));
        }),
    );
    r.expect_error(401);
    r.msg().verify_fingerprint().unwrap();
    // Without FINGERPRINT in the request, none in the response.
    let mut e = Client::alice("192.0.2.10:1002");
    let r = h.allocate(&mut e);
    assert!(!r.msg().has_fingerprint());
}

#[test]
fn bad_fingerprint_is_silently_dropped() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    c.fingerprint = true;
    h.allocate(&mut c).expect_success();
    let mut msg = c.build(
        Method::Refresh,
        TransactionId::random(),
        &|_: &mut MessageBuilder| {},
    );
    let n = msg.len();
    msg[n - 1] ^= 0x01;
    let (o, r) = h.send_raw(c.tuple, &msg);
    assert_eq!(o, Output::None);
    assert!(r.is_none());
    assert_eq!(h.drops(DropReason::BadFingerprint), 1);
    // A Binding request too.
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        Method::Binding,
        Class::Request,
        TransactionId::random(),
    );
    b.add_fingerprint();
    b.finish();
    let mut msg = buf.to_vec();
    let n = msg.len();
    msg[n - 2] ^= 0x80;
    assert_eq!(h.send_raw(c.tuple, &msg).0, Output::None);
    assert_eq!(h.drops(DropReason::BadFingerprint), 2);
}

#[test]
fn binding_returns_the_client_address() {
    let mut h = H::new();
    for client in ["192.0.2.10:1000", "[2001:db8::7]:40000"] {
        let tuple = udp(client);
        let tid = TransactionId::random();
        let mut buf = BytesMut::new();
        MessageBuilder::new(&mut buf, Method::Binding, Class::Request, tid).finish();
        let r = h.request(tuple, &buf);
        r.expect_success();
        let m = r.msg();
        assert_eq!(m.transaction_id(), tid);
        assert_eq!(m.method(), Method::Binding);
        assert_eq!(m.get::<XorMappedAddress>().unwrap().unwrap().0, sa(client));
        assert!(!m.has_integrity());
    }
    // A Binding indication (keep-alive) gets no answer.
    let mut buf = BytesMut::new();
    MessageBuilder::new(
        &mut buf,
        Method::Binding,
        Class::Indication,
        TransactionId::random(),
    )
    .finish();
    assert_eq!(h.send_raw(udp("192.0.2.10:1000"), &buf).0, Output::None);
}

// ---------------------------------------------------------------------------
// Connections, external IPs
// ---------------------------------------------------------------------------

#[test]
fn connection_closed_deletes_a_tcp_allocation() {
    let mut h = H::new();
    let tuple = tcp("192.0.2.10:1000");
    let mut c = Client::on("alice", "alice-pw", tuple);
    let r = h.allocate(&mut c);
    r.expect_success();
    let relay = r.relayed1();
    h.events();
    // Another connection closing changes nothing.
    h.srv.connection_closed(h.now, tcp("192.0.2.10:1001"));
    assert_eq!(h.srv.allocations(), 1);
    h.srv.connection_closed(h.now, tuple);
    assert_eq!(h.srv.allocations(), 0);
    assert!(!h.shared.live.is_live(relay));
    assert_eq!(h.shared.quota.total(), 0);
    match h.events().as_slice() {
        [Event::AllocationClosed {
            reason: CloseReason::ConnectionClosed,
            tuple: t,
            ..
        }] => assert_eq!(*t, tuple),
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn external_ip_is_advertised_and_hairpin_goes_to_the_private_address() {
    let public = ip("52.1.2.3");
    let mut cfg = base_config();
    cfg.relay_ips = vec![ip(RELAY_V4)];
    cfg.external_ips = vec![(public, Some(ip(RELAY_V4)))];
    let mut h = H::with_config(cfg);
    let (mut a, relay_a) = allocated(&mut h, "192.0.2.10:1000");
    let (_b, relay_b) = allocated(&mut h, "192.0.2.11:1000");
    assert_eq!(relay_a, SocketAddr::new(public, 50000));
    assert_eq!(relay_b, SocketAddr::new(public, 50001));
    let private_b = SocketAddr::new(ip(RELAY_V4), relay_b.port());
    assert!(h.shared.live.is_live(relay_b));
    // A may talk to B's advertised relayed address.
    h.create_permission(&mut a, &[relay_b]).expect_success();
    let msg = send_indication(TransactionId::random(), relay_b, b"hi");
    let rid_a = h.relay_id(SocketAddr::new(ip(RELAY_V4), 50000));
    match h.send_raw(a.tuple, &msg).0 {
        Output::ToPeer {
            relay,
            peer,
            start,
            end,
        } => {
            assert_eq!(relay, rid_a);
            assert_eq!(peer, private_b);
            assert_eq!(&msg[start..end], b"hi");
        }
        o => panic!("expected ToPeer, got {o:?}"),
    }
    // Data from B's private address shows as B's public one.
    let (o, bytes) = h.peer_data(rid_a, private_b, b"yo");
    assert!(matches!(o, PeerOutput::ToClient { .. }));
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.get::<XorPeerAddress>().unwrap().unwrap().0, relay_b);
    // A relay port with no live socket on the public IP is off limits.
    let (o, _) = h.send_raw(
        a.tuple,
        &send_indication(
            TransactionId::random(),
            SocketAddr::new(public, 50005),
            b"x",
        ),
    );
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::DeniedPeer), 1);
}

#[test]
fn dont_fragment_is_passed_to_the_binder() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&DontFragment);
    })
    .expect_success();
    assert_eq!(
        h.srv.binder().calls,
        vec![(ip(RELAY_V4), PortRequest::Any, true)]
    );
    let _ = h.srv.binder().addr_of(RelayId(1)).unwrap();
}

#[test]
fn malformed_and_unexpected_messages_are_dropped() {
    let mut h = H::new();
    let tuple = udp("192.0.2.10:1000");
    assert_eq!(h.send_raw(tuple, b"\x00\x01\x00").0, Output::None);
    assert_eq!(h.drops(DropReason::Malformed), 1);
    let mut buf = BytesMut::new();
    MessageBuilder::new(
        &mut buf,
        Method::Allocate,
        Class::Success,
        TransactionId::random(),
    )
    .finish();
    assert_eq!(h.send_raw(tuple, &buf).0, Output::None);
    assert_eq!(h.drops(DropReason::Unexpected), 1);
    // ChannelData without an allocation.
    assert_eq!(
        h.send_raw(tuple, &channel_data_msg(0x4000, b"x", false)).0,
        Output::None
    );
    assert_eq!(h.drops(DropReason::NoAllocation), 1);
    assert_eq!(channel_data::CHANNEL_DATA_HEADER_LEN, 4);
}

#[test]
fn retransmitted_allocate_repeats_token_and_address_error() {
    let mut h = H::new();
    h.srv.binder_mut().fail_v6 = Some(BindError::FamilyUnavailable);
    let mut c = Client::alice("192.0.2.10:1000");
    let tid = TransactionId::random();
    let attrs = |b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        b.add(&EvenPort { reserve: true });
    };
    let first = h.call_tid(&mut c, Method::Allocate, tid, attrs);
    first.expect_success();
    assert!(first.msg().get::<ReservationToken>().is_some());
    let again = h.request(c.tuple, &c.build(Method::Allocate, tid, &attrs));
    assert_eq!(again, first);

    let mut d = Client::alice("192.0.2.10:1001");
    let tid = TransactionId::random();
    let attrs = |b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        b.add(&AdditionalAddressFamily(Family::V6));
    };
    let first = h.call_tid(&mut d, Method::Allocate, tid, attrs);
    assert_eq!(
        first.msg().get::<AddressErrorCode>().unwrap().unwrap().code,
        440
    );
    let again = h.request(d.tuple, &d.build(Method::Allocate, tid, &attrs));
    assert_eq!(again, first);
    assert_eq!(h.srv.binder().calls.len(), 3);
}

#[test]
fn peer_data_without_headroom_or_tailroom_is_dropped() {
    let mut h = H::new();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relay);
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let mut buf = vec![0u8; PEER_HEADROOM + 8 + PEER_TAILROOM];
    let o = h.srv.handle_peer(
        h.now,
        rid,
        sa(PEER_A),
        &mut buf,
        PEER_HEADROOM - 1,
        PEER_HEADROOM + 4,
    );
    assert_eq!(o, PeerOutput::None);
    let o = h.srv.handle_peer(
        h.now,
        rid,
        sa(PEER_A),
        &mut buf,
        PEER_HEADROOM,
        PEER_HEADROOM + 8 + 1,
    );
    assert_eq!(o, PeerOutput::None);
    assert_eq!(h.drops(DropReason::Malformed), 2);
    let o = h.srv.handle_peer(
        h.now,
        rid,
        sa(PEER_A),
        &mut buf,
        PEER_HEADROOM,
        PEER_HEADROOM + 8,
    );
    assert!(matches!(o, PeerOutput::ToClient { .. }));
}

#[test]
fn close_all_releases_allocations_and_reservations() {
    let mut h = H::new();
    allocated(&mut h, "192.0.2.10:1000");
    let mut c = Client::alice("192.0.2.10:1001");
    h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve: true });
    })
    .expect_success();
    assert_eq!(h.srv.binder().open.len(), 3);
    h.events();
    h.srv.close_all(h.now);
    assert!(h.srv.binder().open.is_empty());
    assert_eq!(h.srv.binder().released.len(), 3);
    assert_eq!(h.shared.quota.total(), 0);
    assert!((50000..=50009).all(|p| [ip(RELAY_V4), ip(RELAY_V6)]
        .iter()
        .all(|i| !h.shared.live.is_live(SocketAddr::new(*i, p)))));
    let ev = h.events();
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::Shutdown,
            ..
        }
    )));
    // Queue entries left behind are stale: an early wake-up that does nothing.
    while let Some(t) = h.srv.poll_timeout() {
        h.at(t - h.t0);
        assert!(h.events().is_empty());
    }
    assert_eq!(h.srv.binder().released.len(), 3);
}

#[test]
fn cool_down_and_permission_quota_do_not_depend_on_timer_punctuality() {
    // The driver's timer may fire late: requests arriving first must already see
    // expired state as expired.
    let mut cfg = base_config();
    cfg.max_permissions_per_allocation = 1;
    let mut h = H::with_config(cfg);
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    })
    .expect_success();
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    // Permission for PEER_A expired at 300 s; no timer has run.
    h.advance(secs(300));
    h.create_permission(&mut c, &[sa(PEER_B)]).expect_success();
    // The channel's cool-down ended at 600 + 300 s; still no timer.
    h.advance(secs(600));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_success();
    let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4000, b"x", false));
    match o {
        Output::ToPeer { peer, .. } => assert_eq!(peer, sa(PEER_B)),
        o => panic!("expected ToPeer, got {o:?}"),
    }
}

// ---------------------------------------------------------------------------
// Live credential changes
// ---------------------------------------------------------------------------

/// A credential store whose users can be removed and whose backing database can
/// be "down", as the live store of a running server can.
#[derive(Default)]
struct MutableUsers {
    users: std::sync::Mutex<Vec<(String, String)>>,
    down: std::sync::atomic::AtomicBool,
}

impl CredentialStore for MutableUsers {
    fn lookup(&self, username: &str, realm: &str, _now_unix: u64) -> Lookup {
        let users = self.users.lock().unwrap();
        match users.iter().find(|(u, _)| u == username) {
            Some((u, p)) => Lookup::Found(UserKeys::derive(u, realm, p), None),
            None => Lookup::Unknown,
        }
    }

    fn accepts_new_allocations(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn mutable_users() -> Arc<MutableUsers> {
    let m = MutableUsers::default();
    m.users.lock().unwrap().extend([
        ("alice".to_owned(), "alice-pw".to_owned()),
        ("bob".to_owned(), "bob-pw".to_owned()),
    ]);
    Arc::new(m)
}

#[test]
fn removed_user_loses_its_allocation_on_recheck_and_others_stay() {
    let store = mutable_users();
    let mut h = H::with(base_config(), store.clone(), QuotaTracker::new(0, 0));
    let (mut a, _) = allocated(&mut h, "192.0.2.10:1000");
    let mut b = Client::new("bob", "bob-pw", "192.0.2.10:1001");
    h.allocate(&mut b).expect_success();
    h.events();
    // Nothing changed: nothing ends.
    assert_eq!(h.srv.recheck_credentials(h.now), 0);
    store.users.lock().unwrap().retain(|(u, _)| u != "alice");
    assert_eq!(h.srv.recheck_credentials(h.now), 1);
    let ev = h.events();
    assert!(matches!(
        &ev[..],
        [Event::AllocationClosed {
            reason: CloseReason::Revoked,
            username,
            ..
        }] if &**username == "alice"
    ));
    assert_eq!(h.srv.allocations(), 1);
    assert_eq!(h.shared.quota.total(), 1);
    // Alice's next request is refused: her allocation is gone and so is she.
    h.refresh(&mut a, Some(600)).expect_error(401);
    h.refresh(&mut b, Some(600)).expect_success();
}

#[test]
fn store_outage_refuses_new_allocations_but_existing_ones_refresh() {
    let store = mutable_users();
    let mut h = H::with(base_config(), store.clone(), QuotaTracker::new(0, 0));
    let (mut a, _) = allocated(&mut h, "192.0.2.10:1000");
    store.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut b = Client::new("bob", "bob-pw", "192.0.2.10:1001");
    h.allocate(&mut b).expect_error(500);
    assert_eq!(h.srv.allocations(), 1);
    assert_eq!(
        h.shared.quota.total(),
        1,
        "the refused allocation took no quota"
    );
    h.refresh(&mut a, Some(600)).expect_success();
    store
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let mut b = Client::new("bob", "bob-pw", "192.0.2.10:1002");
    h.allocate(&mut b).expect_success();
}

// ---------------------------------------------------------------------------
// RFC 8489 §9.2 security features: password algorithms, MESSAGE-INTEGRITY-SHA256,
// bid-down protection, USERHASH
// ---------------------------------------------------------------------------

/// The PASSWORD-ALGORITHMS every challenge carries: SHA-256, then MD5.
const OFFERED: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

/// A named change to what a well-behaved client would send.
type Tamper = (&'static str, fn(&mut Sec));

fn allocate_attrs(b: &mut MessageBuilder) {
    b.add(&RequestedTransport(PROTOCOL_UDP));
}

/// Gets the 401 for `c` and learns its nonce and PASSWORD-ALGORITHMS.
fn challenged(h: &mut H, c: &mut Client) -> Resp {
    let r = h.request(
        c.tuple,
        &c.unauthenticated(Method::Allocate, &allocate_attrs),
    );
    r.expect_error(401);
    c.learn_nonce(&r);
    r
}

/// Sends one authenticated Allocate built by `c` (no 401/438 dance).
fn allocate_once(h: &mut H, c: &Client) -> Resp {
    h.request(
        c.tuple,
        &c.build(Method::Allocate, TransactionId::random(), &allocate_attrs),
    )
}

/// A 400 that neither authenticates nor allocates.
fn expect_plain_400(h: &H, r: &Resp) {
    r.expect_error(400);
    let m = r.msg();
    assert!(!m.has_integrity() && !m.has_integrity_sha256());
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
}

#[test]
fn challenges_offer_sha256_then_md5_under_a_feature_nonce() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = challenged(&mut h, &mut c);
    let m = r.msg();
    assert_eq!(
        r.attr_types(),
        [
            attr::ERROR_CODE,
            attr::REALM,
            attr::NONCE,
            attr::PASSWORD_ALGORITHMS
        ]
    );
    let list = m.get::<PasswordAlgorithms>().unwrap().unwrap();
    assert_eq!(list.0, OFFERED);
    let algs: Vec<(u16, usize)> = list.iter().map(|a| (a.algorithm, a.params.len())).collect();
    assert_eq!(algs, [(ALGORITHM_SHA256, 0), (ALGORITHM_MD5, 0)]);
    // The nonce cookie with both feature bits (bit 0 password algorithms, bit 1
    // username anonymity, counted from the right of the 24: "AAAD").
    let nonce = c.nonce.clone().unwrap();
    assert_eq!(&nonce[..13], b"obMatJos2AAAD");
    assert_eq!(
        super::auth::nonce_features(&nonce),
        super::auth::FEATURE_PASSWORD_ALGORITHMS | super::auth::FEATURE_USERNAME_ANONYMITY
    );
    assert_eq!(
        h.shared
            .nonces
            .verify(&nonce, h.unix_now(), c.tuple.client, 600),
        super::auth::NonceCheck::Valid
    );
    // A 438 carries the same three (RFC 8489 §9.2.4).
    h.advance(secs(600));
    let r = allocate_once(&mut h, &c);
    r.expect_error(438);
    assert_eq!(
        r.attr_types(),
        [
            attr::ERROR_CODE,
            attr::REALM,
            attr::NONCE,
            attr::PASSWORD_ALGORITHMS
        ]
    );
    assert_eq!(
        r.msg().get::<PasswordAlgorithms>().unwrap().unwrap().0,
        OFFERED
    );
}

#[test]
fn sha256_with_message_integrity_sha256_end_to_end() {
    let mut h = H::new();
    let mut c = Client::sha256("alice", "alice-pw", "192.0.2.10:1000");
    let r = h.allocate(&mut c);
    r.expect_success();
    // Signed with MESSAGE-INTEGRITY-SHA256 (full 32 bytes) under the SHA-256 key,
    // and not with MESSAGE-INTEGRITY (checked by `check_response` in `call`).
    let m = r.msg();
    assert!(m.has_integrity_sha256() && !m.has_integrity());
    let md5 = long_term_key_md5("alice", REALM, "alice-pw");
    assert!(m.verify_integrity_sha256(&md5).is_err());
    let relay = r.relayed1();
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    assert_eq!(h.refresh(&mut c, Some(900)).lifetime(), 900);
    // Errors after authentication are signed the same way.
    h.channel_bind(&mut c, 0x3000, sa(PEER_A)).expect_error(400);
    // The data path works as for any allocation.
    let (o, bytes) = h.peer_data(h.relay_id(relay), sa(PEER_A), b"hi");
    assert!(matches!(o, PeerOutput::ToClient { .. }));
    assert_eq!(ChannelData::parse(&bytes).unwrap().payload, b"hi");
    h.refresh(&mut c, Some(0)).expect_success();
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn sha256_key_may_key_classic_message_integrity() {
    // RFC 8489 §9.2.2: the password algorithm picks the key, the attribute picks
    // the MAC; HMAC-SHA1 under the 32-byte SHA-256 key is allowed.
    let mut h = H::new();
    let mut c = Client::sha256("alice", "alice-pw", "192.0.2.10:1000");
    c.sec.mac = Mac::Sha1;
    let r = h.allocate(&mut c);
    r.expect_success();
    let m = r.msg();
    assert!(m.has_integrity() && !m.has_integrity_sha256());
    m.verify_integrity(&long_term_key_sha256("alice", REALM, "alice-pw"))
        .unwrap();
    assert!(m.verify_integrity(&c.key).is_err(), "not the MD5 key");
    // And the MD5 key under MESSAGE-INTEGRITY-SHA256, chosen explicitly...
    let mut d = Client::alice("192.0.2.10:1001");
    d.sec.send_algorithms = true;
    d.sec.algorithm = Some((ALGORITHM_MD5, Vec::new()));
    d.sec.mac = Mac::Sha256;
    h.allocate(&mut d).expect_success();
    // ...or by a client that does not negotiate at all (MD5 by default).
    let mut e = Client::alice("192.0.2.10:1002");
    e.sec.mac = Mac::Sha256;
    let r = h.allocate(&mut e);
    r.expect_success();
    r.msg().verify_integrity_sha256(&e.key).unwrap();
}

#[test]
fn with_both_integrity_attributes_only_the_sha256_one_counts() {
    let mut h = H::new();
    // A broken MESSAGE-INTEGRITY before a good MESSAGE-INTEGRITY-SHA256: accepted,
    // answered with MESSAGE-INTEGRITY-SHA256 only.
    let mut c = Client::sha256("alice", "alice-pw", "192.0.2.10:1000");
    c.sec.mac = Mac::Both;
    c.sec.sha1_key = Some(vec![0x55; 32]);
    let r = h.allocate(&mut c);
    r.expect_success();
    assert!(!r.msg().has_integrity());
    // A good MESSAGE-INTEGRITY with a bad MESSAGE-INTEGRITY-SHA256: 401.
    let mut d = Client::sha256("alice", "alice-pw", "192.0.2.10:1001");
    challenged(&mut h, &mut d);
    d.sec.mac = Mac::Both;
    d.sec.sha1_key = d.sec.key.clone();
    d.sec.key = Some(vec![0x55; 32]);
    let r = allocate_once(&mut h, &d);
    r.expect_error(401);
    assert_eq!(h.srv.allocations(), 1);
}

#[test]
fn bid_down_attempts_are_400() {
    let mut h = H::new();
    let tamper: [Tamper; 9] = [
        ("list without SHA-256", |s| {
            s.algorithms_override = Some(vec![0, 1, 0, 0]);
            s.algorithm = Some((ALGORITHM_MD5, Vec::new()));
        }),
        ("list reordered", |s| {
            s.algorithms_override = Some(vec![0, 1, 0, 0, 0, 2, 0, 0]);
        }),
        ("list with an extra entry", |s| {
            s.algorithms_override = Some(vec![0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0]);
        }),
        ("list empty", |s| s.algorithms_override = Some(Vec::new())),
        ("list removed, algorithm kept", |s| {
            s.send_algorithms = false
        }),
        ("algorithm removed, list kept", |s| s.algorithm = None),
        ("algorithm not in the list", |s| {
            s.algorithm = Some((0x0003, Vec::new()));
        }),
        ("algorithm with parameters", |s| {
            s.algorithm = Some((ALGORITHM_SHA256, vec![1, 2, 3, 4]));
        }),
        ("malformed list", |s| {
            s.algorithms_override = Some(vec![0, 2, 0, 9, 0, 1]);
        }),
    ];
    for (i, (what, f)) in tamper.iter().enumerate() {
        let mut c = Client::sha256("alice", "alice-pw", &format!("192.0.2.10:{}", 1000 + i));
        challenged(&mut h, &mut c);
        f(&mut c.sec);
        let r = allocate_once(&mut h, &c);
        assert_eq!(r.code(), Some(400), "{what}");
        expect_plain_400(&h, &r);
    }
    // The same client, untampered, gets in.
    let mut c = Client::sha256("alice", "alice-pw", "192.0.2.11:1000");
    h.allocate(&mut c).expect_success();
}

#[test]
fn unknown_or_malformed_password_algorithm_is_400() {
    let mut h = H::new();
    let mut c = Client::sha256("alice", "alice-pw", "192.0.2.10:1000");
    challenged(&mut h, &mut c);
    for bad in [0x0000, 0x0003, 0xFFFF] {
        c.sec.algorithm = Some((bad, Vec::new()));
        let r = allocate_once(&mut h, &c);
        expect_plain_400(&h, &r);
    }
    // A PASSWORD-ALGORITHM value that is not one entry (3 bytes).
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        Method::Allocate,
        Class::Request,
        TransactionId::random(),
    );
    b.add(&RequestedTransport(PROTOCOL_UDP));
    b.add(&Username("alice"));
    b.add(&Realm(REALM));
    b.add(&Nonce(c.nonce.as_deref().unwrap()));
    b.add_raw(attr::PASSWORD_ALGORITHM, &[0, 2, 0]);
    b.add_raw(attr::PASSWORD_ALGORITHMS, &OFFERED);
    b.add_message_integrity_sha256(c.sec.key.as_deref().unwrap());
    b.finish();
    let r = h.request(c.tuple, &buf);
    expect_plain_400(&h, &r);
}

#[test]
fn negotiation_attributes_under_a_nonce_without_features_are_400() {
    // Every nonce the server issues has the feature bits; one without them (as an
    // RFC 5389 server would send) offered no list, so negotiating under it is an
    // error, while a classic request under it is fine.
    let mut h = H::new();
    let mut c = Client::sha256("alice", "alice-pw", "192.0.2.10:1000");
    challenged(&mut h, &mut c);
    let plain = h.shared.nonces.issue(h.unix_now(), c.tuple.client, 0);
    c.nonce = Some(plain.as_bytes().to_vec());
    let r = allocate_once(&mut h, &c);
    expect_plain_400(&h, &r);
    let mut u = Client::alice("192.0.2.10:1001");
    u.nonce = Some(
        h.shared
            .nonces
            .issue(h.unix_now(), u.tuple.client, 0)
            .as_bytes()
            .to_vec(),
    );
    u.sec.userhash = Some(userhash("alice", REALM).to_vec());
    let r = allocate_once(&mut h, &u);
    expect_plain_400(&h, &r);
    let mut d = Client::alice("192.0.2.10:1002");
    d.nonce = Some(
        h.shared
            .nonces
            .issue(h.unix_now(), d.tuple.client, 0)
            .as_bytes()
            .to_vec(),
    );
    let r = allocate_once(&mut h, &d);
    r.expect_success();
    r.check_integrity(&d.key);
}

#[test]
fn userhash_authenticates_and_the_allocation_belongs_to_the_resolved_user() {
    let mut h = H::new();
    let mut c = Client::sha256("alice", "alice-pw", "192.0.2.10:1000");
    c.sec.userhash = Some(userhash("alice", REALM).to_vec());
    h.allocate(&mut c).expect_success();
    h.refresh(&mut c, Some(700)).expect_success();
    // The allocation is alice's: bob on the same 5-tuple gets 441, alice by name
    // (classic MD5 even) is recognised as the same user.
    let mut bob = Client::on("bob", "bob-pw", c.tuple);
    h.refresh(&mut bob, None).expect_error(441);
    let mut alice = Client::on("alice", "alice-pw", c.tuple);
    h.refresh(&mut alice, Some(0)).expect_success();
    let closed: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::AllocationClosed { username, .. } => Some(username),
            _ => None,
        })
        .collect();
    assert_eq!(closed, [Box::from("alice")]);
    // USERHASH with the classic MD5 key and MESSAGE-INTEGRITY works too.
    let mut d = Client::alice("192.0.2.10:1001");
    d.sec.userhash = Some(userhash("alice", REALM).to_vec());
    h.allocate(&mut d).expect_success();
}

#[test]
fn unknown_userhash_is_the_same_401_as_an_unknown_user() {
    let mut h = H::new();
    let mut by_hash = Client::sha256("mallory", "whatever", "192.0.2.10:1000");
    by_hash.sec.userhash = Some(userhash("mallory", REALM).to_vec());
    let mut by_name = Client::sha256("mallory", "whatever", "192.0.2.11:1000");
    let a = h.allocate(&mut by_hash);
    let b = h.allocate(&mut by_name);
    assert_eq!(challenge_attrs(&a), challenge_attrs(&b));
    // A known user's hash with the wrong password: 401 as well.
    let mut wrong = Client::sha256("alice", "not-alice-pw", "192.0.2.12:1000");
    wrong.sec.userhash = Some(userhash("alice", REALM).to_vec());
    h.allocate(&mut wrong).expect_error(401);
    // A hash taken over another realm does not resolve in this one.
    let mut other = Client::sha256("alice", "alice-pw", "192.0.2.13:1000");
    other.sec.userhash = Some(userhash("alice", "other.example").to_vec());
    h.allocate(&mut other).expect_error(401);
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn malformed_or_ambiguous_user_identification_is_400() {
    let mut h = H::new();
    let cases: [Tamper; 2] = [
        ("USERHASH of 31 bytes", |s| s.userhash = Some(vec![7; 31])),
        ("USERHASH and USERNAME", |s| {
            s.userhash = Some(userhash("alice", REALM).to_vec());
            s.also_username = true;
        }),
    ];
    for (i, (what, f)) in cases.iter().enumerate() {
        let mut c = Client::sha256("alice", "alice-pw", &format!("192.0.2.10:{}", 1000 + i));
        challenged(&mut h, &mut c);
        f(&mut c.sec);
        let r = allocate_once(&mut h, &c);
        assert_eq!(r.code(), Some(400), "{what}");
        expect_plain_400(&h, &r);
    }
}

#[test]
fn classic_md5_clients_are_answered_as_before() {
    // A client that ignores PASSWORD-ALGORITHMS and echoes the (longer) nonce
    // authenticates with the MD5 key and gets MESSAGE-INTEGRITY only.
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    c.fingerprint = true;
    let r = h.allocate(&mut c);
    r.expect_success();
    let m = r.msg();
    assert!(m.has_integrity() && !m.has_integrity_sha256());
    m.verify_integrity(&c.key).unwrap();
    m.verify_fingerprint().unwrap();
    assert_eq!(
        r.attr_types(),
        [
            attr::XOR_RELAYED_ADDRESS,
            attr::LIFETIME,
            attr::XOR_MAPPED_ADDRESS
        ]
    );
}

#[test]
fn rest_credentials_negotiate_sha256_too() {
    let mut h = H::with(
        base_config(),
        rest_store(&["north"]),
        QuotaTracker::new(0, 0),
    );
    let user = format!("{}:alice", UNIX0 + 3600);
    let pw = rest_password(b"north", &user);
    let mut c = Client::sha256(&user, &pw, "192.0.2.10:1000");
    h.allocate(&mut c).expect_success();
    // USERHASH cannot name a REST user: the store cannot invert the hash.
    let mut d = Client::sha256(&user, &pw, "192.0.2.10:1001");
    d.sec.userhash = Some(userhash(&user, REALM).to_vec());
    h.allocate(&mut d).expect_error(401);
}

// ---------------------------------------------------------------------------
// Operations: drain, sessions, kill, reload
// ---------------------------------------------------------------------------

#[test]
fn draining_refuses_new_allocations_with_403_and_keeps_old_ones() {
    let mut h = H::new();
    let (mut old, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut old, &[sa(PEER_A)])
        .expect_success();
    h.srv.set_drain(Some(Drain::default()));
    assert!(h.srv.draining());
    let mut c = Client::alice("192.0.2.10:1001");
    let r = h.allocate(&mut c);
    r.expect_error(403);
    // Authenticated refusal: it carries MESSAGE-INTEGRITY.
    r.check_integrity(&c.key);
    // The old allocation refreshes and relays on.
    h.refresh(&mut old, Some(600)).expect_success();
    let send = send_indication(TransactionId::random(), sa(PEER_A), b"still here");
    assert!(matches!(
        h.send_raw(old.tuple, &send).0,
        Output::ToPeer { .. }
    ));
    // A retransmitted Allocate of the old allocation still gets its success.
    assert_eq!(h.srv.allocations(), 1);
    h.srv.set_drain(None);
    h.allocate(&mut c).expect_success();
}

#[test]
fn draining_with_alternates_redirects_with_300_in_turn() {
    let mut h = H::new();
    let alts = vec![sa("203.0.113.1:3478"), sa("[2001:db8::1]:3478")];
    h.srv.set_drain(Some(Drain {
        alternates: alts.clone(),
    }));
    for (i, port) in (1000..1004).enumerate() {
        let mut c = Client::alice(&format!("192.0.2.10:{port}"));
        let r = h.allocate(&mut c);
        r.expect_error(300);
        r.check_integrity(&c.key);
        let AlternateServer(a) = r.msg().get::<AlternateServer>().unwrap().unwrap();
        assert_eq!(a, alts[i % 2]);
    }
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
}

#[test]
fn sessions_list_and_kill_by_user_and_id() {
    let mut h = H::new();
    h.srv.set_id_space(1, 4);
    let (mut a1, relay1) = allocated(&mut h, "192.0.2.10:1000");
    let (_a2, _) = allocated(&mut h, "192.0.2.10:1001");
    let mut b = Client::new("bob", "bob-pw", "192.0.2.11:1000");
    h.allocate(&mut b).expect_success();
    h.create_permission(&mut a1, &[sa(PEER_A), sa(PEER_B)])
        .expect_success();
    h.advance(secs(5));
    let mut s = h.srv.sessions(h.now);
    s.sort_by_key(|s| s.id);
    // Shard 1 of 4: IDs 2, 6, 10.
    assert_eq!(s.iter().map(|s| s.id).collect::<Vec<_>>(), [2, 6, 10]);
    assert_eq!(&*s[0].username, "alice");
    assert_eq!(&*s[0].realm, REALM);
    assert_eq!(s[0].relays, vec![relay1]);
    assert_eq!(s[0].permissions, 2);
    assert_eq!(s[0].started_unix, UNIX0);
    assert_eq!(s[0].expires_in, 595);
    assert_eq!(&*s[2].username, "bob");
    h.events();

    assert_eq!(h.srv.kill(h.now, &KillFilter::Id(10)), 1);
    assert_eq!(h.srv.kill(h.now, &KillFilter::Id(10)), 0);
    assert_eq!(h.srv.kill(h.now, &KillFilter::User("alice".into())), 2);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
    let ev = h.events();
    assert_eq!(ev.len(), 3);
    assert!(ev.iter().all(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::Killed,
            ..
        }
    )));
    // A killed allocation is gone for its client too.
    h.refresh(&mut a1, Some(600)).expect_error(437);
}

#[test]
fn usage_fields_of_a_closed_allocation() {
    let mut h = H::new();
    h.advance(secs(7));
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let send = send_indication(TransactionId::random(), sa(PEER_A), &[1; 40]);
    let _ = h.send_raw(c.tuple, &send);
    h.advance(secs(3));
    h.events();
    h.refresh(&mut c, Some(0)).expect_success();
    match h.events().as_slice() {
        [Event::AllocationClosed {
            id,
            realm,
            started_unix,
            duration,
            traffic,
            peers,
            reason: CloseReason::Deleted,
            ..
        }] => {
            assert_eq!(*id, 1);
            assert_eq!(&**realm, REALM);
            assert_eq!(*started_unix, UNIX0 + 7);
            assert_eq!(*duration, secs(3));
            assert_eq!(traffic.to_peer_bytes, 40);
            assert_eq!(traffic.to_peer_packets, 1);
            assert_eq!(*peers, 1);
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn reconfigure_changes_policy_realm_and_limits_for_new_requests_only() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let mut cfg = base_config();
    cfg.deny_peers = vec!["8.8.8.0/24".parse().unwrap()];
    cfg.max_permissions_per_allocation = 2;
    h.srv.reconfigure(Arc::new(cfg.clone()));
    // The new deny rule applies to the next request.
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_error(403);
    h.create_permission(&mut c, &[sa(PEER_B)]).expect_success();
    h.create_permission(&mut c, &[sa("9.9.9.9:53")])
        .expect_error(508);
    // A new realm: the allocation stays, and its next Refresh is challenged
    // with the new realm.
    cfg.realm = "elsewhere".into();
    h.srv.reconfigure(Arc::new(cfg));
    assert_eq!(h.srv.allocations(), 1);
    let r = h.request(
        c.tuple,
        &c.build(Method::Refresh, TransactionId::random(), &|_| {}),
    );
    r.expect_error(401);
    let Realm(realm) = r.msg().get::<Realm>().unwrap().unwrap();
    assert_eq!(realm, "elsewhere");
}

#[test]
fn max_bps_per_allocation_drops_beyond_the_rate_each_way() {
    let mut cfg = base_config();
    cfg.max_bps_per_allocation = 100_000;
    let mut h = H::with_config(cfg);
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    let frame = |len: usize| {
        let mut f = BytesMut::new();
        ChannelData {
            channel: 0x4000,
            payload: &vec![7u8; len],
        }
        .write(&mut f, false);
        f.to_vec()
    };
    // Towards the peer: a one-second burst of 100 kB, then nothing until time
    // passes.
    let f = frame(1000);
    for _ in 0..100 {
        assert!(matches!(h.send_raw(c.tuple, &f).0, Output::ToPeer { .. }));
    }
    assert_eq!(h.send_raw(c.tuple, &f).0, Output::None);
    assert_eq!(h.drops(DropReason::RateLimit), 1);
    // Towards the client: its own bucket, full.
    let rid = h.relay_id(relay);
    for _ in 0..100 {
        let (o, _) = h.peer_data(rid, sa(PEER_A), &[1; 1000]);
        assert!(matches!(o, PeerOutput::ToClient { .. }));
    }
    let (o, _) = h.peer_data(rid, sa(PEER_A), &[1; 1000]);
    assert_eq!(o, PeerOutput::None);
    assert_eq!(h.drops(DropReason::RateLimit), 2);
    // 100 ms later, 10 kB more each way.
    h.advance(Duration::from_millis(100));
    for _ in 0..10 {
        assert!(matches!(h.send_raw(c.tuple, &f).0, Output::ToPeer { .. }));
    }
    assert_eq!(h.send_raw(c.tuple, &f).0, Output::None);
    // Counted traffic is what was relayed, not what was dropped.
    h.refresh(&mut c, Some(0)).expect_success();
    let closed = h.events().into_iter().find_map(|e| match e {
        Event::AllocationClosed { traffic, .. } => Some(traffic),
        _ => None,
    });
    let t = closed.unwrap();
    assert_eq!(t.to_peer_bytes, 110_000);
    assert_eq!(t.to_client_bytes, 100_000);
}
