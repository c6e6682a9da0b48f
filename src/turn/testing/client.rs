//! [`Client`]: a sans-IO signing client for the core, and [`Resp`], an owned
//! response with the checks tests make on it.

use std::net::SocketAddr;

use bytes::BytesMut;

use crate::stun::attr::{self, *};
use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256};
use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId};
use crate::turn::auth::{RequestAuth, RequestMac};
use crate::turn::FiveTuple;

/// A client of the core on one 5-tuple, with long-term credentials.
#[derive(Clone)]
pub struct Client {
    pub tuple: FiveTuple,
    pub username: String,
    /// The MD5 long-term key.
    pub key: [u8; 16],
    pub nonce: Option<Vec<u8>>,
    /// The REALM the client sends (a test may set a wrong one).
    pub realm: String,
    /// The REALM the server's challenges must name.
    pub expected_realm: String,
    /// Add FINGERPRINT to every request.
    pub fingerprint: bool,
    /// RFC 8489 §9.2 security features; the default is a classic MD5 client.
    pub sec: Sec,
}

/// Which integrity attribute(s) a client signs with.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub enum Mac {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    #[default]
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
    /// MESSAGE-INTEGRITY with `Sec::sha1_key` (or the signing key), then
    /// MESSAGE-INTEGRITY-SHA256 with the signing key.
    Both,
}

/// What a client sends for the RFC 8489 security features. Every field can be
/// set to something a well-behaved client would not send.
#[derive(Clone, Default)]
pub struct Sec {
    /// PASSWORD-ALGORITHMS as the last challenge carried it.
    pub offered: Option<Vec<u8>>,
    /// Echo `offered` (or `algorithms_override`) as PASSWORD-ALGORITHMS.
    pub send_algorithms: bool,
    /// Send this PASSWORD-ALGORITHMS value instead of the offered one.
    pub algorithms_override: Option<Vec<u8>>,
    /// PASSWORD-ALGORITHM (algorithm number, parameters), raw.
    pub algorithm: Option<(u16, Vec<u8>)>,
    /// Sign with this key instead of the MD5 key (e.g. the SHA-256 key).
    pub key: Option<Vec<u8>>,
    /// With `Mac::Both`: the MESSAGE-INTEGRITY key, when it differs.
    pub sha1_key: Option<Vec<u8>>,
    pub mac: Mac,
    /// Send USERHASH (this value) instead of USERNAME.
    pub userhash: Option<Vec<u8>>,
    /// With `userhash`: send USERNAME as well.
    pub also_username: bool,
}

impl Client {
    /// A classic client: USERNAME, the MD5 key, MESSAGE-INTEGRITY.
    pub fn new(user: &str, password: &str, realm: &str, tuple: FiveTuple) -> Self {
        Self {
            tuple,
            username: user.to_owned(),
            key: long_term_key_md5(user, realm, password),
            nonce: None,
            realm: realm.to_owned(),
            expected_realm: realm.to_owned(),
            fingerprint: false,
            sec: Sec::default(),
        }
    }

    /// A client that negotiates SHA-256 as RFC 8489 §9.2.3 describes: it echoes
    /// PASSWORD-ALGORITHMS, sends PASSWORD-ALGORITHM SHA-256 and signs with
    /// MESSAGE-INTEGRITY-SHA256 under the SHA-256 key.
    pub fn sha256(user: &str, password: &str, realm: &str, tuple: FiveTuple) -> Self {
        let mut c = Self::new(user, password, realm, tuple);
        c.sec.send_algorithms = true;
        c.sec.algorithm = Some((ALGORITHM_SHA256, Vec::new()));
        c.sec.key = Some(long_term_key_sha256(user, realm, password).to_vec());
        c.sec.mac = Mac::Sha256;
        c
    }

    /// The key requests are signed with and responses must verify with.
    pub fn signing_key(&self) -> Vec<u8> {
        self.sec.key.clone().unwrap_or_else(|| self.key.to_vec())
    }

    /// Checks a response's integrity the way this client signs: the same kind of
    /// attribute, under the same key (RFC 8489 §9.2.5).
    pub fn check_response(&self, r: &Resp) {
        match self.sec.mac {
            Mac::Sha1 if self.sec.key.is_none() => r.check_integrity(&self.key),
            Mac::Sha1 => r.check_integrity_with(&self.signing_key(), false),
            Mac::Sha256 | Mac::Both => r.check_integrity_with(&self.signing_key(), true),
        }
    }

