//! Fuzz the sans-IO TURN core (`ferroturn::turn::Server`) with the test kit of
//! `ferroturn::turn::testing` (the in-memory relay binder and fake clock the unit
//! tests use), a fixed nonce key and static users. Requests are signed with
//! `turn::auth::RequestAuth`, as every client in the crate signs them.
//!
//! The input is a configuration byte followed by a sequence of operations, each
//! `op, time-advance, operands...`: an authenticated (or deliberately badly
//! authenticated) request built from fuzzed attributes, a raw client datagram, a
//! ChannelData message, a peer datagram on a relay socket (in the
//! `PEER_HEADROOM`/`PEER_TAILROOM` layout), a timeout, a closed stream, a shutdown.
//! Building the requests in the harness (with a valid nonce and MESSAGE-INTEGRITY)
//! lets the fuzzer reach allocations, permissions, channels and the data path, which
//! random bytes alone never would. The flags also pick the RFC 8489 §9.2 security
//! features: the SHA-256 password algorithm (with PASSWORD-ALGORITHMS echoed, or
//! tampered with as a bid-down would), MESSAGE-INTEGRITY-SHA256, and USERHASH.
//!
//! Invariants:
//! - ranges the core returns are inside the buffers, and carry exactly the payload;
//! - replies parse as STUN, echo method and transaction ID, carry FINGERPRINT when
//!   the request did, and carry integrity (MESSAGE-INTEGRITY or
//!   MESSAGE-INTEGRITY-SHA256, the kind the request used, never both) that verifies
//!   under the key the request was signed with (and on every success to an
//!   authenticated method);
//! - a datagram that is not STUN never gets a reply;
//! - relayed data reaches the client as valid ChannelData or a valid Data indication;
//! - data goes out only on relay sockets that are open, of the peer's family, and
//!   never to the server's own service ports;
//! - the binder is never asked to release a socket it did not open (or twice);
//! - quota count == allocation count == created − closed events;
//! - `poll_timeout` never lies in the past after `handle_timeout(now)`, and no other
//!   call moves it into the past;
//! - after `close_all` every relay socket is released, no port is marked live and
//!   the quota is back to zero.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferroturn::stun::attr::{self, *};
use ferroturn::stun::channel_data::{padded_len, ChannelData};
use ferroturn::stun::integrity::{long_term_key_md5, long_term_key_sha256, userhash};
use ferroturn::stun::{Class, Message, MessageBuilder, Method, TransactionId};
use ferroturn::turn::auth::{
    NonceKey, RequestAuth, RequestMac, StaticUsers, FEATURE_PASSWORD_ALGORITHMS,
    FEATURE_USERNAME_ANONYMITY,
};
use ferroturn::turn::live::LiveRelayPorts;
use ferroturn::turn::quota::QuotaTracker;
use ferroturn::turn::reservations::Reservations;
use ferroturn::turn::server::{Event, PEER_HEADROOM, PEER_TAILROOM};
use ferroturn::turn::source_limit::SourceLimiter;
use ferroturn::turn::testing::{FakeBinder, FakeClock};
use ferroturn::turn::{
    FiveTuple, Output, PeerOutput, RelayId, Server, ServerConfig, Shared, Transport,
};
use libfuzzer_sys::fuzz_target;

const REALM: &str = "fuzz.test";
const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];
const UNIX0: u64 = 1_700_000_000;
/// The seed of the core's RNG: a run depends on its input alone.
const SEED: u64 = 0x5eed;
const MAX_OPS: usize = 256;
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// The features the server advertises in its nonces, and its PASSWORD-ALGORITHMS.
const FEATURES: u32 = FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY;
const OFFERED: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

const SERVER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const SERVER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const EXTERNAL_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77));

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

fn v6(last: u16, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last)),
        port,
    )
}

fn clients() -> [FiveTuple; 6] {
    let s4 = SocketAddr::new(SERVER_V4, 3478);
    let s6 = SocketAddr::new(SERVER_V6, 3478);
    let t = |transport, client, server| FiveTuple {
        transport,
        client,
        server,
    };
    [
        t(Transport::Udp, v4(198, 51, 100, 1, 40000), s4),
        t(Transport::Udp, v4(198, 51, 100, 2, 40001), s4),
        t(Transport::Tcp, v4(198, 51, 100, 1, 40002), s4),
        t(Transport::Udp, v6(0x10, 40003), s6),
        t(Transport::Tcp, v6(0x11, 40004), s6),
        t(
            Transport::Udp,
            v4(198, 51, 100, 3, 40005),
            v4(0, 0, 0, 0, 3478),
        ),
    ]
}

