//! Responses and the Binding method: 400 to unknown methods, 420, FINGERPRINT, malformed and unexpected messages.

use super::*;

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
    let unknown = unknown_attributes(&r);
    assert_eq!(unknown, vec![0x0031]);
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn unknown_required_attribute_in_every_turn_request_is_420() {
    // RFC 8489 §6.3.1: requests keep getting 420 with UNKNOWN-ATTRIBUTES, signed,
    // and change nothing; only indications are discarded instead.
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    let unknown = |b: &mut MessageBuilder| {
        b.add_raw(0x0031, &[0; 4]);
    };
    type Attrs = fn(&mut MessageBuilder);
    let cases: [(Method, Attrs); 3] = [
        (Method::Refresh, |_| {}),
        (Method::CreatePermission, |b| {
            b.add(&XorPeerAddress(sa(PEER_A)));
        }),
        (Method::ChannelBind, |b| {
            b.add(&ChannelNumber(0x4000));
            b.add(&XorPeerAddress(sa(PEER_A)));
        }),
    ];
    for (method, f) in cases {
        let r = h.call(&mut c, method, |b| {
            f(b);
            unknown(b);
        });
        r.expect_error(420);
        assert!(r.msg().has_integrity(), "{method:?}");
        let types: Vec<u16> = r
            .msg()
            .get::<UnknownAttributes>()
            .unwrap()
            .unwrap()
            .types()
            .collect();
        assert_eq!(types, vec![0x0031], "{method:?}");
    }
    // Nothing was installed: the channel number is still free for another peer.
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_success();
}

#[test]
fn indication_with_unknown_required_attribute_is_discarded_and_counted() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let indication = |method: Method, typ: u16| {
        let mut buf = BytesMut::new();
        let mut b =
            MessageBuilder::new(&mut buf, method, Class::Indication, TransactionId::random());
        if method == Method::Send {
            b.add(&XorPeerAddress(sa(PEER_A)));
            b.add(&Data(b"payload"));
        }
        b.add_raw(typ, &[0; 4]);
        b.finish();
        buf.to_vec()
    };
    // RFC 8489 §6.3.2: a Send indication with one is not relayed.
    let (o, _) = h.send_raw(c.tuple, &indication(Method::Send, 0x0031));
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::UnknownAttribute), 1);
    assert_eq!(h.srv.stats().to_peer_packets[0], 0);
    // Nor is a Binding indication (a keep-alive) answered or taken silently.
    let (o, _) = h.send_raw(c.tuple, &indication(Method::Binding, 0x7FFF));
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::UnknownAttribute), 2);
    // An unknown comprehension-optional attribute is ignored: relayed.
    let (o, _) = h.send_raw(c.tuple, &indication(Method::Send, 0x8031));
    assert!(matches!(o, Output::ToPeer { .. }), "{o:?}");
    assert_eq!(h.drops(DropReason::UnknownAttribute), 2);
}

#[test]
fn unknown_required_attribute_in_binding_is_420() {
    let mut h = H::new();
    let tuple = udp("192.0.2.10:1000");
    let buf = hand_built(Method::Binding, Class::Request, |b| {
        b.add_raw(0x7777, &[1, 2]);
        b.add_raw(0x0031, &[]);
    });
    let r = h.request(tuple, &buf);
    let unknown = unknown_attributes(&r);
    assert_eq!(unknown, vec![0x7777, 0x0031]);
    assert!(!r.msg().has(attr::XOR_MAPPED_ADDRESS));
}

#[test]
fn fingerprint_in_request_means_fingerprint_in_response() {
    let mut h = H::new();
    let (_c, r) = allocated_with_fingerprints(&mut h);
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
    let (c, _) = allocated_with_fingerprints(&mut h);
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
    let buf = hand_built(Method::Binding, Class::Request, |b| {
        b.add_fingerprint();
    });
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
    let buf = hand_built(Method::Binding, Class::Indication, |_| {});
    assert_eq!(h.send_raw(udp("192.0.2.10:1000"), &buf).0, Output::None);
}

