//! TCP allocations (RFC 6062): Allocate TCP, Connect, incoming peer
//! connections, ConnectionBind, the 30 s deadline, quotas.

use super::*;

fn tcp_config() -> ServerConfig {
    let mut c = base_config();
    c.tcp_allocations = true;
    c
}

fn tcp_alice(client: &str) -> Client {
    Client::on("alice", "alice-pw", tcp(client))
}

fn allocate_tcp(h: &mut H, c: &mut Client) -> Resp {
    h.call(c, Method::Allocate, |b| {
        b.add(&RequestedTransport(PROTOCOL_TCP));
    })
}

/// A TCP allocation for alice with a permission for `PEER_A`.
fn tcp_allocated(h: &mut H, client: &str) -> (Client, SocketAddr) {
    let mut c = tcp_alice(client);
    let r = allocate_tcp(h, &mut c);
    r.expect_success();
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    (c, r.relayed1())
}

/// Sends a Connect to `peer`: the core's output and, when it answers at once,
/// the reply.
fn connect(h: &mut H, c: &mut Client, peer: SocketAddr) -> (Output, Option<Resp>) {
    let req = c.build(Method::Connect, TransactionId::random(), &|b| {
        b.add(&XorPeerAddress(peer));
    });
    h.send_raw(c.tuple, &req)
}

/// Connect to `peer` and report the connection attempt as `ok`: the response.
fn connect_done(h: &mut H, c: &mut Client, peer: SocketAddr, ok: bool) -> (u32, Resp) {
    let (o, _) = connect(h, c, peer);
    let Output::Connect { conn, peer: to, .. } = o else {
        panic!("expected Connect, got {o:?}");
    };
    assert_eq!(to, peer);
    let tuple = h
        .srv
        .connect_finished(h.clock.now, conn, ok, &mut h.out)
        .expect("the control connection");
    assert_eq!(tuple, c.tuple);
    let r = Resp(h.out.to_vec());
    c.check_response(&r);
    (conn, r)
}

/// A ConnectionBind for `conn` from client `c` (a new connection): the output
/// and the response.
fn bind(h: &mut H, c: &mut Client, conn: u32) -> (Output, Resp) {
    let f = |b: &mut MessageBuilder| {
        b.add(&ConnectionId(conn));
    };
    if c.nonce.is_none() {
        let r = h.request(c.tuple, &c.unauthenticated(Method::ConnectionBind, &f));
        r.expect_error(401);
        c.learn_nonce(&r);
    }
    let req = c.build(Method::ConnectionBind, TransactionId::random(), &f);
    let (o, _) = h.send_raw(c.tuple, &req);
    (o, Resp(h.out.to_vec()))
}

fn connection_id(r: &Resp) -> u32 {
    match r.msg().get::<ConnectionId>() {
        Some(Ok(ConnectionId(c))) => c,
        other => panic!("no CONNECTION-ID: {other:?}"),
    }
}

#[test]
fn tcp_allocations_are_off_by_default() {
    let mut h = H::new();
    let mut c = tcp_alice("192.0.2.10:1000");
    allocate_tcp(&mut h, &mut c).expect_error(442);
    // Connect and ConnectionBind are unknown methods then.
    let mut c = Client::alice("192.0.2.10:1001");
    h.allocate(&mut c).expect_success();
    let (o, r) = connect(&mut h, &mut c, sa(PEER_A));
    assert_eq!(o, Output::Reply);
    r.unwrap().expect_error(400);
}

#[test]
fn tcp_allocation_needs_a_stream_client_connection() {
    let mut h = H::with_config(tcp_config());
    let mut c = Client::alice("192.0.2.10:1000");
    h.call(&mut c, Method::Allocate, |b| {
        b.add(&RequestedTransport(PROTOCOL_TCP));
    })
    .expect_error(400);
    // TLS is a stream too.
    let mut c = Client::on(
        "alice",
        "alice-pw",
        FiveTuple {
            transport: Transport::Tls,
            ..tcp("192.0.2.10:1001")
        },
    );
    allocate_tcp(&mut h, &mut c).expect_success();
    // Other protocols stay 442.
    let mut c = tcp_alice("192.0.2.10:1002");
    h.call(&mut c, Method::Allocate, |b| {
        b.add(&RequestedTransport(1));
    })
    .expect_error(442);
}

