//! The kernel fast path's change queue (`turn::offload`): what is bound and
//! unbound when, and how the kernel's counts are folded back.

use super::*;
use crate::turn::allocation::Traffic;
use crate::turn::offload::{OffloadChange, OffloadChannel};

fn offloading() -> H {
    let mut h = H::new();
    h.srv.set_offload(true);
    h
}

/// The changes queued since the last call, as (bind?, channel number, peer).
fn changes(h: &mut H) -> Vec<(bool, u16, SocketAddr)> {
    h.srv
        .drain_offload_changes()
        .map(|c| match c {
            OffloadChange::Bind { channel, .. } => (true, channel.channel, channel.peer),
            OffloadChange::Unbind { channel, .. } => (false, channel.channel, channel.peer),
        })
        .collect()
}

#[test]
fn off_by_default_nothing_is_queued() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    assert!(changes(&mut h).is_empty());
}

/// Turned on while channels live (a reload): a resync queues every channel
/// that may take the fast path, once; turned off, the core forgets them and
/// queues nothing (the driver read and removed its entries itself).
#[test]
fn turned_on_later_a_resync_binds_live_channels_once() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    h.channel_bind(&mut c, 0x4001, sa(PEER_B)).expect_success();
    assert!(changes(&mut h).is_empty());
    h.srv.set_offload(true);
    let now = h.clock.now;
    h.srv.offload_resync(now);
    let mut got = changes(&mut h);
    got.sort();
    assert_eq!(
        got,
        vec![(true, 0x4000, sa(PEER_A)), (true, 0x4001, sa(PEER_B))]
    );
    h.srv.offload_resync(now);
    assert!(
        changes(&mut h).is_empty(),
        "a second resync changes nothing"
    );
    h.srv.set_offload(false);
    h.srv.offload_resync(now);
    assert!(changes(&mut h).is_empty());
}

#[test]
fn bind_queues_the_whole_mapping_once() {
    let mut h = offloading();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    let all: Vec<OffloadChange> = h.srv.drain_offload_changes().collect();
    let [OffloadChange::Bind { tuple, channel, .. }] = all[..] else {
        panic!("one bind expected, got {all:?}");
    };
    assert_eq!(tuple, c.tuple);
    assert_eq!(
        channel,
        OffloadChannel {
            client: sa("192.0.2.10:1000"),
            server: sa("10.0.0.1:3478"),
            channel: 0x4000,
            relay,
            peer: sa(PEER_A),
        }
    );
    // A refresh of the same binding changes nothing.
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    assert!(changes(&mut h).is_empty());
}

#[test]
fn permission_expiry_unbinds_and_a_new_permission_binds_again() {
    let mut h = offloading();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    assert_eq!(changes(&mut h), [(true, 0x4000, sa(PEER_A))]);
    // The permission lasts 300 s, the channel 600 s.
    h.at(secs(299));
    assert!(changes(&mut h).is_empty());
    h.at(secs(300));
    assert_eq!(changes(&mut h), [(false, 0x4000, sa(PEER_A))]);
    h.at(secs(310));
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    assert_eq!(changes(&mut h), [(true, 0x4000, sa(PEER_A))]);
}