#[test]
fn malformed_and_unexpected_messages_are_dropped() {
    let mut h = H::new();
    let tuple = udp("192.0.2.10:1000");
    assert_eq!(h.send_raw(tuple, b"\x00\x01\x00").0, Output::None);
    assert_eq!(h.drops(DropReason::Malformed), 1);
    let buf = hand_built(Method::Allocate, Class::Success, |_| {});
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

/// A Binding request of exactly `len` bytes (a multiple of 4, at least 24),
/// padded out with a comprehension-optional attribute the server ignores.
fn binding_of(len: usize) -> (Vec<u8>, TransactionId) {
    let tid = TransactionId::random();
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(&mut buf, Method::Binding, Class::Request, tid);
    b.add_raw(0x8031, &vec![0x20; len - 24]);
    b.finish();
    assert_eq!(buf.len(), len);
    (buf.to_vec(), tid)
}

#[test]
fn message_over_max_message_size_is_dropped_unanswered_and_counted() {
    let mut h = H::new();
    assert_eq!(h.srv.config().max_message_size, 2048);
    let tuple = udp("192.0.2.10:1000");
    // The 4,000-byte Binding of issue 12: no answer.
    let (big, _) = binding_of(4000);
    assert_eq!(h.send_raw(tuple, &big).0, Output::None);
    assert_eq!(h.drops(DropReason::Oversized), 1);
    // The limit is inclusive: 2,048 bytes are answered, 2,052 are not.
    let (at, tid) = binding_of(2048);
    let r = h.request(tuple, &at);
    r.expect_success();
    assert_eq!(r.msg().transaction_id(), tid);
    assert_eq!(h.send_raw(tuple, &binding_of(2052).0).0, Output::None);
    assert_eq!(h.drops(DropReason::Oversized), 2);
    // So is an oversized TURN request: not even challenged.
    let c = Client::alice("192.0.2.11:1000");
    let alloc = c.unauthenticated(Method::Allocate, &|b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        b.add_raw(0x8031, &[0; 4000]);
    });
    assert_eq!(h.send_raw(c.tuple, &alloc).0, Output::None);
    assert_eq!(h.drops(DropReason::Oversized), 3);
    assert_eq!(h.drops(DropReason::Malformed), 0);
    // Nothing was counted as a request.
    let answered: u64 = h.srv.stats().requests.iter().flatten().sum();
    assert_eq!(answered, 1);
}

#[test]
fn webrtc_sized_data_relays_at_the_default_and_bigger_once_raised() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    // 1,500 bytes of payload (more than a 1,500-byte MTU carries): both ways of
    // sending it pass.
    let payload = vec![7u8; 1500];
    let send = send_indication(TransactionId::random(), sa(PEER_A), &payload);
    assert!(matches!(
        h.send_raw(c.tuple, &send).0,
        Output::ToPeer { .. }
    ));
    let cd = channel_data_msg(0x4000, &payload, false);
    assert!(matches!(h.send_raw(c.tuple, &cd).0, Output::ToPeer { .. }));
    // 4,000 bytes do not, counted as oversized (not as any other reason).
    let big = channel_data_msg(0x4000, &[7u8; 4000], false);
    assert_eq!(h.send_raw(c.tuple, &big).0, Output::None);
    let big_send = send_indication(TransactionId::random(), sa(PEER_A), &[7u8; 4000]);
    assert_eq!(h.send_raw(c.tuple, &big_send).0, Output::None);
    assert_eq!(h.drops(DropReason::Oversized), 2);
    assert_eq!(h.srv.stats().to_peer_packets[0], 2);
    // An operator who raises the limit (a reload) relays them.
    let mut cfg = (**h.srv.config()).clone();
    cfg.max_message_size = 65_535;
    h.srv.reconfigure(Arc::new(cfg));
    assert!(matches!(h.send_raw(c.tuple, &big).0, Output::ToPeer { .. }));
    assert!(matches!(
        h.send_raw(c.tuple, &big_send).0,
        Output::ToPeer { .. }
    ));
    assert_eq!(h.drops(DropReason::Oversized), 2);
}
