//! Operations on a running core: shutdown, credential changes, drain, sessions, kill, reload.

use super::*;
use crate::turn::cluster::Target;

#[test]
fn close_all_releases_allocations_and_reservations() {
    let mut h = H::new();
    allocated(&mut h, "192.0.2.10:1000");
    let mut c = Client::alice("192.0.2.10:1001");
    h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve: true });
    })
    .expect_success();
    assert_eq!(h.srv.binder().open.len(), 3);
    h.events();
    h.srv.close_all(h.clock.now);
    assert!(h.srv.binder().open.is_empty());
    assert_eq!(h.srv.binder().released.len(), 3);
    assert_eq!(h.shared.quota.total(), 0);
    assert!((50000..=50009).all(|p| [ip(RELAY_V4), ip(RELAY_V6)]
        .iter()
        .all(|i| !h.shared.live.is_live(SocketAddr::new(*i, p)))));
    let ev = h.events();
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::Shutdown,
            ..
        }
    )));
    // Queue entries left behind are stale: an early wake-up that does nothing.
    while let Some(t) = h.srv.poll_timeout() {
        h.at(t - h.clock.t0);
        assert!(h.events().is_empty());
    }
    assert_eq!(h.srv.binder().released.len(), 3);
}

/// A credential store whose users can be removed and whose backing database can
/// be "down", as the live store of a running server can.
#[derive(Default)]
struct MutableUsers {
    users: std::sync::Mutex<Vec<(String, String)>>,
    down: std::sync::atomic::AtomicBool,
}

impl CredentialStore for MutableUsers {
    fn lookup(&self, username: &str, realm: &str, _now_unix: u64) -> Lookup {
        let users = self.users.lock().unwrap();
        match users.iter().find(|(u, _)| u == username) {
            Some((u, p)) => Lookup::Found(UserKeys::derive(u, realm, p), None),
            None => Lookup::Unknown,
        }
    }

