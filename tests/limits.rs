//! `server.max-message-size` over real loopback sockets: an oversized Binding
//! gets no answer over UDP or TCP and is counted, a TCP stream keeps its
//! framing past a skipped frame, and WebRTC-sized payloads relay at the default.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use ferroturn::client::Received;
use ferroturn::stun::{Class, Message, MessageBuilder, Method, TransactionId};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A Binding request of exactly `len` bytes, padded out with a
/// comprehension-optional attribute the server ignores.
fn binding_of(len: usize) -> (Vec<u8>, TransactionId) {
    let tid = TransactionId::random();
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(&mut buf, Method::Binding, Class::Request, tid);
    if len > 24 {
        b.add_raw(0x8031, &vec![0x20; len - 24]);
    }
    b.finish();
    assert_eq!(buf.len(), len.max(20));
    (buf.to_vec(), tid)
}

fn oversized_line(n: u64) -> String {
    format!(r#"ferroturn_dropped_packets_total{{reason="oversized"}} {n}"#)
}

#[tokio::test]
async fn oversized_binding_gets_no_answer_over_udp_and_is_counted() {
    let srv = server("127.0.0.1:0");
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(srv.udp[0]).await.unwrap();
    let (big, _) = binding_of(4000);
    sock.send(&big).await.unwrap();
    let mut buf = [0u8; 1500];
    let r = tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await;
    assert!(r.is_err(), "a 4,000-byte Binding was answered");
    wait_for_metrics(srv.metrics.unwrap(), &[&oversized_line(1)]).await;
    // The same socket, at the limit, is answered.
    let (ok, tid) = binding_of(2048);
    sock.send(&ok).await.unwrap();
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(Message::parse(&buf[..n]).unwrap().transaction_id(), tid);
    srv.stop().unwrap();
}

#[tokio::test]
async fn oversized_binding_gets_no_answer_over_tcp_and_the_stream_keeps_its_framing() {
    let srv = server("127.0.0.1:0");
    let mut s = TcpStream::connect(srv.tcp[0]).await.unwrap();
    s.set_nodelay(true).unwrap();
    // A small request, then a 4,000-byte one split over two writes, then
    // another small one: only the small ones are answered, in order.
    let (first, tid1) = binding_of(20);
    let (big, _) = binding_of(4000);
    let (last, tid2) = binding_of(20);
    s.write_all(&first).await.unwrap();
    s.write_all(&big[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(&big[1000..]).await.unwrap();
    s.write_all(&last).await.unwrap();
    for want in [tid1, tid2] {
        let mut head = [0u8; 20];
        tokio::time::timeout(WAIT, s.read_exact(&mut head))
            .await
            .expect("answered in time")
            .unwrap();
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let mut rest = vec![0u8; len];
        s.read_exact(&mut rest).await.unwrap();
        let resp = [head.to_vec(), rest].concat();
        assert_eq!(Message::parse(&resp).unwrap().transaction_id(), want);
    }
    wait_for_metrics(srv.metrics.unwrap(), &[&oversized_line(1)]).await;
    // Nothing else is on its way, and the connection is still open.
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
    assert!(r.is_err(), "unexpected bytes or close: {r:?}");
    srv.stop().unwrap();
}

#[tokio::test]
async fn payloads_of_1500_bytes_relay_at_the_default_over_udp_and_tcp() {
    let srv = server("127.0.0.1:0");
    let peer = echo_peer("127.0.0.1:0", 100).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let (mut c, _) = allocated_client(&srv, transport).await;
        c.channel_bind(0x4000, peer).await.unwrap();
        let payload: Vec<u8> = (0..1500).map(|i| (i % 251) as u8).collect();
        c.send_channel_data(0x4000, &payload).await.unwrap();
        match c.recv_data(WAIT).await.unwrap() {
            Received::Channel { data, .. } => assert_eq!(data, payload, "{transport:?}"),
            other => panic!("{transport:?}: expected ChannelData, got {other:?}"),
        }
        c.send_indication(peer, &payload).await.unwrap();
        assert!(c.recv_data(WAIT).await.is_ok(), "{transport:?}: Send");
        // 4,000 bytes are not relayed (and a TCP client keeps its allocation).
        c.send_channel_data(0x4000, &[1u8; 4000]).await.unwrap();
        assert!(c.recv_data(Duration::from_millis(300)).await.is_err());
        c.send_channel_data(0x4000, b"after").await.unwrap();
        assert!(c.recv_data(WAIT).await.is_ok(), "{transport:?}: after");
    }
    wait_for_metrics(srv.metrics.unwrap(), &[&oversized_line(2)]).await;
    srv.stop().unwrap();
}
