//! Data from peers to the client (RFC 8656 §11.3, §12.5).

use super::*;

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
    let (_c, rid) = permitted(&mut h, "192.0.2.10:1000");
    let (o, bytes) = h.peer_data(rid, sa(PEER_B), b"spam");
    assert_eq!(o, PeerOutput::None);
    assert!(bytes.is_empty());
    assert_eq!(h.drops(DropReason::NoPermission), 1);
    assert_eq!(h.srv.stats().to_client_packets[0], 0);
    // An unknown relay socket.
    let (o, _) = h.peer_data(RelayId::new(999, 0), sa(PEER_A), b"x");
    assert_eq!(o, PeerOutput::None);
    assert_eq!(h.drops(DropReason::NoAllocation), 1);
}

#[test]
fn peer_data_without_headroom_or_tailroom_is_dropped() {
    let mut h = H::new();
    let (_c, rid) = permitted(&mut h, "192.0.2.10:1000");
    let mut buf = vec![0u8; PEER_HEADROOM + 8 + PEER_TAILROOM];
    let deliver = |h: &mut H, buf: &mut [u8], start, end| {
        h.srv
            .handle_peer(h.clock.now, rid, sa(PEER_A), buf, start, end)
    };
    let o = deliver(&mut h, &mut buf, PEER_HEADROOM - 1, PEER_HEADROOM + 4);
    assert_eq!(o, PeerOutput::None);
    let o = deliver(&mut h, &mut buf, PEER_HEADROOM, PEER_HEADROOM + 8 + 1);
    assert_eq!(o, PeerOutput::None);
    assert_eq!(h.drops(DropReason::Malformed), 2);
    let o = deliver(&mut h, &mut buf, PEER_HEADROOM, PEER_HEADROOM + 8);
    assert!(matches!(o, PeerOutput::ToClient { .. }));
}
