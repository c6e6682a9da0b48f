//! RFC 5780 NAT behaviour discovery (`server.nat-discovery`): the attributes
//! of every Binding answer on the four listeners, CHANGE-REQUEST (Table 1),
//! RESPONSE-PORT, PADDING and their bounds, the errors, and that nothing
//! changes when it is off, over TCP, or on another listener.

use super::*;
use crate::turn::server::NatDiscovery;
use crate::turn::source_limit::SourceRate;

const A1: &str = "10.0.0.1";
const A2: &str = "10.0.0.2";
const P1: u16 = 3478;
const P2: u16 = 3479;
const CLIENT: &str = "192.0.2.10:40000";

fn nat() -> NatDiscovery {
    NatDiscovery {
        ips: [ip(A1), ip(A2)],
        ports: [P1, P2],
    }
}

fn nat_config() -> ServerConfig {
    let mut cfg = base_config();
    cfg.nat_discovery = Some(nat());
    cfg
}

fn on(server: SocketAddr) -> FiveTuple {
    FiveTuple {
        server,
        ..udp(CLIENT)
    }
}

fn binding(attrs: impl FnOnce(&mut MessageBuilder)) -> BytesMut {
    hand_built(Method::Binding, Class::Request, attrs)
}

fn change(ip: bool, port: bool) -> impl FnOnce(&mut MessageBuilder) {
    move |b| {
        b.add(&ChangeRequest {
            change_ip: ip,
            change_port: port,
        });
    }
}

fn addr_of<'a, A: Attr<'a> + Copy>(r: &'a Resp) -> A {
    r.msg().get::<A>().expect("present").expect("well-formed")
}

#[test]
fn off_by_default_the_rfc_5780_attributes_are_unknown() {
    let mut h = H::new();
    let t = udp(CLIENT);
    for (typ, req) in [
        (CHANGE_REQUEST, binding(change(true, true))),
        (
            RESPONSE_PORT,
            binding(|b| {
                b.add(&ResponsePort(5000));
            }),
        ),
        (
            PADDING,
            binding(|b| {
                b.add_zeros(PADDING, 100);
            }),
        ),
    ] {
        let r = h.request(t, &req);
        assert_eq!(unknown_attributes(&r), vec![typ]);
    }
    let r = h.request(t, &binding(|_| {}));
    r.expect_success();
    assert!(!r.msg().has(OTHER_ADDRESS));
    assert!(!r.msg().has(RESPONSE_ORIGIN));
}

#[test]
fn every_answer_carries_mapped_origin_and_other_address() {
    let mut h = H::with_config(nat_config());
    let t = on(nat().addr(0, 0));
    let (o, r) = h.send_raw(t, &binding(|_| {}));
    assert_eq!(o, Output::Reply, "no change: the same 5-tuple");
    let r = r.unwrap();
    r.expect_success();
    assert_eq!(addr_of::<XorMappedAddress>(&r).0, sa(CLIENT));
    assert_eq!(addr_of::<MappedAddress>(&r).0, sa(CLIENT));
    assert_eq!(addr_of::<ResponseOrigin>(&r).0, nat().addr(0, 0));
    assert_eq!(addr_of::<OtherAddress>(&r).0, nat().addr(1, 1));
}

/// RFC 5780 Table 1, from each of the four listeners: the source is Da or Ca
/// and Dp or Cp as the flags say; OTHER-ADDRESS is Ca:Cp whatever the flags.
#[test]
fn change_request_follows_table_1_on_every_listener() {
    let mut h = H::with_config(nat_config());
    let n = nat();
    for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let t = on(n.addr(i, j));
        for (ci, cp) in [(false, false), (true, false), (false, true), (true, true)] {
            let (o, r) = h.send_raw(t, &binding(change(ci, cp)));
            let r = r.expect("answered");
            r.expect_success();
            let from = n.addr(i ^ usize::from(ci), j ^ usize::from(cp));
            assert_eq!(addr_of::<ResponseOrigin>(&r).0, from, "{i}{j} {ci} {cp}");
            assert_eq!(addr_of::<OtherAddress>(&r).0, n.addr(i ^ 1, j ^ 1));
            assert_eq!(addr_of::<XorMappedAddress>(&r).0, sa(CLIENT));
            if ci || cp {
                assert_eq!(
                    o,
                    Output::ReplyFrom {
                        from,
                        to: sa(CLIENT)
                    }
                );
            } else {
                assert_eq!(o, Output::Reply);
            }
        }
    }
}

#[test]
fn response_port_changes_the_port_only() {
    let mut h = H::with_config(nat_config());
    let t = on(nat().addr(0, 0));
    let (o, r) = h.send_raw(
        t,
        &binding(|b| {
            b.add(&ResponsePort(5000));
        }),
    );
    r.unwrap().expect_success();
    assert_eq!(
        o,
        Output::ReplyFrom {
            from: nat().addr(0, 0),
            to: sa("192.0.2.10:5000"),
        }
    );
    // With CHANGE-REQUEST too: both apply.
    let (o, _) = h.send_raw(
        t,
        &binding(|b| {
            b.add(&ResponsePort(6000));
            b.add(&ChangeRequest {
                change_ip: true,
                change_port: false,
            });
        }),
    );
    assert_eq!(
        o,
        Output::ReplyFrom {
            from: nat().addr(1, 0),
            to: sa("192.0.2.10:6000"),
        }
    );
    // The source port itself: a plain reply.
    let (o, _) = h.send_raw(
        t,
        &binding(|b| {
            b.add(&ResponsePort(40000));
        }),
    );
    assert_eq!(o, Output::Reply);
}

