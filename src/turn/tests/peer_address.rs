//! Peer addresses behind the 1:1 NAT of `external-ip`.

use super::*;

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
