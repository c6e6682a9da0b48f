//! Allocate and Refresh (RFC 8656 §7–8, RFC 6156): 400/437/440/442/486/508, lifetimes, EVEN-PORT and reservations, dual stack, DONT-FRAGMENT, retransmissions, a closed stream.

use super::*;

#[test]
fn allocate_without_requested_transport_is_400() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.call(&mut c, Method::Allocate, |b| {
        b.add(&Lifetime(600));
    });
    r.expect_error(400);
    assert_eq!(h.srv.allocations(), 0);
    assert!(h.srv.binder().calls.is_empty());
}

#[test]
fn reservation_token_with_even_port_is_400() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&ReservationToken(&[1, 2, 3, 4, 5, 6, 7, 8]));
        b.add(&EvenPort { reserve: false });
    });
    r.expect_error(400);
    assert_eq!(h.shared.quota.total(), 0);
}

#[test]
fn reservation_token_with_a_family_attribute_is_400() {
    // RFC 8656 §7.2 rule 5: RESERVATION-TOKEN with REQUESTED-ADDRESS-FAMILY or
    // ADDITIONAL-ADDRESS-FAMILY (the token already names the address).
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let cases: [fn(&mut MessageBuilder); 2] = [
        |b| {
            b.add(&RequestedAddressFamily(Family::V4));
        },
        |b| {
            b.add(&AdditionalAddressFamily(Family::V6));
        },
    ];
    for f in cases {
        h.allocate_with(&mut c, |b| {
            b.add(&ReservationToken(&[1, 2, 3, 4, 5, 6, 7, 8]));
            f(b);
        })
        .expect_error(400);
    }
    assert_eq!(h.shared.quota.total(), 0);
}

#[test]
fn even_port_reserving_a_pair_with_additional_family_is_400() {
    // RFC 8656 §7.2 rule 8: EVEN-PORT with R = 1 and ADDITIONAL-ADDRESS-FAMILY.
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve: true });
        b.add(&AdditionalAddressFamily(Family::V6));
    })
    .expect_error(400);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
    // Without the reservation, an even port in both families is fine.
    let r = h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve: false });
        b.add(&AdditionalAddressFamily(Family::V6));
    });
    r.expect_success();
    assert_eq!(r.relayed().len(), 2);
}

#[test]
fn requested_and_additional_family_together_is_400() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V4));
        b.add(&AdditionalAddressFamily(Family::V6));
    });
    r.expect_error(400);
    assert_eq!(h.srv.allocations(), 0);
    // ADDITIONAL-ADDRESS-FAMILY IPv4 is meaningless: 400 as well.
    h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V4));
    })
    .expect_error(400);
}

#[test]
fn requests_without_allocation_are_437() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.refresh(&mut c, Some(600)).expect_error(437);
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_error(437);
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_error(437);
    // Refresh with LIFETIME 0 on nothing is a mismatch too.
    h.refresh(&mut c, Some(0)).expect_error(437);
}

#[test]
fn second_allocate_with_another_transaction_is_437() {
    let mut h = H::new();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    h.allocate(&mut c).expect_error(437);
    assert_eq!(h.srv.allocations(), 1);
    assert_eq!(h.srv.binder().open, vec![(h.relay_id(relay), relay)]);
    assert_eq!(h.shared.quota.total(), 1);
}

#[test]
fn retransmitted_allocate_gets_the_same_response() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let tid = TransactionId::random();
    let attrs = |b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        b.add(&Lifetime(1200));
    };
    let first = h.call_tid(&mut c, Method::Allocate, tid, attrs);
    first.expect_success();
    assert_eq!(first.lifetime(), 1200);
    h.advance(secs(2));
    let again = h.request(c.tuple, &c.build(Method::Allocate, tid, &attrs));
    assert_eq!(again, first, "byte-for-byte the same response");
    assert_eq!(h.srv.allocations(), 1);
    assert_eq!(h.srv.binder().calls.len(), 1);
    assert_eq!(h.srv.stats().allocations_created, 1);
}

