//! The STUN codec against the RFC 5769 test vectors, attribute round trips, and
//! malformed input (truncations, bit flips).

use std::net::SocketAddr;

use bytes::BytesMut;
use ferroturn::stun::attr::{self, *};
use ferroturn::stun::integrity::{long_term_key_md5, long_term_key_sha256, userhash};
use ferroturn::stun::{Class, Message, MessageBuilder, Method, ParseError, TransactionId};

struct Vector {
    name: String,
    bytes: Vec<u8>,
    /// The HMAC key: the short-term password bytes or the long-term MD5 key.
    key: Vec<u8>,
    has_fingerprint: bool,
    json: serde_json::Value,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("data/rfc5769_vectors.json");
    let doc: serde_json::Value = serde_json::from_str(text).expect("vectors parse");
    doc["vectors"]
        .as_array()
        .expect("vectors array")
        .iter()
        .map(|v| {
            let cred = &v["credential"];
            let key = if cred["mechanism"] == "long-term" {
                let key = long_term_key_md5(
                    cred["username"].as_str().unwrap(),
                    cred["realm"].as_str().unwrap(),
                    cred["password"].as_str().unwrap(),
                );
                assert_eq!(key.to_vec(), unhex(cred["key_md5_hex"].as_str().unwrap()));
                key.to_vec()
            } else {
                cred["password"].as_str().unwrap().as_bytes().to_vec()
            };
            Vector {
                name: v["name"].as_str().unwrap().to_owned(),
                bytes: unhex(v["hex"].as_str().unwrap()),
                key,
                has_fingerprint: v["expect_fingerprint_valid"] == true,
                json: v.clone(),
            }
        })
        .collect()
}