    fn accepts_new_allocations(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn mutable_users() -> Arc<MutableUsers> {
    let m = MutableUsers::default();
    m.users.lock().unwrap().extend([
        ("alice".to_owned(), "alice-pw".to_owned()),
        ("bob".to_owned(), "bob-pw".to_owned()),
    ]);
    Arc::new(m)
}

#[test]
fn removed_user_loses_its_allocation_on_recheck_and_others_stay() {
    let store = mutable_users();
    let mut h = H::with(base_config(), store.clone(), QuotaTracker::new(0, 0));
    let (mut a, _) = allocated(&mut h, "192.0.2.10:1000");
    let mut b = Client::udp("bob", "bob-pw", "192.0.2.10:1001");
    h.allocate(&mut b).expect_success();
    h.events();
    // Nothing changed: nothing ends.
    assert_eq!(h.srv.recheck_credentials(h.clock.now), 0);
    store.users.lock().unwrap().retain(|(u, _)| u != "alice");
    assert_eq!(h.srv.recheck_credentials(h.clock.now), 1);
    let ev = h.events();
    assert!(matches!(
        &ev[..],
        [Event::AllocationClosed {
            reason: CloseReason::Revoked,
            allocation,
        }] if &*allocation.username == "alice"
    ));
    assert_eq!(h.srv.allocations(), 1);
    assert_eq!(h.shared.quota.total(), 1);
    // Alice's next request is refused: her allocation is gone and so is she.
    h.refresh(&mut a, Some(600)).expect_error(401);
    h.refresh(&mut b, Some(600)).expect_success();
}

#[test]
fn store_outage_refuses_new_allocations_but_existing_ones_refresh() {
    let store = mutable_users();
    let mut h = H::with(base_config(), store.clone(), QuotaTracker::new(0, 0));
    let (mut a, _) = allocated(&mut h, "192.0.2.10:1000");
    store.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut b = Client::udp("bob", "bob-pw", "192.0.2.10:1001");
    h.allocate(&mut b).expect_error(500);
    assert_eq!(h.srv.allocations(), 1);
    assert_eq!(
        h.shared.quota.total(),
        1,
        "the refused allocation took no quota"
    );
    h.refresh(&mut a, Some(600)).expect_success();
    store
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let mut b = Client::udp("bob", "bob-pw", "192.0.2.10:1002");
    h.allocate(&mut b).expect_success();
}

#[test]
fn draining_refuses_new_allocations_with_403_and_keeps_old_ones() {
    let mut h = H::new();
    let (mut old, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut old, &[sa(PEER_A)])
        .expect_success();
    h.srv.set_drain(Some(Drain::default()));
    assert!(h.srv.draining());
    let mut c = Client::alice("192.0.2.10:1001");
    let r = h.allocate(&mut c);
    r.expect_error(403);
    // Authenticated refusal: it carries MESSAGE-INTEGRITY.
    r.check_integrity(&c.key);
    // The old allocation refreshes and relays on.
    h.refresh(&mut old, Some(600)).expect_success();
    let send = send_indication(TransactionId::random(), sa(PEER_A), b"still here");
    assert!(matches!(
        h.send_raw(old.tuple, &send).0,
        Output::ToPeer { .. }
    ));
    // A retransmitted Allocate of the old allocation still gets its success.
    assert_eq!(h.srv.allocations(), 1);
    h.srv.set_drain(None);
    h.allocate(&mut c).expect_success();
}

#[test]
fn draining_with_alternates_redirects_with_300_in_turn() {
    let mut h = H::new();
    let alts = vec![sa("203.0.113.1:3478"), sa("[2001:db8::1]:3478")];
    h.srv.set_drain(Some(Drain {
        alternates: alts.clone(),
    }));
    for (i, port) in (1000..1004).enumerate() {
        // A first Allocate, without credentials: redirected before
        // authentication, so the 300 is unsigned (turn::redirect).
        let mut c = Client::alice(&format!("192.0.2.10:{port}"));
        let r = h.allocate(&mut c);
        r.expect_error(300);
        assert!(!r.msg().has_integrity());
        assert_eq!(alternate(&r), alts[i % 2]);
    }
    // A client that holds a nonce already gets its 300 signed.
    let mut c = Client::alice("192.0.2.10:2000");
    h.refresh(&mut c, Some(0)).expect_error(437);
    let r = h.allocate(&mut c);
    r.expect_error(300);
    r.check_integrity(&c.key);
    assert_eq!(alternate(&r), alts[0]);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
    assert_eq!(h.srv.stats().redirects, [5, 0]);
}

fn alternate(r: &Resp) -> SocketAddr {
    let AlternateServer(a) = r.msg().get::<AlternateServer>().unwrap().unwrap();
    a
}

fn target(id: &str, transport: Transport, addr: &str, allocations: u64) -> Target {
    Target::new(id, vec![(transport, sa(addr))], allocations)
}

#[test]
fn above_the_allocation_threshold_new_clients_go_to_the_least_loaded_node() {
    let mut h = H::new();
    h.shared.cluster.set_max_allocations(1);
    // Nowhere to go: the threshold is a preference, so this server allocates.
    allocated(&mut h, "192.0.2.10:1000");
    allocated(&mut h, "192.0.2.10:1001");
    h.shared.cluster.set_targets(vec![
        target("b", Transport::Udp, "203.0.113.2:3478", 5),
        target("c", Transport::Udp, "203.0.113.3:3478", 6),
        target("t", Transport::Tcp, "203.0.113.4:3478", 0),
    ]);
    let sent: Vec<SocketAddr> = (0..3)
        .map(|i| {
            let mut c = Client::alice(&format!("192.0.2.10:{}", 2000 + i));
            let r = h.allocate(&mut c);
            r.expect_error(300);
            alternate(&r)
        })
        .collect();
    // b (5), then b (6 with the pick) and c (6) in some order.
    assert_eq!(sent[0], sa("203.0.113.2:3478"));
    assert!(sent[1..].contains(&sa("203.0.113.3:3478")), "{sent:?}");
    assert_eq!(h.srv.stats().redirects, [0, 3]);
    // Requests on existing allocations are not redirected.
    let (mut old, _) = allocated_after_raising(&mut h);
    h.refresh(&mut old, Some(600)).expect_success();
    // Under the threshold again (a reload raised it): allocated here.
    h.shared.cluster.set_max_allocations(0);
    let mut c = Client::alice("192.0.2.10:3000");
    h.allocate(&mut c).expect_success();
}

/// An allocation made while the threshold is lifted for a moment.
fn allocated_after_raising(h: &mut H) -> (Client, SocketAddr) {
    h.shared.cluster.set_max_allocations(0);
    let a = allocated(h, "192.0.2.10:4000");
    h.shared.cluster.set_max_allocations(1);
    a
}

#[test]
fn above_the_threshold_without_cluster_nodes_the_static_alternates_take_new_clients() {
    let mut h = H::new();
    let mut cfg = (**h.srv.config()).clone();
    cfg.alternate_servers = vec![sa("198.51.100.9:3478")];
    h.srv.reconfigure(std::sync::Arc::new(cfg));
    h.shared.cluster.set_max_allocations(1);
    allocated(&mut h, "192.0.2.10:1000");
    let mut c = Client::alice("192.0.2.10:1001");
    let r = h.allocate(&mut c);
    r.expect_error(300);
    assert_eq!(alternate(&r), sa("198.51.100.9:3478"));
    assert_eq!(h.srv.stats().redirects, [0, 1]);
}

#[test]
fn a_drain_prefers_cluster_nodes_to_the_static_alternates() {
    let mut h = H::new();
    h.srv.set_drain(Some(Drain {
        alternates: vec![sa("198.51.100.9:3478")],
    }));
    h.shared
        .cluster
        .set_targets(vec![target("b", Transport::Udp, "203.0.113.2:3478", 0)]);
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate(&mut c);
    r.expect_error(300);
    assert_eq!(alternate(&r), sa("203.0.113.2:3478"));
    // No node for this family: the static list.
    let mut v6 = Client::alice("[2001:db8::10]:1000");
    let r = h.allocate(&mut v6);
    r.expect_error(300);
    assert_eq!(alternate(&r), sa("198.51.100.9:3478"));
}

#[test]
fn sessions_list_and_kill_by_user_and_id() {
    let mut h = H::new();
    h.srv.set_id_space(1, 4);
    let (mut a1, relay1) = allocated(&mut h, "192.0.2.10:1000");
    let (_a2, _) = allocated(&mut h, "192.0.2.10:1001");
    let mut b = Client::udp("bob", "bob-pw", "192.0.2.11:1000");
    h.allocate(&mut b).expect_success();
    h.create_permission(&mut a1, &[sa(PEER_A), sa(PEER_B)])
        .expect_success();
    h.advance(secs(5));
    let mut s = h.srv.sessions(h.clock.now);
    s.sort_by_key(|s| s.allocation.id);
    // Shard 1 of 4: IDs 2, 6, 10.
    assert_eq!(
        s.iter().map(|s| s.allocation.id).collect::<Vec<_>>(),
        [2, 6, 10]
    );
    assert_eq!(&*s[0].allocation.username, "alice");
    assert_eq!(&*s[0].allocation.realm, REALM);
    assert_eq!(s[0].allocation.relays, vec![relay1]);
    assert_eq!(s[0].permissions, 2);
    assert_eq!(s[0].allocation.started_unix, UNIX0);
    assert_eq!(s[0].expires_in, 595);
    assert_eq!(&*s[2].allocation.username, "bob");
    h.events();

    assert_eq!(h.srv.kill(h.clock.now, &KillFilter::Id(10)), 1);
    assert_eq!(h.srv.kill(h.clock.now, &KillFilter::Id(10)), 0);
    assert_eq!(
        h.srv.kill(h.clock.now, &KillFilter::User("alice".into())),
        2
    );
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
    let ev = h.events();
    assert_eq!(ev.len(), 3);
    assert!(ev.iter().all(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::Killed,
            ..
        }
    )));
    // A killed allocation is gone for its client too.
    h.refresh(&mut a1, Some(600)).expect_error(437);
}

