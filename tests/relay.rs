//! Integration over real loopback sockets: Binding over UDP and TCP, TCP framing,
//! and relaying through allocations with the in-repo client.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use ferroturn::client::{AllocateOptions, Client, Received};
use ferroturn::stun::attr::{Family, XorMappedAddress};
use ferroturn::stun::{Class, Message, MessageBuilder, Method, TransactionId};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn binding_request() -> (BytesMut, TransactionId) {
    let tid = TransactionId::random();
    let mut buf = BytesMut::new();
    MessageBuilder::new(&mut buf, Method::Binding, Class::Request, tid).finish();
    (buf, tid)
}

#[tokio::test]
async fn binding_over_udp_and_tcp() {
    let srv = server("127.0.0.1:0");
    let mut udp = Client::udp(srv.udp[0]).await.unwrap();
    assert_eq!(udp.binding().await.unwrap(), udp.local_addr().unwrap());
    let mut tcp = Client::tcp(srv.tcp[0]).await.unwrap();
    assert_eq!(tcp.binding().await.unwrap(), tcp.local_addr().unwrap());
    srv.stop().unwrap();
}

#[tokio::test]
async fn binding_over_ipv6() {
    let srv = server("[::1]:0");
    let mut udp = Client::udp(srv.udp[0]).await.unwrap();
    assert_eq!(udp.binding().await.unwrap(), udp.local_addr().unwrap());
    srv.stop().unwrap();
}

async fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 20];
    stream.read_exact(&mut head).await.unwrap();
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await.unwrap();
    [head.to_vec(), rest].concat()
}

#[tokio::test]
async fn tcp_framing_several_messages_per_segment_and_split_messages() {
    let srv = server("127.0.0.1:0");
    let mut s = TcpStream::connect(srv.tcp[0]).await.unwrap();
    s.set_nodelay(true).unwrap();
    // Three requests in one write.
    let reqs: Vec<_> = (0..3).map(|_| binding_request()).collect();
    let joined: Vec<u8> = reqs.iter().flat_map(|(b, _)| b.to_vec()).collect();
    s.write_all(&joined).await.unwrap();
    for (_, tid) in &reqs {
        let resp = read_message(&mut s).await;
        let m = Message::parse(&resp).unwrap();
        assert_eq!(m.transaction_id(), *tid);
        assert_eq!(
            m.get::<XorMappedAddress>().unwrap().unwrap().0,
            s.local_addr().unwrap()
        );
    }
    // One request, one byte per segment.
    let (req, tid) = binding_request();
    for b in req.iter() {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let m_bytes = read_message(&mut s).await;
    assert_eq!(Message::parse(&m_bytes).unwrap().transaction_id(), tid);
    srv.stop().unwrap();
}

#[tokio::test]
async fn tcp_stream_that_is_not_stun_is_closed() {
    let srv = server("127.0.0.1:0");
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc][..],
    ] {
        let mut s = TcpStream::connect(srv.tcp[0]).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "expected close, got {n:?}");
    }
    srv.stop().unwrap();
}

#[tokio::test]
async fn malformed_datagrams_get_no_answer_and_indications_are_silent() {
    let srv = server("127.0.0.1:0");
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(srv.udp[0]).await.unwrap();
    let (mut req, _) = binding_request();
    req[4] ^= 0xff; // bad magic cookie
    sock.send(&req).await.unwrap();
    sock.send(b"\x00\x01\x00\x04hello").await.unwrap();
    let tid = TransactionId::random();
    let mut ind = BytesMut::new();
    MessageBuilder::new(&mut ind, Method::Binding, Class::Indication, tid).finish();
    sock.send(&ind).await.unwrap();
    let mut buf = [0u8; 1500];
    let r = tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await;
    assert!(r.is_err(), "malformed input or an indication was answered");
    // The server is still serving.
    let mut c = Client::udp(srv.udp[0]).await.unwrap();
    c.binding().await.unwrap();
    srv.stop().unwrap();
}