#[test]
fn tcp_allocation_refuses_udp_only_attributes_channels_and_send() {
    let mut h = H::with_config(tcp_config());
    let mut c = tcp_alice("192.0.2.10:1000");
    h.call(&mut c, Method::Allocate, |b| {
        b.add(&RequestedTransport(PROTOCOL_TCP));
        b.add(&EvenPort { reserve: false });
    })
    .expect_error(400);
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1001");
    h.channel_bind(&mut c, 0x4000, sa(PEER_A)).expect_error(400);
    let (o, _) = h.send_raw(
        c.tuple,
        &send_indication(TransactionId::random(), sa(PEER_A), b"x"),
    );
    assert_eq!(o, Output::None);
    // Refresh works as for any allocation.
    h.refresh(&mut c, Some(600)).expect_success();
}

#[test]
fn connect_bind_and_pipe() {
    let mut h = H::with_config(tcp_config());
    let (mut c, relayed) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (o, _) = connect(&mut h, &mut c, sa(PEER_A));
    let Output::Connect { from, .. } = o else {
        panic!("{o:?}");
    };
    assert_eq!(from, relayed);
    let tuple = h.srv.connect_finished(
        h.clock.now,
        match o {
            Output::Connect { conn, .. } => conn,
            _ => unreachable!(),
        },
        true,
        &mut h.out,
    );
    assert_eq!(tuple, Some(c.tuple));
    let r = Resp(h.out.to_vec());
    r.expect_success();
    let conn = connection_id(&r);
    assert_ne!(conn, 0);
    // A second Connect to the same peer: 446.
    let (o, r) = connect(&mut h, &mut c, sa(PEER_A));
    assert_eq!(o, Output::Reply);
    r.unwrap().expect_error(446);
    // The data connection binds it, with alice's credentials.
    let mut d = tcp_alice("192.0.2.10:1001");
    let (o, r) = bind(&mut h, &mut d, conn);
    assert_eq!(o, Output::ConnectionBound { conn });
    r.expect_success();
    assert!(h.srv.tcp_traffic(conn).is_some());
    // Bound once only.
    let mut d2 = tcp_alice("192.0.2.10:1002");
    let (o, r) = bind(&mut h, &mut d2, conn);
    assert_eq!(o, Output::Reply);
    r.expect_error(400);
}

#[test]
fn failed_connect_is_447_and_frees_the_peer() {
    let mut h = H::with_config(tcp_config());
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (_, r) = connect_done(&mut h, &mut c, sa(PEER_A), false);
    r.expect_error(447);
    assert!(h.srv.tcp_connections().is_empty());
    // The same peer may be tried again.
    let (_, r) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    r.expect_success();
}

#[test]
fn connect_needs_permission_policy_and_a_peer() {
    let mut h = H::with_config(tcp_config());
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    // No permission for PEER_B.
    let (_, r) = connect(&mut h, &mut c, sa(PEER_B));
    r.unwrap().expect_error(403);
    // Denied by policy (loopback is closed by default).
    let (_, r) = connect(&mut h, &mut c, sa("127.0.0.1:80"));
    r.unwrap().expect_error(403);
    // Family mismatch.
    let (_, r) = connect(&mut h, &mut c, sa(PEER_V6));
    r.unwrap().expect_error(443);
    // No XOR-PEER-ADDRESS.
    let req = c.build(Method::Connect, TransactionId::random(), &|_| {});
    let (_, r) = h.send_raw(c.tuple, &req);
    r.unwrap().expect_error(400);
    // Connect on a UDP allocation.
    let mut u = Client::alice("192.0.2.10:2000");
    h.allocate(&mut u).expect_success();
    let (_, r) = connect(&mut h, &mut u, sa(PEER_A));
    r.unwrap().expect_error(400);
    // Connect without an allocation.
    let mut n = tcp_alice("192.0.2.10:3000");
    let f = |b: &mut MessageBuilder| {
        b.add(&XorPeerAddress(sa(PEER_A)));
    };
    let r = h.request(n.tuple, &n.unauthenticated(Method::Connect, &f));
    n.learn_nonce(&r);
    let (_, r) = h.send_raw(
        n.tuple,
        &n.build(Method::Connect, TransactionId::random(), &f),
    );
    r.unwrap().expect_error(437);
}

