//! ChannelBind and channel lifetime (RFC 8656 §12).

use super::*;

#[test]
fn channel_bind_number_out_of_range_is_400() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    for n in [0x3FFF, 0x8000, 0x0000, 0xFFFF] {
        h.channel_bind(&mut c, n, sa(PEER_A)).expect_error(400);
    }
    // The bounds themselves are valid: the RFC 5766 range, which RFC 5766 clients
    // such as coturn's own tools still use (see `stun::channel_data::CHANNEL_MAX`).
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    h.channel_bind(&mut c, 0x7FFF, sa(PEER_B)).expect_success();
}

#[test]
fn channel_bind_conflicts_are_400() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    // The number is bound to another peer.
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_error(400);
    // Same IP, other port is another transport address: still another peer.
    h.channel_bind(&mut c, 0x4000, sa("8.8.8.8:4001"))
        .expect_error(400);
    // The peer is bound to another number.
    h.channel_bind(&mut c, 0x4001, sa(PEER_A)).expect_error(400);
    // Rebinding the same pair refreshes it.
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
}

#[test]
fn channel_expires_and_its_number_cools_down() {
    let mut h = H::new();
    let mut c = allocated_for_an_hour(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    // Keep the permission alive past the channel's lifetime.
    h.at(secs(290));
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    h.at(secs(580));
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    h.at(secs(599));
    let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4000, b"abc", false));
    assert!(matches!(o, Output::ToPeer { .. }));
    h.at(secs(600));
    let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4000, b"abc", false));
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::UnknownChannel), 1);
    // Within the 5-minute cool-down neither the number nor the peer is free.
    h.at(secs(601));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_error(400);
    h.at(secs(899));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_error(400);
    h.channel_bind(&mut c, 0x4001, sa(PEER_A)).expect_error(400);
    // After it, the number may go to another peer.
    h.at(secs(900));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_success();
    h.channel_bind(&mut c, 0x4001, sa(PEER_A)).expect_success();
}

#[test]
fn rebinding_an_expired_channel_to_the_same_peer_in_cool_down_works() {
    let mut h = H::new();
    let mut c = allocated_for_an_hour(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    h.at(secs(700));
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4000, b"abc", false));
    assert!(matches!(o, Output::ToPeer { .. }));
}

#[test]
fn cool_down_and_permission_quota_do_not_depend_on_timer_punctuality() {
    // The driver's timer may fire late: requests arriving first must already see
    // expired state as expired.
    let mut cfg = base_config();
    cfg.max_permissions_per_allocation = 1;
    let mut h = H::with_config(cfg);
    let mut c = allocated_for_an_hour(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    // Permission for PEER_A expired at 300 s; no timer has run.
    h.advance(secs(300));
    h.create_permission(&mut c, &[sa(PEER_B)]).expect_success();
    // The channel's cool-down ended at 600 + 300 s; still no timer.
    h.advance(secs(600));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_success();
    let (o, _) = h.send_raw(c.tuple, &channel_data_msg(0x4000, b"x", false));
    match o {
        Output::ToPeer { peer, .. } => assert_eq!(peer, sa(PEER_B)),
        o => panic!("expected ToPeer, got {o:?}"),
    }
}