#[test]
fn requested_ipv6_when_binder_lacks_ipv6_is_440() {
    let mut h = H::new();
    h.srv.binder_mut().fail_v6 = Some(BindError::FamilyUnavailable);
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V6));
    });
    r.expect_error(440);
    assert_eq!(
        h.srv.binder().calls,
        vec![(ip(RELAY_V6), PortRequest::Any, false)]
    );
    assert_eq!(h.shared.quota.total(), 0);
    assert_eq!(h.srv.allocations(), 0);
    // Without the failure, IPv6 alone is granted.
    h.srv.binder_mut().fail_v6 = None;
    let r = h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V6));
    });
    r.expect_success();
    assert_eq!(r.relayed1().ip(), ip(RELAY_V6));
}

#[test]
fn requested_family_without_relay_address_is_440() {
    let mut cfg = base_config();
    cfg.relay_ips = vec![ip(RELAY_V4)];
    let mut h = H::with_config(cfg);
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V6));
    })
    .expect_error(440);
    assert!(h.srv.binder().calls.is_empty());
}

#[test]
fn bad_family_byte_is_440() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add_raw(attr::REQUESTED_ADDRESS_FAMILY, &[0x03, 0, 0, 0]);
    })
    .expect_error(440);
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn requested_transport_tcp_is_442() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.call(&mut c, Method::Allocate, |b| {
        b.add(&RequestedTransport(PROTOCOL_TCP));
    });
    r.expect_error(442);
    assert!(r.msg().has_integrity());
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn user_quota_is_486() {
    let mut h = H::with(base_config(), users(), QuotaTracker::new(1, 0));
    let (mut a1, _) = allocated(&mut h, "192.0.2.10:1000");
    let mut a2 = Client::alice("192.0.2.10:1001");
    let r = h.allocate(&mut a2);
    r.expect_error(486);
    assert!(r.msg().has_integrity());
    assert_eq!(
        h.srv.binder().calls.len(),
        1,
        "no relay opened for a refused one"
    );
    // Another user is not affected.
    let mut bob = Client::udp("bob", "bob-pw", "192.0.2.10:1002");
    h.allocate(&mut bob).expect_success();
    // Deleting the first frees the quota.
    h.refresh(&mut a1, Some(0)).expect_success();
    h.allocate(&mut a2).expect_success();
    let q = h.srv.stats().quota_rejections;
    assert_eq!(q[QuotaKind::User as usize], 1);
    assert_eq!(q.iter().sum::<u64>(), 1);
}

#[test]
fn client_ip_quota_is_486_whatever_the_user() {
    let quota = QuotaTracker::new(0, 0).with_per_ip(2);
    let mut h = H::with(base_config(), users(), quota);
    allocated(&mut h, "192.0.2.10:1000");
    let mut bob = Client::udp("bob", "bob-pw", "192.0.2.10:1001");
    h.allocate(&mut bob).expect_success();
    // The third from that address is refused, whichever user asks.
    let mut third = Client::alice("192.0.2.10:1002");
    let r = h.allocate(&mut third);
    r.expect_error(486);
    assert!(r.msg().has_integrity());
    let mut over_tcp = Client::on("bob", "bob-pw", tcp("192.0.2.10:1003"));
    h.allocate(&mut over_tcp).expect_error(486);
    assert_eq!(
        h.srv.binder().calls.len(),
        2,
        "no relay opened for a refused one"
    );
    // Another address is not affected.
    allocated(&mut h, "192.0.2.11:1000");
    let q = h.srv.stats().quota_rejections;
    assert_eq!(q[QuotaKind::ClientIp as usize], 2);
    assert_eq!(q.iter().sum::<u64>(), 2);
    // Deleting one frees a place for that address.
    h.refresh(&mut bob, Some(0)).expect_success();
    h.allocate(&mut third).expect_success();
    // An expired allocation gives its place back too.
    h.at(secs(601));
    h.allocate(&mut over_tcp).expect_success();
}