#[test]
fn rfc5769_vectors_parse_and_verify() {
    let vs = vectors();
    assert_eq!(vs.len(), 4);
    for v in &vs {
        let m = Message::parse(&v.bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            v.bytes.len(),
            v.json["total_length"].as_u64().unwrap() as usize
        );
        assert_eq!(
            format!("{:#06x}", m.message_type()),
            v.json["message_type"].as_str().unwrap()
        );
        assert_eq!(m.method(), Method::Binding);
        let tid = unhex(v.json["transaction_id"].as_str().unwrap());
        assert_eq!(&m.transaction_id().0[..], &tid[..]);
        let order: Vec<String> = m
            .attributes()
            .map(|a| format!("{:#06x}", a.typ))
            .chain(m.has_integrity().then(|| "0x0008".to_owned()))
            .chain(m.has_fingerprint().then(|| "0x8028".to_owned()))
            .collect();
        let expected: Vec<String> = v.json["attribute_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(order, expected, "{}", v.name);
        assert!(m.unknown_required().is_empty());
        m.verify_integrity(&v.key)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(m.has_fingerprint(), v.has_fingerprint);
        if v.has_fingerprint {
            m.verify_fingerprint().unwrap();
        }
        // A wrong key fails.
        let mut wrong = v.key.clone();
        wrong[0] ^= 1;
        assert!(m.verify_integrity(&wrong).is_err());
    }
}

#[test]
fn rfc5769_typed_attribute_values() {
    let vs = vectors();
    let req = Message::parse(&vs[0].bytes).unwrap();
    assert_eq!(req.class(), Class::Request);
    assert_eq!(
        req.get::<Software>().unwrap().unwrap().0,
        "STUN test client"
    );
    assert_eq!(req.get::<Priority>().unwrap().unwrap().0, 1845494271);
    assert_eq!(
        req.get::<IceControlled>().unwrap().unwrap().0,
        0x932f_f9b1_5126_3b36
    );
    assert_eq!(req.get::<Username>().unwrap().unwrap().0, "evtj:h6vY");

    let v4 = Message::parse(&vs[1].bytes).unwrap();
    assert_eq!(v4.class(), Class::Success);
    assert_eq!(v4.get::<Software>().unwrap().unwrap().0, "test vector");
    assert_eq!(
        v4.get::<XorMappedAddress>().unwrap().unwrap().0,
        "192.0.2.1:32853".parse::<SocketAddr>().unwrap()
    );

    let v6 = Message::parse(&vs[2].bytes).unwrap();
    assert_eq!(
        v6.get::<XorMappedAddress>().unwrap().unwrap().0,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse::<SocketAddr>()
            .unwrap()
    );

    let lt = Message::parse(&vs[3].bytes).unwrap();
    assert_eq!(lt.get::<Username>().unwrap().unwrap().0, "マトリックス");
    assert_eq!(lt.get::<Realm>().unwrap().unwrap().0, "example.org");
    assert_eq!(
        lt.get::<Nonce>().unwrap().unwrap().0,
        b"f//499k954d6OL34oL9FSTvy64sA"
    );
}

/// Offsets of the padding bytes of each TLV in a parsed message.
fn padding_positions(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 20;
    while off + 4 <= bytes.len() {
        let len = u16::from_be_bytes([bytes[off + 2], bytes[off + 3]]) as usize;
        let padded = (len + 3) & !3;
        out.extend(off + 4 + len..off + 4 + padded);
        off += 4 + padded;
    }
    out
}

/// Re-encodes each vector with the builder. 2.4 pads with zeros, so it must come
/// out byte for byte. 2.1–2.3 pad with spaces on purpose, which our builder (zero
/// padding, as RFC 8489 §14 asks of senders) cannot reproduce; for them every byte
/// except padding, MESSAGE-INTEGRITY and FINGERPRINT (which cover the padding) must
/// match, and our own MAC and fingerprint must verify.
#[test]
fn rfc5769_vectors_re_encode() {
    for v in vectors() {
        let m = Message::parse(&v.bytes).unwrap();
        let mut buf = BytesMut::new();
        let mut b = MessageBuilder::new(&mut buf, m.method(), m.class(), m.transaction_id());
        for a in m.attributes() {
            b.add_raw(a.typ, a.value);
        }
        b.add_message_integrity(&v.key);
        if m.has_fingerprint() {
            b.add_fingerprint();
        }
        b.finish();
        assert_eq!(buf.len(), v.bytes.len(), "{}", v.name);
        let ours = Message::parse(&buf).unwrap();
        ours.verify_integrity(&v.key).unwrap();
        if m.has_fingerprint() {
            ours.verify_fingerprint().unwrap();
        }
        let pads = padding_positions(&v.bytes);
        if pads.iter().all(|&p| v.bytes[p] == 0) {
            assert_eq!(
                &buf[..],
                &v.bytes[..],
                "{} must re-encode byte for byte",
                v.name
            );
        } else {
            let mac_start = v.bytes.len() - 24 - if m.has_fingerprint() { 8 } else { 0 };
            for i in 0..mac_start {
                if !pads.contains(&i) {
                    assert_eq!(buf[i], v.bytes[i], "{} byte {i}", v.name);
                }
            }
        }
    }
}

/// Typed re-encoding of the 2.2 response: same layout, same values.
#[test]
fn rfc5769_ipv4_response_typed_rebuild_verifies() {
    let v = &vectors()[1];
    let m = Message::parse(&v.bytes).unwrap();
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        Method::Binding,
        Class::Success,
        m.transaction_id(),
    );
    b.add(&Software("test vector"));
    b.add(&XorMappedAddress("192.0.2.1:32853".parse().unwrap()));
    b.add_message_integrity(&v.key);
    b.add_fingerprint();
    b.finish();
    let ours = Message::parse(&buf).unwrap();
    ours.verify_integrity(&v.key).unwrap();
    ours.verify_fingerprint().unwrap();
    // Only the padding byte after "test vector" and the two MACs differ.
    let diff: Vec<usize> = (0..buf.len()).filter(|&i| buf[i] != v.bytes[i]).collect();
    assert!(diff.contains(&(20 + 4 + 11)));
    assert!(diff.iter().all(|&i| i == 35 || i >= 44), "{diff:?}");
}

#[test]
fn every_single_bit_flip_is_detected() {
    for v in vectors() {
        for bit in 0..v.bytes.len() * 8 {
            let mut b = v.bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let ok = match Message::parse(&b) {
                Err(_) => false,
                Ok(m) => {
                    m.verify_integrity(&v.key).is_ok()
                        && (!v.has_fingerprint || m.verify_fingerprint().is_ok())
                }
            };
            assert!(!ok, "{}: flipping bit {bit} went undetected", v.name);
        }
    }
}

#[test]
fn every_truncated_prefix_is_rejected() {
    for v in vectors() {
        for n in 0..v.bytes.len() {
            assert!(
                Message::parse(&v.bytes[..n]).is_err(),
                "{}: prefix {n}",
                v.name
            );
        }
        // Truncations that also patch the length field to agree are still caught
        // when they cut an attribute.
        // (Dropping only FINGERPRINT leaves a valid message: MESSAGE-INTEGRITY does not
        // cover it, so those cuts stop before it.)
        let mi_end = v.bytes.len() - if v.has_fingerprint { 8 } else { 0 };
        for n in (20..mi_end).step_by(4) {
            let mut b = v.bytes[..n].to_vec();
            b[2..4].copy_from_slice(&((n - 20) as u16).to_be_bytes());
            if let Ok(m) = Message::parse(&b) {
                assert!(m.verify_integrity(&v.key).is_err());
            }
        }
    }
}