/// Peers the fuzzer can name: ordinary ones (public addresses, which the default
/// policy allows; nothing is ever sent, the harness is in-memory), denied ones, the
/// server's own service, a mapped IPv6 loopback, and the external (NAT) address on a
/// relay port.
fn fixed_peers() -> [SocketAddr; 10] {
    [
        v4(1, 2, 3, 4, 6000),
        v4(1, 2, 3, 5, 6001),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2a00, 1, 0, 0, 0, 0, 0, 5)), 6002),
        v6(0x5, 6003),
        SocketAddr::new(SERVER_V4, 3478),
        v4(127, 0, 0, 1, 53),
        v4(10, 0, 0, 1, 80),
        SocketAddr::new(IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()), 53),
        SocketAddr::new(EXTERNAL_V4, 50000),
        SocketAddr::new(SERVER_V6, 3478),
    ]
}

/// Reads operands from the fuzz input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.iter_mut().for_each(|b| *b = self.byte());
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Harness {
    server: Server<FakeBinder>,
    shared: Shared,
    nonces: Arc<NonceKey>,
    clients: [FiveTuple; 6],
    peers: Vec<SocketAddr>,
    keys: [[u8; 16]; 2],
    sha_keys: [[u8; 32]; 2],
    clock: FakeClock,
    external: bool,
    own_services: bool,
    relayed: Vec<SocketAddr>,
    tokens: Vec<[u8; 8]>,
    last_allocate: [Option<TransactionId>; 6],
    created: u64,
    closed: u64,
    out: BytesMut,
}

impl Harness {
    fn new(flags: u8) -> Self {
        let mut cfg = ServerConfig::with_realm(REALM);
        if flags & 0x01 != 0 {
            cfg.relay_ips = vec![SERVER_V4, SERVER_V6];
        }
        let external = flags & 0x02 != 0;
        if external {
            cfg.external_ips = vec![(EXTERNAL_V4, None)];
        }
        let own_services = flags & 0x04 != 0;
        if own_services {
            cfg.own_services = vec![
                SocketAddr::new(SERVER_V4, 3478),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 3478),
            ];
            cfg.local_ips = vec![SERVER_V4, SERVER_V6, IpAddr::V4(Ipv4Addr::LOCALHOST)];
        }
        let small = flags & 0x08 != 0;
        if small {
            cfg.max_permissions_per_allocation = 2;
            cfg.max_channels_per_allocation = 2;
        }
        if flags & 0x10 != 0 {
            cfg.software = Some("ferroturn-fuzz".into());
        }
        if flags & 0x20 != 0 {
            // Opens the documentation ranges the server and relays live in, so that
            // client-to-client relaying is reachable.
            cfg.allow_peers = ["127.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]
                .iter()
                .map(|n| n.parse().expect("net"))
                .collect();
            cfg.deny_peers = vec!["1.2.3.5/32".parse().expect("net")];
        }
        let capacity = if flags & 0x40 != 0 { 3 } else { 64 };
        let nonces = Arc::new(NonceKey::from_bytes([7; 32]));
        let shared = Shared {
            creds: Arc::new(StaticUsers::new(&[REALM], &USERS)),
            nonces: nonces.clone(),
            quota: Arc::new(if small {
                QuotaTracker::new(1, 3)
            } else {
                QuotaTracker::new(0, 0)
            }),
            live: Arc::new(LiveRelayPorts::default()),
            reservations: Arc::new(Reservations::default()),
            source_limits: Arc::new(SourceLimiter::new(0)),
            cluster: Default::default(),
            tcp: Default::default(),
        };
        // The kit's binder, with the harness's checks: a capacity, and relays
        // only on the server's own addresses.
        let mut binder = FakeBinder::new(RELAY_PORTS);
        binder.capacity = capacity;
        binder.allowed_ips = Some(vec![SERVER_V4, SERVER_V6]);
        let clock = FakeClock::new(UNIX0);
        let server = Server::new(Arc::new(cfg), &shared, binder, clock.now, clock.unix0, SEED);
        Self {
            server,
            shared,
            nonces,
            clients: clients(),
            peers: fixed_peers().to_vec(),
            keys: USERS.map(|(u, p)| long_term_key_md5(u, REALM, p)),
            sha_keys: USERS.map(|(u, p)| long_term_key_sha256(u, REALM, p)),
            clock,
            external,
            own_services,
            relayed: Vec::new(),
            tokens: Vec::new(),
            last_allocate: [None; 6],
            created: 0,
            closed: 0,
            out: BytesMut::new(),
        }
    }