#[test]
fn default_quotas_let_one_user_hold_1000_allocations_from_1000_addresses() {
    use crate::turn::quota::{DEFAULT_PER_IP, DEFAULT_PER_USER};
    let quota = QuotaTracker::new(DEFAULT_PER_USER, 0).with_per_ip(DEFAULT_PER_IP);
    let mut cfg = base_config();
    cfg.relay_ports = 40000..=60000;
    // 511 new clients from one address at one instant: each starts with a 401,
    // which the per-source limit would cut at its burst (its own tests).
    cfg.unauthenticated_rate = crate::turn::source_limit::SourceRate::OFF;
    let mut h = H::with(cfg, users(), quota);
    for i in 0..1000u32 {
        let client = format!("10.{}.{}.{}:40000", i >> 16, (i >> 8) & 0xff, i & 0xff);
        allocated(&mut h, &client);
    }
    assert_eq!(h.srv.allocations(), 1000);
    assert_eq!(h.shared.quota.total(), 1000);
    assert_eq!(h.srv.stats().quota_rejections.iter().sum::<u64>(), 0);
    // The same user from one address stops at the per-address cap.
    for port in 0..DEFAULT_PER_IP as u16 - 1 {
        allocated(&mut h, &format!("10.0.0.0:{}", 1000 + port));
    }
    let mut last = Client::alice("10.0.0.0:65000");
    h.allocate(&mut last).expect_error(486);
    assert_eq!(
        h.srv.stats().quota_rejections[QuotaKind::ClientIp as usize],
        1
    );
}

#[test]
fn total_quota_is_508() {
    let mut h = H::with(base_config(), users(), QuotaTracker::new(0, 1));
    allocated(&mut h, "192.0.2.10:1000");
    let mut bob = Client::udp("bob", "bob-pw", "192.0.2.11:1000");
    h.allocate(&mut bob).expect_error(508);
    assert_eq!(h.shared.quota.total(), 1);
    assert_eq!(h.srv.stats().quota_rejections[QuotaKind::Total as usize], 1);
}

#[test]
fn binder_exhausted_is_508_and_releases_quota() {
    let mut h = H::new();
    h.srv.binder_mut().fail_v4 = Some(BindError::Exhausted);
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate(&mut c).expect_error(508);
    assert_eq!(h.shared.quota.total(), 0);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(
        h.srv.stats().quota_rejections[QuotaKind::RelayPorts as usize],
        1
    );
}

#[test]
fn port_range_exhaustion_is_508_and_ports_return_to_the_pool() {
    let mut h = H::new();
    let mut clients = Vec::new();
    for i in 0..10 {
        let (c, relay) = allocated(&mut h, &format!("192.0.2.10:{}", 2000 + i));
        assert_eq!(relay.port(), 50000 + i);
        assert!(h.shared.live.is_live(relay));
        clients.push(c);
    }
    let mut late = Client::alice("192.0.2.10:3000");
    h.allocate(&mut late).expect_error(508);
    h.refresh(&mut clients[3], Some(0)).expect_success();
    assert!(!h.shared.live.is_live(SocketAddr::new(ip(RELAY_V4), 50003)));
    assert_eq!(h.srv.binder().released, vec![RelayId::new(4, 0)]);
    let r = h.allocate(&mut late);
    r.expect_success();
    assert_eq!(r.relayed1().port(), 50003);
}

#[test]
fn invalid_reservation_token_is_508() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&ReservationToken(&[9; 8]));
    })
    .expect_error(508);
    assert_eq!(h.shared.quota.total(), 0);
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn allocation_expires_exactly_at_the_granted_lifetime() {
    let mut h = H::new();
    let (c, relay) = allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relay);
    assert_eq!(
        h.events(),
        vec![Event::AllocationCreated { tuple: c.tuple }]
    );
    assert_eq!(h.srv.poll_timeout(), Some(h.clock.t0 + secs(600)));
    h.at(secs(600) - Duration::from_nanos(1));
    assert_eq!(h.srv.allocations(), 1);
    assert!(h.events().is_empty());
    h.at(secs(600));
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.srv.binder().released, vec![rid]);
    assert!(h.srv.binder().open.is_empty());
    assert!(!h.shared.live.is_live(relay));
    assert_eq!(h.shared.quota.total(), 0);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    match &ev[0] {
        Event::AllocationClosed {
            allocation:
                AllocationSummary {
                    tuple,
                    username,
                    relays,
                    duration,
                    ..
                },
            reason,
        } => {
            assert_eq!(*tuple, c.tuple);
            assert_eq!(&**username, "alice");
            assert_eq!(relays, &vec![relay]);
            assert_eq!(*duration, secs(600));
            assert_eq!(*reason, CloseReason::Expired);
        }
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(h.srv.poll_timeout(), None);
    // Data on the old 5-tuple now finds nothing.
    let (o, _) = h.send_raw(
        c.tuple,
        &send_indication(TransactionId::random(), sa(PEER_A), b"x"),
    );
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::NoAllocation), 1);
}