#[test]
fn bad_rfc_5780_input_is_400() {
    let mut h = H::with_config(nat_config());
    let t = on(nat().addr(0, 0));
    for req in [
        binding(|b| {
            b.add_raw(CHANGE_REQUEST, &[0, 4]);
        }),
        binding(|b| {
            b.add_raw(CHANGE_REQUEST, &[0; 8]);
        }),
        binding(|b| {
            b.add_raw(RESPONSE_PORT, &[0x13, 0x88]);
        }),
        binding(|b| {
            b.add(&ResponsePort(0));
        }),
        // RFC 5780 §6.1: PADDING with RESPONSE-PORT.
        binding(|b| {
            b.add(&ResponsePort(5000));
            b.add_zeros(PADDING, 64);
        }),
    ] {
        let (o, r) = h.send_raw(t, &req);
        assert_eq!(
            o,
            Output::Reply,
            "errors go back where the request came from"
        );
        r.unwrap().expect_error(400);
    }
}

#[test]
fn other_unknown_attributes_are_still_420_and_listed_alone() {
    let mut h = H::with_config(nat_config());
    let t = on(nat().addr(0, 0));
    let r = h.request(
        t,
        &binding(|b| {
            b.add(&ChangeRequest {
                change_ip: true,
                change_port: true,
            });
            b.add_raw(0x7FF0, &[1, 2, 3, 4]);
        }),
    );
    assert_eq!(unknown_attributes(&r), vec![0x7FF0]);
}

#[test]
fn padding_never_makes_the_answer_bigger_than_the_request() {
    let mut cfg = nat_config();
    cfg.max_message_size = 9000;
    let mut h = H::with_config(cfg);
    let t = on(nat().addr(0, 0));
    for (pad, fingerprint) in [(1000, false), (1000, true), (1472, false), (4000, true)] {
        let req = binding(|b| {
            b.add_zeros(PADDING, pad);
            if fingerprint {
                b.add_fingerprint();
            }
        });
        let r = h.request(t, &req);
        r.expect_success();
        let len = r.0.len();
        assert!(
            r.msg().get_raw(PADDING).is_some(),
            "PADDING answered with PADDING"
        );
        assert!(len <= req.len(), "{len} > request {}", req.len());
        assert!(len <= 1500, "{len}");
        assert!(
            len + 4 > req.len().min(1500),
            "padded up to the bound: {len}"
        );
        assert_eq!(r.msg().has_fingerprint(), fingerprint);
        if fingerprint {
            assert!(r.msg().verify_fingerprint().is_ok());
        }
    }
    // A small request: PADDING is there, empty; the answer is no bigger than
    // an unpadded one.
    let req = binding(|b| {
        b.add_zeros(PADDING, 4);
    });
    let r = h.request(t, &req);
    assert_eq!(r.msg().get_raw(PADDING), Some(&[][..]));
}

#[test]
fn answers_to_another_port_take_from_the_source_budget() {
    let mut cfg = nat_config();
    cfg.unauthenticated_rate = SourceRate {
        per_second: 1,
        burst: 2,
    };
    let mut h = H::with_config(cfg);
    let t = on(nat().addr(0, 0));
    let to_other_port = binding(|b| {
        b.add(&ResponsePort(5000));
    });
    for _ in 0..2 {
        let (o, _) = h.send_raw(t, &to_other_port);
        assert!(matches!(o, Output::ReplyFrom { .. }), "{o:?}");
    }
    let (o, _) = h.send_raw(t, &to_other_port);
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::UnauthenticatedRateLimit), 1);
    // Answers to the source itself are not limited (a plain Binding is not),
    // CHANGE-REQUEST included: they go where the request came from.
    for _ in 0..5 {
        let (o, _) = h.send_raw(t, &binding(change(true, true)));
        assert!(matches!(o, Output::ReplyFrom { .. }), "{o:?}");
    }
    h.advance(secs(1));
    let (o, _) = h.send_raw(t, &to_other_port);
    assert!(matches!(o, Output::ReplyFrom { .. }), "refilled: {o:?}");
}

#[test]
fn tcp_and_other_listeners_keep_the_attributes_unknown() {
    let mut cfg = nat_config();
    cfg.stun_only_listeners = vec![(Transport::Udp, sa("10.0.0.9:3478"))];
    let mut h = H::with_config(cfg);
    let tcp_tuple = FiveTuple {
        transport: Transport::Tcp,
        ..on(nat().addr(0, 0))
    };
    let other = on(sa("10.0.0.9:3478"));
    for t in [tcp_tuple, other] {
        let r = h.request(t, &binding(change(false, true)));
        assert_eq!(unknown_attributes(&r), vec![CHANGE_REQUEST]);
        let r = h.request(t, &binding(|_| {}));
        r.expect_success();
        assert!(!r.msg().has(OTHER_ADDRESS), "{t:?}");
    }
}

#[test]
fn ipv6_addresses_work_alike() {
    let mut cfg = base_config();
    let n = NatDiscovery {
        ips: [ip("2001:db8::1"), ip("2001:db8::2")],
        ports: [P1, P2],
    };
    cfg.nat_discovery = Some(n);
    let mut h = H::with_config(cfg);
    let t = FiveTuple {
        transport: Transport::Udp,
        client: sa("[2001:db8::99]:40000"),
        server: n.addr(1, 1),
    };
    let (o, r) = h.send_raw(t, &binding(change(true, false)));
    let r = r.unwrap();
    assert_eq!(addr_of::<OtherAddress>(&r).0, n.addr(0, 0));
    assert_eq!(
        o,
        Output::ReplyFrom {
            from: n.addr(0, 1),
            to: t.client
        }
    );
}