    fn unix(&self) -> u64 {
        self.clock.unix()
    }

    fn peer(&self, b: u8) -> SocketAddr {
        let n = self.peers.len() + self.relayed.len();
        let i = usize::from(b) % n;
        self.peers
            .get(i)
            .or_else(|| self.relayed.get(i - self.peers.len()))
            .copied()
            .unwrap_or(self.peers[0])
    }

    fn advance(&mut self, b: u8) {
        let d = match b >> 6 {
            0 => Duration::ZERO,
            1 => Duration::from_millis(u64::from(b & 63) * 10),
            2 => Duration::from_secs(u64::from(b & 63)),
            _ => Duration::from_secs(u64::from(b & 63) * 60),
        };
        self.clock.advance(d);
    }

    /// Builds a request (or Send indication) from fuzzed attributes, adds the
    /// credentials the flags ask for, hands it to the core and checks the answer.
    fn request(&mut self, inp: &mut Input<'_>) {
        let ci = usize::from(inp.byte()) % self.clients.len();
        let tuple = self.clients[ci];
        let sel = inp.byte();
        let method = match sel % 8 {
            0 | 1 => Method::Allocate,
            2 => Method::Refresh,
            3 => Method::CreatePermission,
            4 => Method::ChannelBind,
            5 => Method::Binding,
            6 => Method::Send,
            _ => Method::from_code(u16::from(sel >> 3)),
        };
        let class = match (method, sel >> 6) {
            (Method::Send, _) => Class::Indication,
            (_, 3) => {
                [Class::Indication, Class::Success, Class::Error][usize::from((sel >> 3) & 3) % 3]
            }
            _ => Class::Request,
        };
        let user = inp.byte();
        let nonce_sel = inp.byte();
        let flags = inp.byte();
        let tid_bytes: [u8; 12] = inp.array();
        let tid = match self.last_allocate[ci] {
            Some(t) if flags & 0x02 != 0 => t,
            _ => TransactionId(tid_bytes),
        };
        let with_auth = flags & 0x04 == 0 && class == Class::Request;
        let fingerprint = flags & 0x01 != 0;

        // flags 0x10: SHA-256 password algorithm; 0x20: MESSAGE-INTEGRITY-SHA256;
        // 0x40: USERHASH instead of USERNAME; 0x80: tamper with the negotiation.
        let sha256 = flags & 0x10 != 0;
        let mac_sha256 = flags & 0x20 != 0;
        let by_hash = flags & 0x40 != 0;
        let tamper = flags & 0x80 != 0;
        let (username, key): (&str, Option<Vec<u8>>) = match (user % 4, sha256) {
            (0, false) => (USERS[0].0, Some(self.keys[0].to_vec())),
            (1, false) => (USERS[1].0, Some(self.keys[1].to_vec())),
            (0, true) => (USERS[0].0, Some(self.sha_keys[0].to_vec())),
            (1, true) => (USERS[1].0, Some(self.sha_keys[1].to_vec())),
            (2, _) => ("mallory", None),
            _ => (USERS[0].0, None),
        };
        let wrong_key = if sha256 {
            long_term_key_sha256(username, REALM, "wrong").to_vec()
        } else {
            long_term_key_md5(username, REALM, "wrong").to_vec()
        };
        let nonce_client = if nonce_sel & 0x80 != 0 {
            self.clients[(ci + 1) % self.clients.len()].client
        } else {
            tuple.client
        };
        let nonce: Vec<u8> = match nonce_sel % 4 {
            0 | 1 => self
                .nonces
                .issue(self.unix(), nonce_client, FEATURES)
                .as_bytes()
                .to_vec(),
            // Older nonces, with or without the security features (the server only
            // issues them with, but the rules for either must hold).
            2 => self
                .nonces
                .issue(
                    self.unix().saturating_sub(u64::from(nonce_sel) * 10),
                    nonce_client,
                    if nonce_sel & 0x40 != 0 { 0 } else { FEATURES },
                )
                .as_bytes()
                .to_vec(),
            _ => inp.bytes(usize::from(nonce_sel >> 2)).to_vec(),
        };
        let realm = if user & 0x80 != 0 {
            "other.realm"
        } else {
            REALM
        };

        let mut buf = BytesMut::new();
        let mut b = MessageBuilder::new(&mut buf, method, class, tid);
        let hash = userhash(username, REALM);
        let add_user = |b: &mut MessageBuilder<'_>| {
            if by_hash {
                b.add(&Userhash(&hash));
            } else {
                b.add(&Username(username));
            }
        };
        if with_auth && flags & 0x08 != 0 {
            add_user(&mut b);
        }
        let mut sent_data: Option<Vec<u8>> = None;
        let count = inp.byte() % 8;
        for _ in 0..count {
            let kind = inp.byte();
            match kind % 14 {
                0 => {
                    b.add(&RequestedTransport(PROTOCOL_UDP));
                }
                1 => {
                    b.add(&RequestedTransport(inp.byte()));
                }
                2 => {
                    let l = inp.u32();
                    b.add(&Lifetime(if kind & 0x80 != 0 { 0 } else { l }));
                }
                3 | 4 => {
                    let p = self.peer(inp.byte());
                    b.add(&XorPeerAddress(p));
                }
                5 => {
                    let c = 0x4000 + u16::from(inp.byte() % 4);
                    b.add(&ChannelNumber(c));
                }
                6 => {
                    let c = inp.u16();
                    b.add(&ChannelNumber(c));
                }
                7 => {
                    b.add(&EvenPort {
                        reserve: kind & 0x80 != 0,
                    });
                }
                8 | 9 => {
                    let f = inp.byte();
                    let v = [if f < 128 { f % 3 } else { f }, 0, 0, 0];
                    let typ = if kind % 14 == 8 {
                        attr::REQUESTED_ADDRESS_FAMILY
                    } else {
                        attr::ADDITIONAL_ADDRESS_FAMILY
                    };
                    b.add_raw(typ, &v);
                }
                10 => {
                    let i = inp.byte();
                    let t = match self.tokens.get(usize::from(i)) {
                        Some(t) => *t,
                        None => inp.array(),
                    };
                    b.add(&ReservationToken(&t));
                }
                11 => {
                    b.add(&DontFragment);
                }
                12 => {
                    let n = inp.u16() % 1400;
                    let d = inp.bytes(usize::from(n));
                    b.add(&Data(d));
                    sent_data.get_or_insert_with(|| d.to_vec());
                }
                _ => {
                    let typ = inp.u16();
                    let n = inp.byte();
                    let v = inp.bytes(usize::from(n));
                    if !matches!(
                        typ,
                        attr::MESSAGE_INTEGRITY
                            | attr::MESSAGE_INTEGRITY_SHA256
                            | attr::FINGERPRINT
                    ) {
                        b.add_raw(typ, v);
                    }
                }
            }
        }
        if with_auth {
            // The user attribute goes here unless flag 0x08 put it first.
            let user_here = flags & 0x08 == 0;
            let (algorithm, algorithms) = if sha256 || tamper {
                let algorithm = if sha256 {
                    ALGORITHM_SHA256
                } else {
                    ALGORITHM_MD5
                };
                // Tampering: a list without SHA-256, as a bid-down attacker would
                // leave it, or (with SHA-256) no list at all.
                let list: Option<&[u8]> = match (tamper, sha256) {
                    (false, _) => Some(&OFFERED),
                    (true, false) => Some(&[0, 1, 0, 0]),
                    (true, true) => None,
                };
                (Some((algorithm, &[][..])), list)
            } else {
                (None, None)
            };
            RequestAuth {
                username: (user_here && !by_hash).then_some(username),
                userhash: (user_here && by_hash).then_some(&hash[..]),
                realm,
                nonce: &nonce,
                algorithm,
                algorithms,
                key: key.as_deref().unwrap_or(&wrong_key),
                mac: if mac_sha256 {
                    RequestMac::Sha256
                } else {
                    RequestMac::Sha1
                },
            }
            .write(&mut b);
        }
        if fingerprint {
            b.add_fingerprint();
        }
        b.finish();