#[test]
fn long_term_keys_and_userhash() {
    // RFC 5769 §2.4's key, from the SASLprep'd password.
    let key = long_term_key_md5("マトリックス", "example.org", "TheMatrIX");
    assert_eq!(key.to_vec(), unhex("e8ca7ad59d5eb0518e312911d2dab2a9"));
    // RFC 8489 Appendix B.1 gives USERHASH for username "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>"
    // and realm "example.org".
    assert_eq!(
        userhash("マトリックス", "example.org").to_vec(),
        unhex("4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704")
    );
    assert_eq!(long_term_key_sha256("u", "r", "p").len(), 32);
}

fn build(f: impl FnOnce(&mut MessageBuilder)) -> (BytesMut, TransactionId) {
    let tid = TransactionId::random();
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(&mut buf, Method::Allocate, Class::Request, tid);
    f(&mut b);
    b.finish();
    (buf, tid)
}

fn round_trip<'a, A>(value: A)
where
    A: for<'b> Attr<'b> + PartialEq + std::fmt::Debug + Copy,
{
    let (buf, _) = build(|b| {
        b.add(&value);
    });
    let m = Message::parse(&buf).expect("parses");
    assert_eq!(m.attributes().count(), 1);
    let got: A = m.get::<A>().expect("present").expect("decodes");
    assert_eq!(got, value);
    assert_eq!(buf.len() % 4, 0);
}

macro_rules! round_trip_borrowed {
    ($ty:ident, $value:expr) => {{
        let value = $value;
        let (buf, _) = build(|b| {
            b.add(&value);
        });
        let m = Message::parse(&buf).expect("parses");
        let got = m.get::<$ty>().expect("present").expect("decodes");
        assert_eq!(got, value);
        // Padding is zero.
        let raw = m.attributes().next().unwrap();
        let pad_start = 20 + 4 + raw.value.len();
        assert!(buf[pad_start..].iter().all(|&b| b == 0));
    }};
}