/// Allocate, permission, Send → Data, ChannelBind, ChannelData both ways, against a
/// UDP echo peer.
async fn relay_round_trips(mut c: Client, peer_bind: &str, family: Option<Family>) {
    let peer = echo_peer(peer_bind, 1000).await;
    let alloc = c
        .allocate_with(&AllocateOptions {
            family,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(alloc.relayed.len(), 1);
    assert_eq!(alloc.relayed[0].is_ipv4(), peer.is_ipv4());
    assert_eq!(alloc.lifetime, 600);
    c.create_permission(&[peer]).await.unwrap();
    for i in 0..20u8 {
        let payload = vec![i; 1 + i as usize * 7];
        c.send_indication(peer, &payload).await.unwrap();
        match c.recv_data(WAIT).await.unwrap() {
            Received::Data { peer: from, data } => {
                assert_eq!(from, peer);
                assert_eq!(data, payload);
            }
            other => panic!("expected a Data indication, got {other:?}"),
        }
    }
    c.channel_bind(0x4001, peer).await.unwrap();
    for i in 0..50u8 {
        let payload = vec![i ^ 0x5a; 1 + (i as usize * 13) % 1200];
        c.send_channel_data(0x4001, &payload).await.unwrap();
        match c.recv_data(WAIT).await.unwrap() {
            Received::Channel { channel, data } => {
                assert_eq!(channel, 0x4001);
                assert_eq!(data, payload);
            }
            other => panic!("expected ChannelData, got {other:?}"),
        }
    }
    // Around and beyond the send queues' 2048-byte slots (sent alone, in order).
    for len in [2000usize, 2048, 2049, 4000, 20_000, 60_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        c.send_channel_data(0x4001, &payload).await.unwrap();
        match c.recv_data(WAIT).await.unwrap() {
            Received::Channel { data, .. } => assert_eq!(data, payload, "{len} bytes"),
            other => panic!("expected ChannelData, got {other:?}"),
        }
    }
    assert_eq!(c.refresh(0).await.unwrap(), 0);
    // After deletion, nothing is relayed any more.
    c.send_channel_data(0x4001, b"late").await.unwrap();
    assert!(c.recv_data(Duration::from_millis(300)).await.is_err());
}

/// `relay_round_trips` for a client of a fresh server on `listen` over
/// `transport`, to an echo peer on `peer_bind`.
async fn relay_through_a_fresh_server(
    listen: &str,
    transport: Transport,
    peer_bind: &str,
    family: Option<Family>,
) {
    let mut opts = options(listen);
    // `relay_round_trips` sends ChannelData of up to 60,000 bytes: raise the
    // 2,048-byte default, as an operator relaying big datagrams would.
    opts.core.max_message_size = 65_535;
    let srv = ferroturn::net::start(opts).unwrap();
    relay_round_trips(turn_client(&srv, transport).await, peer_bind, family).await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn relay_over_udp_client_transport() {
    relay_through_a_fresh_server("127.0.0.1:0", Transport::Udp, "127.0.0.1:0", None).await;
}

#[tokio::test]
async fn relay_over_tcp_client_transport() {
    relay_through_a_fresh_server("127.0.0.1:0", Transport::Tcp, "127.0.0.1:0", None).await;
}

#[tokio::test]
async fn ipv6_relay_on_loopback() {
    relay_through_a_fresh_server("[::1]:0", Transport::Udp, "[::1]:0", Some(Family::V6)).await;
}

#[tokio::test]
async fn two_clients_relay_to_each_other_through_one_server() {
    let srv = server("127.0.0.1:0");
    let (mut a, alloc_a) = allocated_client(&srv, Transport::Udp).await;
    let (mut b, alloc_b) = allocated_client(&srv, Transport::Tcp).await;
    let (ra, rb) = (alloc_a.relayed[0], alloc_b.relayed[0]);
    a.create_permission(&[rb]).await.unwrap();
    b.create_permission(&[ra]).await.unwrap();
    a.channel_bind(0x4000, rb).await.unwrap();
    a.send_channel_data(0x4000, b"hello b").await.unwrap();
    assert_eq!(
        b.recv_data(WAIT).await.unwrap(),
        Received::Data {
            peer: ra,
            data: b"hello b".to_vec()
        }
    );
    b.send_indication(ra, b"hello a").await.unwrap();
    assert_eq!(
        a.recv_data(WAIT).await.unwrap(),
        Received::Channel {
            channel: 0x4000,
            data: b"hello a".to_vec()
        }
    );
    srv.stop().unwrap();
}

#[tokio::test]
async fn default_policy_denies_loopback_and_metadata_peers_on_the_wire() {
    let mut opts = options("127.0.0.1:0");
    opts.core.allow_peers.clear();
    let srv = ferroturn::net::start(opts).unwrap();
    let (mut c, _) = allocated_client(&srv, Transport::Udp).await;
    for peer in [
        "127.0.0.1:9",
        "[::ffff:127.0.0.1]:9",
        "0.0.0.0:9",
        "[::1]:9",
        "169.254.169.254:80",
    ] {
        let err = c
            .create_permission(&[peer.parse().unwrap()])
            .await
            .unwrap_err();
        // The family comes before the policy (RFC 8656 §10.2): an IPv6 address
        // on an IPv4 allocation is 443, denied or not.
        let want = if peer.starts_with('[') { 443 } else { 403 };
        assert_eq!(err.code(), Some(want), "{peer}: {err}");
    }
    srv.stop().unwrap();
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let srv = server("127.0.0.1:0");
    let mut c = turn_client_as(&srv, Transport::Udp, USER, "wrong").await;
    assert_eq!(c.allocate().await.unwrap_err().code(), Some(401));
    let mut c = turn_client_as(&srv, Transport::Udp, "mallory", PASS).await;
    assert_eq!(c.allocate().await.unwrap_err().code(), Some(401));
    srv.stop().unwrap();
}

/// EVEN-PORT with R = 1 reserves the next port; the RESERVATION-TOKEN comes back
/// from another source port, which SO_REUSEPORT may hand to another shard. Over six
/// rounds with two shards, a shard-local token table fails with probability
/// 1 - 2^-6; the shared table must always succeed.
#[tokio::test]
async fn reservation_token_is_redeemed_whichever_shard_gets_it() {
    let srv = server("127.0.0.1:0");
    for _ in 0..6 {
        let mut a = turn_client(&srv, Transport::Udp).await;
        let first = a
            .allocate_with(&AllocateOptions {
                even_port: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(first.relayed[0].port() % 2, 0);
        let token = first.reservation_token.expect("a RESERVATION-TOKEN");
        let mut b = turn_client(&srv, Transport::Udp).await;
        let second = b
            .allocate_with(&AllocateOptions {
                reservation_token: Some(token),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(second.relayed[0].port(), first.relayed[0].port() + 1);
        a.refresh(0).await.unwrap();
        b.refresh(0).await.unwrap();
    }
    srv.stop().unwrap();
}

/// A user who disappears from the credentials loses their allocation at once: the
/// shards recheck when the credential generation moves, and relaying stops.
#[tokio::test]
async fn removing_a_user_ends_their_allocation_in_a_running_server() {
    use ferroturn::ops::credentials::{KeyedUser, StoreContents};
    use ferroturn::turn::auth::UserKeys;

    let srv = server("127.0.0.1:0");
    let stored = |generation: i64, with_carol: bool| StoreContents {
        generation,
        users: if with_carol {
            vec![KeyedUser {
                realm: REALM.into(),
                name: "carol".into(),
                keys: UserKeys::derive("carol", REALM, "carol-pw"),
                userhash: ferroturn::stun::integrity::userhash("carol", REALM),
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    srv.credentials.replace(stored(1, true));
    srv.credentials_changed.send(1).unwrap();

    let peer = echo_peer("127.0.0.1:0", 100).await;
    let mut carol = turn_client_as(&srv, Transport::Udp, "carol", "carol-pw").await;
    let mut alice = turn_client(&srv, Transport::Udp).await;
    for c in [&mut carol, &mut alice] {
        c.allocate().await.unwrap();
        c.channel_bind(0x4000, peer).await.unwrap();
        c.send_channel_data(0x4000, b"before").await.unwrap();
        assert!(matches!(
            c.recv_data(WAIT).await.unwrap(),
            Received::Channel { .. }
        ));
    }

    srv.credentials.replace(stored(2, false));
    srv.credentials_changed.send(2).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    carol.send_channel_data(0x4000, b"after").await.unwrap();
    assert!(
        carol.recv_data(Duration::from_millis(300)).await.is_err(),
        "carol still relays"
    );
    assert_eq!(carol.refresh(600).await.unwrap_err().code(), Some(401));
    // Alice is untouched.
    alice.send_channel_data(0x4000, b"after").await.unwrap();
    assert!(matches!(
        alice.recv_data(WAIT).await.unwrap(),
        Received::Channel { .. }
    ));
    srv.stop().unwrap();
}

/// On one shard, data between two allocations is handed over in-process; on the
/// wire it must look exactly like relaying through the sockets: the receiver sees
/// the sender's relayed address as the peer, permissions apply, and channels and
/// Data indications are chosen per the receiver's bindings.
#[tokio::test]
async fn same_shard_client_to_client_is_relayed_in_process_with_rfc_semantics() {
    let mut opts = options("127.0.0.1:0");
    opts.threads = 1;
    let srv = ferroturn::net::start(opts).unwrap();
    let (mut a, alloc_a) = allocated_client(&srv, Transport::Udp).await;
    let (mut b, alloc_b) = allocated_client(&srv, Transport::Udp).await;
    let (mut c, alloc_c) = allocated_client(&srv, Transport::Udp).await;
    let (ra, rb, rc) = (alloc_a.relayed[0], alloc_b.relayed[0], alloc_c.relayed[0]);
    a.create_permission(&[rb, rc]).await.unwrap();
    b.create_permission(&[ra]).await.unwrap();
    a.channel_bind(0x4001, rb).await.unwrap();
    b.channel_bind(0x4002, ra).await.unwrap();
    for i in 0..50u8 {
        let payload = vec![i; 1 + i as usize * 20];
        a.send_channel_data(0x4001, &payload).await.unwrap();
        assert_eq!(
            b.recv_data(WAIT).await.unwrap(),
            Received::Channel {
                channel: 0x4002,
                data: payload.clone()
            }
        );
        b.send_indication(ra, &payload).await.unwrap();
        assert_eq!(
            a.recv_data(WAIT).await.unwrap(),
            Received::Channel {
                channel: 0x4001,
                data: payload
            }
        );
    }
    // c has no permission for a: nothing arrives, as over the wire.
    a.send_indication(rc, b"not permitted").await.unwrap();
    assert!(c.recv_data(Duration::from_millis(300)).await.is_err());
    // With a permission and no channel, c gets a Data indication from a's
    // relayed address.
    c.create_permission(&[ra]).await.unwrap();
    a.send_indication(rc, b"now permitted").await.unwrap();
    assert_eq!(
        c.recv_data(WAIT).await.unwrap(),
        Received::Data {
            peer: ra,
            data: b"now permitted".to_vec()
        }
    );
    // Every one of those 102 datagrams was handed over in-process.
    wait_for_metrics(
        srv.metrics.unwrap(),
        &["ferroturn_relayed_in_process_packets_total 102"],
    )
    .await;
    srv.stop().unwrap();
}

/// A TCP client that stops reading: relayed data beyond its 1 MiB backlog is
/// dropped (as UDP would drop it) and counted as `backlog`, and the server goes
/// on serving others.
#[tokio::test]
async fn a_tcp_client_that_stops_reading_gets_backlog_drops() {
    let srv = server("127.0.0.1:0");
    let (mut slow, alloc) = allocated_client(&srv, Transport::Tcp).await;
    let relayed = alloc.relayed[0];
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    slow.create_permission(&[peer.local_addr().unwrap()])
        .await
        .unwrap();
    // 16 MB at the relay, far beyond the backlog plus the socket buffers; the
    // client reads none of it.
    // Ten checks at the most, each after 4 rounds of 700 datagrams (a loaded
    // machine drains the socket buffers slowly, so one check may not be enough).
    let chunk = [0x5Au8; 1200];
    let metrics = srv.metrics.unwrap();
    let mut checks = 0;
    eventually_async(
        Duration::from_secs(20),
        "a backlog drop counted",
        async || {
            checks += 1;
            assert!(checks <= 10, "no backlog drop counted");
            for _ in 0..4 {
                for _ in 0..700 {
                    let _ = peer.send_to(&chunk, relayed).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (_, body) = http_get(metrics, "/metrics").await;
            let dropped = body
                .lines()
                .find_map(|l| {
                    l.strip_prefix(r#"ferroturn_dropped_packets_total{reason="backlog"} "#)
                })
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if dropped > 0 {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    // Others are served as before.
    let mut c = Client::udp(srv.udp[0]).await.unwrap();
    c.binding().await.unwrap();
    drop(slow);
    srv.stop().unwrap();
}

/// `max-bps-per-allocation` over the wire: a burst beyond the bucket is cut,
/// counted as `rate_limit`, and the allocation relays again once time passes.
#[tokio::test]
async fn bandwidth_limit_drops_beyond_the_rate_and_counts_it() {
    let mut opts = options("127.0.0.1:0");
    opts.core.max_bps_per_allocation = 20_000; // burst: 64 KiB
    let srv = ferroturn::net::start(opts).unwrap();
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut c, _) = allocated_client(&srv, Transport::Udp).await;
    c.channel_bind(0x4000, peer).await.unwrap();
    // 100 kB at once: at most the 64 KiB burst (plus a little refill) passes.
    for _ in 0..100 {
        c.send_channel_data(0x4000, &[9u8; 1000]).await.unwrap();
    }
    let mut back = 0;
    while c.recv_data(Duration::from_millis(300)).await.is_ok() {
        back += 1;
    }
    assert!((60..=70).contains(&back), "{back} of 100 came back");
    // Every datagram that did not come back was dropped by the limit (towards
    // the peer; the way back has its own, full bucket).
    let want = format!(
        r#"ferroturn_dropped_packets_total{{reason="rate_limit"}} {}"#,
        100 - back
    );
    wait_for_metrics(srv.metrics.unwrap(), &[&want]).await;
    // A second later the bucket has 20 kB again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.send_channel_data(0x4000, &[1u8; 1000]).await.unwrap();
    assert!(c.recv_data(WAIT).await.is_ok());
    srv.stop().unwrap();
}