#[test]
fn channel_expiry_unbinds_on_time_and_a_rebind_moves_it() {
    let mut h = offloading();
    let mut c = allocated_for_an_hour(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    assert_eq!(changes(&mut h), [(true, 0x4000, sa(PEER_A))]);
    // Keep the permission alive past the channel's 600 s.
    for t in [290, 580] {
        h.at(secs(t));
        h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    }
    assert!(changes(&mut h).is_empty());
    h.at(secs(600));
    assert_eq!(changes(&mut h), [(false, 0x4000, sa(PEER_A))]);
    h.at(secs(870));
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    assert!(changes(&mut h).is_empty(), "an expired channel stays off");
    // After the cool-down the number goes to another peer: bound there.
    h.at(secs(900));
    h.channel_bind(&mut c, 0x4000, sa(PEER_B)).expect_success();
    assert_eq!(changes(&mut h), [(true, 0x4000, sa(PEER_B))]);
    // A second number for the first peer is another entry.
    h.channel_bind(&mut c, 0x4001, sa(PEER_A)).expect_success();
    assert_eq!(changes(&mut h), [(true, 0x4001, sa(PEER_A))]);
}

#[test]
fn delete_and_expiry_of_the_allocation_unbind_everything() {
    let mut h = offloading();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    h.channel_bind(&mut c, 0x4001, sa(PEER_B)).expect_success();
    assert_eq!(changes(&mut h).len(), 2);
    h.refresh(&mut c, Some(0)).expect_success();
    let mut gone = changes(&mut h);
    gone.sort_by_key(|g| g.1);
    assert_eq!(
        gone,
        [(false, 0x4000, sa(PEER_A)), (false, 0x4001, sa(PEER_B))]
    );

    let (mut d, _) = allocated(&mut h, "192.0.2.11:1000");
    h.channel_bind(&mut d, 0x4000, sa(PEER_A)).expect_success();
    assert_eq!(changes(&mut h).len(), 1);
    // The default lifetime is 600 s; the permission goes first, at 300 s.
    h.at(secs(300));
    assert_eq!(changes(&mut h), [(false, 0x4000, sa(PEER_A))]);
    h.at(secs(600));
    assert!(changes(&mut h).is_empty(), "unbound once only");
}

#[test]
fn bandwidth_limits_and_byte_budgets_keep_channels_in_userspace() {
    let mut cfg = base_config();
    cfg.max_bps_per_allocation = 100_000;
    let mut h = H::with_config(cfg);
    h.srv.set_offload(true);
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    assert!(changes(&mut h).is_empty());

    // A reload that sets a limit takes bound channels off the fast path.
    let mut h = offloading();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    assert_eq!(changes(&mut h).len(), 1);
    let mut cfg = base_config();
    cfg.max_bytes_per_user = 1_000_000;
    h.srv.reconfigure(Arc::new(cfg));
    assert_eq!(changes(&mut h), [(false, 0x4000, sa(PEER_A))]);
}

#[test]
fn an_all_ipv6_channel_is_offloaded() {
    let mut h = offloading();
    let tuple = FiveTuple {
        transport: Transport::Udp,
        client: sa("[2001:db8::10]:1000"),
        server: sa("[2600:1f18::1]:3478"),
    };
    let mut c = Client::on("alice", "alice-pw", tuple);
    let r = h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V6));
    });
    r.expect_success();
    let relay = r.relayed1();
    assert!(relay.is_ipv6());
    h.channel_bind(&mut c, 0x4000, sa(PEER_V6)).expect_success();
    let all: Vec<OffloadChange> = h.srv.drain_offload_changes().collect();
    let [OffloadChange::Bind { channel, .. }] = all[..] else {
        panic!("one bind expected, got {all:?}");
    };
    assert_eq!(
        channel,
        OffloadChannel {
            client: tuple.client,
            server: tuple.server,
            channel: 0x4000,
            relay,
            peer: sa(PEER_V6),
        }
    );
}

#[test]
fn mixed_family_and_tcp_allocations_are_not_offloaded() {
    let mut h = offloading();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    // An IPv4 allocation has no relay for an IPv6 peer (443): nothing to offload.
    h.channel_bind(&mut c, 0x4000, sa(PEER_V6))
        .expect_error(443);
    // An IPv6 client with an IPv4 relay (the default family): the kernel
    // would have to translate between the families, so it stays in userspace.
    let v6_client = FiveTuple {
        transport: Transport::Udp,
        client: sa("[2001:db8::11]:1000"),
        server: sa("[2600:1f18::1]:3478"),
    };
    let mut m = Client::on("alice", "alice-pw", v6_client);
    h.allocate(&mut m).expect_success();
    h.channel_bind(&mut m, 0x4000, sa(PEER_A)).expect_success();
    let mut t = Client::on("alice", "alice-pw", tcp("192.0.2.12:1000"));
    h.allocate(&mut t).expect_success();
    h.channel_bind(&mut t, 0x4000, sa(PEER_A)).expect_success();
    assert!(changes(&mut h).is_empty());
}

#[test]
fn kernel_counts_reach_stats_allocation_and_the_close_record() {
    let mut h = offloading();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_success();
    let all: Vec<OffloadChange> = h.srv.drain_offload_changes().collect();
    let OffloadChange::Bind { allocation, .. } = all[0] else {
        panic!("a bind expected");
    };
    let delta = Traffic {
        to_peer_packets: 3,
        to_peer_bytes: 300,
        to_client_packets: 2,
        to_client_bytes: 200,
    };
    h.srv.offload_traffic(c.tuple, allocation, delta);
    let s = h.srv.stats();
    assert_eq!(s.to_peer_bytes[Transport::Udp.index()], 300);
    assert_eq!(s.offload_packets, [3, 2]);
    assert_eq!(s.offload_bytes, [300, 200]);
    h.refresh(&mut c, Some(0)).expect_success();
    // The last counts arrive after the close: they land in its record.
    h.srv.offload_traffic(c.tuple, allocation, delta);
    let closed = h
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::AllocationClosed { allocation, .. } => Some(allocation),
            _ => None,
        })
        .expect("a close event");
    assert_eq!(closed.traffic.to_peer_bytes, 600);
    assert_eq!(closed.traffic.to_client_packets, 4);
    assert_eq!(h.srv.stats().offload_bytes, [600, 400]);
}
