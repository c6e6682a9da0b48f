//! Fuzz the STUN message parser, every typed attribute decoder, the integrity and
//! fingerprint verifiers, and the builder.
//!
//! Properties checked, beyond "no panic":
//! - a parsed message is exactly the input, and every honoured attribute value is a
//!   sub-slice of it; the integrity/fingerprint attributes are never among them;
//! - `unknown_required()` lists only unknown comprehension-required types that occur;
//! - every typed decode that succeeds re-encodes to bytes that decode to the same value
//!   (and re-encode to the same bytes);
//! - re-encoding the honoured attributes with `MessageBuilder::add_raw` re-parses to the
//!   same method, class, transaction ID and attribute list;
//! - MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT added by the builder
//!   verify, and the attribute list is unchanged by adding them.
#![no_main]

use bytes::BytesMut;
use ferroturn::stun::attr::{self, *};
use ferroturn::stun::{Message, MessageBuilder, RawAttr};
use libfuzzer_sys::fuzz_target;

/// Decodes attribute `$t` with `m.get`, and when that succeeds checks that
/// encode → decode → encode is stable.
macro_rules! check_typed {
    ($m:expr, $tid:expr, $($t:ident),* $(,)?) => {$(
        if let Some(Ok(v)) = $m.get::<$t>() {
            let mut enc = BytesMut::new();
            v.encode(&$tid, &mut enc);
            let again = <$t>::decode(&enc, &$tid).unwrap_or_else(|e| {
                panic!("{}: {v:?} encodes to {enc:?} which fails to decode: {e}", stringify!($t))
            });
            assert_eq!(v, again, "{} does not round-trip", stringify!($t));
            let mut enc2 = BytesMut::new();
            again.encode(&$tid, &mut enc2);
            assert_eq!(enc, enc2, "{} re-encodes differently", stringify!($t));
        }
    )*};
}

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

const KEY: [u8; 16] = [0x5a; 16];

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else {
        return;
    };
    assert_eq!(m.as_bytes(), data);
    let tid = m.transaction_id();

    let attrs: Vec<RawAttr<'_>> = m.attributes().collect();
    for a in &attrs {
        assert!(within(data, a.value));
        assert!(
            !matches!(
                a.typ,
                attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
            ),
            "integrity/fingerprint attribute among the honoured ones"
        );
    }
    for &t in m.unknown_required() {
        assert!(t < 0x8000 && !attr::is_known(t));
        assert!(attrs.iter().any(|a| a.typ == t));
    }

    // Every typed getter.
    check_typed!(
        m,
        tid,
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        AlternateServer,
        Username,
        Realm,
        Software,
        AlternateDomain,
        Nonce,
        Userhash,
        ReservationToken,
        Lifetime,
        Fingerprint,
        ConnectionId,
        Priority,
        IceControlled,
        IceControlling,
        DontFragment,
        UseCandidate,
        MessageIntegrity,
        MessageIntegritySha256,
        ErrorCode,
        AddressErrorCode,
        UnknownAttributes,
        PasswordAlgorithm,
        PasswordAlgorithms,
        RequestedTransport,
        RequestedAddressFamily,
        AdditionalAddressFamily,
        EvenPort,
        Data,
        ChannelNumber,
        Icmp,
    );
    // Decoding goes through `UnknownAttributes`; this one only encodes.
    assert!(!matches!(m.get::<UnknownAttributeList<'_>>(), Some(Ok(_))));
    if let Some(Ok(u)) = m.get::<UnknownAttributes<'_>>() {
        let n = u.types().count();
        assert_eq!(
            n * 2,
            m.get_raw(attr::UNKNOWN_ATTRIBUTES).map_or(0, <[u8]>::len)
        );
    }
    if let Some(Ok(p)) = m.get::<PasswordAlgorithms<'_>>() {
        for alg in p.iter() {
            assert!(within(data, alg.params));
        }
    }

    // Verification never panics, and says Missing exactly when the attribute is absent.
    if !m.has_integrity() {
        assert!(m.verify_integrity(&KEY).is_err());
    } else {
        let _ = m.verify_integrity(&[0; 16]);
    }
    if !m.has_integrity_sha256() {
        assert!(m.verify_integrity_sha256(&KEY).is_err());
    } else {
        let _ = m.verify_integrity_sha256(&KEY);
    }
    if !m.has_fingerprint() {
        assert!(m.verify_fingerprint().is_err());
    } else {
        let _ = m.verify_fingerprint();
    }

    // Re-encode the honoured attributes and re-parse.
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(&mut buf, m.method(), m.class(), tid);
    for a in &attrs {
        b.add_raw(a.typ, a.value);
    }
    let plain_len = b.finish();
    assert!(plain_len <= data.len());
    let m2 = Message::parse(&buf).expect("re-encoded message parses");
    assert_eq!(m2.message_type(), m.message_type());
    assert_eq!((m2.method(), m2.class()), (m.method(), m.class()));
    assert_eq!(m2.transaction_id(), tid);
    let attrs2: Vec<RawAttr<'_>> = m2.attributes().collect();
    assert_eq!(attrs, attrs2);
    assert_eq!(m.unknown_required(), m2.unknown_required());

    // Protect the re-encoded message; the builder and the verifiers must agree.
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(&mut buf, m.method(), m.class(), tid);
    for a in &attrs {
        b.add_raw(a.typ, a.value);
    }
    b.add_message_integrity(&KEY)
        .add_message_integrity_sha256(&KEY)
        .add_fingerprint();
    let len = b.finish();
    if len <= usize::from(u16::MAX) {
        let m3 = Message::parse(&buf).expect("protected message parses");
        assert!(m3.has_integrity() && m3.has_integrity_sha256() && m3.has_fingerprint());
        m3.verify_integrity(&KEY)
            .expect("MESSAGE-INTEGRITY verifies");
        m3.verify_integrity_sha256(&KEY)
            .expect("MESSAGE-INTEGRITY-SHA256 verifies");
        m3.verify_fingerprint().expect("FINGERPRINT verifies");
        assert!(m3.verify_integrity(&[0; 16]).is_err());
        let attrs3: Vec<RawAttr<'_>> = m3.attributes().collect();
        assert_eq!(attrs, attrs3);
    }
});
