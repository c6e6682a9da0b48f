//! RFC 5780 NAT behaviour discovery on the wire: a server on 127.0.0.1 with
//! 127.0.0.2 as `server.other-address` (ports chosen by the system). Binding
//! answers come from the listener CHANGE-REQUEST names, RESPONSE-PORT sends
//! the answer to another port of the client's IP, PADDING is answered within
//! the request's size, and the alternate listeners refuse TURN (400).

mod support;

use std::net::SocketAddr;

use bytes::BytesMut;
use ferroturn::config::NatDiscoveryConfig;
use ferroturn::stun::attr::*;
use ferroturn::stun::message::TransactionId;
use ferroturn::stun::{Class, Message, MessageBuilder, Method};
use ferroturn::turn::server::NatDiscovery;
use support::*;
use tokio::net::UdpSocket;

fn start_server() -> (ferroturn::net::Running, NatDiscovery) {
    let mut opts = options("127.0.0.1:0");
    opts.nat_discovery = Some(NatDiscoveryConfig {
        primary: opts.listen[0],
        other_ip: "127.0.0.2".parse().unwrap(),
        other_port: 0,
    });
    let srv = ferroturn::net::start(opts).expect("server starts");
    let nat = srv.nat_discovery.expect("bound");
    assert_eq!(nat.addr(0, 0), srv.udp[0]);
    (srv, nat)
}

fn binding(attrs: impl FnOnce(&mut MessageBuilder)) -> (BytesMut, TransactionId) {
    let mut buf = BytesMut::new();
    let tid = TransactionId::random();
    let mut b = MessageBuilder::new(&mut buf, Method::Binding, Class::Request, tid);
    attrs(&mut b);
    b.finish();
    (buf, tid)
}

/// Sends `req` to `to` from `from` and waits for the answer on `on` (up to
/// three tries of [`WAIT`] each): its bytes and where it came from.
async fn exchange(
    from: &UdpSocket,
    on: &UdpSocket,
    to: SocketAddr,
    req: &(BytesMut, TransactionId),
) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        from.send_to(&req.0, to).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Ok((n, src))) = tokio::time::timeout_at(deadline, on.recv_from(&mut buf)).await
        {
            if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == req.1) {
                return (buf[..n].to_vec(), src);
            }
        }
    }
    panic!("no answer from {to}");
}

fn get<'a, A: Attr<'a>>(m: &Message<'a>) -> A {
    m.get::<A>().expect("present").expect("well-formed")
}

#[tokio::test]
async fn change_request_answers_come_from_the_named_listener() {
    let (srv, nat) = start_server();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        for (ci, cp) in [(false, false), (true, false), (false, true), (true, true)] {
            let req = binding(|b| {
                b.add(&ChangeRequest {
                    change_ip: ci,
                    change_port: cp,
                });
            });
            let (bytes, src) = exchange(&client, &client, nat.addr(i, j), &req).await;
            let m = Message::parse(&bytes).unwrap();
            assert_eq!(m.class(), Class::Success);
            let want = nat.addr(i ^ usize::from(ci), j ^ usize::from(cp));
            assert_eq!(src, want, "to {i}{j}, change ip {ci} port {cp}");
            assert_eq!(get::<ResponseOrigin>(&m).0, want);
            assert_eq!(get::<OtherAddress>(&m).0, nat.addr(i ^ 1, j ^ 1));
            assert_eq!(get::<XorMappedAddress>(&m).0, me);
            assert_eq!(get::<MappedAddress>(&m).0, me);
        }
    }
    srv.stop().unwrap();
}

#[tokio::test]
async fn response_port_and_padding() {
    let (srv, nat) = start_server();
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();

    // RESPONSE-PORT: the answer reaches the other socket, from the listener
    // the request went to, mapping the sender.
    let req = binding(|b| {
        b.add(&ResponsePort(port));
    });
    let (bytes, src) = exchange(&sender, &receiver, nat.addr(0, 0), &req).await;
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(src, nat.addr(0, 0));
    assert_eq!(get::<XorMappedAddress>(&m).0, sender.local_addr().unwrap());

    // PADDING: answered with PADDING, never bigger than the request.
    let req = binding(|b| {
        b.add_zeros(PADDING, 1200);
    });
    let (bytes, _) = exchange(&sender, &sender, nat.addr(1, 1), &req).await;
    let m = Message::parse(&bytes).unwrap();
    assert!(m.get_raw(PADDING).is_some());
    assert!(
        bytes.len() <= req.0.len(),
        "{} > {}",
        bytes.len(),
        req.0.len()
    );
    assert!(bytes.len() > 1100, "{}", bytes.len());

    // Both: 400, back to the sender.
    let req = binding(|b| {
        b.add(&ResponsePort(port));
        b.add_zeros(PADDING, 100);
    });
    let (bytes, _) = exchange(&sender, &sender, nat.addr(0, 0), &req).await;
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.class(), Class::Error);
    assert_eq!(get::<ErrorCode>(&m).code, 400);
    srv.stop().unwrap();
}

#[tokio::test]
async fn alternate_listeners_answer_binding_only() {
    let (srv, nat) = start_server();
    for a in nat.alternates() {
        let mut c = ferroturn::client::Client::udp(a)
            .await
            .unwrap()
            .credentials(USER, PASS);
        let mapped = c.binding().await.unwrap();
        assert_eq!(mapped, c.local_addr().unwrap());
        let err = c.allocate().await.unwrap_err();
        assert_eq!(err.code(), Some(400), "{a}: {err}");
    }
    // The primary one allocates as usual.
    let (_c, _alloc) = allocated_client(&srv, Transport::Udp).await;
    assert_eq!(srv.allocations(), 1);
    srv.stop().unwrap();
}