#[test]
fn lifetime_rules() {
    let mut h = H::new();
    for (i, (requested, granted)) in [
        (None, 600),
        (Some(0), 600),
        (Some(60), 600),
        (Some(1800), 1800),
        (Some(3600), 3600),
        (Some(7200), 3600),
        (Some(u32::MAX), 3600),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Client::alice(&format!("192.0.2.10:{}", 1000 + i));
        let r = h.allocate_with(&mut c, |b| {
            if let Some(l) = requested {
                b.add(&Lifetime(l));
            }
        });
        r.expect_success();
        assert_eq!(r.lifetime(), granted, "requested {requested:?}");
    }
}

#[test]
fn refresh_extends_the_allocation() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.at(secs(300));
    let r = h.refresh(&mut c, Some(1200));
    r.expect_success();
    assert_eq!(r.lifetime(), 1200);
    h.at(secs(600));
    assert_eq!(h.srv.allocations(), 1);
    h.at(secs(1499));
    assert_eq!(h.srv.allocations(), 1);
    h.at(secs(1500));
    assert_eq!(h.srv.allocations(), 0);
    // Refresh without LIFETIME grants the default.
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1001");
    let r = h.refresh(&mut c, None);
    assert_eq!(r.lifetime(), 600);
}

#[test]
fn refresh_that_shortens_the_lifetime_expires_on_time() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    });
    assert_eq!(r.lifetime(), 3600);
    h.at(secs(100));
    assert_eq!(h.refresh(&mut c, Some(600)).lifetime(), 600);
    assert_eq!(h.srv.poll_timeout(), Some(h.clock.t0 + secs(700)));
    h.at(secs(700));
    assert_eq!(h.srv.allocations(), 0, "expired at the refreshed lifetime");
}

#[test]
fn refresh_with_lifetime_zero_deletes() {
    let mut h = H::new();
    let (mut c, relay) = allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relay);
    h.events();
    h.advance(secs(10));
    let r = h.refresh(&mut c, Some(0));
    r.expect_success();
    assert_eq!(r.lifetime(), 0);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.srv.binder().released, vec![rid]);
    assert_eq!(h.shared.quota.total(), 0);
    match h.events().as_slice() {
        [Event::AllocationClosed {
            reason: CloseReason::Deleted,
            allocation,
        }] => assert_eq!(allocation.duration, secs(10)),
        e => panic!("unexpected {e:?}"),
    }
    // A retransmission of the delete finds no allocation.
    h.refresh(&mut c, Some(0)).expect_error(437);
}

#[test]
fn even_port_with_reservation_and_token() {
    let mut h = H::new();
    // Occupy 50000 so that the pair cannot start there.
    allocated(&mut h, "192.0.2.10:999");
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve: true });
    });
    r.expect_success();
    let relay = r.relayed1();
    assert_eq!(relay.port(), 50002);
    let token = *r.msg().get::<ReservationToken>().unwrap().unwrap().0;
    assert!(h.shared.live.is_live(SocketAddr::new(ip(RELAY_V4), 50003)));
    let mut d = Client::alice("192.0.2.10:1001");
    let r = h.allocate_with(&mut d, |b| {
        b.add(&ReservationToken(&token));
    });
    r.expect_success();
    assert_eq!(
        r.relayed1(),
        SocketAddr::new(ip(RELAY_V4), relay.port() + 1)
    );
    assert!(r.msg().get::<ReservationToken>().is_none());
    // A token is good once.
    let mut e = Client::alice("192.0.2.10:1002");
    h.allocate_with(&mut e, |b| {
        b.add(&ReservationToken(&token));
    })
    .expect_error(508);
    // R = 0: just an even port.
    let r = h.allocate_with(&mut e, |b| {
        b.add(&EvenPort { reserve: false });
    });
    assert_eq!(r.relayed1().port(), 50004);
    assert!(r.msg().get::<ReservationToken>().is_none());
}

#[test]
fn unused_reservation_is_released_after_its_lifetime() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve: true });
    });
    let token = *r.msg().get::<ReservationToken>().unwrap().unwrap().0;
    assert_eq!(h.srv.binder().open.len(), 2);
    assert_eq!(h.srv.poll_timeout(), Some(h.clock.t0 + secs(30)));
    h.at(secs(30));
    assert_eq!(h.srv.binder().open.len(), 1);
    assert!(!h.shared.live.is_live(SocketAddr::new(ip(RELAY_V4), 50001)));
    let mut d = Client::alice("192.0.2.10:1001");
    h.allocate_with(&mut d, |b| {
        b.add(&ReservationToken(&token));
    })
    .expect_error(508);
}