#[test]
fn every_attribute_round_trips() {
    let v4: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
    for addr in [v4, v6] {
        round_trip(MappedAddress(addr));
        round_trip(XorMappedAddress(addr));
        round_trip(XorPeerAddress(addr));
        round_trip(XorRelayedAddress(addr));
        round_trip(AlternateServer(addr));
    }
    round_trip(Lifetime(600));
    round_trip(RequestedTransport(PROTOCOL_UDP));
    round_trip(RequestedAddressFamily(Family::V6));
    round_trip(AdditionalAddressFamily(Family::V6));
    round_trip(EvenPort { reserve: true });
    round_trip(EvenPort { reserve: false });
    round_trip(DontFragment);
    round_trip(ChannelNumber(0x4001));
    round_trip(ConnectionId(0xdead_beef));
    round_trip(Icmp {
        typ: 3,
        code: 1,
        data: 7,
    });
    round_trip(Priority(1845494271));
    round_trip(UseCandidate);
    round_trip(IceControlled(u64::MAX - 3));
    round_trip(IceControlling(42));
    round_trip_borrowed!(Username, Username("alice"));
    round_trip_borrowed!(Realm, Realm("example.org"));
    round_trip_borrowed!(Software, Software("ferroturn"));
    round_trip_borrowed!(AlternateDomain, AlternateDomain("turn.example.org"));
    round_trip_borrowed!(Nonce, Nonce(b"obMatJos2AAAB12345"));
    round_trip_borrowed!(Userhash, Userhash(&[7u8; 32]));
    round_trip_borrowed!(
        ReservationToken,
        ReservationToken(&[1, 2, 3, 4, 5, 6, 7, 8])
    );
    round_trip_borrowed!(Data, Data(&[1, 2, 3, 4, 5]));
    round_trip_borrowed!(Data, Data(&[]));
    round_trip_borrowed!(ErrorCode, ErrorCode::new(438, "Stale Nonce"));
    round_trip_borrowed!(
        AddressErrorCode,
        AddressErrorCode {
            family: Family::V6,
            code: 440,
            reason: "Address Family not Supported"
        }
    );
    round_trip_borrowed!(
        PasswordAlgorithm,
        PasswordAlgorithm {
            algorithm: ALGORITHM_SHA256,
            params: &[]
        }
    );

    // Lists.
    let (buf, _) = build(|b| {
        b.add(&UnknownAttributeList(&[0x7f01, 0x0031, 0x0abc]));
    });
    let m = Message::parse(&buf).unwrap();
    let ua = m.get::<UnknownAttributes>().unwrap().unwrap();
    assert_eq!(ua.types().collect::<Vec<_>>(), vec![0x7f01, 0x0031, 0x0abc]);

    let algs = [0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
    let (buf, _) = build(|b| {
        b.add(&PasswordAlgorithms(&algs));
    });
    let m = Message::parse(&buf).unwrap();
    let got = m.get::<PasswordAlgorithms>().unwrap().unwrap();
    let list: Vec<u16> = got.iter().map(|a| a.algorithm).collect();
    assert_eq!(list, vec![ALGORITHM_SHA256, ALGORITHM_MD5]);
    assert_eq!(got.0, &algs);

    // MESSAGE-INTEGRITY-SHA256 and FINGERPRINT built by the builder verify.
    let key = long_term_key_sha256("alice", "example.org", "secret");
    let (buf, _) = build(|b| {
        b.add(&Username("alice"));
        b.add_message_integrity_sha256(&key);
        b.add_fingerprint();
    });
    let m = Message::parse(&buf).unwrap();
    m.verify_integrity_sha256(&key).unwrap();
    m.verify_fingerprint().unwrap();
    assert!(m.verify_integrity(&key).is_err(), "no SHA-1 MAC was added");
}

#[test]
fn malformed_values_are_errors_not_panics() {
    let (buf, _) = build(|b| {
        b.add_raw(attr::XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]);
        b.add_raw(attr::LIFETIME, &[0, 0, 1]);
        b.add_raw(attr::USERNAME, &[0xff, 0xfe]);
        b.add_raw(attr::ERROR_CODE, &[0, 0, 9, 0]);
        b.add_raw(attr::CHANNEL_NUMBER, &[0x40]);
    });
    let m = Message::parse(&buf).unwrap();
    assert_eq!(
        m.get::<XorMappedAddress>().unwrap(),
        Err(AttrError::BadFamily)
    );
    assert_eq!(m.get::<Lifetime>().unwrap(), Err(AttrError::BadLength));
    assert_eq!(m.get::<Username>().unwrap(), Err(AttrError::BadUtf8));
    assert_eq!(m.get::<ErrorCode>().unwrap(), Err(AttrError::BadValue));
    assert_eq!(m.get::<ChannelNumber>().unwrap(), Err(AttrError::BadLength));
}

#[test]
fn first_of_duplicate_attributes_wins() {
    let (buf, _) = build(|b| {
        b.add(&Lifetime(1));
        b.add(&Lifetime(2));
    });
    let m = Message::parse(&buf).unwrap();
    assert_eq!(m.get::<Lifetime>().unwrap().unwrap().0, 1);
}

#[test]
fn integrity_sha256_truncated_forms_verify() {
    use hmac::{Hmac, Mac};
    let key = [9u8; 32];
    for mac_len in [16usize, 20, 24, 28, 32] {
        // Username "bob" (4 + 4 bytes), then MESSAGE-INTEGRITY-SHA256 of mac_len bytes.
        let (mut buf, _) = build(|b| {
            b.add(&Username("bob"));
        });
        let total = (8 + 4 + mac_len) as u16;
        buf[2..4].copy_from_slice(&total.to_be_bytes());
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&buf);
        let full = mac.finalize().into_bytes();
        buf.extend_from_slice(&[0x00, 0x1C, 0x00, mac_len as u8]);
        buf.extend_from_slice(&full[..mac_len]);
        let m = Message::parse(&buf).unwrap();
        m.verify_integrity_sha256(&key)
            .unwrap_or_else(|e| panic!("{mac_len}: {e}"));
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        assert!(Message::parse(&bad)
            .unwrap()
            .verify_integrity_sha256(&key)
            .is_err());
    }
    // A 12-byte MAC is not allowed at all.
    let (mut buf, _) = build(|b| {
        b.add_raw(attr::MESSAGE_INTEGRITY_SHA256, &[0; 12]);
    });
    assert_eq!(
        Message::parse(&buf).unwrap_err(),
        ParseError::BadIntegrityAttribute
    );
    buf.clear();
}