#[test]
fn connection_bind_rules() {
    let mut h = H::with_config(tcp_config());
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (conn, _) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    // Another user: 400.
    let mut bob = Client::on("bob", "bob-pw", tcp("192.0.2.10:1001"));
    let (o, r) = bind(&mut h, &mut bob, conn);
    assert_eq!(o, Output::Reply);
    r.expect_error(400);
    // Unknown ID: 400.
    let mut d = tcp_alice("192.0.2.10:1002");
    let (_, r) = bind(&mut h, &mut d, conn ^ 1);
    r.expect_error(400);
    // On the control connection (it holds an allocation): 400.
    let (_, r) = bind(&mut h, &mut c, conn);
    r.expect_error(400);
    // Over UDP: 400.
    let mut u = Client::alice("192.0.2.10:1003");
    let (_, r) = bind(&mut h, &mut u, conn);
    r.expect_error(400);
    // None of that used it up.
    let (o, _) = bind(&mut h, &mut d, conn);
    assert_eq!(o, Output::ConnectionBound { conn });
}

#[test]
fn an_unbound_connection_expires_after_30_s() {
    let mut h = H::with_config(tcp_config());
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (conn, _) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    h.advance(secs(29));
    assert!(!h.srv.tcp_connections().expire(conn, h.clock.now));
    h.advance(secs(1));
    assert!(h.srv.tcp_connections().expire(conn, h.clock.now));
    let mut d = tcp_alice("192.0.2.10:1001");
    let (_, r) = bind(&mut h, &mut d, conn);
    r.expect_error(400);
    // A bound one never expires that way.
    let (conn, _) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    let (o, _) = bind(&mut h, &mut d, conn);
    assert_eq!(o, Output::ConnectionBound { conn });
    h.advance(secs(60));
    assert!(!h.srv.tcp_connections().expire(conn, h.clock.now));
    assert!(h.srv.tcp_connections().is_live(conn));
}

#[test]
fn the_connection_timeout_is_configurable() {
    let mut cfg = tcp_config();
    cfg.tcp_connection_timeout = secs(2);
    let mut h = H::with_config(cfg);
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (conn, _) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    h.advance(secs(2));
    let mut d = tcp_alice("192.0.2.10:1001");
    let (_, r) = bind(&mut h, &mut d, conn);
    r.expect_error(400);
}

#[test]
fn incoming_peer_connections() {
    let mut h = H::with_config(tcp_config());
    let (c, relayed) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(relayed);
    // No permission: refused.
    assert!(h
        .srv
        .tcp_peer_connected(h.clock.now, rid, sa(PEER_B), &mut h.out)
        .is_none());
    // Permitted: a ConnectionAttempt for the control connection.
    let (tuple, conn) = h
        .srv
        .tcp_peer_connected(h.clock.now, rid, sa(PEER_A), &mut h.out)
        .expect("accepted");
    assert_eq!(tuple, c.tuple);
    let m = Message::parse(&h.out).unwrap();
    assert_eq!(m.method(), Method::ConnectionAttempt);
    assert_eq!(m.class(), Class::Indication);
    assert_eq!(m.get::<ConnectionId>(), Some(Ok(ConnectionId(conn))));
    assert_eq!(
        m.get::<XorPeerAddress>().map(|r| r.map(|p| p.0)),
        Some(Ok(sa(PEER_A)))
    );
    let mut d = tcp_alice("192.0.2.10:1001");
    let (o, _) = bind(&mut h, &mut d, conn);
    assert_eq!(o, Output::ConnectionBound { conn });
    // A UDP allocation's relay takes no connections.
    let (mut u, _) = allocated(&mut h, "192.0.2.10:2000");
    let r = h.create_permission(&mut u, &[sa(PEER_B)]);
    r.expect_success();
    let urid = h.relay_id(
        h.srv
            .sessions(h.clock.now)
            .iter()
            .find(|s| s.allocation.tuple == u.tuple)
            .unwrap()
            .allocation
            .relays[0],
    );
    assert!(h
        .srv
        .tcp_peer_connected(h.clock.now, urid, sa(PEER_B), &mut h.out)
        .is_none());
}

