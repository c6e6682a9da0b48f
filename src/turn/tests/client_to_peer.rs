//! Send indications and ChannelData from the client (RFC 8656 §11.2, §12.4), and the per-allocation rate limit.

use super::*;

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

#[test]
fn send_to_peer_of_the_other_family_is_a_family_mismatch_even_when_denied() {
    // RFC 8656 §11.2 with the order of §10.2: the family comes before the policy, so
    // an IPv6 peer on an IPv4 allocation is counted as such, denied or not.
    let mut h = H::new();
    let (c, _) = allocated(&mut h, "192.0.2.10:1000");
    for peer in ["[::1]:22", PEER_V6] {
        let (o, _) = h.send_raw(
            c.tuple,
            &send_indication(TransactionId::random(), sa(peer), b"x"),
        );
        assert_eq!(o, Output::None);
    }
    assert_eq!(h.drops(DropReason::FamilyMismatch), 2);
    assert_eq!(h.drops(DropReason::DeniedPeer), 0);
}

#[test]
fn send_with_dont_fragment_needs_an_allocation_that_sets_df() {
    // RFC 8656 §11.2: a server that cannot set DF treats DONT-FRAGMENT in a
    // Send indication as an unknown comprehension-required attribute: discarded.
    // DF is a property of the relay socket, asked for in the Allocate.
    let send_df_to = |peer: &str| {
        hand_built(Method::Send, Class::Indication, |b| {
            b.add(&XorPeerAddress(sa(peer)));
            b.add(&Data(b"x"));
            b.add_raw(attr::DONT_FRAGMENT, &[]);
        })
        .to_vec()
    };
    let send_df = || send_df_to(PEER_A);
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V6));
    })
    .expect_success();
    h.create_permission(&mut c, &[sa(PEER_A), sa(PEER_V6)])
        .expect_success();
    let (o, _) = h.send_raw(c.tuple, &send_df());
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::UnknownAttribute), 1);
    // IPv6 has no DF bit: the attribute is ignored towards IPv6 peers (§13).
    let (o, _) = h.send_raw(c.tuple, &send_df_to(PEER_V6));
    assert!(matches!(o, Output::ToPeer { .. }), "{o:?}");
    // Nor does it count for a client over IPv6 UDP (a translation, §13).
    let mut v6 = Client::alice("[2001:db8::10]:1000");
    h.allocate(&mut v6).expect_success();
    h.create_permission(&mut v6, &[sa(PEER_A)]).expect_success();
    let (o, _) = h.send_raw(v6.tuple, &send_df());
    assert!(matches!(o, Output::ToPeer { .. }), "{o:?}");
    assert_eq!(h.drops(DropReason::UnknownAttribute), 1);
    let mut d = Client::alice("192.0.2.11:1000");
    h.allocate_with(&mut d, |b| {
        b.add_raw(attr::DONT_FRAGMENT, &[]);
    })
    .expect_success();
    h.create_permission(&mut d, &[sa(PEER_A)]).expect_success();
    let (o, _) = h.send_raw(d.tuple, &send_df());
    assert!(matches!(o, Output::ToPeer { .. }), "{o:?}");
    assert_eq!(h.drops(DropReason::UnknownAttribute), 1);
}

#[test]
fn send_indication_relays_the_data_range() {
    let mut h = H::new();
    let (c, rid) = permitted(&mut h, "192.0.2.10:1000");
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
        Event::AllocationClosed { allocation, .. } => Some(allocation.traffic),
        _ => None,
    });
    let t = closed.unwrap();
    assert_eq!(t.to_peer_bytes, 110_000);
    assert_eq!(t.to_client_bytes, 100_000);
}

#[test]
fn send_indication_needs_peer_and_data_and_may_carry_zero_bytes() {
    // RFC 8656 §11.2: both XOR-PEER-ADDRESS and DATA, else discarded; DATA may
    // be empty. §5: an indication on a 5-tuple without allocation is ignored.
    let mut h = H::new();
    let tuple = udp("192.0.2.10:1000");
    let (o, _) = h.send_raw(
        tuple,
        &send_indication(TransactionId::random(), sa(PEER_A), b"x"),
    );
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::NoAllocation), 1);
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let partial = |peer: bool, data: bool| {
        hand_built(Method::Send, Class::Indication, |b| {
            if peer {
                b.add(&XorPeerAddress(sa(PEER_A)));
            }
            if data {
                b.add(&Data(b"x"));
            }
        })
        .to_vec()
    };
    for (peer, data) in [(true, false), (false, true)] {
        let (o, _) = h.send_raw(c.tuple, &partial(peer, data));
        assert_eq!(o, Output::None, "peer {peer}, data {data}");
    }
    assert_eq!(h.drops(DropReason::Malformed), 2);
    let msg = send_indication(TransactionId::random(), sa(PEER_A), b"");
    match h.send_raw(c.tuple, &msg).0 {
        Output::ToPeer { start, end, .. } => assert_eq!(start, end),
        o => panic!("expected an empty datagram, got {o:?}"),
    }
}

#[test]
fn channel_data_rules_from_the_client() {
    // RFC 8656 §12.6.
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    // A datagram too short for its length field: discarded.
    let mut short = channel_data_msg(0x4000, b"abcd", false);
    short.truncate(6);
    assert_eq!(h.send_raw(c.tuple, &short).0, Output::None);
    assert_eq!(h.drops(DropReason::Malformed), 1);
    // Reserved first bytes (0x8000 and up are not ChannelData at all).
    for n in [0x8000u16, 0xFFFF] {
        let msg = channel_data_msg(n, b"x", false);
        assert_eq!(h.send_raw(c.tuple, &msg).0, Output::None, "{n:#06x}");
    }
    assert_eq!(h.drops(DropReason::Malformed), 3);
    // A number in range but not bound: discarded.
    let msg = channel_data_msg(0x4001, b"x", false);
    assert_eq!(h.send_raw(c.tuple, &msg).0, Output::None);
    assert_eq!(h.drops(DropReason::UnknownChannel), 1);
    // Length 0 is valid: an empty datagram goes to the peer.
    match h.send_raw(c.tuple, &channel_data_msg(0x4000, b"", false)).0 {
        Output::ToPeer { start, end, .. } => assert_eq!(start, end),
        o => panic!("expected an empty datagram, got {o:?}"),
    }
    // ChannelData MUST NOT refresh the permission (nor the binding): sent at
    // 299 s, the permission installed at 0 s still ends at 300 s.
    h.at(secs(299));
    let msg = channel_data_msg(0x4000, b"x", false);
    assert!(matches!(h.send_raw(c.tuple, &msg).0, Output::ToPeer { .. }));
    h.at(secs(300));
    assert_eq!(h.send_raw(c.tuple, &msg).0, Output::None);
    assert_eq!(h.drops(DropReason::NoPermission), 1);
}