#[test]
fn dual_stack_allocation() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V6));
    });
    r.expect_success();
    assert_eq!(
        r.relayed(),
        vec![
            SocketAddr::new(ip(RELAY_V4), 50000),
            SocketAddr::new(ip(RELAY_V6), 50000)
        ]
    );
    assert!(r.msg().get::<AddressErrorCode>().is_none());
    // Deleting releases both.
    h.refresh(&mut c, Some(0)).expect_success();
    assert_eq!(h.srv.binder().released.len(), 2);
    assert!(h.srv.binder().open.is_empty());
}

#[test]
fn dual_stack_with_ipv6_unavailable_gives_address_error_code() {
    for (fail, code) in [
        (BindError::FamilyUnavailable, 440),
        (BindError::Exhausted, 508),
    ] {
        let mut h = H::new();
        h.srv.binder_mut().fail_v6 = Some(fail);
        let mut c = Client::alice("192.0.2.10:1000");
        let r = h.allocate_with(&mut c, |b| {
            b.add(&AdditionalAddressFamily(Family::V6));
        });
        r.expect_success();
        assert_eq!(r.relayed(), vec![SocketAddr::new(ip(RELAY_V4), 50000)]);
        let e = r.msg().get::<AddressErrorCode>().unwrap().unwrap();
        assert_eq!((e.family, e.code), (Family::V6, code));
    }
}

#[test]
fn connection_closed_deletes_a_tcp_allocation() {
    let mut h = H::new();
    let tuple = tcp("192.0.2.10:1000");
    let mut c = Client::on("alice", "alice-pw", tuple);
    let r = h.allocate(&mut c);
    r.expect_success();
    let relay = r.relayed1();
    h.events();
    // Another connection closing changes nothing.
    h.srv.connection_closed(h.clock.now, tcp("192.0.2.10:1001"));
    assert_eq!(h.srv.allocations(), 1);
    h.srv.connection_closed(h.clock.now, tuple);
    assert_eq!(h.srv.allocations(), 0);
    assert!(!h.shared.live.is_live(relay));
    assert_eq!(h.shared.quota.total(), 0);
    match h.events().as_slice() {
        [Event::AllocationClosed {
            reason: CloseReason::ConnectionClosed,
            allocation,
        }] => assert_eq!(allocation.tuple, tuple),
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn dont_fragment_is_passed_to_the_binder() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate_with(&mut c, |b| {
        b.add(&DontFragment);
    })
    .expect_success();
    assert_eq!(
        h.srv.binder().calls,
        vec![(ip(RELAY_V4), PortRequest::Any, true)]
    );
    let _ = h.srv.binder().addr_of(RelayId::new(1, 0)).unwrap();
}

#[test]
fn retransmitted_allocate_repeats_token_and_address_error() {
    let mut h = H::new();
    h.srv.binder_mut().fail_v6 = Some(BindError::FamilyUnavailable);
    let mut c = Client::alice("192.0.2.10:1000");
    let tid = TransactionId::random();
    let attrs = |b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        b.add(&EvenPort { reserve: true });
    };
    let first = h.call_tid(&mut c, Method::Allocate, tid, attrs);
    first.expect_success();
    assert!(first.msg().get::<ReservationToken>().is_some());
    let again = h.request(c.tuple, &c.build(Method::Allocate, tid, &attrs));
    assert_eq!(again, first);

    let mut d = Client::alice("192.0.2.10:1001");
    let tid = TransactionId::random();
    let attrs = |b: &mut MessageBuilder| {
        b.add(&RequestedTransport(PROTOCOL_UDP));
        b.add(&AdditionalAddressFamily(Family::V6));
    };
    let first = h.call_tid(&mut d, Method::Allocate, tid, attrs);
    assert_eq!(
        first.msg().get::<AddressErrorCode>().unwrap().unwrap().code,
        440
    );
    let again = h.request(d.tuple, &d.build(Method::Allocate, tid, &attrs));
    assert_eq!(again, first);
    assert_eq!(h.srv.binder().calls.len(), 3);
}