#[test]
fn a_denied_peer_is_refused_even_with_a_permission() {
    let mut cfg = tcp_config();
    cfg.deny_peers = vec!["8.8.8.0/24".parse().unwrap()];
    let mut h = H::with_config(cfg);
    let mut c = tcp_alice("192.0.2.10:1000");
    let r = allocate_tcp(&mut h, &mut c);
    r.expect_success();
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_error(403);
    let rid = h.relay_id(r.relayed1());
    assert!(h
        .srv
        .tcp_peer_connected(h.clock.now, rid, sa(PEER_A), &mut h.out)
        .is_none());
}

#[test]
fn connections_per_allocation_are_capped() {
    let mut cfg = tcp_config();
    cfg.max_tcp_connections_per_allocation = 1;
    let mut h = H::with_config(cfg);
    let (mut c, relayed) = tcp_allocated(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_B)]).expect_success();
    connect_done(&mut h, &mut c, sa(PEER_A), true)
        .1
        .expect_success();
    let (_, r) = connect(&mut h, &mut c, sa(PEER_B));
    r.unwrap().expect_error(508);
    let rid = h.relay_id(relayed);
    assert!(h
        .srv
        .tcp_peer_connected(h.clock.now, rid, sa("1.1.1.1:7000"), &mut h.out)
        .is_none());
    assert_eq!(
        h.srv.stats().quota_rejections[QuotaKind::TcpConnections as usize],
        2
    );
}

#[test]
fn closing_the_allocation_ends_its_connections_and_counts_their_bytes() {
    let mut h = H::with_config(tcp_config());
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (conn, _) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    let mut d = tcp_alice("192.0.2.10:1001");
    let (o, _) = bind(&mut h, &mut d, conn);
    assert_eq!(o, Output::ConnectionBound { conn });
    let t = h.srv.tcp_traffic(conn).unwrap();
    t.to_peer_bytes
        .fetch_add(100, std::sync::atomic::Ordering::Relaxed);
    t.to_client_bytes
        .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
    h.events();
    h.srv.connection_closed(h.clock.now, c.tuple);
    assert!(!h.srv.tcp_connections().is_live(conn));
    let closed = h
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::AllocationClosed { allocation, .. } => Some(allocation),
            _ => None,
        })
        .unwrap();
    assert_eq!(closed.traffic.to_peer_bytes, 100);
    assert_eq!(closed.traffic.to_client_bytes, 7);
}

#[test]
fn a_connect_answered_after_its_allocation_ended_is_dropped() {
    let mut h = H::with_config(tcp_config());
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (o, _) = connect(&mut h, &mut c, sa(PEER_A));
    let Output::Connect { conn, .. } = o else {
        panic!("{o:?}");
    };
    h.srv.connection_closed(h.clock.now, c.tuple);
    assert_eq!(
        h.srv.connect_finished(h.clock.now, conn, true, &mut h.out),
        None
    );
    assert!(h.srv.tcp_connections().is_empty());
}