    /// Takes the NONCE (and PASSWORD-ALGORITHMS) of a 401 or 438, which must
    /// name `expected_realm`.
    pub fn learn_nonce(&mut self, r: &Resp) {
        let m = r.msg();
        let Some(Ok(Nonce(n))) = m.get::<Nonce>() else {
            panic!("challenge without NONCE");
        };
        let Some(Ok(Realm(realm))) = m.get::<Realm>() else {
            panic!("challenge without REALM");
        };
        assert_eq!(realm, self.expected_realm);
        self.nonce = Some(n.to_vec());
        self.sec.offered = m
            .get::<PasswordAlgorithms>()
            .map(|a| a.expect("well-formed PASSWORD-ALGORITHMS").0.to_vec());
    }

    /// A request without credentials (the first of the dance).
    pub fn unauthenticated(&self, method: Method, f: &impl Fn(&mut MessageBuilder)) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let mut b = MessageBuilder::new(&mut buf, method, Class::Request, TransactionId::random());
        f(&mut b);
        if self.fingerprint {
            b.add_fingerprint();
        }
        b.finish();
        buf.to_vec()
    }

    /// A request signed with the current nonce: `f` adds the method's own
    /// attributes, then [`RequestAuth`] the credentials, as `sec` says.
    pub fn build(
        &self,
        method: Method,
        tid: TransactionId,
        f: &impl Fn(&mut MessageBuilder),
    ) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let mut b = MessageBuilder::new(&mut buf, method, Class::Request, tid);
        f(&mut b);
        let key = self.signing_key();
        let algorithms = self.sec.send_algorithms.then(|| {
            self.sec
                .algorithms_override
                .as_deref()
                .or(self.sec.offered.as_deref())
                .expect("a PASSWORD-ALGORITHMS to echo")
        });
        RequestAuth {
            username: (self.sec.userhash.is_none() || self.sec.also_username)
                .then_some(self.username.as_str()),
            userhash: self.sec.userhash.as_deref(),
            realm: &self.realm,
            nonce: self.nonce.as_deref().expect("nonce"),
            algorithm: self
                .sec
                .algorithm
                .as_ref()
                .map(|(alg, params)| (*alg, params.as_slice())),
            algorithms,
            key: &key,
            mac: match self.sec.mac {
                Mac::Sha1 => RequestMac::Sha1,
                Mac::Sha256 => RequestMac::Sha256,
                Mac::Both => RequestMac::Both {
                    sha1_key: self.sec.sha1_key.as_deref().unwrap_or(&key),
                },
            },
        }
        .write(&mut b);
        if self.fingerprint {
            b.add_fingerprint();
        }
        b.finish();
        buf.to_vec()
    }

    /// An authenticated request with transaction ID `tid`, doing the 401 → retry
    /// and 438 → retry dance through `send` (which hands bytes to the core and
    /// returns its reply). Checks that the final response's integrity verifies
    /// with this client's key.
    pub fn call(
        &mut self,
        mut send: impl FnMut(FiveTuple, &[u8]) -> Resp,
        method: Method,
        tid: TransactionId,
        f: impl Fn(&mut MessageBuilder),
    ) -> Resp {
        if self.nonce.is_none() {
            let r = send(self.tuple, &self.unauthenticated(method, &f));
            if r.code() == Some(300) {
                // Redirected before authentication (turn::redirect).
                return r;
            }
            assert_eq!(r.code(), Some(401), "first request must be challenged");
            self.learn_nonce(&r);
        }
        for _ in 0..2 {
            let r = send(self.tuple, &self.build(method, tid, &f));
            assert_eq!(r.msg().transaction_id(), tid);
            if r.code() == Some(438) {
                self.learn_nonce(&r);
                continue;
            }
            self.check_response(&r);
            return r;
        }
        panic!("438 twice in a row");
    }
}

/// A response, owned.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Resp(pub Vec<u8>);

impl Resp {
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("the core sent a malformed message")
    }

    pub fn class(&self) -> Class {
        self.msg().class()
    }

    pub fn code(&self) -> Option<u16> {
        self.msg().get::<ErrorCode>().map(|e| e.unwrap().code)
    }

    /// Asserts an error response with exactly this code.
    pub fn expect_error(&self, code: u16) {
        assert_eq!(self.class(), Class::Error, "expected error {code}");
        assert_eq!(self.code(), Some(code));
    }

    pub fn expect_success(&self) {
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
    pub fn check_integrity(&self, key: &[u8; 16]) {
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
    pub fn check_integrity_with(&self, key: &[u8], sha256: bool) {
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

    pub fn relayed(&self) -> Vec<SocketAddr> {
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

    pub fn relayed1(&self) -> SocketAddr {
        let r = self.relayed();
        assert_eq!(r.len(), 1, "expected one XOR-RELAYED-ADDRESS");
        r[0]
    }

    pub fn lifetime(&self) -> u32 {
        self.msg().get::<Lifetime>().expect("LIFETIME").unwrap().0
    }

    pub fn attr_types(&self) -> Vec<u16> {
        self.msg().attributes().map(|a| a.typ).collect()
    }
}