#[test]
fn usage_fields_of_a_closed_allocation() {
    let mut h = H::new();
    h.advance(secs(7));
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let send = send_indication(TransactionId::random(), sa(PEER_A), &[1; 40]);
    let _ = h.send_raw(c.tuple, &send);
    h.advance(secs(3));
    h.events();
    h.refresh(&mut c, Some(0)).expect_success();
    match h.events().as_slice() {
        [Event::AllocationClosed {
            allocation:
                AllocationSummary {
                    id,
                    realm,
                    started_unix,
                    duration,
                    traffic,
                    peers,
                    ..
                },
            reason: CloseReason::Deleted,
        }] => {
            assert_eq!(*id, 1);
            assert_eq!(&**realm, REALM);
            assert_eq!(*started_unix, UNIX0 + 7);
            assert_eq!(*duration, secs(3));
            assert_eq!(traffic.to_peer_bytes, 40);
            assert_eq!(traffic.to_peer_packets, 1);
            assert_eq!(*peers, 1);
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn reconfigure_changes_policy_realm_and_limits_for_new_requests_only() {
    let mut h = H::new();
    let (mut c, _) = allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    let mut cfg = base_config();
    cfg.deny_peers = vec!["8.8.8.0/24".parse().unwrap()];
    cfg.max_permissions_per_allocation = 2;
    h.srv.reconfigure(Arc::new(cfg.clone()));
    // The new deny rule applies to the next request.
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_error(403);
    h.create_permission(&mut c, &[sa(PEER_B)]).expect_success();
    h.create_permission(&mut c, &[sa("9.9.9.9:53")])
        .expect_error(508);
    // A new realm: the allocation stays, and its next Refresh is challenged
    // with the new realm.
    cfg.realm = "elsewhere".into();
    h.srv.reconfigure(Arc::new(cfg));
    assert_eq!(h.srv.allocations(), 1);
    let r = h.request(
        c.tuple,
        &c.build(Method::Refresh, TransactionId::random(), &|_| {}),
    );
    r.expect_error(401);
    let Realm(realm) = r.msg().get::<Realm>().unwrap().unwrap();
    assert_eq!(realm, "elsewhere");
}