#[test]
fn allocations_connecting_to_each_other_at_once_both_get_through() {
    // A Connects to B's relayed address while B Connects to A's: A's
    // connection reaches B's listening socket while B's Connect to A is
    // pending. It is accepted (446 is for a second Connect only).
    // The relays are on a private address of the fake host: open it.
    let mut cfg = tcp_config();
    cfg.allow_peers = vec!["10.0.0.0/8".parse().unwrap()];
    let mut h = H::with_config(cfg);
    let mut a = tcp_alice("192.0.2.10:1000");
    let ra = allocate_tcp(&mut h, &mut a).relayed1();
    let mut b = tcp_alice("192.0.2.10:1001");
    let rb = allocate_tcp(&mut h, &mut b).relayed1();
    h.create_permission(&mut a, &[rb]).expect_success();
    h.create_permission(&mut b, &[ra]).expect_success();
    let (oa, _) = connect(&mut h, &mut a, rb);
    assert!(matches!(oa, Output::Connect { .. }), "{oa:?}");
    let (ob, _) = connect(&mut h, &mut b, ra);
    assert!(matches!(ob, Output::Connect { .. }), "{ob:?}");
    let rid_b = h.relay_id(rb);
    let (tuple, _) = h
        .srv
        .tcp_peer_connected(h.clock.now, rid_b, ra, &mut h.out)
        .expect("A's connection reaches B");
    assert_eq!(tuple, b.tuple);
    // A second Connect from A to B is still 446.
    let (_, r) = connect(&mut h, &mut a, rb);
    r.unwrap().expect_error(446);
}

#[test]
fn connection_bind_may_use_the_control_connections_nonce() {
    // coturn's uclient signs the ConnectionBind of a new data connection with
    // the nonce its control connection got; nonces are bound to the client
    // address, so the core checks it against the control connection's.
    let mut h = H::with_config(tcp_config());
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (conn, _) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    let mut d = tcp_alice("192.0.2.10:1001");
    d.nonce = c.nonce.clone();
    let req = d.build(Method::ConnectionBind, TransactionId::random(), &|b| {
        b.add(&ConnectionId(conn));
    });
    let (o, _) = h.send_raw(d.tuple, &req);
    assert_eq!(o, Output::ConnectionBound { conn });
    // From another IP the control connection's nonce is stale (438).
    let (conn, _) = connect_done(&mut h, &mut c, sa("8.8.8.8:4001"), true);
    let mut e = tcp_alice("192.0.2.11:1001");
    e.nonce = c.nonce.clone();
    let req = e.build(Method::ConnectionBind, TransactionId::random(), &|b| {
        b.add(&ConnectionId(conn));
    });
    let (o, r) = h.send_raw(e.tuple, &req);
    assert_eq!(o, Output::Reply);
    r.unwrap().expect_error(438);
}

#[test]
fn piped_bytes_are_charged_to_the_byte_budget() {
    let mut cfg = tcp_config();
    cfg.max_bytes_per_user = 1000;
    let mut h = H::with_config(cfg);
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (conn, _) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    let mut d = tcp_alice("192.0.2.10:1001");
    let (o, _) = bind(&mut h, &mut d, conn);
    assert_eq!(o, Output::ConnectionBound { conn });
    let budget = h.srv.tcp_budget(conn).unwrap();
    let now = h.clock.now;
    assert!(h.srv.charge_tcp(now, &budget, 600));
    assert!(h.srv.charge_tcp(now, &budget, 600));
    // Used up (1200 >= 1000): the pipe must end.
    assert!(!h.srv.charge_tcp(now, &budget, 1));
    assert_eq!(h.drops(DropReason::ByteBudget), 1);
    // No budget: always admitted.
    let mut h = H::with_config(tcp_config());
    let (mut c, _) = tcp_allocated(&mut h, "192.0.2.10:1000");
    let (conn, _) = connect_done(&mut h, &mut c, sa(PEER_A), true);
    let budget = h.srv.tcp_budget(conn).unwrap();
    assert!(h.srv.charge_tcp(h.clock.now, &budget, u64::MAX / 2));
}
