//! STUN-only listeners (`server.stun-only`, `server.stun-only-listen`): Binding
//! answered, every TURN method refused with 400 before authentication, Send
//! indications and ChannelData dropped and counted as `stun_only`; the other
//! listeners of the same core allocate as usual.

use super::*;

const STUN_PORT: &str = "10.0.0.1:3479";

/// A core whose UDP and TCP listener on `STUN_PORT` serves STUN only (the
/// harness's clients reach 10.0.0.1:3478 unless moved there).
fn stun_only_listener() -> H {
    let mut cfg = base_config();
    cfg.stun_only_listeners = vec![
        (Transport::Udp, sa(STUN_PORT)),
        (Transport::Tcp, sa(STUN_PORT)),
    ];
    H::with_config(cfg)
}

fn on_stun_port(mut c: Client) -> Client {
    c.tuple.server = sa(STUN_PORT);
    c
}

fn binding(h: &mut H, tuple: FiveTuple) -> Resp {
    let buf = hand_built(Method::Binding, Class::Request, |_| {});
    h.request(tuple, &buf)
}

/// Each TURN method, unsigned, from `c`: 400, no challenge.
fn every_turn_method_is_400(h: &mut H, c: &Client) {
    for method in [
        Method::Allocate,
        Method::Refresh,
        Method::CreatePermission,
        Method::ChannelBind,
    ] {
        let r = h.request(
            c.tuple,
            &c.unauthenticated(method, &|b: &mut MessageBuilder| {
                b.add(&RequestedTransport(PROTOCOL_UDP));
            }),
        );
        r.expect_error(400);
        assert!(!r.msg().has(attr::NONCE), "{method:?}: no challenge");
    }
}

#[test]
fn stun_only_listener_answers_binding_and_refuses_turn() {
    let mut h = stun_only_listener();
    let c = on_stun_port(Client::alice("192.0.2.10:1000"));
    let r = binding(&mut h, c.tuple);
    r.expect_success();
    assert_eq!(
        r.msg().get::<XorMappedAddress>().unwrap().unwrap().0,
        c.tuple.client
    );
    every_turn_method_is_400(&mut h, &c);
    // Over TCP on the same address alike.
    let mut t = on_stun_port(Client::alice("192.0.2.10:1001"));
    t.tuple.transport = Transport::Tcp;
    every_turn_method_is_400(&mut h, &t);
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
    assert_eq!(h.srv.stats().requests[1][2], 2, "allocate/400");

    // The normal listener of the same core allocates.
    let mut n = Client::alice("192.0.2.10:1002");
    h.allocate(&mut n).expect_success();
    assert_eq!(h.srv.allocations(), 1);
}

#[test]
fn signed_turn_requests_on_a_stun_only_listener_are_400_too() {
    let mut h = stun_only_listener();
    // The client learns a nonce on the normal listener (nonces are bound to
    // the client's address, not to the listener), then signs on the STUN one.
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.request(
        c.tuple,
        &c.unauthenticated(Method::Allocate, &|b: &mut MessageBuilder| {
            b.add(&RequestedTransport(PROTOCOL_UDP));
        }),
    );
    c.learn_nonce(&r);
    let c = on_stun_port(c);
    let r = h.request(
        c.tuple,
        &c.build(
            Method::Allocate,
            TransactionId::random(),
            &|b: &mut MessageBuilder| {
                b.add(&RequestedTransport(PROTOCOL_UDP));
            },
        ),
    );
    r.expect_error(400);
    assert_eq!(h.srv.allocations(), 0);
}

#[test]
fn data_on_a_stun_only_listener_is_dropped_and_counted() {
    let mut h = stun_only_listener();
    let c = on_stun_port(Client::alice("192.0.2.10:1000"));
    let send = send_indication(TransactionId::random(), sa(PEER_A), b"hello");
    assert_eq!(h.send_raw(c.tuple, &send).0, Output::None);
    let mut cd = BytesMut::new();
    ChannelData {
        channel: 0x4000,
        payload: b"hello",
    }
    .write(&mut cd, false);
    assert_eq!(h.send_raw(c.tuple, &cd).0, Output::None);
    assert_eq!(h.drops(DropReason::StunOnly), 2);
    assert_eq!(h.drops(DropReason::NoAllocation), 0);
    // The same on the normal listener is an ordinary miss.
    let n = Client::alice("192.0.2.10:1001");
    assert_eq!(h.send_raw(n.tuple, &send).0, Output::None);
    assert_eq!(h.drops(DropReason::NoAllocation), 1);
    assert_eq!(DropReason::StunOnly.name(), "stun_only");
}

#[test]
fn a_wildcard_stun_only_listener_covers_its_family_on_that_port() {
    let mut cfg = base_config();
    cfg.stun_only_listeners = vec![(Transport::Udp, sa("0.0.0.0:3479"))];
    let mut h = H::with_config(cfg);
    let v4 = on_stun_port(Client::alice("192.0.2.10:1000"));
    every_turn_method_is_400(&mut h, &v4);
    // Another port of the same IP, or IPv6 on that port, is not covered.
    let mut v6 = Client::alice("[2001:db8::7]:1000");
    v6.tuple.server = sa("[2600:1f18::1]:3479");
    h.allocate(&mut v6).expect_success();
    let mut other = Client::alice("192.0.2.10:1001");
    h.allocate(&mut other).expect_success();
    // TCP on that port is not covered either: the entry is UDP only.
    let mut tcp = on_stun_port(Client::alice("192.0.2.10:1002"));
    tcp.tuple.transport = Transport::Tcp;
    h.allocate(&mut tcp).expect_success();
}

#[test]
fn a_stun_only_server_refuses_turn_everywhere_and_reload_turns_it_on() {
    let mut h = H::new();
    let mut c = Client::alice("192.0.2.10:1000");
    h.allocate(&mut c).expect_success();
    let mut cfg = base_config();
    cfg.stun_only = true;
    h.srv.reconfigure(Arc::new(cfg));
    // Binding still answered; a new Allocate refused.
    binding(&mut h, udp("192.0.2.11:1000")).expect_success();
    every_turn_method_is_400(&mut h, &Client::alice("192.0.2.11:1000"));
    // The allocation made before cannot be refreshed (signed Refresh: 400),
    // so it ends within its lifetime.
    let r = h.request(c.tuple, &bare_refresh(&c));
    r.expect_error(400);
    assert_eq!(h.srv.allocations(), 1);
    h.at(secs(600));
    assert_eq!(h.srv.allocations(), 0);
}
