//! The long-term credential mechanism (RFC 8489 §9.2): 401, 438, 441, REST credentials, password algorithms, MESSAGE-INTEGRITY-SHA256, bid-down protection, USERHASH.

use super::*;

#[test]
fn integrity_without_nonce_is_400_without_integrity() {
    let mut h = H::new();
    let c = Client::alice("192.0.2.10:1000");
    let buf = alice_allocate(|b| {
        b.add_message_integrity(&c.key);
    });
    let r = h.request(c.tuple, &buf);
    r.expect_error(400);
    let m = r.msg();
    assert!(!m.has_integrity());
    assert!(!m.has(attr::NONCE) && !m.has(attr::REALM) && !m.has(attr::USERNAME));
}

/// The attributes of every 401 and 438, in order (RFC 8489 §9.2.4).
const CHALLENGE: [u16; 4] = [
    attr::ERROR_CODE,
    attr::REALM,
    attr::NONCE,
    attr::PASSWORD_ALGORITHMS,
];

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
        crate::turn::auth::NonceCheck::Valid
    );
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_401() {
    let mut h = H::new();
    let mut wrong = Client::udp("alice", "not-alice-pw", "192.0.2.10:1000");
    let mut unknown = Client::udp("mallory", "whatever", "192.0.2.11:1000");
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
            crate::turn::auth::NonceCheck::Valid
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

pub(super) fn rest_store(secrets: &[&str]) -> Arc<dyn CredentialStore> {
    Arc::new(ChainStore::new(vec![Box::new(RestSecrets::new(secrets))]))
}

pub(super) fn rest_client(secret: &str, expiry: u64, client: &str) -> Client {
    let user = format!("{expiry}:alice");
    let pw = rest_password(secret.as_bytes(), &user);
    Client::udp(&user, &pw, client)
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
fn nonce_older_than_its_lifetime_is_438() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    challenged(&mut h, &mut c);
    let old = c.nonce.clone();
    h.advance(secs(599));
    // One second short of the lifetime: still good, used on a Refresh (437).
    let r = h.request(c.tuple, &bare_refresh(&c));
    r.expect_error(437);
    h.advance(secs(1));
    let r = allocate_once(&mut h, &c);
    r.expect_error(438);
    assert!(!r.msg().has_integrity());
    assert_eq!(r.msg().get::<Realm>().unwrap().unwrap().0, REALM);
    c.learn_nonce(&r);
    assert_ne!(c.nonce, old);
    let r = allocate_once(&mut h, &c);
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
    challenged(&mut h, &mut c);
    let good = c.nonce.clone().unwrap();
    let mut bad = good.clone();
    bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
    c.nonce = Some(bad);
    allocate_once(&mut h, &c).expect_error(438);
    // A nonce issued to another client address does not verify here either.
    let mut other = Client::alice("192.0.2.99:1000");
    other.nonce = Some(good);
    allocate_once(&mut h, &other).expect_error(438);
    assert_eq!(h.srv.allocations(), 0);
}

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

/// The PASSWORD-ALGORITHMS every challenge carries: SHA-256, then MD5.
const OFFERED: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

/// A named change to what a well-behaved client would send.
type Tamper = (&'static str, fn(&mut Sec));

/// Each tampering, applied by a fresh SHA-256 client after its 401, gets a 400
/// that neither authenticates nor allocates.
fn each_is_a_plain_400(h: &mut H, cases: &[Tamper]) {
    for (i, (what, f)) in cases.iter().enumerate() {
        let mut c = Client::sha256_udp("alice", "alice-pw", &format!("192.0.2.10:{}", 1000 + i));
        challenged(h, &mut c);
        f(&mut c.sec);
        let r = allocate_once(h, &c);
        assert_eq!(r.code(), Some(400), "{what}");
        expect_plain_400(h, &r);
    }
}

fn allocate_attrs(b: &mut MessageBuilder) {
    b.add(&RequestedTransport(PROTOCOL_UDP));
}

impl H {
    /// A nonce for `c`'s address that advertises no security feature (what a
    /// classic RFC 5389 server would send).
    fn plain_nonce(&self, c: &Client) -> Vec<u8> {
        let nonce = self.shared.nonces.issue(self.unix_now(), c.tuple.client, 0);
        nonce.as_bytes().to_vec()
    }
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
    assert_eq!(r.attr_types(), CHALLENGE);
    let list = m.get::<PasswordAlgorithms>().unwrap().unwrap();
    assert_eq!(list.0, OFFERED);
    let algs: Vec<(u16, usize)> = list.iter().map(|a| (a.algorithm, a.params.len())).collect();
    assert_eq!(algs, [(ALGORITHM_SHA256, 0), (ALGORITHM_MD5, 0)]);
    // The nonce cookie with both feature bits (bit 0 password algorithms, bit 1
    // username anonymity, counted from the right of the 24: "AAAD").
    let nonce = c.nonce.clone().unwrap();
    assert_eq!(&nonce[..13], b"obMatJos2AAAD");
    assert_eq!(
        crate::turn::auth::nonce_features(&nonce),
        crate::turn::auth::FEATURE_PASSWORD_ALGORITHMS
            | crate::turn::auth::FEATURE_USERNAME_ANONYMITY
    );
    assert_eq!(
        h.shared
            .nonces
            .verify(&nonce, h.unix_now(), c.tuple.client, 600),
        crate::turn::auth::NonceCheck::Valid
    );
    // A 438 carries the same three (RFC 8489 §9.2.4).
    h.advance(secs(600));
    let r = allocate_once(&mut h, &c);
    r.expect_error(438);
    assert_eq!(r.attr_types(), CHALLENGE);
    assert_eq!(
        r.msg().get::<PasswordAlgorithms>().unwrap().unwrap().0,
        OFFERED
    );
}

#[test]
fn sha256_with_message_integrity_sha256_end_to_end() {
    let mut h = H::new();
    let mut c = Client::sha256_udp("alice", "alice-pw", "192.0.2.10:1000");
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
    let mut c = Client::sha256_udp("alice", "alice-pw", "192.0.2.10:1000");
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
    let mut c = Client::sha256_udp("alice", "alice-pw", "192.0.2.10:1000");
    c.sec.mac = Mac::Both;
    c.sec.sha1_key = Some(vec![0x55; 32]);
    let r = h.allocate(&mut c);
    r.expect_success();
    assert!(!r.msg().has_integrity());
    // A good MESSAGE-INTEGRITY with a bad MESSAGE-INTEGRITY-SHA256: 401.
    let mut d = Client::sha256_udp("alice", "alice-pw", "192.0.2.10:1001");
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
    each_is_a_plain_400(&mut h, &tamper);
    // The same client, untampered, gets in.
    let mut c = Client::sha256_udp("alice", "alice-pw", "192.0.2.11:1000");
    h.allocate(&mut c).expect_success();
}

#[test]
fn unknown_or_malformed_password_algorithm_is_400() {
    let mut h = H::new();
    let mut c = Client::sha256_udp("alice", "alice-pw", "192.0.2.10:1000");
    challenged(&mut h, &mut c);
    for bad in [0x0000, 0x0003, 0xFFFF] {
        c.sec.algorithm = Some((bad, Vec::new()));
        let r = allocate_once(&mut h, &c);
        expect_plain_400(&h, &r);
    }
    // A PASSWORD-ALGORITHM value that is not one entry (3 bytes).
    let buf = alice_allocate(|b| {
        b.add(&Nonce(c.nonce.as_deref().unwrap()));
        b.add_raw(attr::PASSWORD_ALGORITHM, &[0, 2, 0]);
        b.add_raw(attr::PASSWORD_ALGORITHMS, &OFFERED);
        b.add_message_integrity_sha256(c.sec.key.as_deref().unwrap());
    });
    let r = h.request(c.tuple, &buf);
    expect_plain_400(&h, &r);
}

#[test]
fn negotiation_attributes_under_a_nonce_without_features_are_400() {
    // Every nonce the server issues has the feature bits; one without them (as an
    // RFC 5389 server would send) offered no list, so negotiating under it is an
    // error, while a classic request under it is fine.
    let mut h = H::new();
    let mut c = Client::sha256_udp("alice", "alice-pw", "192.0.2.10:1000");
    challenged(&mut h, &mut c);
    c.nonce = Some(h.plain_nonce(&c));
    let r = allocate_once(&mut h, &c);
    expect_plain_400(&h, &r);
    let mut u = Client::alice("192.0.2.10:1001");
    u.nonce = Some(h.plain_nonce(&u));
    u.sec.userhash = Some(userhash("alice", REALM).to_vec());
    let r = allocate_once(&mut h, &u);
    expect_plain_400(&h, &r);
    let mut d = Client::alice("192.0.2.10:1002");
    d.nonce = Some(h.plain_nonce(&d));
    let r = allocate_once(&mut h, &d);
    r.expect_success();
    r.check_integrity(&d.key);
}

#[test]
fn userhash_authenticates_and_the_allocation_belongs_to_the_resolved_user() {
    let mut h = H::new();
    let mut c = Client::sha256_udp("alice", "alice-pw", "192.0.2.10:1000");
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
            Event::AllocationClosed { allocation, .. } => Some(allocation.username),
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
    let mut by_hash = Client::sha256_udp("mallory", "whatever", "192.0.2.10:1000");
    by_hash.sec.userhash = Some(userhash("mallory", REALM).to_vec());
    let mut by_name = Client::sha256_udp("mallory", "whatever", "192.0.2.11:1000");
    let a = h.allocate(&mut by_hash);
    let b = h.allocate(&mut by_name);
    assert_eq!(challenge_attrs(&a), challenge_attrs(&b));
    // A known user's hash with the wrong password: 401 as well.
    let mut wrong = Client::sha256_udp("alice", "not-alice-pw", "192.0.2.12:1000");
    wrong.sec.userhash = Some(userhash("alice", REALM).to_vec());
    h.allocate(&mut wrong).expect_error(401);
    // A hash taken over another realm does not resolve in this one.
    let mut other = Client::sha256_udp("alice", "alice-pw", "192.0.2.13:1000");
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
    each_is_a_plain_400(&mut h, &cases);
}

#[test]
fn classic_md5_clients_are_answered_as_before() {
    // A client that ignores PASSWORD-ALGORITHMS and echoes the (longer) nonce
    // authenticates with the MD5 key and gets MESSAGE-INTEGRITY only.
    let mut h = H::new();
    let (c, r) = allocated_with_fingerprints(&mut h);
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
    let mut c = Client::sha256_udp(&user, &pw, "192.0.2.10:1000");
    h.allocate(&mut c).expect_success();
    // USERHASH cannot name a REST user: the store cannot invert the hash.
    let mut d = Client::sha256_udp(&user, &pw, "192.0.2.10:1001");
    d.sec.userhash = Some(userhash(&user, REALM).to_vec());
    h.allocate(&mut d).expect_error(401);
}

/// An Allocate carrying `attrs` as raw TLVs, signed with `key` when given.
fn raw_allocate(attrs: &[(u16, &[u8])], key: Option<&[u8]>) -> Vec<u8> {
    hand_built(Method::Allocate, Class::Request, |b| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        for (typ, value) in attrs {
            b.add_raw(*typ, value);
        }
        if let Some(k) = key {
            b.add_message_integrity(k);
        }
    })
    .to_vec()
}

fn auth_failures(h: &H, why: AuthFailure) -> u64 {
    h.srv.stats().auth_failures[why as usize]
}

#[test]
fn username_of_509_bytes_or_not_utf8_is_400_before_any_lookup() {
    let mut h = H::new();
    // 508 bytes is the longest USERNAME: an unknown user, 401 after the lookup.
    let mut longest = Client::udp(&"u".repeat(508), "pw", "192.0.2.10:1000");
    challenged(&mut h, &mut longest);
    allocate_once(&mut h, &longest).expect_error(401);
    assert_eq!(auth_failures(&h, AuthFailure::UnknownUser), 1);
    // 509 bytes, signed and under a valid nonce: 400 (RFC 8489 §14.3).
    let mut c = Client::udp(&"u".repeat(509), "pw", "192.0.2.11:1000");
    challenged(&mut h, &mut c);
    let r = allocate_once(&mut h, &c);
    expect_plain_400(&h, &r);
    // 255 two-byte characters are 510 bytes: the limit is in bytes.
    let mut c = Client::udp(&"é".repeat(255), "pw", "192.0.2.12:1000");
    challenged(&mut h, &mut c);
    {
        let r = allocate_once(&mut h, &c);
        expect_plain_400(&h, &r);
    }
    let nonce = c.nonce.clone().unwrap();
    let tuple = c.tuple;
    let long = vec![b'u'; 509];
    let bad_utf8: &[u8] = b"alice\xff\xfe";
    for (what, user) in [("509 bytes", &long[..]), ("invalid UTF-8", bad_utf8)] {
        // Unsigned: 400, not the 401 challenge.
        let r = h.request(tuple, &raw_allocate(&[(attr::USERNAME, user)], None));
        assert_eq!(r.code(), Some(400), "{what}, unsigned");
        expect_plain_400(&h, &r);
        // Signed, with REALM and a valid NONCE.
        let msg = raw_allocate(
            &[
                (attr::USERNAME, user),
                (attr::REALM, REALM.as_bytes()),
                (attr::NONCE, &nonce),
            ],
            Some(&c.key),
        );
        let r = h.request(tuple, &msg);
        assert_eq!(r.code(), Some(400), "{what}, signed");
        expect_plain_400(&h, &r);
    }
    // No credential lookup happened but the first.
    assert_eq!(auth_failures(&h, AuthFailure::UnknownUser), 1);
    assert_eq!(auth_failures(&h, AuthFailure::BadIntegrity), 0);
}

#[test]
fn realm_or_nonce_of_128_characters_or_over_763_bytes_is_400_before_the_nonce_check() {
    let mut h = H::new();
    // A REALM of 127 characters is well formed (and wrong here): 401.
    let mut c = Client::alice("192.0.2.10:1000");
    challenged(&mut h, &mut c);
    c.realm = "r".repeat(127);
    allocate_once(&mut h, &c).expect_error(401);
    assert_eq!(auth_failures(&h, AuthFailure::UnknownUser), 1);
    // 128 characters, signed under a valid nonce: 400 (RFC 8489 §14.9).
    c.realm = "r".repeat(128);
    {
        let r = allocate_once(&mut h, &c);
        expect_plain_400(&h, &r);
    }
    // 128 two-byte characters: 256 bytes, but too many characters.
    c.realm = "é".repeat(128);
    {
        let r = allocate_once(&mut h, &c);
        expect_plain_400(&h, &r);
    }
    c.realm = REALM.to_owned();
    // A NONCE of 127 characters is well formed (and not ours): 438.
    let good_nonce = c.nonce.clone().unwrap();
    c.nonce = Some(vec![b'n'; 127]);
    allocate_once(&mut h, &c).expect_error(438);
    assert_eq!(auth_failures(&h, AuthFailure::StaleNonce), 1);
    // 128 characters: 400 (RFC 8489 §14.10), not 438.
    c.nonce = Some(vec![b'n'; 128]);
    {
        let r = allocate_once(&mut h, &c);
        expect_plain_400(&h, &r);
    }
    // Over 763 bytes, unsigned: 400, not the 401 challenge.
    let long = vec![b'x'; 764];
    for typ in [attr::REALM, attr::NONCE] {
        let r = h.request(c.tuple, &raw_allocate(&[(typ, &long)], None));
        assert_eq!(r.code(), Some(400), "attribute {typ:#06x}");
        expect_plain_400(&h, &r);
    }
    // Over 763 bytes, signed, the other two attributes good.
    let msg = raw_allocate(
        &[
            (attr::USERNAME, b"alice"),
            (attr::REALM, &long),
            (attr::NONCE, &good_nonce),
        ],
        Some(&c.key),
    );
    {
        let r = h.request(c.tuple, &msg);
        expect_plain_400(&h, &r);
    }
    let msg = raw_allocate(
        &[
            (attr::USERNAME, b"alice"),
            (attr::REALM, REALM.as_bytes()),
            (attr::NONCE, &long),
        ],
        Some(&c.key),
    );
    {
        let r = h.request(c.tuple, &msg);
        expect_plain_400(&h, &r);
    }
    // Neither a lookup nor a nonce check since the two boundary cases.
    assert_eq!(auth_failures(&h, AuthFailure::UnknownUser), 1);
    assert_eq!(auth_failures(&h, AuthFailure::StaleNonce), 1);
    // The client still gets in with well-formed attributes.
    c.nonce = Some(good_nonce);
    allocate_once(&mut h, &c).expect_success();
}

/// One user known only by its MD5 key, as `ferroturn import coturn` brings
/// coturn's `turnusers_lt` rows over (no password, so no SHA-256 key).
struct KeyOnly;

impl CredentialStore for KeyOnly {
    fn lookup(&self, username: &str, realm: &str, _now_unix: u64) -> Lookup {
        if username != "carol" {
            return Lookup::Unknown;
        }
        let md5 = crate::stun::integrity::long_term_key_md5(username, realm, "carol-pw");
        Lookup::Found(crate::turn::auth::UserKeys::md5_only(md5), None)
    }
}

#[test]
fn a_key_only_user_authenticates_with_md5_and_not_with_sha256() {
    let mut h = H::with(base_config(), Arc::new(KeyOnly), QuotaTracker::new(0, 0));
    // The classic MD5 client (browsers): allocates, with MESSAGE-INTEGRITY
    // keyed by the stored MD5 key.
    let mut c = Client::udp("carol", "carol-pw", "192.0.2.10:1000");
    let r = h.allocate(&mut c);
    r.expect_success();
    r.msg().verify_integrity(&c.key).unwrap();
    // Wrong password with MD5: 401.
    let mut w = Client::udp("carol", "not-carol-pw", "192.0.2.11:1000");
    h.allocate(&mut w).expect_error(401);
    // An RFC 8489 client that negotiates SHA-256 with the right password: no
    // SHA-256 key is stored, so 401, counted like a bad MAC.
    let mut s = Client::sha256_udp("carol", "carol-pw", "192.0.2.12:1000");
    h.allocate(&mut s).expect_error(401);
    let f = h.srv.stats().auth_failures;
    assert_eq!(f[AuthFailure::BadIntegrity as usize], 2, "{f:?}");
    assert_eq!(h.srv.allocations(), 1);
}