        let authed_key = key.filter(|_| with_auth && realm == REALM && !tamper);
        let before = self.server.allocations();
        let output = self
            .server
            .handle_client(self.clock.now, tuple, &buf, &mut self.out);
        match output {
            Output::Connect { .. } | Output::ConnectionBound { .. } => {
                panic!("RFC 6062 is off in the fuzzed core")
            }
            Output::None => {}
            Output::Reply => {
                let r = self.check_reply(&buf, fingerprint, authed_key);
                if method == Method::Allocate && r.success {
                    self.last_allocate[ci] = Some(tid);
                    assert!(self.server.allocations() >= before);
                }
            }
            Output::ReplyFrom { .. } => panic!("RFC 5780 is off in this target"),
            Output::ToPeer { .. } => {
                assert_eq!(
                    method,
                    Method::Send,
                    "only a Send indication goes to a peer"
                );
                let payload = sent_data.unwrap_or_default();
                self.check_to_peer(output, &buf, &payload);
            }
        }
    }

    /// Checks a reply in `self.out` to `request`; records relayed addresses and tokens.
    fn check_reply(
        &mut self,
        request: &[u8],
        fingerprint: bool,
        key: Option<Vec<u8>>,
    ) -> ReplyInfo {
        let req = Message::parse(request).expect("a reply only answers a STUN message");
        assert_eq!(req.class(), Class::Request, "only requests are answered");
        let r = Message::parse(&self.out).expect("reply parses as STUN");
        assert_eq!(r.transaction_id(), req.transaction_id());
        assert_eq!(r.method(), req.method());
        assert!(matches!(r.class(), Class::Success | Class::Error));
        assert!(
            r.unknown_required().is_empty(),
            "reply carries unknown attributes"
        );
        if fingerprint {
            r.verify_fingerprint().expect("reply FINGERPRINT verifies");
        }
        assert!(
            !(r.has_integrity() && r.has_integrity_sha256()),
            "reply carries both integrity attributes"
        );
        if r.has_integrity() || r.has_integrity_sha256() {
            let k = key.expect("integrity on a reply to an unauthenticated request");
            assert_eq!(
                r.has_integrity_sha256(),
                req.has_integrity_sha256(),
                "reply integrity is not the kind the request used"
            );
            if r.has_integrity_sha256() {
                r.verify_integrity_sha256(&k)
                    .expect("reply MESSAGE-INTEGRITY-SHA256 verifies");
            } else {
                r.verify_integrity(&k)
                    .expect("reply MESSAGE-INTEGRITY verifies");
            }
        }
        let success = r.class() == Class::Success;
        if success {
            match r.method() {
                Method::Binding => {
                    assert!(matches!(r.get::<XorMappedAddress>(), Some(Ok(_))));
                }
                _ => assert!(
                    r.has_integrity() || r.has_integrity_sha256(),
                    "TURN success without integrity"
                ),
            }
        } else {
            let Some(Ok(e)) = r.get::<ErrorCode>() else {
                panic!("error reply without a valid ERROR-CODE");
            };
            assert!((300..700).contains(&e.code), "error code {}", e.code);
        }
        if success && r.method() == Method::Allocate {
            let tid = r.transaction_id();
            for a in r
                .attributes()
                .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
            {
                let addr = XorRelayedAddress::decode(a.value, &tid)
                    .expect("relayed address")
                    .0;
                let open = self.server.binder().open.iter().any(|(_, o)| {
                    o.port() == addr.port() && (o.ip() == addr.ip() || self.external)
                });
                assert!(open, "advertised relay {addr} is not an open relay socket");
                if !self.relayed.contains(&addr) && self.relayed.len() < 16 {
                    self.relayed.push(addr);
                }
            }
            if let Some(Ok(ReservationToken(t))) = r.get::<ReservationToken>() {
                if self.tokens.len() < 16 {
                    self.tokens.push(*t);
                }
            }
            assert!(matches!(r.get::<Lifetime>(), Some(Ok(_))));
        }
        ReplyInfo { success }
    }

    fn check_to_peer(&self, output: Output, data: &[u8], payload: &[u8]) {
        let Output::ToPeer {
            relay,
            peer,
            start,
            end,
        } = output
        else {
            return;
        };
        assert!(
            start <= end && end <= data.len(),
            "ToPeer {start}..{end} of {}",
            data.len()
        );
        assert_eq!(
            &data[start..end],
            payload,
            "relayed bytes are not the payload"
        );
        let local = self
            .server
            .binder()
            .addr_of(relay)
            .unwrap_or_else(|| panic!("data sent on relay {relay:?}, which is not open"));
        assert_eq!(
            local.is_ipv4(),
            peer.is_ipv4(),
            "relay {local} sends to {peer}"
        );
        if self.own_services {
            assert!(
                !(peer.port() == 3478 && (peer.ip() == SERVER_V4 || peer.ip() == SERVER_V6)),
                "data relayed to the server's own service {peer}"
            );
        }
    }

    fn raw(&mut self, inp: &mut Input<'_>) {
        let ci = usize::from(inp.byte()) % self.clients.len();
        let n = inp.u16() % 2048;
        let data = inp.bytes(usize::from(n)).to_vec();
        let output =
            self.server
                .handle_client(self.clock.now, self.clients[ci], &data, &mut self.out);
        match output {
            Output::Connect { .. } | Output::ConnectionBound { .. } => {
                panic!("RFC 6062 is off in the fuzzed core")
            }
            Output::None => {}
            Output::Reply => {
                self.check_reply(
                    &data,
                    Message::parse(&data).is_ok_and(|m| m.has_fingerprint()),
                    None,
                );
            }
            Output::ReplyFrom { .. } => panic!("RFC 5780 is off in this target"),
            Output::ToPeer { start, end, .. } => {
                assert!(start <= end && end <= data.len());
                let payload = data[start..end].to_vec();
                self.check_to_peer(output, &data, &payload);
            }
        }
    }

    fn channel_data(&mut self, inp: &mut Input<'_>) {
        let ci = usize::from(inp.byte()) % self.clients.len();
        let sel = inp.byte();
        let channel = if sel & 0x80 == 0 {
            0x4000 + u16::from(sel % 4)
        } else {
            inp.u16()
        };
        let n = inp.u16() % 1400;
        let payload = inp.bytes(usize::from(n)).to_vec();
        let mut data = BytesMut::new();
        ChannelData {
            channel,
            payload: &payload,
        }
        .write(&mut data, sel & 0x40 != 0);
        let output =
            self.server
                .handle_client(self.clock.now, self.clients[ci], &data, &mut self.out);
        match output {
            Output::Connect { .. } | Output::ConnectionBound { .. } => {
                panic!("RFC 6062 is off in the fuzzed core")
            }
            Output::None => {}
            Output::Reply => panic!("a reply to ChannelData"),
            Output::ReplyFrom { .. } => panic!("a reply to ChannelData"),
            Output::ToPeer { .. } => {
                assert!(channel & 0xC000 == 0x4000);
                self.check_to_peer(output, &data, &payload);
            }
        }
    }

    fn peer_datagram(&mut self, inp: &mut Input<'_>) {
        let open: Vec<RelayId> = self
            .server
            .binder()
            .open
            .iter()
            .map(|(id, _)| *id)
            .collect();
        let sel = inp.byte();
        let relay = match open.get(usize::from(sel) % (open.len() + 1)) {
            Some(r) => *r,
            None => RelayId::new(u32::from(inp.byte()), 0),
        };
        let from = self.peer(inp.byte());
        let layout = inp.byte();
        let n = usize::from(inp.u16() % 1500);
        let payload = inp.bytes(n).to_vec();
        let (head, tail) = if layout & 0x80 != 0 {
            (usize::from(layout & 0x3F), usize::from(inp.byte() % 8))
        } else {
            (PEER_HEADROOM, PEER_TAILROOM)
        };
        let mut buf = vec![0xA5u8; head + payload.len() + tail];
        buf[head..head + payload.len()].copy_from_slice(&payload);
        let (start, end) = (head, head + payload.len());
        let output = self
            .server
            .handle_peer(self.clock.now, relay, from, &mut buf, start, end);
        let PeerOutput::ToClient { tuple, start, end } = output else {
            return;
        };
        assert!(
            start <= end && end <= buf.len(),
            "ToClient {start}..{end} of {}",
            buf.len()
        );
        assert!(
            self.clients.contains(&tuple),
            "data for unknown client {tuple:?}"
        );
        assert!(self.server.binder().addr_of(relay).is_some());
        let msg = &buf[start..end];
        if msg.first().is_some_and(|b| b & 0xC0 == 0x40) {
            let cd = ChannelData::parse(msg).expect("ChannelData to client parses");
            assert_eq!(cd.payload, &payload[..]);
            assert_eq!(cd.channel & 0xC000, 0x4000, "not a channel number");
            let want = if tuple.transport.is_stream() {
                4 + padded_len(payload.len())
            } else {
                4 + payload.len()
            };
            assert_eq!(msg.len(), want);
            assert!(msg[4 + payload.len()..].iter().all(|&b| b == 0));
        } else {
            let m = Message::parse(msg).expect("Data indication to client parses");
            assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
            let Some(Ok(Data(d))) = m.get::<Data>() else {
                panic!("Data indication without DATA");
            };
            assert_eq!(d, &payload[..]);
            let Some(Ok(XorPeerAddress(p))) = m.get::<XorPeerAddress>() else {
                panic!("Data indication without XOR-PEER-ADDRESS");
            };
            if !self.external {
                assert_eq!(p, from);
            }
        }
    }

    fn timeout(&mut self) {
        if self
            .server
            .poll_timeout()
            .is_some_and(|t| t <= self.clock.now)
        {
            self.server.handle_timeout(self.clock.now);
        }
        let t = self.server.poll_timeout();
        assert!(
            t.is_none_or(|t| t > self.clock.now),
            "poll_timeout {:?} is not after now after handle_timeout",
            t.map(|t| t.duration_since(self.clock.t0))
        );
    }

    fn check_counts(&mut self) {
        for e in self.server.drain_events() {
            match e {
                Event::AllocationCreated { .. } => self.created += 1,
                Event::AllocationClosed { .. } => self.closed += 1,
            }
        }
        let n = self.server.allocations();
        assert_eq!(
            self.created - self.closed,
            n as u64,
            "events disagree with the table"
        );
        assert_eq!(
            self.shared.quota.total() as usize,
            n,
            "quota disagrees with the table"
        );
        let relays = self.server.binder().open.len();
        assert!(
            relays >= n,
            "{n} allocations but only {relays} relay sockets"
        );
    }

    fn shutdown(&mut self) {
        self.server.close_all(self.clock.now);
        self.check_counts();
        assert_eq!(self.server.allocations(), 0);
        let b = self.server.binder();
        assert!(b.open.is_empty(), "relay sockets leaked: {:?}", b.open);
        assert!(
            b.parked.is_empty(),
            "reserved sockets leaked: {:?}",
            b.parked
        );
        for &p in &b.ever {
            assert!(!self.shared.live.is_live(p), "relay {p} still marked live");
        }
    }

    /// The end of a run: shut down, then let every queued deadline come due. Queue
    /// entries of closed allocations may still wake the driver (a spurious wake-up is
    /// harmless), but once they have passed no timer may be left.
    fn finish(&mut self) {
        self.shutdown();
        for _ in 0..10_000 {
            let Some(t) = self.server.poll_timeout() else {
                break;
            };
            assert!(t >= self.clock.t0, "deadline before the start");
            self.clock.now = self.clock.now.max(t);
            self.server.handle_timeout(self.clock.now);
        }
        assert_eq!(
            self.server.poll_timeout(),
            None,
            "timers left after shutdown"
        );
        self.check_counts();
        assert!(self.server.binder().open.is_empty());
    }
}

