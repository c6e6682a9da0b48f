//! CreatePermission and permission lifetime (RFC 8656 §9).

use super::*;

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

#[test]
fn family_mismatch_is_443_before_the_policy_403() {
    // RFC 8656 §10.2 and §12.2: the family is a MUST (443), the policy a MAY (403),
    // so a denied address of the wrong family is 443. coturn's
    // `turnutils_uclient -G` (an IPv6 peer on an IPv4 allocation) aborts on 403.
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    for peer in ["[::1]:80", "[::ffff:127.0.0.1]:80", "[fe80::1]:80", PEER_V6] {
        let r = h.create_permission(&mut c, &[sa(peer)]);
        assert_eq!(r.code(), Some(443), "CreatePermission {peer}");
        let r = h.channel_bind(&mut c, 0x4000, sa(peer));
        assert_eq!(r.code(), Some(443), "ChannelBind {peer}");
    }
    // Over every address of one request: a denied IPv4 address first and an
    // IPv6 one after it is still 443.
    h.create_permission(&mut c, &[sa("127.0.0.1:80"), sa(PEER_V6)])
        .expect_error(443);
    // A denied address of the allocation's family stays 403.
    h.create_permission(&mut c, &[sa("127.0.0.1:80")])
        .expect_error(403);
    h.channel_bind(&mut c, 0x4000, sa("127.0.0.1:80"))
        .expect_error(403);
    // RFC 8656 §12.2 lists the channel conflicts (400) before the family.
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    h.channel_bind(&mut c, 0x4000, sa(PEER_V6))
        .expect_error(400);
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
fn permission_expires_after_permission_lifetime() {
    let mut h = H::new();
    let (mut c, rid) = permitted(&mut h, "192.0.2.10:1000");
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