struct ReplyInfo {
    success: bool,
}

fuzz_target!(|data: &[u8]| {
    // TURN_CORE_TRACE=1 prints one line per operation (for reading a crash input).
    let trace = std::env::var_os("TURN_CORE_TRACE").is_some();
    let mut inp = Input(data);
    let mut h = Harness::new(inp.byte());
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = inp.byte();
        h.advance(inp.byte());
        let due_before = h.server.poll_timeout().is_some_and(|t| t <= h.clock.now);
        match op % 10 {
            0..=2 => h.request(&mut inp),
            3 => h.raw(&mut inp),
            4 => h.channel_data(&mut inp),
            5 | 6 => h.peer_datagram(&mut inp),
            7 => h.timeout(),
            8 => {
                let ci = usize::from(inp.byte()) % h.clients.len();
                h.server.connection_closed(h.clock.now, h.clients[ci]);
            }
            _ => h.shutdown(),
        }
        if !due_before {
            let t = h.server.poll_timeout();
            assert!(
                t.is_none_or(|t| t > h.clock.now),
                "op {op} moved poll_timeout into the past"
            );
        }
        h.check_counts();
        if trace {
            eprintln!(
                "op {ops:3} kind {} t+{:?}: allocations {} relays {} {:?}",
                op % 10,
                h.clock.now.duration_since(h.clock.t0),
                h.server.allocations(),
                h.server.binder().open.len(),
                h.server.stats()
            );
        }
    }
    h.finish();
});
